//! Time as the engine sees it: a millisecond timestamp that callers pass in, and the `Clock`
//! trait through which the actor shell (never `EventQuota`) reads it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch, UTC. The core never reads a clock: every command is
/// applied at a `Timestamp` its caller chose, which is what makes the core deterministic.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_millis(milliseconds: u64) -> Self {
        Timestamp(milliseconds)
    }

    pub const fn from_seconds(seconds: u64) -> Self {
        Timestamp(seconds.saturating_mul(1_000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn plus_seconds(self, seconds: u64) -> Self {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1_000)))
    }

    pub const fn plus_millis(self, milliseconds: u64) -> Self {
        Timestamp(self.0.saturating_add(milliseconds))
    }

    /// Milliseconds from `self` until `later`, zero when `later` is not later.
    pub const fn millis_until(self, later: Timestamp) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}ms", self.0)
    }
}

/// Where the actor shell reads "now". Tests and the simulator use `ManualClock`.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            // A wall clock before 1970 is a broken machine; treat it as the epoch rather than panic.
            .unwrap_or_default();
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to; shared by clones.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    milliseconds: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { milliseconds: Arc::new(AtomicU64::new(start.as_millis())) }
    }

    pub fn advance_millis(&self, milliseconds: u64) {
        self.milliseconds.fetch_add(milliseconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: Timestamp) {
        self.milliseconds.store(now.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.milliseconds.load(Ordering::SeqCst))
    }
}
