//! An in-memory store: the loader and writer the engine runs with before (and without) a
//! database, and the one tests use. It can be told to fail or to stall, which a real database
//! cannot be made to do on demand; the persistence crate's tests cover the real ones.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::clock::Timestamp;
use crate::effect::{Effect, EffectKind};
use crate::event::EventConfig;
use crate::ids::{CategoryCode, Email, EventId, IdempotencyKey, RegistrationId, Seq};
use crate::outcome::{ActiveStatus, EndedStatus};
use crate::queue::{PassTimes, StoredTicketState, TicketId, TicketRecord};
use crate::quota::{IdempotencyRecord, QuotaBuilder, RegistrationRecord};
use crate::store::{BoxFuture, EventLoader, LoadedEvent, StoreError, Submission, SubmissionReceiver};

/// A registration as the store keeps it, ended ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRegistration {
    pub category: CategoryCode,
    pub registrant: Email,
    pub status: StoredStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredStatus {
    Active(ActiveStatus),
    Ended(EndedStatus),
}

#[derive(Debug)]
struct StoredEvent {
    config: EventConfig,
    epoch: u64,
    last_seq: Seq,
    next_registration: u64,
    registrations: BTreeMap<RegistrationId, StoredRegistration>,
    idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    tickets: BTreeMap<TicketId, TicketRecord>,
}

#[derive(Debug, Default)]
struct Tables {
    events: HashMap<EventId, StoredEvent>,
    /// (event, epoch) pairs with a failed submission: later ones of the same pair fail too.
    poisoned: HashSet<(EventId, u64)>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    failing: AtomicBool,
    failures_to_inject: AtomicU32,
    stalled: AtomicBool,
    resumed: Notify,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryStore::default())
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding this lock already failed the test that caused it.
        self.tables.lock().expect("memory store lock poisoned")
    }

    /// Stores a new event; false when the id exists.
    pub fn create_event(&self, config: EventConfig) -> bool {
        let mut tables = self.tables();
        if tables.events.contains_key(&config.id) {
            return false;
        }
        let event = StoredEvent {
            config: config.clone(),
            epoch: 0,
            last_seq: Seq(0),
            next_registration: 1,
            registrations: BTreeMap::new(),
            idempotency: HashMap::new(),
            tickets: BTreeMap::new(),
        };
        tables.events.insert(config.id, event);
        true
    }

    /// Every submission fails while set.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The next `count` submissions fail.
    pub fn fail_next(&self, count: u32) {
        self.failures_to_inject.store(count, Ordering::SeqCst);
    }

    /// The writer stops taking submissions until `resume`.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Stored registrations of an event, ended ones included, by id.
    pub fn registrations(&self, event: &EventId) -> Vec<(RegistrationId, StoredRegistration)> {
        let tables = self.tables();
        let Some(stored) = tables.events.get(event) else { return Vec::new() };
        stored.registrations.iter().map(|(id, row)| (*id, row.clone())).collect()
    }

    pub fn epoch(&self, event: &EventId) -> Option<u64> {
        self.tables().events.get(event).map(|stored| stored.epoch)
    }

    /// Drains submissions until every sender is dropped. Run it as a task.
    pub async fn run_writer(self: Arc<Self>, mut receiver: SubmissionReceiver) {
        while let Some(submission) = receiver.recv().await {
            while self.stalled.load(Ordering::SeqCst) {
                let resumed = self.resumed.notified();
                if !self.stalled.load(Ordering::SeqCst) {
                    break;
                }
                resumed.await;
            }
            let result = self.commit(&submission);
            // The actor may have stopped meanwhile; then nobody waits for the answer.
            let _ = submission.done.send(result);
        }
    }

    fn injected_failure(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
            || self
                .failures_to_inject
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                .is_ok()
    }

    fn commit(&self, submission: &Submission) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let pair = (submission.event.clone(), submission.epoch);
        if tables.poisoned.contains(&pair) {
            return Err(StoreError::EarlierWriteFailed);
        }
        let Some(stored) = tables.events.get(&submission.event) else {
            return Err(StoreError::Unavailable("the event is not stored".into()));
        };
        let failure = if stored.epoch != submission.epoch {
            Some(StoreError::Fenced)
        } else if self.injected_failure() {
            Some(StoreError::Unavailable("the memory store was told to fail".into()))
        } else {
            None
        };
        if let Some(error) = failure {
            tables.poisoned.insert(pair);
            return Err(error);
        }
        let stored = tables.events.get_mut(&submission.event).expect("looked up above under the same lock");
        for effect in &submission.effects {
            stored.apply(effect);
        }
        Ok(())
    }
}

