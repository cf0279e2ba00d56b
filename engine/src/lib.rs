//! Kuota's engine: one event's quota as a pure state machine, and the actor shell that runs it.
//!
//! An event's seats are counted by exactly one `EventActor`, which owns an `EventQuota` and
//! decides every admission alone, without locks or database round trips. Decisions leave as
//! `Effect`s for the write-behind writer; callers are answered once those are durable.
//!
//! # Layout
//! - `quota`: `EventQuota`, the state machine (`apply(command, now) -> (outcome, effects)`), and
//!   `QuotaBuilder`, which rebuilds one from stored rows.
//! - `command`: what can be asked of an event.
//! - `outcome`: what was decided (`Outcome`, `Decision`), including the expected failures.
//! - `effect`: what the store must record, with per-event sequence numbers.
//! - `event`: an event's configuration and its validation.
//! - `queue`: a queued event's tickets, the draw, admission and passes (`Queue`, `DrawSeed`).
//! - `ids`: identifiers and parsed domain types (`EventId`, `Email`, `IdempotencyKey`, ...).
//! - `limits`: every bound, named once.
//! - `clock`: `Timestamp` and the `Clock` the shell reads (the core never does).
//! - `counters`: figures an actor publishes for lock-free reads (sold-out fast path).
//! - `store`: the loader trait and the bounded submission channel to a writer, with its contract.
//! - `memory`: an in-memory store (loader and writer) that can be told to fail or stall.
//! - `ownership`: which node may run an event's actor (`Ownership`, `Claim`, `Tenure`).
//! - `actor`: the event actor, its messages, and the registry that starts actors on arbiters.

pub mod actor;
pub mod clock;
pub mod command;
pub mod counters;
pub mod effect;
pub mod event;
pub mod ids;
pub mod limits;
pub mod memory;
pub mod outcome;
pub mod ownership;
pub mod queue;
pub mod quota;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use command::{
    AccessTokenHash, Command, FullName, Idempotency, InlineText, JoinQueue, Register, RegistrationDetails,
};
pub use effect::{Effect, EffectKind};
pub use event::{CategoryConfig, CategoryIndex, EventConfig, EventConfigError};
pub use ids::{
    CategoryCode, CheckedEmail, Email, EventId, Fingerprint, IdempotencyKey, InvalidId, RegistrationId, Seq,
};
pub use limits::QuotaLimits;
pub use outcome::{ActiveStatus, CategoryAvailability, Decision, EndedStatus, Outcome};
pub use queue::{
    DrawSeed, PassTimes, QueueConfig, QueueConfigError, QueuePass, StoredTicketState, TicketId, TicketRecord,
    TicketStatus, TicketView,
};
pub use quota::{
    EventQuota, IdempotencyRecord, QueueSummary, QuotaBuilder, RegistrationRecord, RestoreError,
};
