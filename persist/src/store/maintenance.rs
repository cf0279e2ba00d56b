//! The store's side of the background work: claiming and settling outbox entries for the
//! delivery worker (`crate::outbox`), and purging rows past their retention.
//!
//! Claims need no long transaction: a worker takes a round of due entries with one `UPDATE`
//! that moves their `available_at` past the deliveries' deadline and stamps its claim token, so
//! two workers on two nodes never deliver one entry at once, and an entry whose worker died
//! becomes due again when the claim runs out. Settling checks the token and the claim's end. Delivery is
//! therefore at least once; the payload carries the event and registration for receivers to
//! deduplicate.

use kuota_engine::{EventId, RegistrationId, Timestamp};

use crate::store::backend::{Dialect, RowAccess, Statement};
use crate::store::plan::{millis, signed, unsigned};
use crate::store::{OutboxRow, PAGE_SIZE_MAX, PersistError, SqlStore, invalid, timestamp};

/// Idempotency keys one purge statement looks at (and deletes at most).
const PURGE_CHUNK_ROWS: u32 = 1_000;

/// Outbox entry states as stored.
pub(super) const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
pub(super) const DEAD: &str = "dead";

/// How a delivery attempt ended, for `settle_outbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    Delivered,
    /// Try again at `retry_at`.
    Retry {
        retry_at: Timestamp,
        error: String,
    },
    /// Out of attempts: the entry is kept, dead, for an operator.
    Dead {
        error: String,
    },
    /// Not delivered this round: its registration's creation is not delivered yet (it lies
    /// past its event's cursor, see `creations`). Due again at `retry_at`; the attempt is not
    /// counted.
    Deferred {
        retry_at: Timestamp,
    },
}

/// Entries one worker claimed in one round, until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxClaim {
    pub token: String,
    pub until: Timestamp,
    /// Oldest due first; each one's `attempts` counts this attempt.
    pub entries: Vec<OutboxRow>,
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_entries: u64,
    pub outbox_entries: u64,
}

