//! The outbox delivery worker and the purge, on MariaDB and on SQLite: entries written by the
//! real write-behind, and the creations the worker derives from the registration rows past
//! their event's cursor, are delivered once each, retried with backoff, entries dead after
//! their attempts, never delivered by two workers at once, a registration's creation before
//! its later entries; rows past their retention are purged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kuota_engine::store::{EventLoader, StoreError};
use kuota_engine::{Command, Decision, EventQuota, ManualClock, Outcome, RegistrationId, Timestamp};
use kuota_persist::outbox::{Deliver, DeliveryResult, OutboxConfig, OutboxWorker, deliver_due, never_busy};
use kuota_persist::store::{
    BatchItem, CreationFeed, CursorSettlement, HeldCreations, OutboxRow, SqlStore, creation_feed,
};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_id, keyed, on_both_databases, register, stored_event, submit,
};

on_both_databases!(
    every_entry_is_delivered_once_and_a_second_round_finds_nothing,
    a_failing_entry_is_retried_after_its_backoff_and_dead_after_its_attempts,
    a_failing_creation_holds_its_cursor_and_its_registration_s_later_entries,
    a_registration_s_creation_is_delivered_before_its_cancellation,
    two_workers_at_once_deliver_every_entry_exactly_once,
    an_entry_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_settle_it,
    a_round_s_entries_stay_claimed_until_both_of_its_deliveries_could_have_ended,
    a_cursor_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_move_it,
    claimers_at_once_never_hold_one_cursor,
    a_batch_numbered_past_an_uncommitted_one_cannot_commit_before_it,
    a_fenced_batch_s_numbers_are_the_new_owner_s_and_announced_once,
    the_purge_deletes_only_rows_past_their_retention,
    the_worker_task_delivers_in_the_background_and_stops,
    a_busy_store_defers_delivery_but_not_past_the_longest_deferral,
    the_creations_handed_over_are_the_entries_the_walk_reads,
    a_gap_in_the_creations_handed_over_is_walked,
    creations_another_worker_delivered_are_dropped_and_not_delivered_again,
    a_fenced_batch_s_creation_is_not_handed_over,
);

/// One delivery as the recorder keeps it: the registration and the entry's kind.
type Delivered = (u64, String);

