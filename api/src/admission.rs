//! Adaptive admission: a bound on the registrations in flight on this node (sent towards an
//! event actor and not yet answered) that follows their latency, so that overload is refused at
//! the door within microseconds instead of queueing in the mailboxes and the writer.
//!
//! The limit is AIMD on a latency target, the congestion avoidance of TCP (Jacobson, "Congestion
//! Avoidance and Control", 1988; Chiu and Jain, 1989) as Netflix's concurrency-limits applies it
//! to servers (`AIMDLimit`): once per window of answers, the limit shrinks by `BACKOFF_RATIO`
//! when more than `SLOW_SHARE_MAX` of them took longer than the target, and otherwise grows by
//! its square root if it was used. A gradient limit (the same library's `Gradient2`) was the
//! other candidate; it compares a short-term latency with a long-term average of the latency
//! under load, but a registration's latency is mostly the group commit it waits for, whose
//! length grows with the batch the load itself makes, so the long-term average rises with the
//! very queue it should reveal and the limit drifts up (`Gradient2` decays it by hand for that
//! reason); the goal here is also stated as an absolute latency (admitted p99 ≤ 100 ms), which a
//! target says directly. CoDel (Nichols and Jacobson, 2012) on the time a request waited in the
//! mailbox sees only the smaller part of the wait (under overload the queue forms at the writer)
//! and would need a timestamp inside the engine's actor. What AIMD costs: a store whose every
//! commit is slower than half the target shrinks the limit to its minimum, which bounds what a
//! slow store may serve; a store that slow is stalled, and is refused by the stall detection
//! and the request deadline anyway.
//!
//! The hot path is a few atomic operations (the count in flight, its peak, the gauge) and a clock
//! read to acquire, the same and a mutex held for a few additions to release; the window's
//! adjustment runs under that mutex, at most once per `WINDOW_MS`. `benches/benches/admission.rs`
//! measures it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics;

/// The limit before any answer was measured: enough for a flash crowd's first burst to reach
/// the writer's full batch throughput (about 64 in flight serve the closed-loop benchmark's
/// ~20,000 admissions/s) with room to spare.
pub const LIMIT_INITIAL: usize = 256;
/// The limit never shrinks below this. A registration's latency is mostly its group commit, and
/// a commit serves what is in flight: under a flood of refused requests the CPU they take slows
/// every commit, the latency rises whatever the limit, and a limit that kept shrinking would only
/// shrink the batches. Measured with `e2e --overload` at 15,000 connections, a floor of 64 held
/// 13 % of the sustainable rate against clients that ignore `Retry-After` (256: 29 %) and 70 %
/// against clients that honor it (256: 116 %), the admitted p99 in the 100 ms bucket either way
/// for the latter.
pub const LIMIT_MIN: usize = 256;
/// The limit never grows past this: the default mailbox capacity, past which an event's actor
/// refuses registrations itself.
pub const LIMIT_MAX: usize = 4_096;
/// A registration answered slower than this counts as slow, in ms: a quarter of the 100 ms p99
/// goal, which leaves room for the limit's sawtooth above the target, for what the limiter does
/// not see (reading the request, writing the answer, a worker busy with other connections) and
/// for a commit's hiccup. Measured with `e2e --overload` at 15,000 connections: with 50 ms the
/// admitted p99 landed in the 250 ms bucket, with 25 ms in the 100 ms one, goodput held.
pub const LATENCY_TARGET_MS: u64 = 25;
/// The limit changes at most once per this many ms.
pub const WINDOW_MS: u64 = 100;
/// Answers a window needs before it may change the limit: a few answers say little.
pub const WINDOW_SAMPLES_MIN: u64 = 32;
/// A window with more than this share of slow answers shrinks the limit: the target is a p99.
pub const SLOW_SHARE_MAX: f64 = 0.01;
/// What a congested window multiplies the limit by.
pub const BACKOFF_RATIO: f64 = 0.9;
/// The reason of the 503 the limiter answers: its `detail`, and the `reason` label of
/// `kuota_shed_total`.
pub const REFUSAL_REASON: &str = "too many registrations in flight on this node; retry";

