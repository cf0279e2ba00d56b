//! The actor shell through the registry, with the in-memory store as its writer: answers come
//! only after commit, failures roll back, and full queues refuse at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use kuota_engine::actor::{ActorError, EventHandle, Registry, RegistryConfig};
use kuota_engine::memory::{MemoryStore, StoredStatus};
use kuota_engine::store::submission_channel;
use kuota_engine::{ActiveStatus, Clock, Decision, EventConfig, EventId, ManualClock, Outcome, Timestamp};

use super::support::{START, event_config, register};

/// A clock whose reads wait while its gate is closed: it holds an event actor inside a
/// decision, which is the only way to let its mailbox fill deterministically.
#[derive(Debug, Default)]
struct GatedClock {
    closed: AtomicBool,
    reads: AtomicBool,
}

impl Clock for GatedClock {
    fn now(&self) -> Timestamp {
        self.reads.store(true, Ordering::SeqCst);
        // This runs on the actor's arbiter thread: blocking it is the point.
        while self.closed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        START
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    registry: Registry,
}

fn fixture(
    config: EventConfig,
    queue_capacity: usize,
    registry_config: RegistryConfig,
    clock: Arc<dyn Clock>,
) -> Fixture {
    let store = MemoryStore::new();
    assert!(store.create_event(config));
    let (submissions, receiver) = submission_channel(queue_capacity);
    actix_rt::spawn(store.clone().run_writer(receiver));
    let registry = Registry::new(registry_config, store.clone(), submissions, clock);
    Fixture { store, registry }
}

fn manual(config: EventConfig) -> (Fixture, ManualClock) {
    let clock = ManualClock::new(START);
    (fixture(config, 1_024, RegistryConfig::default(), Arc::new(clock.clone())), clock)
}

async fn handle(fixture: &Fixture) -> EventHandle {
    fixture.registry.event(&EventId::parse("race").unwrap()).await.unwrap().expect("the event is stored")
}

/// Polls a future once: `Some` when it finished without waiting.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn confirmed_rows(fixture: &Fixture) -> usize {
    let rows = fixture.store.registrations(&EventId::parse("race").unwrap());
    rows.iter().filter(|(_, row)| row.status == StoredStatus::Active(ActiveStatus::Confirmed)).count()
}

#[actix_rt::test]
async fn many_concurrent_registrations_for_few_seats_give_exactly_capacity_successes() {
    let (fixture, _clock) = manual(event_config(&[("10K", 25)], 0));
    let event = handle(&fixture).await;
    let attempts = (0..400).map(|n| {
        let event = event.clone();
        actix_rt::spawn(async move { event.register(register("10K", &format!("r{n}@x.org"))).await })
    });
    let mut confirmed = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.unwrap().unwrap() {
            Outcome::Decided(Decision::Confirmed { .. }) => confirmed += 1,
            Outcome::Decided(Decision::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(confirmed, 25);
    assert_eq!(confirmed_rows(&fixture), 25, "every acknowledged registration is in the store");
    assert_eq!(event.counters().snapshot()[0].available, 0);
}

#[actix_rt::test]
async fn a_caller_is_answered_only_after_the_writer_commits() {
    let (fixture, _clock) = manual(event_config(&[("10K", 5)], 0));
    let event = handle(&fixture).await;
    fixture.store.stall();
    let waiting = actix_rt::spawn({
        let event = event.clone();
        async move { event.register(register("10K", "a@x.org")).await }
    });
    // A negative can only be shown by waiting a while: nothing may answer while stalled.
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "answered before the store committed");
    assert_eq!(confirmed_rows(&fixture), 0);
    fixture.store.resume();
    let outcome = waiting.await.unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Decided(Decision::Confirmed { .. })));
    assert_eq!(confirmed_rows(&fixture), 1);
}

