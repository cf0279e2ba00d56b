//! `SqlStore`: Kuota's tables on MySQL/MariaDB or on an embedded SQLite file, chosen by the
//! URL's scheme. It creates and reads events, pages through registrations and the audit trail,
//! commits the write-behind's batches (`write`) and rebuilds events at startup (`recovery`).
//!
//! # Layout
//! - `backend`: the two databases behind one interface (statements as SQL text plus values).
//! - `creations`: the creations the delivery worker derives from registration rows, past a cursor.
//! - `maintenance`: outbox claims and settlements for the delivery worker; purges past retention.
//! - `overview`: the newest events and the outbox's summary, for the operators' page.
//! - `text_protocol`: MySQL statements inside transactions, values inlined, batched per round trip.
//! - `queue`: a queued event's settings and tickets (statements and recovery reads).
//! - `plan`: what a batch of effects means for the stored rows (pure).
//! - `write`: one batch, one transaction, with the epoch check.
//! - `recovery`: `EventLoader`, streaming an event's rows into a `QuotaBuilder`.
//! - `rows`, `error`: the types handed out.
//! - `webhooks`: webhook endpoints, their messages' claims and settlements, sold-out announcements.

mod backend;
mod creations;
mod error;
mod maintenance;
mod overview;
mod plan;
mod queue;
mod recovery;
mod rows;
mod text_protocol;
mod webhooks;
mod write;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kuota_engine::{
    CategoryCode, CategoryConfig, Clock, EventConfig, EventId, QuotaLimits, RegistrationId, Seq, SystemClock,
    Timestamp,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use self::backend::{Pool, RowAccess, Runner, Statement};
pub use self::creations::{
    CREATED_KIND, CREATIONS_HELD_MAX, ClaimedCursor, CommittedCreation, CommittedCreations, CreationBacklog,
    CreationClaim, CreationFeed, CursorSettlement, CursorState, HeldCreations, creation_feed,
};
pub use self::error::{FailureKind, PersistError};
pub use self::maintenance::{OutboxClaim, Purged, Settlement};
pub use self::overview::{ListedEvent, OutboxSummary};
use self::plan::{millis, signed, unsigned};
pub use self::rows::{
    AuditRow, EventProgress, OutboxRow, OutboxText, PayloadJson, RegistrationRow, RowStatus, StatusCount,
    UnknownStatus,
};
pub use self::webhooks::{
    ClaimedMessage, DISABLED_FAILING, DISABLED_GONE, MessageClaim, MessageCounts, MessageSettlement,
    NewMessage, SOLD_OUT_KIND, SettledAttempt, WebhookBacklog, WebhookEndpoint,
};
pub use self::write::{BatchItem, BatchReport};

/// Batches one writer may have committing at once (of different events, or up to three of one
/// event, whose commits follow one another on its row), each on a connection of its own that it
/// keeps between batches (`backend::HELD_CONNECTIONS_MAX`). A pool beyond it takes connections from the readers.
/// `write_behind::CONNECTIONS_MAX` is this bound; it lives here, below the writer, so that the
/// store needs nothing from the writer above it.
pub const WRITER_CONNECTIONS_MAX: u32 = 4;

/// Connections to MySQL one store keeps: the writer's commits (`WRITER_CONNECTIONS_MAX`),
/// recovery, and the API's reads.
const MYSQL_CONNECTIONS_MAX: u32 = 8;

// The writer's connections leave room in the pool for recovery and the reads, which must go on
// while every commit is in flight (a stalled store is detected by reads).
const _: () = assert!(WRITER_CONNECTIONS_MAX < MYSQL_CONNECTIONS_MAX);

/// Connections to a SQLite file. SQLite has one writer at a time; more connections only let
/// reads run beside it (WAL).
const SQLITE_CONNECTIONS_MAX: u32 = 4;

/// How long a caller waits for a free connection, in milliseconds, before the store counts
/// as unavailable. Each call has its own deadline besides (`CALL_TIMEOUT_MS_DEFAULT`, or
/// `with_call_timeout`), which also bounds the wait for a connection.
const POOL_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

/// How long one call to the store (a statement, a commit, a free connection) may take by
/// default, in milliseconds, before it fails as timed out (a transient failure). A stream of
/// rows fails when no row comes for that long.
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 1_000;

/// How long SQLite waits for another connection's write lock, in milliseconds.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Rows one page of registrations or audit entries may have.
pub const PAGE_SIZE_MAX: u32 = 500;

const REGISTRATION_COLUMNS: &str = "number, category_code, email, full_name, phone, attributes_json, status, \
     hold_expires_at, waitlist_position, access_token_hash, created_at, updated_at";

/// See the module documentation.
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
    /// Recovery reads "now" here to leave out idempotency entries past their retention.
    clock: Arc<dyn Clock>,
    /// Whether the store answers, as the writer finds it; shared by every clone.
    health: Arc<StoreHealth>,
}

