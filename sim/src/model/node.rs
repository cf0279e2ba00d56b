//! Nodes: HTTP workers with a bounded queue each, the per-e-mail rate limit, the sold-out fast
//! path that answers from published counters without the actor, and forwarding to the owner.

use std::collections::VecDeque;

use super::Simulation;
use super::agenda::{Action, EventKind, Serial, node_id};
use super::timers::{FifoTimers, Next};
use crate::distribution::{MICROS_PER_SECOND, Micros};
use crate::metrics::AnswerClass;

/// The rate limit's window, in microseconds (the API limits registration writes per minute).
const RATE_WINDOW_US: Micros = 60 * MICROS_PER_SECOND;

#[derive(Clone, Debug, Default)]
struct Node {
    busy_workers: u32,
    queue: VecDeque<u32>,
    /// A restarted node's workers serve from then on; until then, connections wait.
    serving_from: Micros,
}

/// Every node, and the load balancer's round-robin position.
#[derive(Clone, Debug)]
pub(super) struct Nodes {
    nodes: Vec<Node>,
    /// Each node's request deadlines. Apart from `nodes`, which a crash resets: the requests of
    /// a crashed node keep their deadlines, as they kept their timers before.
    deadlines: Vec<FifoTimers<(u32, Serial)>>,
    next: u32,
    queued_total: u64,
}

impl Nodes {
    pub(super) fn new(count: u32) -> Self {
        Nodes {
            nodes: (0..count).map(|_| Node::default()).collect(),
            deadlines: (0..count).map(|_| FifoTimers::default()).collect(),
            next: 0,
            queued_total: 0,
        }
    }

    /// The node the load balancer sends the next request to: round robin.
    pub(super) fn pick(&mut self) -> u32 {
        let node = self.next;
        self.next = (self.next + 1) % self.nodes.len() as u32;
        node
    }

    /// A node died: its workers and queue are gone with it.
    pub(super) fn reset(&mut self, node: u32) {
        let node = &mut self.nodes[node as usize];
        self.queued_total -= node.queue.len() as u64;
        *node = Node::default();
    }

    /// When a node whose workers have not started yet starts them, if it has not.
    pub(super) fn starting_until(&self, node: u32, now: Micros) -> Option<Micros> {
        let from = self.nodes[node as usize].serving_from;
        (now < from).then_some(from)
    }
}

/// When each category's published counters started to say "sold out", for the fast path.
#[derive(Clone, Debug)]
pub(super) struct FastPath {
    no_seat_since: Vec<Option<Micros>>,
    waitlist_full_since: Vec<Option<Micros>>,
}

impl FastPath {
    pub(super) fn new(categories: usize) -> Self {
        FastPath { no_seat_since: vec![None; categories], waitlist_full_since: vec![None; categories] }
    }

    /// Records the counters the actor just published for `category`.
    pub(super) fn publish(&mut self, category: usize, no_seat: bool, waitlist_full: bool, now: Micros) {
        let since = |cell: &mut Option<Micros>, holds: bool| {
            if !holds {
                *cell = None;
            } else if cell.is_none() {
                *cell = Some(now);
            }
        };
        since(&mut self.no_seat_since[category], no_seat);
        since(&mut self.waitlist_full_since[category], waitlist_full);
    }

    /// What `is_sold_out` says on counters as they were at `seen_at`. A flip and a flip back
    /// within the lag are not seen, which is the staleness real counters have too.
    fn sold_out(&self, category: usize, wants_waitlist: bool, seen_at: Micros) -> bool {
        let held_since = |cell: Option<Micros>| cell.is_some_and(|since| since <= seen_at);
        held_since(self.no_seat_since[category])
            && (!wants_waitlist || held_since(self.waitlist_full_since[category]))
    }
}

