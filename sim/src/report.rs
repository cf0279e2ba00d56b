//! The report of a run, as Markdown text: it is what `run` prints, and what `--report` writes
//! (with the charts linked). Everything in it comes from virtual time and the seed, never from
//! the wall clock, so the same seed and scenario give the same bytes.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::distribution::{MICROS_PER_MILLI, MICROS_PER_SECOND, Micros};
use crate::invariants::CHECKS;
use crate::metrics::{AnswerClass, FAULT_WINDOW_MIN_US, FaultWindow, FinalState, Metrics, SecondStats};
use crate::model::RunResult;
use crate::scenario::Scenario;

/// Rows of the over-time table, at most (the charts have the finer grain).
const TABLE_ROWS_MAX: usize = 30;

/// Milliseconds with two decimals, from microseconds.
pub fn milliseconds(micros: u64) -> String {
    format!("{:.2}", micros as f64 / MICROS_PER_MILLI as f64)
}

/// Seconds with three decimals, from microseconds.
pub fn seconds(micros: Micros) -> String {
    format!("{:.3}", micros as f64 / MICROS_PER_SECOND as f64)
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "–".into() } else { format!("{:.2}%", part as f64 * 100.0 / whole as f64) }
}

/// `p50 | p95 | p99 | max` cells in milliseconds, or dashes for an empty histogram.
fn percentile_cells<T: hdrhistogram::Counter>(histogram: &Histogram<T>) -> String {
    if histogram.is_empty() {
        return "– | – | – | –".into();
    }
    let at = |quantile: f64| milliseconds(histogram.value_at_quantile(quantile));
    format!("{} | {} | {} | {}", at(0.50), at(0.95), at(0.99), milliseconds(histogram.max()))
}

/// The whole report; `seed=<n>` is its first line. `target_p99_ms`, when the run was asked to
/// meet one, is compared with in the over-time table.
pub fn render(scenario: &Scenario, result: &RunResult, target_p99_ms: Option<f64>) -> String {
    format!("seed={}\n{}", result.seed, render_body(scenario, result, target_p99_ms))
}

/// The report without its `seed=` line, for output that already printed it.
pub fn render_body(scenario: &Scenario, result: &RunResult, target_p99_ms: Option<f64>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the `let _` keeps the sections free of noise.
    let _ = writeln!(out, "# kuota-sim run: {}\n", scenario.name);
    if !scenario.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", scenario.description.trim());
    }
    scenario_section(&mut out, scenario);
    answers_section(&mut out, &result.metrics);
    registrants_section(&mut out, scenario, result);
    seats_section(&mut out, result);
    timeline_section(&mut out, result);
    write_behind_section(&mut out, &result.metrics);
    faults_section(&mut out, scenario, result);
    over_time_section(&mut out, &result.metrics, target_p99_ms);
    invariants_section(&mut out, result);
    out
}

/// The answer mix of a fault window, in the groups a planner asks about.
fn mix_cells(window: &FaultWindow) -> String {
    let sum = |pick: fn(AnswerClass) -> bool| -> u64 {
        AnswerClass::ALL.iter().filter(|class| pick(**class)).map(|class| window.count(*class)).sum()
    };
    let success = sum(|class| {
        matches!(
            class,
            AnswerClass::Held
                | AnswerClass::Confirmed
                | AnswerClass::Waitlisted
                | AnswerClass::PaymentConfirmed
                | AnswerClass::Cancelled
        )
    });
    let refused = sum(|class| {
        matches!(
            class,
            AnswerClass::SoldOut
                | AnswerClass::SoldOutFastPath
                | AnswerClass::AlreadyRegistered
                | AnswerClass::KeyInFlight
                | AnswerClass::HoldExpired
                | AnswerClass::OtherRefusal
        )
    });
    let shed_load = sum(|class| class.is_shed() && !class.is_fault_refusal());
    let shed_fault = sum(|class| class.is_shed() && class.is_fault_refusal());
    let lost = window.count(AnswerClass::ConnectionLost);
    let limited = window.count(AnswerClass::RateLimited);
    let latency = if window.latency.is_empty() {
        "– | – | –".to_string()
    } else {
        let at = |quantile: f64| milliseconds(window.latency.value_at_quantile(quantile));
        format!("{} | {} | {}", at(0.5), at(0.99), milliseconds(window.latency.max()))
    };
    format!(
        "{} | {success} | {refused} | {shed_load} | {shed_fault} | {limited} | {lost} | {latency}",
        window.total()
    )
}

