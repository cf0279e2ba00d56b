//! Admin sessions for the HTTP API: `POST /v1/admin/sessions` trades the admin token for a
//! session id in a cookie, and later requests present that id. Sessions live in Redis when it is
//! configured, so that any node can check any cookie, and in memory in the embedded default.
//!
//! A session id is 128 random bits in lower-case hex and is a bearer credential: it is parsed
//! (exact length, hex only) before any store is asked, so a garbage cookie costs no round trip,
//! and it never appears in `Debug` output or traces.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kuota_engine::store::BoxFuture;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::random;
use crate::redis_connection::{REDIS_COMMAND_TIMEOUT_DEFAULT_MS, bounded};

/// Characters in a session id: 128 random bits in hex.
pub const SESSION_ID_LENGTH_CHARACTERS: usize = random::TOKEN_128_HEX_LENGTH_CHARACTERS;

/// Length of a session's subject (who logged in), in bytes.
pub const SESSION_SUBJECT_LENGTH_MAX: usize = 256;

/// The shortest session, in milliseconds (Redis refuses an expiry of zero).
pub const SESSION_TTL_MIN_MS: u64 = 1;

/// The longest session, in seconds: a stolen cookie should not stay useful for longer than a week.
pub const SESSION_TTL_MAX_SECONDS: u64 = 7 * 24 * 60 * 60;

/// Sessions a `MemorySessionStore` keeps by default.
pub const SESSIONS_MAX_DEFAULT: usize = 10_000;

/// An admin session id. Only `generate` and `parse` make one, so holding a `SessionId` means it
/// has the one valid form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new random id.
    pub fn generate() -> SessionId {
        SessionId(random::random_token_128())
    }

    /// An id from a cookie: exactly `SESSION_ID_LENGTH_CHARACTERS` lower-case hex characters,
    /// the one form ids are issued in.
    pub fn parse(text: &str) -> Result<SessionId, InvalidSessionId> {
        if random::is_lowercase_hex(text, SESSION_ID_LENGTH_CHARACTERS) {
            Ok(SessionId(text.to_owned()))
        } else {
            Err(InvalidSessionId)
        }
    }

    /// The id as it goes into the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    // The id is a credential and Debug output ends up in logs.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SessionId(<redacted>)")
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(text: &str) -> Result<SessionId, InvalidSessionId> {
        SessionId::parse(text)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(text: &str) -> Result<SessionId, InvalidSessionId> {
        SessionId::parse(text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a session id must be {SESSION_ID_LENGTH_CHARACTERS} lower-case hexadecimal characters")]
pub struct InvalidSessionId;

/// What a session remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// Who logged in (for the audit trail).
    pub subject: String,
    /// When the session was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl SessionData {
    fn check(&self) -> Result<(), SessionError> {
        let length_bytes = self.subject.len();
        if (1..=SESSION_SUBJECT_LENGTH_MAX).contains(&length_bytes) {
            Ok(())
        } else {
            Err(SessionError::InvalidSubject { length_bytes })
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session store did not answer or refused; retrying later may work.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// The memory store holds its bound of unexpired sessions.
    #[error("{sessions_max} sessions are open already")]
    Full { sessions_max: usize },
    /// The TTL is outside `SESSION_TTL_MIN_MS` to `SESSION_TTL_MAX_SECONDS`.
    #[error("a session TTL must be {SESSION_TTL_MIN_MS} ms to {SESSION_TTL_MAX_SECONDS} s, not {ttl_ms} ms")]
    InvalidTtl { ttl_ms: u128 },
    /// The subject is empty or longer than `SESSION_SUBJECT_LENGTH_MAX` bytes.
    #[error("a session subject must be 1 to {SESSION_SUBJECT_LENGTH_MAX} bytes, not {length_bytes}")]
    InvalidSubject { length_bytes: usize },
    /// A stored session does not read back as one this code writes.
    #[error("a stored session is corrupt: {0}")]
    Corrupt(String),
    /// A freshly generated id was already in use. With 128 random bits this does not happen
    /// unless the random source is broken, so it is reported rather than retried.
    #[error("a new session id collided with an existing one")]
    IdCollision,
}

/// Checks a TTL and returns it in whole milliseconds, as Redis is told.
fn checked_ttl_ms(ttl: Duration) -> Result<u64, SessionError> {
    let ttl_ms = ttl.as_millis();
    let ttl_max_ms = u128::from(SESSION_TTL_MAX_SECONDS) * 1000;
    if !(u128::from(SESSION_TTL_MIN_MS)..=ttl_max_ms).contains(&ttl_ms) {
        return Err(SessionError::InvalidTtl { ttl_ms });
    }
    Ok(u64::try_from(ttl_ms).expect("the TTL was just checked to be at most a week, which fits a u64"))
}

/// A session store. Object-safe, so that the API holds an `Arc<dyn SessionStore>`.
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Opens a session that lasts `ttl` and returns its new id.
    fn create(&self, data: SessionData, ttl: Duration) -> BoxFuture<'_, Result<SessionId, SessionError>>;

    /// The session's data, or `Ok(None)` when there is no such session (never was, expired, or
    /// deleted).
    fn get<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>>;

    /// Ends the session. Ending one that does not exist is not an error: logging out twice is fine.
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), SessionError>>;
}

/// Sessions in Redis as JSON under `{prefix}session:{id}`, expired by Redis itself.
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: ConnectionManager,
    prefix: String,
    /// Every command fails once it has waited this long (see `redis_connection::bounded`).
    command_timeout: Duration,
}

impl RedisSessionStore {
    /// Sessions on `connection` (a cheap clone of a shared connection manager) under `prefix`,
    /// each command bounded by `REDIS_COMMAND_TIMEOUT_DEFAULT_MS`.
    pub fn new(connection: ConnectionManager, prefix: impl Into<String>) -> RedisSessionStore {
        RedisSessionStore {
            connection,
            prefix: prefix.into(),
            command_timeout: Duration::from_millis(REDIS_COMMAND_TIMEOUT_DEFAULT_MS),
        }
    }

    /// The same store, each command bounded by `command_timeout` (`KUOTA_REDIS_TIMEOUT_MS`).
    pub fn with_command_timeout(mut self, command_timeout: Duration) -> RedisSessionStore {
        self.command_timeout = command_timeout;
        self
    }

    fn redis_key(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.prefix, id.as_str())
    }

    #[tracing::instrument(skip(self, data), fields(subject = %data.subject))]
    async fn create_session(&self, data: SessionData, ttl: Duration) -> Result<SessionId, SessionError> {
        data.check()?;
        let ttl_ms = checked_ttl_ms(ttl)?;
        let json = serde_json::to_string(&data)
            .expect("SessionData is strings and integers, which always serialize");
        let id = SessionId::generate();
        let mut connection = self.connection.clone();
        // NX so that a new session can never overwrite another one, however unlikely a collision.
        let mut set = redis::cmd("SET");
        set.arg(self.redis_key(&id)).arg(json).arg("NX").arg("PX").arg(ttl_ms);
        // A SET whose reply was lost leaves a session nobody has the id of; it expires unused.
        let answer: Option<String> =
            bounded(self.command_timeout, set.query_async(&mut connection)).await.map_err(unavailable)?;
        match answer {
            Some(_) => Ok(id),
            None => Err(SessionError::IdCollision),
        }
    }

    // The id is skipped: it is the credential itself.
    #[tracing::instrument(skip(self, id))]
    async fn get_session(&self, id: &SessionId) -> Result<Option<SessionData>, SessionError> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.redis_key(id));
        let json: Option<String> =
            bounded(self.command_timeout, get.query_async(&mut connection)).await.map_err(unavailable)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let data: SessionData =
            serde_json::from_str(&json).map_err(|error| SessionError::Corrupt(error.to_string()))?;
        // Checked again on the way out, as on the way in: the key space is shared with whoever
        // else can write to this Redis.
        data.check().map_err(|error| SessionError::Corrupt(error.to_string()))?;
        Ok(Some(data))
    }

    #[tracing::instrument(skip(self, id))]
    async fn delete_session(&self, id: &SessionId) -> Result<(), SessionError> {
        let mut connection = self.connection.clone();
        let mut delete = redis::cmd("DEL");
        delete.arg(self.redis_key(id));
        let _deleted: i64 =
            bounded(self.command_timeout, delete.query_async(&mut connection)).await.map_err(unavailable)?;
        Ok(())
    }
}

