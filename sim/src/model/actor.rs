//! The event actor, modelled on `engine/src/actor/event_actor.rs`: one command at a time from
//! a bounded mailbox, a bound on decisions waiting for durability, a write-queue slot reserved
//! before deciding, answers released in decision order once durable, and a hold-expiry timer.
//! The decision itself is `EventQuota::apply`, at the virtual time the command is handled.

use std::collections::VecDeque;

use kuota_engine::limits::HOLD_EXPIRY_TICK_MS;
use kuota_engine::{
    ActiveStatus, Command, Decision, Effect, EffectKind, EventQuota, Fingerprint, Idempotency, Outcome,
    Register, RegistrationId, Seq,
};

use super::agenda::{Action, EventKind, Incarnation};
use super::node::FastPath;
use super::{Simulation, micros_of};
use crate::distribution::{MICROS_PER_MILLI, Micros};
use crate::metrics::AnswerClass;
use crate::scenario::EventSection;

/// The actor's hold-expiry timer period, in microseconds (the engine's `HOLD_EXPIRY_TICK_MS`).
const HOLD_TICK_US: Micros = HOLD_EXPIRY_TICK_MS * MICROS_PER_MILLI;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Request(u32),
    /// The hold-expiry timer's command; it runs on the actor but never waits in the mailbox.
    ExpireHolds,
}

/// A decision taken and not yet answered.
#[derive(Clone, Debug)]
struct Pending {
    request: Option<u32>,
    outcome: Outcome,
    last_seq: Seq,
    /// The write-behind submission carrying its effects; `None` when it had none.
    submission: Option<u64>,
}

/// Where an actor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ActorState {
    /// Loading the event after a claim: requests wait in the mailbox.
    Loading,
    Serving,
    /// Reloading after the store failed a write: requests are refused (`ActorError::Recovering`).
    Recovering,
    /// Stepped down or died; another actor (or nobody yet) owns the event.
    Stopped,
}

#[derive(Debug)]
pub(super) struct Actor {
    pub(super) quota: EventQuota,
    /// This life of the actor, for its timers (see `EventKind::ActorDone`).
    pub(super) incarnation: Incarnation,
    /// The store epoch its writes carry (`EventActorParts::epoch`).
    pub(super) epoch: u64,
    pub(super) node: u32,
    pub(super) state: ActorState,
    mailbox: VecDeque<Job>,
    requests_in_mailbox: usize,
    current: Option<Job>,
    pending: VecDeque<Pending>,
    expire_job_queued: bool,
    pub(super) tick_at: Option<Micros>,
    /// When the current load attempt started and the database time it needs.
    pub(super) load_work: (Micros, Micros),
    /// A load waits until then for the writer to find the store answering (`StoreHealth`).
    pub(super) load_wait_until: Option<Micros>,
    pub(super) fast_path: FastPath,
    waitlist_length_max: u32,
}

/// `clone_from` copies into what `self` allocated, the quota's tables above all (see
/// `Simulation`'s `clone_from`).
impl Clone for Actor {
    fn clone(&self) -> Self {
        Actor {
            quota: self.quota.clone(),
            incarnation: self.incarnation,
            epoch: self.epoch,
            node: self.node,
            state: self.state,
            mailbox: self.mailbox.clone(),
            requests_in_mailbox: self.requests_in_mailbox,
            current: self.current,
            pending: self.pending.clone(),
            expire_job_queued: self.expire_job_queued,
            tick_at: self.tick_at,
            load_work: self.load_work,
            load_wait_until: self.load_wait_until,
            fast_path: self.fast_path.clone(),
            waitlist_length_max: self.waitlist_length_max,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Actor {
            quota,
            incarnation,
            epoch,
            node,
            state,
            mailbox,
            requests_in_mailbox,
            current,
            pending,
            expire_job_queued,
            tick_at,
            load_work,
            load_wait_until,
            fast_path,
            waitlist_length_max,
        } = source;
        self.quota.clone_from(quota);
        self.incarnation = *incarnation;
        self.epoch = *epoch;
        self.node = *node;
        self.state = *state;
        self.mailbox.clone_from(mailbox);
        self.requests_in_mailbox = *requests_in_mailbox;
        self.current = *current;
        self.pending.clone_from(pending);
        self.expire_job_queued = *expire_job_queued;
        self.tick_at = *tick_at;
        self.load_work = *load_work;
        self.load_wait_until = *load_wait_until;
        self.fast_path.clone_from(fast_path);
        self.waitlist_length_max = *waitlist_length_max;
    }
}

impl Actor {
    pub(super) fn new(quota: EventQuota, event: &EventSection, node: u32, incarnation: Incarnation) -> Self {
        Actor {
            fast_path: FastPath::new(event.categories.len()),
            quota,
            incarnation,
            epoch: 1,
            node,
            state: ActorState::Serving,
            mailbox: VecDeque::new(),
            requests_in_mailbox: 0,
            current: None,
            pending: VecDeque::new(),
            expire_job_queued: false,
            tick_at: None,
            load_work: (0, 0),
            load_wait_until: None,
            waitlist_length_max: event.waitlist_length_max,
        }
    }
}

impl Actor {
    pub(super) fn is_running(&self) -> bool {
        self.state != ActorState::Stopped
    }

