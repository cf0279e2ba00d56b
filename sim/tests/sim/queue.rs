//! Queued scenarios (`[queue]`): the run on the real engine's queue keeps its invariants and
//! accounts for every registrant, settings move the figures the way they must, the report and
//! its sweep come out, bad queue settings name their field, and the swarm over queued scenarios
//! catches an owner that forgets its draw seed on restart.

use kuota_sim::invariants::CHECK_RELOAD;
use kuota_sim::model::queue::{
    CHECK_QUEUE_DRAW, QueueFate, QueueRunOptions, QueueRunResult, draw_seed_of, simulate_queue,
};
use kuota_sim::queue_swarm;
use kuota_sim::scenario::{QueueSection, Scenario};

use crate::support::{kuota_sim, scenario_file, stderr, stdout};

/// 100 seats, 600 registrants, 400 of them in a two-minute lobby; holds that a fifth do not
/// pay, a third who give up, a short pass: every path of the queue is taken in a debug build.
pub const QUEUE_SCENARIO: &str = r#"
name = "queued-small"
seed = 5

[event]
hold_ttl_seconds = 60

[[event.categories]]
code = "10K"
capacity = 60

[[event.categories]]
code = "21K"
capacity = 40

[arrivals]
registrants = 600
spike_share = 0.8
spike_seconds = 10
tail_seconds = 60

[behaviour]
pay_share = 0.8
pay_delay = { distribution = "uniform", min_ms = 5000, max_ms = 40000 }

[queue]
lobby_seconds = 120
lobby_share = 0.67
pass_ttl_seconds = 30
overbook = 1.0
abandon_share = 0.3
patience = { distribution = "exponential", mean_ms = 60000 }
register_delay = { distribution = "lognormal", median_ms = 5000, p99_ms = 40000 }

[system]
nodes = 1
http_workers_per_node = 1
http_queue_max = 8
http_service = { distribution = "constant", value_ms = 1 }
actor_service = { distribution = "constant", value_ms = 0.01 }
write_queue_max = 64
flush_interval_ms = 2
batch_size_max = 16
database_connections = 1
commit_latency = { distribution = "lognormal", median_ms = 4, p99_ms = 25 }
network_round_trip = { distribution = "lognormal", median_ms = 40, p99_ms = 200 }
"#;

/// The swarm must catch an owner that draws a fresh seed on restart within this many seeds
/// (every seed restarts the owner at least once during the arrivals, after the draw).
const BROKEN_SEED_FOUND_WITHIN_SEEDS: u64 = 10;

fn scenario() -> Scenario {
    Scenario::parse(QUEUE_SCENARIO, "queued-small").unwrap()
}

fn with_queue(change: impl FnOnce(&mut QueueSection)) -> Scenario {
    let mut scenario = scenario();
    change(scenario.queue.as_mut().unwrap());
    scenario
}

fn assert_every_invariant_held(result: &QueueRunResult) {
    assert_eq!(result.violations.total, 0, "{:?}", result.violations.summary());
}

#[test]
fn a_queued_opening_keeps_every_invariant_and_accounts_for_every_registrant() {
    let result = simulate_queue(&scenario(), 5, QueueRunOptions::default());
    assert_every_invariant_held(&result);
    assert_eq!(result.registrants, 600);
    assert_eq!(result.tickets, 600, "queue_max is far above the crowd: everyone has a ticket");
    assert_eq!(result.lobby_tickets, 402, "two thirds of the crowd join in the lobby");
    assert_eq!(result.fates.iter().sum::<u64>(), 600);
    assert_eq!(result.fate(QueueFate::Waiting), 0, "the run ends when nothing more can happen");
    assert_eq!(result.seats_taken, result.seats, "the crowd outnumbers the seats six to one");
    assert_eq!(result.fate(QueueFate::Seated), result.seats_taken);
    assert!(result.fate(QueueFate::GaveUp) > 0 && result.passes_expired > 0, "abandoned passes lapse");
    assert!(result.fate(QueueFate::SoldOutWaiting) > 0);
    // Passes are counted against the seats of every category: a pass holder whose category
    // went meanwhile finds it sold out even with overbook 1.0.
    assert!(result.fate(QueueFate::AdmittedSoldOut) < 20, "{}", result.fate(QueueFate::AdmittedSoldOut));
    assert!(!result.waits_from_opening_ms.is_empty() && !result.eta_errors_seconds.is_empty());
    assert!(result.polls > 0);
}

