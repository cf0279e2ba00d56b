//! The outbox delivery worker and the purge of expired rows.
//!
//! Post-registration work (a confirmation e-mail, a payment request, a webhook) is an outbox row
//! written in the same transaction as the registration change it announces. This worker claims
//! a round of due rows (`SqlStore::claim_outbox`), hands each to a `Deliver` with a deadline, and settles
//! it: delivered, retried later with exponential backoff, or dead after `attempts_max` attempts
//! (kept for an operator, never retried by itself). Delivery is at least once.
//!
//! A registration's creation has no outbox row: each round also walks the registrations past
//! each event's cursor (`SqlStore::claim_creations`), delivers them as `registration_created`
//! entries before the round's other entries, and advances the cursor after their delivery. The
//! creations that the node's write-behind committed and handed over (`HeldCreations`) are
//! delivered from memory instead of read back, where they continue the cursor. An
//! entry whose registration the cursor has not reached yet waits for a later round, so that a
//! registration's entries are delivered in their order. Every
//! `purge_interval` it also deletes idempotency entries past their event's retention and
//! delivered outbox rows past `delivered_retention`, so that neither table grows without end.
//!
//! Kuota ships one `Deliver`: `LogDelivery`, which writes each entry as a structured log line
//! (target `kuota::outbox`) for a log shipper to pick up. An integration (mail, payments, HTTP)
//! implements `Deliver`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kuota_engine::{Clock, EventId, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{CursorSettlement, CursorState, HeldCreations, OutboxRow, Purged, Settlement, SqlStore};

/// A delivery's outcome: `Err` carries what went wrong, stored as the row's `last_error`.
pub type DeliveryResult = Result<(), String>;

/// Where outbox entries go.
pub trait Deliver: Send + Sync + std::fmt::Debug + 'static {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>>;

    /// Delivers one round's entries and returns one result per entry, in their order, within
    /// `timeout` for the whole call: the round's claim is sized by it (see `deliver_due`). By
    /// default one entry after another; those the deadline cuts short or never reaches failed.
    /// A `Deliver` that does a round's work together (the webhooks' fan-out: one read, one
    /// write for the round) overrides it, keeping to the same deadline.
    fn deliver_all<'a>(
        &'a self,
        entries: &'a [OutboxRow],
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<DeliveryResult>> + Send + 'a>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut results = Vec::with_capacity(entries.len());
            for entry in entries {
                results.push(match tokio::time::timeout_at(deadline, self.deliver(entry)).await {
                    Ok(result) => result,
                    Err(_) => Err(no_answer(timeout)),
                });
            }
            results
        })
    }
}

/// The error of a delivery that took longer than `timeout`.
pub fn no_answer(timeout: Duration) -> String {
    format!("no answer within {} ms", timeout.as_millis())
}

/// Delivers an entry by logging it (see the module documentation); a creation, which has no
/// outbox row, with `outbox_id` 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogDelivery;

impl Deliver for LogDelivery {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        tracing::info!(
            target: "kuota::outbox",
            outbox_id = entry.id,
            event_id = %entry.event,
            registration = entry.registration.0,
            kind = %entry.kind,
            attempt = entry.attempts,
            payload = %entry.payload_json,
            "outbox entry delivered"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Longest error text kept in `last_error`, in bytes.
const LAST_ERROR_BYTES_MAX: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Entries claimed per round.
    pub batch_max: u32,
    /// Pause after a round that found nothing due.
    pub poll_interval: Duration,
    /// The deadline of one `Deliver::deliver_all` call; a delivery past it counts as failed. A
    /// round makes two such calls, one after the other (its creations, then its entries), so
    /// its entries' claim lasts twice this plus `CLAIM_MARGIN`, and its cursors' claim once this
    /// plus `CLAIM_MARGIN`: no other worker takes an entry or a cursor while it may still be
    /// delivered.
    pub delivery_timeout: Duration,
    /// Attempts before an entry is dead.
    pub attempts_max: u32,
    /// Pause before the second attempt; each further one waits twice as long, up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub purge_interval: Duration,
    pub delivered_retention: Duration,
    /// Chunks (of 1,000 rows) one purge looks at, at most.
    pub purge_chunks_max: u32,
    /// Longest a busy store defers a round (see `Busy`); then one round runs anyway.
    pub defer_while_busy_max: Duration,
}

/// Added to a delivery's deadline for its claim.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch_max: 100,
            poll_interval: Duration::from_millis(500),
            delivery_timeout: Duration::from_secs(10),
            attempts_max: 8,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            purge_interval: Duration::from_secs(600),
            delivered_retention: Duration::from_secs(7 * 24 * 3_600),
            purge_chunks_max: 100,
            defer_while_busy_max: Duration::from_secs(30),
        }
    }
}

