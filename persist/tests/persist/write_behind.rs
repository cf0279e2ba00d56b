//! The write-behind writer against MariaDB (and SQLite where it makes sense): driven by the
//! engine's real registry and actors, batching, graceful shutdown, the breaker, retries after a
//! lost connection, and a writer process killed with SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kuota_engine::actor::{Registry, RegistryConfig};
use kuota_engine::store::{EventLoader, StoreError};
use kuota_engine::{Command, Decision, EventQuota, ManualClock, Outcome, RegistrationId};
use kuota_persist::store::RowStatus;
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};
use sqlx::Connection;

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_config, event_id, keyed, mysql_server_url, on_both_databases,
    register, stored_event, submit, submit_later, waitlisting,
};

on_both_databases!(
    batches_of_different_events_commit_side_by_side_and_each_event_keeps_its_order,
    two_batches_of_one_event_overlap_and_commit_in_order,
    three_batches_of_one_event_overlap_and_commit_in_order,
    a_batch_whose_predecessor_did_not_commit_stores_nothing,
    submissions_sent_within_the_flush_interval_commit_in_one_transaction,
    a_batch_gathers_at_most_batch_size_max_effects,
    closing_every_sender_commits_everything_accepted_before_closed_resolves,
    a_load_waits_while_the_writer_finds_the_store_down_and_goes_on_when_it_answers,
);

