//! Every bound of the engine, named once, with units last. Configuration may lower or raise
//! the per-event ones through `QuotaLimits`; the rest are constants.

/// Categories one event may have.
pub const CATEGORIES_MAX: usize = 64;

/// Length of a category code, in bytes (ASCII `[A-Za-z0-9_-]`).
pub const CATEGORY_CODE_LENGTH_MAX: usize = 32;

/// Length of an event id, in bytes (ASCII `[A-Za-z0-9_-]`).
pub const EVENT_ID_LENGTH_MAX: usize = 64;

/// Length of an e-mail address, in bytes (RFC 5321's path limit).
pub const EMAIL_LENGTH_MAX: usize = 254;

/// Length of an `Idempotency-Key`, in bytes of printable ASCII.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// Capacity of one category, in seats.
pub const CATEGORY_CAPACITY_MAX: u32 = 10_000_000;

/// Registrations between two full recounts of the counters in release builds. Cheap
/// invariants are checked after every apply; the O(n) recount is amortized over this many.
pub const FULL_CHECK_INTERVAL_APPLIES: u64 = 1 << 18;

/// Messages waiting in one event actor's mailbox; more is `Overloaded`.
pub const MAILBOX_CAPACITY_MAX: usize = 4_096;

/// Decisions one event actor may have waiting for durability; more is `Overloaded`.
pub const PENDING_DECISIONS_MAX: usize = 8_192;

/// How often an event actor looks for holds that are due, in milliseconds. The API promises
/// expiry within one second of its cause; the core also expires due holds on every command.
pub const HOLD_EXPIRY_TICK_MS: u64 = 200;

/// Tickets one event's queue may hand out at most (`queue_max` is at most this).
pub const QUEUE_MAX_LIMIT: u32 = 10_000_000;

/// A queue pass's lifetime, in seconds: its bounds.
pub const PASS_TTL_SECONDS_MIN: u32 = 10;
pub const PASS_TTL_SECONDS_MAX: u32 = 86_400;

/// `overbook` in thousandths: its bounds (1.0 to 10.0).
pub const OVERBOOK_PERMILLE_MIN: u32 = 1_000;
pub const OVERBOOK_PERMILLE_MAX: u32 = 10_000;

/// Idle time paced admission may catch up on, in milliseconds: about one timer tick, so that a
/// tick admits what the rate allowed since the previous one, but an idle queue cannot save up
/// a burst that would exceed `admit_per_second`.
pub const ADMISSION_BURST_MS: u64 = 250;

/// Bounds of the window the admission rate (and so `eta_seconds`) is measured over, in seconds:
/// the event's `pass_ttl_seconds` within them. At least a minute, so that a few admissions do
/// not swing the rate; a pass lifetime, so that the window holds a whole round of lapsed passes
/// coming back (they return in bursts, one pass lifetime apart); at most an hour, because the
/// window keeps a count per second.
pub const ADMISSION_RATE_WINDOW_SECONDS_MIN: u64 = 60;
pub const ADMISSION_RATE_WINDOW_SECONDS_MAX: u64 = 3_600;

/// Bounds of a ticket's `refresh_after_seconds`.
pub const REFRESH_AFTER_SECONDS_MIN: u32 = 2;
pub const REFRESH_AFTER_SECONDS_MAX: u32 = 60;

/// While no admission rate is known, a waiting ticket polls one second later per this many
/// tickets ahead of it (within the bounds above).
pub const REFRESH_TICKETS_AHEAD_PER_SECOND: u64 = 100;

/// Per-event bounds, set by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Registrants one category's waitlist may hold.
    pub waitlist_length_max: u32,
    /// Idempotency entries one event keeps; when full of unexpired entries, a new keyed
    /// registration is refused with `Outcome::IdempotencyFull` (a 503), never evicted early.
    pub idempotency_entries_max: u32,
    /// How long an idempotency entry is kept, in seconds.
    pub idempotency_retention_seconds: u32,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        QuotaLimits {
            waitlist_length_max: 100_000,
            idempotency_entries_max: 2_000_000,
            idempotency_retention_seconds: 24 * 60 * 60,
        }
    }
}
