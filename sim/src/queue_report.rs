//! The report of a queued run (a scenario with `[queue]`), as Markdown: the settings, who got
//! what, waiting times, the ETA's error, the polling load, the queue's invariants, and a sweep
//! over `overbook` × `pass_ttl_seconds` on the same seed, for choosing them before the event.
//! Like `report`, everything comes from virtual time and the seed.

use std::fmt::Write;

use crate::distribution::Micros;
use crate::metrics::at_quantile;
use crate::model::queue::{QUEUE_CHECKS, QueueFate, QueueRunOptions, QueueRunResult, simulate_queue};
use crate::scenario::{QueueSection, Scenario};

/// The `overbook` values of the sweep.
pub const SWEEP_OVERBOOK: [f64; 4] = [1.0, 1.1, 1.25, 1.5];
/// The `pass_ttl_seconds` values of the sweep.
pub const SWEEP_PASS_TTL_SECONDS: [u32; 3] = [120, 300, 600];

/// One row of the sweep: the settings and the run they gave.
#[derive(Debug)]
pub struct SweepRow {
    pub overbook: f64,
    pub pass_ttl_seconds: u32,
    pub result: QueueRunResult,
}

/// Runs `scenario` with `seed` for every `overbook` × `pass_ttl_seconds` of the sweep, the
/// rest of the scenario unchanged.
pub fn sweep(scenario: &Scenario, seed: u64) -> Vec<SweepRow> {
    let queue = scenario.queue.as_ref().expect("a sweep runs a queued scenario");
    let mut rows = Vec::new();
    for overbook in SWEEP_OVERBOOK {
        for pass_ttl_seconds in SWEEP_PASS_TTL_SECONDS {
            let varied = Scenario {
                queue: Some(QueueSection { overbook, pass_ttl_seconds, ..queue.clone() }),
                ..scenario.clone()
            };
            let result = simulate_queue(&varied, seed, QueueRunOptions::default());
            rows.push(SweepRow { overbook, pass_ttl_seconds, result });
        }
    }
    rows
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "–".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

/// Minutes and seconds of a duration in milliseconds, such as `12 min 05 s`.
fn duration_ms(milliseconds: u64) -> String {
    let seconds = milliseconds / 1_000;
    if seconds < 60 { format!("{seconds} s") } else { format!("{} min {:02} s", seconds / 60, seconds % 60) }
}

fn duration_us(micros: Micros) -> String {
    duration_ms(micros / 1_000)
}

fn wait_cells(sorted_ms: &[u64]) -> String {
    let cell = |quantile: f64| at_quantile(sorted_ms, quantile).map_or("–".into(), duration_ms);
    format!("{} | {} | {} | {} | {}", sorted_ms.len(), cell(0.5), cell(0.9), cell(0.99), cell(1.0))
}

/// The whole report; `seed=<n>` is its first line. `sweep` is the table under the run, when
/// it was made.
pub fn render(scenario: &Scenario, result: &QueueRunResult, sweep: &[SweepRow]) -> String {
    let queue = scenario.queue.as_ref().expect("a queued scenario");
    let mut out = String::new();
    let _ = writeln!(out, "seed={}", result.seed);
    let _ = writeln!(out, "# kuota-sim run: {} (queued opening)\n", scenario.name);
    if !scenario.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", scenario.description.trim());
    }
    settings_section(&mut out, scenario, queue);
    fates_section(&mut out, result);
    waits_section(&mut out, result);
    eta_section(&mut out, result);
    load_section(&mut out, result);
    invariants_section(&mut out, result);
    if !sweep.is_empty() {
        sweep_section(&mut out, scenario, sweep);
    }
    out
}

fn settings_section(out: &mut String, scenario: &Scenario, queue: &QueueSection) {
    let _ = writeln!(out, "## Settings\n");
    let _ = writeln!(out, "| setting | value |\n|---|---|");
    let _ = writeln!(out, "| seats | {} |", scenario.seats());
    let _ = writeln!(
        out,
        "| registrants | {} ({:.0}% in the lobby) |",
        scenario.arrivals.registrants,
        queue.lobby_share * 100.0
    );
    let _ = writeln!(out, "| lobby opens | {} s before opens_at |", queue.lobby_seconds);
    let _ = writeln!(out, "| pass_ttl_seconds | {} |", queue.pass_ttl_seconds);
    let _ = writeln!(out, "| overbook | {} |", queue.overbook);
    let rate = queue.admit_per_second.map_or("none".to_string(), |rate| format!("{rate} per second"));
    let _ = writeln!(out, "| admit_per_second | {rate} |");
    let _ = writeln!(out, "| queue_max | {} |", queue.queue_max);
    let _ = writeln!(out, "| hold_ttl_seconds | {} |", scenario.event.hold_ttl_seconds);
    let _ = writeln!(
        out,
        "| abandonment | {:.0}% give up after {} |",
        queue.abandon_share * 100.0,
        queue.patience.describe()
    );
    let _ = writeln!(out, "| register delay | {} |", queue.register_delay.describe());
    let _ = writeln!(
        out,
        "| payment | {:.0}% pay after {} |",
        scenario.behaviour.pay_share * 100.0,
        scenario.behaviour.pay_delay.describe()
    );
    let restarts: Vec<String> = queue.restarts_seconds.iter().map(|at| format!("{at} s")).collect();
    let restarts = if restarts.is_empty() { "none".to_string() } else { restarts.join(", ") };
    let _ = writeln!(out, "| owner restarts (after opens_at) | {restarts} |\n");
}

