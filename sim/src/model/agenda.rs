//! The agenda: timed events in a binary heap, earliest first; events due at the same
//! microsecond run in the order they were scheduled, so that a run never depends on how the
//! heap happens to break ties.
//!
//! Events scheduled a constant delay ahead (request deadlines) come due in the order they were
//! scheduled, so they wait in a FIFO beside the heap instead of in it: the heap stays small
//! (it held a deadline for most requests in flight), and the order is the same as one heap's.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::distribution::Micros;
use crate::metrics::AnswerClass;

/// What a registrant asks of the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Register,
    Confirm,
    Cancel,
}

/// Something that happens at a point of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The next registrant presses "register" for the first time.
    Arrival,
    /// A registrant sends a request (a retry, a payment callback, a cancel).
    Send { registrant: u32, action: Action, attempt: u32 },
    /// A request reaches its node.
    NodeIngress { request: u32 },
    /// A node's HTTP worker has finished with a request (`life`: the node's, see `Life`).
    WorkerDone { node: u32, request: u32, life: u32 },
    /// A forwarded request reaches `node`, which the forwarding node took for the owner.
    ActorReceive { request: u32, node: u32 },
    /// The event actor `incarnation` has finished its current command. An incarnation is one
    /// life of the actor, from one load of the event to the next.
    ActorDone { incarnation: u64 },
    /// The hold-expiry timer of the actor `incarnation`.
    HoldTick { incarnation: u64 },
    /// The flush interval of writer `writer` may have run out for its oldest submission. A
    /// writer is replaced when a batch fails or ownership moves; a replaced one's timers and
    /// commits are ignored.
    FlushDue { writer: u64 },
    /// A commit attempt of a batch of `writer` has ended (committed or timed out).
    CommitDone { writer: u64, batch: u32 },
    /// A batch of `writer` tries its transaction again after a pause.
    CommitRetry { writer: u64, batch: u32 },
    /// The request deadline of the request with this serial number.
    Deadline { request: u32, serial: u64 },
    /// A refusal that took time to make (a Redis timeout, a forward timeout) is answered.
    LateRefusal { request: u32, serial: u64, class: AnswerClass },
    /// The renewal task of the lease kept under this number.
    LeaseRenew { lease: u64 },
    /// The holder of lease `lease` checks whether it is still valid (before its safety margin).
    LeaseCheck { lease: u64 },
    /// The load of the event for actor `incarnation` (a claim or a rollback) tries the store.
    LoadAttempt { incarnation: u64 },
    /// The load for actor `incarnation` has read the store.
    Loaded { incarnation: u64 },
    /// The writer probes the store (breaker open or store failing).
    StoreProbe,
    /// Fault number `fault` of the scenario starts.
    FaultStart { fault: u32 },
    /// Fault number `fault` ends (a frozen node goes on, a crashed one restarts).
    FaultEnd { fault: u32 },
    /// An answer reaches its registrant.
    ClientAnswer { request: u32 },
    /// An impatient registrant has waited long enough for the answer to `sequence`.
    PatienceOver { registrant: u32, sequence: u32 },
}

#[derive(Debug, PartialEq, Eq)]
struct Scheduled {
    at: Micros,
    order: u64,
    kind: EventKind,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed, because `BinaryHeap` pops the greatest and the agenda wants the earliest.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
pub struct Agenda {
    heap: BinaryHeap<Scheduled>,
    /// Events due in the order they were scheduled (see the module documentation).
    in_order: VecDeque<Scheduled>,
    next_order: u64,
}

impl Agenda {
    pub fn schedule(&mut self, at: Micros, kind: EventKind) {
        self.heap.push(Scheduled { at, order: self.next_order, kind });
        self.next_order += 1;
    }

    /// Schedules an event due no earlier than every event scheduled this way before it (a
    /// constant delay from a clock that never goes back); others go to `schedule`.
    pub fn schedule_in_order(&mut self, at: Micros, kind: EventKind) {
        if self.in_order.back().is_some_and(|last| last.at > at) {
            return self.schedule(at, kind);
        }
        self.in_order.push_back(Scheduled { at, order: self.next_order, kind });
        self.next_order += 1;
    }

    pub fn pop(&mut self) -> Option<(Micros, EventKind)> {
        let from_fifo = match (self.heap.peek(), self.in_order.front()) {
            (Some(heap), Some(fifo)) => (fifo.at, fifo.order) < (heap.at, heap.order),
            (None, Some(_)) => true,
            _ => false,
        };
        let scheduled = if from_fifo { self.in_order.pop_front() } else { self.heap.pop() };
        scheduled.map(|scheduled| (scheduled.at, scheduled.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_by_the_order_they_were_scheduled() {
        let mut agenda = Agenda::default();
        agenda.schedule(5, EventKind::FlushDue { writer: 1 });
        agenda.schedule(3, EventKind::ActorDone { incarnation: 1 });
        agenda.schedule(5, EventKind::StoreProbe);
        agenda.schedule(3, EventKind::Arrival);
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(
            order,
            vec![
                (3, EventKind::ActorDone { incarnation: 1 }),
                (3, EventKind::Arrival),
                (5, EventKind::FlushDue { writer: 1 }),
                (5, EventKind::StoreProbe)
            ]
        );
    }

    #[test]
    fn events_in_order_interleave_with_the_heap_as_if_they_were_in_it() {
        let mut agenda = Agenda::default();
        agenda.schedule_in_order(4, EventKind::Deadline { request: 1, serial: 1 });
        agenda.schedule(4, EventKind::StoreProbe);
        agenda.schedule_in_order(6, EventKind::Deadline { request: 2, serial: 2 });
        agenda.schedule(2, EventKind::Arrival);
        // Earlier than the FIFO's last: goes to the heap.
        agenda.schedule_in_order(5, EventKind::Deadline { request: 3, serial: 3 });
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(
            order,
            vec![
                (2, EventKind::Arrival),
                (4, EventKind::Deadline { request: 1, serial: 1 }),
                (4, EventKind::StoreProbe),
                (5, EventKind::Deadline { request: 3, serial: 3 }),
                (6, EventKind::Deadline { request: 2, serial: 2 }),
            ]
        );
    }
}
