//! The agenda: timed events in a binary heap, earliest first; events due at the same
//! microsecond run in the order they were scheduled, so that a run never depends on how the
//! heap happens to break ties.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::distribution::Micros;

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
    /// A node's HTTP worker has finished with a request.
    WorkerDone { node: u32, request: u32 },
    /// A forwarded request reaches the event actor's mailbox.
    ActorReceive { request: u32 },
    /// The event actor has finished its current command.
    ActorDone,
    /// The actor's hold-expiry timer.
    HoldTick,
    /// The write-behind's flush interval may have run out for the oldest waiting submission.
    FlushDue,
    /// A database transaction has committed.
    CommitDone { batch: u32 },
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
    next_order: u64,
}

impl Agenda {
    pub fn schedule(&mut self, at: Micros, kind: EventKind) {
        self.heap.push(Scheduled { at, order: self.next_order, kind });
        self.next_order += 1;
    }

    pub fn pop(&mut self) -> Option<(Micros, EventKind)> {
        self.heap.pop().map(|scheduled| (scheduled.at, scheduled.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_by_the_order_they_were_scheduled() {
        let mut agenda = Agenda::default();
        agenda.schedule(5, EventKind::FlushDue);
        agenda.schedule(3, EventKind::ActorDone);
        agenda.schedule(5, EventKind::HoldTick);
        agenda.schedule(3, EventKind::Arrival);
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(
            order,
            vec![
                (3, EventKind::ActorDone),
                (3, EventKind::Arrival),
                (5, EventKind::FlushDue),
                (5, EventKind::HoldTick)
            ]
        );
    }
}
