//! What every request handler shares.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use kuota_engine::actor::{ActorError, EventHandle, Registry};
use kuota_engine::{Clock, Email, EventId, SystemClock};
use kuota_persist::session::{SessionId, SessionStore};
use kuota_persist::store::SqlStore;
use kuota_persist::write_behind::WriteBehindHandle;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admission::{AdmissionBounds, AdmissionLimiter};
use crate::cluster::{Cluster, ForwardedClient, LocatedHere};
use crate::configuration::Settings;
use crate::error::ApiError;
use crate::health::Health;
use crate::metrics;
use crate::rate_limit::{Gcra, SharedGcra, client_ip};
use crate::tokens::constant_time_eq;

/// The cookie that carries an admin session.
pub const SESSION_COOKIE: &str = "kuota_session";
/// How long after the last shed request `GET /v1/status` still reports busy, in ms.
const BUSY_AFTER_SHED_MS: u64 = 5_000;

#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub registry: Registry,
    pub store: SqlStore,
    pub write_behind: WriteBehindHandle,
    pub sessions: Arc<dyn SessionStore>,
    pub admin_token: String,
    pub token_secret: Vec<u8>,
    pub clock: SystemClock,
    pub metrics: PrometheusHandle,
    pub redis: Option<redis::aio::ConnectionManager>,
    /// This node's identity and event leases, and the forward token of its deployment.
    pub cluster: Cluster,
    pub ip_limit: Option<Gcra<IpAddr>>,
    pub email_limit: Option<Gcra<Email>>,
    /// The adaptive limit on registrations in flight on this node.
    pub admission: AdmissionLimiter,
    shared_limit: SharedGcra,
    last_shed_ms: AtomicU64,
    /// Live `GET /v1/events/{id}/stream` connections (bounded by `STREAM_SUBSCRIBERS_MAX`).
    pub stream_subscribers: std::sync::atomic::AtomicUsize,
    /// Whether the store and Redis answered their latest probes (for `/readyz`).
    pub health: Health,
    /// The operators' page's view of this node (`routes::dashboard`).
    pub dashboard: crate::dashboard::Sampler,
}

