//! Builds the application: store, write-behind, registry, sessions, then the HTTP server on a
//! bound listener (port 0 works, for tests), and runs it until a signal stops it.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Server, Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use futures_util::FutureExt;
use kuota_engine::actor::{Registry, RegistryConfig};
use kuota_engine::{Clock, SystemClock};
use kuota_persist::outbox::{Busy, Deliver, LogDelivery, OutboxConfig, OutboxWorker};
use kuota_persist::random;
use kuota_persist::redis_connection;
use kuota_persist::session::{MemorySessionStore, RedisSessionStore, SessionStore};
use kuota_persist::store::{SqlStore, creation_feed};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};

use crate::cluster::Cluster;
use crate::configuration::Settings;
use crate::error::ApiError;
use crate::health::Health;
use crate::middleware::{self, route_label};
use crate::openapi;
use crate::routes;
use crate::state::{AppState, Auth, Events, Limits, Shedding};
use crate::webhooks;
use crate::webhooks::dispatcher::Dispatcher;
use crate::webhooks::sold_out::SoldOutWatcher;

/// How long in-flight requests may finish after a stop signal, in seconds.
const SHUTDOWN_TIMEOUT_SECONDS: u64 = 10;
/// Outbox entries one delivery round claims, and creations it walks past the cursors: a flash
/// crowd creates a registration per admission, and larger rounds cost the database fewer
/// statements per entry.
pub const OUTBOX_ROUND_ENTRIES_MAX: u32 = 500;
/// Longest a busy writer defers the webhook fan-out, in ms (see `OutboxConfig::defer_while_busy_max`).
const WEBHOOK_DEFER_WHILE_BUSY_MAX_MS: u64 = 1_000;
/// How long the write-behind may take to commit what was accepted at shutdown, in seconds.
const DRAIN_TIMEOUT_SECONDS: u64 = 30;
/// Connections the kernel completes and holds for us while every worker is at its share of
/// `KUOTA_MAX_CONNECTIONS` (std's `bind` listens with 128; Linux caps this at
/// `net.core.somaxconn`, 4096 by default). A waiting connection costs kernel memory, not ours, and
/// is served in order as others close; past the backlog a client's SYN is retried (after 1 s,
/// then 3 s), which spreads a connection storm out.
const LISTEN_BACKLOG: i32 = 1_024;
/// A client must send a whole request head within this, in ms, or get 408 and be closed: a slow
/// client cannot hold one of the capped connections (actix's default, named here).
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// An idle kept-alive connection is closed after this, in seconds (actix's default): an idle
/// crowd gives its connections back, and its 8 KiB read and 8 KiB write buffers each.
pub const KEEP_ALIVE_SECONDS: u64 = 5;
/// A connection being closed is dropped after this, in ms, whether or not the client took the
/// rest of its answer (actix's default, named here).
const CLIENT_DISCONNECT_TIMEOUT_MS: u64 = 1_000;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    generated_admin_token: bool,
    /// Delivers outbox entries (to the log, see `kuota_persist::outbox`) and purges rows past
    /// their retention, on every node unless `KUOTA_OUTBOX_DELIVERY=off`: claims keep two nodes
    /// off one entry.
    outbox: Option<OutboxWorker>,
    /// Sends webhook messages (`KUOTA_OUTBOX_DELIVERY=webhooks`).
    webhook_dispatcher: Option<Dispatcher>,
    /// Announces sell-outs of the events this node runs, through the outbox.
    sold_out: SoldOutWatcher,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