/// Whether the store answers, as the write-behind's commits and probes find it: it stops
/// answering when a commit attempt times out, a batch fails because of the store, or the
/// breaker opens, and answers again with the next commit or probe that works (see
/// `write_behind::WriteBehindHandle::stalled`). A load waits for it instead of trying a store
/// that does not answer (`SqlStore::load`, the `EventLoader`).
///
/// *Why a load waits:* each attempt made during an outage is abandoned at its deadline with its
/// statements already sent, and a thawed MySQL runs them one after the other, each taking the
/// event row's lock until it finds its connection gone, ahead of the next load: after a 20 s
/// freeze the reload under way when the store came back waited out its whole deadline
/// (docs/operations.md, "When things fail").
#[derive(Debug)]
pub struct StoreHealth {
    answering: tokio::sync::watch::Sender<bool>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth { answering: tokio::sync::watch::Sender::new(true) }
    }
}

impl StoreHealth {
    pub fn answering(&self) -> bool {
        *self.answering.borrow()
    }

    /// Notes whether the store answers; wakes the waiting loads when it does again.
    pub fn set_answering(&self, answering: bool) {
        self.answering.send_if_modified(|now| std::mem::replace(now, answering) != answering);
    }

    /// Resolves once the store answers (at once when it does).
    pub async fn until_answering(&self) {
        let mut answering = self.answering.subscribe();
        // The sender lives as long as `self`: waiting cannot end in an error.
        let _ = answering.wait_for(|answering| *answering).await;
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SqlStore").field("dialect", &self.pool.dialect()).finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to `mysql://…` (or `mariadb://…`) or `sqlite://path` (the file and its folder
    /// are created when missing) and applies the schema migrations.
    // The URL stays out of the span: it may hold a password.
    #[tracing::instrument(skip_all)]
    pub async fn connect(url: &str) -> Result<SqlStore, PersistError> {
        let pool = if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Pool::mysql(connect_mysql(url).await?, Duration::from_millis(CALL_TIMEOUT_MS_DEFAULT))
        } else if url.starts_with("sqlite:") {
            Pool::sqlite(connect_sqlite(url).await?, Duration::from_millis(CALL_TIMEOUT_MS_DEFAULT))
        } else {
            // Only the scheme: the rest of a URL may hold a password.
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(PersistError::UnsupportedUrl(format!("{scheme}:")));
        };
        Ok(SqlStore { pool, clock: Arc::new(SystemClock), health: Arc::default() })
    }

