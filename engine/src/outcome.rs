//! What applying a command decided. Expected failures (sold out, already registered, not open)
//! are outcomes, not errors: they are the everyday answers of a sold-out race.

use crate::clock::Timestamp;
use crate::ids::{CategoryCode, RegistrationId};
use crate::queue::TicketView;

/// What the event decided about a registration request: the answers that are stored with the
/// request's `Idempotency-Key` and replayed as they were.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Confirmed {
        registration: RegistrationId,
    },
    Held {
        registration: RegistrationId,
        expires_at: Timestamp,
    },
    Waitlisted {
        registration: RegistrationId,
        position: u32,
    },
    SoldOut,
    AlreadyRegistered,
    NotOpen {
        opens_at: Timestamp,
    },
    Closed,
    /// A queue join: a new ticket (`new`) or the registrant's existing one, as it read then.
    QueueJoined {
        new: bool,
        view: TicketView,
    },
}

impl Decision {
    /// The registration the decision created, if it created one.
    pub fn registration(&self) -> Option<RegistrationId> {
        match self {
            Decision::Confirmed { registration }
            | Decision::Held { registration, .. }
            | Decision::Waitlisted { registration, .. } => Some(*registration),
            _ => None,
        }
    }
}

/// Where an active registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveStatus {
    Held { expires_at: Timestamp },
    Confirmed,
    Waitlisted,
}

/// How a registration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedStatus {
    Cancelled,
    Expired,
}

/// Live figures of one category.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CategoryAvailability {
    pub code: CategoryCode,
    pub capacity: u32,
    pub confirmed: u32,
    pub held: u32,
    pub available: u32,
    pub waitlisted: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A registration request was decided now.
    Decided(Decision),
    /// The same key and body were decided before: here is that decision again.
    Replayed(Decision),
    /// The same key was decided, but that decision is not durable yet: retry shortly.
    KeyInFlight,
    /// The same key came with a different body.
    KeyReused,
    /// The event keeps as many idempotency entries as it may; retry later.
    IdempotencyFull,
    UnknownCategory,
    UnknownRegistration,
    /// The registration is confirmed (now, or it already was).
    RegistrationConfirmed {
        registration: RegistrationId,
        already: bool,
    },
    /// Only a held registration can be confirmed; this one is waitlisted.
    NotHeld {
        registration: RegistrationId,
    },
    /// The hold lapsed before the confirmation came.
    HoldExpired {
        registration: RegistrationId,
    },
    /// The registration is cancelled (now, or it already was).
    RegistrationCancelled {
        registration: RegistrationId,
        already: bool,
    },
    /// The registration had already ended otherwise (a cancel after an expiry).
    AlreadyEnded {
        registration: RegistrationId,
        status: EndedStatus,
    },
    CapacityChanged {
        category: CategoryCode,
        capacity: u32,
        promoted: u32,
    },
    /// A capacity below the seats already taken (confirmed + held) is refused.
    CapacityBelowTaken {
        category: CategoryCode,
        taken: u32,
    },
    HoldsExpired {
        count: u32,
    },
    /// A queue command for an event without a queue.
    NoQueue,
    /// The queue holds `queue_max` tickets; not stored with the key, so a retry is decided afresh.
    QueueFull,
    /// A queued event's registration came without a pass; not stored with the key.
    QueuePassRequired,
    /// The pass is unknown, expired, used, another registrant's, or a waitlist pass used for a
    /// seat; not stored with the key.
    QueuePassInvalid,
}
