//! The report of a `load` run, as Markdown: what was sent, what came back and how fast, the
//! seats, and the client-side checks. Unlike `run`'s report it measures the wall clock, so no
//! two runs print the same figures; its first line is still `seed=<n>`, which fixes who
//! registers for what and which registrations are sent again.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::checks::CHECKS;
use super::{LoadOutcome, Mode, Spacing};
use crate::report::milliseconds;

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "–".into() } else { format!("{:.2}%", part as f64 * 100.0 / whole as f64) }
}

fn percentile_cells(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "– | – | – | – | –".into();
    }
    let at = |quantile: f64| milliseconds(histogram.value_at_quantile(quantile));
    format!("{} | {} | {} | {} | {}", at(0.50), at(0.95), at(0.99), at(0.999), milliseconds(histogram.max()))
}

/// The whole report; `seed=<n>` is its first line.
pub fn render(outcome: &LoadOutcome) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the `let _` keeps the sections free of noise.
    let _ = writeln!(out, "seed={}", outcome.config.seed);
    let _ = writeln!(out, "# kuota-sim load: {}\n", outcome.config.target.url());
    setup_section(&mut out, outcome);
    throughput_section(&mut out, outcome);
    answers_section(&mut out, outcome);
    seats_section(&mut out, outcome);
    checks_section(&mut out, outcome);
    out
}

fn setup_section(out: &mut String, outcome: &LoadOutcome) {
    let config = &outcome.config;
    let origin = if outcome.created_event { "created by this run" } else { "existing" };
    let _ = writeln!(out, "- event `{}` ({origin})", outcome.event_id);
    let _ = match config.mode {
        Mode::Open { rate_per_second, ramp_seconds, spacing } => writeln!(
            out,
            "- open loop: {rate_per_second} requests/s due, ramped from 0 over {ramp_seconds} s, {} arrivals",
            match spacing {
                Spacing::Poisson => "Poisson",
                Spacing::Even => "evenly spaced",
            }
        ),
        Mode::Closed { users, think } => {
            writeln!(
                out,
                "- closed loop: {users} users, {} ms of thinking between registrations",
                think.as_millis()
            )
        }
    };
    let _ = writeln!(
        out,
        "- bounds: {} s, {} requests, {} connections, {} ms timeout per request",
        config.seconds,
        config.requests_max,
        config.connections,
        config.timeout.as_millis()
    );
    let _ = writeln!(
        out,
        "- sent again with the same key: {:.1}% of registrations (about half of them concurrently); \
         new key for an e-mail already used: {:.1}%",
        config.retry_share * 100.0,
        config.repeat_registrant_share * 100.0
    );
    let _ = if config.honour_retry_after {
        writeln!(
            out,
            "- Retry-After honoured (plus up to {} ms of jitter), at most {} requests per attempt",
            config.retry_jitter.as_millis(),
            config.attempts_max
        )
    } else {
        writeln!(out, "- Retry-After not honoured: a refusal ends the attempt")
    };
    let threads = config.threads;
    let _ = match outcome.generator_cpu_seconds {
        Some(cpu) => writeln!(
            out,
            "- generator: {threads} runtime thread(s), {cpu:.2} s of CPU ({:.0}% of one core over the run)\n",
            cpu * 100.0 / outcome.elapsed.as_secs_f64().max(f64::EPSILON)
        ),
        None => writeln!(out, "- generator: {threads} runtime thread(s)\n"),
    };
}

fn throughput_section(out: &mut String, outcome: &LoadOutcome) {
    let recorder = &outcome.recorder;
    let answered = recorder.answered();
    let failed: u64 = recorder.failures.values().sum();
    let _ = writeln!(out, "## Throughput\n");
    let _ = writeln!(
        out,
        "- requests sent: {}; answered: {answered}; without an answer: {failed}; registrations abandoned \
         at the end: {}",
        outcome.requests_sent, outcome.abandoned
    );
    let span_seconds = recorder.last_answer_us as f64 / 1e6;
    if span_seconds > 0.0 {
        let _ = writeln!(
            out,
            "- answers/s: {:.1} (from the start to the last answer, {span_seconds:.3} s)",
            answered as f64 / span_seconds
        );
    }
    if let Some((first, last, rate)) = steady_rate(outcome) {
        let _ = writeln!(
            out,
            "- answers/s in seconds {first} to {last} (after the ramp, whole seconds): {rate:.1}"
        );
    }
    if let Some(peak) = recorder.per_second.iter().max() {
        let _ = writeln!(out, "- most answers in one second: {peak}");
    }
    let _ = writeln!(
        out,
        "- connections opened: {}; requests that waited for a free connection: {}",
        outcome.connections_opened, outcome.connection_waits
    );
    if outcome.connection_waits > 0 && matches!(outcome.config.mode, Mode::Open { .. }) {
        let _ = writeln!(
            out,
            "  (those waits are in the latencies; real registrants have a connection each: raise --connections)"
        );
    }
    if matches!(outcome.config.mode, Mode::Open { .. }) && !recorder.dispatch_lag.is_empty() {
        let lag = &recorder.dispatch_lag;
        let _ = writeln!(
            out,
            "- generator lag behind its schedule: p50 {} ms, p99 {} ms, max {} ms (counted in the latencies)",
            milliseconds(lag.value_at_quantile(0.5)),
            milliseconds(lag.value_at_quantile(0.99)),
            milliseconds(lag.max())
        );
    }
    let _ = writeln!(
        out,
        "- Retry-After waits: {}; refusals not sent again: {}; replayed answers: {}",
        recorder.retry_after_waits, recorder.refusals_left, recorder.replayed
    );
    if failed > 0 {
        let kinds: Vec<String> =
            recorder.failures.iter().map(|(kind, count)| format!("{kind}: {count}")).collect();
        let _ = writeln!(out, "- requests without an answer: {}", kinds.join(", "));
    }
    out.push('\n');
}

