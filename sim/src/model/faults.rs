//! The scenario's faults in virtual time: when the store stalls or slows down, when Redis is
//! out of reach, and what happens to a node that crashes or freezes; the writer's view of the
//! store's health (`WriteBehindHandle::stalled`: failing, breaker, probes).

use kuota_api::health::HEALTH_PROBE_INTERVAL_MS;
use kuota_persist::write_behind::TICK_INTERVAL_MS;

use super::Simulation;
use super::agenda::EventKind;
use crate::distribution::{MICROS_PER_MILLI, MICROS_PER_SECOND, Micros};
use crate::metrics::FaultStats;
use crate::scenario::{FaultKind, Scenario};

/// A span of virtual time, `from` included, `until` not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) from: Micros,
    pub(super) until: Micros,
}

impl Span {
    fn covers(&self, at: Micros) -> bool {
        self.from <= at && at < self.until
    }
}

/// The scenario's faults as spans, by what they break.
#[derive(Clone, Debug, Default)]
pub(super) struct FaultPlan {
    /// Every fault in the scenario's order, with its span.
    faults: Vec<(FaultKind, Span)>,
    store_stalls: Vec<Span>,
    /// Spans with the latency they add to a commit attempt starting in them.
    slow_commits: Vec<(Span, Micros)>,
    redis_outages: Vec<Span>,
    /// Spans in which the lease replies to the node that owned the event at the start are lost.
    lost_replies: Vec<Span>,
}

fn micros_of_seconds(seconds: f64) -> Micros {
    (seconds * MICROS_PER_SECOND as f64).round() as Micros
}

impl FaultPlan {
    pub(super) fn new(scenario: &Scenario) -> Self {
        let mut plan = FaultPlan::default();
        for fault in &scenario.faults {
            let from = micros_of_seconds(fault.start_seconds);
            let span = Span { from, until: from + micros_of_seconds(fault.duration_seconds).max(1) };
            plan.faults.push((fault.kind, span));
            match fault.kind {
                FaultKind::StoreStall => plan.store_stalls.push(span),
                FaultKind::CommitLatency => {
                    let extra = (fault.extra_latency_ms * MICROS_PER_MILLI as f64).round() as Micros;
                    plan.slow_commits.push((span, extra));
                }
                FaultKind::RedisOutage => plan.redis_outages.push(span),
                FaultKind::LostLeaseReply => plan.lost_replies.push(span),
                FaultKind::OwnerCrash | FaultKind::OwnerFreeze => {}
            }
        }
        plan.store_stalls.sort_by_key(|span| span.from);
        plan
    }

    pub(super) fn has_faults(&self) -> bool {
        !self.faults.is_empty()
    }

    /// Whether ownership can move: only then are leases modelled at all.
    pub(super) fn moves_ownership(&self) -> bool {
        self.faults.iter().any(|(kind, _)| {
            matches!(
                kind,
                FaultKind::OwnerCrash
                    | FaultKind::OwnerFreeze
                    | FaultKind::RedisOutage
                    | FaultKind::LostLeaseReply
            )
        })
    }

    /// When the first fault starts (`Micros::MAX` without faults).
    pub(super) fn first_start(&self) -> Micros {
        self.faults.iter().map(|(_, span)| span.from).min().unwrap_or(Micros::MAX)
    }

    /// When the last fault ends.
    pub(super) fn last_end(&self) -> Micros {
        self.faults.iter().map(|(_, span)| span.until).max().unwrap_or(0)
    }

    /// Each fault's figures, to be filled in; `latencies_kept`: with latency histograms.
    pub(super) fn stats(&self, latencies_kept: bool) -> Vec<FaultStats> {
        self.faults
            .iter()
            .map(|(_, span)| {
                let next =
                    self.faults.iter().map(|(_, other)| other.from).filter(|from| *from > span.from).min();
                FaultStats::new(span.from, span.until, next, latencies_kept)
            })
            .collect()
    }

    pub(super) fn fault(&self, index: usize) -> (FaultKind, Span) {
        self.faults[index]
    }