/// Records deliveries in their order; fails those listed in `failing`.
#[derive(Debug, Default)]
struct Recorder {
    delivered: Mutex<Vec<Delivered>>,
    attempts: Mutex<HashMap<Delivered, u32>>,
    /// The payload of each delivery, the latest one's.
    payloads: Mutex<HashMap<Delivered, String>>,
    failing: Mutex<Vec<(u64, &'static str)>>,
}

impl Recorder {
    fn failing(failing: &[(u64, &'static str)]) -> Recorder {
        Recorder { failing: Mutex::new(failing.to_vec()), ..Recorder::default() }
    }

    fn delivered(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Deliver for Recorder {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        Box::pin(async move {
            let key = (entry.registration.0, entry.kind.to_string());
            *self.attempts.lock().unwrap().entry(key.clone()).or_default() += 1;
            // A real delivery waits for a remote party; let the other worker run meanwhile.
            tokio::task::yield_now().await;
            let failing = self.failing.lock().unwrap().clone();
            if failing.iter().any(|(registration, kind)| (*registration, *kind) == (key.0, key.1.as_str())) {
                return Err(format!("mail server refused registration {}", entry.registration.0));
            }
            self.payloads.lock().unwrap().insert(key.clone(), entry.payload_json.to_string());
            self.delivered.lock().unwrap().push(key);
            Ok(())
        })
    }
}

fn created(registration: u64) -> Delivered {
    (registration, "registration_created".into())
}

fn cancelled(registration: u64) -> Delivered {
    (registration, "registration_cancelled".into())
}

fn config() -> OutboxConfig {
    OutboxConfig {
        batch_max: 3,
        attempts_max: 3,
        backoff_first: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        delivery_timeout: Duration::from_secs(5),
        ..OutboxConfig::default()
    }
}

/// An event with `registrations` confirmed registrations, keyed, all decided at `START`: no
/// outbox entry (their creations are derived from their rows).
async fn event_with_registrations(database: &TestDatabase, registrations: usize) -> (SqlStore, EventQuota) {
    let (store, mut quota, epoch) = stored_event(database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    for n in 0..registrations {
        let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("key-{n}"), n as u64);
        let (_, effects) = decide(&mut quota, Command::Register(request), START);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
    (store, quota)
}

/// Cancels `registrations` at `at` through the write-behind: one outbox entry each.
async fn cancel(store: &SqlStore, quota: &mut EventQuota, registrations: &[u64], at: Timestamp) {
    let id = event_id("race");
    let epoch = store.event_progress(&id).await.unwrap().unwrap().epoch;
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    for registration in registrations {
        let command = Command::Cancel { registration: RegistrationId(*registration) };
        let (_, effects) = decide(quota, command, at);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
}

async fn statuses(store: &SqlStore) -> Vec<(u64, String, u32)> {
    let rows = store.outbox_page(100, None).await.unwrap();
    rows.into_iter().map(|row| (row.registration.0, row.status.to_string(), row.attempts)).collect()
}

async fn cursor(store: &SqlStore) -> u64 {
    store.creation_cursor(&event_id("race")).await.unwrap().expect("every event has a cursor")
}

async fn every_entry_is_delivered_once_and_a_second_round_finds_nothing(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 5).await;
    assert!(store.outbox_page(100, None).await.unwrap().is_empty(), "an admission writes no outbox row");
    cancel(&store, &mut quota, &[1, 2], START).await;
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    // Each round takes three entries and three creations at most (batch_max): the creations
    // first, then the entries whose registrations the cursor has reached.
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 5);
    assert_eq!(cursor(&store).await, 3);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 2);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 0);
    assert_eq!(
        recorder.delivered(),
        [created(1), created(2), created(3), cancelled(1), cancelled(2), created(4), created(5)]
    );
    assert_eq!(cursor(&store).await, 5);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (2, "delivered".into(), 1)]);
}

async fn a_failing_entry_is_retried_after_its_backoff_and_dead_after_its_attempts(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 2).await;
    cancel(&store, &mut quota, &[1, 2], START).await;
    let recorder = Recorder::failing(&[(2, "registration_cancelled")]);
    let config = config();
    let mut now = START.plus_seconds(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 4);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (2, "pending".into(), 1)]);
    // Not due again before its backoff (10 s after the first failure)...
    now = now.plus_millis(9_999);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 0);
    // ...then tried again; the second failure waits twice as long.
    now = now.plus_millis(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 1);
    now = now.plus_seconds(19);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 0);
    now = now.plus_seconds(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 1);
    // The third attempt was the last: dead, kept, never claimed again.
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (2, "dead".into(), 3)]);
    now = now.plus_seconds(3_600);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 0);
    let attempts = recorder.attempts.lock().unwrap().clone();
    assert_eq!(attempts[&cancelled(2)], 3);
    assert_eq!(attempts.values().sum::<u32>(), 6, "{attempts:?}");
}

