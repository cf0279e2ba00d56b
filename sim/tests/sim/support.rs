//! Helpers shared by the tests: a small scenario that still exercises shedding, retries,
//! holds, payments, cancels and the waitlist, and a way to run the real binary on it.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A small, busy scenario: 400 registrants for 100 seats, most within one second, on nodes
/// with one HTTP worker and short queues, so that every path of the model is taken while the
/// test stays fast in a debug build.
pub const SMALL_SCENARIO: &str = r#"
name = "small"
seed = 99

[event]
hold_ttl_seconds = 20
waitlist_length_max = 50

[[event.categories]]
code = "10K"
capacity = 60

[[event.categories]]
code = "21K"
capacity = 40

[arrivals]
registrants = 400
spike_share = 0.8
spike_seconds = 1
shape = "ramp_down"
tail_seconds = 20

[behaviour]
retry_on_overload = true
retry_jitter_ms = 300
attempts_max = 4
impatient_share = 0.3
patience_ms = 300
waitlist_share = 0.5
pay_share = 0.6
pay_delay = { distribution = "uniform", min_ms = 2000, max_ms = 30000 }
cancel_share = 0.1
cancel_delay = { distribution = "exponential", mean_ms = 10000 }

[system]
nodes = 2
http_workers_per_node = 1
http_queue_max = 8
http_service = { distribution = "lognormal", median_ms = 4, p99_ms = 12 }
actor_service = { distribution = "constant", value_ms = 3 }
mailbox_capacity_max = 4
pending_decisions_max = 64
write_queue_max = 6
flush_interval_ms = 2
batch_size_max = 4
database_connections = 1
commit_latency = { distribution = "lognormal", median_ms = 10, p99_ms = 40 }
commit_per_effect_ms = 0.1
network_round_trip = { distribution = "lognormal", median_ms = 30, p99_ms = 120 }
forward_round_trip_ms = 1
counters_lag_ms = 100
retry_after_seconds = 1
rate_limit_email_per_minute = 3
"#;

/// Writes `text` to a file named after the test in cargo's temporary folder for tests.
pub fn scenario_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("the test temporary folder is writable");
    path
}

/// Runs the `kuota-sim` binary with `arguments`.
pub fn kuota_sim(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kuota-sim"))
        .args(arguments)
        .output()
        .expect("cargo built the kuota-sim binary for the tests")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A small race for the fault and swarm tests: 1,500 seats, 2,000 registrants within 4 s, two
/// nodes, leases of a second (so that an owner's lease runs out within a short fault), quick
/// commits. Small enough for dozens of seeds in a debug build.
pub const FAULT_SCENARIO: &str = r#"
name = "fault-race"
seed = 7

[event]
hold_ttl_seconds = 0
waitlist_length_max = 100

[[event.categories]]
code = "10K"
capacity = 1500

[arrivals]
registrants = 2000
spike_share = 0.9
spike_seconds = 4
shape = "poisson"
tail_seconds = 4

[behaviour]
retry_on_overload = true
retry_jitter_ms = 300
attempts_max = 8
impatient_share = 0.2
patience_ms = 1500
waitlist_share = 0.3
pay_share = 0.0

[system]
nodes = 2
http_workers_per_node = 2
http_queue_max = 256
http_service = { distribution = "lognormal", median_ms = 0.5, p99_ms = 2 }
actor_service = { distribution = "constant", value_ms = 0.02 }
write_queue_max = 1024
flush_interval_ms = 0
batch_size_max = 100
database_connections = 2
commit_latency = { distribution = "lognormal", median_ms = 2, p99_ms = 8 }
network_round_trip = { distribution = "lognormal", median_ms = 20, p99_ms = 80 }
forward_round_trip_ms = 0.5
counters_lag_ms = 100
lease_ttl_ms = 1000
"#;

/// `FAULT_SCENARIO` with `faults` (TOML `[[faults]]` tables) appended.
pub fn fault_scenario_with(faults: &str) -> String {
    format!("{FAULT_SCENARIO}\n{faults}")
}
