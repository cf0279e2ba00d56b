//! Recovery: `EventLoader` for `SqlStore`. Loading takes ownership of the event (its epoch
//! moves on, which fences every earlier owner) and rebuilds its `EventQuota` from the stored
//! rows, streamed one at a time into a `QuotaBuilder`, whose `finish` recounts everything.

use std::time::{Duration, Instant};

use kuota_engine::quota::{IdempotencyRecord, QuotaBuilder, RegistrationRecord};
use kuota_engine::store::{BoxFuture, EventLoader, LoadedEvent, StoreError};
use kuota_engine::{
    ActiveStatus, CategoryCode, Decision, Email, EventId, Fingerprint, IdempotencyKey, RegistrationId,
};

use crate::store::backend::{Dialect, RowAccess, Runner, Statement, Transaction};
use crate::store::error::PersistError;
use crate::store::plan::{Creation, fingerprint_bits, millis, signed, unsigned};
use crate::store::rows::RowStatus;
use crate::store::{SqlStore, invalid, read_event, timestamp};

impl EventLoader for SqlStore {
    /// Waits, within the store's call deadline, while the writer finds the store not answering
    /// (see `StoreHealth` for why), then loads.
    fn load<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Option<LoadedEvent>, StoreError>> {
        Box::pin(async move {
            if !self.health().answering() {
                let deadline = self.call_timeout();
                if tokio::time::timeout(deadline, self.health().until_answering()).await.is_err() {
                    return Err(StoreError::Unavailable(format!(
                        "the store did not answer the writer's probes within {} ms",
                        deadline.as_millis()
                    )));
                }
            }
            self.load_event(event).await.map_err(|error| {
                tracing::warn!(event_id = %event, error = %error.chain(), "loading the event failed");
                StoreError::from(error)
            })
        })
    }
}

