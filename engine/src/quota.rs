//! `EventQuota`: one event's seats, holds, waitlists and idempotency entries, and every rule
//! about them, as a synchronous state machine. No I/O, no clock, no randomness, no async:
//! `apply(command, now)` returns what was decided and what the store must record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;

use crate::clock::Timestamp;
use crate::command::{Command, Idempotency, Register};
use crate::effect::{Effect, EffectKind};
use crate::event::{CategoryIndex, EventConfig, EventConfigError};
use crate::ids::{CategoryCode, Email, Fingerprint, IdempotencyKey, RegistrationId, Seq};
use crate::limits::{CATEGORY_CAPACITY_MAX, ENDED_REGISTRATIONS_MAX, FULL_CHECK_INTERVAL_APPLIES};
use crate::outcome::{ActiveStatus, CategoryAvailability, Decision, EndedStatus, Outcome};

/// Hash maps with a fixed-key hasher: the core must not draw randomness, and nothing it
/// decides depends on iteration order.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<std::hash::DefaultHasher>>;

/// Full recounts run after every apply in debug builds while the event is this small; beyond
/// it (and in release builds) they run every `FULL_CHECK_INTERVAL_APPLIES` applies.
const DEBUG_FULL_CHECK_REGISTRATIONS_MAX: usize = 4_096;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Registration {
    registrant: Email,
    category: CategoryIndex,
    status: ActiveStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CategoryState {
    capacity: u32,
    confirmed: u32,
    held: u32,
    /// Waitlisted registrations, first come first served; ids only ever grow along it.
    waitlist: VecDeque<RegistrationId>,
}

impl CategoryState {
    fn taken(&self) -> u32 {
        self.confirmed + self.held
    }

    fn available(&self) -> u32 {
        self.capacity.saturating_sub(self.taken())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct IdempotencyEntry {
    fingerprint: Fingerprint,
    decision: Decision,
    /// The effect that records the decision; the decision is durable once this seq is.
    seq: Seq,
    expires_at: Timestamp,
}

/// A stored active registration, as recovery hands it to `QuotaBuilder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRecord {
    pub registration: RegistrationId,
    pub category: CategoryCode,
    pub registrant: Email,
    pub status: ActiveStatus,
}

/// A stored idempotency entry within retention, as recovery hands it to `QuotaBuilder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub decision: Decision,
    pub decided_at: Timestamp,
}

/// Why stored state cannot be loaded: the store holds something the rules forbid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] EventConfigError),
    #[error("registration {0} names a category the event does not have")]
    UnknownCategory(RegistrationId),
    #[error("registration {0} is stored twice")]
    DuplicateRegistration(RegistrationId),
    #[error("registrant of registration {0} already has another active registration")]
    DuplicateRegistrant(RegistrationId),
    #[error("category {0} holds more registrations than its capacity")]
    OverCapacity(CategoryCode),
    #[error("category {0} has a free seat while registrants wait")]
    SeatFreeWhileWaiting(CategoryCode),
    #[error("registration {0} is not below the next registration number")]
    RegistrationNumberTooHigh(RegistrationId),
}

/// One event's quota state. See the module documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct EventQuota {
    config: EventConfig,
    categories: Vec<CategoryState>,
    registrations: Map<RegistrationId, Registration>,
    registrants: Map<Email, RegistrationId>,
    /// Held registrations by expiry, soonest first.
    holds: BTreeSet<(Timestamp, RegistrationId)>,
    idempotency: Map<IdempotencyKey, IdempotencyEntry>,
    /// Idempotency keys in the order they expire (retention is the same for all).
    idempotency_expiry: VecDeque<(Timestamp, IdempotencyKey)>,
    ended: Map<RegistrationId, EndedStatus>,
    ended_order: VecDeque<RegistrationId>,
    next_registration: u64,
    last_seq: Seq,
    durable_seq: Seq,
    /// The latest `now` seen; time never runs backwards inside the core.
    latest_now: Timestamp,
    applies: u64,
}

impl fmt::Debug for EventQuota {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EventQuota")
            .field("event", &self.config.id)
            .field("registrations", &self.registrations.len())
            .field("idempotency_entries", &self.idempotency.len())
            .field("last_seq", &self.last_seq)
            .field("durable_seq", &self.durable_seq)
            .finish_non_exhaustive()
    }
}

