//! Event ownership leases: a node may only run the actor of an event while it holds that
//! event's lease. With Redis a lease is a key set with `SET key token NX PX ttl` and renewed or
//! released by compare-and-set scripts that act only while the key still holds the holder's
//! token; in the embedded single-node default, `InProcessLeases` keeps the same rules in memory.
//!
//! # The safety margin
//! A holder must consider its lease lost *before* Redis can expire it, or for a moment two
//! nodes would both believe they own the event. Three things stand between the holder's view
//! and Redis's:
//! - The round trip. `acquired_at` is read on the holder's monotonic clock *before* the command
//!   is sent, so Redis starts its TTL no earlier than the holder does: the round trip is already
//!   paid by the holder and needs no margin.
//! - Clock rate. Redis counts the TTL on its clock, the holder on its own; the two can run at
//!   slightly different rates (crystal drift, NTP slewing, a VM catching up on stolen time).
//! - The holder's own lateness. A decision checked against `is_valid(now)` takes time to
//!   finish, and a renewal timer on a busy runtime fires late.
//!
//! The margin is therefore `max(ttl / LEASE_SAFETY_MARGIN_TTL_DIVISOR, LEASE_SAFETY_MARGIN_MIN_MS)`:
//! a tenth of the TTL covers rate differences far beyond real clocks (Redlock budgets 1%), and
//! the 100 ms floor covers scheduling and timer jitter, which do not shrink with short TTLs. TTLs
//! below `LEASE_TTL_MIN_MS` are refused so that the margin never eats more than half a lease.
//!
//! A margin cannot stop a holder that was paused (GC, SIGSTOP, a frozen VM) past its lease; the
//! per-event epoch checked by every write-behind transaction is what fences that one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kuota_engine::store::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::random;
use crate::redis_connection::{REDIS_COMMAND_TIMEOUT_DEFAULT_MS, bounded};

/// The shortest lease, in milliseconds: twice the smallest safety margin, so that a lease is
/// always valid for at least half of its TTL.
pub const LEASE_TTL_MIN_MS: u64 = 2 * LEASE_SAFETY_MARGIN_MIN_MS;

/// The longest lease, in milliseconds. A crashed owner's events stay unowned for up to one TTL;
/// longer than this would be an outage nobody asked for.
pub const LEASE_TTL_MAX_MS: u64 = 10 * 60 * 1000;

/// The smallest safety margin, in milliseconds (see the module documentation).
pub const LEASE_SAFETY_MARGIN_MIN_MS: u64 = 100;

/// The safety margin is at least the TTL divided by this (see the module documentation).
pub const LEASE_SAFETY_MARGIN_TTL_DIVISOR: u32 = 10;

/// Length of a lease key, in bytes. Keys name events; anything longer is a mistake.
pub const LEASE_KEY_LENGTH_MAX: usize = 256;

/// Length of a lease's holder description (see `Leases::acquire_as`), in bytes.
pub const LEASE_HOLDER_LENGTH_MAX: usize = 512;

/// Leases one `InProcessLeases` keeps at once (one per owned event).
pub const IN_PROCESS_LEASES_MAX: usize = 100_000;

/// How long the renewal task waits before retrying a renewal that failed with an error (not one
/// that found the lease taken), in milliseconds.
pub const LEASE_RENEW_RETRY_DELAY_MS: u64 = 25;

/// How long the release of a lease whose acquisition's outcome was unknown waits between two
/// attempts, in milliseconds. Each attempt is bounded by the command timeout on top.
pub const LEASE_ORPHAN_RELEASE_RETRY_DELAY_MS: u64 = 100;

/// The shortest renewal interval `spawn_renewal` accepts, in milliseconds; shorter would only
/// load the lease service.
pub const LEASE_RENEW_INTERVAL_MIN_MS: u64 = 10;

/// How many renewals a holder gets within one validity window with `Lease::renewal_interval`:
/// one on time and two retries before the lease must be treated as lost.
pub const LEASE_RENEWALS_PER_VALIDITY: u32 = 3;