impl StoredEvent {
    /// Sets a stored ticket's state at `at`, keeping its pass times as a store does.
    fn set_ticket_state(&mut self, ticket: TicketId, state: StoredTicketState, at: Timestamp) {
        if let Some(record) = self.tickets.get_mut(&ticket) {
            record.state = state;
            record.pass = match (state, record.pass) {
                (StoredTicketState::Admitted { .. }, _) => Some(PassTimes { granted_at: at, ended_at: None }),
                (StoredTicketState::Used | StoredTicketState::Expired, Some(pass)) => {
                    Some(PassTimes { ended_at: Some(at), ..pass })
                }
                (_, pass) => pass,
            };
        }
    }

    /// Records one effect; an effect at or below `last_seq` was recorded already.
    fn apply(&mut self, effect: &Effect) {
        if effect.seq <= self.last_seq {
            return;
        }
        self.last_seq = effect.seq;
        let mut set_status = |registration: &RegistrationId, status: StoredStatus| {
            if let Some(row) = self.registrations.get_mut(registration) {
                row.status = status;
            }
        };
        match &effect.kind {
            EffectKind::Created { registration, category_code, registrant, status, idempotency, .. } => {
                self.next_registration = self.next_registration.max(registration.0 + 1);
                let row = StoredRegistration {
                    category: category_code.clone(),
                    registrant: registrant.clone(),
                    status: StoredStatus::Active(*status),
                };
                self.registrations.insert(*registration, row);
                if let (Some(idempotency), Some(decision)) = (idempotency, effect.kind.decision()) {
                    let record = IdempotencyRecord {
                        key: idempotency.key.clone(),
                        fingerprint: idempotency.fingerprint,
                        decision,
                        decided_at: effect.at,
                    };
                    self.idempotency.insert(idempotency.key.clone(), record);
                }
            }
            EffectKind::Confirmed { registration } => {
                set_status(registration, StoredStatus::Active(ActiveStatus::Confirmed))
            }
            EffectKind::Promoted { registration, status } => {
                set_status(registration, StoredStatus::Active(*status))
            }
            EffectKind::Cancelled { registration } => {
                set_status(registration, StoredStatus::Ended(EndedStatus::Cancelled))
            }
            EffectKind::Expired { registration } => {
                set_status(registration, StoredStatus::Ended(EndedStatus::Expired))
            }
            EffectKind::DecisionRecorded { idempotency, decision } => {
                let record = IdempotencyRecord {
                    key: idempotency.key.clone(),
                    fingerprint: idempotency.fingerprint,
                    decision: decision.clone(),
                    decided_at: effect.at,
                };
                self.idempotency.insert(idempotency.key.clone(), record);
            }
            EffectKind::CapacityChanged { category, capacity, .. } => {
                self.config.categories[usize::from(*category)].capacity = *capacity;
            }
            EffectKind::QueueJoined { ticket, registrant, lobby } => {
                let record = TicketRecord {
                    ticket: *ticket,
                    registrant: registrant.clone(),
                    lobby: *lobby,
                    state: StoredTicketState::Waiting,
                    pass: None,
                };
                self.tickets.insert(*ticket, record);
            }
            EffectKind::QueueAdmitted { ticket, pass_expires_at } => self.set_ticket_state(
                *ticket,
                StoredTicketState::Admitted { pass_expires_at: *pass_expires_at },
                effect.at,
            ),
            EffectKind::QueuePassExpired { ticket } => {
                self.set_ticket_state(*ticket, StoredTicketState::Expired, effect.at)
            }
            EffectKind::QueuePassUsed { ticket, .. } => {
                self.set_ticket_state(*ticket, StoredTicketState::Used, effect.at)
            }
        }
    }
}

impl EventLoader for MemoryStore {
    fn load<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Option<LoadedEvent>, StoreError>> {
        Box::pin(async move {
            let mut tables = self.tables();
            let Some(stored) = tables.events.get_mut(event) else { return Ok(None) };
            stored.epoch += 1;
            let mut builder = QuotaBuilder::new(stored.config.clone())?;
            for (id, row) in &stored.registrations {
                if let StoredStatus::Active(status) = row.status {
                    builder.add_registration(RegistrationRecord {
                        registration: *id,
                        category: row.category.clone(),
                        registrant: row.registrant.clone(),
                        status,
                    })?;
                }
            }
            for record in stored.idempotency.values() {
                builder.add_idempotency(record.clone());
            }
            for record in stored.tickets.values() {
                builder.add_ticket(record.clone())?;
            }
            let quota = builder.finish(stored.next_registration, stored.last_seq)?;
            Ok(Some(LoadedEvent { quota, epoch: stored.epoch }))
        })
    }
}