impl OutboxConfig {
    /// The pause after failed attempt number `attempts` (1 = the first).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_first.saturating_mul(1 << doublings).min(self.backoff_max)
    }
}

/// Whether the store is busy committing registrations. While it is, the worker defers its
/// rounds, for at most `OutboxConfig::defer_while_busy_max` at a time: an e-mail can wait
/// seconds, a registrant's answer cannot, and during a flash crowd every outbox round is row
/// changes and commits that the write-behind's transactions wait behind (measured: the
/// end-to-end open-loop p99 doubled with delivery running beside the admissions).
pub type Busy = Arc<dyn Fn() -> bool + Send + Sync>;

/// A `Busy` that is never busy.
pub fn never_busy() -> Busy {
    Arc::new(|| false)
}

/// A running worker; `stop` ends it after the round in progress.
#[derive(Debug)]
pub struct OutboxWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl OutboxWorker {
    /// Starts the worker as a task of the current tokio runtime.
    /// `busy` says whether registrations are being written right now (see `Busy`); `held`, the
    /// creations this node's write-behind hands over (`crate::store::creation_feed`), if it does.
    pub fn start(
        store: SqlStore,
        deliver: Arc<dyn Deliver>,
        clock: Arc<dyn Clock>,
        busy: Busy,
        config: OutboxConfig,
        held: Option<HeldCreations>,
    ) -> OutboxWorker {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut next_purge = tokio::time::Instant::now();
            let mut deferring_since: Option<tokio::time::Instant> = None;
            loop {
                if *stopped.borrow() {
                    return;
                }
                if busy() {
                    let since = *deferring_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() < config.defer_while_busy_max {
                        tokio::select! {
                            _ = stopped.changed() => {}
                            () = tokio::time::sleep(config.poll_interval) => {}
                        }
                        continue;
                    }
                }
                deferring_since = None;
                let round = deliver_due(&store, deliver.as_ref(), clock.now(), &config, held.as_ref());
                let delivered = match round.await {
                    Ok(count) => count,
                    Err(error) => {
                        tracing::warn!(%error, "outbox round failed; trying again after the poll interval");
                        0
                    }
                };
                if tokio::time::Instant::now() >= next_purge {
                    next_purge = tokio::time::Instant::now() + config.purge_interval;
                    let now = clock.now();
                    let delivered_before = Timestamp::from_millis(
                        now.as_millis().saturating_sub(config.delivered_retention.as_millis() as u64),
                    );
                    match store.purge(now, delivered_before, config.purge_chunks_max).await {
                        Ok(Purged { idempotency_entries, outbox_entries }) => {
                            if idempotency_entries + outbox_entries > 0 {
                                tracing::info!(
                                    idempotency_entries,
                                    outbox_entries,
                                    "purged rows past retention"
                                );
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "purge failed; trying again at the next interval")
                        }
                    }
                }
                if delivered < config.batch_max as usize {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        () = tokio::time::sleep(config.poll_interval) => {}
                    }
                }
            }
        });
        OutboxWorker { stop, task }
    }

    /// Stops the worker and waits for the round in progress to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// One round: claims due entries, then the creations past their events' cursors (see
