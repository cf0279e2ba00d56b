//! Creations announced from the registration rows: a registration's creation has no outbox
//! row (one row per admission); the delivery worker derives its `registration_created` entry
//! by walking the event's registrations by primary key `(event_id, number)` past the event's
//! durable cursor, `outbox_cursors.created_through`, and advances the cursor once they are
//! delivered.
//!
//! - **Why the walk cannot skip a registration.** Numbers grow with seqs within an event, and
//!   an event's batches commit in seq order: each batch's `last_seq` update matches only the
//!   row its predecessor left, and a pipelined batch's update waits on that row's lock until
//!   its predecessor has committed (see `write`). So a consistent read sees a prefix of the
//!   event's numbers, and the walk, which reads past the cursor in number order, finds every
//!   number once the ones below it are stored. A new owner's `load` takes the event row's lock
//!   and a new epoch, which fences every batch of the old owner not committed by then; it
//!   numbers on from the largest number stored, so a fenced batch's numbers, never stored, are
//!   the new owner's and lie past the cursor.
//! - **Claims.** A worker claims cursors as it claims outbox entries: one `UPDATE` stamps its
//!   token and moves `available_at` to the claim's end, so two nodes never walk one event at
//!   once, and a dead worker's cursor comes back when its claim runs out. Settling checks the
//!   token and the claim's end, so a late worker never moves a cursor another one moved on.
//!   Delivery is at least once: a worker that dies after delivering and before settling leaves
//!   the creations to the next one (the webhook fan-out's unique key makes the second fan-out
//!   add nothing).
//! - **Order.** The cursor reaches a registration before any other entry of it is delivered:
//!   the worker defers an entry whose registration lies past its event's cursor
//!   (`creation_cursor`), so a registration's later messages follow its creation's.
//! - **Failures.** A creation that failed holds its event's cursor and is tried again after the
//!   worker's backoff, counted in `attempts`; it is never dead: skipping it would announce the
//!   registration's later changes without its creation.
//! - **Handed over in memory.** Reading every creation back is most of the worker's work, so
//!   the write-behind, once a batch has committed, hands the creations of its committed
//!   submissions to the worker of its node (`creation_feed`: a map of creations by event and
//!   number that both share, `CREATIONS_HELD_MAX` at most). For a claimed cursor, the worker
//!   delivers the creations held that continue the cursor without a gap (`cursor + 1`,
//!   `cursor + 2`, …) instead of reading them, and walks the rows as above when none does: when
//!   the bound made the map forget them, when another node's writer stored them, or after a
//!   restart. Only what a commit answered as stored is handed over, so what the worker holds is
//!   what the walk would read; the cursor, its claim and its settling are the same either way,
//!   and so is every guarantee above. Creations the cursor has passed (delivered by this worker
//!   or another one) are dropped when this worker next claims their cursor, or when the bound
//!   clears the map.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use kuota_engine::{Effect, EffectKind, EventId, RegistrationId, Timestamp};

use crate::store::backend::{RowAccess, Statement};
use crate::store::plan::{Creation, millis, registration_payload_json, signed, unsigned};
use crate::store::{OutboxRow, PayloadJson, PersistError, SqlStore, invalid, timestamp};

/// The `kind` of a derived creation entry, as outbox entries of the other kinds have theirs.
pub const CREATED_KIND: &str = "registration_created";

/// Cursors one claim takes at most.
const CURSORS_PER_CLAIM_MAX: u32 = 100;

/// Creations handed over and not yet delivered that a node holds in memory, at most
/// (`creation_feed`). Past it, the map is cleared and then takes what comes: the creations it
/// forgot are walked instead (what it holds is only ever a shortcut), and so are those of
/// events another node delivers, which this worker may never claim again to drop them. 32
/// bytes each, 64 with a queue's spare room: 4 MB at most. It holds what the writer commits between two rounds of the
/// worker: in `webhooks` mode a round waits a second at most while the writer is busy
/// (`OutboxConfig::defer_while_busy_max`), which at the 17,000 admissions a second measured on
/// 2 cores (docs/benchmarks.md) this holds four times over.
pub const CREATIONS_HELD_MAX: usize = 65_536;