impl SqlStore {
    /// See `EventLoader::load`; this is the same with the store's own error.
    ///
    /// Everything happens in one transaction. The epoch is incremented first: on MySQL that
    /// write waits for any batch of a former owner holding the event row, and the snapshot the
    /// reads below see is taken after it, so it holds every batch that got to commit. A batch
    /// that comes later finds the new epoch and is fenced. How long it waits is bounded (see
    /// `take_epoch`).
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn load_event(&self, event: &EventId) -> Result<Option<LoadedEvent>, PersistError> {
        let started = Instant::now();
        let mut transaction = self.pool.begin_write().await?;
        let (matched, killed) = self.take_epoch(&mut transaction, event).await?;
        if matched == 0 {
            transaction.rollback().await?;
            return Ok(None);
        }
        let stored = read_event(&mut Runner::Transaction(&mut transaction), event)
            .await?
            .ok_or_else(|| PersistError::Mismatch(format!("event {event} vanished while it was loaded")))?;
        let now = self.clock.now();
        let retention_seconds = u64::from(stored.config.limits.idempotency_retention_seconds);
        let codes: Vec<CategoryCode> =
            stored.config.categories.iter().map(|category| category.code.clone()).collect();
        let mut builder = QuotaBuilder::new(stored.config)?;

        let decided_after = millis(now).saturating_sub(signed(retention_seconds.saturating_mul(1_000)));
        // Active registrations, and ended ones whose creating key is still within its retention
        // (a key that created a registration is kept in the registration's row, not as an
        // idempotency entry: `plan::Creation`). Its decision is the row's `decision_json` in rows
        // stored from migration 0004 to 0011, and derived from the row's columns in rows stored
        // since (those with a `created_seq` and no `created_detail_json`); rows stored before
        // 0004 have neither, and their keys are idempotency entries.
        let registrations = Statement::new(
            "SELECT number, category_code, email, status, hold_expires_at, idempotency_key, body_fingerprint, \
             decision_json, created_at, \
             idempotency_key IS NOT NULL AND created_seq IS NOT NULL AND created_detail_json IS NULL, \
             waitlist_position, created_hold_expires_at FROM registrations \
             WHERE event_id = ? AND (status IN ('held', 'confirmed', 'waitlisted') \
             OR (idempotency_key IS NOT NULL AND created_at > ? \
             AND (decision_json IS NOT NULL OR (created_seq IS NOT NULL AND created_detail_json IS NULL))))",
        )
        .bind(event.as_str())
        .bind(decided_after);
        let mut loaded_registrations = 0u64;
        let mut loaded_entries = 0u64;
        transaction
            .for_each_row(&registrations, |row| {
                let created_at = row.int(8)?;
                if created_at > decided_after
                    && let Some(decision) = creating_decision(row)?
                {
                    let key = parse_key(row.bytes(5)?)?;
                    let fingerprint = row.optional_int(6)?.ok_or_else(|| {
                        invalid("registrations.body_fingerprint", "a stored decision without its fingerprint")
                    })?;
                    builder.add_idempotency(IdempotencyRecord {
                        key,
                        fingerprint: Fingerprint(fingerprint_bits(fingerprint)),
                        decision,
                        decided_at: timestamp(created_at, "registrations.created_at")?,
                    });
                    loaded_entries += 1;
                }
                let status = match RowStatus::parse(row.text(3)?) {
                    Some(RowStatus::Confirmed) => ActiveStatus::Confirmed,
                    Some(RowStatus::Waitlisted) => ActiveStatus::Waitlisted,
                    Some(RowStatus::Held) => {
                        let expires_at = row.optional_int(4)?.ok_or_else(|| {
                            invalid("registrations.hold_expires_at", "a held registration has no expiry")
                        })?;
                        ActiveStatus::Held {
                            expires_at: timestamp(expires_at, "registrations.hold_expires_at")?,
                        }
                    }
                    // Read for its key only.
                    Some(RowStatus::Cancelled | RowStatus::Expired) => return Ok(()),
                    None => return Err(invalid("registrations.status", "not a known status")),
                };
                let number = unsigned(row.int(0)?, "registrations.number")?;
                let code = row.text(1)?;
                // Unknown codes are the builder's to refuse; parse them only then.
                let category = match codes.iter().find(|known| known.as_str() == code) {
                    Some(known) => known.clone(),
                    None => CategoryCode::parse(code)
                        .map_err(|error| invalid("registrations.category_code", error))?,
                };
                let registrant =
                    Email::parse(row.text(2)?).map_err(|error| invalid("registrations.email", error))?;
                builder.add_registration(RegistrationRecord {
                    registration: RegistrationId(number),
                    category,
                    registrant,
                    status,
                })?;
                loaded_registrations += 1;
                Ok(())
            })
            .await?;

        let entries = Statement::new(
            "SELECT idempotency_key, fingerprint, decision_json, decided_at FROM idempotency_entries \
             WHERE event_id = ? AND decided_at > ?",
        )
        .bind(event.as_str())
        .bind(decided_after);
        transaction
            .for_each_row(&entries, |row| {
                let key = parse_key(row.bytes(0)?)?;
                let decision: Decision = serde_json::from_str(row.text(2)?)
                    .map_err(|error| invalid("idempotency_entries.decision_json", error))?;
                builder.add_idempotency(IdempotencyRecord {
                    key,
                    fingerprint: Fingerprint(fingerprint_bits(row.int(1)?)),
                    decision,
                    decided_at: timestamp(row.int(3)?, "idempotency_entries.decided_at")?,
                });
                loaded_entries += 1;
                Ok::<(), PersistError>(())
            })
            .await?;

        // Tickets, and the keys of the joins that made them (kept in the tickets' rows, not as
        // idempotency entries: `queue::JoinDecision`).
        let loaded_tickets = crate::store::queue::load_tickets(
            &mut Runner::Transaction(&mut transaction),
            event,
            decided_after,
            &mut builder,
        )
        .await?;
        loaded_entries += loaded_tickets.idempotency_entries;

        // Ended registrations keep their numbers: the next one continues after the highest
        // number ever stored, not after the highest active one.
        let highest =
            Statement::new("SELECT MAX(number) FROM registrations WHERE event_id = ?").bind(event.as_str());
        let mut highest_number = 0;
        transaction
            .for_each_row(&highest, |row| {
                highest_number =
                    row.optional_int(0)?.map_or(Ok(0), |number| unsigned(number, "MAX(number)"))?;
                Ok::<(), PersistError>(())
            })
            .await?;

        // Committed before the quota is built: building a large event's quota is the one piece
        // of client work inside this transaction, and the server ends a transaction idle for
        // `IDLE_TRANSACTION_TIMEOUT_SECONDS`. Everything read is in hand; a build that fails
        // leaves the epoch taken, which only fences the former owner, as a load that succeeds does.
        transaction.commit().await?;
        let quota = builder.finish(highest_number + 1, stored.last_seq)?;
        let epoch = stored.epoch;
        if !killed.is_empty() {
            tracing::warn!(
                event_id = %event,
                epoch,
                killed_connections = ?killed,
                "took the event over from transactions that held its row (killed)"
            );
        }
        tracing::info!(
            event_id = %event,
            epoch,
            registrations = loaded_registrations,
            idempotency_entries = loaded_entries,
            queue_tickets = loaded_tickets.tickets,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event loaded"
        );
        Ok(Some(LoadedEvent { quota, epoch }))
    }
}

