//! What the SQL store's tests share: a fresh database per test (a MariaDB database or a SQLite
//! temp file) that is dropped when the test ends, also when it fails; event configurations;
//! and a local `EventQuota` that produces real effects to write.

use std::path::PathBuf;
use std::sync::Arc;

use kuota_engine::store::{EventLoader, StoreError, Submission, SubmissionSender};
use kuota_engine::{
    CategoryCode, CategoryConfig, Command, Effect, Email, EventConfig, EventId, EventQuota, Fingerprint,
    Idempotency, IdempotencyKey, Outcome, QuotaLimits, Register, RegistrationDetails, Timestamp,
};
use kuota_persist::random;
use kuota_persist::store::SqlStore;
use sqlx::Connection;
use tokio::sync::oneshot;

pub const TEST_MYSQL_URL_DEFAULT: &str = "mysql://root@127.0.0.1:3306";

/// A fixed "now" far from zero, as in the engine's tests.
pub const START: Timestamp = Timestamp::from_seconds(1_800_000_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Mysql,
    Sqlite,
}

/// The MySQL server the tests use, without a database.
pub fn mysql_server_url() -> String {
    let url = std::env::var("KUOTA_TEST_MYSQL_URL").unwrap_or_else(|_| TEST_MYSQL_URL_DEFAULT.to_owned());
    url.trim_end_matches('/').to_owned()
}

/// A database of its own for one test. Dropping it drops the database (or deletes the SQLite
/// folder), also while a failed test unwinds.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    folder: Option<PathBuf>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        let name = format!("kuota_t_{}", random::token_hex(8));
        match backend {
            Backend::Mysql => {
                let mut server = sqlx::MySqlConnection::connect(&mysql_server_url())
                    .await
                    .expect("the test MariaDB (KUOTA_TEST_MYSQL_URL) must be running for these tests");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut server)
                    .await
                    .expect("the test user may create databases");
                let url = format!("{}/{name}", mysql_server_url());
                TestDatabase { url, name, folder: None }
            }
            Backend::Sqlite => {
                // A folder that does not exist yet: the store must create it and the file.
                let folder = std::env::temp_dir().join(&name);
                let url = format!("sqlite://{}", folder.join("kuota.db").display());
                TestDatabase { url, name, folder: Some(folder) }
            }
        }
    }

    pub async fn store(&self) -> SqlStore {
        SqlStore::connect(&self.url).await.expect("the test database accepts the schema")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many rows `table` holds, read past the store.
    pub async fn rows_in(&self, table: &str) -> i64 {
        let count = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        if self.folder.is_some() {
            let mut connection =
                sqlx::SqliteConnection::connect(&self.url).await.expect("the SQLite file opens");
            sqlx::query_scalar(count).fetch_one(&mut connection).await.expect("the table is there")
        } else {
            let mut connection = sqlx::MySqlConnection::connect(&self.url).await.expect("MariaDB answers");
            sqlx::query_scalar(count).fetch_one(&mut connection).await.expect("the table is there")
        }
    }
}

impl TestDatabase {
    /// Runs `sql` past the store (statements separated by `;`).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.folder.is_some() {
            let mut connection =
                sqlx::SqliteConnection::connect(&self.url).await.expect("the SQLite file opens");
            sqlx::raw_sql(sql).execute(&mut connection).await.expect("the statements run");
        } else {
            let mut connection = sqlx::MySqlConnection::connect(&self.url).await.expect("MariaDB answers");
            sqlx::raw_sql(sql).execute(&mut connection).await.expect("the statements run");
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(folder) = &self.folder {
            // Nothing else uses the folder; a failure leaves a temp folder behind, nothing worse.
            let _ = std::fs::remove_dir_all(folder);
            return;
        }
        let name = self.name.clone();
        // A thread with its own runtime: `drop` cannot await, and may run inside the test's
        // runtime, where blocking on another future would panic.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let mut server = sqlx::MySqlConnection::connect(&mysql_server_url()).await?;
                // A test that failed may have left a connection inside a transaction (its runtime
                // stops with the panic); `DROP DATABASE` would wait for it forever.
                let leftovers: Vec<(i64,)> = sqlx::query_as(
                    "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                )
                .bind(&name)
                .fetch_all(&mut server)
                .await?;
                for (id,) in leftovers {
                    // It may have ended on its own meanwhile.
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                        .execute(&mut server)
                        .await;
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                    .execute(&mut server)
                    .await?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Runs each named test body (an `async fn(Backend)`) once on MariaDB and once on SQLite.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod mysql {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::sql_support::Backend::Mysql).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::sql_support::Backend::Sqlite).await
                }
            )*
        }
    };
}
pub(crate) use on_both_databases;