#[test]
fn with_one_category_and_overbook_one_every_pass_reaches_a_seat() {
    let mut one_category = scenario();
    one_category.event.categories.truncate(1);
    let result = simulate_queue(&one_category, 5, QueueRunOptions::default());
    assert_every_invariant_held(&result);
    assert_eq!(result.fate(QueueFate::AdmittedSoldOut), 0);
    assert_eq!(result.seats_taken, 60);
}

#[test]
fn overbooking_sells_faster_but_some_passes_find_the_event_sold_out() {
    let plain = simulate_queue(&scenario(), 5, QueueRunOptions::default());
    let overbooked = simulate_queue(&with_queue(|queue| queue.overbook = 2.0), 5, QueueRunOptions::default());
    assert_every_invariant_held(&overbooked);
    assert!(overbooked.passes_outstanding_peak > plain.passes_outstanding_peak);
    assert!(overbooked.fate(QueueFate::AdmittedSoldOut) > 0);
    assert_eq!(overbooked.seats_taken, overbooked.seats);
    let sold_out = |result: &QueueRunResult| result.sold_out_after_us.expect("every seat goes");
    assert!(
        sold_out(&overbooked) < sold_out(&plain),
        "passes out to absent holders no longer hold seats back"
    );
}

#[test]
fn a_crowd_that_never_gives_up_lets_only_the_refused_passes_lapse() {
    // Everyone pays too: no seat comes back after the crowd behind read sold_out and left.
    let mut patient = with_queue(|queue| {
        queue.abandon_share = 0.0;
        queue.pass_ttl_seconds = 600;
    });
    patient.behaviour.pay_share = 1.0;
    let result = simulate_queue(&patient, 5, QueueRunOptions::default());
    assert_every_invariant_held(&result);
    assert_eq!(result.fate(QueueFate::GaveUp), 0);
    // Everyone admitted registers within the pass's ten minutes; only the passes whose holder
    // found their category sold out stay outstanding (a refused registration uses no pass) and lapse.
    assert_eq!(result.passes_expired, result.fate(QueueFate::AdmittedSoldOut));
}

#[test]
fn admission_pacing_spreads_the_admissions_out() {
    let paced = with_queue(|queue| queue.admit_per_second = Some(1.0));
    let result = simulate_queue(&paced, 5, QueueRunOptions::default());
    assert_every_invariant_held(&result);
    let plain = simulate_queue(&scenario(), 5, QueueRunOptions::default());
    let median =
        |result: &QueueRunResult| result.waits_from_opening_ms[result.waits_from_opening_ms.len() / 2];
    assert!(median(&result) > median(&plain), "one admission a second makes the lobby wait longer");
}

#[test]
fn a_restart_rebuilds_the_queue_from_the_store_and_the_draw_order_holds() {
    let restarted = with_queue(|queue| queue.restarts_seconds = vec![5.0, 30.0, 90.0]);
    let result = simulate_queue(&restarted, 5, QueueRunOptions::default());
    assert_eq!(result.restarts, 3);
    assert_every_invariant_held(&result);
    // A fresh seed on restart reorders the line: the engine refuses to rebuild a queue with an
    // admitted ticket behind a waiting one, or the admissions leave the committed order.
    let broken = simulate_queue(&restarted, 5, QueueRunOptions { break_draw_seed: true });
    let caught = [CHECK_RELOAD, CHECK_QUEUE_DRAW].iter().any(|check| broken.violations.of(check).is_some());
    assert!(caught, "{:?}", broken.violations.summary());
}

#[test]
fn the_draw_seed_and_so_the_order_is_a_function_of_the_run_seed() {
    assert_eq!(draw_seed_of(5), draw_seed_of(5));
    assert_ne!(draw_seed_of(5), draw_seed_of(6));
    let first = simulate_queue(&scenario(), 5, QueueRunOptions::default());
    let again = simulate_queue(&scenario(), 5, QueueRunOptions::default());
    assert_eq!(first.waits_from_join_ms, again.waits_from_join_ms);
    assert_eq!(first.eta_errors_seconds, again.eta_errors_seconds);
}

