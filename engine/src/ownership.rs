//! Who may run an event's actor: the `Ownership` trait the registry asks before it starts one,
//! and the `Tenure` an actor runs under.
//!
//! A node may only run the actor of an event it owns. In the embedded single-node default the
//! node owns everything (`SoleOwner`); in a cluster ownership is a lease per event (implemented
//! in `kuota-persist`), and a `Claim` either grants it or names the node that has it, so that a
//! request can be forwarded there.

use std::fmt;
use std::sync::Arc;

use crate::ids::EventId;
use crate::store::BoxFuture;

/// The node that owns an event, as it advertises itself to the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    /// Where the other nodes reach it, e.g. `http://10.0.0.7:8080`.
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// The service that records owners (Redis) did not answer or refused.
    #[error("the ownership service is unavailable: {0}")]
    Unavailable(String),
}

/// What asking for an event's ownership gave.
#[derive(Debug)]
pub enum Claim {
    /// This node owns the event for as long as the tenure holds.
    Owned(Tenure),
    /// Another node does. (An earlier run of this node, under the same node id, is taken over
    /// by the claim instead: its writes are fenced by the epoch the load takes.)
    Elsewhere(Owner),
}

/// Decides which node runs which event. Object-safe, so the registry holds an
/// `Arc<dyn Ownership>`.
pub trait Ownership: Send + Sync + fmt::Debug + 'static {
    /// Takes ownership of `event` for this node, keeps it while it is held, or names its owner.
    /// Claiming an event this node already holds returns its current tenure again.
    fn claim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>>;

    /// Gives up `event` (the store has no such event, so nothing should be owned).
    fn disclaim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, ()>;
}

/// A held ownership, as the actor sees it: a check it makes before every decision, and a future
/// that resolves when ownership is lost (then the actor steps down).
pub struct Tenure {
    held: Arc<dyn Fn() -> bool + Send + Sync>,
    lost: Option<BoxFuture<'static, ()>>,
}

impl Tenure {
    /// `held` answers whether ownership still holds now (it must read the clock, not merely
    /// remember the latest renewal); `lost` resolves once it does not.
    pub fn new(held: Arc<dyn Fn() -> bool + Send + Sync>, lost: BoxFuture<'static, ()>) -> Tenure {
        Tenure { held, lost: Some(lost) }
    }

    /// A tenure that never ends: the node owns everything.
    pub fn permanent() -> Tenure {
        Tenure::new(Arc::new(|| true), Box::pin(std::future::pending()))
    }

    pub fn is_held(&self) -> bool {
        (self.held)()
    }

    /// The future that resolves when ownership is lost; `None` once taken.
    pub fn take_lost(&mut self) -> Option<BoxFuture<'static, ()>> {
        self.lost.take()
    }
}

impl fmt::Debug for Tenure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Tenure").field("held", &self.is_held()).finish_non_exhaustive()
    }
}

/// The embedded single-node default: this node owns every event, for ever.
#[derive(Debug, Default)]
pub struct SoleOwner;

impl Ownership for SoleOwner {
    fn claim<'a>(&'a self, _event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>> {
        Box::pin(std::future::ready(Ok(Claim::Owned(Tenure::permanent()))))
    }

    fn disclaim<'a>(&'a self, _event: &'a EventId) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}
