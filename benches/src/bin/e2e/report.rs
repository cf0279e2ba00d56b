//! What one contender measured in one pass, the medians over repeated passes, the table and the
//! goals. Ratios are taken inside a pass (contenders measured side by side, minutes apart) and
//! only then reduced to their median.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::servers::Contender;

/// Kuota's goals, from the benchmarks issue.
const GOAL_SHARE_OF_CEILING: f64 = 0.40;
/// Kuota's accepted/s over the durable ceiling's: the goal of the throughput issue.
const GOAL_SHARE_OF_DURABLE_CEILING: f64 = 0.8;
const GOAL_TIMES_LOCK_AND_TRANSACTION: f64 = 100.0;
const GOAL_PACED_P99_MS: f64 = 10.0;
const GOAL_SOLD_OUT_SHARE_OF_CEILING_GET: f64 = 0.8;

/// p50, p99 and max of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        (!histogram.is_empty()).then(|| Latency {
            p50: histogram.value_at_quantile(0.50) as f64,
            p99: histogram.value_at_quantile(0.99) as f64,
            max: histogram.max() as f64,
        })
    }

    pub fn show(latency: Option<Latency>) -> String {
        latency.map_or("—".into(), |latency| {
            format!("{} / {} / {}", millis(latency.p50), millis(latency.p99), millis(latency.max))
        })
    }
}

/// What one contender measured in one pass.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    pub load_average: f64,
    pub accepted: u64,
    pub accepted_per_second: f64,
    pub selling_seconds: f64,
    /// Passes whose admissions filled the hot event, of `passes`.
    pub sold_out_passes: u32,
    pub passes: u32,
    pub success_latency: Option<Latency>,
    pub admission_errors: u64,
    pub already_registered: u64,
    pub generator_busy: f64,
    pub server_cpu_per_accepted_us: Option<f64>,
    pub transactions_per_accepted: Option<f64>,
    pub statements_per_accepted: Option<f64>,
    pub rows_written_per_accepted: Option<f64>,
    /// MariaDB's CPU on the contender's connections per accepted registration, in µs.
    pub database_cpu_per_accepted_us: Option<f64>,
    /// The MariaDB process's CPU (every thread, every client) per accepted registration, in µs.
    pub database_process_cpu_per_accepted_us: Option<f64>,
    pub lock_attempts_per_accepted: Option<f64>,
    /// Kuota: mean time of one write-behind commit during admissions, in ms.
    pub commit_ms: Option<f64>,
    pub sold_out_answers_per_second: f64,
    pub sold_out_latency: Option<Latency>,
    pub sold_out_errors: u64,
    pub statements_per_sold_out: Option<f64>,
    pub server_cpu_per_sold_out_us: Option<f64>,
    pub paced_rate: f64,
    pub paced_latency: Option<Latency>,
    pub paced_errors: u64,
    /// The open loop's slowest moments (see `PhaseResult::slow_moments`); one pass's only, not
    /// combined.
    pub paced_slow_moments: Vec<(f64, f64)>,
    /// Pages the store flushed during the open loop (server-wide), and its checkpoint age when
    /// the open loop started, as a share of its limit.
    pub paced_pages_flushed: Option<f64>,
    pub paced_checkpoint_share: Option<f64>,
    pub stored: Option<u64>,
    pub topped_up: u64,
    pub oversold: Option<u64>,
    pub duplicates: Option<u64>,
    pub lost: Option<u64>,
    pub peak_resident_bytes: Option<u64>,
    /// Accepted/s over the ceiling's requests/s in the same pass.
    pub share_of_ceiling: Option<f64>,
    /// Accepted/s over the durable ceiling's in the same pass: the share of what any design
    /// that acknowledges after a commit reaches here.
    pub share_of_durable_ceiling: Option<f64>,
    /// Sold-out answers/s over the ceiling's `GET`/s in the same pass.
    pub sold_out_share_of_ceiling: Option<f64>,
    /// Sold-out answers/s over the ceiling's `POST`/s (its admissions: the same body, read,
    /// parsed and answered at once) in the same pass: what a server that reads the body can
    /// reach here at most.
    pub sold_out_share_of_ceiling_post: Option<f64>,
    /// Kuota's accepted/s over this contender's, in the same pass.
    pub kuota_times_this: Option<f64>,
}

/// The measurements of one pass (one repeat, one pinning), in contender order.
pub type Pass = Vec<(Contender, Measurement)>;

