//! The registry asks `Ownership` before it starts an actor, and the actor steps down when its
//! tenure ends: on the reported loss, and before that on any decision taken after it lapsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kuota_engine::actor::{ActorError, EventHandle, Located, Registry, RegistryConfig};
use kuota_engine::memory::MemoryStore;
use kuota_engine::ownership::{Claim, Owner, Ownership, OwnershipError, Tenure};
use kuota_engine::store::{BoxFuture, submission_channel};
use kuota_engine::{EventId, ManualClock, Outcome};
use tokio::sync::watch;

use super::support::{START, event_config, register};

/// Grants the event with a tenure the test ends, or names another owner.
#[derive(Debug)]
struct Controlled {
    elsewhere: Option<Owner>,
    /// What `Tenure::is_held` answers.
    held: Arc<AtomicBool>,
    /// Sending `true` reports the loss.
    lost: watch::Sender<bool>,
}

impl Controlled {
    fn granting() -> Arc<Controlled> {
        let (lost, _) = watch::channel(false);
        Arc::new(Controlled { elsewhere: None, held: Arc::new(AtomicBool::new(true)), lost })
    }
}

impl Ownership for Controlled {
    fn claim<'a>(&'a self, _event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>> {
        let claim = match &self.elsewhere {
            Some(owner) => Claim::Elsewhere(owner.clone()),
            None => {
                let held = self.held.clone();
                let mut lost = self.lost.subscribe();
                Claim::Owned(Tenure::new(
                    Arc::new(move || held.load(Ordering::SeqCst)),
                    Box::pin(async move {
                        let _ = lost.wait_for(|lost| *lost).await;
                    }),
                ))
            }
        };
        Box::pin(std::future::ready(Ok(claim)))
    }

    fn disclaim<'a>(&'a self, _event: &'a EventId) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

fn registry(ownership: Arc<Controlled>) -> (Registry, Arc<MemoryStore>) {
    let store = MemoryStore::new();
    assert!(store.create_event(event_config(&[("10K", 10)], 0)));
    let (submissions, receiver) = submission_channel(64);
    actix_rt::spawn(store.clone().run_writer(receiver));
    let clock = Arc::new(ManualClock::new(START));
    let registry =
        Registry::new(RegistryConfig::default(), store.clone(), submissions, clock).with_ownership(ownership);
    (registry, store)
}

fn race() -> EventId {
    EventId::parse("race").unwrap()
}

#[actix_rt::test]
async fn an_event_owned_elsewhere_is_located_there_and_never_loaded_here() {
    let owner = Owner { node_id: "node-b".into(), url: "http://10.0.0.8:8080".into() };
    let (lost, _) = watch::channel(false);
    let ownership =
        Arc::new(Controlled { elsewhere: Some(owner.clone()), held: Arc::new(AtomicBool::new(true)), lost });
    let (registry, store) = registry(ownership);
    match registry.locate(&race()).await.unwrap() {
        Located::Elsewhere(found) => assert_eq!(found, owner),
        other => panic!("expected the other node, got {other:?}"),
    }
    assert_eq!(registry.event(&race()).await.unwrap_err(), ActorError::OwnedElsewhere);
    assert_eq!(store.epoch(&race()), Some(0), "loading would have taken the event from its owner");
    assert_eq!(registry.owned_events(), 0);
}

/// Waits (up to a second) for `event`'s actor to stop after its loss was reported.
async fn wait_until_stopped(event: &EventHandle) {
    for _ in 0..100 {
        if !event.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!event.is_running(), "the actor stopped");
}

#[actix_rt::test]
async fn an_actor_steps_down_when_its_ownership_is_reported_lost() {
    let ownership = Controlled::granting();
    let (registry, _store) = registry(ownership.clone());
    let event = registry.event(&race()).await.unwrap().unwrap();
    assert!(matches!(event.register(register("10K", "a@x.org")).await, Ok(Outcome::Decided(_))));
    ownership.lost.send_replace(true);
    wait_until_stopped(&event).await;
    assert_eq!(event.register(register("10K", "b@x.org")).await.unwrap_err(), ActorError::Stopped);
}

#[actix_rt::test]
async fn a_lapsed_tenure_refuses_the_next_decision_before_the_loss_is_reported() {
    let ownership = Controlled::granting();
    let (registry, store) = registry(ownership.clone());
    let event = registry.event(&race()).await.unwrap().unwrap();
    // The renewal task is late: validity ran out, the loss is not reported yet.
    ownership.held.store(false, Ordering::SeqCst);
    assert_eq!(event.register(register("10K", "a@x.org")).await.unwrap_err(), ActorError::Stopped);
    assert!(store.registrations(&race()).is_empty(), "nothing was decided after the lapse");
}

/// The owner-routing layer looks a running event up by its path's text: that finds the event
/// while it runs here and nothing else, and never starts one.
#[actix_rt::test]
async fn a_running_event_is_found_by_its_text_while_it_runs_here() {
    let ownership = Controlled::granting();
    let (registry, store) = registry(ownership.clone());
    assert!(registry.running_event("race").is_none(), "not started yet");
    assert_eq!(store.epoch(&race()), Some(0), "a look by text starts nothing");
    let event = registry.event(&race()).await.unwrap().unwrap();
    let found = registry.running_event("race").expect("it runs here");
    assert_eq!(found.config().id, race());
    assert!(registry.running_event("rac").is_none());
    assert!(registry.running_event("race.1").is_none());
    ownership.lost.send_replace(true);
    wait_until_stopped(&event).await;
    assert!(registry.running_event("race").is_none(), "a stopped event is not running here");
}