/// How much earlier than Redis a holder of a lease of `ttl` gives it up.
pub fn lease_safety_margin(ttl: Duration) -> Duration {
    (ttl / LEASE_SAFETY_MARGIN_TTL_DIVISOR).max(Duration::from_millis(LEASE_SAFETY_MARGIN_MIN_MS))
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The lease service did not answer or refused; whether the command took effect is unknown.
    #[error("the lease service is unavailable: {0}")]
    Unavailable(String),
    /// The TTL is outside `LEASE_TTL_MIN_MS..=LEASE_TTL_MAX_MS`.
    #[error("a lease TTL must be {LEASE_TTL_MIN_MS} to {LEASE_TTL_MAX_MS} ms, not {ttl_ms} ms")]
    InvalidTtl { ttl_ms: u128 },
    /// The key is empty or longer than `LEASE_KEY_LENGTH_MAX` bytes.
    #[error("a lease key must be 1 to {LEASE_KEY_LENGTH_MAX} bytes, not {length_bytes}")]
    InvalidKey { length_bytes: usize },
    /// The holder description is longer than `LEASE_HOLDER_LENGTH_MAX` bytes or has a control
    /// character.
    #[error("a lease holder must be at most {LEASE_HOLDER_LENGTH_MAX} bytes of printable text")]
    InvalidHolder,
    /// `IN_PROCESS_LEASES_MAX` unexpired leases are held already.
    #[error("{IN_PROCESS_LEASES_MAX} leases are held already")]
    Full,
}

/// Checks a key and a TTL, and returns the TTL in whole milliseconds: what Redis is told, and
/// therefore what the holder must count with (a fraction of a millisecond more would be a lie).
fn checked_ttl_ms(key: &str, ttl: Duration) -> Result<u64, LeaseError> {
    if key.is_empty() || key.len() > LEASE_KEY_LENGTH_MAX {
        return Err(LeaseError::InvalidKey { length_bytes: key.len() });
    }
    let ttl_ms = ttl.as_millis();
    if !(u128::from(LEASE_TTL_MIN_MS)..=u128::from(LEASE_TTL_MAX_MS)).contains(&ttl_ms) {
        return Err(LeaseError::InvalidTtl { ttl_ms });
    }
    Ok(u64::try_from(ttl_ms).expect("the TTL was just checked to be at most LEASE_TTL_MAX_MS, a u64"))
}

/// The value stored under a lease's key: a random token, then the holder's description after a
/// space, so that others can read who holds it (`Leases::holder`) while renew and release still
/// compare the whole value.
fn lease_token(holder: &str) -> Result<String, LeaseError> {
    if holder.len() > LEASE_HOLDER_LENGTH_MAX || holder.chars().any(char::is_control) {
        return Err(LeaseError::InvalidHolder);
    }
    let token = random::random_token_128();
    Ok(if holder.is_empty() { token } else { format!("{token} {holder}") })
}

/// The holder's description in a stored lease value ("" for an anonymous holder).
fn holder_of(value: &str) -> String {
    value.split_once(' ').map(|(_, holder)| holder.to_owned()).unwrap_or_default()
}

/// A lease held by this process: proof of ownership of `key` until `valid_until`.
///
/// The token is what the lease service compares before renewing or releasing; it is random per
/// acquisition and kept through renewals.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    key: String,
    token: String,
    ttl: Duration,
    acquired_at: Instant,
}

