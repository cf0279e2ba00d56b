//! Registrants: who they are, when they send what, and what they do with each answer.

use std::cell::RefCell;

use kuota_engine::{Email, IdempotencyKey, RegistrationId};

use super::agenda::{Action, EventKind};
use super::timers::Next;
use super::{Request, Simulation};
use crate::distribution::Micros;
use crate::invariants::{CHECK_CLIENT_ONE_ID, Promotion, StoredStatus, registrant_email};
use crate::metrics::AnswerClass;

/// What a registrant last heard about their registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientState {
    Waiting,
    Held,
    Confirmed,
    Waitlisted,
    Expired,
    Cancelled,
    SoldOut,
    AlreadyRegistered,
    GaveUp,
    Other,
}

/// One registrant: their choices, drawn when they arrive, and where their story stands.
#[derive(Clone, Debug)]
pub(super) struct Registrant {
    pub(super) category: u16,
    pub(super) wants_waitlist: bool,
    impatient: bool,
    pays: bool,
    cancels: bool,
    /// Register requests sent so far; the answer to an older one is ignored (superseded).
    pub(super) register_sequence: u32,
    register_attempt: u32,
    awaiting_register: bool,
    first_sent_at: Micros,
    /// The registration id the registrant was told (0: none).
    pub(super) told_registration: u64,
    /// The registration the engine created for them (0: none), known or not to them.
    pub(super) engine_registration: u64,
    pub(super) state: ClientState,
    confirm_scheduled: bool,
    cancel_scheduled: bool,
    pub(super) rate_window: u64,
    pub(super) rate_count: u32,
    /// One of the live fault suite's probe registrations (`suite`), not one of the crowd.
    pub(super) suite_probe: bool,
}

impl Registrant {
    /// A registrant of the first category who has not sent anything yet and wants nothing but
    /// to register once.
    fn waiting(now: Micros) -> Self {
        Registrant {
            category: 0,
            wants_waitlist: false,
            impatient: false,
            pays: false,
            cancels: false,
            register_sequence: 0,
            register_attempt: 0,
            awaiting_register: false,
            first_sent_at: now,
            told_registration: 0,
            engine_registration: 0,
            state: ClientState::Waiting,
            confirm_scheduled: false,
            cancel_scheduled: false,
            rate_window: u64::MAX,
            rate_count: 0,
            suite_probe: false,
        }
    }

    /// A probe registration of the live fault suite: a new registrant for the first category,
    /// who only registers, once.
    pub(super) fn suite_probe(now: Micros) -> Self {
        Registrant { suite_probe: true, ..Registrant::waiting(now) }
    }
}

thread_local! {
    /// Registrant number `i`'s e-mail address and form key, at `i`: they depend on the number
    /// alone, so they are made once per thread, not once per run (a swarm runs thousands of
    /// seeds on each thread). As long as the largest crowd run on the thread (a scenario's
    /// `registrants`, which validation bounds).
    static IDENTITIES: RefCell<Vec<(Email, IdempotencyKey)>> = const { RefCell::new(Vec::new()) };
}

/// Registrant `index`'s e-mail address and the `Idempotency-Key` of their registration form,
/// kept across refreshes and retries like a well-behaved front end does; one look-up for both.
pub(super) fn identity(index: u32) -> (Email, IdempotencyKey) {
    IDENTITIES.with_borrow_mut(|identities| {
        while identities.len() <= index as usize {
            let number = identities.len() as u32;
            let email = Email::parse(&registrant_email(number)).expect("the simulator's addresses are valid");
            let key = IdempotencyKey::parse(&format!("sim-{number}"))
                .expect("the simulator's keys are printable ASCII");
            identities.push((email, key));
        }
        identities[index as usize].clone()
    })
}

