//! A queued opening in virtual time, on the real engine: registrants join the lobby before
//! `opens_at` (and the line after it), the real `EventQuota` draws at `opens_at`, admits in
//! order within ⌊overbook × seats available⌋, lets passes lapse; registrants poll when
//! `refresh_after_seconds` tells them, register with their pass, pay (or not), and some give up
//! waiting. The server is taken to keep up: each request costs a sampled network round trip,
//! and a write the sampled commit latency (the `run` model without a queue sizes the server).
//! The owner may restart (`queue.restarts_seconds`): the event, queue included, is rebuilt
//! through `QuotaBuilder` from what the store holds, as recovery does.
//!
//! What a planner reads from it: waiting times (join → admission), who got nothing and why, and
//! how wrong `eta_seconds` was. The swarm checks the queue's invariants on its store view.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kuota_engine::limits::HOLD_EXPIRY_TICK_MS;
use kuota_engine::queue::{
    DrawSeed, PassTimes, QueuePass, StoredTicketState, TicketId, TicketRecord, TicketStatus, TicketView,
};
use kuota_engine::{
    ActiveStatus, CategoryCode, Command, Decision, Effect, EffectKind, Email, EventConfig, EventId,
    EventQuota, JoinQueue, Outcome, QuotaBuilder, Register, RegistrationDetails, RegistrationId,
    RegistrationRecord, Seq, Timestamp,
};

use crate::arrivals::arrival_times;
use crate::distribution::{MICROS_PER_MILLI, MICROS_PER_SECOND, Micros};
use crate::invariants::{CHECK_CAPACITY, CHECK_ENGINE, CHECK_ONE_ACTIVE, CHECK_RELOAD, Violations};
use crate::invariants::{registrant_email, registrant_of_email};
use crate::random::{Rng, Stream};
use crate::scenario::{QueueSection, Scenario};

pub const CHECK_QUEUE_BUDGET: &str =
    "no admission beyond ⌊overbook × seats available⌋ passes outstanding (store view)";
pub const CHECK_QUEUE_PASS: &str =
    "no registration without a pass of the registrant's own ticket (store view)";
pub const CHECK_QUEUE_ONE_TICKET: &str = "at most one ticket per registrant (store view)";
pub const CHECK_QUEUE_DRAW: &str = "admissions follow the draw order of the committed seed";
pub const CHECK_QUEUE_AGREES: &str = "store view's seats and passes equal the engine's at the end";

/// Every check of a queued run, in the order the report lists them.
pub const QUEUE_CHECKS: [&str; 9] = [
    CHECK_QUEUE_BUDGET,
    CHECK_QUEUE_PASS,
    CHECK_QUEUE_ONE_TICKET,
    CHECK_ONE_ACTIVE,
    CHECK_CAPACITY,
    CHECK_QUEUE_DRAW,
    CHECK_QUEUE_AGREES,
    CHECK_ENGINE,
    CHECK_RELOAD,
];

/// When the lobby opens (virtual time 0 of a queued run), as the engine's wall clock.
const LOBBY_OPENS: Timestamp = Timestamp::from_seconds(1_800_000_000);

/// The actor's timer period (`HOLD_EXPIRY_TICK_MS`): the draw, pass expiry and admissions due
/// without a command happen on its ticks.
const TICK_US: Micros = HOLD_EXPIRY_TICK_MS * MICROS_PER_MILLI;

/// How a queued run may deviate from the real system.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueRunOptions {
    /// Test only: a restarted owner draws a fresh seed instead of the stored one (a server that
    /// forgot to store its seed), so that the swarm has a real bug to find.
    pub break_draw_seed: bool,
}

/// How a registrant's queue story ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueueFate {
    /// Registered with their pass and holds a seat (held or confirmed at the end of the run).
    Seated,
    /// Registered, but the hold lapsed unpaid.
    HoldLapsed,
    /// Admitted, registered, and found the event sold out (only with overbook above 1).
    AdmittedSoldOut,
    /// Admitted, but registered after the pass lapsed (`queue_pass_invalid`).
    PassLapsed,
    /// Read `sold_out` while waiting and left.
    SoldOutWaiting,
    /// Gave up waiting (their ticket, if later admitted, let its pass lapse).
    GaveUp,
    /// Got no ticket: `queue_full`.
    QueueFull,
    /// Still waiting when nothing more could happen (never the case in a finished run).
    Waiting,
}

impl QueueFate {
    pub const ALL: [QueueFate; 8] = [
        QueueFate::Seated,
        QueueFate::HoldLapsed,
        QueueFate::AdmittedSoldOut,
        QueueFate::PassLapsed,
        QueueFate::SoldOutWaiting,
        QueueFate::GaveUp,
        QueueFate::QueueFull,
        QueueFate::Waiting,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            QueueFate::Seated => "seated (registered with the pass)",
            QueueFate::HoldLapsed => "registered, the hold lapsed unpaid",
            QueueFate::AdmittedSoldOut => "admitted, found the event sold out",
            QueueFate::PassLapsed => "admitted, registered after the pass lapsed",
            QueueFate::SoldOutWaiting => "read sold_out while waiting",
            QueueFate::GaveUp => "gave up waiting",
            QueueFate::QueueFull => "no ticket (queue_full)",
            QueueFate::Waiting => "still waiting at the end",
        }
    }
}

