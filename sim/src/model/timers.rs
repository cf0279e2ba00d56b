//! Timers that all run for the same time from when they are set (a request's deadline, an
//! impatient registrant's patience): virtual time never goes back, so they come due in the order
//! they were set, and a queue holds them. One agenda event stands for the earliest that still
//! matters, instead of one event for each timer: most are moot long before they come due (the
//! request was answered), and their entries are dropped unseen when they reach the front.

use std::collections::VecDeque;

use crate::distribution::Micros;

#[derive(Debug)]
pub(super) struct FifoTimers<T> {
    /// When each timer comes due, and what it is for; earliest first.
    due: VecDeque<(Micros, T)>,
    /// An agenda event stands for the front entry.
    scheduled: bool,
}

impl<T> Default for FifoTimers<T> {
    fn default() -> Self {
        FifoTimers { due: VecDeque::new(), scheduled: false }
    }
}

/// What the event standing for the front entry finds there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Front<T> {
    /// The front timer, taken out: it is due.
    Due(T),
    /// The front timer, still in the queue, comes due at this time: the caller schedules the
    /// next event there if the timer still matters, or drops it with `drop_front`.
    Later(Micros, T),
    /// No timer left; no event stands for one now.
    Empty,
}

impl<T: Copy> FifoTimers<T> {
    /// Sets a timer due at `due`, which is never before the last one set. `true` when the
    /// caller must schedule an event at `due` (none stands for an earlier timer).
    pub(super) fn set(&mut self, due: Micros, what: T) -> bool {
        debug_assert!(self.due.back().is_none_or(|(last, _)| *last <= due));
        self.due.push_back((due, what));
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// The front timer as the event standing for it finds it at `now`.
    pub(super) fn front(&mut self, now: Micros) -> Front<T> {
        match self.due.front() {
            Some(&(due, what)) if due <= now => {
                self.due.pop_front();
                Front::Due(what)
            }
            Some(&(due, what)) => Front::Later(due, what),
            None => {
                self.scheduled = false;
                Front::Empty
            }
        }
    }

    /// Drops the front timer, which no longer matters.
    pub(super) fn drop_front(&mut self) {
        self.due.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_due_in_order_and_one_event_stands_for_the_front() {
        let mut timers = FifoTimers::default();
        assert!(timers.set(10, 'a'), "the first timer needs an event");
        assert!(!timers.set(10, 'b'), "an event stands for an earlier timer");
        assert!(!timers.set(30, 'c'));
        assert_eq!(timers.front(10), Front::Due('a'));
        assert_eq!(timers.front(10), Front::Due('b'));
        assert_eq!(timers.front(10), Front::Later(30, 'c'));
        timers.drop_front();
        assert_eq!(timers.front(10), Front::Empty);
        assert!(timers.set(40, 'd'), "once empty, the next timer needs an event again");
    }
}