/// Answers per second over the whole seconds after the ramp and before the end of sending:
/// `(first second, last second, rate)`.
fn steady_rate(outcome: &LoadOutcome) -> Option<(usize, usize, f64)> {
    let ramp = match outcome.config.mode {
        Mode::Open { ramp_seconds, .. } => ramp_seconds,
        Mode::Closed { .. } => 0.0,
    };
    let first = ramp.ceil() as usize;
    let sending_seconds = outcome.config.seconds.min(outcome.recorder.last_answer_us as f64 / 1e6);
    let end = (sending_seconds.floor() as usize).min(outcome.recorder.per_second.len());
    if end <= first {
        return None;
    }
    let answers: u64 = outcome.recorder.per_second[first..end].iter().sum();
    Some((first, end - 1, answers as f64 / (end - first) as f64))
}

fn answers_section(out: &mut String, outcome: &LoadOutcome) {
    let recorder = &outcome.recorder;
    let answered = recorder.answered();
    let _ = writeln!(out, "## Answers\n");
    let _ = writeln!(
        out,
        "Latency from when each request was due to its answer, in milliseconds (hdrhistogram).\n"
    );
    let _ = writeln!(out, "| answer | count | share | p50 | p95 | p99 | p99.9 | max |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (row, histogram) in &recorder.answers {
        let count = histogram.len();
        let _ = writeln!(
            out,
            "| {row} | {count} | {} | {} |",
            percent(count, answered),
            percentile_cells(histogram)
        );
    }
    let _ = writeln!(
        out,
        "| all answers | {answered} | {} | {} |\n",
        percent(answered, answered),
        percentile_cells(&recorder.all_answers)
    );
}

fn seats_section(out: &mut String, outcome: &LoadOutcome) {
    let ledger = &outcome.recorder.ledger;
    let _ = writeln!(out, "## Seats\n");
    let _ = writeln!(
        out,
        "| category | free at the start | admitted (distinct 201) | server at the end: confirmed | held | waitlisted |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (code, free) in ledger.seats() {
        let admitted = ledger.admitted().get(code).copied().unwrap_or(0);
        let server = match &outcome.server_figures {
            Ok(figures) => figures.get(code).map_or("– | – | –".into(), |figures| {
                format!("{} | {} | {}", figures.confirmed, figures.held, figures.waitlisted)
            }),
            Err(_) => "– | – | –".into(),
        };
        let _ = writeln!(out, "| {code} | {free} | {admitted} | {server} |");
    }
    if let Err(error) = &outcome.server_figures {
        let _ = writeln!(out, "\nThe event could not be read at the end: {error}");
    }
    out.push('\n');
}

fn checks_section(out: &mut String, outcome: &LoadOutcome) {
    let ledger = &outcome.recorder.ledger;
    let _ = writeln!(out, "## Checks\n");
    for check in CHECKS {
        let skipped = check == super::checks::CHECK_SERVER_COUNTS
            && (!outcome.created_event || outcome.server_figures.is_err());
        match ledger.violations.of(check) {
            None if skipped => {
                let _ = writeln!(
                    out,
                    "- not checked: {check} (only for an event this run created and read back)"
                );
            }
            None => {
                let _ = writeln!(out, "- ok: {check}");
            }
            Some(found) => {
                let _ = writeln!(out, "- VIOLATED ({} times): {check}", found.count);
                for detail in &found.details {
                    let _ = writeln!(out, "  - {detail}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\nReplays compared with the first decided answer of their key: {}",
        ledger.replays_compared
    );
}
