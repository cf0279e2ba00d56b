//! The writer's counters: plain atomics that the writer bumps and anyone reads, so that the API
//! can export them (and compute `Retry-After`) without a metrics crate in this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreHealth;

/// Upper bounds of the commit latency buckets, in microseconds; one more bucket counts the rest.
pub const COMMIT_LATENCY_BOUNDS_MICROS: [u64; 20] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// Upper bounds of the batch size buckets, in effects; one more bucket counts the rest.
pub const BATCH_EFFECTS_BOUNDS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000];

/// How much of the drain rate's average the newest tick makes up.
const DRAIN_RATE_SMOOTHING: f64 = 0.3;

/// `Retry-After` never advises more than this, in seconds.
pub const RETRY_AFTER_SECONDS_MAX: u64 = 30;

/// A histogram with fixed bucket bounds: counts per bucket (not cumulative), the last bucket
/// counting everything above the last bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket that holds the `quantile` (0–1) observation; `None`
    /// when empty, `u64::MAX` when it lies beyond the last bound.
    pub fn quantile_upper_bound(&self, quantile: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(self.bounds.get(index).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[derive(Debug)]
struct AtomicHistogram<const BUCKETS: usize> {
    bounds: &'static [u64],
    counts: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl<const BUCKETS: usize> AtomicHistogram<BUCKETS> {
    fn new(bounds: &'static [u64]) -> Self {
        assert_eq!(bounds.len() + 1, BUCKETS, "one bucket per bound and one for the rest");
        AtomicHistogram { bounds, counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }

    fn record(&self, value: u64) {
        let index = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// What the writer shares with its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
    submissions_committed: AtomicU64,
    submissions_failed: AtomicU64,
    submissions_fenced: AtomicU64,
    effects_committed: AtomicU64,
    effects_skipped: AtomicU64,
    retries: AtomicU64,
    last_batch_effects: AtomicU64,
    last_batch_submissions: AtomicU64,
    commits_in_flight_max: AtomicU64,
    commit_latency: AtomicHistogram<{ COMMIT_LATENCY_BOUNDS_MICROS.len() + 1 }>,
    batch_effects: AtomicHistogram<{ BATCH_EFFECTS_BOUNDS.len() + 1 }>,
    /// Submissions answered per second, smoothed; an `f64` in its bits.
    drain_rate_bits: AtomicU64,
    answered_at_last_tick: AtomicU64,
    /// Submissions taken off the queue and not answered yet (gathering or committing).
    pub taken: AtomicUsize,
    pub breaker_open: AtomicBool,
    /// Where `oldest_commit_started_micros` counts from.
    origin: Instant,
    /// When the oldest commit in flight started, in microseconds after `origin`, plus one; 0 when
    /// none is in flight.
    oldest_commit_started_micros: AtomicU64,
    /// A commit attempt timed out, or a batch failed because of the store, and neither a commit
    /// nor a probe has worked since: the store is suspect (see `WriteBehindHandle::stalled`).
    store_failing: AtomicBool,
    /// Where the store's loads see whether it answers: neither suspect nor behind an open
    /// breaker (see `publish_health`).
    health: Arc<StoreHealth>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            batches_committed: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            submissions_committed: AtomicU64::new(0),
            submissions_failed: AtomicU64::new(0),
            submissions_fenced: AtomicU64::new(0),
            effects_committed: AtomicU64::new(0),
            effects_skipped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_batch_effects: AtomicU64::new(0),
            last_batch_submissions: AtomicU64::new(0),
            commits_in_flight_max: AtomicU64::new(0),
            commit_latency: AtomicHistogram::new(&COMMIT_LATENCY_BOUNDS_MICROS),
            batch_effects: AtomicHistogram::new(&BATCH_EFFECTS_BOUNDS),
            drain_rate_bits: AtomicU64::new(0f64.to_bits()),
            answered_at_last_tick: AtomicU64::new(0),
            taken: AtomicUsize::new(0),
            breaker_open: AtomicBool::new(false),
            origin: Instant::now(),
            oldest_commit_started_micros: AtomicU64::new(0),
            store_failing: AtomicBool::new(false),
            health: Arc::default(),
        }
    }
}

impl Shared {
    /// Counters that tell the store's loads whether it answers through `health`.
    pub fn publishing_to(health: Arc<StoreHealth>) -> Shared {
        Shared { health, ..Shared::default() }
    }

    pub fn batch_committed(&self, submissions: usize, effects: usize, skipped: usize, latency: Duration) {
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.effects_committed.fetch_add(effects as u64, Ordering::Relaxed);
        self.effects_skipped.fetch_add(skipped as u64, Ordering::Relaxed);
        self.last_batch_effects.store(effects as u64, Ordering::Relaxed);
        self.last_batch_submissions.store(submissions as u64, Ordering::Relaxed);
        self.batch_effects.record(effects as u64);
        self.commit_latency.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Notes when the oldest commit in flight started (`None`: none is in flight).
    pub fn oldest_commit_started(&self, started: Option<Instant>) {
        let micros = started.map_or(0, |started| {
            u64::try_from(started.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX - 1)
                + 1
        });
        self.oldest_commit_started_micros.store(micros, Ordering::Relaxed);
    }

    /// How long the oldest commit in flight has been running at `now` (zero when none is).
    pub fn oldest_commit_age(&self, now: Instant) -> Duration {
        match self.oldest_commit_started_micros.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            micros => now.saturating_duration_since(self.origin + Duration::from_micros(micros - 1)),
        }
    }

    /// The store does not commit at `now` (see `WriteBehindHandle::stalled`): the breaker is
    /// open, the store is suspect, or the oldest commit in flight is older than `threshold`.
    pub fn stalled_at(&self, now: Instant, threshold: Duration) -> bool {
        self.breaker_open.load(Ordering::Relaxed)
            || self.store_failing()
            || self.oldest_commit_age(now) > threshold
    }

    /// Notes whether the store is suspect; says so in the log when that changes.
    /// Called after every commit: only a change is said and published.
    pub fn set_store_failing(&self, failing: bool) {
        if self.store_failing.swap(failing, Ordering::Relaxed) != failing {
            if failing {
                tracing::warn!("the store is suspect: writes are refused until a commit or a probe works");
            } else {
                tracing::info!("the store commits again: writes are taken");
            }
            self.publish_health();
        }
    }

    /// Opens or closes the breaker; returns whether it was open.
    pub fn set_breaker_open(&self, open: bool) -> bool {
        let was = self.breaker_open.swap(open, Ordering::Relaxed);
        if was != open {
            self.publish_health();
        }
        was
    }

    /// Tells the store's loads whether it answers (`StoreHealth`).
    fn publish_health(&self) {
        self.health.set_answering(!self.breaker_open.load(Ordering::Relaxed) && !self.store_failing());
    }

    pub fn store_failing(&self) -> bool {
        self.store_failing.load(Ordering::Relaxed)
    }

    /// Notes how many batches are committing right now.
    pub fn commits_in_flight(&self, count: usize) {
        self.commits_in_flight_max.fetch_max(count as u64, Ordering::Relaxed);
    }

    pub fn batch_failed(&self) {
        self.batches_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn submission_committed(&self) {
        self.submissions_committed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn submission_failed(&self, fenced: bool) {
        self.submissions_failed.fetch_add(1, Ordering::Relaxed);
        if fenced {
            self.submissions_fenced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Folds the submissions answered since the last tick into the drain rate.
    pub fn tick(&self, elapsed: Duration) {
        let answered = self.submissions_committed.load(Ordering::Relaxed)
            + self.submissions_failed.load(Ordering::Relaxed);
        let before = self.answered_at_last_tick.swap(answered, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let instant_rate = answered.saturating_sub(before) as f64 / seconds;
        let previous = f64::from_bits(self.drain_rate_bits.load(Ordering::Relaxed));
        let smoothed = previous + DRAIN_RATE_SMOOTHING * (instant_rate - previous);
        self.drain_rate_bits.store(smoothed.to_bits(), Ordering::Relaxed);
    }

    pub fn drain_rate_per_second(&self) -> f64 {
        f64::from_bits(self.drain_rate_bits.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> WriteBehindStats {
        WriteBehindStats {
            batches_committed: self.batches_committed.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            submissions_committed: self.submissions_committed.load(Ordering::Relaxed),
            submissions_failed: self.submissions_failed.load(Ordering::Relaxed),
            submissions_fenced: self.submissions_fenced.load(Ordering::Relaxed),
            effects_committed: self.effects_committed.load(Ordering::Relaxed),
            effects_skipped: self.effects_skipped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            last_batch_effects: self.last_batch_effects.load(Ordering::Relaxed),
            last_batch_submissions: self.last_batch_submissions.load(Ordering::Relaxed),
            commits_in_flight_max: self.commits_in_flight_max.load(Ordering::Relaxed),
            commit_latency_micros: self.commit_latency.snapshot(),
            batch_effects: self.batch_effects.snapshot(),
            drain_rate_per_second: self.drain_rate_per_second(),
            breaker_open: self.breaker_open.load(Ordering::Relaxed),
        }
    }
}

/// A copy of the writer's counters; every count is since the writer started.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteBehindStats {
    /// Transactions committed.
    pub batches_committed: u64,
    /// Transactions that failed for good (after retries); their submissions got `Err`.
    pub batches_failed: u64,
    pub submissions_committed: u64,
    /// Submissions answered with `Err`, fenced ones and those refused by the breaker included.
    pub submissions_failed: u64,
    pub submissions_fenced: u64,
    pub effects_committed: u64,
    /// Effects found committed already (a submission applied twice).
    pub effects_skipped: u64,
    /// Transaction attempts repeated after a transient error.
    pub retries: u64,
    pub last_batch_effects: u64,
    pub last_batch_submissions: u64,
    /// The most batches that were committing at the same time.
    pub commits_in_flight_max: u64,
    /// Time from `BEGIN` to `COMMIT` of committed batches, in microseconds.
    pub commit_latency_micros: Histogram,
    /// Effects per committed batch.
    pub batch_effects: Histogram,
    /// Submissions answered per second, smoothed over the last seconds.
    pub drain_rate_per_second: f64,
    pub breaker_open: bool,
}

/// The `Retry-After` to advise for a queue of `queue_depth` submissions that drains at
/// `drain_rate_per_second`: the time to drain it, at least 1 s and at most
/// `RETRY_AFTER_SECONDS_MAX`.
pub fn retry_after_seconds(queue_depth: usize, drain_rate_per_second: f64) -> u64 {
    if drain_rate_per_second < 1.0 {
        return if queue_depth == 0 { 1 } else { RETRY_AFTER_SECONDS_MAX };
    }
    let seconds = (queue_depth as f64 / drain_rate_per_second).ceil() as u64;
    seconds.clamp(1, RETRY_AFTER_SECONDS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_upper_bound_of_its_bucket() {
        let histogram = AtomicHistogram::<{ BATCH_EFFECTS_BOUNDS.len() + 1 }>::new(&BATCH_EFFECTS_BOUNDS);
        for value in [1, 3, 3, 3, 700, 9_000] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 6);
        assert_eq!(snapshot.quantile_upper_bound(0.5), Some(5));
        assert_eq!(snapshot.quantile_upper_bound(0.8), Some(1_000));
        assert_eq!(snapshot.quantile_upper_bound(1.0), Some(u64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_commit_age_runs_from_its_start_and_is_zero_when_none_is_in_flight() {
        let shared = Shared::default();
        assert_eq!(shared.oldest_commit_age(Instant::now()), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(40)).await;
        shared.oldest_commit_started(Some(Instant::now()));
        assert_eq!(shared.oldest_commit_age(Instant::now()), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(1_250)).await;
        assert_eq!(shared.oldest_commit_age(Instant::now()), Duration::from_millis(1_250));
        shared.oldest_commit_started(None);
        assert_eq!(shared.oldest_commit_age(Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_stalls_the_writer_only_once_it_is_older_than_the_threshold() {
        let threshold = Duration::from_millis(1_000);
        let shared = Shared::default();
        shared.oldest_commit_started(Some(Instant::now()));
        tokio::time::advance(threshold).await;
        assert!(!shared.stalled_at(Instant::now(), threshold), "exactly the threshold is not older");
        tokio::time::advance(Duration::from_micros(1)).await;
        assert!(shared.stalled_at(Instant::now(), threshold));
        shared.oldest_commit_started(None);
        assert!(!shared.stalled_at(Instant::now(), threshold), "the commit ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspect_store_or_an_open_breaker_stalls_the_writer_with_no_commit_in_flight() {
        let threshold = Duration::from_millis(1_000);
        let shared = Shared::default();
        shared.set_store_failing(true);
        assert!(shared.stalled_at(Instant::now(), threshold));
        shared.set_store_failing(false);
        shared.breaker_open.store(true, Ordering::Relaxed);
        assert!(shared.stalled_at(Instant::now(), threshold));
        shared.breaker_open.store(false, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert!(!shared.stalled_at(Instant::now(), threshold), "idle is not stalled, however long");
    }

    #[test]
    fn retry_after_is_the_time_to_drain_the_queue_within_bounds() {
        assert_eq!(retry_after_seconds(0, 0.0), 1);
        assert_eq!(retry_after_seconds(10, 0.0), RETRY_AFTER_SECONDS_MAX);
        assert_eq!(retry_after_seconds(15_000, 5_000.0), 3);
        assert_eq!(retry_after_seconds(1, 5_000.0), 1);
        assert_eq!(retry_after_seconds(1_000_000, 10.0), RETRY_AFTER_SECONDS_MAX);
    }
}