fn unavailable(error: redis::RedisError) -> SessionError {
    SessionError::Unavailable(error.to_string())
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisSessionStore {
    fn create(&self, data: SessionData, ttl: Duration) -> BoxFuture<'_, Result<SessionId, SessionError>> {
        Box::pin(self.create_session(data, ttl))
    }

    fn get<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        Box::pin(self.get_session(id))
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(self.delete_session(id))
    }
}

/// Sessions in this process, for the embedded single-node default, bounded by `sessions_max`.
#[derive(Debug)]
pub struct MemorySessionStore {
    sessions_max: usize,
    sessions: Mutex<HashMap<SessionId, StoredSession>>,
}

#[derive(Debug)]
struct StoredSession {
    data: SessionData,
    expires_at: Instant,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        MemorySessionStore::new(SESSIONS_MAX_DEFAULT)
    }
}

impl MemorySessionStore {
    /// A store that refuses new sessions while `sessions_max` unexpired ones are open.
    pub fn new(sessions_max: usize) -> MemorySessionStore {
        MemorySessionStore { sessions_max, sessions: Mutex::new(HashMap::new()) }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, StoredSession>> {
        // Every critical section below is a lookup, an insert, a remove or a retain, none of
        // which can leave the map half-changed, so it is consistent even after a panic elsewhere.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_now(&self, data: SessionData, ttl: Duration) -> Result<SessionId, SessionError> {
        data.check()?;
        let ttl = Duration::from_millis(checked_ttl_ms(ttl)?);
        let now = Instant::now();
        let mut sessions = self.sessions();
        if sessions.len() >= self.sessions_max {
            // Purging only when full keeps creation O(1) in the common case; when full, one pass
            // over at most `sessions_max` entries is the price of staying bounded.
            sessions.retain(|_, session| session.expires_at > now);
            if sessions.len() >= self.sessions_max {
                return Err(SessionError::Full { sessions_max: self.sessions_max });
            }
        }
        let id = SessionId::generate();
        if sessions.contains_key(&id) {
            return Err(SessionError::IdCollision);
        }
        sessions.insert(id.clone(), StoredSession { data, expires_at: now + ttl });
        Ok(id)
    }

    fn get_now(&self, id: &SessionId) -> Option<SessionData> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        match sessions.get(id) {
            Some(session) if session.expires_at > now => Some(session.data.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }
}

impl SessionStore for MemorySessionStore {
    fn create(&self, data: SessionData, ttl: Duration) -> BoxFuture<'_, Result<SessionId, SessionError>> {
        Box::pin(std::future::ready(self.create_now(data, ttl)))
    }

    fn get<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Option<SessionData>, SessionError>> {
        Box::pin(std::future::ready(Ok(self.get_now(id))))
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), SessionError>> {
        self.sessions().remove(id);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_parses_back_to_itself() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn the_debug_form_of_a_session_id_hides_it() {
        let id = SessionId::generate();
        assert!(!format!("{id:?}").contains(id.as_str()));
    }
}