/// A creation that fails stops its event's cursor before it: it is tried again after the
/// backoff, past `attempts_max` too (never dead), and an entry of a registration past the
/// cursor waits, its attempts uncounted, until the creation has gone.
async fn a_failing_creation_holds_its_cursor_and_its_registration_s_later_entries(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 3).await;
    cancel(&store, &mut quota, &[1, 3], START).await;
    let recorder = Recorder::failing(&[(2, "registration_created")]);
    let config = config();
    let mut now = START.plus_seconds(1);
    // Creations 1 to 3 are tried and 2 fails: the cursor stops at 1, so 1's cancellation goes
    // and 3's waits.
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 4);
    assert_eq!(cursor(&store).await, 1);
    assert_eq!(recorder.delivered(), [created(1), created(3), cancelled(1)]);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (3, "pending".into(), 0)]);
    // The cancellation waits until the creation is tried again: not claimed before.
    let waiting = store.outbox_page(100, None).await.unwrap().pop().unwrap();
    assert_eq!(waiting.available_at, now.plus_seconds(10));
    now = now.plus_millis(9_999);
    assert!(store.claim_outbox(now, now.plus_seconds(1), 10).await.unwrap().entries.is_empty());
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 0);
    // Past the attempts an entry has, still tried: 10, 20, 40, 60 s apart.
    for pause in [1, 20_000, 40_000, 60_000] {
        now = now.plus_millis(pause);
        assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 2);
        assert_eq!(cursor(&store).await, 1);
    }
    assert_eq!(recorder.attempts.lock().unwrap()[&created(2)], 5);
    recorder.failing.lock().unwrap().clear();
    now = now.plus_seconds(60);
    assert_eq!(deliver_due(&store, &recorder, now, &config, None).await.unwrap(), 3);
    assert_eq!(cursor(&store).await, 3);
    let delivered = recorder.delivered();
    assert_eq!(delivered[delivered.len() - 3..], [created(2), created(3), cancelled(3)]);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (3, "delivered".into(), 1)]);
}

/// A registration created and cancelled in one batch, and one whose cancellation is claimed in
/// a round whose walk does not reach it: each creation is delivered first, with the status the
/// registration was created with.
async fn a_registration_s_creation_is_delivered_before_its_cancellation(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let (_, mut effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let cancel_first = Command::Cancel { registration: RegistrationId(1) };
    effects.extend(decide(&mut quota, cancel_first, START).1);
    submit(&sender, &id, epoch, effects).await.unwrap();
    for n in 2..=5 {
        let (_, effects) =
            decide(&mut quota, Command::Register(register("10K", &format!("r{n}@x.org"))), START);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    let (_, effects) = decide(&mut quota, Command::Cancel { registration: RegistrationId(5) }, START);
    submit(&sender, &id, epoch, effects).await.unwrap();
    drop(sender);
    writer.closed().await;
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    // The first round walks 1 to 3: 5's cancellation waits for the second.
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 4);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 3);
    assert_eq!(
        recorder.delivered(),
        [created(1), created(2), created(3), cancelled(1), created(4), created(5), cancelled(5)]
    );
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (5, "delivered".into(), 1)]);
    let payloads = recorder.payloads.lock().unwrap().clone();
    let payload: serde_json::Value = serde_json::from_str(&payloads[&created(1)]).unwrap();
    assert_eq!(payload, serde_json::json!({"event_id": "race", "registration": 1, "status": "confirmed"}));
    let payload: serde_json::Value = serde_json::from_str(&payloads[&cancelled(1)]).unwrap();
    assert_eq!(payload["status"], "cancelled");
}

