//! The discrete-event model of one event under a surge, in virtual time:
//!
//! ```text
//! registrant ─rtt/2─▶ node (HTTP workers, bounded queue → 503)
//!                      │ rate limit (429), sold-out fast path (409, no actor)
//!                      └─forward/2 (other nodes)─▶ event actor (bounded mailbox → 503)
//!                                                   │ EventQuota::apply at virtual now
//!                                                   ▼ effects (bounded write queue → 503)
//!                                                  write-behind: batches by size or interval,
//!                                                  limited connections, sampled commit latency
//! registrant ◀─rtt/2── node ◀──────── answer after the batch holding it committed (mark_durable)
//! ```
//!
//! The decision is the real `EventQuota` from `kuota-engine`; everything around it is a model
//! whose parameters come from the scenario. One event, owned by node 0 at opening; faults may
//! move it (see `cluster`).
//!
//! # Layout
//! - `agenda`: the timed events (a calendar queue) and their deterministic tie-breaking.
//! - `client`: registrants: arrivals, requests, retries, refreshes, payments and cancels.
//! - `node`: HTTP workers, rate limits, the sold-out fast path and forwarding.
//! - `actor`: the event actor around `EventQuota`: mailbox, pending decisions, hold timer.
//! - `writer`: the write-behind queue, group commit, the durable prefix, commit timeouts,
//!   retries and failures, and fencing.
//! - `cluster`: nodes that crash, freeze and restart; the ownership lease; claims, loads with a
//!   new epoch, forwarding.
//! - `faults`: the scenario's faults as spans of time, and the writer's view of the store's
//!   health (stalled, failing, breaker, probes).
//! - `finish`: the end of a run: final states and invariant checks.
//! - `queue`: a queued opening (a scenario with `[queue]`): lobby, draw, admission, passes,
//!   polling and abandonment on the real engine's queue, with its own store view and checks.

mod actor;
mod agenda;
mod client;
mod cluster;
mod faults;
mod finish;
mod node;
pub mod queue;
mod suite;
mod timers;
mod writer;

use std::cell::RefCell;
use std::sync::Arc;

use kuota_engine::{CategoryCode, EventQuota, RegistrationDetails, RegistrationId, Timestamp};

use crate::arrivals::arrival_times;
use crate::distribution::{MICROS_PER_MILLI, MICROS_PER_SECOND, Micros, NormalDraw, Sampler};
use crate::invariants::{StoreView, Violations};
use crate::metrics::{AnswerClass, ChartWindow, FinalState, Metrics};
use crate::progress::Progress;
use crate::random::{Rng, Stream};
use crate::scenario::Scenario;

pub use agenda::Action;
use agenda::{Agenda, EventKind, Serial};
pub use suite::SUITE_AFTERMATH_MS;

/// The node that owns the simulated event at opening.
const FIRST_OWNER_NODE: u32 = 0;

/// Virtual time zero (the opening) as the engine's wall-clock timestamp: an arbitrary instant
/// far from the epoch, like the engine's own tests use.
const OPENING: Timestamp = Timestamp::from_seconds(1_800_000_000);

/// Events between two progress updates; checking the wall clock on every event would cost more
/// than the events.
const PROGRESS_EVERY_EVENTS: u64 = 1 << 16;

/// Chart buckets over the arrival window, at most.
const CHART_BUCKETS_MAX: u64 = 300;

/// What a run allocated that the thread's next run can use again (a swarm runs thousands of
/// seeds on each thread): the agenda's buckets and the registrants' slots keep their capacity.
#[derive(Debug, Default)]
struct Spare {
    agenda: Option<Agenda>,
    registrants: Vec<client::Registrant>,
    /// The request slots and free list of `Requests`, emptied.
    requests: (Vec<Request>, Vec<u32>),
    store: crate::invariants::StoreBuffers,
    /// Quotas done with, for the next event or rebuild to grow into (`EventQuota::new_reusing`):
    /// a fresh 10,000-seat event's tables are megabytes, and page faults to get again.
    quotas: Vec<EventQuota>,
}

/// Quotas a thread keeps for reuse, at most: one for the next run's event, one for a rebuild.
const SPARE_QUOTAS_MAX: usize = 2;

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// A quota done with, if the thread keeps one (see `Spare::quotas`).
fn take_spare_quota() -> Option<EventQuota> {
    SPARE.with_borrow_mut(|spare| spare.quotas.pop())
}

