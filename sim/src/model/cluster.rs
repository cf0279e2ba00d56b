//! Who runs the event: nodes that crash, freeze and restart; the ownership lease as Redis and
//! its holder see it (`persist/src/lease.rs`: TTL, safety margin, renewal interval and retries;
//! `persist/src/ownership.rs`: claims, taking over a previous life's lease, the pause after
//! Redis failed); loading the event with a new epoch (`store/recovery.rs`), which fences the
//! former owner's writes; forwarding to the owner (`api/src/forward.rs`: answer timeout, cool
//! down). Leases are only modelled when a fault can move ownership; otherwise node 0 owns the
//! event throughout, as before.

use std::time::Duration;

use kuota_api::forward::{FORWARD_ANSWER_TIMEOUT_MS, PEER_COOL_DOWN_MS};
use kuota_api::owner_cache::{
    FAILING_OWNER_ENTRY_MS_MAX, LEASE_TTL_ENTRY_LIFETIMES_MIN, OWNER_CACHE_ENTRY_MS_MAX,
};
use kuota_api::rate_limit::SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS;
use kuota_engine::EventQuota;
use kuota_engine::actor::event_actor::RELOAD_RETRY_DELAY_MS;
use kuota_persist::lease::{
    LEASE_RENEW_INTERVAL_MIN_MS, LEASE_RENEW_RETRY_DELAY_MS, LEASE_RENEWALS_PER_VALIDITY, lease_safety_margin,
};
use kuota_persist::ownership::CLAIM_PAUSE_AFTER_UNAVAILABLE_MS;

use super::actor::{Actor, ActorState};
use super::agenda::{Action, EventKind, Incarnation, LeaseId, node_id};
use super::faults::FaultPlan;
use super::writer::Writer;
use super::{Settings, Simulation};
use crate::distribution::{MICROS_PER_MILLI, MICROS_PER_SECOND, Micros};
use crate::invariants::CHECK_RELOAD;
use crate::metrics::AnswerClass;

/// Redis commands an acquisition sends one after the other when Redis does not answer: the
/// `SET NX`, then the `GET` that reads the key back (`RedisLeases::resolve_unknown_acquisition`
/// in `persist/src/lease.rs`). Not a setting: the count of awaited calls in that code path.
const ACQUISITION_COMMANDS_UNANSWERED: Micros = 2;

/// Redis commands a claim that takes a free lease sends (`RedisLeases::acquire_lease`): the
/// `SET NX`. Not a setting: the count of awaited calls in that code path.
const ACQUISITION_COMMANDS: u32 = 1;

/// Redis commands a claim sends, one after the other, to take over the lease a previous life of
/// its node id holds (`LeaseOwnership::claim_event`): the `SET NX` that finds the key taken,
/// the `GET` of its holder, and the take-over script's `EVALSHA` (`take_over_lease`).
const TAKE_OVER_COMMANDS: u32 = 3;

/// Redis commands the take-over adds when Redis has not run its script yet: the `EVALSHA` is
/// refused (`NOSCRIPT`), and redis-rs sends `SCRIPT LOAD` and the `EVALSHA` again
/// (`ScriptInvocation::invoke_async`). The suite's Redis is a fresh one for each run.
const SCRIPT_LOAD_COMMANDS: u32 = 2;

/// Lease durations in the simulator's unit, computed as `Lease` computes them.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaseTimes {
    ttl_us: Micros,
    /// How long the holder trusts its lease after a renewal: the TTL less the safety margin.
    validity_us: Micros,
    renew_every_us: Micros,
}