fn faults_section(out: &mut String, scenario: &Scenario, result: &RunResult) {
    if scenario.faults.is_empty() {
        return;
    }
    let system = &scenario.system;
    let _ = writeln!(
        out,
        "## Faults
"
    );
    let _ = writeln!(
        out,
        "Kuota's mechanisms as configured: request deadline {} ms, store timeout {} ms (each commit attempt, probe and \
         load), stall threshold {} ms, lease TTL {} ms, Redis timeout {} ms, recovery at {:.0} registrations/s. Answers \
         are counted by when they reached the registrant, before the fault (as long as it, at least {} s), during it, \
         and after it (as long as before). \"Refused for the fault\" is a 503 from the store, the lease service or an \
         owner that moves, or a lost connection; the event is *served again* at the first decision of its actor for a request \
         that came in after every request so refused had (one refused late, after waiting out a timeout, counts for \
         when it came in). Refusals, recovery, sheds and give-ups count until the after window ends or the next \
         fault starts.\n",
        system.request_timeout_ms,
        system.store_timeout_ms,
        system.store_stall_ms,
        system.lease_ttl_ms,
        system.redis_timeout_ms,
        system.recovery_registrations_per_second,
        FAULT_WINDOW_MIN_US / MICROS_PER_SECOND
    );
    let _ = writeln!(
        out,
        "Loads of the event after opening (ownership moves, rollbacks): {}; batches of a former owner fenced by the \
         store: {}.\n",
        result.reloads, result.fenced_batches
    );
    let patience = &scenario.behaviour;
    for (index, (fault, stats)) in scenario.faults.iter().zip(&result.metrics.faults).enumerate() {
        let _ = writeln!(out, "### {}. {}\n", index + 1, fault.describe());
        let _ = writeln!(
            out,
            "| window | answers | 2xx | 409/410 | 503 for load | 503 for the fault | 429 | connection lost | p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, window) in ["before", "during", "after"].iter().zip(&stats.windows) {
            let span = format!("{name} ({}–{} s)", seconds(window.from), seconds(window.until));
            let _ = writeln!(out, "| {span} | {} |", mix_cells(window));
        }
        let _ = writeln!(out);
        match (stats.first_refusal_at, stats.last_refusal_at) {
            (Some(first), Some(last)) => {
                let _ = writeln!(
                    out,
                    "- refused for the fault from {} s to {} s after opening",
                    seconds(first),
                    seconds(last)
                );
            }
            _ => _ = writeln!(out, "- no request was refused for the fault"),
        }
        match (stats.served_again_at, stats.last_refusal_at) {
            (Some(served), Some(_)) if served >= stats.end => {
                let _ = writeln!(
                    out,
                    "- served again at {} s: **time to recover {} ms** after the fault ended",
                    seconds(served),
                    milliseconds(served - stats.end)
                );
            }
            (Some(served), Some(_)) => {
                let _ = writeln!(
                    out,
                    "- served again at {} s, **{} ms after the fault began**, while it lasted (another node took over, \
                     or the fault stopped hurting)",
                    seconds(served),
                    milliseconds(served - stats.start)
                );
            }
            (None, Some(_)) => {
                _ = writeln!(out, "- not served again before {} s", seconds(stats.track_until))
            }
            _ => {}
        }
        if let Some(suite) = &stats.suite {
            let ready = suite.ready_at.map_or(String::new(), |ready| {
                format!("`/readyz` said 200 {} ms after the fault ended; ", milliseconds(ready - stats.end))
            });
            let since = if suite.since > stats.end { "`/readyz` said 200" } else { "the fault ended" };
            let served = suite.served_at.map_or("not served within its probes".to_string(), |served| {
                format!("**{} ms** after {since}", milliseconds(served - suite.since))
            });
            let after_ready = suite.after_ready_p99.map_or(String::new(), |p99| {
                let window_s = crate::model::SUITE_AFTERMATH_MS as f64 / 1_000.0;
                format!(
                    "; p99 of the requests sent in the {window_s} s after `/readyz` said 200 {} ms",
                    milliseconds(p99)
                )
            });
            let _ = writeln!(
                out,
                "- as the live fault suite measures it (`/readyz` polls, then a registration to each node): {ready}\
                 every node served again {served}{after_ready}"
            );
        }
        let _ = writeln!(
            out,
            "- shed (503 and lost connections) from its start to {} s: {}; registrants who gave up then: {} (they retry \
             after Retry-After plus up to {} ms, at most {} requests; {}% press again after {} ms)\n",
            seconds(stats.track_until),
            stats.shed,
            stats.gave_up,
            patience.retry_jitter_ms,
            patience.attempts_max,
            patience.impatient_share * 100.0,
            patience.patience_ms
        );
    }
    let held = if result.violations.total == 0 { "hold" } else { "do not all hold (see Invariants)" };
    let _ = writeln!(
        out,
        "Through every fault, the invariants {held}: never above capacity, no registrant twice, every acknowledged \
         registration stored for its registrant at the end.\n"
    );
}