/// Keeps `quota`, done with, for reuse (or drops it when the thread keeps enough).
fn keep_spare_quota(quota: EventQuota) {
    SPARE.with_borrow_mut(|spare| {
        if spare.quotas.len() < SPARE_QUOTAS_MAX {
            spare.quotas.push(quota);
        }
    });
}

/// How a run may deviate from the plain model.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Debug only: the simulator's store view counts every confirmation twice, so that the
    /// invariant checks have something to find.
    pub break_model: bool,
    /// Show a progress bar on stderr when it is a terminal and the run takes a while.
    pub progress: bool,
    /// Test only: the store commits a stale epoch's batches instead of fencing them, so that
    /// the swarm has a real bug to find.
    pub break_fencing: bool,
    /// Record no latency (`Metrics::counts_only`) and no per-fault figures: for runs whose
    /// invariants alone are read, such as the swarm's. The run is the same; its report would
    /// lack the latencies and the faults' tables.
    pub counts_only: bool,
    /// How lognormal durations draw their normal: the swarm's seeds, and `run --random-faults`
    /// that replays them, use the ziggurat (`NormalDraw`); every other run Box–Muller.
    pub normal_draw: NormalDraw,
}

/// Everything a finished run produced.
#[derive(Debug)]
pub struct RunResult {
    pub seed: u64,
    pub metrics: Metrics,
    /// The engine's seats at the end; empty when no engine held the event then (nobody served
    /// it and the store did not load: a violation).
    pub availability: Vec<kuota_engine::CategoryAvailability>,
    pub final_states: [u64; FinalState::ALL.len()],
    /// Registrants whose waitlisted registration got a seat.
    pub promoted_registrants: u64,
    pub violations: Violations,
    /// When the last event happened.
    pub end_at: Micros,
    /// Batches of a former owner that the store fenced (their epoch was stale).
    pub fenced_batches: u64,
    /// Loads of the event after opening: ownership moves and rollbacks.
    pub reloads: u64,
}

impl RunResult {
    pub fn final_count(&self, state: FinalState) -> u64 {
        self.final_states[FinalState::ALL.iter().position(|known| *known == state).unwrap_or(0)]
    }
}

/// Simulates `scenario` with `seed`.
pub fn simulate(scenario: &Scenario, seed: u64, options: RunOptions) -> RunResult {
    let mut arrivals_rng = Rng::new(seed, Stream::Arrivals);
    let arrivals = arrival_times(&scenario.arrivals, &mut arrivals_rng);
    let progress = Progress::new(options.progress, u64::from(scenario.arrivals.registrants), "registrants");
    let mut simulation = Simulation::new(scenario, seed, arrivals, options, progress, false);
    simulation.run();
    simulation.finish()
}

/// Seeds that share one crowd in the swarm (see `simulate_forked`). The more, the less of each
/// seed's run before its first fault is its own (paired runs of 3,200 seeds: 64 took 3.5–6.5 %
/// less CPU than 16, 128 no more than 4 % less than 64); 100,000 seeds are still 1,563 crowds.
pub const SEEDS_PER_CROWD: usize = 64;

/// The runs of `members`, which are `scenario` with faults of their own, on the crowd of
/// `crowd_seed`; `each(index, result)` gets member `index`'s run, in the order the members'
/// first faults start. This is how the swarm runs its seeds and `run --random-faults` replays
/// one (a single member): each member's faults join the run at the start of its first fault.
///
/// Until then a member's run is the crowd's run without faults, so it is run once for all the
/// members (the trunk): at each member's first fault the trunk is copied (into one `Simulation`
/// that every member but the last reuses, `clone_from`: its tables keep their room), the
/// member's faults join the copy, and the copy runs to its end. A seed's work before its first
/// fault is a third of it on average (race-10k-faults), and a member's run is its own from
/// there on.
///
/// What this changes against `simulate` with the faults from the start (the simplification
/// docs/capacity-planning.md states): leases and Redis are modelled in every member, as if
/// ownership could move (`simulate` leaves them out of runs whose faults cannot move it), the
/// store's decisions are kept for a reload, and work the store started before a member's first
/// fault ends as it would have without it (`simulate` lets a stall that starts while a commit
/// is in flight hold that commit up). Each member is still the same run whether it is run
/// alone or with others: the trunk is copied whole.
pub fn simulate_forked(
    scenario: &Scenario,
    crowd_seed: u64,
    members: &[Scenario],
    options: RunOptions,
    mut each: impl FnMut(usize, RunResult),
) {
    let trunk_scenario = Scenario { faults: Vec::new(), ..scenario.clone() };
    let mut arrivals_rng = Rng::new(crowd_seed, Stream::Arrivals);
    let arrivals = arrival_times(&trunk_scenario.arrivals, &mut arrivals_rng);
    let progress = Progress::new(options.progress, u64::from(scenario.arrivals.registrants), "registrants");
    let mut trunk = Simulation::new(&trunk_scenario, crowd_seed, arrivals, options, progress, true);
    if let [only] = members
        && !options.counts_only
    {
        // One member (a replay): its faults' figures count from the start, as `simulate`'s do.
        trunk.metrics.faults = faults::FaultPlan::new(only).stats(true);
    }
    trunk.schedule_next_arrival();
    trunk.start_lease_keeper(FIRST_OWNER_NODE);
    let mut order: Vec<(Micros, usize)> = members
        .iter()
        .enumerate()
        .map(|(index, member)| (faults::FaultPlan::new(member).first_start(), index))
        .collect();
    order.sort_unstable();
    let Some((&(last_at, last), others)) = order.split_last() else { return };
    // One member at a time, copied into the tables the one before it allocated.
    let mut member: Option<Simulation> = None;
    for &(fork_at, index) in others {
        trunk.run_until(fork_at);
        let member = match &mut member {
            Some(member) => {
                member.clone_from(&trunk);
                member
            }
            None => member.insert(trunk.clone()),
        };
        each(index, member.run_with_faults(&members[index]));
    }
    drop(member);
    // The last member takes the trunk itself.
    trunk.run_until(last_at);
    let result = trunk.run_with_faults(&members[last]);
    trunk.keep_spares();
    each(last, result);
}