/// A load does not try a store the writer finds down (each attempt abandoned at its deadline
/// would leave the store transactions to replay when it returns, holding the event row's lock
/// ahead of the next load): it waits for the writer, within the store's call deadline, and
/// goes on at once when the writer finds the store answering again.
async fn a_load_waits_while_the_writer_finds_the_store_down_and_goes_on_when_it_answers(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, _, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    store.health().set_answering(false);
    // On a paused clock: nothing answers the wait, so only its deadline can end it.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let refused = store.load(&id).await;
    let waited = started.elapsed();
    tokio::time::resume();
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    let late = waited.checked_sub(store.call_timeout()).expect("not before the deadline");
    assert!(late <= Duration::from_millis(1), "ended {late:?} after the deadline");
    assert_eq!(
        store.event_progress(&id).await.unwrap().unwrap().epoch,
        epoch,
        "the refused load took no epoch"
    );

    let waiting = tokio::spawn({
        let (store, id) = (store.clone(), id.clone());
        async move { store.load(&id).await.map(|loaded| loaded.map(|loaded| loaded.epoch)) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "the load waits while the store does not answer");
    store.health().set_answering(true);
    assert_eq!(waiting.await.unwrap(), Ok(Some(epoch + 1)));
}

/// Registrations racing for the seats in the engine-driven test.
const CONCURRENT_REGISTRATIONS: usize = 400;

/// Seats they race for.
const SEATS: u32 = 25;

#[actix_rt::test]
async fn concurrent_registrations_through_the_engine_store_exactly_capacity_on_mariadb() {
    concurrent_registrations_store_exactly_capacity_and_survive_a_restart(Backend::Mysql).await;
}

#[actix_rt::test]
async fn concurrent_registrations_through_the_engine_store_exactly_capacity_on_sqlite() {
    concurrent_registrations_store_exactly_capacity_and_survive_a_restart(Backend::Sqlite).await;
}

/// The engine's registry and actors, with `SqlStore` as loader and the real writer: N
/// registrations for few seats give exactly that many confirmed rows, and a restart (a new
/// registry, a new load) publishes the same counters.
async fn concurrent_registrations_store_exactly_capacity_and_survive_a_restart(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let clock = Arc::new(ManualClock::new(START));
    let store = database.store().await.with_clock(clock.clone());
    let config = event_config("race", &[("10K", SEATS)], 0);
    assert!(store.create_event(&config, START).await.unwrap());
    let id = config.id.clone();

    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let registry = Registry::new(RegistryConfig::default(), Arc::new(store.clone()), sender, clock.clone());
    let event = registry.event(&id).await.unwrap().expect("the event is stored");
    let attempts: Vec<_> = (0..CONCURRENT_REGISTRATIONS)
        .map(|n| {
            let event = event.clone();
            let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("key-{n}"), n as u64);
            actix_rt::spawn(async move { event.register(request).await })
        })
        .collect();
    let mut confirmed = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap().unwrap() {
            Outcome::Decided(Decision::Confirmed { registration }) => confirmed.push(registration),
            Outcome::Decided(Decision::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(confirmed.len(), SEATS as usize);
    let rows = store.registrations_page(&id, Some(RowStatus::Confirmed), 500, None).await.unwrap();
    let mut stored: Vec<_> = rows.iter().map(|row| row.id).collect();
    confirmed.sort_unstable();
    stored.sort_unstable();
    assert_eq!(stored, confirmed, "every acknowledged registration is stored, and nothing else");
    let counters = event.counters().snapshot();
    let stats = writer.stats();
    assert!(stats.batches_committed < CONCURRENT_REGISTRATIONS as u64, "submissions were batched: {stats:?}");
    drop(event);
    drop(registry);

    let (sender, second_writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let restarted = Registry::new(RegistryConfig::default(), Arc::new(store.clone()), sender, clock.clone());
    let event = restarted.event(&id).await.unwrap().unwrap();
    assert_eq!(event.counters().snapshot(), counters);
    assert_eq!(store.event_progress(&id).await.unwrap().unwrap().epoch, 2);
    // Every keyed decision, sold out ones included, replays after the restart.
    let replayed = event.register(keyed(register("10K", "r399@x.org"), "key-399", 399)).await.unwrap();
    assert!(matches!(replayed, Outcome::Replayed(_)), "{replayed:?}");
    drop(event);
    drop(restarted);
    for writer in [writer, second_writer] {
        tokio::time::timeout(Duration::from_secs(10), writer.closed())
            .await
            .expect("the writer closes once the registry's actors are gone");
    }
}

async fn submissions_sent_within_the_flush_interval_commit_in_one_transaction(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let config = WriteBehindConfig { flush_interval_ms: 300, ..WriteBehindConfig::default() };
    let (sender, writer) = WriteBehind::start(store.clone(), config, None);
    let mut answers = Vec::new();
    for n in 0..50 {
        let (_, effects) =
            decide(&mut quota, Command::Register(register("10K", &format!("r{n}@x.org"))), START);
        answers.push(submit_later(&sender, &id, epoch, effects).await);
    }
    assert!(writer.queue_depth() > 0, "the batch is still gathering");
    for answer in answers {
        assert_eq!(answer.await.unwrap(), Ok(()));
    }
    let stats = writer.stats();
    assert_eq!((stats.batches_committed, stats.last_batch_effects, stats.effects_committed), (1, 50, 50));
    assert_eq!(stats.commit_latency_micros.count(), 1);
    assert_eq!(stats.batch_effects.quantile_upper_bound(1.0), Some(50));
    drop(sender);
    writer.closed().await;
}

/// Events written at once in the pipelining test.
const PIPELINED_EVENTS: usize = 4;

async fn batches_of_different_events_commit_side_by_side_and_each_event_keeps_its_order(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let mut events = Vec::new();
    for index in 0..PIPELINED_EVENTS {
        let config = event_config(&format!("race{index}"), &[("10K", 50)], 0);
        assert!(store.create_event(&config, START).await.unwrap());
        let loaded = store.load(&config.id).await.unwrap().unwrap();
        events.push((config.id, loaded.quota, loaded.epoch));
    }
    // Small batches and four connections, so that batches of different events overlap.
    let writer_config = WriteBehindConfig {
        flush_interval_ms: 1,
        batch_size_max: 16,
        connections_max: 4,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), writer_config, None);
    let mut answers = Vec::new();
    // Blocks of one batch per event, so that a full batch of each event waits while the
    // previous event's batch commits.
    for block in 0..5 {
        for (id, quota, epoch) in &mut events {
            for n in block * 16..(block + 1) * 16 {
                // Waitlisting past the 50 seats, and cancelling now and then: later effects
                // depend on earlier ones, so an event's batches must commit in order.
                let command = if n % 10 == 9 {
                    Command::Cancel { registration: RegistrationId(n as u64 - 8) }
                } else {
                    Command::Register(waitlisting(register("10K", &format!("r{n}@x.org"))))
                };
                let (_, effects) = decide(quota, command, START);
                answers.push(submit_later(&sender, id, *epoch, effects).await);
            }
        }
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap(), Ok(()));
    }
    for (id, quota, _) in &events {
        let reloaded = store.load(id).await.unwrap().unwrap().quota;
        assert_eq!(reloaded.availability(), quota.availability(), "event {id}");
        assert_eq!(reloaded.last_seq(), quota.last_seq());
        let audit = store.audit_page(id, 500, None).await.unwrap();
        let seqs: Vec<u64> = audit.iter().map(|row| row.seq.0).collect();
        assert_eq!(seqs, (1..=quota.last_seq().0).collect::<Vec<_>>(), "event {id} has every effect once");
    }
    let overlapped = writer.stats().commits_in_flight_max;
    match backend {
        Backend::Mysql => assert!(overlapped >= 2, "batches never overlapped: {overlapped}"),
        Backend::Sqlite => assert_eq!(overlapped, 1, "SQLite has one writer at a time"),
    }
    drop(sender);
    writer.closed().await;
}

/// Submissions of one event in the pipelining test.
const PIPELINED_SUBMISSIONS: usize = 160;

/// With two connections, a batch of an event starts while the one before it commits (once
/// that one has written its rows): the later effects depend on the earlier ones, and every
/// effect must be stored once, in order.
async fn two_batches_of_one_event_overlap_and_commit_in_order(backend: Backend) {
    batches_of_one_event_overlap_and_commit_in_order(backend, 2).await;
}

/// The writer's default: up to three batches of one event in flight, each started once those
/// before it have written their rows.
async fn three_batches_of_one_event_overlap_and_commit_in_order(backend: Backend) {
    batches_of_one_event_overlap_and_commit_in_order(backend, WriteBehindConfig::default().connections_max)
        .await;
}

async fn batches_of_one_event_overlap_and_commit_in_order(backend: Backend, connections_max: u32) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 60)], 0).await;
    let id = event_id("race");
    let writer_config = WriteBehindConfig {
        flush_interval_ms: 1,
        batch_size_max: 16,
        connections_max,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), writer_config, None);
    let mut answers = Vec::new();
    for n in 0..PIPELINED_SUBMISSIONS {
        // Waitlisting past the seats and cancelling now and then, which promotes from the
        // waitlist: each batch changes rows the batch before it wrote.
        let command = if n % 10 == 9 {
            Command::Cancel { registration: RegistrationId(n as u64 - 8) }
        } else {
            Command::Register(waitlisting(register("10K", &format!("r{n}@x.org"))))
        };
        let (_, effects) = decide(&mut quota, command, START);
        answers.push(submit_later(&sender, &id, epoch, effects).await);
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap(), Ok(()));
    }
    let reloaded = store.load(&id).await.unwrap().unwrap().quota;
    assert_eq!(reloaded.availability(), quota.availability());
    assert_eq!(reloaded.last_seq(), quota.last_seq());
    let audit = store.audit_page(&id, 500, None).await.unwrap();
    let seqs: Vec<u64> = audit.iter().map(|row| row.seq.0).collect();
    assert_eq!(seqs, (1..=quota.last_seq().0).collect::<Vec<_>>(), "every effect once, in order");
    let stats = writer.stats();
    assert!(stats.batches_committed >= 5, "{stats:?}");
    match backend {
        // Whether the third one starts depends on how fast the first two write: two at least.
        Backend::Mysql => assert!(
            (2..=u64::from(connections_max)).contains(&stats.commits_in_flight_max),
            "batches never overlapped, or more than {connections_max} did: {stats:?}"
        ),
        Backend::Sqlite => assert_eq!(stats.commits_in_flight_max, 1, "SQLite has one writer at a time"),
    }
    drop(sender);
    writer.closed().await;
}