    pub(super) fn is_loading(&self) -> bool {
        matches!(self.state, ActorState::Loading | ActorState::Recovering)
    }

    /// Stops the actor; returns the requests it held (in service, in its mailbox, or waiting
    /// for durability), which its stopping answers (`EventActor::stopped`).
    pub(super) fn stop(&mut self) -> Vec<u32> {
        self.state = ActorState::Stopped;
        let mut held = Vec::new();
        if let Some(Job::Request(slot)) = self.current.take() {
            held.push(slot);
        }
        held.extend(self.mailbox.drain(..).filter_map(|job| match job {
            Job::Request(slot) => Some(slot),
            Job::ExpireHolds => None,
        }));
        held.extend(self.pending.drain(..).filter_map(|pending| pending.request));
        self.requests_in_mailbox = 0;
        self.expire_job_queued = false;
        self.tick_at = None;
        held
    }
}

/// How an engine outcome is answered: its class, the registration it names, and whether it is
/// a replay of an earlier decision.
fn classify(outcome: &Outcome) -> (AnswerClass, Option<RegistrationId>, bool) {
    let decision = |decision: &Decision| match decision {
        Decision::Held { .. } => AnswerClass::Held,
        Decision::Confirmed { .. } => AnswerClass::Confirmed,
        Decision::Waitlisted { .. } => AnswerClass::Waitlisted,
        Decision::SoldOut => AnswerClass::SoldOut,
        Decision::AlreadyRegistered => AnswerClass::AlreadyRegistered,
        Decision::NotOpen { .. } | Decision::Closed => AnswerClass::OtherRefusal,
        // Simulated events have no queue (yet).
        Decision::QueueJoined { .. } => AnswerClass::OtherRefusal,
    };
    match outcome {
        Outcome::Decided(made) => (decision(made), made.registration(), false),
        Outcome::Replayed(made) => (decision(made), made.registration(), true),
        Outcome::KeyInFlight => (AnswerClass::KeyInFlight, None, false),
        Outcome::IdempotencyFull => (AnswerClass::ShedIdempotencyFull, None, false),
        Outcome::RegistrationConfirmed { registration, .. } => {
            (AnswerClass::PaymentConfirmed, Some(*registration), false)
        }
        Outcome::HoldExpired { registration } => (AnswerClass::HoldExpired, Some(*registration), false),
        Outcome::RegistrationCancelled { registration, .. } => {
            (AnswerClass::Cancelled, Some(*registration), false)
        }
        _ => (AnswerClass::OtherRefusal, None, false),
    }
}

impl Simulation<'_> {
    /// A request reaches the owner's handler: refused at once while the store does not commit
    /// (`refuse_if_stalled`), shed when the actor's mailbox is full, else queued for the actor.
    pub(super) fn actor_receive(&mut self, slot: u32) {
        if self.store_stalled() {
            return self.answer(slot, AnswerClass::ShedStoreStalled, None, true);
        }
        if self.actor.requests_in_mailbox >= self.scenario.system.mailbox_capacity_max as usize {
            return self.answer(slot, AnswerClass::ShedMailbox, None, true);
        }
        self.actor.mailbox.push_back(Job::Request(slot));
        self.actor.requests_in_mailbox += 1;
        self.metrics.observe_mailbox(self.now, self.actor.requests_in_mailbox as u64);
        self.start_next_job();
    }

    pub(super) fn start_next_job(&mut self) {
        if self.actor.current.is_some()
            || matches!(self.actor.state, ActorState::Loading | ActorState::Stopped)
        {
            return;
        }
        let Some(job) = self.actor.mailbox.pop_front() else {
            return;
        };
        if let Job::Request(_) = job {
            self.actor.requests_in_mailbox -= 1;
        }
        self.actor.current = Some(job);
        let service = self.settings.actor_service.sample_micros(&mut self.system_rng);
        self.schedule_in(service, EventKind::ActorDone { incarnation: self.actor.incarnation });
    }