impl SqlStore {
    /// Increments the event's epoch in `transaction` and returns the rows matched (0: no such
    /// event) and the connections killed because they blocked it.
    ///
    /// On MySQL the row may be locked by a former owner's transaction that will not end soon: a
    /// node frozen (SIGSTOP, a paused VM) in the middle of a write-behind commit keeps its row
    /// lock, and the new owner would wait for it while the event stays unserved. A transaction that holds the event row this
    /// long belongs to an owner that lost its lease (the caller holds it now) and would be
    /// fenced by the new epoch anyway, so after `EPOCH_LOCK_WAIT_BEFORE_KILL_MS`, and again
    /// every `EPOCH_KILL_INTERVAL_MS`, the holders that block this update are looked up and
    /// their connections killed (`KILL CONNECTION`: a user may kill its own connections). The server rolls their transactions back and the
    /// update goes on. Killing a writer's connection is safe: it sees a lost connection, an
    /// unknown outcome, and resolves it by reading back. Should the lookup fail (a server
    /// without the lock tables), the wait still ends with the store's call timeout (or the
    /// session's lock wait timeout, `store::LOCK_WAIT_TIMEOUT_SECONDS`) rather than after
    /// InnoDB's 50 s, and the load is retried by the next request.
    async fn take_epoch(
        &self,
        transaction: &mut Transaction,
        event: &EventId,
    ) -> Result<(u64, Vec<u64>), PersistError> {
        let take = Statement::new("UPDATE events SET epoch = epoch + 1 WHERE id = ?").bind(event.as_str());
        if self.pool.dialect() != Dialect::Mysql {
            return Ok((transaction.execute(&take).await?, Vec::new()));
        }
        let mut connection_id = 0;
        transaction
            .for_each_row(&Statement::new("SELECT CAST(CONNECTION_ID() AS SIGNED)"), |row| {
                connection_id = unsigned(row.int(0)?, "CONNECTION_ID()")?;
                Ok::<(), PersistError>(())
            })
            .await?;
        let mut killed = Vec::new();
        let update = transaction.execute(&take);
        tokio::pin!(update);
        // Within the update's own deadline (the store's call timeout), or it would end before
        // anything was killed: a third of it at most, and at most every sixth after that.
        let grace = Duration::from_millis(EPOCH_LOCK_WAIT_BEFORE_KILL_MS).min(self.pool.call_timeout() / 3);
        let interval = Duration::from_millis(EPOCH_KILL_INTERVAL_MS).min(self.pool.call_timeout() / 6);
        let mut next_kill = tokio::time::Instant::now() + grace;
        // Kill whoever blocks it while it keeps waiting, and again every interval: a frozen
        // owner may have a second batch queued behind the first, which takes the row lock as
        // soon as the first is killed.
        let taken = loop {
            tokio::select! {
                biased;
                taken = &mut update => break taken,
                () = tokio::time::sleep_until(next_kill) => {
                    let (holders, taken) = {
                        let killing = self.kill_lock_holders(connection_id, event);
                        tokio::pin!(killing);
                        tokio::select! {
                            biased;
                            taken = &mut update => (None, Some(taken)),
                            holders = &mut killing => (Some(holders), None),
                        }
                    };
                    killed.extend(holders.unwrap_or_default());
                    if let Some(taken) = taken {
                        break taken;
                    }
                    next_kill = tokio::time::Instant::now() + interval;
                }
            }
        };
        Ok((taken?, killed))
    }

    /// Kills the connections whose transactions keep `waiting` (a connection id) from locking
    /// `event`'s row, logs each with the event, and returns the ids killed.
    async fn kill_lock_holders(&self, waiting: u64, event: &EventId) -> Vec<u64> {
        let holders = match self.lock_holders(waiting).await {
            Ok(holders) => holders,
            Err(error) => {
                tracing::warn!(
                    event_id = %event,
                    error = %error.chain(),
                    "finding what blocks the epoch update failed; it waits for the lock wait timeout"
                );
                return Vec::new();
            }
        };
        let mut killed = Vec::new();
        for holder in holders.into_iter().filter(|holder| *holder != waiting) {
            let kill = Statement::new(format!("KILL CONNECTION {holder}"));
            match self.pool.execute_all_unprepared(std::slice::from_ref(&kill)).await {
                Ok(_) => {
                    tracing::warn!(
                        event_id = %event,
                        connection_id = holder,
                        "killed a connection whose transaction held the event row during a take-over"
                    );
                    killed.push(holder);
                }
                Err(error) => tracing::warn!(
                    event_id = %event,
                    connection_id = holder,
                    %error,
                    "killing a connection that blocks the epoch update failed"
                ),
            }
        }
        killed
    }