/// Fills in the ratios between contenders of one pass.
pub fn relate(pass: &mut Pass) {
    let find = |pass: &Pass, wanted: Contender| {
        pass.iter().find(|(contender, _)| *contender == wanted).map(|(_, measured)| measured.clone())
    };
    let ceiling = find(pass, Contender::Ceiling);
    let durable_ceiling = find(pass, Contender::DurableCeiling);
    let kuota = find(pass, Contender::Kuota);
    for (_, measured) in pass.iter_mut() {
        if let Some(ceiling) = &ceiling {
            measured.share_of_ceiling = ratio(measured.accepted_per_second, ceiling.accepted_per_second);
            measured.sold_out_share_of_ceiling =
                ratio(measured.sold_out_answers_per_second, ceiling.sold_out_answers_per_second);
            measured.sold_out_share_of_ceiling_post =
                ratio(measured.sold_out_answers_per_second, ceiling.accepted_per_second);
        }
        if let Some(durable_ceiling) = &durable_ceiling {
            measured.share_of_durable_ceiling =
                ratio(measured.accepted_per_second, durable_ceiling.accepted_per_second);
        }
        if let Some(kuota) = &kuota {
            measured.kuota_times_this = ratio(kuota.accepted_per_second, measured.accepted_per_second);
        }
    }
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

/// The median of a field over runs; `None` when no run has it.
fn median_of(runs: &[&Measurement], field: impl Fn(&Measurement) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(|run| field(run)).collect();
    (!values.is_empty()).then(|| median(values))
}

fn median_latency(runs: &[&Measurement], field: impl Fn(&Measurement) -> Option<Latency>) -> Option<Latency> {
    Some(Latency {
        p50: median_of(runs, |run| field(run).map(|latency| latency.p50))?,
        p99: median_of(runs, |run| field(run).map(|latency| latency.p99))?,
        max: median_of(runs, |run| field(run).map(|latency| latency.max))?,
    })
}

/// Medians over repeated runs; for the integrity counts (oversold, duplicates, lost) the worst.
pub fn combine(runs: &[&Measurement]) -> Measurement {
    let value = |field: fn(&Measurement) -> f64| median_of(runs, |run| Some(field(run))).unwrap_or(0.0);
    let option = |field: fn(&Measurement) -> Option<f64>| median_of(runs, field);
    let count = |field: fn(&Measurement) -> u64| {
        median_of(runs, |run| Some(field(run) as f64)).unwrap_or(0.0).round() as u64
    };
    let worst = |field: fn(&Measurement) -> Option<u64>| runs.iter().filter_map(|run| field(run)).max();
    let whole = |field: fn(&Measurement) -> Option<u64>| {
        median_of(runs, |run| field(run).map(|value| value as f64)).map(|value| value.round() as u64)
    };
    Measurement {
        load_average: value(|run| run.load_average),
        accepted: count(|run| run.accepted),
        accepted_per_second: value(|run| run.accepted_per_second),
        selling_seconds: value(|run| run.selling_seconds),
        sold_out_passes: runs.iter().map(|run| run.sold_out_passes).sum(),
        passes: runs.iter().map(|run| run.passes).sum(),
        success_latency: median_latency(runs, |run| run.success_latency),
        admission_errors: count(|run| run.admission_errors),
        already_registered: count(|run| run.already_registered),
        generator_busy: value(|run| run.generator_busy),
        server_cpu_per_accepted_us: option(|run| run.server_cpu_per_accepted_us),
        transactions_per_accepted: option(|run| run.transactions_per_accepted),
        statements_per_accepted: option(|run| run.statements_per_accepted),
        rows_written_per_accepted: option(|run| run.rows_written_per_accepted),
        database_cpu_per_accepted_us: option(|run| run.database_cpu_per_accepted_us),
        database_process_cpu_per_accepted_us: option(|run| run.database_process_cpu_per_accepted_us),
        lock_attempts_per_accepted: option(|run| run.lock_attempts_per_accepted),
        commit_ms: option(|run| run.commit_ms),
        sold_out_answers_per_second: value(|run| run.sold_out_answers_per_second),
        sold_out_latency: median_latency(runs, |run| run.sold_out_latency),
        sold_out_errors: count(|run| run.sold_out_errors),
        statements_per_sold_out: option(|run| run.statements_per_sold_out),
        server_cpu_per_sold_out_us: option(|run| run.server_cpu_per_sold_out_us),
        paced_rate: value(|run| run.paced_rate),
        paced_latency: median_latency(runs, |run| run.paced_latency),
        paced_errors: count(|run| run.paced_errors),
        paced_slow_moments: Vec::new(),
        paced_pages_flushed: option(|run| run.paced_pages_flushed),
        paced_checkpoint_share: option(|run| run.paced_checkpoint_share),
        stored: whole(|run| run.stored),
        topped_up: count(|run| run.topped_up),
        oversold: worst(|run| run.oversold),
        duplicates: worst(|run| run.duplicates),
        lost: worst(|run| run.lost),
        peak_resident_bytes: whole(|run| run.peak_resident_bytes),
        share_of_ceiling: option(|run| run.share_of_ceiling),
        share_of_durable_ceiling: option(|run| run.share_of_durable_ceiling),
        sold_out_share_of_ceiling: option(|run| run.sold_out_share_of_ceiling),
        sold_out_share_of_ceiling_post: option(|run| run.sold_out_share_of_ceiling_post),
        kuota_times_this: option(|run| run.kuota_times_this),
    }
}

/// A row of the table: its label and how a measurement shows in it.
type Row = (&'static str, fn(&Measurement) -> String);

const ROWS: &[Row] = &[
    ("**accepted registrations/s** (closed loop)", |m| rate(m.accepted_per_second)),
    ("  ÷ ceiling requests/s (same pass)", |m| factor(m.share_of_ceiling, 2)),
    ("  ÷ durable-ceiling requests/s (same pass)", |m| factor(m.share_of_durable_ceiling, 2)),
    ("  kuota ÷ this", |m| factor(m.kuota_times_this, 1)),
    ("  accepted / selling window (s)", |m| {
        let full = match (m.sold_out_passes, m.passes) {
            (0, _) => "not full".to_string(),
            (sold, passes) if sold == passes => "sold out".to_string(),
            (sold, passes) => format!("sold out in {sold} of {passes} passes"),
        };
        format!("{} in {:.2} s, {full}", m.accepted, m.selling_seconds)
    }),
    ("  success latency p50 / p99 / max (ms)", |m| Latency::show(m.success_latency)),
    ("  errors (429/503/other/broken)", |m| m.admission_errors.to_string()),
    ("  already_registered answers", |m| m.already_registered.to_string()),
    ("**sold-out answers/s** (ceiling: GET)", |m| rate(m.sold_out_answers_per_second)),
    ("  ÷ ceiling GET/s (same pass)", |m| factor(m.sold_out_share_of_ceiling, 2)),
    ("  ÷ ceiling POST/s of the same body (its admissions)", |m| {
        factor(m.sold_out_share_of_ceiling_post, 2)
    }),
    ("  rejection latency p50 / p99 / max (ms)", |m| Latency::show(m.sold_out_latency)),
    ("  errors", |m| m.sold_out_errors.to_string()),
    ("**open loop at ½ max**: rate/s", |m| rate(m.paced_rate)),
    ("  success latency p50 / p99 / max (ms)", |m| Latency::show(m.paced_latency)),
    ("  errors", |m| m.paced_errors.to_string()),
    ("  store: pages flushed meanwhile (server-wide)", |m| decimal_places(m.paced_pages_flushed, 0)),
    ("  store: checkpoint age at its start (share of the limit)", |m| {
        m.paced_checkpoint_share.map_or("—".into(), |share| format!("{:.0} %", share * 100.0))
    }),
    ("registrations stored (hot event)", |m| match m.stored {
        Some(stored) if m.topped_up > 0 => format!("{stored} ({} by harness)", m.topped_up),
        Some(stored) => stored.to_string(),
        None => "—".into(),
    }),
    ("oversold seats / duplicate registrants / lost 201s", |m| {
        let show = |value: Option<u64>| value.map_or("—".into(), |value| value.to_string());
        format!("{} / {} / {}", show(m.oversold), show(m.duplicates), show(m.lost))
    }),
    ("DB transactions per accepted (counted by the server)", |m| decimal(m.transactions_per_accepted)),
    ("  mean write-behind commit (ms)", |m| decimal(m.commit_ms)),
    ("  Redis lock attempts per accepted", |m| decimal(m.lock_attempts_per_accepted)),
    ("DB statements per accepted (incl. BEGIN/COMMIT)", |m| decimal(m.statements_per_accepted)),
    ("DB rows written per accepted", |m| decimal(m.rows_written_per_accepted)),
    ("DB CPU per accepted, the contender's connections (µs)", |m| {
        decimal_places(m.database_cpu_per_accepted_us, 0)
    }),
    ("  MariaDB process CPU per accepted, all clients (µs)", |m| {
        decimal_places(m.database_process_cpu_per_accepted_us, 0)
    }),
    ("DB statements per sold-out answer", |m| decimal(m.statements_per_sold_out)),
    ("server CPU per accepted (µs)", |m| decimal_places(m.server_cpu_per_accepted_us, 0)),
    ("server CPU per sold-out answer (µs)", |m| decimal_places(m.server_cpu_per_sold_out_us, 0)),
    ("server peak RSS (MiB, VmHWM)", |m| {
        m.peak_resident_bytes.map_or("—".into(), |bytes| format!("{:.1}", bytes as f64 / 1_048_576.0))
    }),
    ("generator CPU during admissions (% of a core)", |m| format!("{:.0}", m.generator_busy * 100.0)),
    ("1-min load average before the run", |m| format!("{:.2}", m.load_average)),
];

/// The Markdown table of one pinning mode: metrics down, contenders across.
pub fn table(columns: &[(Contender, Measurement)]) -> String {
    let mut text = String::from("| |");
    for (contender, _) in columns {
        let _ = write!(text, " {} |", contender.name());
    }
    text.push_str("\n|---|");
    text.push_str(&"---:|".repeat(columns.len()));
    text.push('\n');
    for (label, show) in ROWS {
        let _ = write!(text, "| {label} |");
        for (_, measured) in columns {
            let _ = write!(text, " {} |", show(measured));
        }
        text.push('\n');
    }
    text
}

/// Kuota's goals against the measurements of one pinning mode.
pub fn goals(columns: &[(Contender, Measurement)]) -> String {
    let get = |wanted: Contender| columns.iter().find(|(contender, _)| *contender == wanted).map(|(_, m)| m);
    let Some(kuota) = get(Contender::Kuota) else {
        return "Kuota was not measured: no goals to check.\n".into();
    };
    let mut text = String::new();
    let mut line = |name: &str, measured: Option<f64>, goal: &str, met: fn(f64) -> bool| {
        let (value, verdict) = match measured {
            Some(value) => (format!("{value:.2}"), if met(value) { "met" } else { "MISSED" }),
            None => ("—".into(), "not measured"),
        };
        let _ = writeln!(text, "- {name}: {value} (goal {goal}): {verdict}");
    };
    line("accepted/s ÷ ceiling requests/s", kuota.share_of_ceiling, "≥ 0.40", |v| {
        v >= GOAL_SHARE_OF_CEILING
    });
    line("accepted/s ÷ durable-ceiling accepted/s", kuota.share_of_durable_ceiling, "≥ 0.8", |v| {
        v >= GOAL_SHARE_OF_DURABLE_CEILING
    });
    let times_lock = get(Contender::LockAndTransaction).and_then(|lock| lock.kuota_times_this);
    line("accepted/s ÷ lock-and-transaction accepted/s", times_lock, "≥ 100", |v| {
        v >= GOAL_TIMES_LOCK_AND_TRANSACTION
    });
    let p99 = kuota.paced_latency.map(|latency| latency.p99 / 1_000.0);
    line("p99 (ms) at half its maximum rate, open loop", p99, "≤ 10", |v| v <= GOAL_PACED_P99_MS);
    line("sold-out answers/s ÷ ceiling GET/s", kuota.sold_out_share_of_ceiling, "≥ 0.8", |v| {
        v >= GOAL_SOLD_OUT_SHARE_OF_CEILING_GET
    });
    let oversold = kuota.oversold.map(|value| value as f64);
    line("oversold seats", oversold, "0", |v| v == 0.0);
    let duplicates = kuota.duplicates.map(|value| value as f64);
    line("duplicate registrants", duplicates, "0", |v| v == 0.0);
    text
}

fn millis(microseconds: f64) -> String {
    let milliseconds = microseconds / 1_000.0;
    if milliseconds < 10.0 { format!("{milliseconds:.2}") } else { format!("{milliseconds:.0}") }
}

fn rate(per_second: f64) -> String {
    let whole = per_second.round() as u64;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn factor(value: Option<f64>, places: usize) -> String {
    value.map_or("—".into(), |value| format!("{value:.places$}×"))
}

fn decimal(value: Option<f64>) -> String {
    decimal_places(value, 2)
}

fn decimal_places(value: Option<f64>, places: usize) -> String {
    value.map_or("—".into(), |value| format!("{value:.places$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn rates_are_grouped_by_thousands() {
        assert_eq!(rate(1_234_567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
    }
}
