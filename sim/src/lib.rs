//! `kuota-sim`: capacity planning for Kuota on the real engine.
//!
//! `plan` sizes a deployment from a handful of figures, printing each formula. `run` plays a
//! scenario (an event, a crowd and a system) as a discrete-event simulation in virtual time,
//! with every admission decided by the real `kuota_engine::EventQuota`; it is seeded, prints
//! `seed=<n>` first, and the same seed and scenario give a byte-identical report. `load` drives
//! registrations against a running Kuota over HTTP (loopback only, unless `--allow-remote`),
//! measures it and checks its answers from the client's side. A scenario's faults (the store,
//! Redis or the owner node failing) play out on Kuota's own mechanisms, and `swarm` runs many
//! seeds with random faults hunting for an invariant violation.
//!
//! # Layout
//! - `cli`: the command line (`plan`, `run`, `swarm`, `load`), exit codes, and writing report files.
//! - `plan`: back-of-the-envelope sizing, every figure with its formula.
//! - `scenario`: scenario files: parsing, validation naming the field, the engine's config.
//! - `distribution`: durations as scenarios give them (constant, uniform, exponential, lognormal).
//! - `random`: the seeded generator (SplitMix64 and xoshiro256**) and its independent streams.
//! - `arrivals`: first-arrival times: the spike at opening and the tail after it.
//! - `model`: the discrete-event simulation around `EventQuota` (nodes, actor, write-behind).
//! - `metrics`: answers by class, latency histograms, per-second series.
//! - `invariants`: the store view rebuilt from committed effects, and the invariant checks.
//! - `load`: the live load driver: target rule, HTTP client, client-side checks, its report.
//! - `recommend`: the `--target-p99-ms` search over node counts and batch settings.
//! - `report`: the Markdown report that `run` prints and `--report` writes.
//! - `charts`: the SVG charts next to a written report.
//! - `html`: the self-contained HTML report beside the Markdown one.
//! - `progress`: the progress bar on stderr for long runs.
//! - `swarm`: many seeds with random fault schedules in parallel, hunting invariant violations.
//! - `queue_report`: the report of a queued scenario, with its overbook × pass TTL sweep.
//! - `queue_swarm`: the swarm over a queued scenario: drawn queue settings and owner restarts.

pub mod arrivals;
pub mod charts;
pub mod cli;
pub mod distribution;
pub mod html;
pub mod invariants;
pub mod load;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod progress;
pub mod queue_report;
pub mod queue_swarm;
pub mod random;
pub mod recommend;
pub mod report;
pub mod scenario;
pub mod swarm;
