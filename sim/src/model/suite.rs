//! Recovery measured the way the live fault suite measures it (`api/tests/api/faults`), for a
//! fault with `suite_probes = true`: the model's own "served again" is the first decision of the
//! actor, which the suite never sees. After the fault ends (SIGCONT, the restart), the suite
//!
//! - for a frozen store and a restarted node, polls `GET /readyz` of the node until it says 200
//!   (`client.rs::wait_until_ready`: one request on a new connection, then a pause), and
//! - sends one registration of a new registrant to each node in turn, again after a pause to
//!   those that did not decide it (`load.rs::served_again`, any other answer than 201 or a 409
//!   for good is undecided): recovered when every node decided one, counted to the end of the
//!   last decided one, from SIGCONT, or for a restarted node from `/readyz` saying 200.
//!
//! The polls and registrations are requests of the model (round trips drawn from their own
//! random stream, so that the rest of the run draws what it would without them); readiness is
//! what `routes::operations::readyz` reads: the health task's latest store ping answered, the
//! writer not stalled (`WriteBehindHandle::stalled`: failing, breaker, a commit past the stall
//! threshold), Redis answering.

use super::Simulation;
use super::agenda::{Action, EventKind};
use crate::distribution::{MICROS_PER_MILLI, Micros};
use crate::metrics::{AnswerClass, SuiteFigures, at_quantile};
use crate::scenario::FaultKind;

/// The pause between two `/readyz` polls (`api/tests/api/faults/client.rs::wait_until_ready`):
/// the test harness's, not a setting of Kuota.
const READY_POLL_PAUSE_MS: u64 = 20;

/// The pause before the registrations to the nodes that did not decide theirs are sent again
/// (`api/tests/api/faults/load.rs::served_again`): the test harness's.
const SERVED_AGAIN_PAUSE_MS: u64 = 50;

/// How long after `/readyz` said 200 the suite keeps its trickle going after a restart, and
/// counts the requests sent meanwhile as the fault's (`api/tests/api/faults/scenarios.rs::
/// AFTERMATH`): the test harness's.
pub const SUITE_AFTERMATH_MS: u64 = 2_500;

/// The quantile of the suite's latency figure after a restart.
const AFTER_READY_QUANTILE: f64 = 0.99;

/// Registrations one fault's probing sends at most; then it gives up ("not served").
pub(super) const SUITE_PROBES_MAX: u32 = 200;

/// One fault's probing.
#[derive(Clone, Debug)]
pub(super) struct SuiteProbe {
    fault: u32,
    /// The node whose `/readyz` is polled first, if the suite waits for it.
    ready_node: Option<u32>,
    /// What is left of a poll's round trip once it reached the node.
    poll_back_us: Micros,
    /// The nodes still to be sent this round's registration, in the suite's order.
    round: Vec<u32>,
    undecided: Vec<u32>,
    /// The probe registrant whose answer is awaited, and the node it went to.
    waiting: Option<(u32, u32)>,
    sent: u32,
    last_served: Micros,
    /// After a restart: the latencies of the requests sent in the aftermath after ready.
    after_ready: Option<Vec<Micros>>,
    figures: SuiteFigures,
}

fn find_probe(probes: &mut [SuiteProbe], fault: u32) -> Option<&mut SuiteProbe> {
    probes.iter_mut().find(|probe| probe.fault == fault)
}