/// What keeps overlapping batches in order: a batch commits only on top of the one before it.
/// Sent alone, while the effects before it were never stored, it stores nothing; once they are,
/// it commits.
async fn a_batch_whose_predecessor_did_not_commit_stores_nothing(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 10)], 0).await;
    let id = event_id("race");
    let (_, first) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let (_, second) = decide(&mut quota, Command::Register(register("10K", "b@x.org")), START);
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    assert!(submit(&sender, &id, epoch, second.clone()).await.is_err(), "the second before the first");
    assert!(store.registrations_page(&id, None, 10, None).await.unwrap().is_empty());
    // The failure poisoned this epoch; a new owner (epoch) of the same stored state decides the
    // same effects, and sends both, in order.
    let reloaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        reloaded.quota.availability(),
        EventQuota::new(event_config("race", &[("10K", 10)], 0)).unwrap().availability()
    );
    assert_eq!(submit(&sender, &id, reloaded.epoch, first).await, Ok(()));
    assert_eq!(submit(&sender, &id, reloaded.epoch, second).await, Ok(()));
    let emails: Vec<String> = store
        .registrations_page(&id, None, 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.email)
        .collect();
    assert_eq!(emails, ["a@x.org", "b@x.org"]);
    drop(sender);
    writer.closed().await;
}