    /// The end of the store stall at `at`, if the store is stalled then.
    pub(super) fn store_stalled_until(&self, at: Micros) -> Option<Micros> {
        self.store_stalls.iter().find(|span| span.covers(at)).map(|span| span.until)
    }

    /// When work of `duration` that the store starts at `start` is done: a stalled store does
    /// none of it while stalled (a frozen database does its part after SIGCONT, and after what
    /// the stall left it, `extend_stall`), so every stall it meets pauses it. Work in flight is
    /// checked again when it was due (`commit_done`, `loaded`), since a stall's backlog is only
    /// known when the stall ends.
    pub(super) fn store_work_done(&self, start: Micros, duration: Micros) -> Micros {
        let (mut at, mut left) = (start, duration);
        // `store_stalls` is sorted by start; a backlog begins where its stall ends.
        for stall in &self.store_stalls {
            if stall.until <= at {
                continue;
            }
            if stall.from >= at + left {
                break;
            }
            left -= stall.from.saturating_sub(at);
            at = stall.until;
        }
        at + left
    }

    /// Latency added to a commit attempt starting at `at`.
    pub(super) fn extra_commit_latency(&self, at: Micros) -> Micros {
        self.slow_commits.iter().filter(|(span, _)| span.covers(at)).map(|(_, extra)| *extra).sum()
    }

    pub(super) fn redis_down(&self, at: Micros) -> bool {
        self.redis_outages.iter().any(|span| span.covers(at))
    }

    /// When Redis answers again, if it is out at `at`.
    pub(super) fn redis_back_at(&self, at: Micros) -> Option<Micros> {
        self.redis_outages.iter().filter(|span| span.covers(at)).map(|span| span.until).max()
    }

    /// The database, back from the stall that ended at `end`, first works through what the
    /// stall left it for `backlog`: it serves nothing newer meanwhile, as if stalled.
    pub(super) fn extend_stall(&mut self, end: Micros, backlog: Micros) {
        self.store_stalls.push(Span { from: end, until: end + backlog });
        self.store_stalls.sort_by_key(|span| span.from);
    }

    pub(super) fn replies_lost(&self, at: Micros) -> bool {
        self.lost_replies.iter().any(|span| span.covers(at))
    }
}

/// The writer's view of the store (`write_behind::stats::Shared` and the dispatcher's breaker).
#[derive(Clone, Debug, Default)]
pub(super) struct StoreHealth {
    /// An attempt timed out or a batch failed, and nothing has worked since.
    pub(super) failing: bool,
    pub(super) breaker_open: bool,
    pub(super) consecutive_failures: u32,
    /// A writer's tick that may probe is on the agenda.
    probe_scheduled: bool,
    /// The probe out: when it was sent, and the database time it needs.
    probe: Option<(Micros, Micros)>,
    last_probe: Option<Micros>,
    /// Store calls the store timeout cut short while the store was stalled, since the stall
    /// began: each left its connection in the database's queue (`store::backend::within`
    /// closes a cut call's connection; the frozen database learns of it when it goes on).
    cut_during_stall: u64,
    /// Calls cut short by the timeout whose caller has not opened a connection since: its next
    /// call opens one first (the writer's, per connection; the load's; the probe's).
    pub(super) writer_connections_lost: u32,
    pub(super) load_connection_lost: bool,
    probe_connection_lost: bool,
    /// The health task's store pings (`kuota_api::health`, what `/readyz` reads) answer from
    /// then on: after a stall, once the ping it left under way is answered.
    pub(super) ping_answers_from: Micros,
}