impl Simulation<'_> {
    pub(super) fn schedule_next_arrival(&mut self) {
        if let Some(at) = self.arrivals.get(self.next_arrival) {
            self.agenda.schedule(*at, EventKind::Arrival);
        }
    }

    /// The next registrant draws their choices and presses "register".
    pub(super) fn arrive(&mut self) {
        let index = self.registrants.len() as u32;
        let registrant = self.draw_registrant();
        self.registrants.push(registrant);
        self.next_arrival += 1;
        self.metrics.second(self.now).arrivals += 1;
        self.send(index, Action::Register, 1);
        self.schedule_next_arrival();
    }

    fn draw_registrant(&mut self) -> Registrant {
        let behaviour = &self.scenario.behaviour;
        let rng = &mut self.behaviour_rng;
        let pick = rng.unit();
        let category = self.demand_cumulative.iter().position(|limit| pick < *limit);
        // Rounding can leave the last cumulative share a hair below 1; the last category then.
        let category = category.unwrap_or(self.demand_cumulative.len() - 1) as u16;
        Registrant {
            category,
            wants_waitlist: rng.chance(behaviour.waitlist_share),
            impatient: rng.chance(behaviour.impatient_share),
            pays: rng.chance(behaviour.pay_share),
            cancels: rng.chance(behaviour.cancel_share),
            ..Registrant::waiting(self.now)
        }
    }

    /// Sends one request: it reaches a node after half a round trip.
    pub(super) fn send(&mut self, index: u32, action: Action, attempt: u32) {
        let round_trip_us = self.settings.network_round_trip.sample_micros(&mut self.system_rng);
        let node = self.nodes.pick();
        self.send_via(index, action, attempt, node, round_trip_us);
    }

    /// `send` to `node`, with a drawn round trip.
    pub(super) fn send_via(
        &mut self,
        index: u32,
        action: Action,
        attempt: u32,
        node: u32,
        round_trip_us: Micros,
    ) {
        let registrant = &mut self.registrants[index as usize];
        if action == Action::Register {
            registrant.register_sequence += 1;
            registrant.register_attempt = attempt;
            registrant.awaiting_register = true;
        }
        let (sequence, impatient) = (registrant.register_sequence, registrant.impatient);
        let request = Request {
            serial: 0,
            registrant: index,
            action,
            attempt,
            node,
            forwarded: false,
            answered: false,
            server_done: false,
            client_done: false,
            sequence,
            sent_at: self.now,
            arrived_at: self.now + round_trip_us / 2,
            round_trip_us,
            class: AnswerClass::OtherRefusal,
            registration: None,
            replayed: false,
            retry_after_us: 0,
        };
        let slot = self.requests.insert(request);
        self.metrics.requests_sent += 1;
        self.metrics.second(self.now).requests += 1;
        self.schedule_in(round_trip_us / 2, EventKind::NodeIngress { request: slot });
        let may_refresh = attempt < self.scenario.behaviour.attempts_max;
        if action == Action::Register && impatient && may_refresh {
            let due = self.now + self.settings.patience_us;
            if self.patience.set(due, (index, sequence)) {
                self.agenda.schedule(due, EventKind::PatienceOver);
            }
        }
    }

    /// The earliest patience has run out: an impatient registrant still waiting for the answer
    /// presses "register" again. The patience of those answered since is dropped; the next
    /// event is set for the first one left who still waits.
    pub(super) fn patience_over(&mut self) {
        loop {
            let registrants = &self.registrants;
            let waiting = |(index, sequence): (u32, u32)| {
                let registrant = &registrants[index as usize];
                registrant.register_sequence == sequence && registrant.awaiting_register
            };
            match self.patience.next(self.now, waiting) {
                Next::Due((index, _)) => {
                    let attempt = self.registrants[index as usize].register_attempt + 1;
                    self.send(index, Action::Register, attempt);
                }
                Next::At(due) => return self.agenda.schedule(due, EventKind::PatienceOver),
                Next::Idle => return,
            }
        }
    }

    pub(super) fn client_answer(&mut self, slot: u32) {
        let request = self.requests.client_answered(slot);
        let latency = self.now - request.sent_at;
        let registration = request.action == Action::Register;
        self.metrics.record_answer(request.class, latency, self.now, registration);
        if !self.suite.is_empty() {
            self.suite_observe(request.sent_at, latency);
        }
        if request.replayed {
            self.metrics.replays += 1;
        }
        match request.action {
            Action::Register => self.on_register_answer(&request),
            Action::Confirm => self.on_confirm_answer(&request),
            Action::Cancel => self.on_cancel_answer(&request),
        }
    }

    fn on_register_answer(&mut self, request: &Request) {
        let registrant = &mut self.registrants[request.registrant as usize];
        if registrant.suite_probe {
            registrant.awaiting_register = false;
            if let Some(registration) = request.registration {
                self.tell_registration(request.registrant, registration);
            }
            return self.suite_answered(request.registrant, request.class);
        }
        if request.sequence != registrant.register_sequence {
            // The registrant refreshed since; the page that would show this answer is gone.
            self.metrics.superseded_answers += 1;
            return;
        }
        registrant.awaiting_register = false;
        let state = match request.class {
            AnswerClass::Held => ClientState::Held,
            AnswerClass::Confirmed => ClientState::Confirmed,
            AnswerClass::Waitlisted => ClientState::Waitlisted,
            AnswerClass::SoldOut | AnswerClass::SoldOutFastPath => ClientState::SoldOut,
            AnswerClass::AlreadyRegistered => ClientState::AlreadyRegistered,
            class if class.asks_to_retry() || class == AnswerClass::KeyInFlight => {
                return self.retry_or_give_up(request);
            }
            _ => ClientState::Other,
        };
        self.conclude_registration(request, state);
    }

    /// The registrant has a decision: remember it and plan what they do next.
    fn conclude_registration(&mut self, request: &Request, state: ClientState) {
        let index = request.registrant;
        let since_first = self.now - self.registrants[index as usize].first_sent_at;
        self.metrics.note_time_to_final_answer(since_first);
        self.registrants[index as usize].state = state;
        if let Some(registration) = request.registration {
            self.tell_registration(index, registration);
        }
        if state == ClientState::Held {
            self.schedule_payment(index);
        }
        if matches!(state, ClientState::Held | ClientState::Confirmed | ClientState::Waitlisted) {
            self.schedule_cancel(index);
        }
    }

    fn tell_registration(&mut self, index: u32, registration: RegistrationId) {
        let registrant = &mut self.registrants[index as usize];
        if registrant.told_registration != 0 && registrant.told_registration != registration.0 {
            let detail = format!(
                "registrant {index} was told registration {} and then {registration}",
                registrant.told_registration
            );
            self.store.violations.add(CHECK_CLIENT_ONE_ID, detail);
        }
        registrant.told_registration = registration.0;
    }

    fn retry_or_give_up(&mut self, request: &Request) {
        let behaviour = &self.scenario.behaviour;
        let may_retry = behaviour.retry_on_overload
            && (behaviour.retry_on_connection_lost || request.class != AnswerClass::ConnectionLost)
            && request.attempt < behaviour.attempts_max;
        if !may_retry {
            if request.action == Action::Register {
                self.metrics.note_gave_up(self.now);
                self.conclude_registration(request, ClientState::GaveUp);
            }
            return;
        }
        let jitter = self.behaviour_rng.below(self.settings.retry_jitter_us + 1);
        let send = EventKind::Send {
            registrant: request.registrant,
            action: request.action,
            attempt: request.attempt + 1,
        };
        self.schedule_in(request.retry_after_us + jitter, send);
    }

    fn on_confirm_answer(&mut self, request: &Request) {
        let registrant = &mut self.registrants[request.registrant as usize];
        match request.class {
            AnswerClass::PaymentConfirmed if registrant.state != ClientState::Cancelled => {
                registrant.state = ClientState::Confirmed;
            }
            AnswerClass::HoldExpired => registrant.state = ClientState::Expired,
            class if class.asks_to_retry() => self.retry_or_give_up(request),
            _ => {}
        }
    }

    fn on_cancel_answer(&mut self, request: &Request) {
        match request.class {
            AnswerClass::Cancelled => {
                self.registrants[request.registrant as usize].state = ClientState::Cancelled
            }
            class if class.asks_to_retry() => self.retry_or_give_up(request),
            _ => {}
        }
    }

    /// A registrant who pays does so once, after their payment delay.
    fn schedule_payment(&mut self, index: u32) {
        let registrant = &mut self.registrants[index as usize];
        if !registrant.pays || registrant.confirm_scheduled {
            return;
        }
        registrant.confirm_scheduled = true;
        let delay = self.settings.pay_delay.sample_micros(&mut self.behaviour_rng);
        self.schedule_in(delay, EventKind::Send { registrant: index, action: Action::Confirm, attempt: 1 });
    }

    fn schedule_cancel(&mut self, index: u32) {
        let registrant = &mut self.registrants[index as usize];
        if !registrant.cancels || registrant.cancel_scheduled {
            return;
        }
        registrant.cancel_scheduled = true;
        let delay = self.settings.cancel_delay.sample_micros(&mut self.behaviour_rng);
        self.schedule_in(delay, EventKind::Send { registrant: index, action: Action::Cancel, attempt: 1 });
    }

    /// A waitlisted registrant got a seat; they hear of it out of band (an e-mail) at once.
    pub(super) fn announce_promotion(&mut self, promotion: Promotion) {
        self.tell_registration(promotion.registrant, promotion.registration);
        let registrant = &mut self.registrants[promotion.registrant as usize];
        match promotion.status {
            StoredStatus::Held => {
                registrant.state = ClientState::Held;
                self.schedule_payment(promotion.registrant);
            }
            StoredStatus::Confirmed => registrant.state = ClientState::Confirmed,
            _ => {}
        }
    }
}