impl EventQuota {
    /// A new event with no registrations.
    pub fn new(config: EventConfig) -> Result<Self, EventConfigError> {
        config.validate()?;
        let categories = config
            .categories
            .iter()
            .map(|category| CategoryState {
                capacity: category.capacity,
                confirmed: 0,
                held: 0,
                waitlist: VecDeque::new(),
            })
            .collect();
        Ok(EventQuota {
            config,
            categories,
            registrations: Map::default(),
            registrants: Map::default(),
            holds: BTreeSet::new(),
            idempotency: Map::default(),
            idempotency_expiry: VecDeque::new(),
            ended: Map::default(),
            ended_order: VecDeque::new(),
            next_registration: 1,
            last_seq: Seq(0),
            durable_seq: Seq(0),
            latest_now: Timestamp::ZERO,
            applies: 0,
        })
    }

    pub fn config(&self) -> &EventConfig {
        &self.config
    }

    /// The seq of the latest effect produced.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// The seq up to which the store has committed.
    pub fn durable_seq(&self) -> Seq {
        self.durable_seq
    }

    pub fn next_registration(&self) -> u64 {
        self.next_registration
    }

    /// Active registrations (held, confirmed, waitlisted).
    pub fn active_registrations(&self) -> usize {
        self.registrations.len()
    }

    pub fn idempotency_entries(&self) -> usize {
        self.idempotency.len()
    }

    /// The earliest hold expiry, for the actor's timer.
    pub fn next_hold_expiry(&self) -> Option<Timestamp> {
        self.holds.first().map(|(expires_at, _)| *expires_at)
    }

    /// The current status of an active registration, and its waitlist position (from 1).
    pub fn status_of(&self, registration: RegistrationId) -> Option<(ActiveStatus, Option<u32>)> {
        let found = self.registrations.get(&registration)?;
        let position = match found.status {
            ActiveStatus::Waitlisted => self.categories[usize::from(found.category)]
                .waitlist
                .iter()
                .position(|waiting| *waiting == registration)
                .map(|index| index as u32 + 1),
            _ => None,
        };
        Some((found.status, position))
    }

    /// The figures of every category, in configuration order.
    pub fn availability(&self) -> Vec<CategoryAvailability> {
        self.config
            .categories
            .iter()
            .zip(&self.categories)
            .map(|(config, state)| CategoryAvailability {
                code: config.code.clone(),
                capacity: state.capacity,
                confirmed: state.confirmed,
                held: state.held,
                available: state.available(),
                waitlisted: state.waitlist.len() as u32,
            })
            .collect()
    }

    /// Counts of one category without allocating: (capacity, confirmed, held, waitlisted).
    pub fn category_counts(&self, category: CategoryIndex) -> (u32, u32, u32, u32) {
        let state = &self.categories[usize::from(category)];
        (state.capacity, state.confirmed, state.held, state.waitlist.len() as u32)
    }

