//! Rows as the store hands them out: registrations, audit entries, outbox entries.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use kuota_engine::{ActiveStatus, CategoryCode, EventId, RegistrationId, Seq, Timestamp};

use crate::store::plan::registration_payload_json;

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
    pub kind: OutboxText,
    pub payload_json: PayloadJson,
    /// `pending` until a worker delivers it.
    pub status: OutboxText,
    pub attempts: u32,
    pub available_at: Timestamp,
    pub created_at: Timestamp,
}

/// A word of an outbox entry (its kind or status): read from its row, or one of Kuota's own
/// for a creation (`CREATED_KIND`, pending), which has no row and needs no copy of them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OutboxText(Cow<'static, str>);

impl OutboxText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for OutboxText {
    fn from(text: &'static str) -> OutboxText {
        OutboxText(Cow::Borrowed(text))
    }
}

impl From<String> for OutboxText {
    fn from(text: String) -> OutboxText {
        OutboxText(Cow::Owned(text))
    }
}

/// An outbox entry's payload, JSON text (a `str` to read). A creation's (`SqlStore::claim_creations`,
/// from what the write-behind handed over) is written when it is first read: most deliveries
/// never read it (the webhooks' fan-out reads it only for an entry that some endpoint wants,
/// `LogDelivery` only when its log line is on), and writing it was about a third of the
/// delivery worker's instructions per creation (callgrind). Either way its text is
/// `registration_payload_json`'s.
#[derive(Clone)]
pub struct PayloadJson(Payload);

#[derive(Clone)]
enum Payload {
    /// Read from its row, or given.
    Stored(String),
    /// A creation's: `text` is written from the rest when first read.
    Registration { event: EventId, number: i64, status: &'static str, text: OnceLock<String> },
}

impl PayloadJson {
    /// The payload of an entry about registration `number` of `event` with `status`, written
    /// when first read.
    pub(crate) fn registration(event: &EventId, number: i64, status: &'static str) -> PayloadJson {
        PayloadJson(Payload::Registration { event: event.clone(), number, status, text: OnceLock::new() })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Payload::Stored(text) => text,
            Payload::Registration { event, number, status, text } => {
                text.get_or_init(|| registration_payload_json(event, *number, status))
            }
        }
    }
}

impl From<String> for PayloadJson {
    fn from(text: String) -> PayloadJson {
        PayloadJson(Payload::Stored(text))
    }
}

impl From<&str> for PayloadJson {
    fn from(text: &str) -> PayloadJson {
        PayloadJson::from(text.to_owned())
    }
}

/// Payloads are equal when their texts are, written or not yet.
impl PartialEq for PayloadJson {
    fn eq(&self, other: &PayloadJson) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PayloadJson {}

/// `OutboxText` and `PayloadJson` read as the `str` they hold: dereferenced, compared with a
/// `str`, and shown as it.
macro_rules! reads_as_str {
    ($($name:ident),+) => {$(
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), formatter)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    )+};
}

reads_as_str!(OutboxText, PayloadJson);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_s_payload_is_written_only_when_read_and_then_as_a_stored_one_reads() {
        let event = EventId::parse("race").expect("a valid id");
        let lazy = PayloadJson::registration(&event, 7, "held");
        let stored = PayloadJson::from(r#"{"event_id":"race","registration":7,"status":"held"}"#);
        let written = |payload: &PayloadJson| match &payload.0 {
            Payload::Registration { text, .. } => text.get().is_some(),
            Payload::Stored(_) => panic!("a creation's payload is written from its parts"),
        };
        assert!(!written(&lazy), "written before it was read");
        assert_eq!(lazy.as_str(), stored.as_str());
        assert!(written(&lazy));
        let unread = PayloadJson::registration(&event, 7, "held");
        assert_eq!(unread, stored);
        assert_eq!(
            format!("{:?} {}", PayloadJson::registration(&event, 7, "held"), unread),
            format!("{stored:?} {stored}")
        );
    }
}
