//! `durable-ceiling`: the ceiling plus durability. Each registration parsed and checked as the
//! ceiling does becomes one plain row (a primary key and no other index), committed in groups
//! the way Kuota's write-behind commits its batches, and is answered 201 only once its group
//! committed. It decides nothing (no capacity, no duplicates, no idempotency): what it reaches is
//! the most any design that acknowledges after a commit to this MariaDB can reach on this
//! machine, and Kuota's admissions are measured against it.
//!
//! Grouping: `committers` tasks (Kuota's writer connections by default) share one bounded
//! queue. A free committer takes every registration waiting, up to `BATCH_ROWS_MAX`, and commits
//! them as one multi-row `INSERT` (one transaction); while it commits, the next free one takes
//! what arrived meanwhile. A full queue is a 503 at once, as in Kuota; a failed group is a 503.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sqlx::MySqlPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Shared;
use crate::common::{Decision, Design, Registrant, create_event, now_ms, register};

/// Registrations waiting for a committer, at most (Kuota's default submission queue is of the
/// same order).
pub const QUEUE_CAPACITY: usize = 16_384;
/// Rows in one group's `INSERT`, at most (Kuota's default `batch_size_max`).
pub const BATCH_ROWS_MAX: usize = 1_000;
/// How long a request waits for its group's commit before it is answered 503, in ms (Kuota's
/// default request deadline): a store that does not answer turns into refusals, not hung
/// requests. Its row may still commit: the durable ceiling promises nothing about retries.
pub const ANSWER_TIMEOUT_MS: u64 = 2_000;

/// Its table: one plain row per registration.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS plain_registrations (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        event_id VARCHAR(64) NOT NULL,
        category VARCHAR(32) NOT NULL,
        email VARCHAR(254) NOT NULL,
        full_name VARCHAR(200) NOT NULL,
        created_at BIGINT NOT NULL
    ) ENGINE = InnoDB";

/// A registration waiting for its group's commit; the answer is its row id, or `None` when the
/// group failed.
#[derive(Debug)]
struct Pending {
    event: String,
    category: String,
    email: String,
    full_name: String,
    answer: oneshot::Sender<Option<u64>>,
}

/// The committers' queue, kept in the server's shared state.
#[derive(Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts `committers` tasks over `pool`.
    pub fn start(pool: MySqlPool, committers: usize, shared_stats: Arc<crate::Stats>) -> GroupCommit {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers.max(1) {
            tokio::spawn(commit_groups(pool.clone(), receiver.clone(), shared_stats.clone()));
        }
        GroupCommit { queue }
    }
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/events", web::post().to(create_event))
        // It never sells out; the harness's sold-out phase reads the event instead, as of the ceiling.
        .route("/v1/events/{event_id}", web::get().to(crate::ceiling::read_event))
        .route("/v1/events/{event_id}/registrations", web::post().to(register::<DurableCeiling>));
}

/// The durable ceiling as a design: it decides nothing, it only waits for the commit.
pub struct DurableCeiling;

impl Design for DurableCeiling {
    fn decide(
        state: &Shared,
        event: &str,
        registrant: &Registrant,
    ) -> impl Future<Output = anyhow::Result<Decision>> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            event: event.to_string(),
            category: registrant.category.clone(),
            email: registrant.email.clone(),
            full_name: registrant.full_name.clone(),
            answer,
        };
        // A full queue is refused at once, as Kuota refuses a full mailbox.
        let queued = state
            .group_commit
            .as_ref()
            .is_some_and(|group_commit| group_commit.queue.try_send(pending).is_ok());
        async move {
            if !queued {
                return Ok(Decision::Busy);
            }
            let answer = tokio::time::timeout(Duration::from_millis(ANSWER_TIMEOUT_MS), answered).await;
            Ok(answer.ok().and_then(Result::ok).flatten().map_or(Decision::Busy, Decision::Confirmed))
        }
    }
}

/// One committer: takes what waits, commits it, answers, again.
async fn commit_groups(
    pool: MySqlPool,
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    stats: Arc<crate::Stats>,
) {
    loop {
        let group = {
            let mut receiver = queue.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut group = vec![first];
            while group.len() < BATCH_ROWS_MAX {
                match receiver.try_recv() {
                    Ok(pending) => group.push(pending),
                    Err(_) => break,
                }
            }
            group
        };
        let inserted = insert_group(&pool, &group).await;
        stats.count_transaction();
        if let Err(error) = &inserted {
            eprintln!("a group of {} failed: {error}", group.len());
        }
        for (offset, pending) in group.into_iter().enumerate() {
            let _gone = pending.answer.send(inserted.as_ref().ok().map(|first| first + offset as u64));
        }
    }
}

/// One multi-row `INSERT` (one transaction, autocommitted); returns the first row's id. The ids of
/// one statement are consecutive (InnoDB's default auto-increment lock mode for inserts whose row
/// count is known). Sent over the text protocol with the values inlined, as Kuota's writer sends
/// its batches: a prepared statement per group size would be re-prepared and evicted from sqlx's
/// cache all the time (`persist/src/store/text_protocol.rs` says what that costs).
async fn insert_group(pool: &MySqlPool, group: &[Pending]) -> Result<u64, sqlx::Error> {
    let mut statement = String::from(
        "INSERT INTO plain_registrations (event_id, category, email, full_name, created_at) VALUES ",
    );
    let created_at = now_ms();
    for (index, pending) in group.iter().enumerate() {
        statement.push_str(if index == 0 { "(" } else { ", (" });
        for text in [&pending.event, &pending.category, &pending.email, &pending.full_name] {
            push_text(&mut statement, text);
            statement.push_str(", ");
        }
        statement.push_str(&created_at.to_string());
        statement.push(')');
    }
    Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(pool).await?.last_insert_id())
}

/// `text` as a literal that no value can turn into SQL, the cheapest such way, as Kuota's writer
/// writes it (`persist/src/store/text_protocol.rs`): quoted as it is when it holds no quote, no
/// backslash and no control character (the harness's texts never do), read in the
/// connection's character set (utf8mb4, which sqlx sets); else a hexadecimal literal.
fn push_text(statement: &mut String, text: &str) {
    if text.bytes().all(|byte| byte >= 0x20 && byte != 0x7f && byte != b'\'' && byte != b'\\') {
        statement.push('\'');
        statement.push_str(text);
        statement.push('\'');
        return;
    }
    statement.push_str("_utf8mb4 X'");
    statement.push_str(&hex::encode(text));
    statement.push('\'');
}