    /// The store has committed every effect up to and including `seq`: decisions recorded up
    /// to there may now be replayed rather than reported in flight.
    pub fn mark_durable(&mut self, seq: Seq) {
        assert!(seq <= self.last_seq, "durable seq {seq:?} beyond the last effect {:?}", self.last_seq);
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// Applies one command at `now`. Every due hold expires first, whatever the command.
    pub fn apply(&mut self, command: &Command, now: Timestamp) -> (Outcome, Vec<Effect>) {
        let now = self.observe(now);
        let mut effects = Vec::new();
        let expired = self.expire_due_holds(now, &mut effects);
        self.forget_expired_idempotency(now);
        let outcome = match command {
            Command::Register(request) => self.register(request, now, &mut effects),
            Command::Confirm { registration } => self.confirm(*registration, now, &mut effects),
            Command::Cancel { registration } => self.cancel(*registration, now, &mut effects),
            Command::ExpireHolds => Outcome::HoldsExpired { count: expired },
            Command::SetCapacity { category, capacity } => {
                self.set_capacity(category, *capacity, now, &mut effects)
            }
        };
        self.check_invariants();
        (outcome, effects)
    }

    fn observe(&mut self, now: Timestamp) -> Timestamp {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    fn emit(&mut self, effects: &mut Vec<Effect>, at: Timestamp, kind: EffectKind) {
        self.last_seq = Seq(self.last_seq.0 + 1);
        effects.push(Effect { seq: self.last_seq, at, kind });
    }

    fn register(&mut self, request: &Register, now: Timestamp, effects: &mut Vec<Effect>) -> Outcome {
        let Some(category) = self.config.category_index(&request.category) else {
            return Outcome::UnknownCategory;
        };
        if let Some(idempotency) = &request.idempotency {
            if let Some(entry) = self.idempotency.get(&idempotency.key) {
                return if entry.fingerprint != idempotency.fingerprint {
                    Outcome::KeyReused
                } else if entry.seq > self.durable_seq {
                    Outcome::KeyInFlight
                } else {
                    Outcome::Replayed(entry.decision.clone())
                };
            }
            if self.idempotency.len() >= self.config.limits.idempotency_entries_max as usize {
                return Outcome::IdempotencyFull;
            }
        }
        let decision = self.decide(category, request, now, effects);
        if let Some(idempotency) = &request.idempotency {
            if decision.registration().is_none() {
                let kind = EffectKind::DecisionRecorded {
                    idempotency: idempotency.clone(),
                    decision: decision.clone(),
                };
                self.emit(effects, now, kind);
            }
            self.remember_decision(idempotency, decision.clone(), self.last_seq, now);
        }
        Outcome::Decided(decision)
    }

    fn decide(
        &mut self,
        category: CategoryIndex,
        request: &Register,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Decision {
        if let Some(opens_at) = self.config.opens_at
            && now < opens_at
        {
            return Decision::NotOpen { opens_at };
        }
        if let Some(closes_at) = self.config.closes_at
            && now >= closes_at
        {
            return Decision::Closed;
        }
        if self.registrants.contains_key(&request.registrant) {
            return Decision::AlreadyRegistered;
        }
        let state = &self.categories[usize::from(category)];
        let (status, waitlist_position) = if state.available() > 0 {
            (self.seat_status(now), None)
        } else if request.waitlist
            && (state.waitlist.len() as u64) < u64::from(self.config.limits.waitlist_length_max)
        {
            (ActiveStatus::Waitlisted, Some(state.waitlist.len() as u32 + 1))
        } else {
            return Decision::SoldOut;
        };
        let registration = RegistrationId(self.next_registration);
        self.next_registration += 1;
        self.insert_active(registration, request.registrant.clone(), category, status);
        let kind = EffectKind::Created {
            registration,
            category,
            category_code: request.category.clone(),
            registrant: request.registrant.clone(),
            status,
            waitlist_position,
            idempotency: request.idempotency.clone(),
            details: request.details.clone(),
        };
        self.emit(effects, now, kind);
        match status {
            ActiveStatus::Confirmed => Decision::Confirmed { registration },
            ActiveStatus::Held { expires_at } => Decision::Held { registration, expires_at },
            ActiveStatus::Waitlisted => Decision::Waitlisted {
                registration,
                // Set above in the only branch that yields `Waitlisted`.
                position: waitlist_position.unwrap_or_default(),
            },
        }
    }

    /// The status a registration gets when it takes a seat now.
    fn seat_status(&self, now: Timestamp) -> ActiveStatus {
        match self.config.hold_ttl_seconds {
            0 => ActiveStatus::Confirmed,
            seconds => ActiveStatus::Held { expires_at: now.plus_seconds(u64::from(seconds)) },
        }
    }

    fn remember_decision(&mut self, idempotency: &Idempotency, decision: Decision, seq: Seq, now: Timestamp) {
        let retention = u64::from(self.config.limits.idempotency_retention_seconds);
        let expires_at = now.plus_seconds(retention);
        let entry = IdempotencyEntry { fingerprint: idempotency.fingerprint, decision, seq, expires_at };
        let previous = self.idempotency.insert(idempotency.key.clone(), entry);
        assert!(previous.is_none(), "an idempotency key was decided twice");
        self.idempotency_expiry.push_back((expires_at, idempotency.key.clone()));
    }

    fn forget_expired_idempotency(&mut self, now: Timestamp) {
        while let Some((expires_at, _)) = self.idempotency_expiry.front()
            && *expires_at <= now
        {
            // The loop condition just saw a front element.
            let (_, key) = self.idempotency_expiry.pop_front().unwrap();
            self.idempotency.remove(&key);
        }
    }

    fn confirm(
        &mut self,
        registration: RegistrationId,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Some(found) = self.registrations.get_mut(&registration) else {
            return match self.ended.get(&registration) {
                Some(EndedStatus::Expired) => Outcome::HoldExpired { registration },
                Some(EndedStatus::Cancelled) => {
                    Outcome::AlreadyEnded { registration, status: EndedStatus::Cancelled }
                }
                None => Outcome::UnknownRegistration,
            };
        };
        match found.status {
            ActiveStatus::Confirmed => Outcome::RegistrationConfirmed { registration, already: true },
            ActiveStatus::Waitlisted => Outcome::NotHeld { registration },
            ActiveStatus::Held { expires_at } => {
                // Due holds expired at the start of apply, so this one is still running.
                assert!(expires_at > now, "a due hold survived the expiry pass");
                found.status = ActiveStatus::Confirmed;
                let category = &mut self.categories[usize::from(found.category)];
                category.held -= 1;
                category.confirmed += 1;
                assert!(self.holds.remove(&(expires_at, registration)), "a hold was not indexed");
                self.emit(effects, now, EffectKind::Confirmed { registration });
                Outcome::RegistrationConfirmed { registration, already: false }
            }
        }
    }

    fn cancel(&mut self, registration: RegistrationId, now: Timestamp, effects: &mut Vec<Effect>) -> Outcome {
        if !self.registrations.contains_key(&registration) {
            return match self.ended.get(&registration) {
                Some(EndedStatus::Cancelled) => {
                    Outcome::RegistrationCancelled { registration, already: true }
                }
                Some(EndedStatus::Expired) => {
                    Outcome::AlreadyEnded { registration, status: EndedStatus::Expired }
                }
                None => Outcome::UnknownRegistration,
            };
        }
        let category = self.end_active(registration, EndedStatus::Cancelled);
        self.emit(effects, now, EffectKind::Cancelled { registration });
        self.promote(category, now, effects);
        Outcome::RegistrationCancelled { registration, already: false }
    }

    fn set_capacity(
        &mut self,
        code: &CategoryCode,
        capacity: u32,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Some(category) = self.config.category_index(code) else {
            return Outcome::UnknownCategory;
        };
        let state = &mut self.categories[usize::from(category)];
        let taken = state.taken();
        if capacity < taken {
            return Outcome::CapacityBelowTaken { category: code.clone(), taken };
        }
        // The API refuses larger values; the core clamps so that it never trusts its caller.
        let capacity = capacity.min(CATEGORY_CAPACITY_MAX);
        state.capacity = capacity;
        self.config.categories[usize::from(category)].capacity = capacity;
        let kind = EffectKind::CapacityChanged { category, category_code: code.clone(), capacity };
        self.emit(effects, now, kind);
        let promoted = self.promote(category, now, effects);
        Outcome::CapacityChanged { category: code.clone(), capacity, promoted }
    }

    /// Every hold due at `now` expires; each freed seat goes to the waitlist first.
    fn expire_due_holds(&mut self, now: Timestamp, effects: &mut Vec<Effect>) -> u32 {
        let mut count = 0;
        while let Some(&(expires_at, registration)) = self.holds.first()
            && expires_at <= now
        {
            let category = self.end_active(registration, EndedStatus::Expired);
            self.emit(effects, now, EffectKind::Expired { registration });
            self.promote(category, now, effects);
            count += 1;
        }
        count
    }

    /// Gives free seats of `category` to the head of its waitlist; returns how many.
    fn promote(&mut self, category: CategoryIndex, now: Timestamp, effects: &mut Vec<Effect>) -> u32 {
        let mut promoted = 0;
        let status = self.seat_status(now);
        loop {
            let state = &mut self.categories[usize::from(category)];
            if state.available() == 0 {
                break;
            }
            let Some(registration) = state.waitlist.pop_front() else {
                break;
            };
            match status {
                ActiveStatus::Held { expires_at } => {
                    state.held += 1;
                    self.holds.insert((expires_at, registration));
                }
                _ => state.confirmed += 1,
            }
            let found = self.registrations.get_mut(&registration).expect("a waitlisted id is active");
            assert_eq!(found.status, ActiveStatus::Waitlisted, "the waitlist held a seated registration");
            found.status = status;
            self.emit(effects, now, EffectKind::Promoted { registration, status });
            promoted += 1;
        }
        promoted
    }

    fn insert_active(
        &mut self,
        registration: RegistrationId,
        registrant: Email,
        category: CategoryIndex,
        status: ActiveStatus,
    ) {
        let state = &mut self.categories[usize::from(category)];
        match status {
            ActiveStatus::Confirmed => state.confirmed += 1,
            ActiveStatus::Held { expires_at } => {
                state.held += 1;
                self.holds.insert((expires_at, registration));
            }
            ActiveStatus::Waitlisted => state.waitlist.push_back(registration),
        }
        let previous = self.registrants.insert(registrant.clone(), registration);
        assert!(previous.is_none(), "a registrant got a second active registration");
        let previous = self.registrations.insert(registration, Registration { registrant, category, status });
        assert!(previous.is_none(), "a registration id was used twice");
    }

    /// Removes an active registration and remembers how it ended; returns its category.
    fn end_active(&mut self, registration: RegistrationId, ended: EndedStatus) -> CategoryIndex {
        let removed = self.registrations.remove(&registration).expect("ending an active registration");
        let state = &mut self.categories[usize::from(removed.category)];
        match removed.status {
            ActiveStatus::Confirmed => state.confirmed -= 1,
            ActiveStatus::Held { expires_at } => {
                state.held -= 1;
                assert!(self.holds.remove(&(expires_at, registration)), "a hold was not indexed");
            }
            ActiveStatus::Waitlisted => {
                let index = state.waitlist.iter().position(|waiting| *waiting == registration);
                state.waitlist.remove(index.expect("a waitlisted registration is on its waitlist"));
            }
        }
        self.registrants.remove(&removed.registrant);
        self.ended.insert(registration, ended);
        self.ended_order.push_back(registration);
        if self.ended_order.len() > ENDED_REGISTRATIONS_MAX
            && let Some(oldest) = self.ended_order.pop_front()
        {
            self.ended.remove(&oldest);
        }
        removed.category
    }

    /// The invariants that cost O(categories), after every apply, in every build; the full
    /// recount as often as `FULL_CHECK_INTERVAL_APPLIES` (or always while small in debug).
    fn check_invariants(&mut self) {
        let mut active = 0usize;
        let mut held = 0usize;
        for (state, config) in self.categories.iter().zip(&self.config.categories) {
            assert!(state.taken() <= state.capacity, "category {} holds more than its capacity", config.code);
            assert!(
                state.waitlist.is_empty() || state.available() == 0,
                "category {} has a free seat while registrants wait",
                config.code
            );
            assert!(state.waitlist.len() as u64 <= u64::from(self.config.limits.waitlist_length_max));
            assert_eq!(state.capacity, config.capacity, "capacity and configuration disagree");
            active += state.taken() as usize + state.waitlist.len();
            held += state.held as usize;
        }
        assert_eq!(active, self.registrations.len(), "counters disagree with the registrations");
        assert_eq!(
            self.registrants.len(),
            self.registrations.len(),
            "registrants and registrations disagree"
        );
        assert_eq!(held, self.holds.len(), "held counters disagree with the hold index");
        assert_eq!(self.idempotency.len(), self.idempotency_expiry.len());
        self.applies += 1;
        let small = cfg!(debug_assertions) && self.registrations.len() <= DEBUG_FULL_CHECK_REGISTRATIONS_MAX;
        if small || self.applies.is_multiple_of(FULL_CHECK_INTERVAL_APPLIES) {
            self.check_invariants_fully();
        }
    }

    /// Recounts everything from the registrations and compares with the counters and indexes.
    /// O(registrations); panics on the first disagreement.
    pub fn check_invariants_fully(&self) {
        let mut counts = vec![(0u32, 0u32, 0u32); self.categories.len()];
        for (id, registration) in &self.registrations {
            assert!(id.0 < self.next_registration, "registration {id} is beyond the next number");
            assert_eq!(self.registrants.get(&registration.registrant), Some(id), "registrant index is wrong");
            let count = &mut counts[usize::from(registration.category)];
            match registration.status {
                ActiveStatus::Confirmed => count.0 += 1,
                ActiveStatus::Held { expires_at } => {
                    count.1 += 1;
                    assert!(self.holds.contains(&(expires_at, *id)), "hold of {id} is not indexed");
                }
                ActiveStatus::Waitlisted => count.2 += 1,
            }
        }
        for (index, state) in self.categories.iter().enumerate() {
            let (confirmed, held, waitlisted) = counts[index];
            assert_eq!((state.confirmed, state.held), (confirmed, held), "counters differ from a recount");
            assert_eq!(state.waitlist.len() as u32, waitlisted, "waitlist differs from a recount");
            let mut previous = None;
            for waiting in &state.waitlist {
                let found = &self.registrations[waiting];
                assert_eq!(found.status, ActiveStatus::Waitlisted);
                assert_eq!(usize::from(found.category), index);
                assert!(previous < Some(*waiting), "waitlist is out of arrival order");
                previous = Some(*waiting);
            }
        }
        for (key, entry) in &self.idempotency {
            assert!(entry.seq <= self.last_seq, "idempotency entry {key} is beyond the last effect");
        }
    }
}

/// Rebuilds an `EventQuota` from stored rows, one at a time, so that recovery can stream them.
#[derive(Debug)]
pub struct QuotaBuilder {
    quota: EventQuota,
    highest_registration: u64,
}

impl QuotaBuilder {
    pub fn new(config: EventConfig) -> Result<Self, RestoreError> {
        Ok(QuotaBuilder { quota: EventQuota::new(config)?, highest_registration: 0 })
    }

    pub fn add_registration(&mut self, record: RegistrationRecord) -> Result<(), RestoreError> {
        let id = record.registration;
        let quota = &mut self.quota;
        let category =
            quota.config.category_index(&record.category).ok_or(RestoreError::UnknownCategory(id))?;
        if quota.registrations.contains_key(&id) {
            return Err(RestoreError::DuplicateRegistration(id));
        }
        if quota.registrants.contains_key(&record.registrant) {
            return Err(RestoreError::DuplicateRegistrant(id));
        }
        if record.status != ActiveStatus::Waitlisted {
            let state = &quota.categories[usize::from(category)];
            if state.taken() >= state.capacity {
                return Err(RestoreError::OverCapacity(record.category));
            }
        }
        quota.insert_active(id, record.registrant, category, record.status);
        self.highest_registration = self.highest_registration.max(id.0);
        Ok(())
    }

    pub fn add_idempotency(&mut self, record: IdempotencyRecord) {
        let retention = u64::from(self.quota.config.limits.idempotency_retention_seconds);
        let expires_at = record.decided_at.plus_seconds(retention);
        let entry = IdempotencyEntry {
            fingerprint: record.fingerprint,
            decision: record.decision,
            seq: Seq(0),
            expires_at,
        };
        if self.quota.idempotency.insert(record.key.clone(), entry).is_none() {
            self.quota.idempotency_expiry.push_back((expires_at, record.key));
        }
    }

    /// Finishes the rebuild: `next_registration` and `last_seq` come from the store (the
    /// highest ever issued, ended registrations included). Everything loaded is durable.
    pub fn finish(mut self, next_registration: u64, last_seq: Seq) -> Result<EventQuota, RestoreError> {
        let quota = &mut self.quota;
        if self.highest_registration >= next_registration {
            return Err(RestoreError::RegistrationNumberTooHigh(RegistrationId(self.highest_registration)));
        }
        quota.next_registration = next_registration;
        quota.last_seq = last_seq;
        quota.durable_seq = last_seq;
        for entry in quota.idempotency.values_mut() {
            entry.seq = last_seq;
        }
        for state in &mut quota.categories {
            state.waitlist.make_contiguous().sort_unstable();
        }
        quota.idempotency_expiry.make_contiguous().sort_unstable();
        // Rows may have been stored while a seat was free and people waited (a crash between
        // two effects cannot do that, but a hand-edited table can); refuse rather than guess.
        for (state, config) in quota.categories.iter().zip(&quota.config.categories) {
            if !state.waitlist.is_empty() && state.available() > 0 {
                return Err(RestoreError::SeatFreeWhileWaiting(config.code.clone()));
            }
        }
        quota.check_invariants_fully();
        Ok(self.quota)
    }
}