/// One event's cursor, claimed with the creations past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedCursor {
    pub event: EventId,
    /// Every registration numbered up to it has been delivered.
    pub created_through: u64,
    /// Failed rounds of the creation just past the cursor since its last success.
    pub attempts: u32,
    /// The creations past the cursor, in number order, as outbox entries: `id` 0 (they have no
    /// row of their own), `registration_created`, the status the registration was created with.
    pub creations: Vec<OutboxRow>,
}

/// Cursors one worker claimed in one round, until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreationClaim {
    pub token: String,
    pub until: Timestamp,
    pub cursors: Vec<ClaimedCursor>,
}

/// How a claimed cursor's round ended, for `settle_creations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorSettlement {
    /// Delivered through this number (the cursor as claimed when nothing was).
    pub created_through: u64,
    /// The failure of the creation just past `created_through`, tried again at `retry_at`.
    pub failed: Option<(Timestamp, String)>,
}

/// Where an event's cursor stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorState {
    /// Every registration numbered up to it has been delivered.
    pub created_through: u64,
    /// While the creation past it keeps failing: when it is tried again (or when the claim of
    /// the worker trying it now ends), before which the cursor will not move.
    pub retry_at: Option<Timestamp>,
}

/// Creations not yet delivered, for the operators' page and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreationBacklog {
    /// Registrations past their event's cursor: each event's highest number less its cursor
    /// (numbers are dense within an event, see the module documentation), summed.
    pub pending: u64,
    /// When the oldest of them was created.
    pub oldest_created_at: Option<Timestamp>,
}

/// A registration's creation as a commit of the write-behind stored it (see `creation_feed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedCreation {
    pub number: u64,
    /// The status it was created with.
    pub status: &'static str,
    pub created_at: Timestamp,
}

impl CommittedCreation {
    /// The creations among `effects`, as they are stored once the effects are committed.
    pub fn of_effects(effects: &[Effect]) -> impl Iterator<Item = CommittedCreation> + '_ {
        effects.iter().filter_map(|effect| match &effect.kind {
            EffectKind::Created { registration, status, waitlist_position, .. } => Some(CommittedCreation {
                number: registration.0,
                status: Creation::of(*status, *waitlist_position).status().as_str(),
                created_at: effect.at,
            }),
            _ => None,
        })
    }
}

/// One committed batch's creations, per event.
pub type CommittedCreations = Vec<(EventId, Vec<CommittedCreation>)>;

/// The write-behind's side of `creation_feed`.
#[derive(Clone, Debug)]
pub struct CreationFeed {
    held: Arc<Mutex<Held>>,
}

impl CreationFeed {
    /// Hands a committed batch's creations to the delivery worker (see `CREATIONS_HELD_MAX`).
    /// Never waits but for the map's lock, which is only held to insert or take a round's.
    pub fn hand_over(&self, creations: CommittedCreations) {
        if !creations.is_empty() {
            self.held.lock().unwrap_or_else(PoisonError::into_inner).insert(creations);
        }
    }
}

/// The delivery worker's side of `creation_feed`.
#[derive(Debug)]
pub struct HeldCreations {
    held: Arc<Mutex<Held>>,
}

/// The creations handed over and not yet delivered, by event in number order. Commits of one
/// event are mostly handed over in their order, which appends; each commit task answers on its
/// own, though, so a later one may come first, and the one before it is then put in its place.
#[derive(Debug, Default)]
struct Held {
    events: HashMap<EventId, VecDeque<CommittedCreation>>,
    /// Creations in `events`, at most `CREATIONS_HELD_MAX`.
    count: usize,
    /// Creations delivered from memory instead of read back, since the start.
    served: u64,
}

/// A map of committed creations that the write-behind (`CreationFeed`) fills and the
/// delivery worker (`HeldCreations`) takes from (see the module documentation).
pub fn creation_feed() -> (CreationFeed, HeldCreations) {
    let held = Arc::new(Mutex::new(Held::default()));
    (CreationFeed { held: held.clone() }, HeldCreations { held })
}