async fn two_workers_at_once_deliver_every_entry_exactly_once(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 30).await;
    let cancelled_ones: Vec<u64> = (1..=30).filter(|n| n % 3 == 0).collect();
    cancel(&store, &mut quota, &cancelled_ones, START).await;
    let recorder = Arc::new(Recorder::default());
    let config = OutboxConfig { batch_max: 4, ..config() };
    let now = START.plus_seconds(1);
    let workers = (0..2).map(|_| {
        let (store, recorder) = (store.clone(), recorder.clone());
        tokio::spawn(async move {
            while deliver_due(&store, recorder.as_ref(), now, &config, None).await.unwrap() > 0 {}
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.unwrap();
    }
    // A worker stops at a round that only deferred entries; what the other left is finished here.
    while deliver_due(&store, recorder.as_ref(), now, &config, None).await.unwrap() > 0 {}
    let attempts = recorder.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 40);
    assert!(attempts.values().all(|count| *count == 1), "delivered twice: {attempts:?}");
    assert!(statuses(&store).await.iter().all(|(_, status, _)| status == "delivered"));
    let delivered = recorder.delivered();
    let position = |wanted: &Delivered| delivered.iter().position(|one| one == wanted).unwrap();
    for n in cancelled_ones {
        assert!(
            position(&created(n)) < position(&cancelled(n)),
            "{n} cancelled before created: {delivered:?}"
        );
    }
    assert_eq!(cursor(&store).await, 30);
}

async fn an_entry_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_settle_it(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 1).await;
    cancel(&store, &mut quota, &[1], START).await;
    let now = START.plus_seconds(1);
    // A worker claims the entry for one second and then stalls (or dies).
    let stalled = store.claim_outbox(now, now.plus_seconds(1), 10).await.unwrap();
    assert_eq!(stalled.entries.len(), 1);
    assert!(
        store.claim_outbox(now, now.plus_seconds(1), 10).await.unwrap().entries.is_empty(),
        "claimed twice"
    );
    // After the claim ran out, another worker delivers it (after the creation).
    let recorder = Recorder::default();
    assert_eq!(deliver_due(&store, &recorder, now.plus_seconds(2), &config(), None).await.unwrap(), 2);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 2)]);
    // The stalled worker's late settlement changes nothing.
    let late = kuota_persist::store::Settlement::Retry { retry_at: now, error: "late".into() };
    let entry = stalled.entries[0].id;
    assert_eq!(store.settle_outbox(&stalled, &[(entry, late)]).await.unwrap(), 0);
    let delivered = kuota_persist::store::Settlement::Delivered;
    assert_eq!(store.settle_outbox(&stalled, &[(entry, delivered)]).await.unwrap(), 0);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 2)]);
}

/// While the round delivers its entries (after its creations), claims what another worker
/// would at `probe_at`.
#[derive(Debug)]
struct ClaimProbe {
    store: SqlStore,
    probe_at: Timestamp,
    /// How many entries each probe claimed.
    claimed: Mutex<Vec<usize>>,
}

impl Deliver for ClaimProbe {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        Box::pin(async move {
            if entry.kind != "registration_created" {
                let other = self.store.claim_outbox(self.probe_at, self.probe_at.plus_seconds(1), 10).await;
                self.claimed.lock().unwrap().push(other.map_err(|error| error.to_string())?.entries.len());
            }
            Ok(())
        })
    }
}

/// A round delivers twice, one after the other, each within `delivery_timeout`: its creations,
/// then its entries. The entries' claim must outlast both, or another worker delivers them too.
async fn a_round_s_entries_stay_claimed_until_both_of_its_deliveries_could_have_ended(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 1).await;
    cancel(&store, &mut quota, &[1], START).await;
    let now = START.plus_seconds(1);
    let config = config();
    // A second after both deliveries could have ended, within the claim's margin.
    let both_deliveries = u64::try_from(config.delivery_timeout.as_millis() * 2).unwrap();
    let probe = ClaimProbe {
        store: store.clone(),
        probe_at: now.plus_millis(both_deliveries).plus_seconds(1),
        claimed: Mutex::default(),
    };
    assert_eq!(deliver_due(&store, &probe, now, &config, None).await.unwrap(), 2);
    assert_eq!(*probe.claimed.lock().unwrap(), [0], "another worker claimed an entry being delivered");
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1)]);
}