/// Everything a queued run produced.
#[derive(Debug)]
pub struct QueueRunResult {
    pub seed: u64,
    pub registrants: u64,
    pub tickets: u64,
    pub lobby_tickets: u64,
    pub fates: [u64; QueueFate::ALL.len()],
    /// Join → admission, in milliseconds, sorted, for every admitted ticket whose holder was
    /// still there to see it.
    pub waits_from_join_ms: Vec<u64>,
    /// `opens_at` → admission for lobby joiners, in milliseconds, sorted.
    pub waits_from_opening_ms: Vec<u64>,
    /// `eta_seconds` minus the time the admission actually took from that answer, in seconds,
    /// sorted; over answers whose ticket was admitted.
    pub eta_errors_seconds: Vec<i64>,
    /// The same over the actual time, as a share (|error| ÷ max(actual, 1 s)), sorted.
    pub eta_relative_errors: Vec<f64>,
    /// Answers with an ETA whose ticket was never admitted.
    pub eta_never_admitted: u64,
    pub admissions: u64,
    pub passes_used: u64,
    pub passes_expired: u64,
    /// Most passes outstanding at once.
    pub passes_outstanding_peak: u64,
    /// Seats held or confirmed at the end, and all seats.
    pub seats_taken: u64,
    pub seats: u64,
    /// When the last seat was first taken, after `opens_at`.
    pub sold_out_after_us: Option<Micros>,
    pub polls: u64,
    pub polls_peak_per_second: u64,
    /// When the last event happened, after `opens_at`.
    pub end_after_opening_us: Micros,
    pub restarts: u64,
    pub violations: Violations,
}

impl QueueRunResult {
    pub fn fate(&self, fate: QueueFate) -> u64 {
        self.fates[QueueFate::ALL.iter().position(|known| *known == fate).unwrap_or(0)]
    }

