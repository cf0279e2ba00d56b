//! The engine's integration tests, in one binary so that it links once.

mod actor;
mod quota_rules;
mod state_machine;
mod support;
