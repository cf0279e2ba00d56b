//! `kuota-sim`'s integration tests, in one binary so that it links once. Each module is one
//! concern; `support` has the small scenario they share and the helpers that run the binary;
//! `fake_server` mimics the HTTP API for the `load` tests.

mod broken_model;
mod cli;
mod fake_server;
mod faults;
mod load;
mod outcomes;
mod plan;
mod queue;
mod queue_load;
mod reproducibility;
mod scenario_errors;
mod support;
mod swarm;