async fn a_cursor_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_move_it(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_registrations(&database, 2).await;
    let now = START.plus_seconds(1);
    // A worker claims the cursor for one second and then stalls (or dies).
    let stalled = store.claim_creations(now, now.plus_seconds(1), 10, None).await.unwrap();
    let [claimed] = stalled.cursors.as_slice() else { panic!("one cursor: {stalled:?}") };
    let numbers: Vec<u64> = claimed.creations.iter().map(|creation| creation.registration.0).collect();
    assert_eq!((claimed.created_through, numbers), (0, vec![1, 2]));
    assert!(
        store.claim_creations(now, now.plus_seconds(1), 10, None).await.unwrap().cursors.is_empty(),
        "claimed twice"
    );
    // After the claim ran out, another worker delivers the creations.
    let recorder = Recorder::default();
    assert_eq!(deliver_due(&store, &recorder, now.plus_seconds(2), &config(), None).await.unwrap(), 2);
    assert_eq!(cursor(&store).await, 2);
    // The stalled worker's late settlement moves the cursor neither back nor on.
    for late in [1, 2] {
        let settlement = CursorSettlement { created_through: late, failed: None };
        assert_eq!(store.settle_creations(&stalled, &[settlement], now).await.unwrap(), 0);
    }
    assert_eq!(cursor(&store).await, 2);
    assert_eq!(deliver_due(&store, &recorder, now.plus_seconds(3), &config(), None).await.unwrap(), 0);
    assert_eq!(recorder.delivered(), [created(1), created(2)]);
}

/// Many claims at once, each reading the same candidate before any has claimed it: the claim
/// checks the cursor's due time again, so one of them holds it.
async fn claimers_at_once_never_hold_one_cursor(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_registrations(&database, 2).await;
    let now = START.plus_seconds(1);
    let claims = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_creations(now, now.plus_seconds(10), 10, None).await.unwrap() })
    });
    let mut holding = 0;
    for claim in claims.collect::<Vec<_>>() {
        let claim = claim.await.unwrap();
        holding += claim.cursors.len();
    }
    assert_eq!(holding, 1, "one cursor held by {holding} claims");
}

/// Why the walk cannot skip a number: a batch whose numbers follow those of one not committed
/// yet cannot commit before it (its first seq does not follow the stored one), so the walk never
/// sees a later number without the earlier ones.
async fn a_batch_numbered_past_an_uncommitted_one_cannot_commit_before_it(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 10)], 0).await;
    let id = event_id("race");
    let mut batches = [Vec::new(), Vec::new()];
    for n in 0..4 {
        let (_, effects) =
            decide(&mut quota, Command::Register(register("10K", &format!("r{n}@x.org"))), START);
        batches[n / 2].extend(effects);
    }
    let [first, second] = &batches;
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    let refused = store.commit_batch(&[BatchItem { event: &id, epoch, effects: second }]).await;
    assert!(refused.is_err(), "registrations 3 and 4 committed before 1 and 2: {refused:?}");
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 0);
    let report = store.commit_batch(&[BatchItem { event: &id, epoch, effects: first }]).await.unwrap();
    assert!(report.committed(&id, epoch));
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 2);
    store.commit_batch(&[BatchItem { event: &id, epoch, effects: second }]).await.unwrap();
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 2);
    assert_eq!(recorder.delivered(), [created(1), created(2), created(3), created(4)]);
}

/// A new owner fences the old one's batches not committed by then, and numbers on from the
/// largest number stored: the fenced batch's number is the new owner's registration, past the
/// cursor, announced once.
async fn a_fenced_batch_s_numbers_are_the_new_owner_s_and_announced_once(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut stale_quota, stale_epoch) = stored_event(&database, "race", &[("10K", 10)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let (_, effects) = decide(&mut stale_quota, Command::Register(register("10K", "a@x.org")), START);
    submit(&sender, &id, stale_epoch, effects).await.unwrap();
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 1);

    let current = store.load(&id).await.unwrap().unwrap();
    let mut current_quota = current.quota;
    let (_, stale_effects) =
        decide(&mut stale_quota, Command::Register(register("10K", "stale@x.org")), START);
    assert_eq!(submit(&sender, &id, stale_epoch, stale_effects).await, Err(StoreError::Fenced));
    let (outcome, effects) =
        decide(&mut current_quota, Command::Register(register("10K", "owner@x.org")), START);
    assert_eq!(outcome, Outcome::Decided(Decision::Confirmed { registration: RegistrationId(2) }));
    submit(&sender, &id, current.epoch, effects).await.unwrap();
    drop(sender);
    writer.closed().await;

    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 1);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), None).await.unwrap(), 0);
    assert_eq!(recorder.delivered(), [created(1), created(2)]);
    let second = store.registration(&id, RegistrationId(2)).await.unwrap().unwrap();
    assert_eq!(second.email, "owner@x.org");
}