/// The limiter's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionBounds {
    pub limit_initial: usize,
    pub limit_min: usize,
    pub limit_max: usize,
    pub latency_target: Duration,
}

impl AdmissionBounds {
    /// The named defaults, with every limit at most `mailbox_capacity_max`: the registrations
    /// in flight include those in an event's mailbox, and one past its capacity would only be
    /// refused later, by the actor, after having waited for nothing.
    pub fn within_mailbox(mailbox_capacity_max: usize) -> AdmissionBounds {
        let cap = mailbox_capacity_max.max(1);
        AdmissionBounds {
            limit_initial: LIMIT_INITIAL.min(cap),
            limit_min: LIMIT_MIN.min(cap),
            limit_max: LIMIT_MAX.min(cap),
            latency_target: Duration::from_millis(LATENCY_TARGET_MS),
        }
    }
}

/// A monotonic clock, read as the time since an origin of its own; tests drive it by hand.
pub trait MonotonicClock: Send + Sync {
    fn now(&self) -> Duration;
}

/// `Instant`, as the time since the clock was made.
#[derive(Debug)]
pub struct SystemMonotonicClock {
    origin: Instant,
}

impl Default for SystemMonotonicClock {
    fn default() -> Self {
        SystemMonotonicClock { origin: Instant::now() }
    }
}

impl MonotonicClock for SystemMonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// See the module documentation.
pub struct AdmissionLimiter {
    bounds: AdmissionBounds,
    /// The limit as `try_acquire` reads it: `Window::limit`, rounded down.
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The most in flight since the window opened: a limit grows only when it was used.
    in_flight_peak: AtomicUsize,
    window: Mutex<Window>,
    clock: Box<dyn MonotonicClock>,
}

/// The answers measured since the limit last changed.
#[derive(Debug)]
struct Window {
    opened_at: Duration,
    samples: u64,
    slow_samples: u64,
    /// When the limit last shrank: answers to requests admitted before then were admitted under
    /// the larger limit, and shrinking again for them would punish one queue twice.
    shrunk_at: Duration,
    /// The limit with its fraction, so that small steps add up.
    limit: f64,
}

/// A registration in flight; dropping it (on every path) releases it and feeds its latency to
/// the limiter.
#[must_use = "a permit is released as soon as it is dropped"]
pub struct Permit<'limiter> {
    limiter: &'limiter AdmissionLimiter,
    acquired_at: Duration,
}

impl fmt::Debug for AdmissionLimiter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AdmissionLimiter")
            .field("bounds", &self.bounds)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Permit").field("acquired_at", &self.acquired_at).finish_non_exhaustive()
    }
}

impl AdmissionLimiter {
    pub fn new(bounds: AdmissionBounds, clock: Box<dyn MonotonicClock>) -> AdmissionLimiter {
        assert!(
            1 <= bounds.limit_min && bounds.limit_min <= bounds.limit_max,
            "admission bounds need 1 <= minimum <= maximum: {bounds:?}"
        );
        let initial = bounds.limit_initial.clamp(bounds.limit_min, bounds.limit_max);
        let now = clock.now();
        metrics::admission_limit().set(initial as f64);
        AdmissionLimiter {
            bounds,
            limit: AtomicUsize::new(initial),
            in_flight: AtomicUsize::new(0),
            in_flight_peak: AtomicUsize::new(0),
            window: Mutex::new(Window {
                opened_at: now,
                samples: 0,
                slow_samples: 0,
                shrunk_at: now,
                limit: initial as f64,
            }),
            clock,
        }
    }

    pub fn with_system_clock(bounds: AdmissionBounds) -> AdmissionLimiter {
        AdmissionLimiter::new(bounds, Box::new(SystemMonotonicClock::default()))
    }

