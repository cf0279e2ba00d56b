//! Faults in virtual time: each kind, on the small fault race, keeps every invariant and shows
//! the mechanism it exercises in the answers; bad fault tables are refused naming the field.

use kuota_sim::metrics::AnswerClass;
use kuota_sim::model::{RunOptions, RunResult, simulate};
use kuota_sim::report;
use kuota_sim::scenario::{Scenario, ScenarioError};

use crate::support::fault_scenario_with;

fn run_with(faults: &str, seed: u64) -> (Scenario, RunResult) {
    let scenario = Scenario::parse(&fault_scenario_with(faults), "faults").unwrap();
    let result = simulate(&scenario, seed, RunOptions::default());
    assert_eq!(result.violations.total, 0, "{faults}: {:?}", result.violations);
    (scenario, result)
}

fn count(result: &RunResult, class: AnswerClass) -> u64 {
    result.metrics.count(class)
}

#[test]
fn a_store_stall_refuses_writes_at_once_after_the_stall_threshold_and_recovers_when_it_ends() {
    let (scenario, result) =
        run_with("[[faults]]\nkind = \"store_stall\"\nstart_seconds = 1\nduration_seconds = 3\n", 1);
    assert!(count(&result, AnswerClass::ShedStoreStalled) > 0, "no write was refused as stalled");
    assert!(count(&result, AnswerClass::ShedDeadline) > 0, "no request waited out its deadline");
    // Writes waiting when the store froze got their 503 at the 2 s deadline, not later.
    let deadline = result.metrics.latency_of(AnswerClass::ShedDeadline);
    let round_trip_max_us = 1_000_000;
    assert!(deadline.max() < 2_000_000 + round_trip_max_us, "deadline answers at {} µs", deadline.max());
    let stats = &result.metrics.faults[0];
    let served = stats.served_again_at.expect("the event is served again after the stall");
    assert!(served >= stats.end && served - stats.end < 1_000_000, "served again at {served} µs");
    let text = report::render(&scenario, &result, None);
    assert!(text.contains("### 1. store_stall at 1 s for 3 s"), "{text}");
    assert!(text.contains("time to recover"), "{text}");
}

#[test]
fn a_commit_latency_spike_past_the_store_timeout_rolls_back_and_reloads() {
    let faults = "[[faults]]\nkind = \"commit_latency\"\nstart_seconds = 1\nduration_seconds = 4\nextra_latency_ms = 1500\n";
    let (_, result) = run_with(faults, 2);
    assert!(result.reloads > 0, "no rollback reloaded the event");
    assert!(count(&result, AnswerClass::ShedStoreFailed) + count(&result, AnswerClass::ShedStoreStalled) > 0);
}

#[test]
fn a_crashed_single_owner_is_served_again_after_its_restart_by_taking_its_lease_over() {
    let (_, result) =
        run_with("[[faults]]\nkind = \"owner_crash\"\nstart_seconds = 1\nduration_seconds = 0.5\n", 3);
    assert!(count(&result, AnswerClass::ConnectionLost) > 0, "nobody lost a connection");
    let stats = &result.metrics.faults[0];
    assert!(stats.served_again_at.is_some(), "never served again");
    assert!(result.reloads > 0, "the restarted node did not load the event");
}

#[test]
fn a_frozen_owner_is_replaced_once_its_lease_runs_out_and_its_late_writes_are_fenced() {
    let mut fenced = 0;
    for seed in 1..=3 {
        let (_, result) =
            run_with("[[faults]]\nkind = \"owner_freeze\"\nstart_seconds = 1\nduration_seconds = 3\n", seed);
        let stats = &result.metrics.faults[0];
        let served = stats.served_again_at.expect("another node serves the event");
        assert!(served < stats.end, "nobody took over during the freeze (served again at {served} µs)");
        assert!(count(&result, AnswerClass::ShedMoving) > 0, "no request met the frozen owner");
        fenced += result.fenced_batches;
    }
    assert!(fenced > 0, "no late batch of a frozen owner was fenced in three seeds");
}