fn scenario_section(out: &mut String, scenario: &Scenario) {
    let (event, arrivals) = (&scenario.event, &scenario.arrivals);
    let _ = writeln!(out, "## Scenario\n");
    let _ = writeln!(
        out,
        "- event: {} categories, {} seats, holds of {} s (0: confirmed at once), waitlists of at most {}",
        event.categories.len(),
        scenario.seats(),
        event.hold_ttl_seconds,
        event.waitlist_length_max
    );
    let _ = writeln!(
        out,
        "- arrivals: {} registrants, {}% within {} s of opening ({}), the rest over the next {} s",
        arrivals.registrants,
        arrivals.spike_share * 100.0,
        arrivals.spike_seconds,
        arrivals.shape.name(),
        arrivals.tail_seconds
    );
    behaviour_line(out, scenario);
    system_lines(out, scenario);
}

fn behaviour_line(out: &mut String, scenario: &Scenario) {
    let behaviour = &scenario.behaviour;
    let _ = writeln!(
        out,
        "- behaviour: retry on 503/429/409-in-flight: {}{} (after Retry-After + up to {} ms), at most {} requests per \
         action; {}% impatient (press again after {} ms); {}% join the waitlist; {}% pay after {}; {}% cancel after {}",
        behaviour.retry_on_overload,
        if behaviour.retry_on_connection_lost { "" } else { ", not after a lost connection" },
        behaviour.retry_jitter_ms,
        behaviour.attempts_max,
        behaviour.impatient_share * 100.0,
        behaviour.patience_ms,
        behaviour.waitlist_share * 100.0,
        behaviour.pay_share * 100.0,
        behaviour.pay_delay.describe(),
        behaviour.cancel_share * 100.0,
        behaviour.cancel_delay.describe()
    );
}

fn system_lines(out: &mut String, scenario: &Scenario) {
    let system = &scenario.system;
    let _ = writeln!(
        out,
        "- nodes: {} × {} HTTP workers (queue of {} each, service {}), network round trip {}, forward round trip {} ms, \
         counters {} ms late on other nodes, Retry-After {} s, {} registration writes per e-mail per minute (0: off)",
        system.nodes,
        system.http_workers_per_node,
        system.http_queue_max,
        system.http_service.describe(),
        system.network_round_trip.describe(),
        system.forward_round_trip_ms,
        system.counters_lag_ms,
        system.retry_after_seconds,
        system.rate_limit_email_per_minute
    );
    let _ = writeln!(
        out,
        "- actor: service {}, mailbox {}, pending decisions {}; write-behind: queue {}, batches of at most {} effects \
         or every {} ms, {} connections, commit {} + {} ms per effect\n",
        system.actor_service.describe(),
        system.mailbox_capacity_max,
        system.pending_decisions_max,
        system.write_queue_max,
        system.batch_size_max,
        system.flush_interval_ms,
        system.database_connections,
        system.commit_latency.describe(),
        system.commit_per_effect_ms
    );
}

