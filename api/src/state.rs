//! What every request handler shares, by concern: `Auth` (who is an admin), `Limits` (per-IP
//! and per-e-mail rate limits), `Shedding` (refusing at once under overload, and the busy banner
//! it feeds), `Events` (finding the event a request names), beside the settings, the store and
//! this node's place in the cluster.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use kuota_engine::actor::{ActorError, EventHandle, Registry};
use kuota_engine::{CheckedEmail, Clock, EventId, SystemClock};
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
use crate::rate_limit::{Gcra, Refusal, SharedGcra, client_ip};
use crate::tokens::{TokenKey, constant_time_eq};

/// The cookie that carries an admin session.
pub const SESSION_COOKIE: &str = "kuota_session";
/// How long after the last shed request `GET /v1/status` still reports busy, in ms.
const BUSY_AFTER_SHED_MS: u64 = 5_000;

#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub store: SqlStore,
    /// The secret that tokens, passes and the forward token derive from.
    pub token_secret: Vec<u8>,
    /// `token_secret` keyed for the registrants' access tokens, once.
    pub token_key: TokenKey,
    /// The engine's time (`Application::build_with_clock`).
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    pub redis: Option<redis::aio::ConnectionManager>,
    /// This node's identity and event leases, and the forward token of its deployment.
    pub cluster: Cluster,
    /// Whether the store and Redis answered their latest probes (for `/readyz`).
    pub health: Health,
    /// Live `GET /v1/events/{id}/stream` connections (bounded by `STREAM_SUBSCRIBERS_MAX`).
    pub stream_subscribers: AtomicUsize,
    pub auth: Auth,
    pub limits: Limits,
    pub shedding: Arc<Shedding>,
    pub events: Events,
}

impl AppState {
    pub fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }
}

/// Who is an admin: the bearer of the admin token, or of a live admin session.
#[derive(Debug)]
pub struct Auth {
    pub admin_token: String,
    pub sessions: Arc<dyn SessionStore>,
}

impl Auth {
    /// True when the request carries the admin token or a live admin session.
    pub async fn is_admin(&self, request: &HttpRequest) -> Result<bool, ApiError> {
        if let Some(token) = bearer(request)
            && constant_time_eq(token, &self.admin_token)
        {
            return Ok(true);
        }
        let Some(cookie) = request.cookie(SESSION_COOKIE) else { return Ok(false) };
        let Ok(id) = SessionId::parse(cookie.value()) else { return Ok(false) };
        Ok(self.sessions.get(&id).await?.is_some())
    }

    /// 401 unless the request is an admin's.
    pub async fn require_admin(&self, request: &HttpRequest) -> Result<(), ApiError> {
        if self.is_admin(request).await? { Ok(()) } else { Err(ApiError::Unauthorized) }
    }
}

/// The rate limits of registrations and queue joins: per client IP in this process, per
/// registrant e-mail in Redis when configured (shared by every node).
#[derive(Debug)]
pub struct Limits {
    ip: Option<Gcra<IpAddr>>,
    email: Option<Gcra<CheckedEmail>>,
    shared: SharedGcra,
    redis: Option<redis::aio::ConnectionManager>,
    trusted_proxies: Vec<IpAddr>,
    clock: SystemClock,
}

impl Limits {
    pub fn new(settings: &Settings, redis: Option<redis::aio::ConnectionManager>) -> Limits {
        let redis_timeout = std::time::Duration::from_millis(settings.redis_timeout_ms);
        Limits {
            ip: Gcra::new("ip", settings.rate_limit_ip_per_second, 1, settings.rate_limit_ip_burst),
            email: Gcra::new(
                "email",
                settings.rate_limit_email_per_minute,
                60,
                settings.rate_limit_email_per_minute,
            ),
            shared: SharedGcra::new(&settings.redis_prefix, redis_timeout),
            redis,
            trusted_proxies: settings.trusted_proxies.clone(),
            clock: SystemClock,
        }
    }

    /// The client a per-IP limit counts: for a request forwarded by a peer node, the client the
    /// first node saw; otherwise the peer, or the client a trusted proxy names. `None` without a
    /// per-IP limit, which is then not worth the look.
    pub fn client_of(&self, request: &HttpRequest) -> Option<IpAddr> {
        self.ip.as_ref()?;
        if let Some(ForwardedClient(client)) = request.extensions().get::<ForwardedClient>().copied() {
            return client;
        }
        let forwarded = request.headers().get("x-forwarded-for").and_then(|value| value.to_str().ok());
        let peer = request.peer_addr().map(|address| address.ip());
        client_ip(peer, forwarded, &self.trusted_proxies)
    }

