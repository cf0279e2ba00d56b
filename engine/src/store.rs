//! How the engine meets its store without knowing it: a loader that rebuilds an event (and
//! takes ownership of it), and a bounded channel of effect submissions that a writer drains.
//!
//! # The writer's contract
//! - A submission is answered on its `done` channel once its effects are committed (`Ok`), or
//!   once they certainly will not be (`Err`). Only then does the actor answer its callers.
//! - Submissions of one event are committed in the order they were sent.
//! - After a submission of an event fails, every later submission of that event with the same
//!   `epoch` fails too: the actor rolls back by reloading the event, which takes a new epoch,
//!   and nothing decided on top of the failed effects may reach the store.
//! - Applying the same effects twice changes nothing (effects carry a per-event `seq`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::effect::Effect;
use crate::ids::EventId;
use crate::quota::{EventQuota, RestoreError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer or refused; retrying later may work.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Another owner took the event (its epoch moved on): this node must step down.
    #[error("ownership of the event was lost to a newer epoch")]
    Fenced,
    /// An earlier submission of the same event and epoch failed.
    #[error("an earlier write of this event failed")]
    EarlierWriteFailed,
    /// The stored rows break a rule of the core.
    #[error("stored state is inconsistent: {0}")]
    Corrupt(#[from] RestoreError),
}

/// An event rebuilt from the store, owned under `epoch`.
#[derive(Debug)]
pub struct LoadedEvent {
    pub quota: EventQuota,
    pub epoch: u64,
}

/// Rebuilds events from the store. Loading takes ownership: it increments the event's epoch,
/// so that writes of any earlier owner are fenced from then on.
pub trait EventLoader: Send + Sync + fmt::Debug + 'static {
    /// `Ok(None)` when the store has no such event.
    fn load<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Option<LoadedEvent>, StoreError>>;
}

/// Effects of one decision (or a few) of one event, on their way to the store.
#[derive(Debug)]
pub struct Submission {
    pub event: EventId,
    pub epoch: u64,
    pub effects: Vec<Effect>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side that actors hold; bounded, and only ever used with `try_reserve`.
pub type SubmissionSender = mpsc::Sender<Submission>;
/// The receiving side that a writer drains.
pub type SubmissionReceiver = mpsc::Receiver<Submission>;

/// The channel between actors and the writer; `capacity` is the writer's queue bound
/// (`write_queue_capacity_max`), in submissions.
pub fn submission_channel(capacity: usize) -> (SubmissionSender, SubmissionReceiver) {
    mpsc::channel(capacity)
}
