//! `kuota-sim plan`: sizing on the back of an envelope, every figure printed with its formula.
//!
//! Peak requests/s come from how many users are active at the peak and how often each acts;
//! Little's law turns a rate and a latency into requests in flight (and a transaction rate and
//! a commit latency into busy connections). Nodes and connections are sized so that each runs
//! at most at `1 - headroom` of what it can do.

use std::fmt::Write;

/// Why the inputs cannot be used; names the flag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct PlanError {
    pub flag: &'static str,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanInputs {
    pub active_users: f64,
    /// Share of the active users who are active in the peak minute.
    pub peak_share: f64,
    pub actions_per_minute: f64,
    /// The latency the service should answer within, in milliseconds.
    pub latency_ms: f64,
    /// Registrations one node handles per second, from a measured benchmark.
    pub node_rate: f64,
    /// Registrations per database transaction.
    pub batch_size: f64,
    /// Share of capacity kept spare.
    pub headroom: f64,
    /// Share of requests that are registration writes.
    pub write_share: f64,
    /// Time one database transaction holds its connection, in milliseconds.
    pub commit_latency_ms: f64,
    /// The commit latency is `COMMIT_LATENCY_ASSUMED_MS`, not a figure the user gave.
    pub commit_latency_assumed: bool,
}

/// The commit latency used when none is given, in milliseconds: a placeholder, said so in the
/// output, until the write-behind is measured.
pub const COMMIT_LATENCY_ASSUMED_MS: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub users_at_peak: f64,
    pub requests_per_second: f64,
    pub concurrency: f64,
    pub nodes_at_full_load: u64,
    pub nodes: u64,
    pub registrations_per_second: f64,
    pub transactions_per_second: f64,
    pub connections_busy: f64,
    pub connections: u64,
}

fn positive(flag: &'static str, value: f64) -> Result<(), PlanError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(PlanError { flag, reason: format!("must be a number > 0 (got {value})") })
    }
}

fn share(flag: &'static str, value: f64, upper_open: bool) -> Result<(), PlanError> {
    let fits = if upper_open { (0.0..1.0).contains(&value) } else { value > 0.0 && value <= 1.0 };
    let range = if upper_open { "0 <= x < 1" } else { "0 < x <= 1" };
    if fits {
        Ok(())
    } else {
        Err(PlanError { flag, reason: format!("must be a share with {range} (got {value})") })
    }
}

impl PlanInputs {
    pub fn validate(&self) -> Result<(), PlanError> {
        positive("active-users", self.active_users)?;
        share("peak-share", self.peak_share, false)?;
        positive("actions-per-minute", self.actions_per_minute)?;
        positive("latency-ms", self.latency_ms)?;
        positive("node-rate", self.node_rate)?;
        positive("batch-size", self.batch_size)?;
        share("headroom", self.headroom, true)?;
        share("write-share", self.write_share, false)?;
        positive("commit-latency-ms", self.commit_latency_ms)
    }
}

/// Computes the plan; `ceil` figures are whole machines and connections, at least one.
pub fn compute(inputs: &PlanInputs) -> Result<Plan, PlanError> {
    inputs.validate()?;
    let users_at_peak = inputs.active_users * inputs.peak_share;
    let requests_per_second = users_at_peak * inputs.actions_per_minute / 60.0;
    let concurrency = requests_per_second * inputs.latency_ms / 1_000.0;
    let usable = 1.0 - inputs.headroom;
    let nodes_at_full_load = whole(requests_per_second / inputs.node_rate);
    let nodes = whole(requests_per_second / (inputs.node_rate * usable));
    let registrations_per_second = requests_per_second * inputs.write_share;
    let transactions_per_second = registrations_per_second / inputs.batch_size;
    let connections_busy = transactions_per_second * inputs.commit_latency_ms / 1_000.0;
    let connections = whole(connections_busy / usable);
    Ok(Plan {
        users_at_peak,
        requests_per_second,
        concurrency,
        nodes_at_full_load,
        nodes,
        registrations_per_second,
        transactions_per_second,
        connections_busy,
        connections,
    })
}

/// Rounds up to a whole count, at least one. A tiny epsilon keeps float noise such as
/// 4.000000000001 from costing a whole extra machine.
fn whole(value: f64) -> u64 {
    ((value - 1e-9).ceil() as u64).max(1)
}

/// A number as people write it: no trailing zeros, at most three decimals.
pub fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

/// One printed figure: its name, its formula, the formula with the values, and the result.
struct Figure {
    name: &'static str,
    formula: &'static str,
    values: String,
    result: String,
}