impl Lease {
    /// A lease of `key` under `token`, whose TTL started no earlier than `acquired_at` on the
    /// lease service. Implementations of `Leases` build these; a `Lease` that does not match the
    /// service's record is simply refused by `renew` and `release`.
    pub fn new(
        key: impl Into<String>,
        token: impl Into<String>,
        ttl: Duration,
        acquired_at: Instant,
    ) -> Lease {
        Lease { key: key.into(), token: token.into(), ttl, acquired_at }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the command that acquired or last renewed this lease was sent (monotonic clock).
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    pub fn safety_margin(&self) -> Duration {
        lease_safety_margin(self.ttl)
    }

    /// The instant from which the holder must act as if it had lost the lease: the TTL counted
    /// from `acquired_at`, less the safety margin.
    pub fn valid_until(&self) -> Instant {
        self.acquired_at + self.ttl.saturating_sub(self.safety_margin())
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until()
    }

    /// How often to renew so that `LEASE_RENEWALS_PER_VALIDITY` attempts fit in one validity
    /// window (a third of it by default).
    pub fn renewal_interval(&self) -> Duration {
        let validity = self.ttl.saturating_sub(self.safety_margin());
        (validity / LEASE_RENEWALS_PER_VALIDITY).max(Duration::from_millis(LEASE_RENEW_INTERVAL_MIN_MS))
    }
}

impl fmt::Debug for Lease {
    // The token is left out: it is the capability to renew and release, and Debug output ends
    // up in logs.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Lease")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("acquired_at", &self.acquired_at)
            .finish_non_exhaustive()
    }
}

/// A lease service. Object-safe, so that the node holds an `Arc<dyn Leases>` and does not care
/// whether Redis or the process is behind it.
pub trait Leases: Send + Sync + fmt::Debug + 'static {
    /// Takes `key` for `ttl` if nobody holds it. `Ok(None)` when someone does. A slow answer eats
    /// into the lease (its clock started before the command left), so the holder checks
    /// `is_valid` before acting on it.
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.acquire_as(key, "", ttl)
    }

    /// Like `acquire`, and records `holder` (printable, at most `LEASE_HOLDER_LENGTH_MAX` bytes)
    /// with the lease for `holder` to read: how the other nodes find an event's owner.
    ///
    /// An error means the caller holds nothing. When the service cannot tell whether the
    /// acquisition took effect, the implementation resolves it: it adopts a lease that did take
    /// effect, or releases it in the background, so that no key names a holder that does not
    /// know it holds it.
    fn acquire_as<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>>;

    /// Takes `key` over from its live lease when that lease's holder description is exactly
    /// `previous_holder`, replacing it in one atomic step by a new lease for `holder`. `Ok(None)`
    /// when the key is free or its holder is no longer `previous_holder`.
    ///
    /// For a node restarted under the same id: its previous life's leases would otherwise keep
    /// its events unserved for a TTL. An unknown outcome is resolved as in `acquire_as`.
    fn take_over_as<'a>(
        &'a self,
        key: &'a str,
        previous_holder: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>>;

    /// The holder description of `key`'s live lease ("" when acquired without one), or `None`
    /// when nobody holds it.
    fn holder<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>>;

    /// Extends `lease` by its TTL, counted from now, if it is still this holder's. Returns the
    /// renewed lease (same token, new `acquired_at`), or `Ok(None)` when it was lost: expired,
    /// released, or taken by another holder.
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>>;

    /// Gives `lease` up if it is still this holder's; `Ok(false)` when it was not (nothing changed).
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>>;
}

/// Extends the key's expiry only while it still holds the caller's token: a `GET` then a
/// `PEXPIRE` as two commands could extend a lease another node took in between.
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

/// Deletes the key only while it still holds the caller's token, for the same reason.
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// Replaces the key's value by a new lease, with its TTL, only while the stored holder
/// description (after the token and a space) is the expected one: a `GET` then a `SET` as two
/// commands could replace a lease that changed hands in between.
static TAKE_OVER_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local value = redis.call('GET', KEYS[1])
if not value then
    return 0
end
local space = string.find(value, ' ', 1, true)
if space == nil or string.sub(value, space + 1) ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1",
    )
});

/// Leases in Redis, shared by every node that uses the same Redis and prefix.
#[derive(Clone)]
pub struct RedisLeases {
    connection: ConnectionManager,
    prefix: String,
    /// Every command fails once it has waited this long (see `redis_connection::bounded`).
    command_timeout: Duration,
}

impl RedisLeases {
    /// Leases stored under `{prefix}lease:{key}` on `connection` (a cheap clone of a shared
    /// connection manager), each command bounded by `REDIS_COMMAND_TIMEOUT_DEFAULT_MS`.
    pub fn new(connection: ConnectionManager, prefix: impl Into<String>) -> RedisLeases {
        RedisLeases {
            connection,
            prefix: prefix.into(),
            command_timeout: Duration::from_millis(REDIS_COMMAND_TIMEOUT_DEFAULT_MS),
        }
    }