    /// Registrants with a ticket who got no seat, as a share of those with a ticket.
    pub fn got_nothing_share(&self) -> f64 {
        if self.tickets == 0 {
            return 0.0;
        }
        let seated = self.fate(QueueFate::Seated);
        (self.tickets.saturating_sub(seated)) as f64 / self.tickets as f64
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The draw seed of a run: 32 bytes from the seed's own stream, as the server draws 32 random
/// bytes when the event is created.
pub fn draw_seed_of(seed: u64) -> DrawSeed {
    let mut rng = Rng::new(seed, Stream::Queue);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    DrawSeed(bytes)
}

fn event_id() -> EventId {
    EventId::parse("simulated").expect("a constant valid event id")
}

/// The engine's configuration of a queued scenario's event.
fn queued_event_config(scenario: &Scenario, queue: &QueueSection, draw_seed: DrawSeed) -> EventConfig {
    let opens_at = opens_at(queue);
    EventConfig {
        opens_at: Some(opens_at),
        queue: Some(queue.engine_config(opens_at, draw_seed)),
        ..scenario.event_config()
    }
}

fn lobby_us(queue: &QueueSection) -> Micros {
    (queue.lobby_seconds * MICROS_PER_SECOND as f64).round() as Micros
}

fn opens_at(queue: &QueueSection) -> Timestamp {
    LOBBY_OPENS.plus_millis(lobby_us(queue) / MICROS_PER_MILLI)
}

/// Simulates a queued scenario (one with `[queue]`) with `seed`.
pub fn simulate_queue(scenario: &Scenario, seed: u64, options: QueueRunOptions) -> QueueRunResult {
    let queue = scenario.queue.as_ref().expect("simulate_queue runs scenarios with a [queue] section");
    let mut simulation = QueueSimulation::new(scenario, queue, seed, options);
    simulation.run();
    simulation.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Arrive {
        registrant: u32,
    },
    JoinAtServer {
        registrant: u32,
        back_us: Micros,
    },
    PollSend {
        registrant: u32,
    },
    PollAtServer {
        registrant: u32,
        back_us: Micros,
    },
    RegisterSend {
        registrant: u32,
    },
    RegisterAtServer {
        registrant: u32,
        back_us: Micros,
    },
    PayAtServer {
        registrant: u32,
    },
    /// The answer to the registrant's request in flight reaches them.
    Answer {
        registrant: u32,
    },
    Tick,
    Restart,
}

/// What a registrant last heard.
#[derive(Clone, Debug)]
enum Heard {
    Ticket(TicketView),
    QueueFull,
    Registered { held: bool, registration: RegistrationId },
    SoldOut,
    PassInvalid,
    Other,
}

#[derive(Clone, Debug)]
struct Client {
    category: u16,
    pays: bool,
    joined_at: Micros,
    /// When they stop waiting; `Micros::MAX` for those who never give up.
    gives_up_at: Micros,
    ticket: Option<TicketId>,
    fate: Option<QueueFate>,
    heard: Option<Heard>,
    registration: Option<RegistrationId>,
}

/// The store as the committed effects leave it: what recovery would read.
#[derive(Debug, Default)]
struct StoreView {
    /// Ticket number `n` at index `n - 1`: registrant, lobby, state.
    tickets: Vec<(u32, bool, StoredTicketState)>,
    ticket_of: HashMap<u32, TicketId>,
    /// Active registrations: registrant, category, status.
    registrations: HashMap<RegistrationId, (u32, u16, ActiveStatus)>,
    active_of: HashMap<u32, RegistrationId>,
    taken: Vec<u64>,
    capacity: Vec<u64>,
    next_registration: u64,
    last_seq: Seq,
    outstanding: u64,
    /// Tickets in the order they were admitted.
    admitted: Vec<TicketId>,
    /// Ticket number `n` at index `n - 1`: its pass's times as the store keeps them, for
    /// recovery to rebuild the admission rate (and the report's waits: `admitted_at`).
    passes: Vec<Option<PassTimes>>,
}

impl StoreView {
    /// When `ticket` was admitted, if it was.
    fn admitted_at(&self, ticket: TicketId) -> Option<Micros> {
        self.passes[ticket.0 as usize - 1].map(|pass| QueueSimulation::micros_of(pass.granted_at))
    }

    /// The ticket's pass (if it had one) was used or lapsed at `at`.
    fn pass_ended(&mut self, ticket: TicketId, at: Timestamp) {
        if let Some(pass) = &mut self.passes[ticket.0 as usize - 1] {
            pass.ended_at = Some(at);
        }
    }

    fn available(&self) -> u64 {
        self.capacity.iter().zip(&self.taken).map(|(capacity, taken)| capacity.saturating_sub(*taken)).sum()
    }
}

struct QueueSimulation<'a> {
    scenario: &'a Scenario,
    queue: &'a QueueSection,
    seed: u64,
    options: QueueRunOptions,
    draw_seed: DrawSeed,
    quota: EventQuota,
    now: Micros,
    opening_us: Micros,
    agenda: BinaryHeap<Reverse<(Micros, u64, Job)>>,
    scheduled: u64,
    tick_armed: bool,
    behaviour_rng: Rng,
    system_rng: Rng,
    demand_cumulative: Vec<f64>,
    codes: Vec<CategoryCode>,
    details: std::sync::Arc<RegistrationDetails>,
    clients: Vec<Client>,
    emails: Vec<Email>,
    store: StoreView,
    /// (registrant, when the answer was decided, eta_seconds).
    predictions: Vec<(u32, Micros, u64)>,
    polls_per_second: Vec<u64>,
    polls: u64,
    passes_used: u64,
    passes_expired: u64,
    passes_outstanding_peak: u64,
    sold_out_at: Option<Micros>,
    restarts: u64,
    violations: Violations,
}

impl<'a> QueueSimulation<'a> {
    fn new(scenario: &'a Scenario, queue: &'a QueueSection, seed: u64, options: QueueRunOptions) -> Self {
        let draw_seed = draw_seed_of(seed);
        let config = queued_event_config(scenario, queue, draw_seed);
        let codes = config.categories.iter().map(|category| category.code.clone()).collect();
        let capacity =
            config.categories.iter().map(|category| u64::from(category.capacity)).collect::<Vec<_>>();
        let quota =
            EventQuota::new(config).expect("the scenario's queued event was validated when it was parsed");
        let mut cumulative = 0.0;
        let demand_cumulative = scenario
            .demand_shares()
            .iter()
            .map(|share| {
                cumulative += share;
                cumulative
            })
            .collect();
        let registrants = scenario.arrivals.registrants as usize;
        QueueSimulation {
            scenario,
            queue,
            seed,
            options,
            draw_seed,
            quota,
            now: 0,
            opening_us: lobby_us(queue),
            agenda: BinaryHeap::new(),
            scheduled: 0,
            tick_armed: false,
            behaviour_rng: Rng::new(seed, Stream::Behaviour),
            system_rng: Rng::new(seed, Stream::System),
            demand_cumulative,
            codes,
            details: std::sync::Arc::new(RegistrationDetails {
                full_name: "Simulated Registrant".into(),
                ..Default::default()
            }),
            clients: Vec::with_capacity(registrants),
            emails: Vec::with_capacity(registrants),
            store: StoreView {
                taken: vec![0; capacity.len()],
                capacity,
                next_registration: 1,
                ..StoreView::default()
            },
            predictions: Vec::new(),
            polls_per_second: Vec::new(),
            polls: 0,
            passes_used: 0,
            passes_expired: 0,
            passes_outstanding_peak: 0,
            sold_out_at: None,
            restarts: 0,
            violations: Violations::default(),
        }
    }