fn answers_section(out: &mut String, metrics: &Metrics) {
    let total = metrics.answers_total();
    let _ = writeln!(out, "## Answers\n");
    let _ = writeln!(out, "Latency is from send to the answer reaching the registrant, network included.\n");
    let _ = writeln!(out, "| answer | requests | share | p50 ms | p95 ms | p99 ms | max ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for class in AnswerClass::ALL {
        let count = metrics.count(class);
        if count == 0 {
            continue;
        }
        let cells = percentile_cells(metrics.latency_of(class));
        let _ = writeln!(out, "| {} | {count} | {} | {cells} |", class.label(), percent(count, total));
    }
    let cells = percentile_cells(&metrics.registration_latency);
    let registrations = metrics.registration_latency.len();
    let _ = writeln!(out, "| every answer to a registration request | {registrations} | – | {cells} |");
    let _ = writeln!(out, "| **all answers** | **{total}** | 100.00% | | | | |\n");
    let _ = writeln!(
        out,
        "Requests sent: {} (first presses, retries, refreshes, payments, cancels); answered: {total}; \
         answers nobody waited for any more (the registrant had pressed again): {}; replays of an earlier decision: {}.\n",
        metrics.requests_sent, metrics.superseded_answers, metrics.replays
    );
    // The figure `kuota-sim load` reports as "answers/s", measured the same way, for calibration.
    let span_seconds = metrics.last_answer_at as f64 / MICROS_PER_SECOND as f64;
    if span_seconds > 0.0 {
        let refused: u64 = AnswerClass::ALL
            .iter()
            .filter(|class| class.asks_to_retry())
            .map(|class| metrics.count(*class))
            .sum();
        let _ = writeln!(
            out,
            "Answers per second from opening to the last answer ({span_seconds:.3} s): {:.1}; without 503 and 429: {:.1}.\n",
            total as f64 / span_seconds,
            (total - refused) as f64 / span_seconds
        );
    }
}

fn registrants_section(out: &mut String, scenario: &Scenario, result: &RunResult) {
    let registrants = u64::from(scenario.arrivals.registrants);
    let _ = writeln!(out, "## Registrants\n");
    let _ = writeln!(out, "| final state | registrants | share |");
    let _ = writeln!(out, "|---|---:|---:|");
    for state in FinalState::ALL {
        let count = result.final_count(state);
        if count > 0 {
            let _ = writeln!(out, "| {} | {count} | {} |", state.label(), percent(count, registrants));
        }
    }
    let total: u64 = result.final_states.iter().sum();
    let _ = writeln!(out, "| **total** | **{total}** | {} |\n", percent(total, registrants));
    let _ = writeln!(out, "Promoted from a waitlist: {}.", result.promoted_registrants);
    let cells = percentile_cells(&result.metrics.time_to_final_answer);
    let _ = writeln!(
        out,
        "From the first press to a decision (or giving up), p50 | p95 | p99 | max ms: {cells}.\n"
    );
}

fn seats_section(out: &mut String, result: &RunResult) {
    let _ = writeln!(out, "## Seats at the end (`EventQuota::availability()`)\n");
    if result.availability.is_empty() {
        let _ = writeln!(
            out,
            "No engine held the event at the end: nobody served it and the store did not load (see the checks).\n"
        );
        return;
    }
    let _ = writeln!(out, "| category | capacity | confirmed | held | available | waitlisted |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for category in &result.availability {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            category.code,
            category.capacity,
            category.confirmed,
            category.held,
            category.available,
            category.waitlisted
        );
    }
    let _ = writeln!(out);
}

fn timeline_section(out: &mut String, result: &RunResult) {
    let metrics = &result.metrics;
    let _ = writeln!(out, "## Timeline\n");
    match metrics.sold_out_at {
        Some(at) => {
            _ = writeln!(out, "- sold out (no seat free in any category) at {} s after opening", seconds(at))
        }
        None => _ = writeln!(out, "- never sold out"),
    }
    let _ = writeln!(out, "- last event at {} s after opening", seconds(result.end_at));
    let peak = |pick: fn(&SecondStats) -> u32| {
        let best = metrics
            .seconds
            .iter()
            .enumerate()
            .max_by_key(|(second, stats)| (pick(stats), usize::MAX - second));
        best.map_or((0, 0), |(second, stats)| (pick(stats), second))
    };
    let (requests, requests_second) = peak(|stats| stats.requests);
    let (admissions, admissions_second) = peak(|stats| stats.admissions);
    let _ = writeln!(out, "- peak requests/s: {requests} (second {requests_second})");
    let _ = writeln!(out, "- peak admissions/s: {admissions} (second {admissions_second})");
    let effects = &metrics.effects;
    let _ = writeln!(
        out,
        "- effects committed: created held {}, created confirmed {}, created waitlisted {}, confirmed {}, cancelled {}, \
         expired {}, promoted {}, decisions recorded {}\n",
        effects.created_held,
        effects.created_confirmed,
        effects.created_waitlisted,
        effects.confirmed,
        effects.cancelled,
        effects.expired,
        effects.promoted,
        effects.decisions_recorded
    );
}