    /// The same leases, each command bounded by `command_timeout` (`KUOTA_REDIS_TIMEOUT_MS`).
    pub fn with_command_timeout(mut self, command_timeout: Duration) -> RedisLeases {
        self.command_timeout = command_timeout;
        self
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}lease:{}", self.prefix, key)
    }

    #[tracing::instrument(skip(self))]
    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let ttl_ms = checked_ttl_ms(key, ttl)?;
        let token = lease_token(holder)?;
        let mut connection = self.connection.clone();
        // Read before the command leaves, so that the round trip counts against the holder:
        // Redis starts the TTL no earlier than this instant.
        let acquired_at = Instant::now();
        let mut set = redis::cmd("SET");
        set.arg(self.redis_key(key)).arg(&token).arg("NX").arg("PX").arg(ttl_ms);
        let lease = Lease::new(key, token, Duration::from_millis(ttl_ms), acquired_at);
        match bounded(self.command_timeout, set.query_async::<Option<String>>(&mut connection)).await {
            Ok(answer) => Ok(answer.map(|_| lease)),
            Err(error) => self.resolve_unknown_acquisition(lease, error).await,
        }
    }

    #[tracing::instrument(skip(self))]
    async fn take_over_lease(
        &self,
        key: &str,
        previous_holder: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let ttl_ms = checked_ttl_ms(key, ttl)?;
        let token = lease_token(holder)?;
        let mut connection = self.connection.clone();
        let mut invocation = TAKE_OVER_SCRIPT.prepare_invoke();
        invocation.key(self.redis_key(key)).arg(previous_holder).arg(&token).arg(ttl_ms);
        // Read before the command leaves, for the same reason as in `acquire`.
        let acquired_at = Instant::now();
        let lease = Lease::new(key, token, Duration::from_millis(ttl_ms), acquired_at);
        match bounded(self.command_timeout, invocation.invoke_async::<i64>(&mut connection)).await {
            Ok(replaced) => Ok((replaced == 1).then_some(lease)),
            Err(error) => self.resolve_unknown_acquisition(lease, error).await,
        }
    }

    /// A `SET NX` (or a take-over) failed or timed out, so whether it took effect is unknown:
    /// its reply may have been lost with the connection, or the command may still wait in a
    /// frozen Redis and run when it resumes. Left alone, such a key would keep the event under
    /// this node's name for a whole TTL while this node does not run it. So the key is read
    /// back:
    /// - it holds the token: the lease is this holder's after all, and is adopted (its TTL counts
    ///   from `acquired_at`, read before the SET left, so the holder's view stays on the safe
    ///   side);
    /// - it holds another value or none: the SET did not take effect (a GET sent after it on
    ///   the same connection is answered after it), and the error is what the caller gets;
    /// - it cannot be read: a background task releases the token once Redis answers again.
    async fn resolve_unknown_acquisition(
        &self,
        lease: Lease,
        error: redis::RedisError,
    ) -> Result<Option<Lease>, LeaseError> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.redis_key(lease.key()));
        match bounded(self.command_timeout, get.query_async::<Option<String>>(&mut connection)).await {
            Ok(Some(value)) if value == lease.token() => {
                tracing::warn!(
                    key = %lease.key(),
                    %error,
                    "the reply to a lease acquisition was lost; the lease is ours and adopted"
                );
                Ok(Some(lease))
            }
            Ok(Some(_)) => Ok(None),
            Ok(None) => Err(unavailable(error)),
            Err(read_error) => {
                tracing::warn!(
                    key = %lease.key(), %error, %read_error,
                    "a lease acquisition's outcome is unknown; releasing it once Redis answers"
                );
                self.release_in_background(lease);
                Err(unavailable(error))
            }
        }
    }

    /// Releases `lease`, which this holder does not use, retrying until Redis answers or the
    /// lease has run out on its own (`ttl` after `acquired_at`).
    ///
    /// If Redis is frozen, the SET may run only when it resumes and then lasts a full TTL from
    /// there, past this task's end. That case is covered too: every release sent here was
    /// written on the same connection after the SET, and Redis answers one connection's
    /// commands in order, so the first release to run comes after the SET and deletes its key.
    fn release_in_background(&self, lease: Lease) {
        let leases = self.clone();
        tokio::spawn(async move {
            let expires_at = lease.acquired_at() + lease.ttl();
            loop {
                match leases.release_lease(&lease).await {
                    Ok(released) => {
                        tracing::info!(
                            key = %lease.key(),
                            released,
                            "an unused lease acquisition was resolved"
                        );
                        return;
                    }
                    Err(error) if Instant::now() >= expires_at => {
                        tracing::warn!(
                            key = %lease.key(),
                            %error,
                            "an unused lease ran out before Redis answered"
                        );
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(LEASE_ORPHAN_RELEASE_RETRY_DELAY_MS)).await;
                    }
                }
            }
        });
    }

    #[tracing::instrument(skip(self))]
    async fn lease_holder(&self, key: &str) -> Result<Option<String>, LeaseError> {
        if key.is_empty() || key.len() > LEASE_KEY_LENGTH_MAX {
            return Err(LeaseError::InvalidKey { length_bytes: key.len() });
        }
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.redis_key(key));
        let value: Option<String> =
            bounded(self.command_timeout, get.query_async(&mut connection)).await.map_err(unavailable)?;
        Ok(value.as_deref().map(holder_of))
    }

    #[tracing::instrument(skip(self, lease), fields(key = %lease.key()))]
    async fn renew_lease(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        let ttl_ms = checked_ttl_ms(lease.key(), lease.ttl())?;
        let ttl = Duration::from_millis(ttl_ms);
        let mut connection = self.connection.clone();
        let mut invocation = RENEW_SCRIPT.prepare_invoke();
        invocation.key(self.redis_key(lease.key())).arg(lease.token()).arg(ttl_ms);
        // Read before the command leaves, for the same reason as in `acquire`.
        let acquired_at = Instant::now();
        let renewed: i64 = bounded(self.command_timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(unavailable)?;
        Ok((renewed == 1).then(|| Lease::new(lease.key(), lease.token(), ttl, acquired_at)))
    }

    #[tracing::instrument(skip(self, lease), fields(key = %lease.key()))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut connection = self.connection.clone();
        let mut invocation = RELEASE_SCRIPT.prepare_invoke();
        invocation.key(self.redis_key(lease.key())).arg(lease.token());
        let deleted: i64 = bounded(self.command_timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }
}