/// What `GET /v1/status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Busy {
    pub busy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        registry: Registry,
        store: SqlStore,
        write_behind: WriteBehindHandle,
        sessions: Arc<dyn SessionStore>,
        admin_token: String,
        token_secret: Vec<u8>,
        redis: Option<redis::aio::ConnectionManager>,
        cluster: Cluster,
        health: Health,
    ) -> Self {
        let redis_timeout = std::time::Duration::from_millis(settings.redis_timeout_ms);
        let shared_limit = SharedGcra::new(&settings.redis_prefix, redis_timeout);
        let ip_limit = Gcra::new("ip", settings.rate_limit_ip_per_second, 1, settings.rate_limit_ip_burst);
        let email_limit = Gcra::new(
            "email",
            settings.rate_limit_email_per_minute,
            60,
            settings.rate_limit_email_per_minute,
        );
        let admission = AdmissionLimiter::with_system_clock(AdmissionBounds::within_mailbox(
            settings.mailbox_capacity_max,
        ));
        AppState {
            settings,
            registry,
            store,
            write_behind,
            sessions,
            admin_token,
            token_secret,
            clock: SystemClock,
            metrics: metrics::recorder(),
            redis,
            cluster,
            ip_limit,
            email_limit,
            admission,
            shared_limit,
            last_shed_ms: AtomicU64::new(0),
            stream_subscribers: std::sync::atomic::AtomicUsize::new(0),
            health,
            dashboard: crate::dashboard::Sampler::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// The running event, or 404; a store that cannot load it is a 503.
    pub async fn event(&self, id: &EventId) -> Result<EventHandle, ApiError> {
        match self.registry.event(id).await {
            Ok(Some(handle)) => Ok(handle),
            Ok(None) => Err(ApiError::NotFound("the event")),
            Err(error) => Err(self.actor_error(error)),
        }
    }

    /// The running event, or 404, taking `located` when it is given and still runs: the
    /// ownership middleware locates the event of every route that needs its actor, and a
    /// second lookup would find the same handle. One that stopped in between (it stepped down)
    /// is looked up again, which answers as if the middleware had not located it.
    pub async fn located_event(
        &self,
        id: &EventId,
        located: Option<EventHandle>,
    ) -> Result<EventHandle, ApiError> {
        match located {
            Some(event) if event.is_running() => Ok(event),
            // Boxed, as the other rare large states below the ownership middleware (see
            // `cluster::route_to_owner`): starting an event loads it from the store.
            _ => Box::pin(self.event(id)).await,
        }
    }

    /// `located_event` with the event the ownership middleware located for `request`
    /// (`LocatedHere`), if it is the event `id`.
    pub async fn event_of(&self, request: &HttpRequest, id: &EventId) -> Result<EventHandle, ApiError> {
        let located = request.extensions().get::<LocatedHere>().map(|located| located.0.clone());
        self.located_event(id, located.filter(|event| event.config().id == *id)).await
    }

    /// How long a shed client should wait: the write-behind backlog over its drain rate.
    pub fn retry_after_seconds(&self) -> u64 {
        // The handle reads its atomics; `stats()` would copy both histograms on every shed.
        self.write_behind.retry_after_seconds()
    }

    /// Turns an actor's refusal into a 503, and remembers that we shed.
    pub fn actor_error(&self, error: ActorError) -> ApiError {
        let reason = match &error {
            ActorError::Overloaded => "the event's queue is full",
            ActorError::Recovering | ActorError::StoreFailed(_) | ActorError::LoadFailed(_) => {
                ::metrics::counter!(metrics::STORE_ERRORS).increment(1);
                "the store did not commit; retry"
            }
            ActorError::Stopped | ActorError::OwnedElsewhere => "the event is moving; retry",
            ActorError::Ownership(_) => "the lease service is unavailable; retry",
        };
        tracing::warn!(%error, "request shed");
        self.shed(reason)
    }

    /// A 503 `overloaded` for `reason`, counted and remembered for the busy banner.
    pub fn shed(&self, reason: &'static str) -> ApiError {
        ::metrics::counter!(metrics::SHED, "reason" => reason).increment(1);
        self.last_shed_ms.store(self.now_ms(), Ordering::Relaxed);
        ApiError::overloaded(reason, self.retry_after_seconds())
    }

    /// A 503 at once, instead of a wait, for a write while the store does not commit
    /// (`WriteBehindHandle::stalled`); reads and sold-out answers go on from memory meanwhile.
    pub fn refuse_if_stalled(&self) -> Result<(), ApiError> {
        if self.write_behind.stalled() {
            return Err(self.shed("the store does not commit now; retry"));
        }
        Ok(())
    }

    pub fn busy(&self) -> Busy {
        let reason = if self.write_behind.stalled() {
            Some("the store is failing")
        } else if self.now_ms().saturating_sub(self.last_shed_ms.load(Ordering::Relaxed)) < BUSY_AFTER_SHED_MS
        {
            Some("requests are being shed")
        } else {
            None
        };
        Busy { busy: reason.is_some(), reason }
    }

    /// Applies the per-IP limit of the registration route.
    pub fn limit_client(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let Some(limit) = &self.ip_limit else { return Ok(()) };
        // A request forwarded by a peer node carries the client the first node saw.
        let forwarded_client = request.extensions().get::<ForwardedClient>().copied();
        let ip = match forwarded_client {
            Some(ForwardedClient(client)) => client,
            None => {
                let forwarded =
                    request.headers().get("x-forwarded-for").and_then(|value| value.to_str().ok());
                let peer = request.peer_addr().map(|address| address.ip());
                client_ip(peer, forwarded, &self.settings.trusted_proxies)
            }
        };
        let Some(ip) = ip else { return Ok(()) };
        limit.check(&ip, self.now_ms()).map_err(|refusal| self.rate_limited(refusal))
    }

    /// Applies the per-e-mail limit of the registration route: in Redis when configured, so
    /// that it holds across nodes; in this process otherwise, or while Redis fails (a limit
    /// that fails closed would turn a cache outage into a registration outage).
    pub async fn limit_registrant(&self, email: &Email) -> Result<(), ApiError> {
        let Some(limit) = &self.email_limit else { return Ok(()) };
        if let Some(redis) = &self.redis {
            let mut connection = redis.clone();
            // Boxed (see `cluster::route_to_owner`): a Redis call's state is large, and the
            // registration fast route awaits this below the ownership middleware.
            match Box::pin(self.shared_limit.check(limit, email.as_str(), &mut connection)).await {
                Ok(verdict) => return verdict.map_err(|refusal| self.rate_limited(refusal)),
                Err(error) => tracing::warn!(%error, "shared rate limit unavailable; limiting locally"),
            }
        }
        limit.check(email, self.now_ms()).map_err(|refusal| self.rate_limited(refusal))
    }

    fn rate_limited(&self, refusal: crate::rate_limit::Refusal) -> ApiError {
        ::metrics::counter!(metrics::RATE_LIMITED).increment(1);
        ApiError::RateLimited {
            retry_after_seconds: refusal.retry_after_seconds,
            policy: refusal.policy,
            state: refusal.state,
        }
    }

    /// True when the request carries the admin token or a live admin session.
    pub async fn is_admin(&self, request: &HttpRequest) -> Result<bool, ApiError> {
        if let Some(token) = bearer(request)
            && constant_time_eq(token, &self.admin_token)
        {
            return Ok(true);
        }
        let Some(cookie) = request.cookie(SESSION_COOKIE) else { return Ok(false) };
        let Ok(id) = SessionId::parse(cookie.value()) else { return Ok(false) };
        let session =
            self.sessions.get(&id).await.map_err(|error| anyhow::anyhow!("session store: {error}"))?;
        Ok(session.is_some())
    }

    /// 401 unless the request is an admin's.
    pub async fn require_admin(&self, request: &HttpRequest) -> Result<(), ApiError> {
        if self.is_admin(request).await? { Ok(()) } else { Err(ApiError::Unauthorized) }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|token| !token.is_empty())
}