    fn schedule(&mut self, at: Micros, job: Job) {
        self.scheduled += 1;
        self.agenda.push(Reverse((at, self.scheduled, job)));
    }

    fn timestamp(&self) -> Timestamp {
        LOBBY_OPENS.plus_millis(self.now / MICROS_PER_MILLI)
    }

    fn micros_of(timestamp: Timestamp) -> Micros {
        LOBBY_OPENS.millis_until(timestamp) * MICROS_PER_MILLI
    }

    /// Arrival times: the lobby's share uniformly over the lobby, the rest as `[arrivals]`
    /// says after the opening.
    fn arrivals(&self) -> Vec<Micros> {
        let mut rng = Rng::new(self.seed, Stream::Arrivals);
        let registrants = self.scenario.arrivals.registrants;
        let in_lobby = ((f64::from(registrants) * self.queue.lobby_share).round() as u32).min(registrants);
        let mut times: Vec<Micros> =
            (0..in_lobby).map(|_| (self.opening_us as f64 * rng.unit()) as Micros).collect();
        let later = crate::scenario::Arrivals {
            registrants: registrants - in_lobby,
            ..self.scenario.arrivals.clone()
        };
        times.extend(arrival_times(&later, &mut rng).into_iter().map(|at| self.opening_us + at));
        times.sort_unstable();
        times
    }

    fn run(&mut self) {
        for (registrant, at) in self.arrivals().into_iter().enumerate() {
            self.schedule(at, Job::Arrive { registrant: registrant as u32 });
        }
        for at in self.queue.restarts_seconds.clone() {
            let at_us = self.opening_us + (at * MICROS_PER_SECOND as f64) as Micros;
            self.schedule(at_us, Job::Restart);
        }
        self.schedule(self.opening_us, Job::Tick);
        self.tick_armed = true;
        while let Some(Reverse((at, _, job))) = self.agenda.pop() {
            self.now = at;
            self.dispatch(job);
        }
    }

    fn dispatch(&mut self, job: Job) {
        match job {
            Job::Arrive { registrant } => self.arrive(registrant),
            Job::JoinAtServer { registrant, back_us } => self.join_at_server(registrant, back_us),
            Job::PollSend { registrant } => self.poll_send(registrant),
            Job::PollAtServer { registrant, back_us } => self.poll_at_server(registrant, back_us),
            Job::RegisterSend { registrant } => self.register_send(registrant),
            Job::RegisterAtServer { registrant, back_us } => self.register_at_server(registrant, back_us),
            Job::PayAtServer { registrant } => self.pay_at_server(registrant),
            Job::Answer { registrant } => self.answer(registrant),
            Job::Tick => self.tick(),
            Job::Restart => self.restart(),
        }
    }

    /// Half a round trip out; the other half is returned for the answer.
    fn round_trip(&mut self) -> (Micros, Micros) {
        let round_trip = self.scenario.system.network_round_trip.sample_micros(&mut self.system_rng);
        (round_trip / 2, round_trip - round_trip / 2)
    }

    fn commit_us(&mut self) -> Micros {
        self.scenario.system.commit_latency.sample_micros(&mut self.system_rng)
    }

    fn arrive(&mut self, registrant: u32) {
        let behaviour = &self.scenario.behaviour;
        let rng = &mut self.behaviour_rng;
        let pick = rng.unit();
        let category = self.demand_cumulative.iter().position(|limit| pick < *limit);
        let category = category.unwrap_or(self.demand_cumulative.len() - 1) as u16;
        let pays = rng.chance(behaviour.pay_share);
        let gives_up_at = if rng.chance(self.queue.abandon_share) {
            self.now + self.queue.patience.sample_micros(rng)
        } else {
            Micros::MAX
        };
        self.clients.push(Client {
            category,
            pays,
            joined_at: self.now,
            gives_up_at,
            ticket: None,
            fate: None,
            heard: None,
            registration: None,
        });
        self.emails
            .push(Email::parse(&registrant_email(registrant)).expect("the simulator's addresses are valid"));
        let (out, back) = self.round_trip();
        self.schedule(self.now + out, Job::JoinAtServer { registrant, back_us: back });
    }

    /// Applies `command` at now, commits its effects to the store view and checks them.
    fn apply(&mut self, command: &Command) -> Outcome {
        let (outcome, effects) = self.quota.apply(command, self.timestamp());
        self.quota.mark_durable(self.quota.last_seq());
        self.commit(&effects);
        self.arm_tick();
        outcome
    }

    fn join_at_server(&mut self, registrant: u32, back_us: Micros) {
        let command = Command::JoinQueue(JoinQueue {
            registrant: self.emails[registrant as usize].clone(),
            idempotency: None,
        });
        let heard = match self.apply(&command) {
            Outcome::Decided(Decision::QueueJoined { view, .. }) => {
                self.clients[registrant as usize].ticket = Some(view.ticket);
                Heard::Ticket(view)
            }
            Outcome::QueueFull => Heard::QueueFull,
            _ => Heard::Other,
        };
        let commit = self.commit_us();
        self.reply(registrant, heard, commit + back_us);
    }