/// Scenario figures in the simulator's units.
#[derive(Clone, Copy, Debug)]
struct Settings {
    patience_us: Micros,
    retry_jitter_us: Micros,
    retry_after_us: Micros,
    flush_interval_us: Micros,
    commit_per_effect_us: f64,
    forward_half_us: Micros,
    counters_lag_us: Micros,
    request_timeout_us: Micros,
    store_timeout_us: Micros,
    stall_threshold_us: Micros,
    redis_timeout_us: Micros,
    lease: cluster::LeaseTimes,
    write_behind: kuota_persist::write_behind::WriteBehindConfig,
    /// The scenario's distributions, ready to draw from.
    network_round_trip: Sampler,
    http_service: Sampler,
    actor_service: Sampler,
    commit_latency: Sampler,
    /// A load's own latency besides reading the registrations (`System::load_latency`).
    load_latency: Sampler,
    /// One Redis command of a claim, if it takes time (`System::redis_command`).
    redis_command: Option<Sampler>,
    /// A restarted process's start of its HTTP workers, if it takes time (`System::workers_start`).
    workers_start: Option<Sampler>,
    /// A restarted process's first claim's own cost, if any (`System::restart_first_claim`).
    restart_first_claim: Option<Sampler>,
    store_connect: Sampler,
    /// What the database spends on each connection a stall's cut calls left to it.
    abandoned_connection_us: Micros,
    pay_delay: Sampler,
    cancel_delay: Sampler,
}

fn micros_from_millis(milliseconds: f64) -> Micros {
    (milliseconds * MICROS_PER_MILLI as f64).round() as Micros
}

impl Settings {
    fn new(scenario: &Scenario, normal: NormalDraw) -> Self {
        let (behaviour, system) = (&scenario.behaviour, &scenario.system);
        Settings {
            patience_us: micros_from_millis(behaviour.patience_ms),
            retry_jitter_us: micros_from_millis(behaviour.retry_jitter_ms),
            retry_after_us: u64::from(system.retry_after_seconds) * MICROS_PER_SECOND,
            flush_interval_us: micros_from_millis(system.flush_interval_ms),
            commit_per_effect_us: system.commit_per_effect_ms * MICROS_PER_MILLI as f64,
            forward_half_us: micros_from_millis(system.forward_round_trip_ms) / 2,
            counters_lag_us: micros_from_millis(system.counters_lag_ms),
            request_timeout_us: system.request_timeout_ms * MICROS_PER_MILLI,
            store_timeout_us: system.store_timeout_ms * MICROS_PER_MILLI,
            stall_threshold_us: system.store_stall_ms * MICROS_PER_MILLI,
            redis_timeout_us: system.redis_timeout_ms * MICROS_PER_MILLI,
            lease: cluster::LeaseTimes::new(system.lease_ttl_ms),
            // The writer's own defaults, with the two the API sets from its settings.
            write_behind: kuota_persist::write_behind::WriteBehindConfig {
                commit_timeout_ms: system.store_timeout_ms,
                stall_threshold_ms: system.store_stall_ms,
                ..Default::default()
            },
            network_round_trip: system.network_round_trip.sampler_drawing(normal),
            http_service: system.http_service.sampler_drawing(normal),
            actor_service: system.actor_service.sampler_drawing(normal),
            commit_latency: system.commit_latency.sampler_drawing(normal),
            load_latency: system
                .load_latency
                .as_ref()
                .unwrap_or(&system.commit_latency)
                .sampler_drawing(normal),
            redis_command: system.redis_command.as_ref().map(|command| command.sampler_drawing(normal)),
            workers_start: system.workers_start.as_ref().map(|start| start.sampler_drawing(normal)),
            restart_first_claim: system
                .restart_first_claim
                .as_ref()
                .map(|claim| claim.sampler_drawing(normal)),
            store_connect: system.store_connect.sampler_drawing(normal),
            abandoned_connection_us: micros_from_millis(system.store_abandoned_connection_ms),
            pay_delay: behaviour.pay_delay.sampler_drawing(normal),
            cancel_delay: behaviour.cancel_delay.sampler_drawing(normal),
        }
    }
}