    /// Applies the per-IP limit to `client` (`client_of`).
    pub fn limit_client(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limit), Some(ip)) = (&self.ip, client) else { return Ok(()) };
        limit.check(&ip, self.clock.now().as_millis()).map_err(rate_limited)
    }

    /// Applies the per-e-mail limit: in Redis when configured, so that it holds across nodes; in
    /// this process otherwise, or while Redis fails (a limit that fails closed would turn a
    /// cache outage into a registration outage).
    pub async fn limit_registrant(&self, email: &CheckedEmail) -> Result<(), ApiError> {
        let Some(limit) = &self.email else { return Ok(()) };
        if let Some(redis) = &self.redis {
            let mut connection = redis.clone();
            // Boxed (see `owner_routing::route_to_owner`): a Redis call's state is large, and
            // registrations await this below the owner-routing middleware.
            match Box::pin(self.shared.check(limit, email.as_str(), &mut connection)).await {
                Ok(verdict) => return verdict.map_err(rate_limited),
                Err(error) => tracing::warn!(%error, "shared rate limit unavailable; limiting locally"),
            }
        }
        limit.check(email, self.clock.now().as_millis()).map_err(rate_limited)
    }
}

fn rate_limited(refusal: Refusal) -> ApiError {
    ::metrics::counter!(metrics::RATE_LIMITED).increment(1);
    ApiError::RateLimited {
        retry_after_seconds: refusal.retry_after_seconds,
        policy: refusal.policy,
        state: refusal.state,
    }
}

/// Refusing at once instead of queueing: the adaptive limit on writes in flight, the
/// write-behind whose backlog and stalls decide `Retry-After` and refusals, and the busy banner
/// that remembers the latest refusal.
#[derive(Debug)]
pub struct Shedding {
    /// The adaptive limit on registrations (and queue joins) in flight on this node.
    pub admission: AdmissionLimiter,
    pub write_behind: WriteBehindHandle,
    banner: BusyBanner,
}

/// What `GET /v1/status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Busy {
    pub busy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// When this node last shed a request, for the busy banner.
#[derive(Debug, Default)]
struct BusyBanner {
    last_shed_ms: AtomicU64,
}

impl Shedding {
    pub fn new(settings: &Settings, write_behind: WriteBehindHandle) -> Shedding {
        let bounds = AdmissionBounds::within_mailbox(settings.mailbox_capacity_max);
        Shedding {
            admission: AdmissionLimiter::with_system_clock(bounds),
            write_behind,
            banner: BusyBanner::default(),
        }
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
        self.banner.last_shed_ms.store(SystemClock.now().as_millis(), Ordering::Relaxed);
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

    /// The busy banner: the store fails, or a request was shed within `BUSY_AFTER_SHED_MS`.
    pub fn busy(&self) -> Busy {
        let since_shed_ms =
            SystemClock.now().as_millis().saturating_sub(self.banner.last_shed_ms.load(Ordering::Relaxed));
        let reason = if self.write_behind.stalled() {
            Some("the store is failing")
        } else if since_shed_ms < BUSY_AFTER_SHED_MS {
            Some("requests are being shed")
        } else {
            None
        };
        Busy { busy: reason.is_some(), reason }
    }
}

/// The events this node runs, found by id: a request's event, started from the store when it is
/// not running yet and this node may own it.
#[derive(Debug)]
pub struct Events {
    pub registry: Registry,
    shedding: Arc<Shedding>,
}

impl Events {
    pub fn new(registry: Registry, shedding: Arc<Shedding>) -> Events {
        Events { registry, shedding }
    }

    /// The running event, or 404; a store that cannot load it is a 503.
    pub async fn event(&self, id: &EventId) -> Result<EventHandle, ApiError> {
        match self.registry.event(id).await {
            Ok(Some(handle)) => Ok(handle),
            Ok(None) => Err(ApiError::NotFound("the event")),
            Err(error) => Err(self.shedding.actor_error(error)),
        }
    }

    /// The running event, or 404, taking `located` when it is given and still runs: the
    /// owner-routing layer locates the event of every route that needs its actor, and a second
    /// lookup would find the same handle. One that stopped in between (it stepped down) is
    /// looked up again, which answers as if it had not been located.
    pub async fn located_event(
        &self,
        id: &EventId,
        located: Option<EventHandle>,
    ) -> Result<EventHandle, ApiError> {
        match located {
            Some(event) if event.is_running() => Ok(event),
            // Boxed, as the other rare large states below the owner-routing middleware (see
            // `owner_routing::route_to_owner`): starting an event loads it from the store.
            _ => Box::pin(self.event(id)).await,
        }
    }

    /// `located_event` with the event the owner-routing layer located for `request`
    /// (`LocatedHere`), if it is the event `id`.
    pub async fn event_of(&self, request: &HttpRequest, id: &EventId) -> Result<EventHandle, ApiError> {
        self.located_event(id, LocatedHere::of(request).filter(|event| event.config().id == *id)).await
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|token| !token.is_empty())
}