    pub fn bounds(&self) -> AdmissionBounds {
        self.bounds
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A permit, or `None` at once when the limit is reached.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let limit = self.limit.load(Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            // Two requests racing past the limit both step back: neither is admitted over it.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::admission_refused().increment(1);
            return None;
        }
        self.in_flight_peak.fetch_max(before + 1, Ordering::Relaxed);
        metrics::admission_in_flight().increment(1.0);
        Some(Permit { limiter: self, acquired_at: self.clock.now() })
    }

    fn release(&self, acquired_at: Duration) {
        let now = self.clock.now();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        metrics::admission_in_flight().decrement(1.0);
        // Only counters are touched under the lock; a panic cannot leave them half-updated.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if acquired_at >= window.shrunk_at {
            window.samples += 1;
            if now.saturating_sub(acquired_at) > self.bounds.latency_target {
                window.slow_samples += 1;
            }
        }
        let elapsed = now.saturating_sub(window.opened_at);
        if elapsed < Duration::from_millis(WINDOW_MS) || window.samples < WINDOW_SAMPLES_MIN {
            return;
        }
        self.close(&mut window, now);
    }

    /// Ends the window: shrinks a congested limit, grows a used one, and opens the next window.
    fn close(&self, window: &mut Window, now: Duration) {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let peak = self.in_flight_peak.swap(in_flight, Ordering::Relaxed);
        let minimum = self.bounds.limit_min as f64;
        let maximum = self.bounds.limit_max as f64;
        let congested = window.slow_samples as f64 > window.samples as f64 * SLOW_SHARE_MAX;
        if congested {
            window.limit = (window.limit * BACKOFF_RATIO).clamp(minimum, maximum);
            window.shrunk_at = now;
        } else if peak as f64 * 2.0 >= window.limit {
            window.limit = (window.limit + window.limit.sqrt()).clamp(minimum, maximum);
        }
        window.opened_at = now;
        window.samples = 0;
        window.slow_samples = 0;
        let published = window.limit as usize;
        self.limit.store(published, Ordering::Relaxed);
        metrics::admission_limit().set(published as f64);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.release(self.acquired_at);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A clock that moves only when told.
    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicU64>);

    impl ManualClock {
        fn advance(&self, milliseconds: u64) {
            self.0.fetch_add(milliseconds * 1_000, Ordering::Relaxed);
        }
    }

    impl MonotonicClock for ManualClock {
        fn now(&self) -> Duration {
            Duration::from_micros(self.0.load(Ordering::Relaxed))
        }
    }

    const BOUNDS: AdmissionBounds = AdmissionBounds {
        limit_initial: 100,
        limit_min: 10,
        limit_max: 400,
        latency_target: Duration::from_millis(LATENCY_TARGET_MS),
    };

    fn limiter(bounds: AdmissionBounds) -> (AdmissionLimiter, ManualClock) {
        let clock = ManualClock::default();
        (AdmissionLimiter::new(bounds, Box::new(clock.clone())), clock)
    }

    /// Answers that each take `latency_ms`, with the limiter kept full (so that its limit counts
    /// as used), for at least one window's time and samples: the limit changes at least once.
    fn run_window(limiter: &AdmissionLimiter, clock: &ManualClock, latency_ms: u64) {
        let started = clock.now();
        let mut answered = 0;
        while answered < WINDOW_SAMPLES_MIN || clock.now() - started < Duration::from_millis(WINDOW_MS) {
            let permits: Vec<Permit<'_>> = std::iter::from_fn(|| limiter.try_acquire()).collect();
            clock.advance(latency_ms.max(1));
            answered += permits.len() as u64;
            drop(permits);
        }
    }

    #[test]
    fn the_limit_grows_while_answers_are_fast() {
        let (limiter, clock) = limiter(BOUNDS);
        let mut previous = limiter.limit();
        for _ in 0..5 {
            run_window(&limiter, &clock, 5);
            assert!(limiter.limit() > previous, "{} should exceed {previous}", limiter.limit());
            previous = limiter.limit();
        }
    }

    #[test]
    fn the_limit_shrinks_when_answers_are_slower_than_the_target() {
        let (limiter, clock) = limiter(BOUNDS);
        let mut previous = limiter.limit();
        for _ in 0..5 {
            run_window(&limiter, &clock, LATENCY_TARGET_MS * 3);
            assert!(limiter.limit() < previous, "{} should be below {previous}", limiter.limit());
            previous = limiter.limit();
        }
    }

    #[test]
    fn the_limit_never_leaves_its_bounds() {
        let (limiter, clock) = limiter(BOUNDS);
        for _ in 0..200 {
            run_window(&limiter, &clock, 10);
            assert!(limiter.limit() <= BOUNDS.limit_max);
        }
        assert_eq!(limiter.limit(), BOUNDS.limit_max, "fast answers take it to its maximum");
        for _ in 0..200 {
            run_window(&limiter, &clock, 1_000);
            assert!(limiter.limit() >= BOUNDS.limit_min);
        }
        assert_eq!(limiter.limit(), BOUNDS.limit_min, "slow answers take it to its minimum");
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let (limiter, clock) = limiter(BOUNDS);
        for _ in 0..10 {
            // Fewer in flight than half the limit, one at a time.
            for _ in 0..WINDOW_SAMPLES_MIN {
                let _permit = limiter.try_acquire().expect("below the limit");
                clock.advance(WINDOW_MS / WINDOW_SAMPLES_MIN + 1);
            }
        }
        assert_eq!(limiter.limit(), BOUNDS.limit_initial);
    }

    #[test]
    fn requests_beyond_the_limit_are_refused_and_a_dropped_permit_makes_room() {
        let (limiter, _clock) = limiter(BOUNDS);
        let mut permits: Vec<Permit<'_>> =
            (0..BOUNDS.limit_initial).map(|_| limiter.try_acquire().expect("below the limit")).collect();
        assert_eq!(limiter.in_flight(), BOUNDS.limit_initial);
        assert!(limiter.try_acquire().is_none(), "the limit is reached");
        assert_eq!(limiter.in_flight(), BOUNDS.limit_initial, "a refusal holds nothing");
        permits.pop();
        assert_eq!(limiter.in_flight(), BOUNDS.limit_initial - 1);
        let again = limiter.try_acquire();
        assert!(again.is_some(), "the released place is taken again");
        drop(again);
        drop(permits);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn answers_admitted_before_a_shrink_do_not_shrink_the_limit_again() {
        let (limiter, clock) = limiter(BOUNDS);
        let early: Vec<Permit<'_>> = (0..50).map(|_| limiter.try_acquire().expect("room")).collect();
        run_window(&limiter, &clock, LATENCY_TARGET_MS * 3);
        let shrunk = limiter.limit();
        assert!(shrunk < BOUNDS.limit_initial);
        clock.advance(WINDOW_MS);
        // Requests of the old queue answer slowly, beside fast new ones: only the new count.
        let fresh: Vec<Permit<'_>> =
            (0..WINDOW_SAMPLES_MIN).map(|_| limiter.try_acquire().expect("room")).collect();
        clock.advance(1);
        drop(early);
        drop(fresh);
        assert!(limiter.limit() >= shrunk, "{} fell below {shrunk}", limiter.limit());
    }

    #[test]
    fn the_bounds_fit_within_a_small_mailbox() {
        let bounds = AdmissionBounds::within_mailbox(4);
        assert_eq!((bounds.limit_initial, bounds.limit_min, bounds.limit_max), (4, 4, 4));
        let defaults = AdmissionBounds::within_mailbox(kuota_engine::limits::MAILBOX_CAPACITY_MAX);
        assert_eq!(
            (defaults.limit_initial, defaults.limit_min, defaults.limit_max),
            (LIMIT_INITIAL, LIMIT_MIN, LIMIT_MAX)
        );
    }
}
