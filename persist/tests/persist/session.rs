//! Admin sessions, against the Redis named by `KUOTA_TEST_REDIS_URL` and against the memory
//! store: both must behave the same, so most test bodies run on both. Each Redis test works
//! under a random key prefix and deletes its keys when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuota_persist::session::{
    InvalidSessionId, MemorySessionStore, RedisSessionStore, SESSION_SUBJECT_LENGTH_MAX,
    SESSION_TTL_MAX_SECONDS, SessionData, SessionError, SessionId, SessionStore,
};

use kuota_persist::redis_connection;

use super::redis_support::{PrivateRedis, TestRedis, free_port};

/// A session long enough that a test never sees it expire by accident.
const LONG_TTL_MS: u64 = 60_000;

/// A session short enough for the expiry test to finish quickly.
const SHORT_TTL_MS: u64 = 100;

/// Time added to a TTL when a test waits for it to run out: Redis expires keys within a
/// millisecond, and this leaves room for a loaded test machine.
const EXPIRY_SLACK_MS: u64 = 100;

/// The Redis command timeout of the frozen-Redis tests, in milliseconds.
const COMMAND_TIMEOUT_MS: u64 = 200;

/// Time a command may take past its timeout on a loaded test machine, in milliseconds.
const TIMEOUT_SLACK_MS: u64 = 300;

impl TestRedis {
    fn sessions(&self) -> Arc<dyn SessionStore> {
        Arc::new(RedisSessionStore::new(self.connection.clone(), self.prefix.clone()))
    }

    /// The Redis key behind a session (the layout `RedisSessionStore` documents).
    fn session_key(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.prefix, id.as_str())
    }
}

fn milliseconds(count: u64) -> Duration {
    Duration::from_millis(count)
}

fn admin(created_at_ms: u64) -> SessionData {
    SessionData { subject: "admin".to_owned(), created_at_ms }
}

/// Runs one test body against Redis and against the memory store, as two tests named
/// `<body>::in_redis` and `<body>::in_memory`.
macro_rules! against_both {
    ($body:ident) => {
        mod $body {
            use super::*;

            #[tokio::test]
            async fn in_redis() {
                let redis = TestRedis::connect().await;
                super::$body(redis.sessions()).await;
            }

            #[tokio::test]
            async fn in_memory() {
                super::$body(Arc::new(MemorySessionStore::default())).await;
            }
        }
    };
}

against_both!(a_session_reads_back_until_it_is_deleted);
async fn a_session_reads_back_until_it_is_deleted(sessions: Arc<dyn SessionStore>) {
    let data = SessionData { subject: "organizer@example.org".to_owned(), created_at_ms: 1_767_225_600_000 };
    let id = sessions.create(data.clone(), milliseconds(LONG_TTL_MS)).await.expect("the session is created");
    assert_eq!(sessions.get(&id).await, Ok(Some(data)));

    // The id survives the trip through a cookie.
    let from_cookie = SessionId::parse(id.as_str()).expect("an issued id parses");
    assert_eq!(
        sessions.get(&from_cookie).await.unwrap().map(|data| data.subject).as_deref(),
        Some("organizer@example.org")
    );

    sessions.delete(&id).await.expect("the session is deleted");
    assert_eq!(sessions.get(&id).await, Ok(None));
}

against_both!(two_sessions_are_independent);
async fn two_sessions_are_independent(sessions: Arc<dyn SessionStore>) {
    let first = sessions.create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();
    let second = sessions.create(admin(2), milliseconds(LONG_TTL_MS)).await.unwrap();
    assert_ne!(first, second);
    sessions.delete(&first).await.unwrap();
    assert_eq!(sessions.get(&first).await, Ok(None));
    assert_eq!(sessions.get(&second).await, Ok(Some(admin(2))));
    sessions.delete(&second).await.unwrap();
}

against_both!(an_expired_session_is_gone);
async fn an_expired_session_is_gone(sessions: Arc<dyn SessionStore>) {
    let id = sessions.create(admin(1), milliseconds(SHORT_TTL_MS)).await.unwrap();
    assert_eq!(sessions.get(&id).await, Ok(Some(admin(1))));
    tokio::time::sleep(milliseconds(SHORT_TTL_MS + EXPIRY_SLACK_MS)).await;
    assert_eq!(sessions.get(&id).await, Ok(None));
}