    fn reply(&mut self, registrant: u32, heard: Heard, after_us: Micros) {
        if let Heard::Ticket(view) = &heard
            && let Some(eta) = view.eta_seconds
        {
            self.predictions.push((registrant, self.now, eta));
        }
        self.clients[registrant as usize].heard = Some(heard);
        self.schedule(self.now + after_us, Job::Answer { registrant });
    }

    fn poll_send(&mut self, registrant: u32) {
        let client = &self.clients[registrant as usize];
        if self.now >= client.gives_up_at {
            return self.conclude(registrant, QueueFate::GaveUp);
        }
        self.polls += 1;
        let second = ((self.now / MICROS_PER_SECOND) as usize).min(u32::MAX as usize);
        if self.polls_per_second.len() <= second {
            self.polls_per_second.resize(second + 1, 0);
        }
        self.polls_per_second[second] += 1;
        let (out, back) = self.round_trip();
        self.schedule(self.now + out, Job::PollAtServer { registrant, back_us: back });
    }

    fn poll_at_server(&mut self, registrant: u32, back_us: Micros) {
        let ticket = self.clients[registrant as usize].ticket.expect("only ticket holders poll");
        let heard = match self.quota.ticket_view(ticket, self.timestamp()) {
            Some(view) => Heard::Ticket(view),
            None => Heard::Other,
        };
        self.reply(registrant, heard, back_us);
    }

    fn register_send(&mut self, registrant: u32) {
        let (out, back) = self.round_trip();
        self.schedule(self.now + out, Job::RegisterAtServer { registrant, back_us: back });
    }

    fn register_at_server(&mut self, registrant: u32, back_us: Micros) {
        let client = &self.clients[registrant as usize];
        let ticket = client.ticket.expect("only an admitted ticket's holder registers");
        let command = Command::Register(Register {
            category: self.codes[usize::from(client.category)].clone(),
            registrant: self.emails[registrant as usize].clone(),
            idempotency: None,
            waitlist: false,
            details: self.details.clone(),
            queue_pass: Some(QueuePass { ticket, waitlist: false }),
        });
        let heard = match self.apply(&command) {
            Outcome::Decided(Decision::Held { registration, .. }) => {
                Heard::Registered { held: true, registration }
            }
            Outcome::Decided(Decision::Confirmed { registration }) => {
                Heard::Registered { held: false, registration }
            }
            Outcome::Decided(Decision::SoldOut) => Heard::SoldOut,
            Outcome::QueuePassInvalid => Heard::PassInvalid,
            _ => Heard::Other,
        };
        let commit = self.commit_us();
        self.reply(registrant, heard, commit + back_us);
    }

    fn pay_at_server(&mut self, registrant: u32) {
        if let Some(registration) = self.clients[registrant as usize].registration {
            self.apply(&Command::Confirm { registration });
        }
    }

    fn answer(&mut self, registrant: u32) {
        let heard = self.clients[registrant as usize]
            .heard
            .take()
            .expect("an answer was scheduled with what was heard");
        match heard {
            Heard::Ticket(view) => self.on_ticket(registrant, &view),
            Heard::QueueFull => self.conclude(registrant, QueueFate::QueueFull),
            Heard::Registered { held, registration } => {
                self.clients[registrant as usize].registration = Some(registration);
                self.conclude(registrant, QueueFate::Seated);
                if held && self.clients[registrant as usize].pays {
                    let delay = self.scenario.behaviour.pay_delay.sample_micros(&mut self.behaviour_rng);
                    let (out, _) = self.round_trip();
                    self.schedule(self.now + delay + out, Job::PayAtServer { registrant });
                }
            }
            Heard::SoldOut => self.conclude(registrant, QueueFate::AdmittedSoldOut),
            Heard::PassInvalid => self.conclude(registrant, QueueFate::PassLapsed),
            Heard::Other => self.conclude(registrant, QueueFate::Waiting),
        }
    }

    fn on_ticket(&mut self, registrant: u32, view: &TicketView) {
        match view.status {
            TicketStatus::Lobby | TicketStatus::Waiting => {
                let next = self.now + u64::from(view.refresh_after_seconds) * MICROS_PER_SECOND;
                let gives_up_at = self.clients[registrant as usize].gives_up_at;
                if next > gives_up_at {
                    // They leave before their next poll, at their patience's end.
                    return self.conclude(registrant, QueueFate::GaveUp);
                }
                self.schedule(next, Job::PollSend { registrant });
            }
            TicketStatus::Admitted => {
                let delay = self.queue.register_delay.sample_micros(&mut self.behaviour_rng);
                self.schedule(self.now + delay, Job::RegisterSend { registrant });
            }
            TicketStatus::SoldOut => self.conclude(registrant, QueueFate::SoldOutWaiting),
            TicketStatus::Expired => self.conclude(registrant, QueueFate::PassLapsed),
            TicketStatus::Used => self.conclude(registrant, QueueFate::Seated),
        }
    }

