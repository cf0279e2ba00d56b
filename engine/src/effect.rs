//! What the store must record about a decision. Effects leave the actor for the write-behind,
//! which commits them in `seq` order; a caller is answered only once its effects are durable.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::command::{Idempotency, RegistrationDetails};
use crate::event::CategoryIndex;
use crate::ids::{CategoryCode, Email, RegistrationId, Seq};
use crate::outcome::{ActiveStatus, Decision};
use crate::queue::TicketId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub seq: Seq,
    /// When the decision was taken (the `now` it was applied at).
    pub at: Timestamp,
    pub kind: EffectKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectKind {
    /// A new registration, held, confirmed or waitlisted (with its position at creation).
    Created {
        registration: RegistrationId,
        category: CategoryIndex,
        category_code: CategoryCode,
        registrant: Email,
        status: ActiveStatus,
        waitlist_position: Option<u32>,
        idempotency: Option<Idempotency>,
        details: Arc<RegistrationDetails>,
    },
    /// Held → confirmed.
    Confirmed {
        registration: RegistrationId,
    },
    Cancelled {
        registration: RegistrationId,
    },
    Expired {
        registration: RegistrationId,
    },
    /// Waitlisted → held or confirmed, because a seat came back.
    Promoted {
        registration: RegistrationId,
        status: ActiveStatus,
    },
    /// A keyed request was decided without creating a registration (sold out, already
    /// registered, not open, closed): the decision is stored so that a retry replays it.
    DecisionRecorded {
        idempotency: Idempotency,
        decision: Decision,
    },
    CapacityChanged {
        category: CategoryIndex,
        category_code: CategoryCode,
        capacity: u32,
    },
    /// A new queue ticket; `lobby` when it joined before `opens_at` (the draw places it).
    /// A keyed join's answer follows as `DecisionRecorded`.
    QueueJoined {
        ticket: TicketId,
        registrant: Email,
        lobby: bool,
    },
    /// The ticket's turn came: its pass is good until `pass_expires_at`.
    QueueAdmitted {
        ticket: TicketId,
        pass_expires_at: Timestamp,
    },
    /// The pass lapsed unused; the ticket is done.
    QueuePassExpired {
        ticket: TicketId,
    },
    /// The ticket's pass (or waitlist pass) made this registration; the ticket is done.
    QueuePassUsed {
        ticket: TicketId,
        registration: RegistrationId,
    },
}

impl EffectKind {
    /// The decision a `Created` effect stands for, as it is stored with its idempotency key.
    pub fn decision(&self) -> Option<Decision> {
        let EffectKind::Created { registration, status, waitlist_position, .. } = self else {
            return None;
        };
        let registration = *registration;
        Some(match *status {
            ActiveStatus::Confirmed => Decision::Confirmed { registration },
            ActiveStatus::Held { expires_at } => Decision::Held { registration, expires_at },
            ActiveStatus::Waitlisted => {
                Decision::Waitlisted { registration, position: waitlist_position.unwrap_or_default() }
            }
        })
    }
}