fn unavailable(error: redis::RedisError) -> LeaseError {
    LeaseError::Unavailable(error.to_string())
}

impl fmt::Debug for RedisLeases {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisLeases")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl Leases for RedisLeases {
    fn acquire_as<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(self.acquire_lease(key, holder, ttl))
    }

    fn take_over_as<'a>(
        &'a self,
        key: &'a str,
        previous_holder: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(self.take_over_lease(key, previous_holder, holder, ttl))
    }

    fn holder<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>> {
        Box::pin(self.lease_holder(key))
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(self.renew_lease(lease))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(self.release_lease(lease))
    }
}

/// Leases kept in this process, for the embedded single-node default. Same rules as Redis: one
/// holder per key, an expired lease is free to take, renew and release compare the token.
#[derive(Debug, Default)]
pub struct InProcessLeases {
    held: Mutex<HashMap<String, HeldLease>>,
}

#[derive(Debug)]
struct HeldLease {
    token: String,
    /// Where Redis would expire the key: the full TTL from acquisition, without the margin.
    expires_at: Instant,
}

impl InProcessLeases {
    pub fn new() -> InProcessLeases {
        InProcessLeases::default()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldLease>> {
        // Every critical section below is one lookup and one insert or remove, none of which can
        // panic half-way, so the map is consistent even if a holder of the lock panicked.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire_now(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, LeaseError> {
        let ttl = Duration::from_millis(checked_ttl_ms(key, ttl)?);
        let token = lease_token(holder)?;
        let now = Instant::now();
        let mut held = self.held();
        if held.get(key).is_some_and(|lease| lease.expires_at > now) {
            return Ok(None);
        }
        if !held.contains_key(key) && held.len() >= IN_PROCESS_LEASES_MAX {
            held.retain(|_, lease| lease.expires_at > now);
            if held.len() >= IN_PROCESS_LEASES_MAX {
                return Err(LeaseError::Full);
            }
        }
        held.insert(key.to_owned(), HeldLease { token: token.clone(), expires_at: now + ttl });
        Ok(Some(Lease::new(key, token, ttl, now)))
    }

    fn take_over_now(
        &self,
        key: &str,
        previous_holder: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let ttl = Duration::from_millis(checked_ttl_ms(key, ttl)?);
        let token = lease_token(holder)?;
        let now = Instant::now();
        let mut held = self.held();
        match held.get_mut(key) {
            Some(entry) if entry.expires_at > now && holder_of(&entry.token) == previous_holder => {
                *entry = HeldLease { token: token.clone(), expires_at: now + ttl };
                Ok(Some(Lease::new(key, token, ttl, now)))
            }
            _ => Ok(None),
        }
    }

    fn holder_now(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        self.held().get(key).filter(|lease| lease.expires_at > now).map(|lease| holder_of(&lease.token))
    }

    fn renew_now(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        let ttl = Duration::from_millis(checked_ttl_ms(lease.key(), lease.ttl())?);
        let now = Instant::now();
        let mut held = self.held();
        match held.get_mut(lease.key()) {
            Some(entry) if entry.token == lease.token() && entry.expires_at > now => {
                entry.expires_at = now + ttl;
                Ok(Some(Lease::new(lease.key(), lease.token(), ttl, now)))
            }
            _ => Ok(None),
        }
    }

    fn release_now(&self, lease: &Lease) -> bool {
        let now = Instant::now();
        let mut held = self.held();
        match held.get(lease.key()) {
            Some(entry) if entry.token == lease.token() => {
                // An expired entry is removed too (it is dead weight), but like an expired Redis
                // key it no longer counts as released by its holder.
                let was_live = entry.expires_at > now;
                held.remove(lease.key());
                was_live
            }
            _ => false,
        }
    }
}

impl Leases for InProcessLeases {
    fn acquire_as<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::ready(self.acquire_now(key, holder, ttl)))
    }

    fn take_over_as<'a>(
        &'a self,
        key: &'a str,
        previous_holder: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::ready(self.take_over_now(key, previous_holder, holder, ttl)))
    }

    fn holder<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>> {
        Box::pin(std::future::ready(Ok(self.holder_now(key))))
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::ready(self.renew_now(lease)))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(std::future::ready(Ok(self.release_now(lease))))
    }
}