/// An HTTP request in flight, from its send to its answer reaching the registrant.
#[derive(Clone, Copy, Debug)]
struct Request {
    /// Unique in the run: timers name it, since slots are reused.
    serial: Serial,
    registrant: u32,
    action: Action,
    attempt: u32,
    /// The node the load balancer sent it to.
    node: u32,
    /// It went on to another node (the owner); its answer pays the hop back.
    forwarded: bool,
    /// An answer is on its way to the registrant (or has reached them).
    answered: bool,
    /// The server has let go of it; an answer sent early (a deadline, a lost connection) leaves
    /// this false until the server's own answer comes, and the slot is kept until then.
    server_done: bool,
    client_done: bool,
    /// The registrant's register sequence this request belongs to (register requests only).
    sequence: u32,
    sent_at: Micros,
    /// When it reached its node (set on arrival).
    arrived_at: Micros,
    round_trip_us: Micros,
    class: AnswerClass,
    registration: Option<RegistrationId>,
    replayed: bool,
    retry_after_us: Micros,
}

/// Requests in flight, in reusable slots so that memory follows the requests in flight rather
/// than all requests ever sent.
#[derive(Debug, Default)]
struct Requests {
    slots: Vec<Request>,
    free: Vec<u32>,
    in_flight: u64,
    next_serial: Serial,
}

impl Clone for Requests {
    fn clone(&self) -> Self {
        Requests {
            slots: with_room(&self.slots),
            free: with_room(&self.free),
            in_flight: self.in_flight,
            next_serial: self.next_serial,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Requests { slots, free, in_flight, next_serial } = source;
        self.slots.clone_from(slots);
        self.free.clone_from(free);
        self.in_flight = *in_flight;
        self.next_serial = *next_serial;
    }
}

impl Requests {
    /// No request, in the room of `slots` and `free` (emptied): what `default` gives.
    fn reusing((mut slots, mut free): (Vec<Request>, Vec<u32>)) -> Self {
        slots.clear();
        free.clear();
        Requests { slots, free, in_flight: 0, next_serial: 0 }
    }

    /// The slots and free list, for `reusing`.
    fn into_slots(self) -> (Vec<Request>, Vec<u32>) {
        (self.slots, self.free)
    }

    fn insert(&mut self, mut request: Request) -> u32 {
        self.in_flight += 1;
        self.next_serial = self.next_serial.checked_add(1).expect("fewer than 2^32 requests in one run");
        request.serial = self.next_serial;
        if let Some(slot) = self.free.pop() {
            self.slots[slot as usize] = request;
            return slot;
        }
        self.slots.push(request);
        (self.slots.len() - 1) as u32
    }

    fn get(&self, slot: u32) -> &Request {
        &self.slots[slot as usize]
    }

    fn get_mut(&mut self, slot: u32) -> &mut Request {
        &mut self.slots[slot as usize]
    }

    /// The registrant has the answer; the slot is freed once the server is done with it too.
    fn client_answered(&mut self, slot: u32) -> Request {
        self.in_flight -= 1;
        let request = &mut self.slots[slot as usize];
        request.client_done = true;
        let copy = *request;
        self.release_if_done(slot);
        copy
    }

    /// The server is done with the request (answered it, or dropped it after an early answer).
    fn server_released(&mut self, slot: u32) {
        self.slots[slot as usize].server_done = true;
        self.release_if_done(slot);
    }