    fn conclude(&mut self, registrant: u32, fate: QueueFate) {
        self.clients[registrant as usize].fate = Some(fate);
    }

    /// The actor's timer: applies `ExpireHolds` when a hold lapses or the queue has work due.
    fn tick(&mut self) {
        self.tick_armed = false;
        let now = self.timestamp();
        let hold_due = self.quota.next_hold_expiry().is_some_and(|expiry| expiry <= now);
        if hold_due || self.quota.queue_work_due(now) {
            self.apply(&Command::ExpireHolds);
        }
        self.arm_tick();
    }

    /// Keeps the timer going while anything may still change without a command: a hold or a
    /// pass to lapse, or tickets waiting with seats left.
    fn arm_tick(&mut self) {
        if self.tick_armed || self.now < self.opening_us {
            return;
        }
        let summary = self.quota.queue_summary(self.timestamp()).expect("a queued event");
        let seats_left = self.store.available() > 0;
        let more = self.quota.next_hold_expiry().is_some()
            || summary.admitted_outstanding > 0
            || !summary.drawn
            || (summary.waiting > 0 && seats_left);
        if more {
            let next = (self.now / TICK_US + 1) * TICK_US;
            self.schedule(next, Job::Tick);
            self.tick_armed = true;
        }
    }

    /// The owner restarts: the event is rebuilt from the store view through `QuotaBuilder`,
    /// with the stored seed (or, broken on purpose, a fresh one).
    fn restart(&mut self) {
        self.restarts += 1;
        let draw_seed = if self.options.break_draw_seed {
            draw_seed_of(self.seed ^ self.now.rotate_left(17) ^ self.restarts)
        } else {
            self.draw_seed
        };
        let config = queued_event_config(self.scenario, self.queue, draw_seed);
        // The engine checks what it rebuilt and panics on an inconsistency (an admitted ticket
        // behind a waiting one, say); the restart then fails and the old owner goes on.
        let rebuilt = catch_unwind(AssertUnwindSafe(|| self.rebuild(config)))
            .unwrap_or_else(|panic| Err(format!("the rebuild panicked: {}", panic_text(&panic))));
        match rebuilt {
            Ok(quota) => self.quota = quota,
            Err(error) => self.violations.add(CHECK_RELOAD, format!("at {} µs: {error}", self.now)),
        }
        self.tick_armed = false;
        self.arm_tick();
    }

    fn rebuild(&self, config: EventConfig) -> Result<EventQuota, String> {
        let mut builder = QuotaBuilder::new(config).map_err(|error| error.to_string())?;
        let mut registrations: Vec<_> = self.store.registrations.iter().collect();
        registrations.sort_by_key(|(id, _)| **id);
        for (id, (registrant, category, status)) in registrations {
            builder
                .add_registration(RegistrationRecord {
                    registration: *id,
                    category: self.codes[usize::from(*category)].clone(),
                    registrant: self.emails[*registrant as usize].clone(),
                    status: *status,
                })
                .map_err(|error| error.to_string())?;
        }
        for (index, (registrant, lobby, state)) in self.store.tickets.iter().enumerate() {
            builder
                .add_ticket(TicketRecord {
                    ticket: TicketId(index as u64 + 1),
                    registrant: self.emails[*registrant as usize].clone(),
                    lobby: *lobby,
                    state: *state,
                    pass: self.store.passes[index],
                })
                .map_err(|error| error.to_string())?;
        }
        builder.finish(self.store.next_registration, self.store.last_seq).map_err(|error| error.to_string())
    }