async fn the_purge_deletes_only_rows_past_their_retention(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 5).await;
    let id = event_id("race");
    let retention_seconds = u64::from(quota.config().limits.idempotency_retention_seconds);
    let loaded = store.load(&id).await.unwrap().unwrap();
    quota = loaded.quota;
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    // The five keys above created registrations: they live in those rows, which the purge
    // leaves (recovery leaves their keys out past the retention). Five keyed refusals at the
    // same time get idempotency entries of their own.
    for n in 0..5 {
        let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("again-{n}"), n);
        let (outcome, effects) = decide(&mut quota, Command::Register(request), START);
        assert_eq!(outcome, Outcome::Decided(Decision::AlreadyRegistered));
        submit(&sender, &id, loaded.epoch, effects).await.unwrap();
    }
    // Two more keyed registrations, decided an hour later.
    let later = START.plus_seconds(3_600);
    for n in 5..7 {
        let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("key-{n}"), n);
        let (_, effects) = decide(&mut quota, Command::Register(request), later);
        submit(&sender, &id, loaded.epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
    // Seven outbox entries: the registrations' cancellations, an hour later too.
    cancel(&store, &mut quota, &[1, 2, 3, 4, 5, 6, 7], later).await;
    // Deliver the first three entries (and creations) a second later.
    let delivered_at = later.plus_seconds(1);
    deliver_due(&store, &Recorder::default(), delivered_at, &config(), None).await.unwrap();

    // Just before the first keys' retention ends nothing goes; just after, exactly those five.
    let edge = START.plus_seconds(retention_seconds);
    let kept = store.purge(edge, Timestamp::ZERO, 100).await.unwrap();
    assert_eq!(kept.idempotency_entries, 0);
    let purged = store.purge(edge.plus_millis(1), delivered_at, 100).await.unwrap();
    assert_eq!(purged.idempotency_entries, 5);
    assert_eq!(purged.outbox_entries, 0, "delivered entries are kept until their own retention");
    // Delivered entries (settled with available_at = their claim's end) go after theirs; pending
    // ones never.
    let purged = store.purge(edge, later.plus_seconds(3_600), 100).await.unwrap();
    assert_eq!(purged.outbox_entries, 3);
    let remaining = statuses(&store).await;
    assert_eq!(remaining.len(), 4);
    assert!(remaining.iter().all(|(_, status, _)| status == "pending"));
    // The later keys still replay after a restart; the purged ones are gone from the store.
    let reloaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(reloaded.quota.availability(), quota.availability());
}

async fn the_worker_task_delivers_in_the_background_and_stops(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_registrations(&database, 4).await;
    cancel(&store, &mut quota, &[2], START).await;
    let recorder = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::new(START.plus_seconds(1)));
    let config = OutboxConfig { poll_interval: Duration::from_millis(10), ..config() };
    let worker = OutboxWorker::start(store.clone(), recorder.clone(), clock, never_busy(), config, None);
    wait_for_deliveries(&recorder, 5).await;
    tokio::time::timeout(Duration::from_secs(5), worker.stop()).await.expect("the worker stops");
    assert!(statuses(&store).await.iter().all(|(_, status, _)| status == "delivered"));
    assert_eq!(cursor(&store).await, 4);
}

