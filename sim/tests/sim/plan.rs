use kuota_sim::plan::{PlanInputs, compute};

use crate::support::{kuota_sim, stderr, stdout};

fn inputs() -> PlanInputs {
    PlanInputs {
        active_users: 1_000_000.0,
        peak_share: 0.2,
        actions_per_minute: 6.0,
        latency_ms: 200.0,
        node_rate: 5_000.0,
        batch_size: 250.0,
        headroom: 0.3,
        write_share: 0.5,
        commit_latency_ms: 10.0,
        commit_latency_assumed: false,
    }
}

#[test]
fn plan_arithmetic_follows_the_formulas() {
    let plan = compute(&inputs()).unwrap();
    assert_eq!(plan.users_at_peak, 200_000.0);
    // 200,000 users × 6 actions per minute / 60 s.
    assert_eq!(plan.requests_per_second, 20_000.0);
    // Little's law: 20,000 requests/s × 0.2 s.
    assert!((plan.concurrency - 4_000.0).abs() < 1e-9);
    assert_eq!(plan.nodes_at_full_load, 4);
    // 20,000 / (5,000 × 0.7) = 5.71, so six nodes.
    assert_eq!(plan.nodes, 6);
    assert_eq!(plan.registrations_per_second, 10_000.0);
    assert_eq!(plan.transactions_per_second, 40.0);
    assert!((plan.connections_busy - 0.4).abs() < 1e-9);
    assert_eq!(plan.connections, 1);
}

#[test]
fn plan_prints_every_figure_with_its_formula() {
    let output = kuota_sim(&[
        "plan",
        "--active-users",
        "1000000",
        "--peak-share",
        "0.2",
        "--actions-per-minute",
        "6",
        "--latency-ms",
        "200",
        "--node-rate",
        "5000",
        "--batch-size",
        "250",
        "--write-share",
        "0.5",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "users at peak × actions per minute / 60",
        "= 200000 × 6 / 60 = 20000",
        "requests/s × latency (Little's law)",
        "= 20000 × 0.2 s = 4000 requests in flight",
        "ceil(requests/s / (node rate × (1 - headroom)))",
        "= ceil(20000 / (5000 × 0.7)) = 6",
        "registrations/s / batch size",
        "= 10000 / 250 = 40",
        "commit latency 10 ms (assumed: pass --commit-latency-ms with a measured figure)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_share_out_of_range_is_refused_naming_the_flag() {
    let mut bad = inputs();
    bad.peak_share = 1.5;
    assert_eq!(compute(&bad).unwrap_err().flag, "peak-share");
    let output = kuota_sim(&[
        "plan",
        "--active-users",
        "10",
        "--peak-share",
        "1.5",
        "--actions-per-minute",
        "1",
        "--latency-ms",
        "1",
        "--node-rate",
        "1",
        "--batch-size",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--peak-share"), "{}", stderr(&output));
}