async fn a_batch_gathers_at_most_batch_size_max_effects(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let writer_config =
        WriteBehindConfig { flush_interval_ms: 300, batch_size_max: 10, ..WriteBehindConfig::default() };
    let (sender, writer) = WriteBehind::start(store.clone(), writer_config, None);
    let mut answers = Vec::new();
    for n in 0..35 {
        let (_, effects) =
            decide(&mut quota, Command::Register(register("10K", &format!("r{n}@x.org"))), START);
        answers.push(submit_later(&sender, &id, epoch, effects).await);
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap(), Ok(()));
    }
    let stats = writer.stats();
    assert_eq!(stats.effects_committed, 35);
    assert!(stats.batches_committed >= 4, "{stats:?}");
    assert_eq!(stats.batch_effects.quantile_upper_bound(1.0), Some(10), "{stats:?}");
    drop(sender);
    writer.closed().await;
}

async fn closing_every_sender_commits_everything_accepted_before_closed_resolves(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 1_000)], 0).await;
    let id = event_id("race");
    // A long flush interval: only the closing queue makes the last batch start early.
    let writer_config =
        WriteBehindConfig { flush_interval_ms: 60_000, batch_size_max: 64, ..Default::default() };
    let (sender, writer) = WriteBehind::start(store.clone(), writer_config, None);
    let mut answers = Vec::new();
    for n in 0..300 {
        let (_, effects) =
            decide(&mut quota, Command::Register(register("10K", &format!("r{n}@x.org"))), START);
        answers.push(submit_later(&sender, &id, epoch, effects).await);
    }
    drop(sender);
    tokio::time::timeout(Duration::from_secs(30), writer.closed()).await.expect("closed resolves promptly");
    for mut answer in answers {
        assert_eq!(answer.try_recv(), Ok(Ok(())), "answered before closed resolved");
    }
    let stored = store.status_counts(&id).await.unwrap();
    assert_eq!(stored[0].count, 300);
}

/// Runs raw SQL on the test server (outside any store).
async fn server_sql(sql: String) {
    let mut server = sqlx::MySqlConnection::connect(&mysql_server_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut server).await.unwrap();
}