fn write_behind_section(out: &mut String, metrics: &Metrics) {
    let committed: u64 = metrics.seconds.iter().map(|stats| u64::from(stats.effects_committed)).sum();
    let busy_seconds = metrics.seconds.iter().filter(|stats| stats.transactions > 0).count() as u64;
    let peak = metrics.seconds.iter().map(|stats| stats.transactions).max().unwrap_or(0);
    let mean_per_transaction =
        if metrics.transactions == 0 { 0.0 } else { committed as f64 / metrics.transactions as f64 };
    let mean_per_second =
        if busy_seconds == 0 { 0.0 } else { metrics.transactions as f64 / busy_seconds as f64 };
    let _ = writeln!(out, "## Write-behind and database\n");
    let _ = writeln!(
        out,
        "- transactions: {}; effects per transaction: mean {mean_per_transaction:.1}, max {}",
        metrics.transactions, metrics.batch_effects_max
    );
    let _ = writeln!(
        out,
        "- database transactions/s: peak {peak}, mean {mean_per_second:.1} over the {busy_seconds} seconds with any"
    );
    let _ = writeln!(
        out,
        "- commit latency p50 | p95 | p99 | max ms: {}",
        percentile_cells(&metrics.commit_latency)
    );
    let _ = writeln!(
        out,
        "- deepest queues: node queues {} (all nodes), actor mailbox {}, pending decisions {}, write queue {}\n",
        metrics.node_queue_peak, metrics.mailbox_peak, metrics.pending_peak, metrics.write_queue_peak
    );
}

/// Sums per-second stats over `seconds`: rates as totals, depths as maxima.
fn sum_seconds(seconds: &[SecondStats]) -> SecondStats {
    seconds.iter().fold(SecondStats::default(), |mut sum, stats| {
        sum.arrivals += stats.arrivals;
        sum.requests += stats.requests;
        sum.admissions += stats.admissions;
        sum.answers += stats.answers;
        sum.refused_for_load += stats.refused_for_load;
        sum.transactions += stats.transactions;
        sum.effects_committed += stats.effects_committed;
        sum.node_queue_max = sum.node_queue_max.max(stats.node_queue_max);
        sum.mailbox_max = sum.mailbox_max.max(stats.mailbox_max);
        sum.write_queue_max = sum.write_queue_max.max(stats.write_queue_max);
        sum
    })
}

fn peak_requests(seconds: &[SecondStats]) -> u32 {
    seconds.iter().map(|stats| stats.requests).max().unwrap_or(0)
}

fn over_time_section(out: &mut String, metrics: &Metrics, target_p99_ms: Option<f64>) {
    let window = metrics.window;
    let per_row = window.buckets.div_ceil(TABLE_ROWS_MAX).max(1);
    let row_seconds = window.bucket_seconds as usize * per_row;
    let _ = writeln!(
        out,
        "## Over time\n\nRows of {row_seconds} s from opening; rates are per second (mean over the row; the peak is \
         the busiest single second), depths the largest in the row, p99 of the answers received in the row. \
         A written report has every second in its `-seconds.csv`.\n"
    );
    if let Some(target) = target_p99_ms {
        let _ = writeln!(out, "Rows whose p99 is above the target of {target} ms are marked **over**.\n");
    }
    let _ = writeln!(
        out,
        "| from s | new registrants/s | requests/s | peak requests/s | admissions/s | answers/s | 503+429/s \
         | node queue | mailbox | write queue | db tx/s | p99 ms |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in 0..window.buckets.div_ceil(per_row) {
        window_row(out, metrics, row, per_row, target_p99_ms);
    }
    let rest = metrics.seconds.get(window.seconds() as usize..).unwrap_or_default();
    let after = sum_seconds(rest);
    if after.requests + after.answers + after.transactions > 0 {
        let from = format!("{} and later", window.seconds());
        let peak = peak_requests(rest);
        over_time_row(out, Row { from: &from, span_seconds: rest.len(), stats: after, peak, p99: "–" });
        let _ = writeln!(
            out,
            "\nThe last row covers everything after the charted window (payments, cancels, expiries)."
        );
    }
    let _ = writeln!(out);
}