impl Simulation<'_> {
    /// Fault number `index` ended: the suite starts probing, if the scenario asks for it.
    pub(super) fn suite_begin(&mut self, index: usize, target: u32) {
        let fault = &self.scenario.faults[index];
        if !fault.suite_probes {
            return;
        }
        let nodes: Vec<u32> = match fault.kind {
            // The restarted node only (`node_killed_and_restarted`).
            FaultKind::OwnerCrash => vec![target],
            _ => (0..self.scenario.system.nodes).collect(),
        };
        let ready_node = match fault.kind {
            FaultKind::StoreStall | FaultKind::CommitLatency => Some(0),
            FaultKind::OwnerCrash => Some(target),
            FaultKind::RedisOutage | FaultKind::OwnerFreeze | FaultKind::LostLeaseReply => None,
        };
        let probe = SuiteProbe {
            fault: index as u32,
            ready_node,
            poll_back_us: 0,
            round: nodes.into_iter().rev().collect(),
            undecided: Vec::new(),
            waiting: None,
            sent: 0,
            last_served: self.now,
            after_ready: (fault.kind == FaultKind::OwnerCrash).then(Vec::new),
            figures: SuiteFigures { since: self.now, ready_at: None, served_at: None, after_ready_p99: None },
        };
        let fault = probe.fault;
        self.suite.push(probe);
        let kind = if ready_node.is_some() {
            EventKind::SuitePoll { fault }
        } else {
            EventKind::SuiteSend { fault }
        };
        self.agenda.schedule(self.now, kind);
    }

    fn suite_probe(&mut self, fault: u32) -> Option<&mut SuiteProbe> {
        find_probe(&mut self.suite, fault)
    }

    /// A `/readyz` poll leaves: it reaches the node after half a round trip.
    pub(super) fn suite_poll(&mut self, fault: u32) {
        let round_trip = self.settings.network_round_trip.sample_micros(&mut self.suite_rng);
        let Some(probe) = self.suite_probe(fault) else { return };
        probe.poll_back_us = round_trip - round_trip / 2;
        self.schedule_in(round_trip / 2, EventKind::SuiteReady { fault });
    }

    /// A `/readyz` poll reaches the node: 200, and the registrations follow; else the next poll
    /// after the pause.
    pub(super) fn suite_ready(&mut self, fault: u32) {
        let Some(node) = self.suite_probe(fault).and_then(|probe| probe.ready_node) else { return };
        if let Some(started_at) = self.nodes.starting_until(node, self.now) {
            // A restarted process that has not started its workers: the poll waits in its
            // listen backlog, and is answered once they serve.
            return self.agenda.schedule(started_at, EventKind::SuiteReady { fault });
        }
        let ready = self.node_ready(node);
        let kind = self.scenario.faults[fault as usize].kind;
        let now = self.now;
        let Some(probe) = self.suite_probe(fault) else { return };
        let answered_at = probe.poll_back_us;
        if !ready {
            let pause = READY_POLL_PAUSE_MS * MICROS_PER_MILLI;
            return self.schedule_in(answered_at + pause, EventKind::SuitePoll { fault });
        }
        let ready_at = now + answered_at;
        probe.figures.ready_at = Some(ready_at);
        if kind == FaultKind::OwnerCrash {
            // Counted from `/readyz` saying 200 (`node_killed_and_restarted`).
            probe.figures.since = ready_at;
            probe.last_served = ready_at;
        }
        self.agenda.schedule(ready_at, EventKind::SuiteSend { fault });
    }

    /// What `/readyz` of `node` says now.
    fn node_ready(&self, node: u32) -> bool {
        if self.cluster.is_down(node) || self.cluster.frozen_until(node, self.now).is_some() {
            return false;
        }
        let writer_stalled = self.actor.node == node && self.store_stalled();
        let redis = !self.cluster.redis_modelled() || !self.redis_unreachable_from(node);
        !writer_stalled && self.now >= self.health.ping_answers_from && redis
    }

    /// The suite sends this round's next registration: a new registrant, to the next node.
    pub(super) fn suite_send(&mut self, fault: u32) {
        let index = self.registrants.len() as u32;
        let Some(probe) = find_probe(&mut self.suite, fault) else { return };
        let Some(node) = probe.round.pop() else { return };
        if probe.sent >= SUITE_PROBES_MAX {
            probe.round.clear();
            return;
        }
        probe.sent += 1;
        probe.waiting = Some((index, node));
        self.registrants.push(super::client::Registrant::suite_probe(self.now));
        let round_trip = self.settings.network_round_trip.sample_micros(&mut self.suite_rng);
        self.send_via(index, Action::Register, 1, node, round_trip);
    }

    /// The answer to a probe registration reached the suite.
    pub(super) fn suite_answered(&mut self, registrant: u32, class: AnswerClass) {
        let now = self.now;
        let Some(probe) =
            self.suite.iter_mut().find(|probe| probe.waiting.is_some_and(|(r, _)| r == registrant))
        else {
            return;
        };
        let (_, node) = probe.waiting.take().expect("found by its waiting probe");
        // `Sample::is_decided`: a 201 (or 202), or a 409 for good.
        let decided = matches!(
            class,
            AnswerClass::Held
                | AnswerClass::Confirmed
                | AnswerClass::Waitlisted
                | AnswerClass::SoldOut
                | AnswerClass::SoldOutFastPath
                | AnswerClass::AlreadyRegistered
        );
        if decided {
            probe.last_served = probe.last_served.max(now);
        } else {
            probe.undecided.push(node);
        }
        let fault = probe.fault;
        if !probe.round.is_empty() {
            return self.agenda.schedule(now, EventKind::SuiteSend { fault });
        }
        if probe.undecided.is_empty() {
            probe.figures.served_at = Some(probe.last_served);
            return;
        }
        probe.round = std::mem::take(&mut probe.undecided).into_iter().rev().collect();
        if probe.sent >= SUITE_PROBES_MAX {
            return;
        }
        self.schedule_in(SERVED_AGAIN_PAUSE_MS * MICROS_PER_MILLI, EventKind::SuiteSend { fault });
    }
}

impl Simulation<'_> {
    /// An answer reached its registrant: after a restart, the suite counts its latency if the
    /// request was sent in the aftermath after `/readyz` said 200 (`started_within`).
    pub(super) fn suite_observe(&mut self, sent_at: Micros, latency: Micros) {
        for probe in &mut self.suite {
            let (Some(latencies), Some(ready)) = (&mut probe.after_ready, probe.figures.ready_at) else {
                continue;
            };
            if ready <= sent_at && sent_at < ready + SUITE_AFTERMATH_MS * MICROS_PER_MILLI {
                latencies.push(latency);
            }
        }
    }

    /// Each probed fault's figures into its stats, at the end of the run.
    pub(super) fn suite_record(&mut self) {
        for probe in &mut self.suite {
            if let Some(latencies) = probe.after_ready.as_mut() {
                latencies.sort_unstable();
                probe.figures.after_ready_p99 = at_quantile(latencies, AFTER_READY_QUANTILE);
            }
            self.metrics.faults[probe.fault as usize].suite = Some(probe.figures);
        }
    }
}
