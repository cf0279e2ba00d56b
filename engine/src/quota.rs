//! `EventQuota`: one event's seats, holds, waitlists and idempotency entries, and every rule
//! about them, as a synchronous state machine. No I/O, no clock, no randomness, no async:
//! `apply(command, now)` returns what was decided and what the store must record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;

use crate::clock::Timestamp;
use crate::command::{Command, Idempotency, JoinQueue, Register};
use crate::effect::{Effect, EffectKind};
use crate::event::{CategoryIndex, EventConfig, EventConfigError};
use crate::ids::{CategoryCode, Email, Fingerprint, IdempotencyKey, RegistrationId, Seq};
use crate::limits::{CATEGORY_CAPACITY_MAX, FULL_CHECK_INTERVAL_APPLIES};
use crate::outcome::{ActiveStatus, CategoryAvailability, Decision, EndedStatus, Outcome};
use crate::queue::{PassTimes, Queue, Seats, StoredTicketState, TicketId, TicketRecord, TicketView};

/// Maps keyed by `KeyDigest`. A digest is already uniformly spread SipHash output, so the map
/// uses its first word as the hash instead of hashing it again (the core must not draw
/// randomness either, which rules out `RandomState`).
pub(crate) type Map<K, V> = HashMap<K, V, BuildHasherDefault<DigestHasher>>;

/// Passes a `KeyDigest`'s first word through as the hash; see `Map`.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `KeyDigest::hash` only calls `write_u64`; fold anything else in all the same.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

/// Full recounts run after every apply in debug builds while the event is this small (its
/// registration numbers and its queue's tickets together: the recount is linear in both);
/// beyond it (and in release builds) they run every `FULL_CHECK_INTERVAL_APPLIES` applies.
/// Counting the tickets too keeps a debug build's queue of 50,000 joins linear: without them
/// each join recounted every ticket, and the API's 50,000-join surge took 345 s to join.
const DEBUG_FULL_CHECK_ENTRIES_MAX: usize = 4_096;

/// Registrations an event reserves room for when it is created or loaded (see `new`).
const RESERVED_REGISTRATIONS_MAX: u64 = 1_000_000;

/// A 128-bit digest of a registrant's e-mail or of an idempotency key. The core keeps these
/// instead of the text: they are 16 bytes inline where the text would be a pointer and a heap
/// block, which is what brings an active registration under its memory budget. Two different
/// texts share a digest with a probability near 2^-128 per pair; the store's unique indexes,
/// which hold the text, remain the final word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyDigest([u64; 2]);

impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One word is enough for bucketing; `Eq` compares both.
        state.write_u64(self.0[0]);
    }
}

impl KeyDigest {
    /// A registrant's digest: the one their parsed e-mail carries.
    pub(crate) fn of_email(email: &Email) -> Self {
        KeyDigest(email.digest())
    }

    /// An idempotency key's digest: the one the parsed key carries.
    pub(crate) fn of_key(key: &IdempotencyKey) -> Self {
        KeyDigest(key.digest())
    }
}

/// Where a registration number stands. `Vacant`: never issued here (or ended before a reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Vacant,
    Held,
    Confirmed,
    Waitlisted,
    Cancelled,
    Expired,
}

/// One registration number of the event, 32 bytes, in a vector indexed by number: numbers
/// are dense, so this is smaller than any map, and it remembers ended registrations too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    registrant: KeyDigest,
    /// Meaningful while `Held`.
    hold_expires_at: Timestamp,
    category: CategoryIndex,
    state: SlotState,
}

impl Slot {
    const VACANT: Slot = Slot {
        registrant: KeyDigest([0, 0]),
        hold_expires_at: Timestamp::ZERO,
        category: 0,
        state: SlotState::Vacant,
    };

    fn active_status(&self) -> Option<ActiveStatus> {
        match self.state {
            SlotState::Held => Some(ActiveStatus::Held { expires_at: self.hold_expires_at }),
            SlotState::Confirmed => Some(ActiveStatus::Confirmed),
            SlotState::Waitlisted => Some(ActiveStatus::Waitlisted),
            _ => None,
        }
    }

    fn set_active(&mut self, status: ActiveStatus) {
        (self.state, self.hold_expires_at) = match status {
            ActiveStatus::Held { expires_at } => (SlotState::Held, expires_at),
            ActiveStatus::Confirmed => (SlotState::Confirmed, Timestamp::ZERO),
            ActiveStatus::Waitlisted => (SlotState::Waitlisted, Timestamp::ZERO),
        };
    }
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
    key: KeyDigest,
    fingerprint: Fingerprint,
    decision: Decision,
    /// The effect that records the decision; the decision is durable once this seq is.
    seq: Seq,
    expires_at: Timestamp,
}

/// A queue's live figures (see `EventQuota::queue_summary`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSummary {
    pub drawn: bool,
    /// Tickets in the lobby or waiting in line.
    pub waiting: u64,
    pub admitted_outstanding: u64,
    /// Admissions per second over the last pass lifetime (at least a minute, at most
    /// `ADMISSION_RATE_WINDOW_SECONDS_MAX`), counted from the end of the first pass; `None` before
    /// a pass ended or while there were none.
    pub admission_rate: Option<f64>,
    pub tickets: u64,
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
    #[error("ticket {0:?} is stored for an event without a queue")]
    TicketWithoutQueue(TicketId),
    #[error("ticket {0:?} is stored twice, or its registrant has another ticket")]
    DuplicateTicket(TicketId),
    #[error("ticket numbers are not dense up to {0:?}")]
    TicketMissing(TicketId),
}

