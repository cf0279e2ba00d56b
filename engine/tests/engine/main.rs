//! The engine's integration tests, in one binary so that it links once.

mod actor;
mod ownership;
mod quota_rules;
mod state_machine;
mod support;