/// Keeps a lease renewed in a background task and tells its holder, before the lease can expire,
/// when it was lost. Dropping the keeper stops the renewals (the lease then runs out on its own);
/// `release` stops them and gives the lease back at once.
///
/// Once lost, a lease stays lost for this keeper: the holder has stepped down by then and must
/// acquire anew (which, for an event, takes a new epoch).
#[derive(Debug)]
pub struct LeaseKeeper {
    leases: Arc<dyn Leases>,
    current: watch::Receiver<Option<Lease>>,
    task: JoinHandle<()>,
}

/// Starts renewing `lease` every `every` (see `Lease::renewal_interval`) on the current tokio
/// runtime. The keeper reports the lease lost when a renewal finds it taken or expired, or when
/// `valid_until` passes without a successful renewal (a renewal that fails with an error is
/// retried until then). Either way the loss is reported before Redis can expire the key.
///
/// # Panics
/// When `every` is shorter than `LEASE_RENEW_INTERVAL_MIN_MS` (a mistake of the caller), or
/// outside a tokio runtime.
pub fn spawn_renewal(leases: Arc<dyn Leases>, lease: Lease, every: Duration) -> LeaseKeeper {
    assert!(
        every >= Duration::from_millis(LEASE_RENEW_INTERVAL_MIN_MS),
        "a lease renewal interval must be at least {LEASE_RENEW_INTERVAL_MIN_MS} ms, not {every:?}"
    );
    let (sender, current) = watch::channel(Some(lease.clone()));
    let task = tokio::spawn(keep_renewed(Arc::clone(&leases), lease, every, sender));
    LeaseKeeper { leases, current, task }
}