    pub(super) fn actor_done(&mut self, incarnation: Incarnation) {
        if self.actor.incarnation != incarnation || !self.actor.is_running() {
            return;
        }
        let job = self.actor.current.take().expect("ActorDone is only scheduled for a job in service");
        self.decide(job);
        self.start_next_job();
    }

    /// The actor's `decide`: bounds first, then the engine, then the effects to the writer.
    fn decide(&mut self, job: Job) {
        let request = match job {
            Job::Request(slot) => Some(slot),
            Job::ExpireHolds => {
                self.actor.expire_job_queued = false;
                None
            }
        };
        let system = &self.scenario.system;
        if self.health.breaker_open && self.actor.state == ActorState::Serving {
            // The writer refuses every write while its breaker is open (`open_breaker`); the
            // decision would be rolled back at once, so it is not taken.
            if let Some(slot) = request {
                self.answer(slot, AnswerClass::ShedStoreFailed, None, true);
            }
            return self.roll_back();
        }
        let refusal = if self.actor.state == ActorState::Recovering {
            Some(AnswerClass::ShedStoreFailed)
        } else if self.actor.pending.len() >= system.pending_decisions_max as usize {
            Some(AnswerClass::ShedPendingDecisions)
        } else if self.writer.is_full(system.write_queue_max) {
            Some(AnswerClass::ShedWriteQueue)
        } else {
            None
        };
        if let Some(class) = refusal {
            if let Some(slot) = request {
                self.answer(slot, class, None, true);
            }
            return;
        }
        let command = match request {
            Some(slot) => self.command_for(slot),
            None => Command::ExpireHolds,
        };
        // The effects go into a vector kept for the next decision, and from it to the writer's
        // queue: a decision allocates nothing (a seed takes some 12,000).
        let mut effects = std::mem::take(&mut self.effects_scratch);
        let outcome = self.actor.quota.apply_into(&command, self.timestamp(), &mut effects);
        self.after_apply(request, &outcome, &effects);
        self.hold_for_durability(request, outcome, &mut effects);
        effects.clear();
        self.effects_scratch = effects;
    }

    fn command_for(&mut self, slot: u32) -> Command {
        let request = *self.requests.get(slot);
        let index = request.registrant;
        let registrant = &mut self.registrants[index as usize];
        let told = RegistrationId(registrant.told_registration);
        match request.action {
            Action::Register => Command::Register({
                let (email, key) = super::client::identity(index);
                Register {
                    category: self.codes[usize::from(registrant.category)].clone(),
                    registrant: email,
                    idempotency: Some(Idempotency { key, fingerprint: Fingerprint(index.into()) }),
                    waitlist: registrant.wants_waitlist,
                    details: self.details.clone(),
                    queue_pass: None,
                }
            }),
            Action::Confirm => Command::Confirm { registration: told },
            Action::Cancel => Command::Cancel { registration: told },
        }
    }

    /// Bookkeeping right after a decision: who asked for new registrations, admissions, the
    /// published counters and the hold timer.
    fn after_apply(&mut self, request: Option<u32>, outcome: &Outcome, effects: &[Effect]) {
        for effect in effects {
            if let EffectKind::Created { registration, .. } = effect.kind {
                // Only a register command creates registrations, and only for its registrant.
                let registrant =
                    self.requests.get(request.expect("a Created effect comes from a request")).registrant;
                self.registrants[registrant as usize].engine_registration = registration.0;
            }
        }
        if let Outcome::Decided(Decision::Held { .. } | Decision::Confirmed { .. }) = outcome {
            self.metrics.second(self.now).admissions += 1;
        }
        self.publish_counters();
        self.arm_hold_tick();
    }

    pub(super) fn publish_counters(&mut self) {
        let mut all_full = true;
        for index in 0..self.codes.len() {
            let (capacity, confirmed, held, waitlisted) = self.actor.quota.category_counts(index as u16);
            let no_seat = confirmed + held >= capacity;
            let waitlist_full = waitlisted >= self.actor.waitlist_length_max;
            self.actor.fast_path.publish(index, no_seat, waitlist_full, self.now);
            all_full &= no_seat;
        }
        if all_full && self.metrics.sold_out_at.is_none() {
            self.metrics.sold_out_at = Some(self.now);
        }
    }