impl Simulation<'_> {
    pub(super) fn node_ingress(&mut self, slot: u32) {
        let node_index = self.requests.get(slot).node;
        if self.requests.get(slot).answered {
            // Its connection was lost on the way (the node crashed and came back since).
            return self.requests.server_released(slot);
        }
        if self.cluster.is_down(node_index) {
            return self.answer(slot, AnswerClass::ConnectionLost, None, false);
        }
        let workers = self.scenario.system.http_workers_per_node;
        let queue_max = self.scenario.system.http_queue_max as usize;
        let node = &mut self.nodes.nodes[node_index as usize];
        // A restarted process whose workers have not started: the connection waits in its
        // listen backlog (here the node's queue, with its bound) until they do.
        let started = self.now >= node.serving_from;
        if started && node.busy_workers < workers {
            node.busy_workers += 1;
            self.start_http_work(node_index, slot);
        } else if node.queue.len() < queue_max {
            node.queue.push_back(slot);
            self.nodes.queued_total += 1;
            self.metrics.observe_node_queue(self.now, self.nodes.queued_total);
        } else {
            self.answer(slot, AnswerClass::ShedNodeQueue, None, false);
        }
    }

    fn start_http_work(&mut self, node: u32, slot: u32) {
        let service = self.settings.http_service.sample_micros(&mut self.system_rng);
        let life = self.cluster.life(node);
        self.schedule_in(service, EventKind::WorkerDone { node: node_id(node), request: slot, life });
    }

    /// A crashed node comes back: its port is bound now, its workers serve once started
    /// (`System::workers_start`).
    pub(super) fn restart_workers(&mut self, node_index: u32) {
        let Some(start) = self.settings.workers_start else { return };
        let at = self.now + start.sample_micros(&mut self.system_rng);
        self.nodes.nodes[node_index as usize].serving_from = at;
        let life = self.cluster.life(node_index);
        self.agenda.schedule(at, EventKind::WorkersStart { node: node_id(node_index), life });
    }

    /// A restarted node's workers start: they take the connections that waited, in order.
    pub(super) fn workers_start(&mut self, node_index: u32, life: u32) {
        if life != self.cluster.life(node_index) {
            return;
        }
        let workers = self.scenario.system.http_workers_per_node;
        while self.nodes.nodes[node_index as usize].busy_workers < workers {
            let node = &mut self.nodes.nodes[node_index as usize];
            let Some(next) = node.queue.pop_front() else { break };
            node.busy_workers += 1;
            self.nodes.queued_total -= 1;
            self.start_http_work(node_index, next);
        }
    }

    pub(super) fn worker_done(&mut self, node_index: u32, slot: u32, life: u32) {
        if life != self.cluster.life(node_index) {
            return;
        }
        let node = &mut self.nodes.nodes[node_index as usize];
        match node.queue.pop_front() {
            Some(next) => {
                self.nodes.queued_total -= 1;
                self.start_http_work(node_index, next);
            }
            None => node.busy_workers -= 1,
        }
        self.route(slot);
    }

    /// What the node does with a parsed request: refuse it itself, or pass it to the actor.
    fn route(&mut self, slot: u32) {
        let request = *self.requests.get(slot);
        if request.action == Action::Register {
            if let Some(retry_after_us) = self.rate_limited(request.registrant) {
                self.requests.get_mut(slot).retry_after_us = retry_after_us;
                return self.answer(slot, AnswerClass::RateLimited, None, false);
            }
            if self.fast_path_sold_out(request.registrant, request.node) {
                return self.answer(slot, AnswerClass::SoldOutFastPath, None, false);
            }
        }
        self.set_deadline(slot, request.serial, request.node);
        self.serve_or_forward(slot, request.node, false);
    }

    /// The request deadline (`route_to_owner`) of the request in `slot`, from now. The node's
    /// deadlines are a queue (`FifoTimers`): every request gets the same timeout.
    fn set_deadline(&mut self, slot: u32, serial: Serial, node: u32) {
        let due = self.now + self.settings.request_timeout_us;
        if self.nodes.deadlines[node as usize].set(due, (slot, serial)) {
            self.agenda.schedule(due, EventKind::Deadlines { node: node_id(node) });
        }
    }

    /// The earliest deadline of `node` has come: every request whose deadline has passed and
    /// that is still unanswered gets 503, and what it waited for goes on without it. The
    /// deadlines of requests answered since are dropped; the next event is set for the first
    /// one left whose request still waits.
    pub(super) fn deadlines_due(&mut self, node: u32) {
        loop {
            let requests = &self.requests;
            let waiting = |(slot, serial)| requests.holds(slot, serial) && !requests.get(slot).answered;
            match self.nodes.deadlines[node as usize].next(self.now, waiting) {
                Next::Due((slot, _)) => self.answer_early(slot, AnswerClass::ShedDeadline),
                Next::At(due) => {
                    return self.agenda.schedule(due, EventKind::Deadlines { node: node_id(node) });
                }
                Next::Idle => return,
            }
        }
    }

    /// Counts a registration write against the registrant's e-mail; `Some(retry_after)` when
    /// the window's allowance is used up.
    fn rate_limited(&mut self, index: u32) -> Option<Micros> {
        let limit = self.scenario.system.rate_limit_email_per_minute;
        if limit == 0 {
            return None;
        }
        let window = self.now / RATE_WINDOW_US;
        let registrant = &mut self.registrants[index as usize];
        if registrant.rate_window != window {
            registrant.rate_window = window;
            registrant.rate_count = 0;
        }
        if registrant.rate_count >= limit {
            return Some((window + 1) * RATE_WINDOW_US - self.now);
        }
        registrant.rate_count += 1;
        None
    }

    /// The owner reads its own counters; other nodes see them `counters_lag_ms` late.
    fn fast_path_sold_out(&self, index: u32, node: u32) -> bool {
        let lag = if node == self.actor.node { 0 } else { self.settings.counters_lag_us };
        let Some(seen_at) = self.now.checked_sub(lag) else {
            return false;
        };
        let registrant = &self.registrants[index as usize];
        self.actor.fast_path.sold_out(usize::from(registrant.category), registrant.wants_waitlist, seen_at)
    }
}