impl HeldCreations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while the lock was held left the map as it was between two inserts or takes.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creations held now.
    pub fn held(&self) -> usize {
        self.lock().count
    }

    /// Creations delivered from memory instead of read back from the store, since the start.
    pub fn served(&self) -> u64 {
        self.lock().served
    }

    /// Up to `limit` creations of `event` that continue `created_through` without a gap, in
    /// number order, taken out; `None` when the next one past the cursor is not held. Drops
    /// those the cursor has passed.
    fn take(&self, event: &EventId, created_through: u64, limit: u32) -> Option<Vec<CommittedCreation>> {
        let mut held = self.lock();
        let held = &mut *held;
        let numbers = held.events.get_mut(event)?;
        // Those the cursor has passed were delivered, by this worker or another one.
        while numbers.front().is_some_and(|creation| creation.number <= created_through) {
            numbers.pop_front();
            held.count -= 1;
        }
        let mut taken = Vec::new();
        while taken.len() < limit as usize
            && numbers
                .front()
                .is_some_and(|creation| creation.number == created_through + 1 + taken.len() as u64)
            && let Some(creation) = numbers.pop_front()
        {
            taken.push(creation);
        }
        held.count -= taken.len();
        if numbers.is_empty() {
            held.events.remove(event);
        }
        held.served += taken.len() as u64;
        if taken.is_empty() { None } else { Some(taken) }
    }
}

impl Held {
    fn insert(&mut self, batch: CommittedCreations) {
        for (event, creations) in batch {
            if self.count + creations.len() > CREATIONS_HELD_MAX {
                // Forgotten, they are walked: the bound holds, and the cursors lose nothing.
                self.events.clear();
                self.count = 0;
            }
            let numbers = self.events.entry(event).or_default();
            for creation in creations.into_iter().take(CREATIONS_HELD_MAX) {
                if numbers.back().is_none_or(|last| last.number < creation.number) {
                    numbers.push_back(creation);
                    self.count += 1;
                    continue;
                }
                let place = numbers.partition_point(|held| held.number < creation.number);
                if numbers.get(place).is_some_and(|held| held.number == creation.number) {
                    numbers[place] = creation;
                } else {
                    numbers.insert(place, creation);
                    self.count += 1;
                }
            }
        }
    }
}