    /// Whether the store answers, as the writer finds it (see `StoreHealth`).
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// The same store, reading "now" from `clock` (tests and the simulator run in their own time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqlStore {
        self.clock = clock;
        self
    }

    /// The same store, each of whose calls fails as timed out after `timeout` (see
    /// `CALL_TIMEOUT_MS_DEFAULT`).
    pub fn with_call_timeout(mut self, timeout: Duration) -> SqlStore {
        self.pool = self.pool.with_call_timeout(timeout);
        self
    }

    /// How long one call may take.
    pub fn call_timeout(&self) -> Duration {
        self.pool.call_timeout()
    }

    /// True for SQLite, where only one transaction writes at a time.
    pub fn is_embedded(&self) -> bool {
        self.pool.dialect() == backend::Dialect::Sqlite
    }

    /// Closes every connection; afterwards every call fails.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Succeeds when the database answers and has Kuota's schema.
    #[tracing::instrument(skip(self))]
    pub async fn ping(&self) -> Result<(), PersistError> {
        let statement = Statement::new("SELECT id FROM events LIMIT 1");
        self.pool.for_each_row(&statement, |_| Ok::<(), PersistError>(())).await
    }

    /// Stores a new event with its categories; `false` when an event with that id exists.
    #[tracing::instrument(skip(self, config, now), fields(event_id = %config.id))]
    pub async fn create_event(&self, config: &EventConfig, now: Timestamp) -> Result<bool, PersistError> {
        config.validate()?;
        let mut transaction = self.pool.begin_write().await?;
        let limits = &config.limits;
        let seed_hex = queue::seed_hex(config);
        let insert_event = Statement::new(format!(
            "INSERT INTO events (id, name, opens_at, closes_at, hold_ttl_seconds, waitlist_length_max, \
             idempotency_entries_max, idempotency_retention_seconds, epoch, last_seq, created_at, {}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?)",
            queue::QUEUE_COLUMNS
        ))
        .bind(config.id.as_str())
        .bind(config.name.as_str())
        .bind(config.opens_at.map(millis))
        .bind(config.closes_at.map(millis))
        .bind(i64::from(config.hold_ttl_seconds))
        .bind(i64::from(limits.waitlist_length_max))
        .bind(i64::from(limits.idempotency_entries_max))
        .bind(i64::from(limits.idempotency_retention_seconds))
        .bind(millis(now));
        let insert_event = queue::bind_queue_settings(insert_event, config, &seed_hex);
        match transaction.execute(&insert_event).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        let mut insert_categories =
            Statement::new("INSERT INTO categories (event_id, position, code, name, capacity) VALUES ");
        for (position, category) in config.categories.iter().enumerate() {
            let separator = if position == 0 { "" } else { ", " };
            insert_categories.sql.push_str(separator);
            insert_categories.sql.push_str("(?, ?, ?, ?, ?)");
            insert_categories.push_value(config.id.as_str());
            // `validate` bounds the categories by CATEGORIES_MAX (64).
            insert_categories.push_value(position as i64);
            insert_categories.push_value(category.code.as_str());
            insert_categories.push_value(category.name.as_str());
            insert_categories.push_value(i64::from(category.capacity));
        }
        transaction.execute(&insert_categories).await?;
        // Where the delivery worker's walk of the event's creations starts (see `creations`).
        let insert_cursor = Statement::new(
            "INSERT INTO outbox_cursors (event_id, created_through, available_at) VALUES (?, 0, 0)",
        )
        .bind(config.id.as_str());
        transaction.execute(&insert_cursor).await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// The event as stored, with the current capacities.
    #[tracing::instrument(skip(self), fields(event_id = %id))]
    pub async fn event_config(&self, id: &EventId) -> Result<Option<EventConfig>, PersistError> {
        let stored = read_event(&mut Runner::Pool(&self.pool), id).await?;
        Ok(stored.map(|stored| stored.config))
    }

    /// The event's epoch (how often it was taken over) and the seq of its latest committed effect.
    #[tracing::instrument(skip(self), fields(event_id = %id))]
    pub async fn event_progress(&self, id: &EventId) -> Result<Option<EventProgress>, PersistError> {
        let statement = Statement::new("SELECT epoch, last_seq FROM events WHERE id = ?").bind(id.as_str());
        let mut progress = None;
        self.pool
            .for_each_row(&statement, |row| {
                let epoch = unsigned(row.int(0)?, "events.epoch")?;
                let last_seq = Seq(unsigned(row.int(1)?, "events.last_seq")?);
                progress = Some(EventProgress { epoch, last_seq });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(progress)
    }

    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn registration(
        &self,
        event: &EventId,
        id: RegistrationId,
    ) -> Result<Option<RegistrationRow>, PersistError> {
        let sql =
            format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE event_id = ? AND number = ?");
        let statement = Statement::new(sql).bind(event.as_str()).bind(signed(id.0));
        let mut found = None;
        self.pool
            .for_each_row(&statement, |row| {
                found = Some(registration_row(event, row)?);
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(found)
    }

    /// The stored registrations among `numbers` of `event`, in number order (the outbox's
    /// fan-out reads a round's registrations at once). At most `PAGE_SIZE_MAX` numbers are
    /// read per statement.
    #[tracing::instrument(skip(self, numbers), fields(event_id = %event, numbers = numbers.len()))]
    pub async fn registrations_by_number(
        &self,
        event: &EventId,
        numbers: &[RegistrationId],
    ) -> Result<Vec<RegistrationRow>, PersistError> {
        let mut found = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(PAGE_SIZE_MAX as usize) {
            let mut sql = format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE event_id = ? AND number IN ("
            );
            for index in 0..chunk.len() {
                sql.push_str(if index == 0 { "?" } else { ", ?" });
            }
            sql.push_str(") ORDER BY number");
            let mut statement = Statement::new(sql).bind(event.as_str());
            for number in chunk {
                statement.push_value(signed(number.0));
            }
            self.pool
                .for_each_row(&statement, |row| {
                    found.push(registration_row(event, row)?);
                    Ok::<(), PersistError>(())
                })
                .await?;
        }
        Ok(found)
    }

    /// Registrations of an event by number, after `after`, optionally of one status only
    /// (keyset pagination: pass the last id of a page to get the next). `limit` is capped at
    /// `PAGE_SIZE_MAX`.
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn registrations_page(
        &self,
        event: &EventId,
        status: Option<RowStatus>,
        limit: u32,
        after: Option<RegistrationId>,
    ) -> Result<Vec<RegistrationRow>, PersistError> {
        let status_filter = if status.is_some() { " AND status = ?" } else { "" };
        let sql = format!(
            "SELECT {REGISTRATION_COLUMNS} FROM registrations \
             WHERE event_id = ?{status_filter} AND number > ? ORDER BY number LIMIT ?"
        );
        let mut statement = Statement::new(sql).bind(event.as_str());
        if let Some(status) = status {
            statement.push_value(status.as_str());
        }
        statement.push_value(signed(after.map_or(0, |id| id.0)));
        statement.push_value(i64::from(limit.min(PAGE_SIZE_MAX)));
        let mut rows = Vec::new();
        self.pool
            .for_each_row(&statement, |row| {
                rows.push(registration_row(event, row)?);
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(rows)
    }

    /// How many registrations each category has in each status.
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn status_counts(&self, event: &EventId) -> Result<Vec<StatusCount>, PersistError> {
        let statement = Statement::new(
            "SELECT category_code, status, COUNT(*) FROM registrations WHERE event_id = ? \
             GROUP BY category_code, status ORDER BY category_code, status",
        )
        .bind(event.as_str());
        let mut counts = Vec::new();
        self.pool
            .for_each_row(&statement, |row| {
                counts.push(StatusCount {
                    category: parse_code(row.text(0)?)?,
                    status: parse_status(row.text(1)?)?,
                    count: unsigned(row.int(2)?, "count")?,
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(counts)
    }

    /// The audit trail of an event, oldest first, after the audit id `after` (an entry's id is
    /// the seq of its effect).
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn audit_page(
        &self,
        event: &EventId,
        limit: u32,
        after: Option<u64>,
    ) -> Result<Vec<AuditRow>, PersistError> {
        let limit = i64::from(limit.min(PAGE_SIZE_MAX));
        let after = signed(after.unwrap_or(0));
        // Creations are kept in the registrations' rows (`registrations_by_created_seq`), the
        // other effects in audit_log; rows stored before migration 0007 have no `created_seq`,
        // and their creations are in audit_log. A page is the first `limit` of both by seq.
        let logged = Statement::new(
            "SELECT seq, registration_number, kind, detail_json, at FROM audit_log \
             WHERE event_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(event.as_str())
        .bind(after)
        .bind(limit);
        let mut rows = Vec::new();
        self.pool
            .for_each_row(&logged, |row| {
                let seq = unsigned(row.int(0)?, "audit_log.seq")?;
                let registration =
                    row.optional_int(1)?.map(|number| unsigned(number, "audit_log.registration_number"));
                rows.push(AuditRow {
                    id: seq,
                    registration: registration.transpose()?.map(RegistrationId),
                    seq: Seq(seq),
                    kind: row.text(2)?.to_owned(),
                    detail_json: row.text(3)?.to_owned(),
                    at: timestamp(row.int(4)?, "audit_log.at")?,
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        // A creation's detail is the row's `created_detail_json` in rows stored before migration
        // 0011, and made from the row's columns in rows stored since (`plan::Creation`).
        let created = Statement::new(
            "SELECT created_seq, number, created_detail_json, created_at, category_code, idempotency_key, \
             waitlist_position, created_hold_expires_at FROM registrations \
             WHERE event_id = ? AND created_seq > ? ORDER BY created_seq LIMIT ?",
        )
        .bind(event.as_str())
        .bind(after)
        .bind(limit);
        self.pool
            .for_each_row(&created, |row| {
                let seq = unsigned(row.int(0)?, "registrations.created_seq")?;
                let detail_json = match row.optional_text(2)? {
                    Some(detail_json) => detail_json.to_owned(),
                    None => {
                        let creation =
                            plan::Creation::from_columns(row.optional_int(6)?, row.optional_int(7)?)?;
                        let key = row
                            .optional_bytes(5)?
                            .map(std::str::from_utf8)
                            .transpose()
                            .map_err(|error| invalid("registrations.idempotency_key", error))?;
                        creation.detail_json(row.text(4)?, key)
                    }
                };
                rows.push(AuditRow {
                    id: seq,
                    registration: Some(RegistrationId(unsigned(row.int(1)?, "registrations.number")?)),
                    seq: Seq(seq),
                    kind: "created".to_owned(),
                    detail_json,
                    at: timestamp(row.int(3)?, "registrations.created_at")?,
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        self.ticket_audit(event, limit, after, &mut rows).await?;
        rows.sort_unstable_by_key(|row| row.id);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// Adds to `rows` the audit entries kept in queue tickets' rows (migration 0009) with a seq
    /// above `after`: the `limit` first by seq, at least. A ticket holds two: its creation
    /// (`queue_joined`, `created_seq`) and the decision of the keyed join that made it
    /// (`decision_recorded`, `decision_seq`), both of one command. Tickets are made one command
    /// after the other, so both seqs grow with `created_seq`, and the only ticket with one
    /// entry at or below `after` and one above is the last created at or below it.
    async fn ticket_audit(
        &self,
        event: &EventId,
        limit: i64,
        after: i64,
        rows: &mut Vec<AuditRow>,
    ) -> Result<(), PersistError> {
        const COLUMNS: &str = "number, created_seq, decision_seq, idempotency_key, decision_json, created_at";
        let queries = [
            Statement::new(format!(
                "SELECT {COLUMNS} FROM queue_tickets WHERE event_id = ? AND created_seq <= ? \
                 ORDER BY created_seq DESC LIMIT 1"
            ))
            .bind(event.as_str())
            .bind(after),
            Statement::new(format!(
                "SELECT {COLUMNS} FROM queue_tickets WHERE event_id = ? AND created_seq > ? \
                 ORDER BY created_seq LIMIT ?"
            ))
            .bind(event.as_str())
            .bind(after)
            .bind(limit),
        ];
        for query in queries {
            self.pool
                .for_each_row(&query, |row| {
                    let number = unsigned(row.int(0)?, "queue_tickets.number")?;
                    let at = timestamp(row.int(5)?, "queue_tickets.created_at")?;
                    let entry =
                        |seq: i64, kind: &str, detail_json: String| -> Result<AuditRow, PersistError> {
                            let seq = unsigned(seq, "queue_tickets audit seq")?;
                            Ok(AuditRow {
                                id: seq,
                                registration: None,
                                seq: Seq(seq),
                                kind: kind.to_owned(),
                                detail_json,
                                at,
                            })
                        };
                    let created_seq = row.int(1)?;
                    if created_seq > after {
                        rows.push(entry(created_seq, "queue_joined", plan::joined_detail_json(number))?);
                    }
                    if let Some(decision_seq) = row.optional_int(2)?
                        && decision_seq > after
                    {
                        let key = std::str::from_utf8(row.bytes(3)?)
                            .map_err(|error| invalid("queue_tickets.idempotency_key", error))?;
                        let detail = plan::decision_detail_json(key, row.text(4)?);
                        rows.push(entry(decision_seq, "decision_recorded", detail)?);
                    }
                    Ok::<(), PersistError>(())
                })
                .await?;
        }
        Ok(())
    }

    /// Outbox entries of every event, oldest first, after the outbox id `after`.
    #[tracing::instrument(skip(self))]
    pub async fn outbox_page(&self, limit: u32, after: Option<u64>) -> Result<Vec<OutboxRow>, PersistError> {
        let statement = Statement::new(
            "SELECT id, event_id, registration_number, kind, payload_json, status, attempts, available_at, \
             created_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(signed(after.unwrap_or(0)))
        .bind(i64::from(limit.min(PAGE_SIZE_MAX)));
        let mut rows = Vec::new();
        self.pool
            .for_each_row(&statement, |row| {
                rows.push(maintenance::outbox_row(row)?);
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(rows)
    }

    /// The value stored under `key`, storing `value` first if there is none. Nodes that race
    /// to insert all get the winner's value (e.g. a token secret shared by a cluster).
    #[tracing::instrument(skip(self, value))]
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, PersistError> {
        let insert = Statement::new("INSERT INTO settings (name, value) VALUES (?, ?)").bind(key).bind(value);
        match self.pool.execute(&insert).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {}
            Err(error) => return Err(error.into()),
        }
        let select = Statement::new("SELECT value FROM settings WHERE name = ?").bind(key);
        let mut stored = None;
        self.pool
            .for_each_row(&select, |row| {
                stored = Some(row.text(0)?.to_owned());
                Ok::<(), PersistError>(())
            })
            .await?;
        stored.ok_or_else(|| PersistError::Mismatch(format!("setting {key:?} vanished after it was stored")))
    }
}

async fn connect_mysql(url: &str) -> Result<sqlx::MySqlPool, PersistError> {
    let url = url.strip_prefix("mariadb:").map_or_else(|| url.to_owned(), |rest| format!("mysql:{rest}"));
    // utf8mb4 whatever the URL names (`charset=`): the writer's quoted literals are read in the
    // connection's character set (`text_protocol`), and results come back in it.
    let options = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
    let pool = MySqlPoolOptions::new()
        .max_connections(MYSQL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
        .after_connect(|connection, _| {
            Box::pin(async move {
                // The idle bound is MariaDB's (10.3 and later): other servers skip the comment.
                let bound = format!(
                    "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECONDS} \
                     /*M!100300 , SESSION idle_transaction_timeout = {IDLE_TRANSACTION_TIMEOUT_SECONDS} */"
                );
                sqlx::Executor::execute(connection, sqlx::raw_sql(sqlx::AssertSqlSafe(bound))).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    migrate_mysql(&pool).await?;
    Ok(pool)
}

/// How long any statement of Kuota's waits for a row lock, in seconds (InnoDB counts whole
/// seconds; its default is 50). A lock held that long belongs to a transaction that will not end
/// soon (a node frozen in the middle of a commit): failing transiently, and trying again, beats
/// waiting for it. A take-over kills such holders (`recovery::take_epoch`).
pub(crate) const LOCK_WAIT_TIMEOUT_SECONDS: u64 = 2;

/// How long the server lets a transaction of Kuota's wait for its client's next statement, in
/// seconds, before it closes the connection and rolls the transaction back. Kuota sends a
/// transaction's statements one right after another (no client work between them takes
/// longer than a round trip), so a transaction idle that long belongs to a client that stopped
/// (a node frozen between two statements). Without the bound its locks would stay until it
/// thawed: the take-over kills only what blocks an event's row (`recovery::take_epoch`), and
/// the webhooks' transactions (fan-out, settlement, sold-out announcements) have no take-over.
pub(crate) const IDLE_TRANSACTION_TIMEOUT_SECONDS: u64 = 2;

/// How long a node waits for another node's schema migrations to finish, in seconds.
const MIGRATION_LOCK_TIMEOUT_SECONDS: u64 = 120;

/// Applies the schema migrations under a named lock of the server's, so that nodes started at
/// the same moment on one database migrate one after the other: the first applies them, the
/// others then find them applied. sqlx's migrator takes a lock of its own, but with a timeout
/// of -1, which MariaDB answers at once with NULL, and sqlx goes on without the lock (two nodes
/// then both insert migration 1: `1062 Duplicate entry '1' for key 'PRIMARY'`).
///
/// The lock belongs to a connection, so the migrations run on the connection that holds it,
/// and it is released on that connection (or by the server, should the connection die).
async fn migrate_mysql(pool: &sqlx::MySqlPool) -> Result<(), PersistError> {
    let mut connection = pool.acquire().await?;
    // Lock names are server-wide and at most 64 characters: the database's name, or its hash
    // when it is too long for that.
    let name: String = sqlx::query_scalar(
        "SELECT IF(CHAR_LENGTH(DATABASE()) <= 47, CONCAT(DATABASE(), '.kuota_migrations'), \
         CONCAT(SHA1(DATABASE()), '.kuota_migrations'))",
    )
    .fetch_one(&mut *connection)
    .await?;
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(&name)
        .bind(MIGRATION_LOCK_TIMEOUT_SECONDS)
        .fetch_one(&mut *connection)
        .await?;
    if locked != Some(1) {
        return Err(PersistError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("waited {MIGRATION_LOCK_TIMEOUT_SECONDS} s for the schema migrations lock {name:?}"),
        ))));
    }
    let mut migrator = sqlx::migrate!("./migrations/mysql");
    // The lock above is held; sqlx's own would not work on MariaDB anyway.
    migrator.set_locking(false);
    // `run_direct` takes the connection as it is; `run(&mut *connection)` compiles too, but
    // its future is not `Send` ("implementation of `Acquire` is not general enough", which
    // sqlx gives `run_direct` for), and `connect` must be spawnable.
    let migrated = migrator.run_direct(None, &mut *connection, false).await;
    let released = sqlx::query("SELECT RELEASE_LOCK(?)").bind(&name).execute(&mut *connection).await;
    migrated?;
    if let Err(error) = released {
        // Not released: the connection is in doubt, so it is closed rather than pooled, and
        // the server releases the lock with it.
        let _ = connection.detach();
        return Err(error.into());
    }
    Ok(())
}

async fn connect_sqlite(url: &str) -> Result<sqlx::SqlitePool, PersistError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))
        // A commit is an acknowledgement: FULL syncs the WAL on every commit, so that an
        // acknowledged registration survives a power cut, not just a process crash.
        .synchronous(SqliteSynchronous::Full);
    let mut pool_options = SqlitePoolOptions::new()
        .max_connections(SQLITE_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS));
    if in_memory {
        // An in-memory database lives as long as one connection to it: keep exactly one, forever.
        pool_options =
            pool_options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else {
        options = options.journal_mode(SqliteJournalMode::Wal);
        create_parent_folder(options.get_filename())?;
    }
    let pool = pool_options.connect_with(options).await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

fn create_parent_folder(file: &Path) -> Result<(), PersistError> {
    match file.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => std::fs::create_dir_all(folder)
            .map_err(|source| PersistError::CreateFolder { path: folder.to_path_buf(), source }),
        _ => Ok(()),
    }
}

/// An event row with its categories, as read by `event_config` and by recovery.
pub(crate) struct StoredEvent {
    pub config: EventConfig,
    pub epoch: u64,
    pub last_seq: Seq,
}

pub(crate) async fn read_event(
    runner: &mut Runner<'_>,
    id: &EventId,
) -> Result<Option<StoredEvent>, PersistError> {
    let event = Statement::new(format!(
        "SELECT name, opens_at, closes_at, hold_ttl_seconds, waitlist_length_max, idempotency_entries_max, \
         idempotency_retention_seconds, epoch, last_seq, {} FROM events WHERE id = ?",
        queue::QUEUE_COLUMNS
    ))
    .bind(id.as_str());
    let mut stored = None;
    runner
        .for_each_row(&event, |row| {
            let config = EventConfig {
                id: id.clone(),
                name: row.text(0)?.to_owned(),
                opens_at: row.optional_int(1)?.map(|at| timestamp(at, "events.opens_at")).transpose()?,
                closes_at: row.optional_int(2)?.map(|at| timestamp(at, "events.closes_at")).transpose()?,
                hold_ttl_seconds: small(row.int(3)?, "events.hold_ttl_seconds")?,
                categories: Vec::new(),
                limits: QuotaLimits {
                    waitlist_length_max: small(row.int(4)?, "events.waitlist_length_max")?,
                    idempotency_entries_max: small(row.int(5)?, "events.idempotency_entries_max")?,
                    idempotency_retention_seconds: small(
                        row.int(6)?,
                        "events.idempotency_retention_seconds",
                    )?,
                },
                queue: queue::read_queue_settings(row, 9)?,
            };
            let epoch = unsigned(row.int(7)?, "events.epoch")?;
            let last_seq = Seq(unsigned(row.int(8)?, "events.last_seq")?);
            stored = Some(StoredEvent { config, epoch, last_seq });
            Ok::<(), PersistError>(())
        })
        .await?;
    let Some(mut stored) = stored else { return Ok(None) };
    let categories =
        Statement::new("SELECT code, name, capacity FROM categories WHERE event_id = ? ORDER BY position")
            .bind(id.as_str());
    runner
        .for_each_row(&categories, |row| {
            stored.config.categories.push(CategoryConfig {
                code: parse_code(row.text(0)?)?,
                name: row.text(1)?.to_owned(),
                capacity: small(row.int(2)?, "categories.capacity")?,
            });
            Ok::<(), PersistError>(())
        })
        .await?;
    Ok(Some(stored))
}

fn registration_row(event: &EventId, row: &dyn RowAccess) -> Result<RegistrationRow, PersistError> {
    let status = parse_status(row.text(6)?)?;
    // The column keeps the place once the registration left the waitlist (it is what the
    // registration was created as, `plan::Creation`); a row hands it out while it is there.
    let waitlist_position = row
        .optional_int(8)?
        .filter(|_| status == RowStatus::Waitlisted)
        .map(|position| small(position, "registrations.waitlist_position"));
    Ok(RegistrationRow {
        id: RegistrationId(unsigned(row.int(0)?, "registrations.number")?),
        event: event.clone(),
        category: parse_code(row.text(1)?)?,
        email: row.text(2)?.to_owned(),
        full_name: row.text(3)?.to_owned(),
        phone: row.optional_text(4)?.map(str::to_owned),
        attributes_json: row.optional_text(5)?.map(str::to_owned),
        status,
        hold_expires_at: row
            .optional_int(7)?
            .map(|at| timestamp(at, "registrations.hold_expires_at"))
            .transpose()?,
        waitlist_position: waitlist_position.transpose()?,
        access_token_hash: row.text(9)?.to_owned(),
        created_at: timestamp(row.int(10)?, "registrations.created_at")?,
        updated_at: timestamp(row.int(11)?, "registrations.updated_at")?,
    })
}

fn invalid(column: &str, error: impl fmt::Display) -> PersistError {
    PersistError::InvalidRow(format!("{column}: {error}"))
}

fn timestamp(stored: i64, column: &str) -> Result<Timestamp, PersistError> {
    unsigned(stored, column).map(Timestamp::from_millis)
}

fn small(stored: i64, column: &str) -> Result<u32, PersistError> {
    u32::try_from(stored).map_err(|error| invalid(column, error))
}

fn parse_code(text: &str) -> Result<CategoryCode, PersistError> {
    CategoryCode::parse(text).map_err(|error| invalid("category code", error))
}

fn parse_status(text: &str) -> Result<RowStatus, PersistError> {
    RowStatus::parse(text).ok_or_else(|| invalid("registrations.status", UnknownStatus(text.to_owned())))
}