#[test]
fn a_redis_outage_costs_the_owner_its_lease_and_claims_fail_until_redis_is_back() {
    let (_, result) =
        run_with("[[faults]]\nkind = \"redis_outage\"\nstart_seconds = 1\nduration_seconds = 2.5\n", 4);
    assert!(count(&result, AnswerClass::ShedLeaseUnavailable) > 0, "no claim failed");
    let stats = &result.metrics.faults[0];
    assert!(stats.served_again_at.is_some_and(|served| served >= stats.end), "{stats:?}");
}

#[test]
fn a_redis_outage_ends_with_what_is_left_of_a_claim_pause_or_a_waiting_claim_going_on() {
    // A failed claim pauses a node's claims for `CLAIM_PAUSE_AFTER_UNAVAILABLE_MS` (and requests
    // that come while a claim waits for Redis share it), so when the outage ends, recovery takes
    // from nothing (a claim was waiting: Redis answers it) to what is left of a pause. Outages of
    // slightly different lengths end in different phases of that cycle.
    let pause_us = kuota_persist::ownership::CLAIM_PAUSE_AFTER_UNAVAILABLE_MS * 1_000;
    let (mut outlived, mut went_on) = (false, false);
    for tenths in 0..10 {
        let duration = 2.5 + f64::from(tenths) * 0.05;
        let faults = format!(
            "[[faults]]\nkind = \"redis_outage\"\nstart_seconds = 1\nduration_seconds = {duration}\n"
        );
        let (_, result) = run_with(&faults, 4);
        let stats = &result.metrics.faults[0];
        let served = stats.served_again_at.expect("served again after the outage");
        let last_refusal = stats.last_refusal_at.expect("claims failed during the outage");
        assert!(last_refusal < stats.end + pause_us, "refused {} µs after the end", last_refusal - stats.end);
        outlived |= last_refusal > stats.end;
        went_on |= served.checked_sub(stats.end).is_some_and(|after| after < pause_us / 10);
    }
    assert!(outlived, "no pause outlived an outage");
    assert!(went_on, "no outage ended while a claim waited for Redis");
}

#[test]
fn lost_lease_replies_make_the_owner_step_down_without_two_owners() {
    let (_, result) =
        run_with("[[faults]]\nkind = \"lost_lease_reply\"\nstart_seconds = 1\nduration_seconds = 2\n", 5);
    assert!(result.reloads > 0, "the owner never stepped down and reloaded");
    assert!(count(&result, AnswerClass::ShedMoving) + count(&result, AnswerClass::ShedLeaseUnavailable) > 0);
}