fn fates_section(out: &mut String, result: &QueueRunResult) {
    let _ = writeln!(out, "## Who got what\n");
    let _ = writeln!(
        out,
        "{} registrants, {} tickets ({} joined in the lobby). Of the ticket holders, **{} got no seat**.\n",
        result.registrants,
        result.tickets,
        result.lobby_tickets,
        percent(result.tickets - result.fate(QueueFate::Seated), result.tickets)
    );
    let _ = writeln!(out, "| fate | registrants | share |\n|---|---:|---:|");
    for fate in QueueFate::ALL {
        let count = result.fate(fate);
        if count > 0 || fate == QueueFate::Seated {
            let _ =
                writeln!(out, "| {} | {count} | {} |", fate.describe(), percent(count, result.registrants));
        }
    }
    let sold_out = result.sold_out_after_us.map_or("never".to_string(), duration_us);
    let _ = writeln!(
        out,
        "\nSeats taken at the end: {} of {}. Last seat first taken {sold_out} after opens_at; \
         the queue settled {} after opens_at.\n",
        result.seats_taken,
        result.seats,
        duration_us(result.end_after_opening_us)
    );
    let _ = writeln!(
        out,
        "Passes: {} issued, {} used, {} lapsed unused; at most {} outstanding at once.\n",
        result.admissions, result.passes_used, result.passes_expired, result.passes_outstanding_peak
    );
}

fn waits_section(out: &mut String, result: &QueueRunResult) {
    let _ = writeln!(out, "## Waiting (to admission, for those still there to see it)\n");
    let _ = writeln!(out, "| from | admitted | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(out, "| joining | {} |", wait_cells(&result.waits_from_join_ms));
    let _ = writeln!(out, "| opens_at (lobby joiners) | {} |\n", wait_cells(&result.waits_from_opening_ms));
}

fn eta_section(out: &mut String, result: &QueueRunResult) {
    let _ = writeln!(out, "## The ETA's error\n");
    let errors = &result.eta_errors_seconds;
    if errors.is_empty() {
        let _ = writeln!(out, "No answer carried an `eta_seconds` whose ticket was later admitted.\n");
        return;
    }
    let mut absolute: Vec<u64> = errors.iter().map(|error| error.unsigned_abs()).collect();
    absolute.sort_unstable();
    let early = errors.iter().filter(|error| **error > 0).count() as u64;
    let relative = |quantile: f64| {
        at_quantile(&result.eta_relative_errors, quantile)
            .map_or("–".into(), |share| format!("{:.0}%", share * 100.0))
    };
    let seconds =
        |quantile: f64| at_quantile(&absolute, quantile).map_or("–".into(), |value| format!("{value} s"));
    let _ = writeln!(
        out,
        "`eta_seconds` (at a join or poll) against the time the admission then took, over {} answers \
         ({} more named an ETA for a ticket never admitted).\n",
        errors.len(),
        result.eta_never_admitted
    );
    let _ = writeln!(out, "| figure | p50 | p90 | p99 |\n|---|---:|---:|---:|");
    let _ = writeln!(out, "| \\|error\\| | {} | {} | {} |", seconds(0.5), seconds(0.9), seconds(0.99));
    let _ = writeln!(
        out,
        "| \\|error\\| ÷ actual wait | {} | {} | {} |\n",
        relative(0.5),
        relative(0.9),
        relative(0.99)
    );
    let median = at_quantile(errors, 0.5).unwrap_or_default();
    let _ = writeln!(
        out,
        "Signed median {median} s (positive: admitted sooner than told); {} of the ETAs were too long.\n",
        percent(early, errors.len() as u64)
    );
}

fn load_section(out: &mut String, result: &QueueRunResult) {
    let _ = writeln!(out, "## Polling\n");
    let _ = writeln!(
        out,
        "{} polls of `GET /v1/queue/{{ticket_id}}` as `refresh_after_seconds` told, at most {} in one second.\n",
        result.polls, result.polls_peak_per_second
    );
}

fn invariants_section(out: &mut String, result: &QueueRunResult) {
    let _ = writeln!(out, "## Invariants\n");
    if result.restarts > 0 {
        let _ = writeln!(
            out,
            "The owner restarted {} times, each time rebuilding the queue from the store.\n",
            result.restarts
        );
    }
    let _ = writeln!(out, "| check | result |\n|---|---|");
    for check in QUEUE_CHECKS {
        let cell = match result.violations.of(check) {
            None => "held".to_string(),
            Some(found) => format!("**violated {} times**: {}", found.count, found.details.join("; ")),
        };
        let _ = writeln!(out, "| {check} | {cell} |");
    }
    let _ = writeln!(out);
}

fn sweep_section(out: &mut String, scenario: &Scenario, rows: &[SweepRow]) {
    let _ = writeln!(out, "## Sweep: overbook × pass_ttl_seconds (same seed, same crowd)\n");
    let _ = writeln!(
        out,
        "Each row reruns the scenario with only these two settings changed. \"No seat\" is the share \
         of ticket holders without a seat at the end; waits are from joining, for those admitted.\n"
    );
    let _ = writeln!(
        out,
        "| overbook | pass_ttl_seconds | seats taken | no seat | wait p50 | wait p90 | passes lapsed | \
         admitted, sold out | last seat after |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let result = &row.result;
        let cell =
            |quantile: f64| at_quantile(&result.waits_from_join_ms, quantile).map_or("–".into(), duration_ms);
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            row.overbook,
            row.pass_ttl_seconds,
            result.seats_taken,
            scenario.seats(),
            percent(result.tickets - result.fate(QueueFate::Seated), result.tickets),
            cell(0.5),
            cell(0.9),
            result.passes_expired,
            result.fate(QueueFate::AdmittedSoldOut),
            result.sold_out_after_us.map_or("never".to_string(), duration_us),
        );
    }
    let violated: u64 = rows.iter().map(|row| row.result.violations.total).sum();
    let _ = writeln!(out, "\nInvariant violations over the sweep: {violated}.\n");
}