    /// Commits one decision's effects to the store view and checks what they leave.
    fn commit(&mut self, effects: &[Effect]) {
        let mut admitted = false;
        let mut passes_used: Vec<(TicketId, RegistrationId)> = Vec::new();
        let mut created: Vec<(RegistrationId, u32)> = Vec::new();
        for effect in effects {
            self.store.last_seq = effect.seq;
            match &effect.kind {
                EffectKind::QueueJoined { ticket, registrant, lobby } => {
                    let index = registrant_of_email(registrant).expect("the simulator's addresses");
                    if ticket.0 != self.store.tickets.len() as u64 + 1 {
                        self.violations
                            .add(CHECK_QUEUE_ONE_TICKET, format!("ticket {ticket:?} out of sequence"));
                    }
                    if self.store.ticket_of.insert(index, *ticket).is_some() {
                        self.violations.add(
                            CHECK_QUEUE_ONE_TICKET,
                            format!("registrant {index} got a second ticket {ticket:?}"),
                        );
                    }
                    self.store.tickets.push((index, *lobby, StoredTicketState::Waiting));
                    self.store.passes.push(None);
                }
                EffectKind::QueueAdmitted { ticket, pass_expires_at } => {
                    admitted = true;
                    self.store.tickets[ticket.0 as usize - 1].2 =
                        StoredTicketState::Admitted { pass_expires_at: *pass_expires_at };
                    self.store.outstanding += 1;
                    self.store.admitted.push(*ticket);
                    self.store.passes[ticket.0 as usize - 1] =
                        Some(PassTimes { granted_at: effect.at, ended_at: None });
                    self.passes_outstanding_peak = self.passes_outstanding_peak.max(self.store.outstanding);
                }
                EffectKind::QueuePassExpired { ticket } => {
                    self.store.tickets[ticket.0 as usize - 1].2 = StoredTicketState::Expired;
                    self.store.pass_ended(*ticket, effect.at);
                    self.store.outstanding -= 1;
                    self.passes_expired += 1;
                }
                EffectKind::QueuePassUsed { ticket, registration } => {
                    let entry = &mut self.store.tickets[ticket.0 as usize - 1].2;
                    if matches!(entry, StoredTicketState::Admitted { .. }) {
                        self.store.outstanding -= 1;
                    }
                    *entry = StoredTicketState::Used;
                    self.store.pass_ended(*ticket, effect.at);
                    self.passes_used += 1;
                    passes_used.push((*ticket, *registration));
                }
                EffectKind::Created { registration, category, registrant, status, .. } => {
                    let index = registrant_of_email(registrant).expect("the simulator's addresses");
                    created.push((*registration, index));
                    self.store.next_registration = self.store.next_registration.max(registration.0 + 1);
                    if let Some(other) = self.store.active_of.insert(index, *registration) {
                        self.violations.add(
                            CHECK_ONE_ACTIVE,
                            format!("registrant {index} has {other} and {registration} active"),
                        );
                    }
                    self.store.registrations.insert(*registration, (index, *category, *status));
                    if !matches!(status, ActiveStatus::Waitlisted) {
                        self.take_seat(*category);
                    }
                }
                EffectKind::Confirmed { registration } => {
                    if let Some(entry) = self.store.registrations.get_mut(registration) {
                        entry.2 = ActiveStatus::Confirmed;
                    }
                }
                EffectKind::Expired { registration } | EffectKind::Cancelled { registration } => {
                    if let Some((index, category, status)) = self.store.registrations.remove(registration) {
                        self.store.active_of.remove(&index);
                        if !matches!(status, ActiveStatus::Waitlisted) {
                            self.store.taken[usize::from(category)] -= 1;
                        }
                    }
                }
                EffectKind::Promoted { registration, status } => {
                    if let Some(entry) = self.store.registrations.get_mut(registration) {
                        entry.2 = *status;
                        let category = entry.1;
                        self.take_seat(category);
                    }
                }
                EffectKind::DecisionRecorded { .. } | EffectKind::CapacityChanged { .. } => {}
            }
        }
        for (registration, registrant) in created {
            let by_pass = passes_used.iter().find(|(_, used)| *used == registration);
            let own =
                by_pass.is_some_and(|(ticket, _)| self.store.tickets[ticket.0 as usize - 1].0 == registrant);
            if !own {
                self.violations.add(
                    CHECK_QUEUE_PASS,
                    format!(
                        "registration {registration} of registrant {registrant} was made without their pass"
                    ),
                );
            }
        }
        if admitted {
            let budget = self.store.available() * u64::from(self.queue.overbook_permille()) / 1_000;
            if self.store.outstanding > budget {
                self.violations.add(
                    CHECK_QUEUE_BUDGET,
                    format!(
                        "at {} µs: {} passes outstanding with {} seats available (budget {budget})",
                        self.now,
                        self.store.outstanding,
                        self.store.available()
                    ),
                );
            }
        }
    }

    fn take_seat(&mut self, category: u16) {
        let index = usize::from(category);
        self.store.taken[index] += 1;
        if self.store.taken[index] > self.store.capacity[index] {
            self.violations.add(
                CHECK_CAPACITY,
                format!(
                    "category {index}: {} seats taken of {}",
                    self.store.taken[index], self.store.capacity[index]
                ),
            );
        }
        if self.sold_out_at.is_none() && self.store.available() == 0 {
            self.sold_out_at = Some(self.now);
        }
    }

    /// Admissions must follow the committed seed's order: the lobby by draw key, then later
    /// joins by number; a ticket that left early is skipped, nothing is admitted out of turn.
    fn check_draw_order(&mut self) {
        let event = event_id();
        let mut lobby: Vec<([u8; 32], TicketId)> = Vec::new();
        let mut later: Vec<TicketId> = Vec::new();
        for (index, (_, is_lobby, _)) in self.store.tickets.iter().enumerate() {
            let ticket = TicketId(index as u64 + 1);
            if *is_lobby {
                lobby.push((self.draw_seed.draw_key(&ticket.text(&event)), ticket));
            } else {
                later.push(ticket);
            }
        }
        lobby.sort_unstable();
        let mut place = vec![0usize; self.store.tickets.len()];
        for (position, ticket) in lobby.iter().map(|(_, ticket)| *ticket).chain(later).enumerate() {
            place[ticket.0 as usize - 1] = position;
        }
        let mut last: Option<(usize, TicketId)> = None;
        for ticket in self.store.admitted.clone() {
            let position = place[ticket.0 as usize - 1];
            if let Some((before, previous)) = last
                && position <= before
            {
                self.violations.add(
                    CHECK_QUEUE_DRAW,
                    format!(
                        "{ticket:?} (place {}) was admitted after {previous:?} (place {})",
                        position + 1,
                        before + 1
                    ),
                );
            }
            last = Some((position, ticket));
        }
    }