    fn release_if_done(&mut self, slot: u32) {
        let request = &mut self.slots[slot as usize];
        if request.client_done && request.server_done {
            // Marked so that a stale timer cannot mistake the next request in the slot for it.
            request.serial = 0;
            self.free.push(slot);
        }
    }

    /// Whether `slot` still holds the request numbered `serial`.
    fn holds(&self, slot: u32, serial: Serial) -> bool {
        self.slots.get(slot as usize).is_some_and(|request| request.serial == serial && serial != 0)
    }

    /// Slots of requests the registrant has no answer to yet.
    fn unanswered(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, request)| request.serial != 0 && !request.answered)
            .map(|(slot, _)| slot as u32)
    }
}

struct Simulation<'a> {
    scenario: &'a Scenario,
    seed: u64,
    settings: Settings,
    now: Micros,
    agenda: Agenda,
    arrivals: Vec<Micros>,
    next_arrival: usize,
    behaviour_rng: Rng,
    system_rng: Rng,
    /// Cumulative demand shares of the categories, for drawing a registrant's choice.
    demand_cumulative: Vec<f64>,
    codes: Vec<CategoryCode>,
    details: Arc<RegistrationDetails>,
    registrants: Vec<client::Registrant>,
    requests: Requests,
    /// Impatient registrants' patience for the answer to their register request (registrant,
    /// register sequence): it runs for the same time from each send.
    patience: timers::FifoTimers<(u32, u32)>,
    nodes: node::Nodes,
    actor: actor::Actor,
    writer: writer::Writer,
    /// Frozen former owners' actors and writers, after another node loaded the event.
    zombies: Vec<(actor::Actor, writer::Writer)>,
    cluster: cluster::Cluster,
    faults: faults::FaultPlan,
    health: faults::StoreHealth,
    store: StoreView,
    metrics: Metrics,
    progress: Progress,
    break_fencing: bool,
    fenced_batches: u64,
    reloads: u64,
    /// Faults whose recovery is measured as the live fault suite does (`suite`).
    suite: Vec<suite::SuiteProbe>,
    suite_rng: Rng,
    /// The vector each decision's effects are made in (see `actor::decide`).
    effects_scratch: Vec<kuota_engine::Effect>,
}

/// A clone of a forked run's trunk (`simulate_forked`) goes on growing what the trunk grew: the
/// vectors that grow through a run keep their room in the clone (see `with_room`), so that
/// they are not grown again, copied at each doubling.
impl Clone for Simulation<'_> {
    fn clone(&self) -> Self {
        Simulation {
            scenario: self.scenario,
            seed: self.seed,
            settings: self.settings,
            now: self.now,
            agenda: self.agenda.clone(),
            arrivals: self.arrivals.clone(),
            next_arrival: self.next_arrival,
            behaviour_rng: self.behaviour_rng.clone(),
            system_rng: self.system_rng.clone(),
            demand_cumulative: self.demand_cumulative.clone(),
            codes: self.codes.clone(),
            details: self.details.clone(),
            registrants: with_room(&self.registrants),
            requests: self.requests.clone(),
            patience: self.patience.clone(),
            nodes: self.nodes.clone(),
            actor: self.actor.clone(),
            writer: self.writer.clone(),
            zombies: self.zombies.clone(),
            cluster: self.cluster.clone(),
            faults: self.faults.clone(),
            health: self.health.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            progress: self.progress.clone(),
            break_fencing: self.break_fencing,
            fenced_batches: self.fenced_batches,
            reloads: self.reloads,
            suite: self.suite.clone(),
            suite_rng: self.suite_rng.clone(),
            effects_scratch: with_room(&self.effects_scratch),
        }
    }

    /// Into what `self` allocated, its tables and queues keeping their room: `simulate_forked`
    /// copies its trunk into one member after another. Every field is named, so that a new one
    /// cannot be left out.
    fn clone_from(&mut self, source: &Self) {
        let Simulation {
            scenario,
            seed,
            settings,
            now,
            agenda,
            arrivals,
            next_arrival,
            behaviour_rng,
            system_rng,
            demand_cumulative,
            codes,
            details,
            registrants,
            requests,
            patience,
            nodes,
            actor,
            writer,
            zombies,
            cluster,
            faults,
            health,
            store,
            metrics,
            progress,
            break_fencing,
            fenced_batches,
            reloads,
            suite,
            suite_rng,
            effects_scratch,
        } = source;
        self.scenario = scenario;
        self.seed = *seed;
        self.settings = *settings;
        self.now = *now;
        self.agenda.clone_from(agenda);
        self.arrivals.clone_from(arrivals);
        self.next_arrival = *next_arrival;
        self.behaviour_rng.clone_from(behaviour_rng);
        self.system_rng.clone_from(system_rng);
        self.demand_cumulative.clone_from(demand_cumulative);
        self.codes.clone_from(codes);
        self.details.clone_from(details);
        self.registrants.clone_from(registrants);
        self.requests.clone_from(requests);
        self.patience.clone_from(patience);
        self.nodes.clone_from(nodes);
        self.actor.clone_from(actor);
        self.writer.clone_from(writer);
        self.zombies.clone_from(zombies);
        self.cluster.clone_from(cluster);
        self.faults.clone_from(faults);
        self.health.clone_from(health);
        self.store.clone_from(store);
        self.metrics.clone_from(metrics);
        self.progress.clone_from(progress);
        self.break_fencing = *break_fencing;
        self.fenced_batches = *fenced_batches;
        self.reloads = *reloads;
        self.suite.clone_from(suite);
        self.suite_rng.clone_from(suite_rng);
        self.effects_scratch.clone_from(effects_scratch);
    }
}