/// One event's quota state. See the module documentation.
#[derive(PartialEq, Eq)]
pub struct EventQuota {
    config: EventConfig,
    categories: Vec<CategoryState>,
    /// Registration number `n` is at index `n - 1`.
    slots: Vec<Slot>,
    /// Active registrations by registrant.
    registrants: Map<KeyDigest, RegistrationId>,
    /// Held registrations by expiry, soonest first.
    holds: BTreeSet<(Timestamp, RegistrationId)>,
    /// Idempotency entries in the order they expire (retention is the same for all), with the
    /// absolute position of the front one; the map finds an entry's position by key.
    idempotency_entries: VecDeque<IdempotencyEntry>,
    idempotency_front: u64,
    idempotency: Map<KeyDigest, u64>,
    active: usize,
    last_seq: Seq,
    durable_seq: Seq,
    /// The latest `now` seen; time never runs backwards inside the core.
    latest_now: Timestamp,
    applies: u64,
    /// The queue in front of the opening, for a queued event.
    queue: Option<Queue>,
}

/// The tables of an `EventQuota` that grow with its registrations and keys (see
/// `EventQuota::new_reusing`).
#[derive(Default)]
struct Tables {
    slots: Vec<Slot>,
    registrants: Map<KeyDigest, RegistrationId>,
    holds: BTreeSet<(Timestamp, RegistrationId)>,
    idempotency_entries: VecDeque<IdempotencyEntry>,
    idempotency: Map<KeyDigest, u64>,
}

/// `clone_from` copies into the tables `self` already allocated: the simulator copies one
/// event's state into the same run again and again (its forked seeds), and fresh tables of a
/// 10,000-seat event are megabytes that page faults must get again. Both name every field (a
/// struct literal, a pattern without `..`), so that a new one cannot be left out of either.
impl Clone for EventQuota {
    fn clone(&self) -> Self {
        EventQuota {
            config: self.config.clone(),
            categories: self.categories.clone(),
            slots: self.slots.clone(),
            registrants: self.registrants.clone(),
            holds: self.holds.clone(),
            idempotency_entries: self.idempotency_entries.clone(),
            idempotency_front: self.idempotency_front,
            idempotency: self.idempotency.clone(),
            active: self.active,
            last_seq: self.last_seq,
            durable_seq: self.durable_seq,
            latest_now: self.latest_now,
            applies: self.applies,
            queue: self.queue.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let EventQuota {
            config,
            categories,
            slots,
            registrants,
            holds,
            idempotency_entries,
            idempotency_front,
            idempotency,
            active,
            last_seq,
            durable_seq,
            latest_now,
            applies,
            queue,
        } = source;
        self.config.clone_from(config);
        self.categories.clone_from(categories);
        self.slots.clone_from(slots);
        // A map with as many buckets as the source's is copied in place, else allocated again.
        self.registrants.clone_from(registrants);
        self.holds.clone_from(holds);
        self.idempotency_entries.clone_from(idempotency_entries);
        self.idempotency_front = *idempotency_front;
        self.idempotency.clone_from(idempotency);
        self.active = *active;
        self.last_seq = *last_seq;
        self.durable_seq = *durable_seq;
        self.latest_now = *latest_now;
        self.applies = *applies;
        self.queue.clone_from(queue);
    }
}

impl fmt::Debug for EventQuota {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EventQuota")
            .field("event", &self.config.id)
            .field("active_registrations", &self.active)
            .field("idempotency_entries", &self.idempotency.len())
            .field("last_seq", &self.last_seq)
            .field("durable_seq", &self.durable_seq)
            .finish_non_exhaustive()
    }
}

impl EventQuota {
    /// A new event with no registrations. Room for as many registrations as the event has
    /// seats (up to `RESERVED_REGISTRATIONS_MAX`) is reserved now, so that no table grows (and
    /// rehashes) in the middle of the rush that fills them.
    pub fn new(config: EventConfig) -> Result<Self, EventConfigError> {
        EventQuota::assemble(config, Tables::default())
    }

    /// `new`, growing into the tables `spare` allocated instead of allocating them afresh;
    /// nothing of `spare`'s state is kept. For a caller that makes event after event, such as
    /// the simulator's seed swarm: fresh tables of a 10,000-seat event are megabytes, which the
    /// allocator hands back to the system when they are freed, and page faults get them again.
    pub fn new_reusing(config: EventConfig, spare: EventQuota) -> Result<Self, EventConfigError> {
        let EventQuota { slots, registrants, holds, idempotency_entries, idempotency, .. } = spare;
        EventQuota::assemble(config, Tables { slots, registrants, holds, idempotency_entries, idempotency })
    }