fn invalid_field(faults: &str) -> String {
    match Scenario::parse(&fault_scenario_with(faults), "bad") {
        Err(ScenarioError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn bad_fault_tables_are_refused_naming_the_field() {
    let zero = "[[faults]]\nkind = \"store_stall\"\nstart_seconds = 1\nduration_seconds = 0\n";
    assert_eq!(invalid_field(zero), "faults[0].duration_seconds");
    let negative = "[[faults]]\nkind = \"owner_freeze\"\nstart_seconds = -1\nduration_seconds = 1\n";
    assert_eq!(invalid_field(negative), "faults[0].start_seconds");
    let misplaced =
        "[[faults]]\nkind = \"store_stall\"\nstart_seconds = 1\nduration_seconds = 1\nextra_latency_ms = 5\n";
    assert_eq!(invalid_field(misplaced), "faults[0].extra_latency_ms");
    let short_lease = fault_scenario_with("").replace("lease_ttl_ms = 1000", "lease_ttl_ms = 10");
    assert!(matches!(
        Scenario::parse(&short_lease, "bad"),
        Err(ScenarioError::Invalid { field, .. }) if field == "system.lease_ttl_ms"
    ));
    let unknown = "[[faults]]\nkind = \"meteor\"\nstart_seconds = 1\nduration_seconds = 1\n";
    assert!(matches!(
        Scenario::parse(&fault_scenario_with(unknown), "bad"),
        Err(ScenarioError::Parse { .. })
    ));
}

#[test]
fn a_thawed_store_first_works_through_the_connections_its_stall_left_then_serves() {
    // The live suite's frozen MariaDB (20 s, one node): every store call the store timeout cut
    // short during the stall (the writer's attempts, probes and loads, the health pings) left
    // a connection that the database deals with when it goes on, before anything newer.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/calibration/faults-store-stall.toml"
    ))
    .unwrap();
    // With a release build's loads (one commit latency, the default recovery rate), not the
    // test build's that the scenario sets: the backlog is what is measured here.
    let text: String = text
        .lines()
        .filter(|line| {
            !line.starts_with("load_latency") && !line.starts_with("recovery_registrations_per_second")
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let recovery = |abandoned_ms: f64| {
        // At 20 s rather than the suite's 1.25 s: some 3,950 registrations stored, so that the
        // reload after the stall reads for several milliseconds.
        let with_cost = text
            .replace("[system]\n", &format!("[system]\nstore_abandoned_connection_ms = {abandoned_ms}\n"))
            .replace("start_seconds = 1.25\n", "start_seconds = 20\n");
        let scenario = Scenario::parse(&with_cost, "faults-store-stall").unwrap();
        let result = simulate(&scenario, 1, RunOptions::default());
        assert_eq!(result.violations.total, 0, "{:?}", result.violations);
        let stats = &result.metrics.faults[0];
        let served = stats.served_again_at.expect("served again after the stall");
        // Every registration is new and admitted: those before the stall are what the reload
        // after it reads, at the scenario's recovery rate.
        let stored = stats.windows[0].count(AnswerClass::Confirmed) as f64;
        let reading_ms = stored * 1_000.0 / scenario.system.recovery_registrations_per_second;
        ((served - stats.end) as f64 / 1_000.0, reading_ms)
    };
    let (free, reading_ms) = recovery(0.0);
    let (costly, _) = recovery(1.0);
    // The reload under way when the stall ends does its reading after it: a frozen database
    // does none of a call's work while frozen (until 2026-12-06 the model let a load or commit
    // started in the stall finish at its end, its work done meanwhile).
    assert!(reading_ms > 5.0, "the reload reads {reading_ms} ms");
    assert!(free >= reading_ms, "recovered {free} ms after the stall, the reload reads {reading_ms} ms");
    assert!(free < reading_ms + 10.0, "recovered {free} ms after the stall with nothing left to deal with");
    // At least the health pings: one per store timeout (500 ms) of the 20 s stall.
    let cut_calls_at_least = 40.0;
    assert!(costly - free >= cut_calls_at_least, "{free} ms without the cost, {costly} ms with 1 ms each");
    // At most those, the writer's probes (one per store timeout and a writer's tick: about 27)
    // and the batches' attempts (three each, two connections): loads wait for the writer's
    // probe instead of trying the frozen store (`StoreHealth`), so they leave it nothing (until
    // 2026-12-06 each reload attempt, one every 0.7 s, left one more).
    // (A few milliseconds more: the backlog also moves when the reload's reads and the
    // connections it waits behind fall.)
    let cut_calls_at_most = 40.0 + 27.0 + 6.0 + 5.0;
    assert!(costly - free <= cut_calls_at_most, "{free} ms without the cost, {costly} ms with 1 ms each");
}

/// A calibration scenario of the live fault suite (`sim/scenarios/calibration/faults-NAME.toml`).
fn calibration(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/scenarios/calibration/faults-{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn simulate_text(text: &str, seed: u64) -> RunResult {
    let scenario = Scenario::parse(text, "calibration").unwrap();
    let result = simulate(&scenario, seed, RunOptions::default());
    assert_eq!(result.violations.total, 0, "{:?}", result.violations);
    result
}

#[test]
fn a_claim_while_redis_is_frozen_waits_for_its_set_and_then_for_reading_the_key_back() {
    // `RedisLeases::acquire_lease`: the `SET NX` times out, and so does the `GET` that reads
    // back whether it took effect (`resolve_unknown_acquisition`): the slowest refusal is two
    // Redis timeouts (the suite's max 509 ms with its 250 ms timeout), not one.
    let result = simulate_text(&calibration("redis-outage"), 1);
    let timeout_us = 250_000;
    let slowest = result.metrics.latency_of(AnswerClass::ShedLeaseUnavailable).max();
    assert!(slowest >= 2 * timeout_us, "the slowest lease refusal took {slowest} µs");
    assert!(slowest < 2 * timeout_us + 10_000, "the slowest lease refusal took {slowest} µs");
}

#[test]
fn while_redis_is_frozen_the_owners_registrations_wait_for_the_shared_rate_limit_once_a_pause() {
    // `SharedGcra::check` waits up to the Redis timeout, then the node limits locally for
    // `SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS`: with the limit on, some admissions before the
    // leases lapse wait a Redis timeout; with it off, none does.
    // Redis does not come back within the run: every admission is one before the leases lapsed.
    let text = calibration("redis-outage").replace("duration_seconds = 20\n", "duration_seconds = 100\n");
    let slowest_admission =
        |text: &str| simulate_text(text, 1).metrics.latency_of(AnswerClass::Confirmed).max();
    let timeout_us = 250_000;
    assert!(slowest_admission(&text) >= timeout_us, "no admission waited for the shared limit");
    let off = text.replace("rate_limit_email_per_minute = 100000", "rate_limit_email_per_minute = 0");
    assert!(slowest_admission(&off) < timeout_us / 10, "an admission waited without a shared limit");
}

#[test]
fn a_load_after_a_frozen_store_waits_for_the_writers_probe_and_the_suite_sees_it_through_readyz() {
    // Loads do not try a store the writer finds down (`StoreHealth`): the reload starts when the
    // probe under way at SIGCONT is answered, after the backlog, and `/readyz` (the writer's
    // probe and the health ping) says 200 no earlier than that. The suite polls it every 20 ms
    // and then registers: its figure is the model's own one at least, plus a registration.
    for seed in 1..=2 {
        let result = simulate_text(&calibration("store-stall"), seed);
        let stats = &result.metrics.faults[0];
        let served = stats.served_again_at.expect("served again after the stall");
        let suite = stats.suite.expect("the suite probed");
        let ready = suite.ready_at.expect("the suite saw /readyz say 200");
        let suite_served = suite.served_at.expect("the suite saw it served");
        assert_eq!(suite.since, stats.end);
        assert!(ready > stats.end, "ready {} µs before the end", stats.end - ready);
        assert!(suite_served > ready && suite_served >= served, "{suite:?}, model served at {served}");
        // One registration after ready: a round trip, a decision and a commit, or the next
        // round 50 ms later when it came before the reload.
        assert!(suite_served - ready < 60_000, "{suite:?}");
    }
}

/// The restart calibration with its start-up costs set to constants (milliseconds; 0: absent).
fn restart_with(workers_start_ms: f64, redis_command_ms: f64, first_claim_ms: f64) -> String {
    let mut text: String = calibration("owner-crash")
        .lines()
        .filter(|line| {
            !["workers_start", "redis_command", "restart_first_claim"]
                .iter()
                .any(|field| line.starts_with(field))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    for (field, value) in [
        ("workers_start", workers_start_ms),
        ("redis_command", redis_command_ms),
        ("restart_first_claim", first_claim_ms),
    ] {
        if value > 0.0 {
            let line = format!("{field} = {{ distribution = \"constant\", value_ms = {value} }}\n");
            text = text.replace("[system]\n", &format!("[system]\n{line}"));
        }
    }
    text
}

/// (ms from the restart to `/readyz` saying 200, ms from then to served, the slowest answer of
/// the after window in ms) of the restart calibration with seed 1.
fn restart_figures(text: &str) -> (f64, f64, f64) {
    let result = simulate_text(text, 1);
    let stats = &result.metrics.faults[0];
    let suite = stats.suite.expect("the suite probed");
    let ready = suite.ready_at.expect("the suite saw /readyz say 200");
    let served = suite.served_at.expect("the suite saw it served");
    let slowest = stats.windows[2].latency.max() as f64 / 1_000.0;
    ((ready - stats.end) as f64 / 1_000.0, (served - ready) as f64 / 1_000.0, slowest)
}

#[test]
fn a_restarted_node_serves_once_its_workers_start_and_its_claim_takes_its_lease_over_in_five_commands() {
    // Without start-up costs the restarted node serves at once; the suite's registration after
    // ready waits for the claim and the load.
    let (ready, served, _) = restart_figures(&restart_with(0.0, 0.0, 0.0));
    assert!(ready < 5.0, "ready {ready} ms after the restart without a start of the workers");
    // The claim on the suite's fresh Redis takes the previous life's lease over: `SET NX`, `GET`,
    // the take-over script refused (`NOSCRIPT`), `SCRIPT LOAD`, the script again; the load
    // waits for them, and for the restarted process's first claim's own cost (each long here,
    // so that a command more or less shows beside the batches the waiting moves: the requests
    // that come meanwhile wait for the load too, and are decided before the suite's).
    let (_, commands_served, _) = restart_figures(&restart_with(0.0, 20.0, 0.0));
    assert!(
        (90.0..110.0).contains(&(commands_served - served)),
        "{served} ms, {commands_served} ms with 20 ms commands"
    );
    let (_, first_claim_served, _) = restart_figures(&restart_with(0.0, 0.0, 40.0));
    assert!(
        (35.0..45.0).contains(&(first_claim_served - served)),
        "{served} ms, {first_claim_served} ms with a first claim of 40 ms"
    );
    // The workers start 40 ms after the port is bound: the `/readyz` poll and the trickle's
    // registrations wait in the backlog meanwhile, and are served together once they start;
    // the suite's registration is decided after those that waited.
    let workers_start_ms = 40.0;
    let (late_ready, backlog_served, slowest) = restart_figures(&restart_with(workers_start_ms, 0.0, 0.0));
    assert!(late_ready >= workers_start_ms, "ready {late_ready} ms after the restart");
    assert!(backlog_served > served, "{served} ms at once, {backlog_served} ms behind the backlog");
    assert!(slowest >= workers_start_ms, "the slowest answer after the restart took {slowest} ms");
}

#[test]
fn the_suites_registrants_do_not_try_a_lost_connection_again_so_none_of_them_waits_for_the_claim() {
    // The suite's client retries a 503 only (`register_with_one_retry`): a registration whose
    // connection the killed node reset, or the down node refused, is not sent again. The model's
    // registrants retry a lost connection by default, and the retries of those refused in the
    // last jitter before the restart land while the restarted node claims and loads, and wait
    // for it with the suite's own requests (seed 2: two of the seven answers after ready that
    // waited for the load were retries, and its p99 after ready was one of them).
    let text = calibration("owner-crash");
    assert!(text.contains("retry_on_connection_lost = false\n"), "the calibration retries lost connections");
    for seed in 1..=3 {
        let as_suite = simulate_text(&text, seed);
        let lost = as_suite.metrics.count(AnswerClass::ConnectionLost);
        assert!(lost > 0, "seed {seed}: nobody lost a connection");
        // Every lost connection ends its registrant's attempt: none is tried again.
        assert_eq!(as_suite.metrics.faults[0].gave_up, lost, "seed {seed}");
        let retrying = simulate_text(
            &text.replace("retry_on_connection_lost = false\n", "retry_on_connection_lost = true\n"),
            seed,
        );
        assert!(
            retrying.metrics.requests_sent > as_suite.metrics.requests_sent,
            "seed {seed}: {} requests retrying lost connections, {} without",
            retrying.metrics.requests_sent,
            as_suite.metrics.requests_sent
        );
        assert!(retrying.metrics.faults[0].gave_up < retrying.metrics.count(AnswerClass::ConnectionLost));
    }
}