    /// The ids of the connections whose transactions hold locks the connection `waiting`
    /// waits for: from MariaDB's `information_schema.INNODB_LOCK_WAITS`, or else from MySQL 8's
    /// `performance_schema.data_lock_waits` (which replaced it).
    async fn lock_holders(&self, waiting: u64) -> Result<Vec<u64>, PersistError> {
        match self.connections_listed(MARIADB_LOCK_HOLDERS, waiting).await {
            Ok(holders) => Ok(holders),
            Err(error) => {
                tracing::debug!(error = %error.chain(), "no INNODB_LOCK_WAITS; trying data_lock_waits");
                self.connections_listed(MYSQL_LOCK_HOLDERS, waiting).await
            }
        }
    }

    /// The connection ids `query` lists for the connection `waiting`.
    async fn connections_listed(&self, query: &str, waiting: u64) -> Result<Vec<u64>, PersistError> {
        let statement = Statement::new(query).bind(signed(waiting));
        let mut connections = Vec::new();
        self.pool
            .for_each_row(&statement, |row| {
                connections.push(unsigned(row.int(0)?, "trx_mysql_thread_id")?);
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(connections)
    }
}

/// The connections whose transactions block the one of a given connection, on MariaDB.
const MARIADB_LOCK_HOLDERS: &str = "SELECT DISTINCT CAST(blocking.trx_mysql_thread_id AS SIGNED) \
     FROM information_schema.INNODB_LOCK_WAITS waits \
     JOIN information_schema.INNODB_TRX blocking ON blocking.trx_id = waits.blocking_trx_id \
     JOIN information_schema.INNODB_TRX waiting ON waiting.trx_id = waits.requesting_trx_id \
     WHERE waiting.trx_mysql_thread_id = ?";

/// The same on MySQL 8, whose lock waits moved to the performance schema.
const MYSQL_LOCK_HOLDERS: &str = "SELECT DISTINCT CAST(blocking.trx_mysql_thread_id AS SIGNED) \
     FROM performance_schema.data_lock_waits waits \
     JOIN information_schema.INNODB_TRX blocking ON blocking.trx_id = waits.BLOCKING_ENGINE_TRANSACTION_ID \
     JOIN information_schema.INNODB_TRX waiting ON waiting.trx_id = waits.REQUESTING_ENGINE_TRANSACTION_ID \
     WHERE waiting.trx_mysql_thread_id = ?";

/// How long the epoch update of a take-over waits for the event row before the transactions
/// that hold it are killed, in milliseconds (a third of the store's call timeout when that is
/// shorter). A healthy write-behind commit holds the row for a
/// few round trips (milliseconds); half a second is a frozen or cut-off former owner.
const EPOCH_LOCK_WAIT_BEFORE_KILL_MS: u64 = 500;

/// While the epoch update still waits, how often the transactions that block it are looked up
/// and killed again, in milliseconds (a sixth of the store's call timeout when that is shorter). The update itself is bounded by the store's call timeout,
/// and its lock wait by `store::LOCK_WAIT_TIMEOUT_SECONDS`, when the holders cannot be killed.
const EPOCH_KILL_INTERVAL_MS: u64 = 250;

/// An idempotency key as stored (VARBINARY on MySQL, TEXT on SQLite).
pub(crate) fn parse_key(bytes: &[u8]) -> Result<IdempotencyKey, PersistError> {
    std::str::from_utf8(bytes)
        .map_err(|error| invalid("idempotency_key", error))
        .and_then(|key| IdempotencyKey::parse(key).map_err(|error| invalid("idempotency_key", error)))
}

/// The decision that created a registration, for replays of its key, from the columns
/// `number` (0), `decision_json` (7), whether the row is keyed and stored since migration 0011
/// (9), `waitlist_position` (10) and `created_hold_expires_at` (11) of the recovery's read.
/// `None` for a row without a key, or stored before migration 0004 (its key is an idempotency
/// entry).
fn creating_decision(row: &dyn RowAccess) -> Result<Option<Decision>, PersistError> {
    if let Some(decision_json) = row.optional_text(7)? {
        let decision = serde_json::from_str(decision_json)
            .map_err(|error| invalid("registrations.decision_json", error))?;
        return Ok(Some(decision));
    }
    if row.int(9)? == 0 {
        return Ok(None);
    }
    let registration = RegistrationId(unsigned(row.int(0)?, "registrations.number")?);
    let creation = Creation::from_columns(row.optional_int(10)?, row.optional_int(11)?)?;
    Ok(Some(creation.decision(registration)))
}