impl LeaseKeeper {
    /// The latest renewed lease, or `None` once it was lost.
    pub fn lease(&self) -> Option<Lease> {
        self.current.borrow().clone()
    }

    /// Whether the lease is held at `now`. This reads the clock against `valid_until` rather than
    /// trusting the renewal task alone, so that a late-running task cannot extend ownership.
    pub fn is_held(&self, now: Instant) -> bool {
        self.current.borrow().as_ref().is_some_and(|lease| lease.is_valid(now))
    }

    /// A receiver that sees every renewed lease, and `None` once the lease is lost.
    pub fn subscribe(&self) -> watch::Receiver<Option<Lease>> {
        self.current.clone()
    }

    /// Waits until the renewal task reports the lease lost: for stepping down in the background.
    /// Each decision made under the lease checks `is_held(now)` instead, which does not depend on
    /// the task being scheduled on time.
    pub async fn lost(&mut self) {
        // The sender lives in the renewal task, which ends only after sending `None` or when
        // this keeper aborts it; either way waiting ends, and a closed channel means lost too.
        let _ = self.current.wait_for(Option::is_none).await;
    }

    /// Stops renewing and gives the lease back. `Ok(false)` when it had already been lost.
    pub async fn release(self) -> Result<bool, LeaseError> {
        self.task.abort();
        let Some(lease) = self.lease() else {
            return Ok(false);
        };
        // A renewal cut short by the abort may still land, but it keeps the same token, so this
        // release removes it all the same.
        self.leases.release(&lease).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renewal task: renews on schedule and publishes each renewed lease, or `None` once lost.
async fn keep_renewed(
    leases: Arc<dyn Leases>,
    mut lease: Lease,
    every: Duration,
    sender: watch::Sender<Option<Lease>>,
) {
    loop {
        let deadline = tokio::time::Instant::from_std(lease.valid_until());
        tokio::time::sleep_until((tokio::time::Instant::now() + every).min(deadline)).await;
        match renew_before(leases.as_ref(), &lease, deadline).await {
            Ok(renewed) => {
                lease = renewed;
                sender.send_replace(Some(lease.clone()));
            }
            Err(loss) => {
                tracing::warn!(key = %lease.key(), %loss, "lease lost");
                sender.send_replace(None);
                return;
            }
        }
    }
}

#[derive(Debug)]
enum Loss {
    Taken,
    DeadlinePassed,
}

impl fmt::Display for Loss {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Loss::Taken => "expired, released or taken by another holder",
            Loss::DeadlinePassed => "not renewed before the safety margin",
        })
    }
}

/// Renews `lease`, retrying errors, until `deadline` (its `valid_until`).
async fn renew_before(
    leases: &dyn Leases,
    lease: &Lease,
    deadline: tokio::time::Instant,
) -> Result<Lease, Loss> {
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(Loss::DeadlinePassed);
        }
        match tokio::time::timeout_at(deadline, leases.renew(lease)).await {
            Err(_elapsed) => return Err(Loss::DeadlinePassed),
            Ok(Ok(Some(renewed))) => return Ok(renewed),
            Ok(Ok(None)) => return Err(Loss::Taken),
            Ok(Err(error)) => {
                // The lease is still valid locally, so the holder may keep it while it retries;
                // whether this attempt took effect does not matter, renewing is idempotent.
                tracing::warn!(key = %lease.key(), %error, "renewing a lease failed; retrying");
                let retry_at =
                    tokio::time::Instant::now() + Duration::from_millis(LEASE_RENEW_RETRY_DELAY_MS);
                tokio::time::sleep_until(retry_at.min(deadline)).await;
            }
        }
    }
}