fn figure(name: &'static str, formula: &'static str, values: String, result: String) -> Figure {
    Figure { name, formula, values, result }
}

/// Users, requests, concurrency and nodes.
fn traffic_figures(inputs: &PlanInputs, plan: &Plan) -> Vec<Figure> {
    let n = number;
    let usable = 1.0 - inputs.headroom;
    vec![
        figure(
            "users at peak",
            "active users × peak share",
            format!("{} × {}", n(inputs.active_users), n(inputs.peak_share)),
            n(plan.users_at_peak),
        ),
        figure(
            "peak requests/s",
            "users at peak × actions per minute / 60",
            format!("{} × {} / 60", n(plan.users_at_peak), n(inputs.actions_per_minute)),
            n(plan.requests_per_second),
        ),
        figure(
            "concurrency",
            "requests/s × latency (Little's law)",
            format!("{} × {} s", n(plan.requests_per_second), n(inputs.latency_ms / 1_000.0)),
            format!("{} requests in flight", n(plan.concurrency)),
        ),
        figure(
            "nodes at full load",
            "ceil(requests/s / node rate)",
            format!("ceil({} / {})", n(plan.requests_per_second), n(inputs.node_rate)),
            plan.nodes_at_full_load.to_string(),
        ),
        figure(
            "nodes (with headroom)",
            "ceil(requests/s / (node rate × (1 - headroom)))",
            format!("ceil({} / ({} × {}))", n(plan.requests_per_second), n(inputs.node_rate), n(usable)),
            plan.nodes.to_string(),
        ),
    ]
}

/// Registrations, transactions and connections.
fn database_figures(inputs: &PlanInputs, plan: &Plan) -> Vec<Figure> {
    let n = number;
    let usable = 1.0 - inputs.headroom;
    vec![
        figure(
            "registrations/s",
            "requests/s × write share",
            format!("{} × {}", n(plan.requests_per_second), n(inputs.write_share)),
            n(plan.registrations_per_second),
        ),
        figure(
            "db transactions/s",
            "registrations/s / batch size",
            format!("{} / {}", n(plan.registrations_per_second), n(inputs.batch_size)),
            n(plan.transactions_per_second),
        ),
        figure(
            "db connections busy",
            "transactions/s × commit latency (Little's law)",
            format!("{} × {} s", n(plan.transactions_per_second), n(inputs.commit_latency_ms / 1_000.0)),
            n(plan.connections_busy),
        ),
        figure(
            "db connections (with headroom)",
            "ceil(connections busy / (1 - headroom))",
            format!("ceil({} / {})", n(plan.connections_busy), n(usable)),
            plan.connections.to_string(),
        ),
    ]
}

/// The plan as text: the inputs, then one line per figure with its formula and its values.
pub fn render(inputs: &PlanInputs, plan: &Plan) -> String {
    let n = number;
    let mut out = String::new();
    let _ = writeln!(out, "# kuota-sim plan\n");
    let _ = writeln!(
        out,
        "inputs: {} active users, {} of them active at the peak, {} actions per user per minute, target latency {} ms, \
         {} registrations per node per second (from your benchmark), batches of {} registrations, headroom {} (nodes and \
         connections run at most at {} of capacity), {} of requests are registration writes, commit latency {} ms{}\n",
        n(inputs.active_users),
        n(inputs.peak_share),
        n(inputs.actions_per_minute),
        n(inputs.latency_ms),
        n(inputs.node_rate),
        n(inputs.batch_size),
        n(inputs.headroom),
        n(1.0 - inputs.headroom),
        n(inputs.write_share),
        n(inputs.commit_latency_ms),
        if inputs.commit_latency_assumed {
            " (assumed: pass --commit-latency-ms with a measured figure)"
        } else {
            ""
        }
    );
    for line in traffic_figures(inputs, plan).into_iter().chain(database_figures(inputs, plan)) {
        let Figure { name, formula, values, result } = line;
        let _ = writeln!(out, "{name:<31} = {formula}\n{:<31} = {values} = {result}", "");
    }
    let _ = writeln!(
        out,
        "\nEvery registration of one event is decided by that event's single actor: compare the registrations/s \
         of the busiest event with the actor's measured rate, which more nodes do not raise. \
         For queues, retries and shedding under a spike, run a scenario: kuota-sim run SCENARIO.toml"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(number(20_000.0), "20000");
        assert_eq!(number(78.125), "78.125");
        assert_eq!(number(0.7), "0.7");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn whole_counts_round_up_but_ignore_float_noise() {
        assert_eq!(whole(4.000_000_000_001), 4);
        assert_eq!(whole(4.01), 5);
        assert_eq!(whole(0.0), 1);
    }
}