#[actix_rt::test]
async fn a_failing_writer_rolls_back_and_the_seat_is_sold_again_later() {
    let (fixture, _clock) = manual(event_config(&[("10K", 1)], 0));
    let event = handle(&fixture).await;
    fixture.store.fail_next(1);
    let failed = event.register(register("10K", "a@x.org")).await;
    assert!(matches!(failed, Err(ActorError::StoreFailed(_))), "{failed:?}");
    // The actor reloads the event from the store; until then it answers `Recovering`.
    let mut outcome = Err(ActorError::Recovering);
    for _ in 0..100 {
        outcome = event.register(register("10K", "b@x.org")).await;
        if outcome != Err(ActorError::Recovering) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        outcome,
        Ok(Outcome::Decided(Decision::Confirmed { registration: kuota_engine::RegistrationId(1) }))
    );
    let rows = fixture.store.registrations(&EventId::parse("race").unwrap());
    assert_eq!(rows.len(), 1, "the rolled-back registration never reached the store");
    assert_eq!(rows[0].1.registrant.as_str(), "b@x.org");
}

#[actix_rt::test]
async fn a_full_mailbox_answers_overloaded_at_once() {
    let clock = Arc::new(GatedClock::default());
    let registry_config = RegistryConfig { arbiters: 1, mailbox_capacity_max: 8 };
    let fixture = fixture(event_config(&[("10K", 100)], 0), 1_024, registry_config, clock.clone());
    let event = handle(&fixture).await;
    clock.closed.store(true, Ordering::SeqCst);
    let first = actix_rt::spawn({
        let event = event.clone();
        async move { event.register(register("10K", "first@x.org")).await }
    });
    while !clock.reads.load(Ordering::SeqCst) {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    // The actor is now held inside the first decision; eight more messages fill its mailbox.
    let queued: Vec<_> = (0..8)
        .map(|n| {
            let event = event.clone();
            actix_rt::spawn(async move { event.register(register("10K", &format!("q{n}@x.org"))).await })
        })
        .collect();
    while event.mailbox_depth() < 8 {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    let refused = poll_once(event.register(register("10K", "late@x.org")));
    assert_eq!(refused, Some(Err(ActorError::Overloaded)), "a full mailbox must refuse without waiting");
    clock.closed.store(false, Ordering::SeqCst);
    assert!(first.await.unwrap().is_ok());
    for waiting in queued {
        assert!(matches!(waiting.await.unwrap(), Ok(Outcome::Decided(Decision::Confirmed { .. }))));
    }
}

#[actix_rt::test]
async fn a_full_writer_queue_answers_overloaded() {
    let clock = Arc::new(ManualClock::new(START));
    let fixture = fixture(event_config(&[("10K", 100)], 0), 2, RegistryConfig::default(), clock);
    let event = handle(&fixture).await;
    fixture.store.stall();
    // One request per mailbox burst (an actor sends one submission per burst), so each needs
    // its own slot in the writer's queue.
    let mut attempts = Vec::new();
    for n in 0..6 {
        let event = event.clone();
        attempts.push(actix_rt::spawn(async move {
            event.register(register("10K", &format!("r{n}@x.org"))).await
        }));
        actix_rt::time::sleep(Duration::from_millis(30)).await;
    }
    let mut overloaded = 0;
    // The writer holds one submission and its queue two more; at least three must be refused.
    for _ in 0..200 {
        overloaded = attempts.iter().filter(|attempt| attempt.is_finished()).count();
        if overloaded >= 3 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(overloaded >= 3, "only {overloaded} refused");
    fixture.store.resume();
    let results: Vec<_> = futures_join(attempts).await;
    assert!(results.iter().filter(|result| **result == Err(ActorError::Overloaded)).count() >= 3);
    assert_eq!(confirmed_rows(&fixture), results.iter().filter(|result| result.is_ok()).count());
}

async fn futures_join<T: 'static>(handles: Vec<actix_rt::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[actix_rt::test]
async fn a_hold_expires_through_the_actor_timer_and_its_seat_returns() {
    let (fixture, clock) = manual(event_config(&[("10K", 1)], 1));
    let event = handle(&fixture).await;
    let held = event.register(register("10K", "a@x.org")).await.unwrap();
    assert!(matches!(held, Outcome::Decided(Decision::Held { .. })));
    assert_eq!(event.counters().snapshot()[0].held, 1);
    clock.advance_millis(1_000);
    for _ in 0..100 {
        if event.counters().snapshot()[0].available == 1 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(event.counters().snapshot()[0].available, 1, "the hold did not expire within 2 s");
    let rows = fixture.store.registrations(&EventId::parse("race").unwrap());
    assert_eq!(rows[0].1.status, StoredStatus::Ended(kuota_engine::EndedStatus::Expired));
}

#[actix_rt::test]
async fn an_unknown_event_is_none_and_leaves_nothing_behind() {
    let (fixture, _clock) = manual(event_config(&[("10K", 1)], 0));
    let unknown = fixture.registry.event(&EventId::parse("nope").unwrap()).await.unwrap();
    assert!(unknown.is_none());
    assert_eq!(fixture.registry.owned_events(), 0);
}

#[actix_rt::test]
async fn concurrent_first_uses_start_one_actor() {
    let (fixture, _clock) = manual(event_config(&[("10K", 1)], 0));
    let id = EventId::parse("race").unwrap();
    let (first, second) = tokio::join!(fixture.registry.event(&id), fixture.registry.event(&id));
    assert!(first.unwrap().is_some() && second.unwrap().is_some());
    assert_eq!(fixture.store.epoch(&id), Some(1), "the event was loaded once");
    assert_eq!(fixture.registry.owned_events(), 1);
}

/// A clock that notes which thread reads it: the actor reads it inside every decision.
#[derive(Debug, Default)]
struct ThreadNotingClock {
    reader: std::sync::Mutex<Option<std::thread::ThreadId>>,
}

impl Clock for ThreadNotingClock {
    fn now(&self) -> Timestamp {
        *self.reader.lock().unwrap() = Some(std::thread::current().id());
        START
    }
}

#[actix_rt::test]
async fn without_arbiters_actors_decide_on_the_thread_that_built_the_registry() {
    let clock = Arc::new(ThreadNotingClock::default());
    let config = RegistryConfig { arbiters: 0, ..RegistryConfig::default() };
    let fixture = fixture(event_config(&[("10K", 5)], 0), 1_024, config, clock.clone());
    let event = handle(&fixture).await;
    // From another thread, as an HTTP worker would ask.
    let asked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(event.register(register("10K", "a@x.org")))
    });
    while !asked.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(matches!(asked.join().unwrap(), Ok(Outcome::Decided(Decision::Confirmed { .. }))));
    assert_eq!(*clock.reader.lock().unwrap(), Some(std::thread::current().id()));
}

#[actix_rt::test]
async fn shutdown_stops_actors_on_the_current_arbiter_and_lets_the_writer_finish() {
    let store = MemoryStore::new();
    assert!(store.create_event(event_config(&[("10K", 5)], 0)));
    let (submissions, receiver) = submission_channel(1_024);
    let writer = actix_rt::spawn(store.clone().run_writer(receiver));
    let config = RegistryConfig { arbiters: 0, ..RegistryConfig::default() };
    let registry = Registry::new(config, store.clone(), submissions, Arc::new(ManualClock::new(START)));
    let event = registry.event(&EventId::parse("race").unwrap()).await.unwrap().expect("the event is stored");
    assert!(event.register(register("10K", "a@x.org")).await.is_ok());
    registry.shutdown();
    // The writer ends once every copy of its queue's sender is gone: the stopped actors' too.
    let finished = actix_rt::time::timeout(Duration::from_secs(5), writer).await;
    assert!(finished.is_ok(), "an actor kept the writer's queue open after the shutdown");
    assert!(!event.is_running());
    assert_eq!(event.register(register("10K", "b@x.org")).await, Err(ActorError::Stopped));
}