    fn assemble(config: EventConfig, tables: Tables) -> Result<Self, EventConfigError> {
        config.validate()?;
        let seats: u64 = config.categories.iter().map(|category| u64::from(category.capacity)).sum();
        let reserved = seats.min(RESERVED_REGISTRATIONS_MAX) as usize;
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
        let Tables { mut slots, mut registrants, mut holds, mut idempotency_entries, mut idempotency } =
            tables;
        slots.clear();
        registrants.clear();
        holds.clear();
        idempotency_entries.clear();
        idempotency.clear();
        // On empty tables these allocate exactly what `with_capacity(reserved)` would.
        slots.reserve(reserved);
        registrants.reserve(reserved);
        idempotency_entries.reserve(reserved);
        idempotency.reserve(reserved);
        Ok(EventQuota {
            config: config.clone(),
            categories,
            slots,
            registrants,
            holds,
            idempotency_entries,
            idempotency_front: 0,
            idempotency,
            active: 0,
            last_seq: Seq(0),
            durable_seq: Seq(0),
            latest_now: Timestamp::ZERO,
            applies: 0,
            queue: None,
        }
        .with_queue())
    }

    fn with_queue(mut self) -> Self {
        self.queue = self.config.queue.clone().map(Queue::new);
        self
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

    /// The number the next registration will get.
    pub fn next_registration(&self) -> u64 {
        self.slots.len() as u64 + 1
    }

    /// Active registrations (held, confirmed, waitlisted).
    pub fn active_registrations(&self) -> usize {
        self.active
    }

    pub fn idempotency_entries(&self) -> usize {
        self.idempotency.len()
    }

    /// Digests of the idempotency keys with a remembered decision (see `PublishedCounters`).
    pub(crate) fn idempotency_digests(&self) -> impl Iterator<Item = [u64; 2]> + '_ {
        self.idempotency_entries.iter().map(|entry| entry.key.0)
    }

    /// The earliest hold expiry, for the actor's timer.
    pub fn next_hold_expiry(&self) -> Option<Timestamp> {
        self.holds.first().map(|(expires_at, _)| *expires_at)
    }

    fn slot(&self, registration: RegistrationId) -> Option<&Slot> {
        let index = usize::try_from(registration.0.checked_sub(1)?).ok()?;
        self.slots.get(index)
    }

    fn slot_mut(&mut self, registration: RegistrationId) -> &mut Slot {
        let index = registration.0 as usize - 1;
        &mut self.slots[index]
    }

    /// The current status of an active registration, and its waitlist position (from 1).
    pub fn status_of(&self, registration: RegistrationId) -> Option<(ActiveStatus, Option<u32>)> {
        let slot = self.slot(registration)?;
        let status = slot.active_status()?;
        let position = match status {
            ActiveStatus::Waitlisted => self.categories[usize::from(slot.category)]
                .waitlist
                .iter()
                .position(|waiting| *waiting == registration)
                .map(|index| index as u32 + 1),
            _ => None,
        };
        Some((status, position))
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
        let mut effects = Vec::new();
        let outcome = self.apply_into(command, now, &mut effects);
        (outcome, effects)
    }

    /// `apply`, appending the effects to `effects` (in order) instead of returning a new vector:
    /// for a caller that applies command after command and moves the effects on itself, such as
    /// the simulator's seed swarm, which then allocates nothing per command.
    pub fn apply_into(&mut self, command: &Command, now: Timestamp, effects: &mut Vec<Effect>) -> Outcome {
        let now = self.observe(now);
        let expired = self.expire_due_holds(now, effects);
        self.forget_expired_idempotency(now);
        self.advance_queue(now, effects);
        let outcome = match command {
            Command::Register(request) => self.register(request, now, effects),
            Command::Confirm { registration } => self.confirm(*registration, now, effects),
            Command::Cancel { registration } => self.cancel(*registration, now, effects),
            Command::ExpireHolds => Outcome::HoldsExpired { count: expired },
            Command::SetCapacity { category, capacity } => {
                self.set_capacity(category, *capacity, now, effects)
            }
            Command::JoinQueue(request) => self.join_queue(request, now, effects),
        };
        // Last, so that seats freed or taken by the command count at once.
        self.admit_waiting(now, effects);
        self.check_invariants();
        outcome
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
        if let Err(answer) = self.check_key(request.idempotency.as_ref()) {
            return answer;
        }
        // The pass is checked right after the registration window and before every other rule;
        // its refusals are not stored with the key, so that a retry with a pass is decided.
        if self.window_decision(now).is_none()
            && let Err(refusal) = self.check_queue_pass(request)
        {
            return refusal;
        }
        let decision = self.decide(category, request, now, effects);
        if let (Some(pass), Some(registration)) = (request.queue_pass, decision.registration())
            && let Some(queue) = &mut self.queue
        {
            queue.use_pass(pass, now);
            self.emit(effects, now, EffectKind::QueuePassUsed { ticket: pass.ticket, registration });
        }
        let recorded = decision.registration().is_none();
        self.record_decision(request.idempotency.as_ref(), &decision, recorded, now, effects);
        Outcome::Decided(decision)
    }

