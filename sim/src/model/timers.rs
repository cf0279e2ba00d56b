//! Timers that all run for the same time from when they are set (a request's deadline, an
//! impatient registrant's patience): virtual time never goes back, so they come due in the order
//! they were set, and a queue holds them. One agenda event stands for the earliest that still
//! matters, instead of one event for each timer: most are moot long before they come due (the
//! request was answered), and their entries are dropped unseen when they reach the front.

use std::collections::VecDeque;

use crate::distribution::Micros;

#[derive(Clone, Debug)]
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
pub(super) enum Next<T> {
    /// A timer that still matters is due: it is taken out.
    Due(T),
    /// The earliest timer that still matters comes due then: the caller schedules the event
    /// standing for it there.
    At(Micros),
    /// No timer left; no event stands for one now.
    Idle,
}

impl<T: Copy> FifoTimers<T> {
    /// Sets a timer due at `due`, which is never before the last one set. `true` when the
    /// caller must schedule an event at `due` (none stands for an earlier timer).
    pub(super) fn set(&mut self, due: Micros, what: T) -> bool {
        debug_assert!(self.due.back().is_none_or(|(last, _)| *last <= due));
        self.due.push_back((due, what));
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// The next timer as the event standing for the front finds it at `now`; timers for which
    /// `matters` is false (their request was answered) are dropped on the way.
    pub(super) fn next(&mut self, now: Micros, matters: impl Fn(T) -> bool) -> Next<T> {
        while let Some(&(due, what)) = self.due.front() {
            if !matters(what) {
                self.due.pop_front();
            } else if due <= now {
                self.due.pop_front();
                return Next::Due(what);
            } else {
                return Next::At(due);
            }
        }
        self.scheduled = false;
        Next::Idle
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
        assert!(!timers.set(50, 'd'));
        let all = |_| true;
        assert_eq!(timers.next(10, all), Next::Due('a'));
        assert_eq!(timers.next(10, all), Next::Due('b'));
        assert_eq!(timers.next(10, all), Next::At(30));
        // 'c' no longer matters: dropped unseen, and the event goes on to 'd'.
        assert_eq!(timers.next(10, |what| what != 'c'), Next::At(50));
        assert_eq!(timers.next(50, all), Next::Due('d'));
        assert_eq!(timers.next(50, all), Next::Idle);
        assert!(timers.set(60, 'e'), "once idle, the next timer needs an event again");
    }
}
