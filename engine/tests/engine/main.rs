//! The engine's integration tests, in one binary so that it links once.

mod actor;
mod ownership;
mod queue_rules;
mod queue_state_machine;
mod quota_rules;
mod state_machine;
mod support;