    fn finish(mut self) -> QueueRunResult {
        self.check_draw_order();
        let quota = &self.quota;
        let engine_checked = catch_unwind(AssertUnwindSafe(|| quota.check_invariants_fully()));
        if engine_checked.is_err() {
            self.violations.add(CHECK_ENGINE, "check_invariants_fully panicked".into());
        }
        let engine_available: u64 =
            quota.availability().iter().map(|category| u64::from(category.available)).sum();
        let engine_outstanding =
            quota.queue_summary(self.timestamp()).map_or(0, |summary| summary.admitted_outstanding);
        if engine_available != self.store.available() || engine_outstanding != self.store.outstanding {
            self.violations.add(
                CHECK_QUEUE_AGREES,
                format!(
                    "engine: {engine_available} available, {engine_outstanding} passes; store view: {} and {}",
                    self.store.available(),
                    self.store.outstanding
                ),
            );
        }
        let mut fates = [0u64; QueueFate::ALL.len()];
        let mut waits_from_join_ms = Vec::new();
        let mut waits_from_opening_ms = Vec::new();
        for client in &self.clients {
            let mut fate = client.fate.unwrap_or(QueueFate::Waiting);
            if fate == QueueFate::Seated
                && client
                    .registration
                    .is_none_or(|registration| !self.store.registrations.contains_key(&registration))
            {
                fate = QueueFate::HoldLapsed;
            }
            fates[QueueFate::ALL.iter().position(|known| *known == fate).unwrap_or(0)] += 1;
            let Some(ticket) = client.ticket else { continue };
            let Some(admitted_at) = self.store.admitted_at(ticket) else { continue };
            let saw_admission = matches!(
                fate,
                QueueFate::Seated
                    | QueueFate::HoldLapsed
                    | QueueFate::AdmittedSoldOut
                    | QueueFate::PassLapsed
            );
            if !saw_admission {
                continue;
            }
            waits_from_join_ms.push(admitted_at.saturating_sub(client.joined_at) / MICROS_PER_MILLI);
            if self.store.tickets[ticket.0 as usize - 1].1 {
                waits_from_opening_ms.push(admitted_at.saturating_sub(self.opening_us) / MICROS_PER_MILLI);
            }
        }
        waits_from_join_ms.sort_unstable();
        waits_from_opening_ms.sort_unstable();
        let mut eta_errors_seconds = Vec::new();
        let mut eta_relative_errors = Vec::new();
        let mut eta_never_admitted = 0;
        for (registrant, at, eta) in &self.predictions {
            let ticket = self.clients[*registrant as usize].ticket.expect("predictions come with tickets");
            match self.store.admitted_at(ticket) {
                Some(admitted_at) => {
                    let actual_seconds = admitted_at.saturating_sub(*at) as f64 / MICROS_PER_SECOND as f64;
                    let error = *eta as f64 - actual_seconds;
                    eta_errors_seconds.push(error.round() as i64);
                    eta_relative_errors.push(error.abs() / actual_seconds.max(1.0));
                }
                None => eta_never_admitted += 1,
            }
        }
        eta_errors_seconds.sort_unstable();
        eta_relative_errors.sort_unstable_by(f64::total_cmp);
        QueueRunResult {
            seed: self.seed,
            registrants: self.clients.len() as u64,
            tickets: self.store.tickets.len() as u64,
            lobby_tickets: self.store.tickets.iter().filter(|(_, lobby, _)| *lobby).count() as u64,
            fates,
            waits_from_join_ms,
            waits_from_opening_ms,
            eta_errors_seconds,
            eta_relative_errors,
            eta_never_admitted,
            admissions: self.store.admitted.len() as u64,
            passes_used: self.passes_used,
            passes_expired: self.passes_expired,
            passes_outstanding_peak: self.passes_outstanding_peak,
            seats_taken: self.store.taken.iter().sum(),
            seats: self.store.capacity.iter().sum(),
            sold_out_after_us: self.sold_out_at.map(|at| at.saturating_sub(self.opening_us)),
            polls: self.polls,
            polls_peak_per_second: self.polls_per_second.iter().copied().max().unwrap_or(0),
            end_after_opening_us: self.now.saturating_sub(self.opening_us),
            restarts: self.restarts,
            violations: self.violations,
        }
    }
}