impl Simulation<'_> {
    pub(super) fn schedule_faults(&mut self) {
        for index in 0..self.scenario.faults.len() {
            let (_, span) = self.faults.fault(index);
            self.agenda.schedule(span.from, EventKind::FaultStart { fault: index as u32 });
            self.agenda.schedule(span.until, EventKind::FaultEnd { fault: index as u32 });
        }
    }

    pub(super) fn fault_starts(&mut self, index: usize) {
        let (kind, span) = self.faults.fault(index);
        // Node faults hit the node that owns the event when they start.
        let target = self.cluster.owner_node(self.actor.node, self.actor.is_running());
        self.cluster.note_target(index, target);
        match kind {
            FaultKind::OwnerCrash => self.crash(target),
            FaultKind::OwnerFreeze => self.cluster.freeze(target, span.until),
            FaultKind::LostLeaseReply => self.cluster.lose_replies_of(target),
            FaultKind::StoreStall | FaultKind::CommitLatency | FaultKind::RedisOutage => {}
        }
    }

    pub(super) fn fault_ends(&mut self, index: usize) {
        let (kind, _) = self.faults.fault(index);
        let target = self.cluster.target_of(index);
        match kind {
            FaultKind::OwnerCrash => {
                if self.cluster.restart(target) {
                    self.restart_workers(target);
                }
            }
            FaultKind::OwnerFreeze => self.thaw(),
            FaultKind::StoreStall => self.stall_ends(index),
            FaultKind::CommitLatency | FaultKind::RedisOutage | FaultKind::LostLeaseReply => {}
        }
        self.suite_begin(index, target);
    }

    /// A store stall ends: unless another stall goes on, the database first deals with the
    /// connections of every call cut short during the stall (the writer's attempts and probes,
    /// and a load's that tried the store before the writer found it down, counted as they were
    /// cut, and each node's health pings, which follow one another
    /// bounded by the store timeout while the store does not answer: `kuota_api::health`), and
    /// only then serves what came after them, newly opened connections first.
    fn stall_ends(&mut self, index: usize) {
        let (_, span) = self.faults.fault(index);
        if self.faults.store_stalled_until(span.until).is_some() {
            return;
        }
        let ping_every = self.settings.store_timeout_us.max(HEALTH_PROBE_INTERVAL_MS * MICROS_PER_MILLI);
        let pings_cut = (span.until - span.from) / ping_every * u64::from(self.scenario.system.nodes);
        let abandoned = std::mem::take(&mut self.health.cut_during_stall) + pings_cut;
        let backlog = abandoned * self.settings.abandoned_connection_us;
        if backlog > 0 {
            self.faults.extend_stall(span.until, backlog);
        }
        // The health task's ping under way was cut short in its turn and opened a connection
        // again; the store answers it after the backlog (drawn apart: see `suite`).
        let connect = self.settings.store_connect.sample_micros(&mut self.suite_rng);
        self.health.ping_answers_from = self.faults.store_work_done(span.until, connect);
    }

    /// A store call started at `started` is cut short by the store timeout: its connection is
    /// closed, and left to the database if it is stalled then.
    pub(super) fn store_call_cut(&mut self, started: Micros) {
        let cut_at = started + self.settings.store_timeout_us;
        if self.faults.store_stalled_until(cut_at).is_some() {
            self.health.cut_during_stall += 1;
        }
    }

    /// What opening a connection takes, for a caller whose last call was cut short.
    pub(super) fn connect_us(&mut self) -> Micros {
        self.settings.store_connect.sample_micros(&mut self.system_rng)
    }

    /// `WriteBehindHandle::stalled`: writes are refused at once while it holds.
    pub(super) fn store_stalled(&self) -> bool {
        self.health.breaker_open
            || self.health.failing
            || self.writer.oldest_attempt_age(self.now) > self.settings.stall_threshold_us
    }

    /// A commit attempt timed out or a batch failed: writes are refused until something works.
    pub(super) fn store_failed(&mut self) {
        self.health.failing = true;
        self.schedule_probe_tick();
    }

    /// A commit worked (`set_store_failing(false)`): loads waiting for the store go on.
    pub(super) fn store_worked(&mut self) {
        self.health.failing = false;
        self.health.consecutive_failures = 0;
        if !self.health.breaker_open {
            self.store_answers_again();
        }
    }

    /// Arms the writer's next tick that may probe (`Dispatcher::maybe_probe`, looked at every
    /// `TICK_INTERVAL_MS` from the writer's start, here the opening): after now, at least
    /// `breaker_probe_interval_ms` after the last probe, and none while a probe is out.
    fn schedule_probe_tick(&mut self) {
        if self.health.probe_scheduled || self.health.probe.is_some() {
            return;
        }
        let interval = self.settings.write_behind.breaker_probe_interval_ms * MICROS_PER_MILLI;
        let earliest = self.health.last_probe.map_or(0, |last| last + interval).max(self.now + 1);
        let tick = TICK_INTERVAL_MS * MICROS_PER_MILLI;
        self.health.probe_scheduled = true;
        self.agenda.schedule(earliest.div_ceil(tick) * tick, EventKind::StoreProbe);
    }

    /// The writer's tick, or the probe it sent coming due. A tick probes while the breaker is
    /// open, or while the store is failing and no commit is in flight to find out
    /// (`maybe_probe`); the probe is a ping bounded by the store timeout (`SqlStore::ping`).
    /// A probe cut short at exactly a tick is still out when that tick looks (it was sent a
    /// moment after its own tick), so the next one goes a tick later: while the store does not
    /// answer, a probe every store timeout plus a tick. (Live, the two timers can fire in the
    /// same millisecond and race; then it is every store timeout.)
    pub(super) fn probe_store(&mut self) {
        if let Some((started, work)) = self.health.probe {
            return self.probe_due(started, work);
        }
        self.health.probe_scheduled = false;
        let suspect = self.health.breaker_open || (self.health.failing && !self.writer.commits_in_flight());
        if !suspect {
            if self.health.failing {
                // A commit is in flight: the next tick looks again.
                self.schedule_probe_tick();
            }
            return;
        }
        self.health.last_probe = Some(self.now);
        let mut work = 0;
        if std::mem::take(&mut self.health.probe_connection_lost) {
            // The last probe was cut short and its connection closed: this one opens one.
            work += self.connect_us();
        }
        self.health.probe = Some((self.now, work));
        self.probe_due(self.now, work);
    }

    /// The probe sent at `started`, needing `work` of the database: answered once the store
    /// did it (after any stall and its backlog), or cut short at the store timeout.
    fn probe_due(&mut self, started: Micros, work: Micros) {
        let done = self.faults.store_work_done(started, work);
        let cut_at = started + self.settings.store_timeout_us;
        if done > self.now && self.now < cut_at {
            return self.agenda.schedule(done.min(cut_at), EventKind::StoreProbe);
        }
        self.health.probe = None;
        if done > self.now {
            self.store_call_cut(started);
            self.health.probe_connection_lost = true;
            return self.schedule_probe_tick();
        }
        // `Dispatcher::probed(true)`.
        self.health.failing = false;
        self.health.breaker_open = false;
        // Half open: one more failing batch opens the breaker again.
        self.health.consecutive_failures = self.settings.write_behind.breaker_failures_max.saturating_sub(1);
        self.store_answers_again();
        self.try_flush();
    }

    /// A batch failed for good: counts toward the breaker (`Dispatcher::finished`).
    pub(super) fn batch_failed(&mut self) {
        self.store_failed();
        self.health.consecutive_failures += 1;
        if self.health.consecutive_failures >= self.settings.write_behind.breaker_failures_max.max(1) {
            self.health.breaker_open = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_store_does_none_of_a_calls_work_while_stalled() {
        let mut plan = FaultPlan { store_stalls: vec![Span { from: 10, until: 20 }], ..FaultPlan::default() };
        // Done before the stall; half before and half after it; all of it after it.
        assert_eq!(plan.store_work_done(0, 5), 5);
        assert_eq!(plan.store_work_done(5, 10), 25);
        assert_eq!(plan.store_work_done(12, 3), 23);
        // Due exactly when the stall begins: done.
        assert_eq!(plan.store_work_done(4, 6), 10);
        // The backlog the stall left, known when it ends, comes first.
        plan.extend_stall(20, 4);
        assert_eq!(plan.store_work_done(12, 3), 27);
        assert_eq!(plan.store_work_done(5, 10), 29);
        assert_eq!(plan.store_work_done(30, 3), 33);
    }
}