pub fn event_id(text: &str) -> EventId {
    EventId::parse(text).unwrap()
}

pub fn code(text: &str) -> CategoryCode {
    CategoryCode::parse(text).unwrap()
}

pub fn event_config(id: &str, categories: &[(&str, u32)], hold_ttl_seconds: u32) -> EventConfig {
    EventConfig {
        id: event_id(id),
        name: "City Race".into(),
        opens_at: None,
        closes_at: None,
        hold_ttl_seconds,
        categories: categories
            .iter()
            .map(|(code, capacity)| CategoryConfig {
                code: CategoryCode::parse(code).unwrap(),
                name: format!("{code} run"),
                capacity: *capacity,
            })
            .collect(),
        limits: QuotaLimits::default(),
        queue: None,
    }
}

pub fn register(category: &str, email: &str) -> Register {
    Register {
        category: code(category),
        registrant: Email::parse(email).unwrap(),
        idempotency: None,
        waitlist: false,
        details: Arc::new(RegistrationDetails {
            full_name: "Ana Runner".into(),
            phone: Some("+41 79 000 00 00".into()),
            attributes_json: Some(r#"{"shirt":"M"}"#.into()),
            access_token_hash: format!("hash-of-{email}").into(),
        }),
        queue_pass: None,
    }
}

pub fn keyed(mut request: Register, key: &str, fingerprint: u64) -> Register {
    request.idempotency =
        Some(Idempotency { key: IdempotencyKey::parse(key).unwrap(), fingerprint: Fingerprint(fingerprint) });
    request
}

pub fn waitlisting(mut request: Register) -> Register {
    request.waitlist = true;
    request
}

/// Applies a command to a local quota (the engine's real rules) and returns what it decided
/// and the effects to write.
pub fn decide(quota: &mut EventQuota, command: Command, now: Timestamp) -> (Outcome, Vec<Effect>) {
    quota.apply(&command, now)
}

/// Sends one submission through the writer's queue and waits for its answer.
pub async fn submit(
    sender: &SubmissionSender,
    event: &EventId,
    epoch: u64,
    effects: Vec<Effect>,
) -> Result<(), StoreError> {
    let (done, answered) = oneshot::channel();
    let submission = Submission { event: event.clone(), epoch, effects, done };
    sender.send(submission).await.expect("the writer is running");
    answered.await.expect("the writer answers every submission")
}

/// Sends one submission and returns the receiver of its answer without waiting.
pub async fn submit_later(
    sender: &SubmissionSender,
    event: &EventId,
    epoch: u64,
    effects: Vec<Effect>,
) -> oneshot::Receiver<Result<(), StoreError>> {
    let (done, answered) = oneshot::channel();
    let submission = Submission { event: event.clone(), epoch, effects, done };
    sender.send(submission).await.expect("the writer is running");
    answered
}

/// Stores and loads an event; returns the store, its quota and epoch.
pub async fn stored_event(
    database: &TestDatabase,
    id: &str,
    categories: &[(&str, u32)],
    hold_ttl_seconds: u32,
) -> (SqlStore, EventQuota, u64) {
    let store = database.store().await;
    let config = event_config(id, categories, hold_ttl_seconds);
    assert!(store.create_event(&config, START).await.unwrap());
    let loaded = store.load(&config.id).await.unwrap().expect("the event was just stored");
    (store, loaded.quota, loaded.epoch)
}
