//! Recovery: `EventLoader` for `SqlStore`. Loading takes ownership of the event (its epoch
//! moves on, which fences every earlier owner) and rebuilds its `EventQuota` from the stored
//! rows, streamed one at a time into a `QuotaBuilder`, whose `finish` recounts everything.

use std::time::Instant;

use kuota_engine::quota::{IdempotencyRecord, QuotaBuilder, RegistrationRecord};
use kuota_engine::store::{BoxFuture, EventLoader, LoadedEvent, StoreError};
use kuota_engine::{
    ActiveStatus, CategoryCode, Decision, Email, EventId, Fingerprint, IdempotencyKey, RegistrationId,
};

use crate::store::backend::{Runner, Statement};
use crate::store::error::PersistError;
use crate::store::plan::{fingerprint_bits, millis, signed, unsigned};
use crate::store::rows::RowStatus;
use crate::store::{SqlStore, invalid, read_event, timestamp};

impl EventLoader for SqlStore {
    fn load<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Option<LoadedEvent>, StoreError>> {
        Box::pin(async move {
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
    /// that comes later finds the new epoch and is fenced.
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn load_event(&self, event: &EventId) -> Result<Option<LoadedEvent>, PersistError> {
        let started = Instant::now();
        let mut transaction = self.pool.begin_write().await?;
        let take = Statement::new("UPDATE events SET epoch = epoch + 1 WHERE id = ?").bind(event.as_str());
        if transaction.execute(&take).await? == 0 {
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
        // idempotency entry: `plan::NewRegistration::decision_json`).
        let registrations = Statement::new(
            "SELECT number, category_code, email, status, hold_expires_at, idempotency_key, body_fingerprint, \
             decision_json, created_at FROM registrations \
             WHERE event_id = ? AND (status IN ('held', 'confirmed', 'waitlisted') \
             OR (decision_json IS NOT NULL AND created_at > ?))",
        )
        .bind(event.as_str())
        .bind(decided_after);
        let mut loaded_registrations = 0u64;
        let mut loaded_entries = 0u64;
        transaction
            .for_each_row(&registrations, |row| {
                let created_at = row.int(8)?;
                if let Some(decision_json) = row.optional_text(7)?
                    && created_at > decided_after
                {
                    let key = parse_key(row.bytes(5)?)?;
                    let fingerprint = row.optional_int(6)?.ok_or_else(|| {
                        invalid("registrations.body_fingerprint", "a stored decision without its fingerprint")
                    })?;
                    builder.add_idempotency(IdempotencyRecord {
                        key,
                        fingerprint: Fingerprint(fingerprint_bits(fingerprint)),
                        decision: serde_json::from_str(decision_json)
                            .map_err(|error| invalid("registrations.decision_json", error))?,
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

        let quota = builder.finish(highest_number + 1, stored.last_seq)?;
        let epoch = stored.epoch;
        transaction.commit().await?;
        tracing::info!(
            event_id = %event,
            epoch,
            registrations = loaded_registrations,
            idempotency_entries = loaded_entries,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event loaded"
        );
        Ok(Some(LoadedEvent { quota, epoch }))
    }
}

/// An idempotency key as stored (VARBINARY on MySQL, TEXT on SQLite).
fn parse_key(bytes: &[u8]) -> Result<IdempotencyKey, PersistError> {
    std::str::from_utf8(bytes)
        .map_err(|error| invalid("idempotency_key", error))
        .and_then(|key| IdempotencyKey::parse(key).map_err(|error| invalid("idempotency_key", error)))
}