impl SqlStore {
    /// Claims the cursors of events with registrations past them (those longest unclaimed
    /// first) until `until`, and reads up to `limit` creations past them in all, in number
    /// order; the creations that continue a cursor are taken from `held` (see the module
    /// documentation) where it holds them, instead of read. A cursor claimed after the limit was
    /// reached carries no creations; settling it unchanged gives it back.
    #[tracing::instrument(skip(self, held))]
    pub async fn claim_creations(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
        held: Option<&HeldCreations>,
    ) -> Result<CreationClaim, PersistError> {
        let token = crate::random::token_hex(16);
        let mut claim = CreationClaim { token, until, cursors: Vec::new() };
        // A point read of the primary key per cursor: is its next registration stored?
        let candidates = Statement::new(
            "SELECT c.event_id FROM outbox_cursors c WHERE c.available_at <= ? AND EXISTS \
             (SELECT 1 FROM registrations r WHERE r.event_id = c.event_id AND r.number > c.created_through) \
             ORDER BY c.available_at, c.event_id LIMIT ?",
        )
        .bind(millis(now))
        .bind(i64::from(limit.clamp(1, CURSORS_PER_CLAIM_MAX)));
        let mut events = Vec::new();
        self.pool
            .for_each_row(&candidates, |row| {
                events.push(row.text(0)?.to_owned());
                Ok::<(), PersistError>(())
            })
            .await?;
        if events.is_empty() {
            return Ok(claim);
        }
        // The condition again: a cursor another worker claimed meanwhile no longer meets it.
        let mut update = Statement::new(
            "UPDATE outbox_cursors SET claimed_by = ?, available_at = ? WHERE available_at <= ? AND event_id IN (",
        )
        .bind(claim.token.as_str())
        .bind(millis(until))
        .bind(millis(now));
        for (index, event) in events.iter().enumerate() {
            update.sql.push_str(if index == 0 { "?" } else { ", ?" });
            update.push_value(event.as_str());
        }
        update.sql.push(')');
        if self.pool.execute_all_unprepared(&[update]).await?.iter().sum::<u64>() == 0 {
            return Ok(claim);
        }
        let claimed = Statement::new(
            "SELECT event_id, created_through, attempts FROM outbox_cursors \
             WHERE claimed_by = ? AND available_at = ? ORDER BY event_id",
        )
        .bind(claim.token.as_str())
        .bind(millis(until));
        self.pool
            .for_each_row(&claimed, |row| {
                claim.cursors.push(ClaimedCursor {
                    event: EventId::parse(row.text(0)?)
                        .map_err(|error| invalid("outbox_cursors.event_id", error))?,
                    created_through: unsigned(row.int(1)?, "outbox_cursors.created_through")?,
                    attempts: u32::try_from(row.int(2)?)
                        .map_err(|error| invalid("outbox_cursors.attempts", error))?,
                    creations: Vec::new(),
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        let mut remaining = limit;
        for cursor in &mut claim.cursors {
            if remaining == 0 {
                break;
            }
            let taken = held.and_then(|held| held.take(&cursor.event, cursor.created_through, remaining));
            cursor.creations = match taken {
                Some(taken) => {
                    let attempts = cursor.attempts + 1;
                    let mut creations = Vec::with_capacity(taken.len());
                    for (position, creation) in taken.into_iter().enumerate() {
                        // The creation just past the cursor is tried again after failures.
                        let attempts = if position == 0 { attempts } else { 1 };
                        creations.push(creation_entry(&cursor.event, creation, attempts));
                    }
                    creations
                }
                None => self.creations_past(cursor, remaining).await?,
            };
            remaining -= cursor.creations.len() as u32;
        }
        Ok(claim)
    }

    /// Up to `limit` registrations of the cursor's event past it, as creation entries.
    async fn creations_past(
        &self,
        cursor: &ClaimedCursor,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, PersistError> {
        let statement = Statement::new(
            "SELECT number, status, created_detail_json, created_at, created_seq, waitlist_position, \
             created_hold_expires_at FROM registrations WHERE event_id = ? AND number > ? ORDER BY number LIMIT ?",
        )
        .bind(cursor.event.as_str())
        .bind(signed(cursor.created_through))
        .bind(i64::from(limit));
        let mut creations = Vec::new();
        self.pool
            .for_each_row(&statement, |row| {
                let creation = creation_row(&cursor.event, row)?;
                // The creation just past the cursor is tried again after failures.
                let attempts = if creations.is_empty() { cursor.attempts + 1 } else { 1 };
                creations.push(OutboxRow { attempts, ..creation });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(creations)
    }

    /// Advances (or gives back) the claimed cursors, one `settlements` entry per cursor of the
    /// claim, in its order. Returns how many were settled: fewer when a claim had run out and
    /// another worker claimed the cursor meanwhile (it walks the same creations again: at least
    /// once).
    #[tracing::instrument(skip_all, fields(cursors = settlements.len()))]
    pub async fn settle_creations(
        &self,
        claim: &CreationClaim,
        settlements: &[CursorSettlement],
        now: Timestamp,
    ) -> Result<u64, PersistError> {
        let mut statements = Vec::with_capacity(settlements.len());
        for (cursor, settlement) in claim.cursors.iter().zip(settlements) {
            let advanced = settlement.created_through > cursor.created_through;
            let (attempts, available_at, error) = match &settlement.failed {
                None if advanced => (0, now, None),
                // Given back unchanged: nothing was tried.
                None => (cursor.attempts, now, None),
                Some((retry_at, error)) => {
                    let attempts = if advanced { 1 } else { cursor.attempts.saturating_add(1) };
                    (attempts, *retry_at, Some(error.as_str()))
                }
            };
            statements.push(
                Statement::new(
                    "UPDATE outbox_cursors SET created_through = ?, attempts = ?, last_error = ?, available_at = ?, \
                     claimed_by = NULL WHERE event_id = ? AND claimed_by = ? AND available_at = ?",
                )
                .bind(signed(settlement.created_through.max(cursor.created_through)))
                .bind(i64::from(attempts))
                .bind(error)
                .bind(millis(available_at))
                .bind(cursor.event.as_str())
                .bind(claim.token.as_str())
                .bind(millis(claim.until)),
            );
        }
        if statements.is_empty() {
            return Ok(0);
        }
        let matched = self.pool.execute_all_unprepared(&statements).await?;
        Ok(matched.iter().sum())
    }

    /// The event's cursor: every registration numbered up to it has been delivered. `None`
    /// when the event has no cursor (no such event).
    pub async fn creation_cursor(&self, event: &EventId) -> Result<Option<u64>, PersistError> {
        Ok(self.creation_cursor_state(event).await?.map(|cursor| cursor.created_through))
    }

    /// The event's cursor, and when a creation that failed is tried again.
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn creation_cursor_state(&self, event: &EventId) -> Result<Option<CursorState>, PersistError> {
        let statement = Statement::new(
            "SELECT created_through, attempts, available_at FROM outbox_cursors WHERE event_id = ?",
        )
        .bind(event.as_str());
        let mut cursor = None;
        self.pool
            .for_each_row(&statement, |row| {
                let failing = row.int(1)? > 0;
                cursor = Some(CursorState {
                    created_through: unsigned(row.int(0)?, "outbox_cursors.created_through")?,
                    retry_at: if failing {
                        Some(timestamp(row.int(2)?, "outbox_cursors.available_at")?)
                    } else {
                        None
                    },
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(cursor)
    }

    /// The creations not yet delivered: per cursor, two reads of the primary key's end (the
    /// event's highest number, and the registration just past the cursor).
    #[tracing::instrument(skip(self))]
    pub async fn creation_backlog(&self) -> Result<CreationBacklog, PersistError> {
        let statement = Statement::new(
            "SELECT c.created_through, \
             (SELECT MAX(r.number) FROM registrations r WHERE r.event_id = c.event_id), \
             (SELECT r.created_at FROM registrations r WHERE r.event_id = c.event_id \
              AND r.number > c.created_through ORDER BY r.number LIMIT 1) \
             FROM outbox_cursors c",
        );
        let mut backlog = CreationBacklog::default();
        self.pool
            .for_each_row(&statement, |row| {
                let through = unsigned(row.int(0)?, "outbox_cursors.created_through")?;
                let highest = unsigned(row.optional_int(1)?.unwrap_or(0), "registrations.number")?;
                backlog.pending += highest.saturating_sub(through);
                if let Some(created_at) = row.optional_int(2)? {
                    let created_at = timestamp(created_at, "registrations.created_at")?;
                    backlog.oldest_created_at =
                        Some(backlog.oldest_created_at.map_or(created_at, |oldest| oldest.min(created_at)));
                }
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(backlog)
    }
}

/// The one field of a registration's `created_detail_json` that its creation entry needs.
#[derive(serde::Deserialize)]
struct CreatedStatus<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
}

/// A creation entry from `number, status, created_detail_json, created_at, created_seq,
/// waitlist_position, created_hold_expires_at`.
fn creation_row(event: &EventId, row: &dyn RowAccess) -> Result<OutboxRow, PersistError> {
    let number = unsigned(row.int(0)?, "registrations.number")?;
    // The status it was created with: from the row's columns since migration 0011
    // (`plan::Creation`); from `created_detail_json` in rows stored from 0007 to 0011, of which
    // only the `status` is read, into a struct that skips the rest (parsed whole into a
    // `serde_json::Value`, this was half of the delivery worker's instructions per creation); a
    // row stored before 0007 has only its current one (and lies behind the cursor, which 0008
    // started past every stored registration).
    let status = match (row.optional_text(2)?, row.optional_int(4)?) {
        (None, Some(_)) => Cow::Borrowed(
            Creation::from_columns(row.optional_int(5)?, row.optional_int(6)?)?.status().as_str(),
        ),
        (detail, _) => detail
            .and_then(|detail| serde_json::from_str::<CreatedStatus<'_>>(detail).ok())
            .and_then(|detail| detail.status)
            .unwrap_or(Cow::Borrowed(row.text(1)?)),
    };
    let created_at = timestamp(row.int(3)?, "registrations.created_at")?;
    let payload_json = PayloadJson::from(registration_payload_json(event, signed(number), &status));
    Ok(created_entry(event, number, payload_json, created_at, 1))
}

/// A creation entry from what the write-behind handed over, its payload written when read.
fn creation_entry(event: &EventId, creation: CommittedCreation, attempts: u32) -> OutboxRow {
    let payload_json = PayloadJson::registration(event, signed(creation.number), creation.status);
    created_entry(event, creation.number, payload_json, creation.created_at, attempts)
}

fn created_entry(
    event: &EventId,
    number: u64,
    payload_json: PayloadJson,
    created_at: Timestamp,
    attempts: u32,
) -> OutboxRow {
    OutboxRow {
        id: 0,
        event: event.clone(),
        registration: RegistrationId(number),
        kind: CREATED_KIND.into(),
        payload_json,
        status: super::maintenance::PENDING.into(),
        attempts,
        available_at: created_at,
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creations(numbers: std::ops::RangeInclusive<u64>) -> Vec<CommittedCreation> {
        numbers
            .map(|number| CommittedCreation {
                number,
                status: "confirmed",
                created_at: Timestamp::from_millis(number),
            })
            .collect()
    }

    fn numbers(taken: Option<Vec<CommittedCreation>>) -> Vec<u64> {
        taken.unwrap_or_default().iter().map(|creation| creation.number).collect()
    }

    fn event(id: &str) -> EventId {
        EventId::parse(id).expect("a valid id")
    }

    #[test]
    fn commits_handed_over_out_of_order_are_taken_in_number_order_up_to_a_gap() {
        let (feed, held) = creation_feed();
        feed.hand_over(vec![(event("race"), creations(4..=5))]);
        feed.hand_over(vec![(event("race"), creations(1..=2)), (event("walk"), creations(1..=1))]);
        feed.hand_over(vec![(event("race"), creations(7..=7))]);
        // Handed over twice (it cannot be, but the count would not tell), held once.
        feed.hand_over(vec![(event("race"), creations(2..=2))]);
        assert_eq!(held.held(), 6);
        // Nothing continues a cursor at 2 but 3; those at or below it go.
        assert_eq!(numbers(held.take(&event("race"), 2, 10)), Vec::<u64>::new());
        assert_eq!(held.held(), 4);
        assert_eq!(numbers(held.take(&event("race"), 3, 1)), [4]);
        assert_eq!(numbers(held.take(&event("race"), 4, 10)), [5]);
        assert_eq!(numbers(held.take(&event("race"), 5, 10)), Vec::<u64>::new());
        assert_eq!(numbers(held.take(&event("walk"), 0, 10)), [1]);
        assert_eq!((held.held(), held.served()), (1, 3));
    }

    #[test]
    fn past_the_bound_the_map_forgets_what_it_holds() {
        let (feed, held) = creation_feed();
        let bound = CREATIONS_HELD_MAX as u64;
        feed.hand_over(vec![(event("race"), creations(1..=bound - 1))]);
        assert_eq!(held.held(), CREATIONS_HELD_MAX - 1);
        feed.hand_over(vec![(event("walk"), creations(1..=2))]);
        assert_eq!(held.held(), 2);
        assert_eq!(held.take(&event("race"), 0, 10), None);
        assert_eq!(numbers(held.take(&event("walk"), 0, 10)), [1, 2]);
    }
}