/// A copy of `items` with the room of the original, not only its length (what `Vec::clone` gives).
pub(crate) fn with_room<T: Clone>(items: &Vec<T>) -> Vec<T> {
    let mut copy = Vec::with_capacity(items.capacity());
    copy.extend_from_slice(items);
    copy
}

impl<'a> Simulation<'a> {
    fn new(
        scenario: &'a Scenario,
        seed: u64,
        arrivals: Vec<Micros>,
        options: RunOptions,
        progress: Progress,
        forked: bool,
    ) -> Self {
        let config = scenario.event_config();
        let codes = config.categories.iter().map(|category| category.code.clone()).collect();
        let capacity =
            config.categories.iter().map(|category| (category.code.to_string(), category.capacity)).collect();
        let quota = match take_spare_quota() {
            Some(spare) => EventQuota::new_reusing(config, spare),
            None => EventQuota::new(config),
        };
        let quota = quota.expect("the scenario's event was validated when it was parsed");
        let registrants = scenario.arrivals.registrants as usize;
        let window = chart_window(scenario);
        let settings = Settings::new(scenario, options.normal_draw);
        let plan = faults::FaultPlan::new(scenario);
        let mut metrics =
            if options.counts_only { Metrics::counts_only(window) } else { Metrics::new(window) };
        // A run that counts only is read for its invariants alone (a swarm's seed): the figures
        // of each fault, updated at every answer, are left out too, unless the live suite's
        // probing writes its own into them.
        let suite_probes = scenario.faults.iter().any(|fault| fault.suite_probes);
        if !options.counts_only || suite_probes {
            metrics.faults = plan.stats(!options.counts_only);
        }
        let (agenda, mut spare_registrants, spare_requests, store_buffers) = SPARE.with_borrow_mut(|spare| {
            let agenda = spare.agenda.take().unwrap_or_default();
            let requests = std::mem::take(&mut spare.requests);
            (agenda, std::mem::take(&mut spare.registrants), requests, std::mem::take(&mut spare.store))
        });
        spare_registrants.clear();
        spare_registrants.reserve(registrants);
        let mut cumulative = 0.0;
        let demand_cumulative = scenario
            .demand_shares()
            .iter()
            .map(|share| {
                cumulative += share;
                cumulative
            })
            .collect();
        Simulation {
            scenario,
            seed,
            cluster: cluster::Cluster::new(scenario.system.nodes, &plan, &settings, forked),
            settings,
            now: 0,
            agenda,
            arrivals,
            next_arrival: 0,
            behaviour_rng: Rng::new(seed, Stream::Behaviour),
            system_rng: Rng::new(seed, Stream::System),
            demand_cumulative,
            codes,
            details: Arc::new(RegistrationDetails {
                full_name: "Simulated Registrant".into(),
                ..Default::default()
            }),
            registrants: spare_registrants,
            requests: Requests::reusing(spare_requests),
            patience: timers::FifoTimers::default(),
            nodes: node::Nodes::new(scenario.system.nodes),
            actor: actor::Actor::new(quota, &scenario.event, FIRST_OWNER_NODE, 0),
            writer: writer::Writer::new(0),
            zombies: Vec::new(),
            store: StoreView::with_buffers(
                capacity,
                // The suite's probe registrants come after the crowd's.
                registrants + suite_probe_registrants(scenario),
                options.break_model,
                plan.has_faults() || forked,
                store_buffers,
            ),
            faults: plan,
            health: faults::StoreHealth::default(),
            metrics,
            progress,
            break_fencing: options.break_fencing,
            fenced_batches: 0,
            reloads: 0,
            suite: Vec::new(),
            suite_rng: Rng::new(seed, Stream::Suite),
            effects_scratch: Vec::new(),
        }
    }