impl SqlStore {
    /// Claims up to `limit` due, pending outbox entries (oldest due first) until `until`,
    /// counting the attempt: one `UPDATE` for the round, so that two workers never hold one
    /// entry, and one `SELECT` of what it claimed.
    #[tracing::instrument(skip(self))]
    pub async fn claim_outbox(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<OutboxClaim, PersistError> {
        let token = crate::random::token_hex(16);
        let limit = i64::from(limit.min(PAGE_SIZE_MAX));
        // MySQL has no LIMIT in an `IN (SELECT …)`; SQLite (as built by sqlx) no `UPDATE … LIMIT`.
        let claim = match self.pool.dialect() {
            Dialect::Mysql => Statement::new(
                "UPDATE outbox SET claimed_by = ?, available_at = ?, attempts = attempts + 1 \
                 WHERE status = ? AND available_at <= ? ORDER BY status, available_at, id LIMIT ?",
            ),
            Dialect::Sqlite => Statement::new(
                "UPDATE outbox SET claimed_by = ?, available_at = ?, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE status = ? AND available_at <= ? \
                 ORDER BY status, available_at, id LIMIT ?)",
            ),
        }
        .bind(token.as_str())
        .bind(millis(until))
        .bind(PENDING)
        .bind(millis(now))
        .bind(limit);
        let mut entries = Vec::new();
        if self.execute_without_gap_locks(claim).await? > 0 {
            let claimed = Statement::new(
                "SELECT id, event_id, registration_number, kind, payload_json, status, attempts, available_at, \
                 created_at FROM outbox WHERE status = ? AND available_at = ? AND claimed_by = ? \
                 ORDER BY status, available_at, id",
            )
            .bind(PENDING)
            .bind(millis(until))
            .bind(token.as_str());
            self.pool
                .for_each_row(&claimed, |row| {
                    entries.push(outbox_row(row)?);
                    Ok::<(), PersistError>(())
                })
                .await?;
        }
        Ok(OutboxClaim { token, until, entries })
    }

    /// Records how the deliveries of a claim ended. Returns how many entries were settled:
    /// fewer than given when a claim ran out and another worker claimed the entry meanwhile
    /// (the other worker settles it).
    #[tracing::instrument(skip_all, fields(settlements = settlements.len()))]
    pub async fn settle_outbox(
        &self,
        claim: &OutboxClaim,
        settlements: &[(u64, Settlement)],
    ) -> Result<u64, PersistError> {
        let mut statements = Vec::new();
        let delivered: Vec<i64> = settlements
            .iter()
            .filter(|(_, settlement)| *settlement == Settlement::Delivered)
            .map(|(id, _)| signed(*id))
            .collect();
        for chunk in delivered.chunks(PURGE_CHUNK_ROWS as usize) {
            let mut statement = Statement::new(
                "UPDATE outbox SET status = ?, claimed_by = NULL WHERE status = ? AND available_at = ? \
                 AND claimed_by = ? AND id IN (",
            )
            .bind(DELIVERED)
            .bind(PENDING)
            .bind(millis(claim.until))
            .bind(claim.token.as_str());
            for (index, id) in chunk.iter().enumerate() {
                statement.sql.push_str(if index == 0 { "?" } else { ", ?" });
                statement.push_value(*id);
            }
            statement.sql.push(')');
            statements.push(statement);
        }
        for (id, settlement) in settlements {
            let (status, available_at, error, uncounted) = match settlement {
                Settlement::Delivered => continue,
                Settlement::Retry { retry_at, error } => (PENDING, *retry_at, Some(error.as_str()), 0_i64),
                Settlement::Dead { error } => (DEAD, claim.until, Some(error.as_str()), 0),
                Settlement::Deferred { retry_at } => (PENDING, *retry_at, None, 1),
            };
            statements.push(
                Statement::new(
                    "UPDATE outbox SET status = ?, available_at = ?, last_error = COALESCE(?, last_error), \
                     attempts = attempts - ?, claimed_by = NULL \
                     WHERE status = ? AND available_at = ? AND claimed_by = ? AND id = ?",
                )
                .bind(status)
                .bind(millis(available_at))
                .bind(error)
                .bind(uncounted)
                .bind(PENDING)
                .bind(millis(claim.until))
                .bind(claim.token.as_str())
                .bind(signed(*id)),
            );
        }
        // Unprepared on MySQL: the `IN` list changes length with every round (see
        // `text_protocol`).
        let matched = self.pool.execute_all_unprepared(&statements).await?;
        Ok(matched.iter().sum())
    }

    /// Runs a statement that changes rows found by a range scan, committing on its own. On
    /// MySQL it runs under READ COMMITTED: it then locks the rows it changes and no gaps between
    /// them, so that the write-behind's inserts into the same index ranges (new outbox entries,
    /// new idempotency keys) never wait for it; under REPEATABLE READ, the default, the scanned
    /// ranges' gaps stay locked until it commits. The rows it reads are re-checked against its
    /// conditions when locked, so nothing is changed that no longer meets them.
    async fn execute_without_gap_locks(&self, statement: Statement<'_>) -> Result<u64, PersistError> {
        match self.pool.dialect() {
            Dialect::Mysql => {
                // One round trip; the level applies to the next transaction only.
                let statements =
                    [Statement::new("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"), statement];
                let matched = self.pool.execute_all_unprepared(&statements).await?;
                Ok(matched.get(1).copied().unwrap_or(0))
            }
            Dialect::Sqlite => Ok(self.pool.execute(&statement).await?),
        }
    }

    /// Deletes idempotency entries past their event's retention (the engine forgot them
    /// already; recovery skips them; a key that created a registration lives in that row and
    /// stays with it, skipped by recovery alike) and delivered outbox entries settled before
    /// `delivered_before`. Works in chunks of `PURGE_CHUNK_ROWS`, so that no statement holds
    /// locks for long, and at most `chunks_max` chunks per call: a caller runs it again later.
    #[tracing::instrument(skip(self))]
    pub async fn purge(
        &self,
        now: Timestamp,
        delivered_before: Timestamp,
        chunks_max: u32,
    ) -> Result<Purged, PersistError> {
        let mut purged = Purged::default();
        let mut chunks = 0;
        let mut events = Vec::new();
        let list = Statement::new("SELECT id, idempotency_retention_seconds FROM events ORDER BY id");
        self.pool
            .for_each_row(&list, |row| {
                let id = row.text(0)?.to_owned();
                let retention = unsigned(row.int(1)?, "events.idempotency_retention_seconds")?;
                events.push((id, retention));
                Ok::<(), PersistError>(())
            })
            .await?;
        for (event, retention_seconds) in &events {
            let expired_before = millis(now).saturating_sub(signed(retention_seconds.saturating_mul(1_000)));
            // Walks the event's keys in primary-key order, a bounded range per statement
            // whatever the table's size (there is no index on age; see migration 0002), and
            // deletes the expired ones of each range. Every statement has one fixed shape.
            let mut after = String::new();
            loop {
                if chunks >= chunks_max {
                    return Ok(purged);
                }
                chunks += 1;
                let page = Statement::new(
                    "SELECT idempotency_key FROM idempotency_entries \
                     WHERE event_id = ? AND idempotency_key > ? ORDER BY idempotency_key LIMIT ?",
                )
                .bind(event.as_str())
                .bind(after.as_str())
                .bind(i64::from(PURGE_CHUNK_ROWS));
                let (mut seen, mut last) = (0, None);
                self.pool
                    .for_each_row(&page, |row| {
                        seen += 1;
                        last = Some(String::from_utf8_lossy(row.bytes(0)?).into_owned());
                        Ok::<(), PersistError>(())
                    })
                    .await?;
                let Some(last) = last else { break };
                let delete = Statement::new(
                    "DELETE FROM idempotency_entries WHERE event_id = ? AND idempotency_key > ? \
                     AND idempotency_key <= ? AND decided_at < ?",
                )
                .bind(event.as_str())
                .bind(after.as_str())
                .bind(last.as_str())
                .bind(expired_before);
                purged.idempotency_entries += self.execute_without_gap_locks(delete).await?;
                if seen < PURGE_CHUNK_ROWS {
                    break;
                }
                after = last;
            }
        }
        while chunks < chunks_max {
            chunks += 1;
            let page = Statement::new(
                "SELECT id FROM outbox WHERE status = ? AND available_at < ? ORDER BY status, available_at, id \
                 LIMIT ?",
            )
            .bind(DELIVERED)
            .bind(millis(delivered_before))
            .bind(i64::from(PURGE_CHUNK_ROWS));
            let (mut seen, mut lowest, mut highest) = (0_usize, i64::MAX, i64::MIN);
            self.pool
                .for_each_row(&page, |row| {
                    let id = row.int(0)?;
                    seen += 1;
                    (lowest, highest) = (lowest.min(id), highest.max(id));
                    Ok::<(), PersistError>(())
                })
                .await?;
            if seen == 0 {
                break;
            }
            // The id range of the page, with the purge's conditions again: a row in the range
            // that the page did not list meets them too, or it is not deleted.
            let delete = Statement::new(
                "DELETE FROM outbox WHERE status = ? AND available_at < ? AND id >= ? AND id <= ?",
            )
            .bind(DELIVERED)
            .bind(millis(delivered_before))
            .bind(lowest)
            .bind(highest);
            purged.outbox_entries += self.execute_without_gap_locks(delete).await?;
            if seen < PURGE_CHUNK_ROWS as usize {
                break;
            }
        }
        Ok(purged)
    }
}

pub(crate) fn outbox_row(row: &dyn RowAccess) -> Result<OutboxRow, PersistError> {
    Ok(OutboxRow {
        id: unsigned(row.int(0)?, "outbox.id")?,
        event: EventId::parse(row.text(1)?).map_err(|error| invalid("outbox.event_id", error))?,
        registration: RegistrationId(unsigned(row.int(2)?, "outbox.registration_number")?),
        kind: row.text(3)?.to_owned().into(),
        payload_json: row.text(4)?.into(),
        status: row.text(5)?.to_owned().into(),
        attempts: u32::try_from(row.int(6)?).map_err(|error| invalid("outbox.attempts", error))?,
        available_at: timestamp(row.int(7)?, "outbox.available_at")?,
        created_at: timestamp(row.int(8)?, "outbox.created_at")?,
    })
}