impl LeaseTimes {
    pub(super) fn new(ttl_ms: u64) -> Self {
        let ttl = Duration::from_millis(ttl_ms);
        let validity = ttl.saturating_sub(lease_safety_margin(ttl));
        let every =
            (validity / LEASE_RENEWALS_PER_VALIDITY).max(Duration::from_millis(LEASE_RENEW_INTERVAL_MIN_MS));
        LeaseTimes {
            ttl_us: ttl.as_micros() as Micros,
            validity_us: validity.as_micros() as Micros,
            renew_every_us: every.as_micros() as Micros,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Up,
    Frozen { until: Micros },
    Down,
}

/// The holder's side of the lease (`LeaseKeeper`).
#[derive(Clone, Copy, Debug)]
struct Keeper {
    id: LeaseId,
    node: u32,
    valid_until: Micros,
}

/// Where a request for the event goes from a node (`Registry::locate` and `claim_event`).
#[derive(Clone, Copy, Debug)]
enum Claim {
    Here,
    Elsewhere(u32),
    /// The lease service failed; the refusal comes after `delay` (a command timeout, or none
    /// while claims are paused).
    Unavailable {
        delay: Micros,
    },
    /// Redis is out but comes back at `at`, within the command's timeout: it answers the
    /// waiting command then, and the claim goes on.
    WaitsUntil {
        at: Micros,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Cluster {
    states: Vec<NodeState>,
    /// Bumped when a node crashes, so that what its former life scheduled is ignored.
    lives: Vec<u32>,
    leases_modelled: bool,
    /// After the last fault and a few TTLs, renewals are no longer simulated (they would keep
    /// the agenda busy for ever): the lease is held until the end.
    leases_until: Micros,
    times: LeaseTimes,
    /// Redis's record: who holds the event's lease, and until when.
    holder: u32,
    expires_at: Micros,
    keeper: Option<Keeper>,
    next_lease: LeaseId,
    next_incarnation: Incarnation,
    /// Per node: from when until when its claims are refused at once (`check_not_paused`);
    /// the pause starts when a claim fails, the Redis timeout after it was made, and requests
    /// that come before then wait for that claim.
    claims_paused: Vec<(Micros, Micros)>,
    /// Per node: from when until when shared rate-limit checks are skipped after one failed
    /// (`SharedGcra::check`).
    limits_paused: Vec<(Micros, Micros)>,
    /// Per node: a peer it failed to forward to, and from when until when it refuses at once
    /// instead (from when the failure shows: a frozen peer's only after the answer timeout).
    cool_down: Vec<Option<(u32, Micros, Micros)>>,
    /// Per node: the owner it remembers (`OwnerCache`), and until when.
    owner_cache: Vec<Option<(u32, Micros)>>,
    /// The node whose lease replies are lost during `lost_lease_reply` faults.
    lost_replies_of: Option<u32>,
    /// Redis has the take-over script in its cache (it ran it once).
    take_over_script_cached: bool,
    /// Per node: a restarted process that has not claimed anything yet.
    fresh_process: Vec<bool>,
    /// The store's epoch of the event: each load takes the next one.
    pub(super) store_epoch: u64,
    /// A load found the store in a state recovery refuses; the event is not served any more.
    unloadable: bool,
    /// The node each fault hit when it started (node faults only matter).
    fault_targets: Vec<u32>,
    /// No node is frozen from then on (the latest end of a freeze so far): before each event,
    /// the check for a frozen node is skipped past it.
    frozen_before: Micros,
}

/// When lease renewals stop being simulated: a few TTLs after the last fault.
fn leases_until(plan: &FaultPlan, times: &LeaseTimes) -> Micros {
    plan.last_end() + 4 * times.ttl_us
}

impl Cluster {
    /// The faults of `plan` joined a forked run (`Cluster::new`): renewals go on until after them.
    pub(super) fn model_leases_until(&mut self, plan: &FaultPlan) {
        self.leases_until = leases_until(plan, &self.times);
    }

    /// `forked`: the trunk of `simulate_forked`, whose members' faults join it later: leases
    /// are modelled, and renewed until a member's faults say how long.
    pub(super) fn new(nodes: u32, plan: &FaultPlan, settings: &Settings, forked: bool) -> Self {
        let times = settings.lease;
        Cluster {
            states: vec![NodeState::Up; nodes as usize],
            lives: vec![0; nodes as usize],
            leases_modelled: forked || plan.moves_ownership(),
            leases_until: if forked { Micros::MAX } else { leases_until(plan, &times) },
            times,
            holder: 0,
            expires_at: Micros::MAX,
            keeper: None,
            next_lease: 0,
            next_incarnation: 1,
            claims_paused: vec![(0, 0); nodes as usize],
            limits_paused: vec![(0, 0); nodes as usize],
            cool_down: vec![None; nodes as usize],
            owner_cache: vec![None; nodes as usize],
            lost_replies_of: None,
            take_over_script_cached: false,
            fresh_process: vec![false; nodes as usize],
            store_epoch: 1,
            unloadable: false,
            fault_targets: Vec::new(),
            frozen_before: 0,
        }
    }

    /// Whether a node may be frozen at `now` (`frozen_until` says which).
    pub(super) fn may_be_frozen(&self, now: Micros) -> bool {
        now < self.frozen_before
    }

    pub(super) fn frozen_until(&self, node: u32, now: Micros) -> Option<Micros> {
        match self.states[node as usize] {
            NodeState::Frozen { until } if now < until => Some(until),
            _ => None,
        }
    }

    /// Redis is in the model (a fault can move ownership); otherwise it is not asked at all.
    pub(super) fn redis_modelled(&self) -> bool {
        self.leases_modelled
    }

    pub(super) fn is_down(&self, node: u32) -> bool {
        self.states[node as usize] == NodeState::Down
    }

    pub(super) fn life(&self, node: u32) -> u32 {
        self.lives[node as usize]
    }

    pub(super) fn keeper_node(&self, lease: LeaseId) -> Option<u32> {
        self.keeper.filter(|keeper| keeper.id == lease).map(|keeper| keeper.node)
    }

    /// The node a node fault hits: the owner, or the lease's holder while nobody runs the event.
    pub(super) fn owner_node(&self, actor_node: u32, actor_running: bool) -> u32 {
        if actor_running { actor_node } else { self.holder }
    }

    pub(super) fn freeze(&mut self, node: u32, until: Micros) {
        if self.states[node as usize] == NodeState::Up {
            self.states[node as usize] = NodeState::Frozen { until };
            self.frozen_before = self.frozen_before.max(until);
        }
    }

    pub(super) fn lose_replies_of(&mut self, node: u32) {
        self.lost_replies_of = Some(node);
    }

    /// A crashed node comes back (same node id, a new process); false if it was not down.
    pub(super) fn restart(&mut self, node: u32) -> bool {
        let down = self.states[node as usize] == NodeState::Down;
        if down {
            self.states[node as usize] = NodeState::Up;
            self.fresh_process[node as usize] = true;
        }
        down
    }

    /// Remembers which node fault number `fault` hit, for its end.
    pub(super) fn note_target(&mut self, fault: usize, node: u32) {
        if self.fault_targets.len() <= fault {
            self.fault_targets.resize(fault + 1, 0);
        }
        self.fault_targets[fault] = node;
    }

    pub(super) fn target_of(&self, fault: usize) -> u32 {
        self.fault_targets.get(fault).copied().unwrap_or(0)
    }

    fn cooling(&self, node: u32, owner: u32, now: Micros) -> bool {
        self.cool_down[node as usize]
            .is_some_and(|(peer, from, until)| peer == owner && from <= now && now < until)
    }

    /// `OwnerCache::claim`: an owner remembered a moment ago, without asking Redis.
    fn cached_owner(&self, node: u32, now: Micros) -> Option<u32> {
        self.owner_cache[node as usize]
            .filter(|(owner, until)| *owner != node && now < *until)
            .map(|(owner, _)| owner)
    }

    /// Remembers `owner` on `node` for an entry's lifetime: shorter for short leases, and
    /// short while forwarding to that owner fails (`FAILING_OWNER_ENTRY_MS_MAX`).
    fn remember_owner(&mut self, node: u32, owner: u32, now: Micros) {
        let ttl_ms = self.times.ttl_us / MICROS_PER_MILLI;
        let lifetime_ms = if self.cooling(node, owner, now) {
            FAILING_OWNER_ENTRY_MS_MAX
        } else {
            OWNER_CACHE_ENTRY_MS_MAX.min(ttl_ms / u64::from(LEASE_TTL_ENTRY_LIFETIMES_MIN))
        };
        self.owner_cache[node as usize] = Some((owner, now + lifetime_ms * MICROS_PER_MILLI));
    }

    fn forget_owner(&mut self, node: u32) {
        self.owner_cache[node as usize] = None;
    }

    pub(super) fn next_incarnation(&mut self) -> Incarnation {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        incarnation
    }
}

impl Simulation<'_> {
    pub(super) fn redis_unreachable_from(&self, node: u32) -> bool {
        self.faults.redis_down(self.now)
            || (self.faults.replies_lost(self.now) && self.cluster.lost_replies_of == Some(node))
    }

    /// `node` now holds the event's lease: Redis records it, and the node keeps it renewed.
    pub(super) fn start_lease_keeper(&mut self, node: u32) {
        let cluster = &mut self.cluster;
        cluster.holder = node;
        if !cluster.leases_modelled {
            cluster.expires_at = Micros::MAX;
            return;
        }
        cluster.next_lease += 1;
        let id = cluster.next_lease;
        let times = cluster.times;
        cluster.expires_at = self.now + times.ttl_us;
        cluster.keeper = Some(Keeper { id, node, valid_until: self.now + times.validity_us });
        self.schedule_in(times.renew_every_us, EventKind::LeaseRenew { lease: id });
        self.schedule_in(times.validity_us, EventKind::LeaseCheck { lease: id });
    }

    /// `keep_renewed` and `renew_before`: renew on schedule; after an error, retry until the
    /// lease's validity runs out; a lease found taken or expired is lost.
    pub(super) fn renew_lease(&mut self, lease: LeaseId) {
        let Some(keeper) = self.cluster.keeper.filter(|keeper| keeper.id == lease) else { return };
        let times = self.cluster.times;
        if self.now >= self.cluster.leases_until {
            // No fault is left: the lease is simply kept from here on.
            self.cluster.expires_at = Micros::MAX;
            self.cluster.keeper = Some(Keeper { valid_until: Micros::MAX, ..keeper });
            return;
        }
        let held = self.cluster.holder == keeper.node && self.cluster.expires_at > self.now;
        if self.redis_unreachable_from(keeper.node) {
            if held && !self.faults.redis_down(self.now) {
                // The command reached Redis and renewed the lease; only its reply was lost.
                self.cluster.expires_at = self.now + times.ttl_us;
            }
            let retry_at =
                self.now + self.settings.redis_timeout_us + LEASE_RENEW_RETRY_DELAY_MS * MICROS_PER_MILLI;
            if retry_at < keeper.valid_until {
                self.agenda.schedule(retry_at, EventKind::LeaseRenew { lease });
            }
            return;
        }
        if !held {
            return self.step_down();
        }
        self.cluster.expires_at = self.now + times.ttl_us;
        let valid_until = self.now + times.validity_us;
        self.cluster.keeper = Some(Keeper { valid_until, ..keeper });
        self.schedule_in(times.renew_every_us, EventKind::LeaseRenew { lease });
        self.agenda.schedule(valid_until, EventKind::LeaseCheck { lease });
    }

    /// `Tenure::is_held`: past its validity the holder acts as if the lease were lost.
    pub(super) fn check_lease(&mut self, lease: LeaseId) {
        if self.cluster.keeper.is_some_and(|keeper| keeper.id == lease && self.now >= keeper.valid_until) {
            self.step_down();
        }
    }

    /// The owner lost its lease: its actor stops (callers get 503), its writer finishes what it
    /// has (those batches commit under the epoch still current).
    fn step_down(&mut self) {
        self.cluster.keeper = None;
        if self.actor.is_running() {
            self.retire_actor(AnswerClass::ShedMoving);
            let fresh = Writer::new(self.cluster.next_incarnation());
            let writer = std::mem::replace(&mut self.writer, fresh);
            self.bury(writer);
        }
    }

    /// Stops the current actor: everything it holds is answered `class`.
    fn retire_actor(&mut self, class: AnswerClass) {
        let requests = self.actor.stop();
        self.answer_held(requests, class);
    }

    /// Answers the requests a stopped actor held.
    fn answer_held(&mut self, requests: Vec<u32>, class: AnswerClass) {
        for slot in requests {
            let class = if class == AnswerClass::ConnectionLost && self.requests.get(slot).forwarded {
                // The forwarding node saw the owner's connection drop: a 503 "moving".
                AnswerClass::ShedMoving
            } else {
                class
            };
            self.answer(slot, class, None, true);
        }
    }

    /// A former owner's writer sends what it still has. A stalled store takes none of it; a
    /// stale epoch is fenced.
    fn bury(&mut self, writer: Writer) {
        let stalled = self.faults.store_stalled_until(self.now).is_some();
        for (epoch, effects) in writer.into_unfinished() {
            if !stalled {
                self.commit_to_store(epoch, &effects);
            }
        }
    }

    /// A node fault: the node dies. Requests it holds lose their connection; its actor and
    /// writer are gone (the database rolls back its open transactions).
    pub(super) fn crash(&mut self, node: u32) {
        self.cluster.states[node as usize] = NodeState::Down;
        self.cluster.lives[node as usize] += 1;
        if self.cluster.keeper.is_some_and(|keeper| keeper.node == node) {
            self.cluster.keeper = None;
        }
        if self.actor.is_running() && self.actor.node == node {
            self.retire_actor(AnswerClass::ConnectionLost);
            self.writer = Writer::new(self.cluster.next_incarnation());
        }
        // A frozen former owner that dies: its callers lose their connection, its transactions
        // roll back.
        let (dead, alive) =
            std::mem::take(&mut self.zombies).into_iter().partition(|(actor, _)| actor.node == node);
        self.zombies = alive;
        for (mut actor, _) in dead {
            let held = actor.stop();
            self.answer_held(held, AnswerClass::ConnectionLost);
        }
        self.nodes.reset(node);
        let lost: Vec<u32> =
            self.requests.unanswered().filter(|slot| self.requests.get(*slot).node == node).collect();
        for slot in lost {
            self.answer_early(slot, AnswerClass::ConnectionLost);
        }
    }

    /// A frozen node goes on. If another node loaded the event meanwhile, the frozen actor finds
    /// its lease lost and stops, and its writer's batches meet the new epoch.
    pub(super) fn thaw(&mut self) {
        for state in &mut self.cluster.states {
            if matches!(state, NodeState::Frozen { until } if *until <= self.now) {
                *state = NodeState::Up;
            }
        }
        let (thawed, frozen): (Vec<_>, Vec<_>) = std::mem::take(&mut self.zombies)
            .into_iter()
            .partition(|(actor, _)| self.cluster.frozen_until(actor.node, self.now).is_none());
        self.zombies = frozen;
        for (mut actor, writer) in thawed {
            let held = actor.stop();
            self.answer_held(held, AnswerClass::ShedMoving);
            self.bury(writer);
        }
    }

    /// What a node does with a request for the event after its own checks: hand it to the
    /// actor when it owns the event (claiming it if it may), else forward it to the owner.
    pub(super) fn serve_or_forward(&mut self, slot: u32, node: u32, forwarded: bool) {
        if self.cluster.unloadable {
            return self.answer(slot, AnswerClass::ShedStoreFailed, None, forwarded);
        }
        if self.actor.is_running() && self.actor.node == node {
            return self.serve_here(slot, node);
        }
        match self.claim(node) {
            Claim::Here => self.serve_here(slot, node),
            Claim::Elsewhere(_) if forwarded => {
                // "Not the owner": the forwarding node forgets whom it remembered.
                let origin = self.requests.get(slot).node;
                self.cluster.forget_owner(origin);
                self.answer(slot, AnswerClass::ShedMoving, None, true)
            }
            Claim::Elsewhere(owner) => self.forward(slot, node, owner),
            Claim::Unavailable { delay: 0 } => {
                self.answer(slot, AnswerClass::ShedLeaseUnavailable, None, forwarded)
            }
            Claim::Unavailable { delay } => {
                let serial = self.requests.get(slot).serial;
                let class = AnswerClass::ShedLeaseUnavailable;
                self.schedule_in(delay, EventKind::LateRefusal { request: slot, serial, class });
            }
            Claim::WaitsUntil { at } => {
                let serial = self.requests.get(slot).serial;
                self.agenda.schedule(
                    at,
                    EventKind::ClaimAgain { request: slot, serial, node: node_id(node), forwarded },
                );
            }
        }
    }

    /// How long a claim's acquisition waits for a Redis that does not answer before it fails
    /// (`RedisLeases::acquire_lease`): its `SET NX` times out, and then the read-back of the key
    /// (`resolve_unknown_acquisition`, whether the lost `SET` took effect after all) times out
    /// too, each bounded by the Redis timeout (`redis_connection::bounded`).
    fn acquisition_timeout_us(&self) -> Micros {
        ACQUISITION_COMMANDS_UNANSWERED * self.settings.redis_timeout_us
    }

    /// The event runs on `node`: its handler checks the shared per-e-mail rate limit of a
    /// registration (`Limits::limit_registrant`, after the event was located), then hands it to
    /// the actor. While Redis does not answer, the check waits for it up to the Redis timeout
    /// and fails, and the node skips shared checks for `SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS`
    /// (`SharedGcra::check`), limiting locally instead; requests that come while a check waits
    /// send their own. The limit is shared only when it is on and Redis is used (leases are
    /// modelled); otherwise it is the node's own and costs no wait.
    fn serve_here(&mut self, slot: u32, node: u32) {
        let request = self.requests.get(slot);
        let shared = self.scenario.system.rate_limit_email_per_minute > 0 && self.cluster.leases_modelled;
        if request.action != Action::Register || !shared || !self.redis_unreachable_from(node) {
            return self.actor_receive(slot);
        }
        let (paused_from, paused_until) = self.cluster.limits_paused[node as usize];
        if paused_from <= self.now && self.now < paused_until {
            return self.actor_receive(slot);
        }
        let timeout_at = self.now + self.settings.redis_timeout_us;
        let answered_at = match self.faults.redis_back_at(self.now).filter(|back| *back < timeout_at) {
            Some(back) => back,
            None => {
                let pause = SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS * MICROS_PER_MILLI;
                self.cluster.limits_paused[node as usize] = (timeout_at, timeout_at + pause);
                timeout_at
            }
        };
        let serial = request.serial;
        self.agenda
            .schedule(answered_at, EventKind::LimitChecked { request: slot, serial, node: node_id(node) });
    }

    /// A registration's shared rate-limit check on `node` ended (answered, or failed and
    /// limited locally): on to the event it located, which may have stepped down meanwhile
    /// (`ActorError::Stopped`: 503).
    pub(super) fn limit_checked(&mut self, slot: u32, node: u32) {
        if self.actor.is_running() && self.actor.node == node {
            return self.actor_receive(slot);
        }
        let forwarded = self.requests.get(slot).forwarded;
        self.answer(slot, AnswerClass::ShedMoving, None, forwarded);
    }

    /// `OwnerCache` over `LeaseOwnership::claim_event` on `node`.
    fn claim(&mut self, node: u32) -> Claim {
        if !self.cluster.leases_modelled {
            return Claim::Elsewhere(self.actor.node);
        }
        if let Some(owner) = self.cluster.cached_owner(node, self.now) {
            return Claim::Elsewhere(owner);
        }
        // `check_not_paused`: after a claim failed for want of Redis, this node's claims are
        // refused at once for `CLAIM_PAUSE_AFTER_UNAVAILABLE_MS` from that failure, whether Redis
        // is back or not (a pause running when an outage ends delays the recovery by what is
        // left of it).
        let (paused_from, paused_until) = self.cluster.claims_paused[node as usize];
        if paused_from <= self.now && self.now < paused_until {
            return Claim::Unavailable { delay: 0 };
        }
        if self.redis_unreachable_from(node) {
            // Concurrent first uses of an event share one claim (`Registry::locate`): a request
            // arriving while one waits for Redis waits for it too, and fails with it.
            let waiting = self.now < paused_from;
            let fails_at = if waiting { paused_from } else { self.now + self.acquisition_timeout_us() };
            if let Some(back) = self.faults.redis_back_at(self.now).filter(|back| *back < fails_at) {
                // Redis answers the waiting command when it comes back, and the claim goes on.
                return Claim::WaitsUntil { at: back };
            }
            if !waiting {
                self.cluster.claims_paused[node as usize] =
                    (fails_at, fails_at + CLAIM_PAUSE_AFTER_UNAVAILABLE_MS * MICROS_PER_MILLI);
                if !self.faults.redis_down(self.now) && self.cluster.expires_at <= self.now {
                    // The acquisition reached Redis; only its reply was lost. The lease now names
                    // this node, which does not know it (a later claim takes it over).
                    self.cluster.holder = node;
                    self.cluster.expires_at = self.now + self.cluster.times.ttl_us;
                }
            }
            return Claim::Unavailable { delay: fails_at - self.now };
        }
        if self.cluster.expires_at > self.now && self.cluster.holder != node {
            let holder = self.cluster.holder;
            self.cluster.remember_owner(node, holder, self.now);
            return Claim::Elsewhere(holder);
        }
        // Free, or held under this node's id by no actor of this process (a previous life, or
        // an actor that stepped down): acquire or take over, then load.
        let commands = if self.cluster.expires_at > self.now {
            let script_load = if std::mem::replace(&mut self.cluster.take_over_script_cached, true) {
                0
            } else {
                SCRIPT_LOAD_COMMANDS
            };
            TAKE_OVER_COMMANDS + script_load
        } else {
            ACQUISITION_COMMANDS
        };
        let mut claim_us = self.redis_commands_us(commands);
        if std::mem::take(&mut self.cluster.fresh_process[node as usize])
            && let Some(first_claim) = self.settings.restart_first_claim
        {
            claim_us += first_claim.sample_micros(&mut self.system_rng);
        }
        self.start_incarnation(node, claim_us);
        Claim::Here
    }

    /// What `commands` Redis commands sent one after the other take (`System::redis_command`).
    fn redis_commands_us(&mut self, commands: u32) -> Micros {
        let Some(command) = self.settings.redis_command else { return 0 };
        (0..commands).map(|_| command.sample_micros(&mut self.system_rng)).sum()
    }

    /// `node` now owns the event: a new actor that loads it from the store first, once the
    /// claim's Redis commands (`claim_us`) are answered; requests meanwhile wait for the claim
    /// (`Registry::locate`: concurrent first uses share one claim and one load).
    fn start_incarnation(&mut self, node: u32, claim_us: Micros) {
        if self.actor.is_running() {
            let former = self.actor.node;
            if self.cluster.frozen_until(former, self.now).is_some() {
                let incarnation = self.cluster.next_incarnation();
                let fresh = Actor::new(self.placeholder_quota(), &self.scenario.event, node, incarnation);
                let actor = std::mem::replace(&mut self.actor, fresh);
                let writer =
                    std::mem::replace(&mut self.writer, Writer::new(self.cluster.next_incarnation()));
                self.zombies.push((actor, writer));
            } else {
                self.step_down();
            }
        }
        if !self.actor.is_running() || self.actor.node != node {
            let incarnation = self.cluster.next_incarnation();
            let fresh = Actor::new(self.placeholder_quota(), &self.scenario.event, node, incarnation);
            super::keep_spare_quota(std::mem::replace(&mut self.actor, fresh).quota);
        }
        self.start_lease_keeper(node);
        self.begin_load_in(ActorState::Loading, claim_us);
    }

    /// A quota for an actor that is about to load the event: never read, since the load puts the
    /// rebuilt event in its place before the actor serves (and the end of a run rebuilds it
    /// when nobody serves). A spare one when the thread keeps one; copying the event's tables
    /// instead cost megabytes of memory traffic per ownership move.
    fn placeholder_quota(&self) -> EventQuota {
        super::take_spare_quota().unwrap_or_else(|| self.actor.quota.clone())
    }

    /// Starts loading the event into the current actor (`EventLoader::load`).
    pub(super) fn begin_load(&mut self, state: ActorState) {
        self.begin_load_in(state, 0);
    }

    /// Starts loading the event into the current actor after `delay`.
    fn begin_load_in(&mut self, state: ActorState, delay: Micros) {
        self.actor.state = state;
        let incarnation = self.actor.incarnation;
        self.schedule_in(delay, EventKind::LoadAttempt { incarnation });
    }

    /// One attempt of the load transaction, bounded by the store timeout; a failed one is tried
    /// again after `RELOAD_RETRY_DELAY_MS`.
    pub(super) fn load_attempt(&mut self, incarnation: Incarnation) {
        if self.actor.incarnation != incarnation || !self.actor.is_loading() {
            return;
        }
        if self.health.failing || self.health.breaker_open {
            // `SqlStore::load` does not try a store the writer finds down (`StoreHealth`): it
            // waits for the writer's next working commit or probe (`store_answers_again`),
            // within the store timeout, and then fails (tried again after the retry delay).
            let until = self.now + self.settings.store_timeout_us;
            self.actor.load_wait_until = Some(until);
            return self.agenda.schedule(until, EventKind::LoadWaitOver { incarnation });
        }
        let mut read_us = self.settings.load_latency.sample_micros(&mut self.system_rng)
            + (self.store.active_registrations() as f64 * MICROS_PER_SECOND as f64
                / self.scenario.system.recovery_registrations_per_second) as Micros;
        if std::mem::take(&mut self.health.load_connection_lost) {
            // The last attempt was cut short and its connection closed: this one opens one.
            read_us += self.connect_us();
        }
        let done = self.faults.store_work_done(self.now, read_us);
        self.actor.load_work = (self.now, read_us);
        if done - self.now > self.settings.store_timeout_us {
            self.store_call_cut(self.now);
            self.health.load_connection_lost = true;
            let retry = self.settings.store_timeout_us + RELOAD_RETRY_DELAY_MS * MICROS_PER_MILLI;
            return self.schedule_in(retry, EventKind::LoadAttempt { incarnation });
        }
        self.agenda.schedule(done, EventKind::Loaded { incarnation });
    }

    /// A load waited its whole store timeout for the writer to find the store answering: it
    /// fails, and the actor tries again after `RELOAD_RETRY_DELAY_MS`.
    pub(super) fn load_wait_over(&mut self, incarnation: Incarnation) {
        if self.actor.incarnation != incarnation || self.actor.load_wait_until != Some(self.now) {
            return;
        }
        self.actor.load_wait_until = None;
        let retry = RELOAD_RETRY_DELAY_MS * MICROS_PER_MILLI;
        self.schedule_in(retry, EventKind::LoadAttempt { incarnation });
    }

    /// The writer found the store answering (a commit or a probe worked): a load waiting for
    /// it goes on at once (`StoreHealth::until_answering`).
    pub(super) fn store_answers_again(&mut self) {
        if self.actor.load_wait_until.take().is_some() {
            let incarnation = self.actor.incarnation;
            self.agenda.schedule(self.now, EventKind::LoadAttempt { incarnation });
        }
    }

    /// The load committed: the epoch moved on (fencing every earlier owner's writes) and the
    /// actor decides from what the store holds.
    pub(super) fn loaded(&mut self, incarnation: Incarnation) {
        if self.actor.incarnation != incarnation || !self.actor.is_loading() {
            return;
        }
        let (started, read_us) = self.actor.load_work;
        let done = self.faults.store_work_done(started, read_us);
        if done > self.now {
            // The database came back but works through what a stall left it first (see
            // `stall_ends`), then does the load's reads; the timeout cuts it short if that is
            // too late.
            if done - started > self.settings.store_timeout_us {
                self.store_call_cut(started);
                self.health.load_connection_lost = true;
                let retry =
                    started + self.settings.store_timeout_us + RELOAD_RETRY_DELAY_MS * MICROS_PER_MILLI;
                return self.agenda.schedule(retry.max(self.now), EventKind::LoadAttempt { incarnation });
            }
            return self.agenda.schedule(done, EventKind::Loaded { incarnation });
        }
        self.cluster.store_epoch += 1;
        self.reloads += 1;
        match self.store.rebuild(self.scenario.event_config(), super::take_spare_quota()) {
            Ok(quota) => {
                super::keep_spare_quota(std::mem::replace(&mut self.actor.quota, quota));
                self.actor.epoch = self.cluster.store_epoch;
                self.actor.state = ActorState::Serving;
                // A timer armed before the failure may have found the actor recovering.
                self.actor.tick_at = None;
                self.publish_counters();
                self.arm_hold_tick();
                self.start_next_job();
            }
            Err(reason) => {
                self.store.violations.add(CHECK_RELOAD, reason);
                self.cluster.unloadable = true;
                self.retire_actor(AnswerClass::ShedStoreFailed);
            }
        }
    }

    /// Forwards a request from `node` to the `owner` (`api/src/forward.rs`).
    fn forward(&mut self, slot: u32, node: u32, owner: u32) {
        let cooling = self.cluster.cooling(node, owner, self.now);
        if cooling || self.cluster.is_down(owner) {
            let until = self.now + PEER_COOL_DOWN_MS * MICROS_PER_MILLI;
            if !cooling {
                self.cluster.cool_down[node as usize] = Some((owner, self.now, until));
                self.cluster.forget_owner(node);
            }
            return self.answer(slot, AnswerClass::ShedMoving, None, false);
        }
        if self.cluster.frozen_until(owner, self.now).is_some() {
            self.cluster.forget_owner(node);
            // No answer comes; the forward gives up after its answer timeout, and the peer's
            // breaker refuses at once from then on (unless an earlier failure opened it already).
            let timeout = FORWARD_ANSWER_TIMEOUT_MS * MICROS_PER_MILLI;
            let until = self.now + timeout + PEER_COOL_DOWN_MS * MICROS_PER_MILLI;
            let pending = self.cluster.cool_down[node as usize]
                .is_some_and(|(peer, _, end)| peer == owner && self.now < end);
            if !pending {
                self.cluster.cool_down[node as usize] = Some((owner, self.now + timeout, until));
            }
            let serial = self.requests.get(slot).serial;
            let class = AnswerClass::ShedMoving;
            return self.schedule_in(timeout, EventKind::LateRefusal { request: slot, serial, class });
        }
        self.requests.get_mut(slot).forwarded = true;
        self.schedule_in(
            self.settings.forward_half_us,
            EventKind::ActorReceive { request: slot, node: owner },
        );
    }

    /// A forwarded request reaches `node`.
    pub(super) fn forward_received(&mut self, slot: u32, node: u32) {
        if self.cluster.is_down(node) {
            return self.answer(slot, AnswerClass::ShedMoving, None, true);
        }
        self.serve_or_forward(slot, node, true);
    }
}