    fn run(&mut self) {
        self.schedule_next_arrival();
        self.schedule_faults();
        self.start_lease_keeper(FIRST_OWNER_NODE);
        self.run_until(Micros::MAX);
        self.progress.finish();
    }

    /// Handles every event due before `until` (all of them for `Micros::MAX`).
    fn run_until(&mut self, until: Micros) {
        loop {
            // To the end, the agenda's own `pop`: `pop_before` looks ahead before moving on.
            let next = if until == Micros::MAX { self.agenda.pop() } else { self.agenda.pop_before(until) };
            let Some((at, kind)) = next else { break };
            self.now = at;
            self.dispatch(kind);
            self.metrics.events_processed += 1;
            if self.metrics.events_processed.is_multiple_of(PROGRESS_EVERY_EVENTS) {
                self.progress.update(self.next_arrival as u64);
            }
        }
    }

    /// A trunk of `simulate_forked`, or a copy of it, run to its end with `scenario`'s faults.
    fn run_with_faults(&mut self, scenario: &'a Scenario) -> RunResult {
        self.join_faults(scenario);
        self.run_until(Micros::MAX);
        self.progress.finish();
        self.conclude()
    }

    /// `scenario`'s faults join a run of the trunk of `simulate_forked`, due before none of them.
    fn join_faults(&mut self, scenario: &'a Scenario) {
        let plan = faults::FaultPlan::new(scenario);
        self.cluster.model_leases_until(&plan);
        self.scenario = scenario;
        self.faults = plan;
        self.schedule_faults();
    }

    #[inline(always)]
    fn dispatch(&mut self, kind: EventKind) {
        // A frozen node does nothing: what it would have done waits until it goes on. (Most
        // events come while no node is frozen: then which node they happen on is not looked up.)
        if self.cluster.may_be_frozen(self.now)
            && let Some(until) =
                self.node_of(&kind).and_then(|node| self.cluster.frozen_until(node, self.now))
        {
            return self.agenda.schedule(until, kind);
        }
        match kind {
            EventKind::Arrival => self.arrive(),
            EventKind::Send { registrant, action, attempt } => self.send(registrant, action, attempt),
            EventKind::NodeIngress { request } => self.node_ingress(request),
            EventKind::WorkerDone { node, request, life } => self.worker_done(node.into(), request, life),
            EventKind::WorkersStart { node, life } => self.workers_start(node.into(), life),
            EventKind::ActorReceive { request, node } => self.forward_received(request, node),
            EventKind::ActorDone { incarnation } => self.actor_done(incarnation),
            EventKind::HoldTick { incarnation } => self.hold_tick(incarnation),
            EventKind::FlushDue { writer } => self.flush_due(writer),
            EventKind::CommitDone { writer, batch } => self.commit_done(writer, batch),
            EventKind::CommitRetry { writer, batch } => self.commit_retry(writer, batch),
            EventKind::ClientAnswer { request } => self.client_answer(request),
            EventKind::PatienceOver => self.patience_over(),
            EventKind::Deadlines { node } => self.deadlines_due(node.into()),
            EventKind::LateRefusal { request, serial, class } => {
                if self.requests.holds(request, serial) {
                    self.answer(request, class, None, false);
                }
            }
            EventKind::ClaimAgain { request, serial, node, forwarded } => {
                if self.requests.holds(request, serial) {
                    self.serve_or_forward(request, node.into(), forwarded);
                }
            }
            EventKind::LimitChecked { request, serial, node } => {
                if self.requests.holds(request, serial) {
                    self.limit_checked(request, node.into());
                }
            }
            EventKind::LeaseRenew { lease } => self.renew_lease(lease),
            EventKind::LeaseCheck { lease } => self.check_lease(lease),
            EventKind::LoadAttempt { incarnation } => self.load_attempt(incarnation),
            EventKind::Loaded { incarnation } => self.loaded(incarnation),
            EventKind::LoadWaitOver { incarnation } => self.load_wait_over(incarnation),
            EventKind::StoreProbe => self.probe_store(),
            EventKind::SuitePoll { fault } => self.suite_poll(fault),
            EventKind::SuiteReady { fault } => self.suite_ready(fault),
            EventKind::SuiteSend { fault } => self.suite_send(fault),
            EventKind::FaultStart { fault } => self.fault_starts(fault as usize),
            EventKind::FaultEnd { fault } => self.fault_ends(fault as usize),
        }
    }