/// A request whose method its resource does not serve gets actix's bare 405; the contract's is a
/// problem document (`method_not_allowed`) with `Allow`, the methods the OpenAPI document names
/// for the resource. Other answers pass untouched.
fn method_not_allowed<S>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
{
    service.call(request).map(|result| {
        let response = result?;
        if response.status() != StatusCode::METHOD_NOT_ALLOWED {
            return Ok(response);
        }
        let allowed = route_label(response.request()).and_then(openapi::allowed_methods);
        let mut answer = ApiError::MethodNotAllowed.error_response();
        if let Some(allowed) = allowed.and_then(|methods| HeaderValue::from_str(methods).ok()) {
            answer.headers_mut().insert(header::ALLOW, allowed);
        }
        Ok(response.into_response(answer))
    })
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// `build`, with the engine's time read from `clock`: holds, windows, queues, webhook
    /// schedules and the times the API shows. Tests hand a `ManualClock` to step over a timeout
    /// instead of sleeping through it. Rate limits, shedding and every deadline on a call (the
    /// store's, Redis's, a forward's) keep real time: they bound waits on real parts.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let store = SqlStore::connect(&settings.database_url)
            .await
            .with_context(|| format!("connecting to the store at {}", redact(&settings.database_url)))?
            .with_call_timeout(Duration::from_millis(settings.store_timeout_ms));
        let secret = store.setting_or_insert("token_secret", &random::token_hex(32)).await?;
        let generated_admin_token = settings.admin_token.is_none();
        let admin_token = settings.admin_token.clone().unwrap_or_else(|| random::token_hex(16));
        let (redis, sessions) = match &settings.redis_url {
            Some(url) => {
                // Every command, and every (re)connection, bounded by the Redis timeout: a frozen
                // Redis must fail requests' Redis calls fast, not hold them.
                let command_timeout = Duration::from_millis(settings.redis_timeout_ms);
                let manager = redis_connection::connect(url, command_timeout)
                    .await
                    .context("connecting to Redis (KUOTA_REDIS_URL)")?;
                let sessions: Arc<dyn SessionStore> = Arc::new(
                    RedisSessionStore::new(manager.clone(), settings.redis_prefix.clone())
                        .with_command_timeout(command_timeout),
                );
                (Some(manager), sessions)
            }
            None => (None, Arc::new(MemorySessionStore::default()) as Arc<dyn SessionStore>),
        };
        let write_behind_config = WriteBehindConfig {
            flush_interval_ms: settings.flush_interval_ms,
            batch_size_max: settings.batch_size_max,
            queue_capacity_max: settings.write_queue_capacity_max,
            commit_timeout_ms: settings.store_timeout_ms,
            stall_threshold_ms: settings.store_stall_ms,
            ..WriteBehindConfig::default()
        };
        // The writer runs on this thread's runtime, and so do the event actors with
        // `actor_threads` 0 (`kuota_engine::actor::registry`, `Placement`).
        // The writer hands the creations it commits to this node's delivery worker, which then
        // need not read them back (`kuota_persist::store::creation_feed`); without a worker,
        // nobody would take them.
        let delivering = matches!(settings.outbox_delivery.as_str(), "webhooks" | "log");
        let (feed, held) = match delivering.then(creation_feed) {
            Some((feed, held)) => (Some(feed), Some(held)),
            None => (None, None),
        };
        let (submissions, write_behind) = WriteBehind::start(store.clone(), write_behind_config, feed);
        let registry_config = RegistryConfig {
            arbiters: settings.actor_threads,
            mailbox_capacity_max: settings.mailbox_capacity_max,
        };
        let registry = Registry::new(registry_config, Arc::new(store.clone()), submissions, clock.clone());
        let listener =
            TcpListener::bind(&settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        // Listening again on a listening socket sets its backlog (actix's `backlog` applies only
        // to the sockets it binds itself).
        socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG).context("setting the listen backlog")?;
        let port = listener.local_addr()?.port();
        let cluster = Cluster::start(&settings, port, redis.clone(), secret.as_bytes())?;
        let registry = registry.with_ownership(cluster.ownership());
        let workers = settings.http_workers;
        // actix caps connections per worker, and a worker at its cap takes no more: the node's cap
        // is shared out, rounded up so that a cap below the workers still serves.
        let connections_per_worker_max = settings.max_connections.div_ceil(workers).max(1);
        let health =
            Health::monitor(store.clone(), redis.clone(), Duration::from_millis(settings.redis_timeout_ms));
        let shedding = Arc::new(Shedding::new(&settings, write_behind));
        let state = web::Data::new(AppState {
            limits: Limits::new(&settings, redis.clone()),
            auth: Auth { admin_token, sessions },
            events: Events::new(registry, shedding.clone()),
            shedding,
            settings,
            store,
            token_key: crate::tokens::TokenKey::new(secret.as_bytes()),
            token_secret: secret.into_bytes(),
            clock: clock.clone(),
            metrics: crate::metrics::recorder(),
            redis,
            cluster,
            health,
            stream_subscribers: AtomicUsize::new(0),
        });
        let watched = state.clone();
        // Registrations waiting for their commit: the writer is busy.
        let busy: Busy = Arc::new(move || watched.shedding.write_behind.queue_depth() > 0);
        let outbox_config = OutboxConfig { batch_max: OUTBOX_ROUND_ENTRIES_MAX, ..OutboxConfig::default() };
        // What the mode delivers through, with which settings (and the webhooks' dispatcher).
        let delivery: Option<(Arc<dyn Deliver>, OutboxConfig, Option<Dispatcher>)> =
            match state.settings.outbox_delivery.as_str() {
                "webhooks" => {
                    let (fan_out, dispatcher) =
                        webhooks::start(&state.store, &state.settings, clock.clone())?;
                    // The contract's first attempt within 2 s of the commit: a busy writer defers
                    // the fan-out for a second at most, not the default's half minute.
                    let config = OutboxConfig {
                        defer_while_busy_max: Duration::from_millis(WEBHOOK_DEFER_WHILE_BUSY_MAX_MS),
                        ..outbox_config
                    };
                    Some((Arc::new(fan_out), config, Some(dispatcher)))
                }
                "log" => Some((Arc::new(LogDelivery), outbox_config, None)),
                _ => None,
            };
        let (outbox, webhook_dispatcher) = match delivery {
            Some((deliver, config, dispatcher)) => {
                let worker =
                    OutboxWorker::start(state.store.clone(), deliver, clock.clone(), busy, config, held);
                (Some(worker), dispatcher)
            }
            None => (None, None),
        };
        let watched = state.clone();
        let sold_out = SoldOutWatcher::start(
            Arc::new(move || watched.events.registry.running_events()),
            state.store.clone(),
            clock.clone(),
        );
        let shared = state.clone();
        // One sampler for the node, whichever worker serves the operators' page.
        let dashboard = web::Data::new(crate::dashboard::Sampler::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(dashboard.clone())
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|_, _| ApiError::NotFound("the resource").into()),
                )
                .app_data(web::QueryConfig::default().error_handler(|error, _| {
                    ApiError::InvalidQuery(format!("the query string is invalid: {error}")).into()
                }))
                // Innermost: a resource's bare 405 becomes a problem document with `Allow`.
                .wrap_fn(method_not_allowed)
                // Forwarded requests are measured and traced like the others.
                .wrap(actix_web::middleware::from_fn(crate::owner_routing::route_to_owner))
                // The span wraps the metrics, as the last `wrap` runs first.
                .wrap_fn(middleware::record_metrics)
                .wrap_fn(middleware::in_request_span)
                .configure(routes::configure)
                .configure(crate::openapi::configure)
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound("the resource"))
                }))
        })
        .workers(workers)
        .max_connections(connections_per_worker_max)
        .client_request_timeout(Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS))
        .keep_alive(Duration::from_secs(KEEP_ALIVE_SECONDS))
        .client_disconnect_timeout(Duration::from_millis(CLIENT_DISCONNECT_TIMEOUT_MS))
        // `max_connection_rate` bounds TLS handshakes only; this server speaks plain HTTP.
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECONDS)
        .listen(listener)?
        .run();
        Ok(Application { port, server, state, generated_admin_token, outbox, webhook_dispatcher, sold_out })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_token(&self) -> &str {
        &self.state.auth.admin_token
    }

    /// Prints where the server listens, and the admin token once when it was generated.
    pub fn announce(&self) {
        let host = self.state.settings.listen.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host);
        println!("kuota listening on http://{host}:{}", self.port);
        println!("store: {}", redact(&self.state.settings.database_url));
        if self.generated_admin_token {
            println!(
                "admin token (printed once; set KUOTA_ADMIN_TOKEN to choose one): {}",
                self.state.auth.admin_token
            );
        }
    }

    /// Serves until SIGTERM/SIGINT, lets in-flight requests finish, stops the event actors,
    /// and waits until the write-behind has committed everything it accepted.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await.context("serving HTTP")?;
        tracing::info!("stopped accepting; draining the write-behind");
        if let Some(outbox) = self.outbox {
            outbox.stop().await;
        }
        if let Some(dispatcher) = self.webhook_dispatcher {
            dispatcher.stop().await;
        }
        self.sold_out.stop().await;
        self.state.events.registry.shutdown();
        let drained = tokio::time::timeout(
            Duration::from_secs(DRAIN_TIMEOUT_SECONDS),
            self.state.shedding.write_behind.drained(),
        )
        .await;
        match drained {
            Ok(()) => tracing::info!("write-behind drained; bye"),
            Err(_) => tracing::error!("the write-behind did not drain within {DRAIN_TIMEOUT_SECONDS} s"),
        }
        // Only now: another node that took an event earlier would fence the writes draining.
        self.state.cluster.release_all().await;
        Ok(())
    }
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme_end + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