async fn a_busy_store_defers_delivery_but_not_past_the_longest_deferral(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_registrations(&database, 2).await;
    let recorder = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::new(START.plus_seconds(1)));
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let config = OutboxConfig {
        poll_interval: Duration::from_millis(10),
        defer_while_busy_max: Duration::from_secs(60),
        ..config()
    };
    let reader = busy.clone();
    let is_busy = Arc::new(move || reader.load(std::sync::atomic::Ordering::Relaxed));
    let worker = OutboxWorker::start(store.clone(), recorder.clone(), clock.clone(), is_busy, config, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recorder.attempts.lock().unwrap().is_empty(), "delivered while the store was busy");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_for_deliveries(&recorder, 2).await;
    worker.stop().await;

    // Busy for good: one round still runs once the longest deferral has passed.
    let second_database = TestDatabase::create(backend).await;
    let (store, _) = event_with_registrations(&second_database, 2).await;
    let recorder = Arc::new(Recorder::default());
    let config = OutboxConfig { defer_while_busy_max: Duration::from_millis(200), ..config };
    let always = Arc::new(|| true);
    let worker = OutboxWorker::start(store, recorder.clone(), clock, always, config, None);
    wait_for_deliveries(&recorder, 2).await;
    worker.stop().await;
}

async fn wait_for_deliveries(recorder: &Recorder, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.delivered.lock().unwrap().len() < count {
        assert!(tokio::time::Instant::now() < deadline, "not delivered within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Registers `emails` in order, through a write-behind that hands its creations to `feed` if
/// given, each at `at`, one submission each.
async fn register_all(
    store: &SqlStore,
    quota: &mut EventQuota,
    emails: &[&str],
    at: Timestamp,
    feed: Option<&CreationFeed>,
) {
    let id = event_id("race");
    let epoch = store.event_progress(&id).await.unwrap().unwrap().epoch;
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), feed.cloned());
    for email in emails {
        let request = kuota_engine::Register { waitlist: true, ..register("10K", email) };
        let (_, effects) = decide(quota, Command::Register(request), at);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
}

/// Rounds of `deliver_due` until one delivers nothing.
async fn deliver_all_holding(store: &SqlStore, recorder: &Recorder, now: Timestamp, held: &HeldCreations) {
    for _ in 0..100 {
        if deliver_due(store, recorder, now, &config(), Some(held)).await.unwrap() == 0 {
            return;
        }
    }
    panic!("still delivering after 100 rounds");
}

/// What the write-behind hands over (the status each registration was created with: held, then
/// waitlisted; its creation time) gives the very entries that reading the rows back gives.
async fn the_creations_handed_over_are_the_entries_the_walk_reads(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, _) = stored_event(&database, "race", &[("10K", 2)], 600).await;
    let (feed, held) = creation_feed();
    let emails = ["a@x.org", "b@x.org", "c@x.org"];
    register_all(&store, &mut quota, &emails, START.plus_millis(1_234), Some(&feed)).await;
    let now = START.plus_seconds(10);
    // A claim that reads them back, left to run out...
    let walked = store.claim_creations(now, now.plus_seconds(1), 10, None).await.unwrap();
    // ...and one that takes them from memory.
    let later = now.plus_seconds(2);
    let handed = store.claim_creations(later, later.plus_seconds(1), 10, Some(&held)).await.unwrap();
    assert_eq!(held.served(), 3, "read back: {handed:?}");
    assert_eq!(held.held(), 0);
    let [walked] = walked.cursors.as_slice() else { panic!("one cursor: {walked:?}") };
    let [handed] = handed.cursors.as_slice() else { panic!("one cursor: {handed:?}") };
    assert_eq!(handed, walked);
    let statuses: Vec<&str> = handed.creations.iter().map(|entry| entry.payload_json.as_str()).collect();
    assert!(statuses[0].contains("\"held\"") && statuses[2].contains("\"waitlisted\""), "{statuses:?}");
    // Delivered and settled like walked ones.
    let recorder = Recorder::default();
    let (feed_after, held_after) = creation_feed();
    register_all(&store, &mut quota, &["d@x.org"], START, Some(&feed_after)).await;
    deliver_all_holding(&store, &recorder, later.plus_seconds(2), &held_after).await;
    assert_eq!(recorder.delivered(), [created(1), created(2), created(3), created(4)]);
    assert_eq!((cursor(&store).await, held_after.served()), (4, 1));
}

/// Creations committed without being handed over (a full channel, another node's writer) leave
/// a gap in what the worker holds: it delivers what continues the cursor, walks the gap, and
/// delivers each creation once, in order.
async fn a_gap_in_the_creations_handed_over_is_walked(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, _) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let (feed, held) = creation_feed();
    register_all(&store, &mut quota, &["a@x.org", "b@x.org"], START, Some(&feed)).await;
    register_all(&store, &mut quota, &["c@x.org", "d@x.org"], START, None).await;
    register_all(&store, &mut quota, &["e@x.org", "f@x.org"], START, Some(&feed)).await;
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    // 1 and 2 from memory (the round's limit is 3: it stops at the gap); then 3 to 5 walked;
    // then 6 from memory (5, held too, was passed).
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(deliver_due(&store, &recorder, now, &config(), Some(&held)).await.unwrap());
    }
    assert_eq!(rounds, [2, 3, 1]);
    assert_eq!(deliver_due(&store, &recorder, now, &config(), Some(&held)).await.unwrap(), 0);
    assert_eq!(recorder.delivered(), (1..=6).map(created).collect::<Vec<_>>());
    assert_eq!((held.served(), held.held()), (3, 0));
    assert_eq!(cursor(&store).await, 6);
}