    /// The node an event happens on, for those that a frozen node must not run.
    fn node_of(&self, kind: &EventKind) -> Option<u32> {
        match *kind {
            EventKind::NodeIngress { request } => Some(self.requests.get(request).node),
            EventKind::WorkerDone { node, .. }
            | EventKind::WorkersStart { node, .. }
            | EventKind::ClaimAgain { node, .. }
            | EventKind::LimitChecked { node, .. }
            | EventKind::Deadlines { node } => Some(node.into()),
            EventKind::ActorReceive { node, .. } => Some(node),
            EventKind::ActorDone { incarnation }
            | EventKind::HoldTick { incarnation }
            | EventKind::LoadAttempt { incarnation }
            | EventKind::LoadWaitOver { incarnation }
            | EventKind::Loaded { incarnation } => {
                (self.actor.incarnation == incarnation).then_some(self.actor.node)
            }
            EventKind::FlushDue { writer }
            | EventKind::CommitDone { writer, .. }
            | EventKind::CommitRetry { writer, .. } => (self.writer.id == writer).then_some(self.actor.node),
            EventKind::LeaseRenew { lease } | EventKind::LeaseCheck { lease } => {
                self.cluster.keeper_node(lease)
            }
            _ => None,
        }
    }

    fn schedule_in(&mut self, delay: Micros, kind: EventKind) {
        self.agenda.schedule(self.now + delay, kind);
    }

    /// Sends `class` back to the registrant of `request`; `from_owner` answers pay the forward
    /// hop back when the request was forwarded. An answer to a request answered already (its
    /// deadline passed, its connection was lost) goes nowhere: the server only lets go of it.
    fn answer(
        &mut self,
        slot: u32,
        class: AnswerClass,
        registration: Option<RegistrationId>,
        from_owner: bool,
    ) {
        if self.requests.get(slot).answered {
            return self.requests.server_released(slot);
        }
        self.requests.get_mut(slot).server_done = true;
        self.send_answer(slot, class, registration, from_owner);
    }

    /// Answers the registrant now while the server still holds the request (a deadline, a lost
    /// connection); the server's own answer, when it comes, goes nowhere.
    fn answer_early(&mut self, slot: u32, class: AnswerClass) {
        if self.requests.get(slot).answered {
            return;
        }
        self.send_answer(slot, class, None, false);
    }

    fn send_answer(
        &mut self,
        slot: u32,
        class: AnswerClass,
        registration: Option<RegistrationId>,
        from_owner: bool,
    ) {
        let arrived_at = self.requests.get(slot).arrived_at;
        self.metrics.note_server_answer(class, self.now, arrived_at);
        let forward_half_us = self.settings.forward_half_us;
        let retry_after_us = self.settings.retry_after_us;
        let request = self.requests.get_mut(slot);
        request.answered = true;
        request.class = class;
        request.registration = registration;
        if (class.asks_to_retry() && class != AnswerClass::RateLimited) || class == AnswerClass::KeyInFlight {
            request.retry_after_us = retry_after_us;
        }
        let mut back = request.round_trip_us - request.round_trip_us / 2;
        if from_owner && request.forwarded {
            back += forward_half_us;
        }
        self.schedule_in(back, EventKind::ClientAnswer { request: slot });
    }

    fn timestamp(&self) -> Timestamp {
        OPENING.plus_millis(self.now / MICROS_PER_MILLI)
    }
}

/// Registrants the live fault suite's probing may add to a run (`suite`).
fn suite_probe_registrants(scenario: &Scenario) -> usize {
    let probed = scenario.faults.iter().filter(|fault| fault.suite_probes).count();
    probed * suite::SUITE_PROBES_MAX as usize
}

/// Micros after opening of an engine timestamp.
fn micros_of(timestamp: Timestamp) -> Micros {
    OPENING.millis_until(timestamp) * MICROS_PER_MILLI
}

/// The charts cover the arrival window and a tenth more, in at most `CHART_BUCKETS_MAX` buckets.
fn chart_window(scenario: &Scenario) -> ChartWindow {
    let arrival_seconds = scenario.arrivals.spike_seconds + scenario.arrivals.tail_seconds;
    let seconds = ((arrival_seconds * 1.1).ceil() as u64).max(10);
    let bucket_seconds = seconds.div_ceil(CHART_BUCKETS_MAX).max(1);
    ChartWindow { bucket_seconds, buckets: seconds.div_ceil(bucket_seconds) as usize }
}
