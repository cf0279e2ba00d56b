//! The actix shell around `EventQuota`: one actor per event, the registry that finds or starts
//! it, and the messages it takes.

pub mod event_actor;
pub mod messages;
pub mod registry;

pub use event_actor::EventActor;
pub use messages::ActorError;
pub use registry::{EventHandle, Located, Registry, RegistryConfig};