against_both!(an_unknown_session_is_absent);
async fn an_unknown_session_is_absent(sessions: Arc<dyn SessionStore>) {
    assert_eq!(sessions.get(&SessionId::generate()).await, Ok(None));
}

against_both!(deleting_a_session_twice_is_fine);
async fn deleting_a_session_twice_is_fine(sessions: Arc<dyn SessionStore>) {
    let id = sessions.create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();
    assert_eq!(sessions.delete(&id).await, Ok(()));
    assert_eq!(sessions.delete(&id).await, Ok(()));
    assert_eq!(sessions.delete(&SessionId::generate()).await, Ok(()), "nor is deleting one that never was");
}

against_both!(an_empty_or_oversized_subject_is_refused);
async fn an_empty_or_oversized_subject_is_refused(sessions: Arc<dyn SessionStore>) {
    let empty = SessionData { subject: String::new(), created_at_ms: 1 };
    assert_eq!(
        sessions.create(empty, milliseconds(LONG_TTL_MS)).await,
        Err(SessionError::InvalidSubject { length_bytes: 0 })
    );
    let oversized = SessionData { subject: "a".repeat(SESSION_SUBJECT_LENGTH_MAX + 1), created_at_ms: 1 };
    assert_eq!(
        sessions.create(oversized, milliseconds(LONG_TTL_MS)).await,
        Err(SessionError::InvalidSubject { length_bytes: SESSION_SUBJECT_LENGTH_MAX + 1 })
    );
}

against_both!(a_ttl_of_zero_or_beyond_a_week_is_refused);
async fn a_ttl_of_zero_or_beyond_a_week_is_refused(sessions: Arc<dyn SessionStore>) {
    assert!(matches!(sessions.create(admin(1), Duration::ZERO).await, Err(SessionError::InvalidTtl { .. })));
    let too_long = Duration::from_secs(SESSION_TTL_MAX_SECONDS + 1);
    assert!(matches!(sessions.create(admin(1), too_long).await, Err(SessionError::InvalidTtl { .. })));
}

#[test]
fn an_invalid_session_id_is_refused_at_parse() {
    let valid = SessionId::generate();
    assert_eq!(valid.as_str().len(), 32);
    for garbage in [
        "",
        "not-a-session",
        &valid.as_str()[..31],
        &format!("{}0", valid.as_str()),
        &valid.as_str().to_uppercase().replace(|c: char| c.is_ascii_digit(), "A"),
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcde ",
        "0123456789abcdef0123456789abcdé",
        "../../../../../../../etc/passwd.",
    ] {
        assert_eq!(SessionId::parse(garbage), Err(InvalidSessionId), "{garbage:?}");
        assert_eq!(garbage.parse::<SessionId>(), Err(InvalidSessionId), "{garbage:?}");
    }
    assert!(SessionId::parse("0123456789abcdef0123456789abcdef").is_ok());
}

#[tokio::test]
async fn the_memory_store_refuses_sessions_past_its_bound() {
    let sessions = MemorySessionStore::new(3);
    let mut ids = Vec::new();
    for created_at_ms in 0..3 {
        ids.push(
            sessions.create(admin(created_at_ms), milliseconds(LONG_TTL_MS)).await.expect("below the bound"),
        );
    }
    assert_eq!(
        sessions.create(admin(3), milliseconds(LONG_TTL_MS)).await,
        Err(SessionError::Full { sessions_max: 3 })
    );

    // Logging out makes room.
    sessions.delete(&ids[0]).await.unwrap();
    assert!(sessions.create(admin(4), milliseconds(LONG_TTL_MS)).await.is_ok());
}