/// Two nodes: the one whose writer handed the creations over did not deliver them; the other
/// one did. What the first holds is behind the cursor: dropped, never delivered again.
async fn creations_another_worker_delivered_are_dropped_and_not_delivered_again(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, _) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let (feed, held) = creation_feed();
    register_all(&store, &mut quota, &["a@x.org", "b@x.org", "c@x.org"], START, Some(&feed)).await;
    let now = START.plus_seconds(1);
    let other = Recorder::default();
    assert_eq!(deliver_due(&store, &other, now, &config(), None).await.unwrap(), 3);
    register_all(&store, &mut quota, &["d@x.org"], START, None).await;
    let recorder = Recorder::default();
    deliver_all_holding(&store, &recorder, now, &held).await;
    assert_eq!(recorder.delivered(), [created(4)]);
    assert_eq!((held.served(), held.held()), (0, 0));
    assert_eq!(cursor(&store).await, 4);
}

/// A stale owner's batch is fenced: its creation (number 2, as the new owner's) is never handed
/// over; the new owner's, decided later, is.
async fn a_fenced_batch_s_creation_is_not_handed_over(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut stale_quota, stale_epoch) = stored_event(&database, "race", &[("10K", 10)], 0).await;
    let id = event_id("race");
    let (feed, held) = creation_feed();
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), Some(feed));
    let (_, effects) = decide(&mut stale_quota, Command::Register(register("10K", "a@x.org")), START);
    submit(&sender, &id, stale_epoch, effects).await.unwrap();
    let current = store.load(&id).await.unwrap().unwrap();
    let mut current_quota = current.quota;
    let owner_at = START.plus_seconds(5);
    let (_, effects) =
        decide(&mut current_quota, Command::Register(register("10K", "owner@x.org")), owner_at);
    submit(&sender, &id, current.epoch, effects).await.unwrap();
    // Handed over after the owner's, the stale one would take its place in what is held.
    let (_, stale_effects) =
        decide(&mut stale_quota, Command::Register(register("10K", "stale@x.org")), START);
    assert_eq!(submit(&sender, &id, stale_epoch, stale_effects).await, Err(StoreError::Fenced));
    drop(sender);
    writer.closed().await;
    let now = START.plus_seconds(10);
    let claim = store.claim_creations(now, now.plus_seconds(1), 10, Some(&held)).await.unwrap();
    let [cursor] = claim.cursors.as_slice() else { panic!("one cursor: {claim:?}") };
    let created_at: Vec<(u64, Timestamp)> =
        cursor.creations.iter().map(|entry| (entry.registration.0, entry.created_at)).collect();
    assert_eq!(created_at, [(1, START), (2, owner_at)]);
    assert_eq!(held.served(), 2);
}
