//! The command line: `plan`, `run` and (later) `load`; exit codes; the report files.
//!
//! Exit codes: 0 success; 1 no configuration met `--target-p99-ms`, or an output file could not
//! be written; 2 bad input (flags, scenario file) or a subcommand that is not available yet;
//! 3 an invariant was violated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::model::{RunOptions, RunResult, simulate};
use crate::plan::{COMMIT_LATENCY_ASSUMED_MS, PlanInputs, compute};
use crate::recommend::search;
use crate::scenario::Scenario;
use crate::{charts, plan, recommend, report};

pub const EXIT_TARGET_MISSED: u8 = 1;
pub const EXIT_OUTPUT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_INVARIANT_VIOLATED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "kuota-sim",
    version,
    about = "Capacity planning for Kuota on the real engine, in virtual time"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Size a deployment from a few figures; every result is printed with its formula.
    Plan(PlanArgs),
    /// Simulate a scenario file on the real EventQuota in virtual time.
    Run(RunArgs),
    /// Drive load against a running server (not available yet: it comes with the HTTP API).
    Load {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Users active on the day.
    #[arg(long)]
    active_users: f64,
    /// Share of them active in the peak minute (0 < x <= 1).
    #[arg(long)]
    peak_share: f64,
    /// Requests one active user makes per minute.
    #[arg(long)]
    actions_per_minute: f64,
    /// Target latency in milliseconds.
    #[arg(long)]
    latency_ms: f64,
    /// Registrations one node handles per second, from a measured benchmark.
    #[arg(long)]
    node_rate: f64,
    /// Registrations per database transaction.
    #[arg(long)]
    batch_size: f64,
    /// Share of capacity kept spare on nodes and connections (0 <= x < 1).
    #[arg(long, default_value_t = 0.3)]
    headroom: f64,
    /// Share of requests that are registration writes.
    #[arg(long, default_value_t = 1.0)]
    write_share: f64,
    /// Time one transaction holds a database connection, in milliseconds [default: 10, a
    /// placeholder the output marks as assumed].
    #[arg(long)]
    commit_latency_ms: Option<f64>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML); see sim/scenarios/.
    scenario: PathBuf,
    /// Seed of the run; overrides the scenario's `seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the report as Markdown to this file, with SVG charts next to it.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Search the smallest node count and batch settings whose p99 is at most this.
    #[arg(long)]
    target_p99_ms: Option<f64>,
    /// With --target-p99-ms: the largest share of answers that may be 503 or 429.
    #[arg(long, default_value_t = 0.01)]
    refused_share_max: f64,
    /// Debug: make the simulator's own bookkeeping count every confirmation twice, so that
    /// the invariant checks fire. For tests of the checker.
    #[arg(long, hide = true)]
    break_model: bool,
}

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan(args) => plan_command(&args),
        Command::Run(args) => run_command(&args),
        Command::Load { .. } => {
            eprintln!("kuota-sim load: not available yet; it comes with the HTTP API.");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn plan_command(args: &PlanArgs) -> ExitCode {
    let inputs = PlanInputs {
        active_users: args.active_users,
        peak_share: args.peak_share,
        actions_per_minute: args.actions_per_minute,
        latency_ms: args.latency_ms,
        node_rate: args.node_rate,
        batch_size: args.batch_size,
        headroom: args.headroom,
        write_share: args.write_share,
        commit_latency_ms: args.commit_latency_ms.unwrap_or(COMMIT_LATENCY_ASSUMED_MS),
        commit_latency_assumed: args.commit_latency_ms.is_none(),
    };
    match compute(&inputs) {
        Ok(result) => {
            print!("{}", plan::render(&inputs, &result));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kuota-sim plan: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kuota-sim run: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// How a run (or a search) ended, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    TargetMissed,
    InvariantViolated,
}

fn run_command(args: &RunArgs) -> ExitCode {
    let scenario = match Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(error) => return bad_input(error),
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    let options = RunOptions { break_model: args.break_model, progress: true };
    let started = Instant::now();
    let (text, result, verdict) = match args.target_p99_ms {
        None => {
            let result = simulate(&scenario, seed, options);
            let verdict =
                if result.violations.total > 0 { Verdict::InvariantViolated } else { Verdict::Done };
            (report::render(&scenario, &result), Some(result), verdict)
        }
        Some(target) => match recommend_text(&scenario, seed, target, args.refused_share_max, options) {
            Ok(found) => found,
            Err(code) => return code,
        },
    };
    print!("{text}");
    if let Some(result) = &result {
        eprintln!(
            "kuota-sim: {} registrants, {} events in {:.2} s of wall time",
            scenario.arrivals.registrants,
            result.metrics.events_processed,
            started.elapsed().as_secs_f64()
        );
    }
    if let (Some(path), Some(result)) = (&args.report, &result)
        && let Err(error) = write_report(path, &text, result)
    {
        eprintln!("kuota-sim run: cannot write the report: {error}");
        return ExitCode::from(EXIT_OUTPUT_FAILED);
    }
    exit_code(verdict)
}

fn exit_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Done => ExitCode::SUCCESS,
        Verdict::TargetMissed => ExitCode::from(EXIT_TARGET_MISSED),
        Verdict::InvariantViolated => {
            eprintln!("kuota-sim run: an invariant was violated; see the Invariants section");
            ExitCode::from(EXIT_INVARIANT_VIOLATED)
        }
    }
}

/// The search table and, when one was found, the chosen configuration's report.
fn recommend_text(
    scenario: &Scenario,
    seed: u64,
    target: f64,
    refused_share_max: f64,
    options: RunOptions,
) -> Result<(String, Option<RunResult>, Verdict), ExitCode> {
    if !(target.is_finite() && target > 0.0) {
        return Err(bad_input(format!("--target-p99-ms: must be a number > 0 (got {target})")));
    }
    if !(0.0..=1.0).contains(&refused_share_max) {
        return Err(bad_input(format!(
            "--refused-share-max: must be between 0 and 1 (got {refused_share_max})"
        )));
    }
    let found = search(scenario, seed, target, refused_share_max, options);
    let mut text = format!("seed={seed}\n{}", recommend::render(&found, target, refused_share_max));
    let verdict = match (&found.chosen, found.any_violation) {
        (_, true) => Verdict::InvariantViolated,
        (None, false) => Verdict::TargetMissed,
        (Some(_), false) => Verdict::Done,
    };
    let result = found.chosen.map(|(_, result, chosen)| {
        text.push_str(&report::render_body(&chosen, &result));
        result
    });
    Ok((text, result, verdict))
}

/// Writes the Markdown report, its charts (`<stem>-<chart>.svg`) and every second of the run
/// (`<stem>-seconds.csv`), all in the same folder.
fn write_report(path: &Path, text: &str, result: &RunResult) -> Result<(), String> {
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or("report");
    let mut markdown = text.to_string();
    markdown.push_str("\n## Charts\n\n");
    markdown.push_str(&format!(
        "The charts cover the first {} s after opening, in buckets of {} s.\n\n",
        result.metrics.window.seconds(),
        result.metrics.window.bucket_seconds
    ));
    for chart in charts::draw(&result.metrics)? {
        let file = format!("{stem}-{}.svg", chart.suffix);
        let chart_path = folder.join(&file);
        std::fs::write(&chart_path, chart.svg)
            .map_err(|error| format!("{}: {error}", chart_path.display()))?;
        markdown.push_str(&format!("![{}]({file})\n\n", chart.title));
    }
    let csv_path = folder.join(format!("{stem}-seconds.csv"));
    std::fs::write(&csv_path, report::seconds_csv(&result.metrics))
        .map_err(|error| format!("{}: {error}", csv_path.display()))?;
    markdown
        .push_str(&format!("Every second of the run, as CSV: [{stem}-seconds.csv]({stem}-seconds.csv)\n"));
    std::fs::write(path, markdown).map_err(|error| format!("{}: {error}", path.display()))
}
