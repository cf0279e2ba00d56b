//! The outbox delivery worker and the purge, on MariaDB and on SQLite: entries written by the
//! real write-behind are delivered once each, retried with backoff, dead after their attempts,
//! never delivered by two workers at once; rows past their retention are purged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kuota_engine::store::EventLoader;
use kuota_engine::{Command, Decision, EventQuota, ManualClock, Outcome, Timestamp};
use kuota_persist::outbox::{Deliver, DeliveryResult, OutboxConfig, OutboxWorker, deliver_due, never_busy};
use kuota_persist::store::{OutboxRow, SqlStore};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_id, keyed, on_both_databases, register, stored_event, submit,
};

on_both_databases!(
    every_entry_is_delivered_once_and_a_second_round_finds_nothing,
    a_failing_entry_is_retried_after_its_backoff_and_dead_after_its_attempts,
    two_workers_at_once_deliver_every_entry_exactly_once,
    an_entry_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_settle_it,
    the_purge_deletes_only_rows_past_their_retention,
    the_worker_task_delivers_in_the_background_and_stops,
    a_busy_store_defers_delivery_but_not_past_the_longest_deferral,
);

/// Records deliveries; fails the registrations listed in `failing`.
#[derive(Debug, Default)]
struct Recorder {
    delivered: Mutex<Vec<u64>>,
    attempts: Mutex<HashMap<u64, u32>>,
    failing: Vec<u64>,
}

impl Deliver for Recorder {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        Box::pin(async move {
            *self.attempts.lock().unwrap().entry(entry.id).or_default() += 1;
            // A real delivery waits for a remote party; let the other worker run meanwhile.
            tokio::task::yield_now().await;
            if self.failing.contains(&entry.registration.0) {
                return Err(format!("mail server refused registration {}", entry.registration.0));
            }
            self.delivered.lock().unwrap().push(entry.id);
            Ok(())
        })
    }
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

/// An event with `registrations` confirmed registrations (one outbox entry each), keyed, all
/// decided at `START`.
async fn event_with_entries(database: &TestDatabase, registrations: usize) -> (SqlStore, EventQuota) {
    let (store, mut quota, epoch) = stored_event(database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default());
    for n in 0..registrations {
        let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("key-{n}"), n as u64);
        let (_, effects) = decide(&mut quota, Command::Register(request), START);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
    (store, quota)
}

async fn statuses(store: &SqlStore) -> Vec<(u64, String, u32)> {
    let rows = store.outbox_page(100, None).await.unwrap();
    rows.into_iter().map(|row| (row.registration.0, row.status, row.attempts)).collect()
}

async fn every_entry_is_delivered_once_and_a_second_round_finds_nothing(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&database, 5).await;
    let recorder = Recorder::default();
    let now = START.plus_seconds(1);
    // Three per round (batch_max), oldest first.
    assert_eq!(deliver_due(&store, &recorder, now, &config()).await.unwrap(), 3);
    assert_eq!(deliver_due(&store, &recorder, now, &config()).await.unwrap(), 2);
    assert_eq!(deliver_due(&store, &recorder, now, &config()).await.unwrap(), 0);
    let mut delivered = recorder.delivered.lock().unwrap().clone();
    delivered.sort_unstable();
    delivered.dedup();
    assert_eq!(delivered.len(), 5);
    assert!(
        statuses(&store).await.iter().all(|(_, status, attempts)| status == "delivered" && *attempts == 1)
    );
}

async fn a_failing_entry_is_retried_after_its_backoff_and_dead_after_its_attempts(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&database, 2).await;
    let recorder = Recorder { failing: vec![2], ..Recorder::default() };
    let config = config();
    let mut now = START.plus_seconds(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 2);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (2, "pending".into(), 1)]);
    // Not due again before its backoff (10 s after the first failure)...
    now = now.plus_millis(9_999);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 0);
    // ...then tried again; the second failure waits twice as long.
    now = now.plus_millis(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 1);
    now = now.plus_seconds(19);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 0);
    now = now.plus_seconds(1);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 1);
    // The third attempt was the last: dead, kept, never claimed again.
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 1), (2, "dead".into(), 3)]);
    now = now.plus_seconds(3_600);
    assert_eq!(deliver_due(&store, &recorder, now, &config).await.unwrap(), 0);
    let attempts = recorder.attempts.lock().unwrap().values().copied().collect::<Vec<_>>();
    assert_eq!(attempts.iter().sum::<u32>(), 4);
}