/// Row `row` of the charted window, `per_row` chart buckets wide.
fn window_row(out: &mut String, metrics: &Metrics, row: usize, per_row: usize, target_p99_ms: Option<f64>) {
    let window = metrics.window;
    let from = row * per_row * window.bucket_seconds as usize;
    let until = ((row + 1) * per_row * window.bucket_seconds as usize).min(window.seconds() as usize);
    let seconds = metrics.seconds.get(from..until.min(metrics.seconds.len())).unwrap_or_default();
    let latency = merged_latency(metrics, row * per_row..((row + 1) * per_row).min(window.buckets));
    let p99 =
        latency.filter(|histogram| !histogram.is_empty()).map(|histogram| histogram.value_at_quantile(0.99));
    let over =
        |micros: u64| target_p99_ms.is_some_and(|target| micros as f64 > target * MICROS_PER_MILLI as f64);
    let p99 = p99.map_or("–".to_string(), |micros| {
        if over(micros) { format!("**over** {}", milliseconds(micros)) } else { milliseconds(micros) }
    });
    let label = from.to_string();
    let (stats, peak) = (sum_seconds(seconds), peak_requests(seconds));
    over_time_row(out, Row { from: &label, span_seconds: until - from, stats, peak, p99: &p99 });
}

/// One row of the over-time table; `peak` is the largest per-second request count in it.
struct Row<'a> {
    from: &'a str,
    span_seconds: usize,
    stats: SecondStats,
    peak: u32,
    p99: &'a str,
}

fn over_time_row(out: &mut String, row: Row<'_>) {
    let Row { from, span_seconds, stats, peak, p99 } = row;
    let rate = |total: u32| format!("{:.1}", f64::from(total) / span_seconds.max(1) as f64);
    let _ = writeln!(
        out,
        "| {from} | {} | {} | {peak} | {} | {} | {} | {} | {} | {} | {} | {p99} |",
        rate(stats.arrivals),
        rate(stats.requests),
        rate(stats.admissions),
        rate(stats.answers),
        rate(stats.refused_for_load),
        stats.node_queue_max,
        stats.mailbox_max,
        stats.write_queue_max,
        rate(stats.transactions)
    );
}

/// The latencies of the chart buckets in `buckets`, merged; `None` when none has any.
pub fn merged_latency(metrics: &Metrics, buckets: std::ops::Range<usize>) -> Option<Histogram<u32>> {
    let mut merged: Option<Histogram<u32>> = None;
    for histogram in metrics.window_latency[buckets].iter().flatten() {
        match &mut merged {
            // Every bucket histogram has the same bounds, so adding cannot go out of range.
            Some(sum) => sum.add(histogram).expect("bucket histograms share their bounds"),
            None => merged = Some(histogram.clone()),
        }
    }
    merged
}

fn invariants_section(out: &mut String, result: &RunResult) {
    let violations = &result.violations;
    let _ = writeln!(out, "## Invariants\n");
    for check in CHECKS {
        match violations.of(check) {
            None => _ = writeln!(out, "- ok: {check}"),
            Some(found) => {
                let _ = writeln!(out, "- VIOLATED ({} times): {check}", found.count);
                for detail in &found.details {
                    let _ = writeln!(out, "  - {detail}");
                }
            }
        }
    }
    if violations.total == 0 {
        let _ = writeln!(out, "\nAll invariants hold.");
    } else {
        let _ = writeln!(
            out,
            "\n{} invariant violations; the first few of each check are listed.",
            violations.total
        );
    }
}

/// Every second of the run as CSV, for the charts people make themselves.
pub fn seconds_csv(metrics: &Metrics) -> String {
    let mut out = String::from(
        "second,new_registrants,requests,admissions,answers,refused_for_load,node_queue_max,mailbox_max,\
         write_queue_max,db_transactions,effects_committed\n",
    );
    for (second, stats) in metrics.seconds.iter().enumerate() {
        let _ = writeln!(
            out,
            "{second},{},{},{},{},{},{},{},{},{},{}",
            stats.arrivals,
            stats.requests,
            stats.admissions,
            stats.answers,
            stats.refused_for_load,
            stats.node_queue_max,
            stats.mailbox_max,
            stats.write_queue_max,
            stats.transactions,
            stats.effects_committed
        );
    }
    out
}