    /// Answers at once when nothing is pending; otherwise queues the answer behind the
    /// decisions before it, and hands the effects to the writer.
    fn hold_for_durability(&mut self, request: Option<u32>, outcome: Outcome, effects: &mut Vec<Effect>) {
        let last_seq = self.actor.quota.last_seq();
        if effects.is_empty() && self.actor.pending.is_empty() {
            if let Some(slot) = request {
                self.answer_outcome(slot, &outcome);
            }
            return;
        }
        let epoch = self.actor.epoch;
        let submission = (!effects.is_empty()).then(|| self.submit(effects, epoch));
        self.actor.pending.push_back(Pending { request, outcome, last_seq, submission });
        self.metrics.pending_peak = self.metrics.pending_peak.max(self.actor.pending.len() as u64);
    }

    fn answer_outcome(&mut self, slot: u32, outcome: &Outcome) {
        let (class, registration, replayed) = classify(outcome);
        self.requests.get_mut(slot).replayed = replayed;
        self.answer(slot, class, registration, true);
    }

    /// Answers, in order, the pending decisions whose effects are all committed.
    pub(super) fn release_durable(&mut self) {
        let durable_below = self.writer.durable_below();
        while let Some(front) = self.actor.pending.front() {
            if front.submission.is_some_and(|submission| submission >= durable_below) {
                return;
            }
            let entry = self.actor.pending.pop_front().expect("the loop condition just saw the front entry");
            self.actor.quota.mark_durable(entry.last_seq);
            if let Some(slot) = entry.request {
                self.answer_outcome(slot, &entry.outcome);
            }
        }
    }

    /// The store failed a write of this actor: every unanswered decision fails (503) and the
    /// event is reloaded from what the store holds (`EventActor::roll_back`).
    pub(super) fn roll_back(&mut self) {
        let failed: Vec<u32> = self.actor.pending.drain(..).filter_map(|pending| pending.request).collect();
        for slot in failed {
            self.answer(slot, AnswerClass::ShedStoreFailed, None, true);
        }
        let writer = self.cluster.next_incarnation();
        self.writer.fail_everything(writer);
        self.begin_load(ActorState::Recovering);
    }

    /// Makes sure a timer tick comes at the first tick boundary at or after the next expiry.
    pub(super) fn arm_hold_tick(&mut self) {
        let Some(expiry) = self.actor.quota.next_hold_expiry() else {
            return;
        };
        let due = micros_of(expiry).max(self.now + 1);
        let tick = due.div_ceil(HOLD_TICK_US) * HOLD_TICK_US;
        if self.actor.tick_at.is_none_or(|at| at > tick) {
            self.actor.tick_at = Some(tick);
            self.agenda.schedule(tick, EventKind::HoldTick { incarnation: self.actor.incarnation });
        }
    }

    pub(super) fn hold_tick(&mut self, incarnation: Incarnation) {
        if self.actor.incarnation != incarnation || self.actor.state != ActorState::Serving {
            return;
        }
        if self.actor.tick_at == Some(self.now) {
            self.actor.tick_at = None;
        }
        let due = self.actor.quota.next_hold_expiry().is_some_and(|expiry| micros_of(expiry) <= self.now);
        if due && !self.actor.expire_job_queued {
            self.actor.expire_job_queued = true;
            self.actor.mailbox.push_back(Job::ExpireHolds);
            self.start_next_job();
        }
        self.arm_hold_tick();
    }

    /// Counts a committed effect by kind.
    pub(super) fn count_effect(&mut self, effect: &Effect) {
        let counts = &mut self.metrics.effects;
        match &effect.kind {
            EffectKind::Created { status: ActiveStatus::Held { .. }, .. } => counts.created_held += 1,
            EffectKind::Created { status: ActiveStatus::Confirmed, .. } => counts.created_confirmed += 1,
            EffectKind::Created { status: ActiveStatus::Waitlisted, .. } => counts.created_waitlisted += 1,
            EffectKind::Confirmed { .. } => counts.confirmed += 1,
            EffectKind::Cancelled { .. } => counts.cancelled += 1,
            EffectKind::Expired { .. } => counts.expired += 1,
            EffectKind::Promoted { .. } => counts.promoted += 1,
            EffectKind::DecisionRecorded { .. } => counts.decisions_recorded += 1,
            EffectKind::CapacityChanged { .. } => counts.other += 1,
            // Simulated events have no queue (yet).
            EffectKind::QueueJoined { .. }
            | EffectKind::QueueAdmitted { .. }
            | EffectKind::QueuePassExpired { .. }
            | EffectKind::QueuePassUsed { .. } => counts.other += 1,
        }
    }
}