async fn two_workers_at_once_deliver_every_entry_exactly_once(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&database, 30).await;
    let recorder = Arc::new(Recorder::default());
    let config = OutboxConfig { batch_max: 4, ..config() };
    let now = START.plus_seconds(1);
    let workers = (0..2).map(|_| {
        let (store, recorder) = (store.clone(), recorder.clone());
        tokio::spawn(async move {
            while deliver_due(&store, recorder.as_ref(), now, &config).await.unwrap() > 0 {}
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.unwrap();
    }
    let attempts = recorder.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 30);
    assert!(attempts.values().all(|count| *count == 1), "an entry was delivered twice: {attempts:?}");
    assert!(statuses(&store).await.iter().all(|(_, status, _)| status == "delivered"));
}

async fn an_entry_whose_claim_ran_out_goes_to_the_next_worker_and_the_late_one_cannot_settle_it(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&database, 1).await;
    let now = START.plus_seconds(1);
    // A worker claims the entry for one second and then stalls (or dies).
    let stalled = store.claim_outbox(now, now.plus_seconds(1), 10).await.unwrap();
    assert_eq!(stalled.entries.len(), 1);
    assert!(
        store.claim_outbox(now, now.plus_seconds(1), 10).await.unwrap().entries.is_empty(),
        "claimed twice"
    );
    // After the claim ran out, another worker delivers it.
    let recorder = Recorder::default();
    assert_eq!(deliver_due(&store, &recorder, now.plus_seconds(2), &config()).await.unwrap(), 1);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 2)]);
    // The stalled worker's late settlement changes nothing.
    let late = kuota_persist::store::Settlement::Retry { retry_at: now, error: "late".into() };
    let entry = stalled.entries[0].id;
    assert_eq!(store.settle_outbox(&stalled, &[(entry, late)]).await.unwrap(), 0);
    let delivered = kuota_persist::store::Settlement::Delivered;
    assert_eq!(store.settle_outbox(&stalled, &[(entry, delivered)]).await.unwrap(), 0);
    assert_eq!(statuses(&store).await, [(1, "delivered".into(), 2)]);
}

async fn the_purge_deletes_only_rows_past_their_retention(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota) = event_with_entries(&database, 5).await;
    let id = event_id("race");
    let retention_seconds = u64::from(quota.config().limits.idempotency_retention_seconds);
    let loaded = store.load(&id).await.unwrap().unwrap();
    quota = loaded.quota;
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default());
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
    // Deliver the first three entries at START + 1 s.
    let delivered_at = START.plus_seconds(1);
    deliver_due(&store, &Recorder::default(), delivered_at, &config()).await.unwrap();

    // Just before the first keys' retention ends nothing goes; just after, exactly those five.
    let edge = START.plus_seconds(retention_seconds);
    let kept = store.purge(edge, Timestamp::ZERO, 100).await.unwrap();
    assert_eq!(kept.idempotency_entries, 0);
    let purged = store.purge(edge.plus_millis(1), delivered_at, 100).await.unwrap();
    assert_eq!(purged.idempotency_entries, 5);
    assert_eq!(purged.outbox_entries, 0, "delivered entries are kept until their own retention");
    // Delivered entries (settled with available_at = their claim's end) go after theirs; pending
    // ones never.
    let purged = store.purge(edge, START.plus_seconds(3_600), 100).await.unwrap();
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
    let (store, _) = event_with_entries(&database, 4).await;
    let recorder = Arc::new(Recorder::default());
    let clock = Arc::new(ManualClock::new(START.plus_seconds(1)));
    let config = OutboxConfig { poll_interval: Duration::from_millis(10), ..config() };
    let worker = OutboxWorker::start(store.clone(), recorder.clone(), clock, never_busy(), config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.delivered.lock().unwrap().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the worker did not deliver within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), worker.stop()).await.expect("the worker stops");
    assert!(statuses(&store).await.iter().all(|(_, status, _)| status == "delivered"));
}

async fn a_busy_store_defers_delivery_but_not_past_the_longest_deferral(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&database, 2).await;
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
    let worker = OutboxWorker::start(store.clone(), recorder.clone(), clock.clone(), is_busy, config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recorder.attempts.lock().unwrap().is_empty(), "delivered while the store was busy");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    wait_for_deliveries(&recorder, 2).await;
    worker.stop().await;

    // Busy for good: one round still runs once the longest deferral has passed.
    let second_database = TestDatabase::create(backend).await;
    let (store, _) = event_with_entries(&second_database, 2).await;
    let recorder = Arc::new(Recorder::default());
    let config = OutboxConfig { defer_while_busy_max: Duration::from_millis(200), ..config };
    let always = Arc::new(|| true);
    let worker = OutboxWorker::start(store, recorder.clone(), clock, always, config);
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