#[tokio::test]
async fn a_store_that_keeps_failing_opens_the_breaker_and_a_working_probe_closes_it() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let writer_config = WriteBehindConfig {
        flush_interval_ms: 1,
        breaker_failures_max: 3,
        breaker_probe_interval_ms: 100,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), writer_config, None);
    // The store loses its tables underneath the writer.
    server_sql(format!("DROP DATABASE {}", database.name())).await;
    // Three events, so that the poison of the first failure does not spare the store the others.
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "r@x.org")), START);
    let failed = submit(&sender, &id, epoch, effects).await;
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(!writer.breaker_open(), "one failure is not a pattern");
    for other in ["second", "third"] {
        let failed = submit(&sender, &event_id(other), 1, effects_of_an_unstored_event(other)).await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    }
    assert!(writer.breaker_open());
    assert!(!store.health().answering(), "loads wait for the writer's probe");
    let failed_batches = writer.stats().batches_failed;
    assert_eq!(failed_batches, 3);
    let started = Instant::now();
    let refused = submit(&sender, &event_id("fourth"), 1, effects_of_an_unstored_event("fourth")).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "refused at once: {:?}", started.elapsed());
    assert_eq!(writer.stats().batches_failed, failed_batches, "the refusal did not touch the store");

    // The store comes back; the probe notices and the breaker closes.
    server_sql(format!("CREATE DATABASE {}", database.name())).await;
    let restored = database.store().await;
    let fresh = event_config("fresh", &[("10K", 100)], 0);
    assert!(restored.create_event(&fresh, START).await.unwrap());
    let fresh_loaded = restored.load(&fresh.id).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.breaker_open() {
        assert!(Instant::now() < deadline, "the breaker stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.health().answering(), "loads go on once the probe works");
    let mut fresh_quota = fresh_loaded.quota;
    let (_, effects) = decide(&mut fresh_quota, Command::Register(register("10K", "back@x.org")), START);
    assert_eq!(submit(&sender, &fresh.id, fresh_loaded.epoch, effects).await, Ok(()));
    drop(sender);
    writer.closed().await;
}

/// A registration of an event the dropped store never had: the store fails before it could
/// tell that the event is missing.
fn effects_of_an_unstored_event(id: &str) -> Vec<kuota_engine::Effect> {
    let mut quota = kuota_engine::EventQuota::new(event_config(id, &[("10K", 1)], 0)).unwrap();
    decide(&mut quota, Command::Register(register("10K", "o@x.org")), START).1
}

#[tokio::test]
async fn a_connection_lost_in_the_middle_of_a_batch_is_retried_and_the_submission_commits() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");

    // Hold the event row so that the writer's batch waits inside its transaction.
    let database_url = database.url.clone();
    let mut holder = sqlx::MySqlConnection::connect(&database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT id FROM events WHERE id = 'race' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let answer = submit_later(&sender, &id, epoch, effects).await;

    // Find the writer's waiting connection and kill it.
    let mut admin = sqlx::MySqlConnection::connect(&mysql_server_url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiting = loop {
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM information_schema.processlist WHERE db = ? \
             AND (info LIKE 'SELECT id, epoch%' OR info LIKE 'UPDATE events SET last_seq%')",
        )
        .bind(database.name())
        .fetch_optional(&mut admin)
        .await
        .unwrap();
        if let Some((id,)) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "the writer's batch never waited on the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {waiting}")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();

    assert_eq!(answer.await.unwrap(), Ok(()));
    assert!(writer.stats().retries >= 1, "{:?}", writer.stats());
    assert_eq!(store.registration(&id, RegistrationId(1)).await.unwrap().unwrap().email, "a@x.org");
    drop(sender);
    writer.closed().await;
}

/// The writer keeps its connection between batches, unpinged (`HeldConnections`): one the
/// server closed meanwhile must fail only an attempt, never the submission.
#[tokio::test]
async fn a_kept_connection_the_server_closed_between_batches_is_replaced_and_the_submission_commits() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    assert_eq!(submit(&sender, &id, epoch, effects).await, Ok(()));
    assert_eq!(writer.stats().retries, 0);

    // Every connection to the test database, the writer's kept one among them, is closed.
    let mut admin = sqlx::MySqlConnection::connect(&mysql_server_url()).await.unwrap();
    let connections: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(database.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!connections.is_empty());
    for (connection,) in connections {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {connection}")))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "b@x.org")), START);
    assert_eq!(submit(&sender, &id, epoch, effects).await, Ok(()));
    assert!(writer.stats().retries >= 1, "the kept connection was not used: {:?}", writer.stats());
    assert_eq!(store.registration(&id, RegistrationId(2)).await.unwrap().unwrap().email, "b@x.org");
    drop(sender);
    writer.closed().await;
}

/// Rounds of the crash test: each starts a writer process and (but for the last) kills it.
const CRASH_ROUNDS: usize = 4;

/// Registrations each writer process attempts.
const CRASH_REGISTRATIONS_PER_ROUND: usize = 3_000;

/// A killed writer process is killed after this many acknowledgements (a seeded random number in
/// the range). Counting acknowledgements rather than milliseconds makes the kill land mid-run on a
/// fast machine and a slow one alike: a writer can acknowledge at most one in-flight window
/// (64 decisions) past the count before the kill, far below the 3,000 it attempts.
const CRASH_KILL_AFTER_ACKS: (usize, usize) = (20, 500);

/// How long one writer process may take (to reach its kill point, or for the last one to finish).
const CRASH_ROUND_SECONDS_MAX: u64 = 60;

/// A SplitMix64 step: a small, seeded, reproducible source of kill points.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut mixed = *state;
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_sigkill_of_the_writer_and_no_category_is_oversold() {
    let seed = std::env::var("KUOTA_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| u64::from_ne_bytes(kuota_persist::random::random_bytes::<8>()));
    println!("crash test seed: {seed} (set KUOTA_CRASH_SEED={seed} to replay the kill points)");
    let mut random = seed;

    let database = TestDatabase::create(Backend::Mysql).await;
    let store = database.store().await;
    let capacities = [("10K", 1_500u32), ("21K", 1_000u32)];
    let config = event_config("race", &capacities, 0);
    assert!(store.create_event(&config, START).await.unwrap());

    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut killed_mid_run = 0;
    for round in 0..CRASH_ROUNDS {
        let last = round + 1 == CRASH_ROUNDS;
        let (low, high) = CRASH_KILL_AFTER_ACKS;
        let kill_after = (!last).then(|| low + (next_random(&mut random) as usize) % (high - low));
        let mut child = Process::new(env!("CARGO_BIN_EXE_kuota-crash-writer"))
            .args([
                database.url.as_str(),
                "race",
                &format!("round{round}"),
                &CRASH_REGISTRATIONS_PER_ROUND.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the crash writer binary starts");
        let stdout = child.stdout.take().expect("stdout was piped");
        // Lines are read on a thread as they come, so that nothing acknowledged before the kill
        // is lost in a pipe buffer; they reach the test through a channel.
        let (line_sender, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(CRASH_ROUND_SECONDS_MAX);
        let mut round_acks = 0;
        let mut done = false;
        let mut killed = false;
        loop {
            let line = match lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("writer process {round} ran past {CRASH_ROUND_SECONDS_MAX} s");
                    }
                    continue;
                }
                // The process closed its output: it finished, failed or was killed.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut words = line.split(' ');
            match words.next() {
                Some("ACK") => {
                    let number: u64 =
                        words.next().and_then(|number| number.parse().ok()).expect("ACK <number> <email>");
                    let email = words.next().expect("ACK <number> <email>").to_owned();
                    assert!(
                        acknowledged.insert(number, email).is_none(),
                        "registration {number} acknowledged twice"
                    );
                    round_acks += 1;
                }
                Some("DONE") => done = true,
                _ => {}
            }
            if !killed && kill_after.is_some_and(|kill_after| round_acks >= kill_after) {
                // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no rollback runs.
                // Lines already in the pipe are still read (and counted) until it closes.
                let _ = child.kill();
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        reader.join().expect("the reader thread does not panic");
        if last {
            assert!(done && status.success(), "the last writer process failed: {status}");
        } else if !done {
            killed_mid_run += 1;
        }
    }
    assert!(killed_mid_run >= 1, "no writer was killed before it finished: the test proved nothing");
    assert!(!acknowledged.is_empty());

    let id = event_id("race");
    for (number, email) in &acknowledged {
        let row = store.registration(&id, RegistrationId(*number)).await.unwrap();
        let row = row.unwrap_or_else(|| panic!("acknowledged registration {number} ({email}) is not stored"));
        assert_eq!((&row.email, row.status), (email, RowStatus::Confirmed));
    }
    for (code, capacity) in capacities {
        let taken: u64 = store
            .status_counts(&id)
            .await
            .unwrap()
            .iter()
            .filter(|count| {
                count.category.as_str() == code
                    && matches!(count.status, RowStatus::Confirmed | RowStatus::Held)
            })
            .map(|count| count.count)
            .sum();
        assert!(taken <= u64::from(capacity), "category {code} holds {taken} of {capacity} seats");
    }
    // Recovery recounts everything and refuses an oversold category.
    let reloaded = store.load(&id).await.unwrap().unwrap();
    let confirmed: u32 = reloaded.quota.availability().iter().map(|category| category.confirmed).sum();
    assert!(confirmed as usize >= acknowledged.len());
}

/// Opens a transaction on its own connection that holds the event row's lock until dropped or
/// rolled back: a store that does not commit, without stopping the shared server.
async fn hold_event_row(database: &TestDatabase, event: &str) -> sqlx::MySqlConnection {
    let mut holder = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT id FROM events WHERE id = '{event}' FOR UPDATE"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    holder
}

/// Waits, within `limit`, until `condition` holds.
async fn eventually(limit: Duration, what: &str, condition: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_commit_older_than_the_stall_threshold_stalls_the_writer_until_it_commits() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let config = WriteBehindConfig {
        stall_threshold_ms: 100,
        commit_timeout_ms: 10_000,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), config, None);
    assert!(!writer.stalled());

    let mut holder = hold_event_row(&database, "race").await;
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let answer = submit_later(&sender, &id, epoch, effects).await;
    eventually(Duration::from_secs(2), "the writer counts as stalled", || writer.stalled()).await;
    assert!(writer.oldest_commit_age() >= Duration::from_millis(100));

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(answer.await.unwrap(), Ok(()));
    assert!(!writer.stalled(), "the commit went through: no longer stalled");
    assert_eq!(writer.oldest_commit_age(), Duration::ZERO);
    assert_eq!(writer.stats().retries, 0, "waited, not cut short");
    drop(sender);
    writer.closed().await;
}

/// A commit that does not answer within `commit_timeout_ms` is cut short (its connection
/// closed), the writer counts as stalled from that moment, and the next attempt, on a fresh
/// connection, finds out what is stored and commits the rest.
#[tokio::test]
async fn a_commit_that_does_not_answer_in_time_is_cut_short_and_tried_again_on_a_fresh_connection() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    // The in-flight age alone would not stall it: only the timeout does.
    let config = WriteBehindConfig {
        commit_timeout_ms: 200,
        stall_threshold_ms: 60_000,
        commit_attempts_max: 3,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), config, None);

    let mut holder = hold_event_row(&database, "race").await;
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let answer = submit_later(&sender, &id, epoch, effects).await;
    let waited =
        eventually(Duration::from_secs(2), "the timed-out commit stalls the writer", || writer.stalled())
            .await;
    assert!(waited >= Duration::from_millis(150), "not before the commit's deadline: {waited:?}");

    // The store answers again before the next attempt.
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(answer.await.unwrap(), Ok(()));
    assert!(writer.stats().retries >= 1, "{:?}", writer.stats());
    assert!(!writer.stalled(), "a commit that worked clears the stall");
    assert_eq!(store.registration(&id, RegistrationId(1)).await.unwrap().unwrap().email, "a@x.org");
    drop(sender);
    writer.closed().await;
}

/// When every attempt times out the batch fails (its decisions are rolled back by the actor,
/// never acknowledged), and the writer stays stalled until a probe finds the store answering.
#[tokio::test]
async fn a_batch_whose_every_attempt_times_out_fails_and_a_probe_ends_the_stall() {
    let database = TestDatabase::create(Backend::Mysql).await;
    let (store, mut quota, epoch) = stored_event(&database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let config = WriteBehindConfig {
        commit_timeout_ms: 150,
        stall_threshold_ms: 60_000,
        commit_attempts_max: 2,
        breaker_probe_interval_ms: 50,
        ..WriteBehindConfig::default()
    };
    let (sender, writer) = WriteBehind::start(store.clone(), config, None);
    let mut holder = hold_event_row(&database, "race").await;
    let (_, effects) = decide(&mut quota, Command::Register(register("10K", "a@x.org")), START);
    let failed = submit(&sender, &id, epoch, effects).await;
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(writer.stalled(), "the store did not commit");
    // A probe reads, which the row lock does not block: the stall ends within a few ticks.
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    eventually(Duration::from_secs(2), "a probe ends the stall", || !writer.stalled()).await;
    assert!(store.registration(&id, RegistrationId(1)).await.unwrap().is_none(), "nothing was committed");
    drop(sender);
    writer.closed().await;
}
