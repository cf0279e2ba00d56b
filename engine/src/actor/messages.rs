//! Messages an event actor takes. Each carries the sender half of its reply, so that callers
//! can use `try_send` (a full mailbox is refused at once) and still get an answer.

use actix::Message;
use tokio::sync::oneshot;

use crate::clock::Timestamp;
use crate::command::{JoinQueue, Register};
use crate::ids::{CategoryCode, RegistrationId};
use crate::outcome::{ActiveStatus, Outcome};
use crate::ownership::OwnershipError;
use crate::queue::{TicketId, TicketView};
use crate::store::StoreError;

/// Why an event actor could not decide, as opposed to what it decided (`Outcome`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The mailbox, the pending decisions or the writer's queue is full: shed the request.
    #[error("the event is overloaded")]
    Overloaded,
    /// The store failed and the actor is reloading the event from it.
    #[error("the event is recovering from a store failure")]
    Recovering,
    /// The decision was rolled back because the store did not commit it.
    #[error("the store did not commit the decision: {0}")]
    StoreFailed(StoreError),
    /// The store could not load the event.
    #[error("the event could not be loaded: {0}")]
    LoadFailed(StoreError),
    /// The actor stopped before it answered (step-down or shutdown).
    #[error("the event actor stopped")]
    Stopped,
    /// Another node owns the event (`Registry::locate` says which).
    #[error("another node owns the event")]
    OwnedElsewhere,
    /// Whether this node may own the event could not be found out.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
}

/// What an actor answers: the outcome and the time it was decided at (the `now` the command
/// was applied at, which is also the time its effects carry).
pub type Reply = oneshot::Sender<Result<(Outcome, Timestamp), ActorError>>;

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RegisterMessage {
    pub request: Register,
    pub reply: Reply,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConfirmMessage {
    pub registration: RegistrationId,
    pub reply: Reply,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelMessage {
    pub registration: RegistrationId,
    pub reply: Reply,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetCapacityMessage {
    pub category: CategoryCode,
    pub capacity: u32,
    pub reply: Reply,
}

/// What an actor answers about one registration: its status and waitlist position (from 1),
/// or `None` when it is not active.
pub type StatusReply = oneshot::Sender<Option<(ActiveStatus, Option<u32>)>>;

/// A read of one registration's current status; answered at once, without the writer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StatusMessage {
    pub registration: RegistrationId,
    pub reply: StatusReply,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JoinQueueMessage {
    pub request: JoinQueue,
    pub reply: Reply,
}

/// A read of one queue ticket as it stands now; answered at once, without the writer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TicketMessage {
    pub ticket: TicketId,
    pub reply: oneshot::Sender<Option<TicketView>>,
}

/// A read of the drawn lobby order (`None` before the draw).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DrawMessage {
    pub reply: oneshot::Sender<Option<Vec<TicketId>>>,
}

/// Stops the actor (the registry's shutdown, when actors share an arbiter that lives on). Not
/// counted in the mailbox depth: the registry sends it, not a caller.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopMessage;