#[test]
fn the_report_shows_waits_eta_errors_invariants_and_the_sweep_and_is_reproducible() {
    let path = scenario_file("queued_report", QUEUE_SCENARIO);
    let first = kuota_sim(&["run", path.to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    let report = stdout(&first);
    assert!(report.starts_with("seed=5\n# kuota-sim run: queued-small (queued opening)"), "{report}");
    for section in
        ["## Who got what", "## Waiting", "## The ETA's error", "## Polling", "## Invariants", "## Sweep"]
    {
        assert!(report.contains(section), "{section} missing: {report}");
    }
    assert!(!report.contains("**violated"), "{report}");
    assert!(report.contains("| 1.5 | 120 | 100 / 100 |"), "a sweep row per setting: {report}");
    assert_eq!(
        kuota_sim(&["run", path.to_str().unwrap()]).stdout,
        first.stdout,
        "the same seed, another report"
    );
}

#[test]
fn bad_queue_settings_name_their_field() {
    let cases = [
        ("overbook = 1.0", "overbook = 0.5", "queue.overbook"),
        ("pass_ttl_seconds = 30", "pass_ttl_seconds = 5", "queue.pass_ttl_seconds"),
        ("lobby_seconds = 120", "lobby_seconds = 0", "queue.lobby_seconds"),
        ("lobby_share = 0.67", "lobby_share = 1.5", "queue.lobby_share"),
        ("abandon_share = 0.3", "abandon_share = -1", "queue.abandon_share"),
        ("overbook = 1.0", "overbook = 1.0\nqueue_max = 0", "queue.queue_max"),
        ("overbook = 1.0", "overbook = 1.0\nadmit_per_second = 0", "queue.admit_per_second"),
        ("overbook = 1.0", "overbook = 1.0\nrestarts_seconds = [-1]", "queue.restarts_seconds[0]"),
    ];
    for (good, bad, field) in cases {
        let text = QUEUE_SCENARIO.replace(good, bad);
        let error = Scenario::parse(&text, "bad").unwrap_err().to_string();
        assert!(error.contains(&format!("field `{field}`")), "{bad}: {error}");
    }
    let with_faults = format!(
        "{QUEUE_SCENARIO}\n[[faults]]\nkind = \"owner_crash\"\nstart_seconds = 1\nduration_seconds = 1\n"
    );
    let error = Scenario::parse(&with_faults, "faults").unwrap_err().to_string();
    assert!(error.contains("field `faults`"), "{error}");
}

#[test]
fn the_queue_swarm_holds_on_the_real_engine_and_catches_a_forgotten_draw_seed() {
    let scenario = scenario();
    let real =
        queue_swarm::run(&scenario, 5, BROKEN_SEED_FOUND_WITHIN_SEEDS, 2, QueueRunOptions::default(), false);
    assert!(real.first_failure.is_none(), "{:?}", real.first_failure);
    assert_eq!(real.seeds_run, BROKEN_SEED_FOUND_WITHIN_SEEDS);
    let broken = QueueRunOptions { break_draw_seed: true };
    let outcome = queue_swarm::run(&scenario, 5, BROKEN_SEED_FOUND_WITHIN_SEEDS, 2, broken, false);
    let failure = outcome.first_failure.expect("the forgotten seed was not caught");
    let checks: Vec<&str> = failure.violations.iter().map(|(check, _, _)| check.as_str()).collect();
    assert!(checks.contains(&CHECK_QUEUE_DRAW) || checks.contains(&CHECK_RELOAD), "{checks:?}");
}

#[test]
fn the_queue_swarm_prints_a_replay_that_reproduces_the_failure() {
    let path = scenario_file("queued_swarm_replay", QUEUE_SCENARIO);
    let seeds = BROKEN_SEED_FOUND_WITHIN_SEEDS.to_string();
    let output = kuota_sim(&["swarm", path.to_str().unwrap(), "--seeds", &seeds, "--break-draw-seed"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    let replay =
        text.lines().find_map(|line| line.strip_prefix("replay: kuota-sim ")).expect("a replay line");
    let arguments: Vec<&str> = replay.split(' ').collect();
    let first = kuota_sim(&arguments);
    assert_eq!(first.status.code(), Some(3), "the replay did not fail: {}", stderr(&first));
    assert!(stdout(&first).contains("| **violated"), "{}", stdout(&first));
    assert_eq!(kuota_sim(&arguments).stdout, first.stdout, "two replays differ");
}
