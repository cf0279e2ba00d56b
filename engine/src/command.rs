//! What can be asked of one event's `EventQuota`.

use std::sync::Arc;

use crate::ids::{CategoryCode, Email, Fingerprint, IdempotencyKey, RegistrationId};
use crate::queue::QueuePass;

/// The part of a registration the core carries to the store but never reads: the registrant's
/// details and the hash of their access token. Shared, so an effect can hold it without a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationDetails {
    pub full_name: String,
    pub phone: Option<String>,
    /// The `attributes` object as JSON text, already checked by the API.
    pub attributes_json: Option<String>,
    /// A hash of the registrant's access token; the token itself is never stored.
    pub access_token_hash: String,
}

/// An `Idempotency-Key` with the fingerprint of the body it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub category: CategoryCode,
    pub registrant: Email,
    pub idempotency: Option<Idempotency>,
    /// Join the category's waitlist when it is sold out.
    pub waitlist: bool,
    pub details: Arc<RegistrationDetails>,
    /// The `Queue-Pass` presented, required by a queued event.
    pub queue_pass: Option<QueuePass>,
}

/// A registrant asks for a ticket in a queued event's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinQueue {
    pub registrant: Email,
    pub idempotency: Option<Idempotency>,
}

/// One command for one event. Applying it is `EventQuota::apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Register(Register),
    /// Payment arrived: a held registration becomes confirmed.
    Confirm {
        registration: RegistrationId,
    },
    /// The registrant or an organizer cancels; the seat goes to the waitlist first.
    Cancel {
        registration: RegistrationId,
    },
    /// Let every hold that is due at `now` expire. Every command does this first anyway; this
    /// one exists so that a timer can do it when no other command comes.
    ExpireHolds,
    /// An organizer changes a category's number of seats.
    SetCapacity {
        category: CategoryCode,
        capacity: u32,
    },
    /// A registrant joins the event's queue.
    JoinQueue(JoinQueue),
}