    /// A key seen before answers from its entry: a replay, in flight, or reused with another
    /// body. `Err` carries that answer; `Ok` means the request is to be decided.
    fn check_key(&self, idempotency: Option<&Idempotency>) -> Result<(), Outcome> {
        let Some(idempotency) = idempotency else { return Ok(()) };
        if let Some(entry) = self.idempotency_entry(KeyDigest::of_key(&idempotency.key)) {
            return Err(if entry.fingerprint != idempotency.fingerprint {
                Outcome::KeyReused
            } else if entry.seq > self.durable_seq {
                Outcome::KeyInFlight
            } else {
                Outcome::Replayed(entry.decision.clone())
            });
        }
        if self.idempotency.len() >= self.config.limits.idempotency_entries_max as usize {
            return Err(Outcome::IdempotencyFull);
        }
        Ok(())
    }

    /// Stores a keyed request's decision so that its retries replay it. `emit_record`: the
    /// store learns it from a `DecisionRecorded` effect (a created registration carries its
    /// own decision instead).
    fn record_decision(
        &mut self,
        idempotency: Option<&Idempotency>,
        decision: &Decision,
        emit_record: bool,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) {
        let Some(idempotency) = idempotency else { return };
        if emit_record {
            let kind =
                EffectKind::DecisionRecorded { idempotency: idempotency.clone(), decision: decision.clone() };
            self.emit(effects, now, kind);
        }
        let retention = u64::from(self.config.limits.idempotency_retention_seconds);
        let entry = IdempotencyEntry {
            key: KeyDigest::of_key(&idempotency.key),
            fingerprint: idempotency.fingerprint,
            decision: decision.clone(),
            seq: self.last_seq,
            expires_at: now.plus_seconds(retention),
        };
        self.remember_decision(entry);
    }

    /// `NotOpen` or `Closed` when `now` is outside the registration window.
    fn window_decision(&self, now: Timestamp) -> Option<Decision> {
        if let Some(opens_at) = self.config.opens_at
            && now < opens_at
        {
            return Some(Decision::NotOpen { opens_at });
        }
        if let Some(closes_at) = self.config.closes_at
            && now >= closes_at
        {
            return Some(Decision::Closed);
        }
        None
    }

