//! Rows as the store hands them out: registrations, audit entries, outbox entries.

use std::fmt;
use std::str::FromStr;

use kuota_engine::{ActiveStatus, CategoryCode, EventId, RegistrationId, Seq, Timestamp};

/// A registration's status as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowStatus {
    Held,
    Confirmed,
    Waitlisted,
    Cancelled,
    Expired,
}

impl RowStatus {
    pub const ALL: [RowStatus; 5] = [
        RowStatus::Held,
        RowStatus::Confirmed,
        RowStatus::Waitlisted,
        RowStatus::Cancelled,
        RowStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Held => "held",
            RowStatus::Confirmed => "confirmed",
            RowStatus::Waitlisted => "waitlisted",
            RowStatus::Cancelled => "cancelled",
            RowStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<RowStatus> {
        RowStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Held, confirmed and waitlisted registrations are active: they count against the
    /// registrant's one active registration per event.
    pub fn is_active(self) -> bool {
        matches!(self, RowStatus::Held | RowStatus::Confirmed | RowStatus::Waitlisted)
    }

    pub(crate) fn of_active(status: ActiveStatus) -> RowStatus {
        match status {
            ActiveStatus::Held { .. } => RowStatus::Held,
            ActiveStatus::Confirmed => RowStatus::Confirmed,
            ActiveStatus::Waitlisted => RowStatus::Waitlisted,
        }
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A text that names no registration status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a registration status")]
pub struct UnknownStatus(pub String);

impl FromStr for RowStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, UnknownStatus> {
        RowStatus::parse(text).ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

/// One stored registration, ended ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRow {
    pub id: RegistrationId,
    pub event: EventId,
    pub category: CategoryCode,
    /// The normalized e-mail address.
    pub email: String,
    pub full_name: String,
    pub phone: Option<String>,
    pub attributes_json: Option<String>,
    pub status: RowStatus,
    pub hold_expires_at: Option<Timestamp>,
    /// The position the registration got when it joined the waitlist; `None` once it left it.
    /// The live position is the event actor's to tell.
    pub waitlist_position: Option<u32>,
    pub access_token_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One entry of an event's audit trail: one effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// The entry's id within its event, the keyset cursor of `audit_page`: the seq of the
    /// effect (so `id == seq.0`).
    pub id: u64,
    pub registration: Option<RegistrationId>,
    pub seq: Seq,
    /// `created`, `confirmed`, `cancelled`, `expired`, `promoted`, `decision_recorded`,
    /// `capacity_changed`, `queue_joined`, `queue_admitted`, `queue_pass_expired` or
    /// `queue_pass_used`.
    pub kind: String,
    pub detail_json: String,
    pub at: Timestamp,
}

/// One piece of post-registration work for the delivery worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: u64,
    pub event: EventId,
    pub registration: RegistrationId,
    /// `registration_created`, `registration_confirmed`, `registration_cancelled`,
    /// `registration_expired`, `registration_promoted`, or `event_sold_out` (event-wide:
    /// `registration` is 0).
    pub kind: String,
    pub payload_json: String,
    /// `pending` until a worker delivers it.
    pub status: String,
    pub attempts: u32,
    pub available_at: Timestamp,
    pub created_at: Timestamp,
}

/// Where an event's ownership and writes stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventProgress {
    pub epoch: u64,
    pub last_seq: Seq,
}

/// How many registrations of one category have one status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCount {
    pub category: CategoryCode,
    pub status: RowStatus,
    pub count: u64,
}