/// `crate::store::CreationClaim`); delivers the creations and advances the cursors; then
/// delivers the entries whose registrations the cursors have reached, defers the others, and
/// settles them. The creations `held` holds that continue their cursors are delivered from
/// memory (`SqlStore::claim_creations`). Returns how many entries and creations it delivered or
/// tried (deferred ones not counted).
pub async fn deliver_due(
    store: &SqlStore,
    deliver: &dyn Deliver,
    now: Timestamp,
    config: &OutboxConfig,
    held: Option<&HeldCreations>,
) -> Result<usize, crate::store::PersistError> {
    // The entries are delivered after the creations: their claim outlives both deliveries.
    let (cursors_until, entries_until) = claim_ends(now, config.delivery_timeout);
    let mut claim = store.claim_outbox(now, entries_until, config.batch_max).await?;
    // After the entries: an entry's registration is stored before the entry is, so the walk
    // reaches the registrations of the entries just claimed and none of them waits a round.
    let walked = match deliver_creations(store, deliver, now, cursors_until, config, held).await {
        Ok(walked) => walked,
        Err(error) => {
            // The entries still go, those whose creations were delivered before.
            tracing::warn!(%error, "creations not walked this round");
            0
        }
    };
    let cursors = creation_cursors(store, &claim.entries).await?;
    let cursor_of = |entry: &OutboxRow| cursors.get(&entry.event).copied().flatten();
    // Settling needs only the claim's token and end: the entries move out of it.
    let entries = std::mem::take(&mut claim.entries);
    let claimed = entries.len();
    let (ready_entries, deferred): (Vec<OutboxRow>, Vec<OutboxRow>) =
        entries.into_iter().partition(|entry| {
            cursor_of(entry).is_none_or(|cursor| entry.registration.0 <= cursor.created_through)
        });
    let mut settlements = Vec::with_capacity(claimed);
    let mut results = if ready_entries.is_empty() {
        Vec::new()
    } else {
        deliver.deliver_all(&ready_entries, config.delivery_timeout).await
    };
    // A `Deliver` that answered for fewer entries than it was given failed the rest.
    results.resize_with(ready_entries.len(), || Err("no result from the delivery".into()));
    for (entry, result) in ready_entries.iter().zip(results) {
        let settlement = match result {
            Ok(()) => Settlement::Delivered,
            Err(mut error) => {
                truncate(&mut error, LAST_ERROR_BYTES_MAX);
                if entry.attempts >= config.attempts_max {
                    tracing::error!(outbox_id = entry.id, attempts = entry.attempts, %error, "outbox entry is dead");
                    Settlement::Dead { error }
                } else {
                    let retry_at = now.plus_millis(config.backoff(entry.attempts).as_millis() as u64);
                    Settlement::Retry { retry_at, error }
                }
            }
        };
        settlements.push((entry.id, settlement));
    }
    for entry in &deferred {
        // Due again at once: the next round looks at the cursor again; or, while the creation
        // past the cursor keeps failing, when it is tried again (no claim and settlement of the
        // waiting entries every round meanwhile).
        let retry_at = cursor_of(entry).and_then(|cursor| cursor.retry_at).map_or(now, |at| at.max(now));
        settlements.push((entry.id, Settlement::Deferred { retry_at }));
    }
    let settled = store.settle_outbox(&claim, &settlements).await?;
    if settled < settlements.len() as u64 {
        tracing::warn!(
            claimed = settlements.len(),
            settled,
            "outbox claims ran out before their deliveries were settled; other workers retry them"
        );
    }
    Ok(ready_entries.len() + walked)
}

/// Until when a round that starts at `now` claims its cursors (one delivery of at most
/// `delivery_timeout`) and its entries (delivered after the creations: two).
fn claim_ends(now: Timestamp, delivery_timeout: Duration) -> (Timestamp, Timestamp) {
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    (
        now.plus_millis(millis(delivery_timeout + CLAIM_MARGIN)),
        now.plus_millis(millis(delivery_timeout * 2 + CLAIM_MARGIN)),
    )
}