    fn decide(
        &mut self,
        category: CategoryIndex,
        request: &Register,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Decision {
        if let Some(decision) = self.window_decision(now) {
            return decision;
        }
        let registrant = KeyDigest::of_email(&request.registrant);
        if self.registrants.contains_key(&registrant) {
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
        let registration = RegistrationId(self.next_registration());
        self.slots.push(Slot::VACANT);
        self.insert_active(registration, registrant, category, status);
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

    /// A queued event's registration needs a valid pass: an admitted ticket's pass, or a
    /// sold-out ticket's waitlist pass for a waitlist registration, of the same registrant.
    fn check_queue_pass(&self, request: &Register) -> Result<(), Outcome> {
        let Some(queue) = &self.queue else { return Ok(()) };
        let pass = request.queue_pass.ok_or(Outcome::QueuePassRequired)?;
        let ticket = queue.ticket(pass.ticket).ok_or(Outcome::QueuePassInvalid)?;
        if ticket.registrant != KeyDigest::of_email(&request.registrant) {
            return Err(Outcome::QueuePassInvalid);
        }
        let valid = match (pass.waitlist, ticket.state) {
            (false, StoredTicketState::Admitted { .. }) => true,
            (true, StoredTicketState::Waiting) => {
                request.waitlist && ticket.place > 0 && queue.exhausted(self.seats())
            }
            _ => false,
        };
        if valid { Ok(()) } else { Err(Outcome::QueuePassInvalid) }
    }

    fn join_queue(&mut self, request: &JoinQueue, now: Timestamp, effects: &mut Vec<Effect>) -> Outcome {
        if self.queue.is_none() {
            return Outcome::NoQueue;
        }
        if let Err(answer) = self.check_key(request.idempotency.as_ref()) {
            return answer;
        }
        let decision = match self.decide_join(request, now, effects) {
            Ok(decision) => decision,
            Err(refusal) => return refusal,
        };
        self.record_decision(request.idempotency.as_ref(), &decision, true, now, effects);
        Outcome::Decided(decision)
    }

    /// Decides a join; `Err` for refusals that are not stored with the key (a full queue).
    fn decide_join(
        &mut self,
        request: &JoinQueue,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<Decision, Outcome> {
        let opens_at = self.config.opens_at.expect("a queued event has an opening (validated)");
        let queue = self.queue.as_mut().expect("checked by the caller");
        if now < queue.config.lobby_opens_at {
            return Ok(Decision::NotOpen { opens_at: queue.config.lobby_opens_at });
        }
        if let Some(closes_at) = self.config.closes_at
            && now >= closes_at
        {
            return Ok(Decision::Closed);
        }
        let registrant = KeyDigest::of_email(&request.registrant);
        let (ticket, new) = match queue.by_registrant.get(&registrant) {
            Some(ticket) => (*ticket, false),
            None => {
                if queue.tickets.len() as u64 >= u64::from(queue.config.queue_max) {
                    return Err(Outcome::QueueFull);
                }
                let lobby = now < opens_at;
                let ticket = queue.add(registrant, lobby);
                let kind = EffectKind::QueueJoined { ticket, registrant: request.registrant.clone(), lobby };
                self.emit(effects, now, kind);
                // A ticket that can be let in at once reads `admitted` in its first answer.
                self.admit_waiting(now, effects);
                (ticket, true)
            }
        };
        let view = self.ticket_view(ticket, now).expect("the ticket was just found or made");
        Ok(Decision::QueueJoined { new, view })
    }

    /// Seats available and held, summed over categories.
    fn seats(&self) -> Seats {
        let mut seats = Seats { available: 0, held: 0 };
        for state in &self.categories {
            seats.available += u64::from(state.available());
            seats.held += u64::from(state.held);
        }
        seats
    }

    /// What is due in the queue at `now`, before the command: the draw, then pass expiry.
    fn advance_queue(&mut self, now: Timestamp, effects: &mut Vec<Effect>) {
        let opens_at = self.config.opens_at;
        let Some(queue) = &mut self.queue else { return };
        if !queue.drawn && opens_at.is_some_and(|opens_at| now >= opens_at) {
            queue.draw(&self.config.id);
        }
        for ticket in queue.expire_due_passes(now) {
            self.emit(effects, now, EffectKind::QueuePassExpired { ticket });
        }
    }

    /// Admits waiting tickets, strictly in order, while the passes outstanding stay under
    /// ⌊overbook × seats available⌋ and the pacing allows.
    fn admit_waiting(&mut self, now: Timestamp, effects: &mut Vec<Effect>) {
        let seats = self.seats();
        while let Some(queue) = &mut self.queue
            && queue.can_admit(seats, now)
        {
            let (ticket, pass_expires_at) = queue.admit_next(now);
            self.emit(effects, now, EffectKind::QueueAdmitted { ticket, pass_expires_at });
        }
    }

    /// Whether the queue has work due at `now` that no command has done yet (the draw, an
    /// expiry, an admission): the actor's timer applies `ExpireHolds` then.
    pub fn queue_work_due(&self, now: Timestamp) -> bool {
        let Some(queue) = &self.queue else { return false };
        let draw_due = !queue.drawn && self.config.opens_at.is_some_and(|opens_at| now >= opens_at);
        let expiry_due = queue.passes.first().is_some_and(|(expires_at, _)| *expires_at <= now);
        draw_due || expiry_due || queue.can_admit(self.seats(), now)
    }

    /// The queue, for the figures its actor publishes.
    pub(crate) fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// A ticket as it reads at `now`; `None` for an unknown ticket or an event without a queue.
    pub fn ticket_view(&self, ticket: TicketId, now: Timestamp) -> Option<TicketView> {
        let queue = self.queue.as_ref()?;
        let opens_at = self.config.opens_at.expect("a queued event has an opening (validated)");
        queue.view(ticket, self.seats(), opens_at, now)
    }

    /// The registrant's ticket of a queued event, compared by normalized e-mail digest.
    pub fn ticket_of(&self, registrant: &Email) -> Option<TicketId> {
        self.queue.as_ref()?.by_registrant.get(&KeyDigest::of_email(registrant)).copied()
    }

    /// The queue's figures for `GET /v1/events/{id}`; `None` without a queue.
    pub fn queue_summary(&self, now: Timestamp) -> Option<QueueSummary> {
        let queue = self.queue.as_ref()?;
        Some(QueueSummary {
            drawn: queue.drawn,
            waiting: queue.waiting(),
            admitted_outstanding: queue.passes.len() as u64,
            admission_rate: queue.admission_rate(now),
            tickets: queue.tickets.len() as u64,
        })
    }

    /// The lobby's tickets in drawn order (`GET /v1/events/{id}/queue/draw`); `None` before
    /// the draw or without a queue.
    pub fn drawn_lobby(&self) -> Option<Vec<TicketId>> {
        let queue = self.queue.as_ref().filter(|queue| queue.drawn)?;
        let lobby = queue.order.iter().take_while(|ticket| queue.tickets[ticket.0 as usize - 1].lobby);
        Some(lobby.copied().collect())
    }

    /// The status a registration gets when it takes a seat now.
    fn seat_status(&self, now: Timestamp) -> ActiveStatus {
        match self.config.hold_ttl_seconds {
            0 => ActiveStatus::Confirmed,
            seconds => ActiveStatus::Held { expires_at: now.plus_seconds(u64::from(seconds)) },
        }
    }

    fn idempotency_entry(&self, key: KeyDigest) -> Option<&IdempotencyEntry> {
        let position = *self.idempotency.get(&key)?;
        let entry = &self.idempotency_entries[(position - self.idempotency_front) as usize];
        assert_eq!(entry.key, key, "idempotency index points at another entry");
        Some(entry)
    }

    fn remember_decision(&mut self, mut entry: IdempotencyEntry) {
        // Entries must expire in the order they were made. Clocks of two nodes can disagree
        // across an ownership change, so an entry never expires before the one made before it.
        if let Some(last) = self.idempotency_entries.back() {
            entry.expires_at = entry.expires_at.max(last.expires_at);
        }
        let position = self.idempotency_front + self.idempotency_entries.len() as u64;
        let previous = self.idempotency.insert(entry.key, position);
        assert!(previous.is_none(), "an idempotency key was decided twice");
        self.idempotency_entries.push_back(entry);
    }

    fn forget_expired_idempotency(&mut self, now: Timestamp) {
        while let Some(front) = self.idempotency_entries.front()
            && front.expires_at <= now
        {
            let key = front.key;
            self.idempotency_entries.pop_front();
            self.idempotency.remove(&key);
            self.idempotency_front += 1;
        }
    }

    fn confirm(
        &mut self,
        registration: RegistrationId,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Some(slot) = self.slot(registration).copied() else {
            return Outcome::UnknownRegistration;
        };
        match slot.state {
            SlotState::Vacant => Outcome::UnknownRegistration,
            SlotState::Expired => Outcome::HoldExpired { registration },
            SlotState::Cancelled => Outcome::AlreadyEnded { registration, status: EndedStatus::Cancelled },
            SlotState::Confirmed => Outcome::RegistrationConfirmed { registration, already: true },
            SlotState::Waitlisted => Outcome::NotHeld { registration },
            SlotState::Held => {
                let expires_at = slot.hold_expires_at;
                // Due holds expired at the start of apply, so this one is still running.
                assert!(expires_at > now, "a due hold survived the expiry pass");
                self.slot_mut(registration).set_active(ActiveStatus::Confirmed);
                let category = &mut self.categories[usize::from(slot.category)];
                category.held -= 1;
                category.confirmed += 1;
                assert!(self.holds.remove(&(expires_at, registration)), "a hold was not indexed");
                self.emit(effects, now, EffectKind::Confirmed { registration });
                Outcome::RegistrationConfirmed { registration, already: false }
            }
        }
    }

    fn cancel(&mut self, registration: RegistrationId, now: Timestamp, effects: &mut Vec<Effect>) -> Outcome {
        let Some(slot) = self.slot(registration).copied() else {
            return Outcome::UnknownRegistration;
        };
        match slot.state {
            SlotState::Vacant => Outcome::UnknownRegistration,
            SlotState::Cancelled => Outcome::RegistrationCancelled { registration, already: true },
            SlotState::Expired => Outcome::AlreadyEnded { registration, status: EndedStatus::Expired },
            SlotState::Held | SlotState::Confirmed | SlotState::Waitlisted => {
                let category = self.end_active(registration, EndedStatus::Cancelled);
                self.emit(effects, now, EffectKind::Cancelled { registration });
                self.promote(category, now, effects);
                Outcome::RegistrationCancelled { registration, already: false }
            }
        }
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
            let slot = self.slot_mut(registration);
            assert_eq!(slot.state, SlotState::Waitlisted, "the waitlist held a seated registration");
            slot.set_active(status);
            self.emit(effects, now, EffectKind::Promoted { registration, status });
            promoted += 1;
        }
        promoted
    }

    /// Seats (or waitlists) a registration whose slot exists and is vacant.
    fn insert_active(
        &mut self,
        registration: RegistrationId,
        registrant: KeyDigest,
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
        let previous = self.registrants.insert(registrant, registration);
        assert!(previous.is_none(), "a registrant got a second active registration");
        let slot = self.slot_mut(registration);
        assert_eq!(slot.state, SlotState::Vacant, "a registration number was used twice");
        *slot = Slot { registrant, hold_expires_at: Timestamp::ZERO, category, state: SlotState::Vacant };
        slot.set_active(status);
        self.active += 1;
    }

    /// Ends an active registration and remembers how; returns its category.
    fn end_active(&mut self, registration: RegistrationId, ended: EndedStatus) -> CategoryIndex {
        let slot = *self.slot(registration).expect("ending a registration that exists");
        let state = &mut self.categories[usize::from(slot.category)];
        match slot.state {
            SlotState::Confirmed => state.confirmed -= 1,
            SlotState::Held => {
                state.held -= 1;
                let indexed = self.holds.remove(&(slot.hold_expires_at, registration));
                assert!(indexed, "a hold was not indexed");
            }
            SlotState::Waitlisted => {
                let index = state.waitlist.iter().position(|waiting| *waiting == registration);
                state.waitlist.remove(index.expect("a waitlisted registration is on its waitlist"));
            }
            other => panic!("ending registration {registration} in state {other:?}"),
        }
        self.registrants.remove(&slot.registrant);
        self.active -= 1;
        self.slot_mut(registration).state = match ended {
            EndedStatus::Cancelled => SlotState::Cancelled,
            EndedStatus::Expired => SlotState::Expired,
        };
        slot.category
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
        assert_eq!(active, self.active, "counters disagree with the registrations");
        assert_eq!(self.registrants.len(), self.active, "registrants and registrations disagree");
        assert_eq!(held, self.holds.len(), "held counters disagree with the hold index");
        assert_eq!(self.idempotency.len(), self.idempotency_entries.len());
        if let Some(queue) = &self.queue {
            queue.check_invariants();
            assert!(queue.drawn || queue.passes.is_empty(), "a pass was issued before the draw");
        }
        self.applies += 1;
        let tickets = self.queue.as_ref().map_or(0, |queue| queue.tickets.len());
        let small = cfg!(debug_assertions) && self.slots.len() + tickets <= DEBUG_FULL_CHECK_ENTRIES_MAX;
        if small || self.applies.is_multiple_of(FULL_CHECK_INTERVAL_APPLIES) {
            self.check_invariants_fully();
        }
    }

    /// Recounts everything from the registrations and compares with the counters and indexes.
    /// O(registrations); panics on the first disagreement.
    ///
    /// The two indexes are walked in their own order, each entry checked against the record it
    /// names, rather than looked up once per record: a look-up lands on a line of the table
    /// that is seldom in the cache (the checks run after a rebuild and at the end of every
    /// simulated run). With as many entries as records, distinct keys, and each entry naming a
    /// record with its key, every record is indexed under its key, which is what is checked.
    pub fn check_invariants_fully(&self) {
        let mut counts = vec![(0u32, 0u32, 0u32); self.categories.len()];
        let mut active = 0;
        for (registrant, id) in &self.registrants {
            let indexed = self.slot(*id).filter(|slot| slot.active_status().is_some());
            assert!(indexed.is_some_and(|slot| slot.registrant == *registrant), "registrant index is wrong");
        }
        for (index, slot) in self.slots.iter().enumerate() {
            let id = RegistrationId(index as u64 + 1);
            let Some(status) = slot.active_status() else { continue };
            active += 1;
            let count = &mut counts[usize::from(slot.category)];
            match status {
                ActiveStatus::Confirmed => count.0 += 1,
                ActiveStatus::Held { expires_at } => {
                    count.1 += 1;
                    assert!(self.holds.contains(&(expires_at, id)), "hold of {id} is not indexed");
                }
                ActiveStatus::Waitlisted => count.2 += 1,
            }
        }
        assert_eq!(active, self.active, "active count differs from a recount");
        assert_eq!(self.registrants.len(), active, "registrant index is wrong");
        for (index, state) in self.categories.iter().enumerate() {
            let (confirmed, held, waitlisted) = counts[index];
            assert_eq!((state.confirmed, state.held), (confirmed, held), "counters differ from a recount");
            assert_eq!(state.waitlist.len() as u32, waitlisted, "waitlist differs from a recount");
            let mut previous = None;
            for waiting in &state.waitlist {
                let slot = self.slot(*waiting).expect("a waitlisted number exists");
                assert_eq!(slot.state, SlotState::Waitlisted);
                assert_eq!(usize::from(slot.category), index);
                assert!(previous < Some(*waiting), "waitlist is out of arrival order");
                previous = Some(*waiting);
            }
        }
        for entry in &self.idempotency_entries {
            assert!(entry.seq <= self.last_seq, "an idempotency entry is beyond the last effect");
        }
        assert_eq!(self.idempotency.len(), self.idempotency_entries.len(), "idempotency index is wrong");
        for (key, position) in &self.idempotency {
            let offset =
                position.checked_sub(self.idempotency_front).and_then(|offset| usize::try_from(offset).ok());
            let entry = offset.and_then(|offset| self.idempotency_entries.get(offset));
            assert!(entry.is_some_and(|entry| entry.key == *key), "idempotency index is wrong");
        }
        if let Some(queue) = &self.queue {
            queue.check_invariants_fully();
        }
    }
}

impl QuotaBuilder {
    /// Rebuilds the queue from its tickets: numbers are dense from 1; the lobby waits for the
    /// draw, which the first apply at or after `opens_at` runs (again) from the same seed and
    /// ids, so that every ticket gets back its place; later joins follow in number order,
    /// which is the order they were committed in. Admissions are a prefix of that order (and
    /// waitlist-pass uses), so the cursor and pacing need no stored state of their own.
    fn restore_queue(&mut self) -> Result<(), RestoreError> {
        let Some(queue) = self.quota.queue.as_mut() else { return Ok(()) };
        self.tickets.sort_unstable_by_key(|(ticket, ..)| *ticket);
        for (expected, (ticket, registrant, lobby, state)) in self.tickets.drain(..).enumerate() {
            if ticket != TicketId(expected as u64 + 1) {
                return Err(RestoreError::TicketMissing(TicketId(expected as u64 + 1)));
            }
            queue.add(registrant, lobby);
            queue.ticket_mut(ticket).state = state;
            if let StoredTicketState::Admitted { pass_expires_at } = state {
                queue.passes.insert((pass_expires_at, ticket));
            }
        }
        let moved = queue.tickets.iter().any(|ticket| ticket.state != StoredTicketState::Waiting);
        if !queue.order.is_empty() || moved {
            // A ticket joined after the opening or was admitted, so the draw had run: run it
            // again now to give every ticket its place back.
            let event = self.quota.config.id.clone();
            queue.draw(&event);
        }
        queue.settle_cursor();
        for index in queue.cursor..queue.order.len() {
            if queue.tickets[queue.order[index].0 as usize - 1].state != StoredTicketState::Waiting {
                queue.left_early.insert(index);
            }
        }
        queue.restore_admission_rate(&std::mem::take(&mut self.passes));
        Ok(())
    }
}

/// Rebuilds an `EventQuota` from stored rows, one at a time, so that recovery can stream them.
#[derive(Debug)]
pub struct QuotaBuilder {
    quota: EventQuota,
    idempotency: Vec<IdempotencyEntry>,
    tickets: Vec<(TicketId, KeyDigest, bool, StoredTicketState)>,
    /// The stored tickets' pass times, for the admission rate.
    passes: Vec<PassTimes>,
}

impl QuotaBuilder {
    pub fn new(config: EventConfig) -> Result<Self, RestoreError> {
        Ok(QuotaBuilder::around(EventQuota::new(config)?))
    }

    /// `new`, growing into the tables `spare` allocated (see `EventQuota::new_reusing`).
    pub fn new_reusing(config: EventConfig, spare: EventQuota) -> Result<Self, RestoreError> {
        Ok(QuotaBuilder::around(EventQuota::new_reusing(config, spare)?))
    }

    fn around(quota: EventQuota) -> Self {
        QuotaBuilder { quota, idempotency: Vec::new(), tickets: Vec::new(), passes: Vec::new() }
    }

    pub fn add_registration(&mut self, record: RegistrationRecord) -> Result<(), RestoreError> {
        self.add_registration_of(record.registration, &record.category, &record.registrant, record.status)
    }

    /// `add_registration` from borrowed parts, for a caller that keeps the rows itself (the
    /// simulator rebuilds the event from its store view at every reload): nothing is cloned,
    /// and the registrant's e-mail is only read for the digest it carries.
    pub fn add_registration_of(
        &mut self,
        id: RegistrationId,
        category_code: &CategoryCode,
        registrant: &Email,
        status: ActiveStatus,
    ) -> Result<(), RestoreError> {
        let quota = &mut self.quota;
        let category = quota.config.category_index(category_code).ok_or(RestoreError::UnknownCategory(id))?;
        let index = usize::try_from(id.0.checked_sub(1).ok_or(RestoreError::DuplicateRegistration(id))?)
            .map_err(|_| RestoreError::RegistrationNumberTooHigh(id))?;
        if quota.slots.get(index).is_some_and(|slot| slot.state != SlotState::Vacant) {
            return Err(RestoreError::DuplicateRegistration(id));
        }
        let registrant = KeyDigest::of_email(registrant);
        if quota.registrants.contains_key(&registrant) {
            return Err(RestoreError::DuplicateRegistrant(id));
        }
        if status != ActiveStatus::Waitlisted {
            let state = &quota.categories[usize::from(category)];
            if state.taken() >= state.capacity {
                return Err(RestoreError::OverCapacity(category_code.clone()));
            }
        }
        if quota.slots.len() <= index {
            quota.slots.resize(index + 1, Slot::VACANT);
        }
        quota.insert_active(id, registrant, category, status);
        Ok(())
    }

    /// Adds a stored ticket; tickets may come in any order.
    pub fn add_ticket(&mut self, record: TicketRecord) -> Result<(), RestoreError> {
        let queue = self.quota.queue.as_mut().ok_or(RestoreError::TicketWithoutQueue(record.ticket))?;
        let registrant = KeyDigest::of_email(&record.registrant);
        if queue.by_registrant.contains_key(&registrant) {
            return Err(RestoreError::DuplicateTicket(record.ticket));
        }
        self.tickets.push((record.ticket, registrant, record.lobby, record.state));
        self.passes.extend(record.pass);
        Ok(())
    }

    /// Room for `additional` more `add_idempotency` records, for a caller that knows how many.
    pub fn reserve_idempotency(&mut self, additional: usize) {
        self.idempotency.reserve(additional);
    }

    pub fn add_idempotency(&mut self, record: IdempotencyRecord) {
        let key = KeyDigest::of_key(&record.key);
        self.push_idempotency(key, record.fingerprint, record.decision, record.decided_at);
    }

    /// `add_idempotency` from a borrowed record (see `add_registration_of`): only the decision
    /// is cloned.
    pub fn add_idempotency_of(&mut self, record: &IdempotencyRecord) {
        let key = KeyDigest::of_key(&record.key);
        self.push_idempotency(key, record.fingerprint, record.decision.clone(), record.decided_at);
    }

    fn push_idempotency(
        &mut self,
        key: KeyDigest,
        fingerprint: Fingerprint,
        decision: Decision,
        decided_at: Timestamp,
    ) {
        let retention = u64::from(self.quota.config.limits.idempotency_retention_seconds);
        let expires_at = decided_at.plus_seconds(retention);
        self.idempotency.push(IdempotencyEntry { key, fingerprint, decision, seq: Seq(0), expires_at });
    }

    /// Finishes the rebuild: `next_registration` and `last_seq` come from the store (the
    /// highest ever issued, ended registrations included). Everything loaded is durable.
    pub fn finish(mut self, next_registration: u64, last_seq: Seq) -> Result<EventQuota, RestoreError> {
        self.restore_queue()?;
        let quota = &mut self.quota;
        let issued = next_registration.saturating_sub(1);
        if quota.slots.len() as u64 > issued {
            return Err(RestoreError::RegistrationNumberTooHigh(RegistrationId(quota.slots.len() as u64)));
        }
        quota.slots.resize(issued as usize, Slot::VACANT);
        quota.last_seq = last_seq;
        quota.durable_seq = last_seq;
        for state in &mut quota.categories {
            state.waitlist.make_contiguous().sort_unstable();
        }
        let mut idempotency = std::mem::take(&mut self.idempotency);
        idempotency.sort_by_key(|entry| entry.expires_at);
        // Grown once, instead of doubling (and rehashing) past the reservation on the way.
        quota.idempotency_entries.reserve(idempotency.len());
        quota.idempotency.reserve(idempotency.len());
        for mut entry in idempotency {
            if quota.idempotency.contains_key(&entry.key) {
                continue;
            }
            entry.seq = last_seq;
            quota.remember_decision(entry);
        }
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