#[tokio::test]
async fn the_memory_store_makes_room_by_purging_expired_sessions() {
    let sessions = MemorySessionStore::new(2);
    sessions.create(admin(0), milliseconds(SHORT_TTL_MS)).await.unwrap();
    let kept = sessions.create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();
    tokio::time::sleep(milliseconds(SHORT_TTL_MS + EXPIRY_SLACK_MS)).await;

    let newest =
        sessions.create(admin(2), milliseconds(LONG_TTL_MS)).await.expect("the expired session made room");
    assert_eq!(sessions.get(&kept).await, Ok(Some(admin(1))));
    assert_eq!(sessions.get(&newest).await, Ok(Some(admin(2))));
    assert_eq!(
        sessions.create(admin(3), milliseconds(LONG_TTL_MS)).await,
        Err(SessionError::Full { sessions_max: 2 })
    );
}

#[tokio::test]
async fn a_redis_session_is_json_under_the_prefix_with_its_ttl() {
    let redis = TestRedis::connect().await;
    let id = redis.sessions().create(admin(42), milliseconds(LONG_TTL_MS)).await.unwrap();
    let mut raw = redis.connection.clone();
    let json: String =
        redis::cmd("GET").arg(redis.session_key(&id)).query_async(&mut raw).await.expect("GET");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({
            "subject": "admin",
            "created_at_ms": 42,
        })
    );
    let remaining_ms: i64 =
        redis::cmd("PTTL").arg(redis.session_key(&id)).query_async(&mut raw).await.expect("PTTL");
    assert!((1..=LONG_TTL_MS as i64).contains(&remaining_ms), "{remaining_ms}");
}

#[tokio::test]
async fn a_corrupt_redis_session_is_reported_not_trusted() {
    let redis = TestRedis::connect().await;
    let sessions = redis.sessions();
    let mut raw = redis.connection.clone();

    let not_json = SessionId::generate();
    let _: () =
        redis::cmd("SET").arg(redis.session_key(&not_json)).arg("{oops").query_async(&mut raw).await.unwrap();
    assert!(matches!(sessions.get(&not_json).await, Err(SessionError::Corrupt(_))));

    let empty_subject = SessionId::generate();
    let _: () = redis::cmd("SET")
        .arg(redis.session_key(&empty_subject))
        .arg(r#"{"subject":"","created_at_ms":1}"#)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(sessions.get(&empty_subject).await, Err(SessionError::Corrupt(_))));
}

#[tokio::test]
async fn sessions_under_another_prefix_are_not_seen() {
    let first = TestRedis::connect().await;
    let second = TestRedis::connect().await;
    let id = first.sessions().create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();
    assert_eq!(second.sessions().get(&id).await, Ok(None));
    assert_eq!(first.sessions().get(&id).await, Ok(Some(admin(1))));
}

#[tokio::test]
async fn a_session_lookup_while_redis_is_frozen_fails_within_the_command_timeout() {
    let redis = PrivateRedis::start().await;
    let timeout = milliseconds(COMMAND_TIMEOUT_MS);
    let connection = redis_connection::connect(&redis.url, timeout).await.expect("the private Redis answers");
    let sessions = RedisSessionStore::new(connection, "kuota_t:").with_command_timeout(timeout);
    let id = sessions.create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();

    redis.freeze();
    let started = Instant::now();
    let answer = sessions.get(&id).await;
    let waited = started.elapsed();
    redis.thaw();

    assert!(matches!(answer, Err(SessionError::Unavailable(_))), "{answer:?}");
    assert!(waited < timeout + milliseconds(TIMEOUT_SLACK_MS), "the lookup waited {waited:?}");
    assert_eq!(sessions.get(&id).await, Ok(Some(admin(1))), "the same connection answers once thawed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_before_redis_connects_once_redis_is_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let connecting =
        tokio::spawn(async move { redis_connection::connect(&url, milliseconds(COMMAND_TIMEOUT_MS)).await });
    // Redis comes up a moment after the node: the first attempts are refused.
    tokio::time::sleep(milliseconds(300)).await;
    let redis = PrivateRedis::start_on(port).await;

    let connection = connecting.await.unwrap().expect("connected once Redis was up");
    let sessions = RedisSessionStore::new(connection, "kuota_t:");
    let id = sessions.create(admin(1), milliseconds(LONG_TTL_MS)).await.unwrap();
    assert_eq!(sessions.get(&id).await, Ok(Some(admin(1))));
    drop(redis);
}