/// Claims the cursors of events with creations past them, delivers those creations, and
/// advances each cursor through its creations delivered in a row from it. Returns how many
/// creations it tried.
async fn deliver_creations(
    store: &SqlStore,
    deliver: &dyn Deliver,
    now: Timestamp,
    until: Timestamp,
    config: &OutboxConfig,
    held: Option<&HeldCreations>,
) -> Result<usize, crate::store::PersistError> {
    let mut claim = store.claim_creations(now, until, config.batch_max, held).await?;
    if claim.cursors.is_empty() {
        return Ok(0);
    }
    // Settling needs only the cursors as claimed: their creations move out of the claim.
    let counts: Vec<usize> = claim.cursors.iter().map(|cursor| cursor.creations.len()).collect();
    let creations: Vec<OutboxRow> =
        claim.cursors.iter_mut().flat_map(|cursor| std::mem::take(&mut cursor.creations)).collect();
    let mut results = if creations.is_empty() {
        Vec::new()
    } else {
        deliver.deliver_all(&creations, config.delivery_timeout).await
    };
    results.resize_with(creations.len(), || Err("no result from the delivery".into()));
    let mut results = results.into_iter();
    let mut delivered = creations.iter();
    let mut settlements = Vec::with_capacity(claim.cursors.len());
    for (cursor, count) in claim.cursors.iter().zip(counts) {
        let mut settlement = CursorSettlement { created_through: cursor.created_through, failed: None };
        for (creation, result) in delivered.by_ref().take(count).zip(results.by_ref()) {
            if settlement.failed.is_some() {
                // Past a failure: delivered perhaps, but the cursor stops before the failure, so
                // they go again (at least once).
                continue;
            }
            match result {
                Ok(()) => settlement.created_through = creation.registration.0,
                Err(mut error) => {
                    truncate(&mut error, LAST_ERROR_BYTES_MAX);
                    // The head of the event's creations holds its cursor until it is delivered:
                    // never dead (see `crate::store::CreationClaim`).
                    if creation.attempts >= config.attempts_max {
                        tracing::error!(
                            event_id = %creation.event,
                            registration = creation.registration.0,
                            attempts = creation.attempts,
                            %error,
                            "a creation keeps failing; its event's later entries wait for it"
                        );
                    }
                    let retry_at = now.plus_millis(config.backoff(creation.attempts).as_millis() as u64);
                    settlement.failed = Some((retry_at, error));
                }
            }
        }
        settlements.push(settlement);
    }
    let settled = store.settle_creations(&claim, &settlements, now).await?;
    if settled < settlements.len() as u64 {
        tracing::warn!(
            claimed = settlements.len(),
            settled,
            "cursor claims ran out before their creations were settled; other workers walk them again"
        );
    }
    Ok(creations.len())
}

/// The cursors of the events of `entries` about a registration (read after the round's walk).
async fn creation_cursors(
    store: &SqlStore,
    entries: &[OutboxRow],
) -> Result<HashMap<EventId, Option<CursorState>>, crate::store::PersistError> {
    let mut cursors = HashMap::new();
    for entry in entries {
        if entry.registration.0 > 0 && !cursors.contains_key(&entry.event) {
            cursors.insert(entry.event.clone(), store.creation_cursor_state(&entry.event).await?);
        }
    }
    Ok(cursors)
}

fn truncate(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_pause_up_to_the_most() {
        let config = OutboxConfig {
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..OutboxConfig::default()
        };
        let pauses: Vec<u64> = (1..=6).map(|attempts| config.backoff(attempts).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(10));
    }

    /// Each delivery takes `pause` (on paused time).
    #[derive(Debug)]
    struct Slow {
        pause: Duration,
    }

    impl Deliver for Slow {
        fn deliver<'a>(
            &'a self,
            _entry: &'a OutboxRow,
        ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
            Box::pin(async move {
                tokio::time::sleep(self.pause).await;
                Ok(())
            })
        }
    }

    fn entry(id: u64) -> OutboxRow {
        OutboxRow {
            id,
            event: EventId::parse("race").expect("a valid id"),
            registration: kuota_engine::RegistrationId(id),
            kind: "registration_cancelled".into(),
            payload_json: "{}".into(),
            status: "pending".into(),
            attempts: 1,
            available_at: Timestamp::from_millis(0),
            created_at: Timestamp::from_millis(0),
        }
    }

    /// The round's claim is sized by the deadline of the whole call: were each delivery given
    /// its own, three slow ones would take three deadlines.
    #[tokio::test(start_paused = true)]
    async fn the_default_deliver_all_keeps_to_one_deadline_for_the_whole_call() {
        let timeout = Duration::from_secs(10);
        let slow = Slow { pause: Duration::from_secs(4) };
        let started = tokio::time::Instant::now();
        let results = slow.deliver_all(&[entry(1), entry(2), entry(3), entry(4)], timeout).await;
        assert_eq!(started.elapsed(), timeout, "the call ends at its deadline");
        let failed = Err(no_answer(timeout));
        assert_eq!(results, [Ok(()), Ok(()), failed.clone(), failed]);
    }

    #[test]
    fn a_round_claims_its_entries_for_both_of_its_deliveries() {
        let now = Timestamp::from_millis(1_000);
        let (cursors, entries) = claim_ends(now, Duration::from_secs(10));
        assert_eq!(cursors, now.plus_millis(10_000 + CLAIM_MARGIN.as_millis() as u64));
        assert_eq!(entries, now.plus_millis(20_000 + CLAIM_MARGIN.as_millis() as u64));
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let mut text = "é".repeat(600);
        truncate(&mut text, 1_001);
        assert_eq!(text.len(), 1_000);
    }
}
