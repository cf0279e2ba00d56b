//! The command line: `plan`, `run` and `load`; exit codes; the report files.
//!
//! Exit codes: 0 success; 1 no configuration met `--target-p99-ms`, an output file could not
//! be written, or `load` could not make its run (server unreachable, event not created, no
//! answer at all); 2 bad input (flags, scenario file, a URL `load` may not use); 3 an invariant
//! (`run`, or any seed of `swarm`) or a client-side check (`load`) was violated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::distribution::NormalDraw;
use crate::load::target::Target;
use crate::load::{self, EventChoice, LoadConfig, Mode, Spacing};
use crate::model::queue::{QueueRunOptions, simulate_queue};
use crate::model::{RunOptions, RunResult, simulate};
use crate::plan::{COMMIT_LATENCY_ASSUMED_MS, PlanInputs, compute};
use crate::recommend::search;
use crate::scenario::Scenario;
use crate::{charts, html, plan, queue_report, queue_swarm, recommend, report, swarm};

pub const EXIT_TARGET_MISSED: u8 = 1;
pub const EXIT_OUTPUT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_INVARIANT_VIOLATED: u8 = 3;
pub const EXIT_LOAD_FAILED: u8 = 1;
pub const EXIT_CHECK_VIOLATED: u8 = 3;

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
    #[command(override_usage = "kuota-sim run SCENARIO.toml [--seed N] [--report FILE.md] \
                                [--random-faults [--fault-seed N]] [--target-p99-ms X [--refused-share-max F]]")]
    Run(RunArgs),
    /// Run many seeds of a scenario with random fault schedules, in parallel, and report the
    /// first seed that breaks an invariant with the command that replays it.
    #[command(override_usage = "kuota-sim swarm SCENARIO.toml --seeds N [--meta-seed M] [--threads T]")]
    Swarm(SwarmArgs),
    /// Drive registrations against a running Kuota and check its answers (loopback only
    /// unless --allow-remote).
    Load(Box<LoadArgs>),
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
    /// Also write the report as Markdown to this file, with SVG charts, the seconds as CSV
    /// and a self-contained HTML report next to it.
    #[arg(long, value_name = "FILE.md")]
    report: Option<PathBuf>,
    /// Not an option: the report is written with --report.
    #[arg(long, hide = true, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the scenario's faults with the random schedule the swarm draws for this seed,
    /// and draw durations as the swarm does (how `swarm` replays a seed).
    #[arg(long)]
    random_faults: bool,
    /// With --random-faults: draw the faults from this seed instead of --seed's, which then
    /// gives the crowd alone (how `swarm` replays a seed that shares another seed's crowd).
    #[arg(long, value_name = "N", requires = "random_faults")]
    fault_seed: Option<u64>,
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
    /// Test only: the store commits stale epochs instead of fencing them.
    #[arg(long, hide = true)]
    break_fencing: bool,
    /// Queued scenarios: leave out the overbook × pass_ttl_seconds sweep under the report.
    #[arg(long)]
    no_sweep: bool,
    /// Test only (queued scenarios): a restarted owner draws a fresh seed instead of the stored one.
    #[arg(long, hide = true)]
    break_draw_seed: bool,
}

#[derive(Debug, Args)]
struct SwarmArgs {
    /// The scenario file (TOML); its faults are replaced by each seed's random schedule.
    scenario: PathBuf,
    /// How many seeds to run.
    #[arg(long)]
    seeds: u64,
    /// Seed of the swarm, from which every seed is derived [default: the scenario's seed].
    #[arg(long)]
    meta_seed: Option<u64>,
    /// Threads [default: the machine's cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Test only: the store commits stale epochs instead of fencing them.
    #[arg(long, hide = true)]
    break_fencing: bool,
    /// Test only (queued scenarios): a restarted owner draws a fresh seed instead of the stored one.
    #[arg(long, hide = true)]
    break_draw_seed: bool,
}

/// How the open loop spaces its requests.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArrivalsArg {
    /// Exponential gaps: a Poisson process, like a scenario's `poisson` spike.
    Poisson,
    /// Evenly spaced.
    Even,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The server's base URL, plain http (e.g. http://127.0.0.1:8080). Its host must be
    /// loopback (127.0.0.0/8, localhost, ::1) unless --allow-remote is given.
    #[arg(long)]
    url: String,
    /// Allow a host that is not loopback. Only for a deployment you own and may load; without
    /// it, load refuses to send anything anywhere but this machine.
    #[arg(long)]
    allow_remote: bool,
    /// Admin token, to create the event the run registers for.
    #[arg(long, env = "KUOTA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Register for this existing event instead of creating one (no admin token needed).
    #[arg(long)]
    event: Option<String>,
    /// Seats of each category of a created event.
    #[arg(long, default_value_t = 1_000)]
    capacity: u32,
    /// Categories of a created event (C1, C2, ...); demand spreads by free seats.
    #[arg(long, default_value_t = 1)]
    categories: u32,
    /// Hold time of a created event, in seconds (0: seats are confirmed at once).
    #[arg(long, default_value_t = 0)]
    hold_ttl_seconds: u32,
    /// Open loop: registrations due per second, whatever the answers.
    #[arg(long, conflicts_with = "users", required_unless_present_any = ["users", "queue"])]
    rate: Option<f64>,
    /// Open loop: seconds over which the rate ramps linearly from 0 to --rate.
    #[arg(long, default_value_t = 0.0)]
    ramp_seconds: f64,
    /// Open loop: how requests are spaced.
    #[arg(long, value_enum, default_value = "poisson")]
    arrivals: ArrivalsArg,
    /// Closed loop: virtual users, each waiting for its answer before the next registration.
    #[arg(long)]
    users: Option<u32>,
    /// Closed loop: pause between a user's registrations, in milliseconds.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// How long to send, in seconds (answers are collected up to one timeout longer).
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Requests to send at most, retries included.
    #[arg(long, default_value_t = 100_000)]
    requests_max: u64,
    /// Connections open at once at most [default: 1000 open loop; 2 × users closed loop].
    #[arg(long)]
    connections: Option<u32>,
    /// Longest wait for one answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Share of registrations sent again with the same Idempotency-Key, half of them while the
    /// first is in flight, half after its answer.
    #[arg(long, default_value_t = 0.0)]
    retry_share: f64,
    /// Share of registrations for an e-mail already used, with a new Idempotency-Key.
    #[arg(long, default_value_t = 0.0)]
    repeat_registrant_share: f64,
    /// Send again after a 503, 429 or 409 idempotency_key_in_flight, once Retry-After passed.
    #[arg(long)]
    honour_retry_after: bool,
    /// With --honour-retry-after: requests per attempt at most, the first included.
    #[arg(long, default_value_t = 5)]
    attempts_max: u32,
    /// With --honour-retry-after: extra wait, uniform from 0 to this, in milliseconds.
    #[arg(long, default_value_t = 500)]
    retry_jitter_ms: u64,
    /// Runtime threads of the generator; 1 keeps it on one core of a shared machine.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Seed of who registers for what and which registrations are sent again [default: from
    /// the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// A queued opening instead: create an event with a queue (needs --admin-token); each of
    /// --registrants joins its lobby, polls as Retry-After says, and registers with its pass.
    #[arg(long, conflicts_with_all = ["rate", "users", "event"])]
    queue: bool,
    /// With --queue: registrants in the lobby.
    #[arg(long, default_value_t = 100)]
    registrants: u32,
    /// With --queue: seconds from creating the event to its opens_at (the draw).
    #[arg(long, default_value_t = 2.0)]
    lobby_seconds: f64,
    /// With --queue: the queue's pass_ttl_seconds.
    #[arg(long, default_value_t = 600)]
    pass_ttl_seconds: u32,
    /// With --queue: the queue's overbook.
    #[arg(long, default_value_t = 1.0)]
    overbook: f64,
    /// With --queue: the queue's admit_per_second [default: none].
    #[arg(long)]
    admit_per_second: Option<f64>,
}

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan(args) => plan_command(&args),
        Command::Run(args) => run_command(&args),
        Command::Swarm(args) => swarm_command(&args),
        Command::Load(args) => load_command(&args),
    }
}

fn load_bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kuota-sim load: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// `Err` naming the flag when `value` is outside `low..=high`.
fn flag_within<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    low: T,
    high: T,
) -> Result<(), String> {
    if low <= value && value <= high {
        Ok(())
    } else {
        Err(format!("{flag}: must be between {low} and {high} (got {value})"))
    }
}

/// The run's configuration, every bound checked; the target is checked first, so a refused
/// URL is reported before anything else and nothing is sent.
fn load_config(args: &LoadArgs) -> Result<LoadConfig, String> {
    let target = Target::new(&args.url, args.allow_remote).map_err(|error| error.to_string())?;
    let event = match (&args.event, &args.admin_token) {
        (Some(id), _) => EventChoice::Existing(id.clone()),
        (None, Some(token)) => {
            flag_within("--categories", args.categories, 1, kuota_engine::limits::CATEGORIES_MAX as u32)?;
            flag_within("--capacity", args.capacity, 0, kuota_engine::limits::CATEGORY_CAPACITY_MAX)?;
            EventChoice::Create {
                admin_token: token.clone(),
                categories: args.categories,
                capacity: args.capacity,
                hold_ttl_seconds: args.hold_ttl_seconds,
            }
        }
        (None, None) => {
            return Err("give --event ID of an existing event, or --admin-token (or KUOTA_ADMIN_TOKEN) \
                        to create one"
                .into());
        }
    };
    flag_within("--seconds", args.seconds, f64::MIN_POSITIVE, load::SECONDS_MAX)?;
    flag_within("--requests-max", args.requests_max, 1, load::REQUESTS_MAX)?;
    flag_within("--timeout-ms", args.timeout_ms, 1, load::REQUEST_TIMEOUT_MS_MAX)?;
    flag_within("--retry-share", args.retry_share, 0.0, 1.0)?;
    flag_within("--repeat-registrant-share", args.repeat_registrant_share, 0.0, 1.0)?;
    flag_within("--attempts-max", args.attempts_max, 1, crate::scenario::ATTEMPTS_LIMIT)?;
    flag_within("--retry-jitter-ms", args.retry_jitter_ms, 0, load::RETRY_AFTER_WAIT_SECONDS_MAX * 1_000)?;
    flag_within("--threads", args.threads, 1, load::THREADS_MAX)?;
    let (mode, default_connections) = match (args.rate, args.users) {
        (Some(rate), None) => {
            flag_within("--rate", rate, f64::MIN_POSITIVE, load::RATE_MAX_PER_SECOND)?;
            flag_within("--ramp-seconds", args.ramp_seconds, 0.0, args.seconds)?;
            let spacing = match args.arrivals {
                ArrivalsArg::Poisson => Spacing::Poisson,
                ArrivalsArg::Even => Spacing::Even,
            };
            let mode = Mode::Open { rate_per_second: rate, ramp_seconds: args.ramp_seconds, spacing };
            (mode, load::OPEN_LOOP_CONNECTIONS_DEFAULT)
        }
        (None, Some(users)) => {
            flag_within("--users", users, 1, load::USERS_MAX)?;
            flag_within("--think-ms", args.think_ms, 0, load::REQUEST_TIMEOUT_MS_MAX)?;
            let mode = Mode::Closed { users, think: Duration::from_millis(args.think_ms) };
            (mode, (users * 2).min(load::CONNECTIONS_MAX))
        }
        // clap requires exactly one of --rate and --users.
        _ => return Err("give either --rate (open loop) or --users (closed loop)".into()),
    };
    let connections = args.connections.unwrap_or(default_connections);
    flag_within("--connections", connections, 1, load::CONNECTIONS_MAX)?;
    let seed = args.seed.unwrap_or_else(|| {
        // Any value will do; the clock makes two runs on one event use different keys and e-mails.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| since.as_nanos() as u64)
    });
    Ok(LoadConfig {
        target,
        event,
        mode,
        seconds: args.seconds,
        requests_max: args.requests_max,
        connections,
        timeout: Duration::from_millis(args.timeout_ms),
        retry_share: args.retry_share,
        repeat_registrant_share: args.repeat_registrant_share,
        honour_retry_after: args.honour_retry_after,
        attempts_max: args.attempts_max,
        retry_jitter: Duration::from_millis(args.retry_jitter_ms),
        threads: args.threads,
        seed,
    })
}

fn load_command(args: &LoadArgs) -> ExitCode {
    if args.queue {
        return queued_load_command(args);
    }
    let config = match load_config(args) {
        Ok(config) => config,
        Err(message) => return load_bad_input(message),
    };
    let outcome = match load::run(config) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("kuota-sim load: {error}");
            return ExitCode::from(EXIT_LOAD_FAILED);
        }
    };
    if let Some(exit) = report_load(args, &load::report::render(&outcome), outcome.violations()) {
        return exit;
    }
    if outcome.recorder.answered() == 0 {
        eprintln!("kuota-sim load: no request was answered");
        return ExitCode::from(EXIT_LOAD_FAILED);
    }
    ExitCode::SUCCESS
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
    if args.out.is_some() {
        return bad_input(
            "there is no --out: write the report with --report FILE.md (Markdown, with the HTML report, \
                          the charts and the seconds as CSV next to it)",
        );
    }
    let scenario = match Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(error) => return bad_input(error),
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    if scenario.queue.is_some() {
        return queued_run_command(args, &scenario, seed);
    }
    // A swarm's seed replayed: its faults on its crowd, run as the swarm runs it (`swarm::replay`).
    let replayed =
        (args.random_faults && args.target_p99_ms.is_none()).then(|| args.fault_seed.unwrap_or(seed));
    let scenario = if args.random_faults {
        swarm::with_random_faults(&scenario, args.fault_seed.unwrap_or(seed))
    } else {
        scenario
    };
    let options = RunOptions {
        break_model: args.break_model,
        progress: true,
        break_fencing: args.break_fencing,
        // A swarm seed's replay draws as the swarm did.
        normal_draw: if args.random_faults { NormalDraw::Ziggurat } else { NormalDraw::BoxMuller },
        ..RunOptions::default()
    };
    let started = Instant::now();
    let (text, result, verdict) = match args.target_p99_ms {
        None => {
            let result = match replayed {
                Some(fault_seed) => swarm::replay(&scenario, seed, fault_seed, options),
                None => simulate(&scenario, seed, options),
            };
            let verdict =
                if result.violations.total > 0 { Verdict::InvariantViolated } else { Verdict::Done };
            (report::render(&scenario, &result, None), Some(result), verdict)
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
        && let Err(error) = write_report(path, &text, &scenario, result, args.target_p99_ms)
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
        text.push_str(&report::render_body(&chosen, &result, Some(target)));
        result
    });
    Ok((text, result, verdict))
}

/// Writes the Markdown report, its charts (`<stem>-<chart>.svg`), every second of the run
/// (`<stem>-seconds.csv`) and the same report as one self-contained HTML page with the charts
/// inline (`<stem>.html`), all in the same folder.
fn write_report(
    path: &Path,
    text: &str,
    scenario: &Scenario,
    result: &RunResult,
    target_p99_ms: Option<f64>,
) -> Result<(), String> {
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or("report");
    let mut markdown = text.to_string();
    markdown.push_str("\n## Charts\n\n");
    markdown.push_str(&charts::caption(&result.metrics));
    let drawn = charts::draw(scenario, &result.metrics, target_p99_ms)?;
    for chart in &drawn {
        let file = format!("{stem}-{}.svg", chart.suffix);
        let chart_path = folder.join(&file);
        std::fs::write(&chart_path, &chart.svg)
            .map_err(|error| format!("{}: {error}", chart_path.display()))?;
        markdown.push_str(&format!("![{}]({file})\n\n", chart.title));
    }
    let csv_path = folder.join(format!("{stem}-seconds.csv"));
    std::fs::write(&csv_path, report::seconds_csv(&result.metrics))
        .map_err(|error| format!("{}: {error}", csv_path.display()))?;
    markdown
        .push_str(&format!("Every second of the run, as CSV: [{stem}-seconds.csv]({stem}-seconds.csv)\n"));
    let html_path = folder.join(format!("{stem}.html"));
    std::fs::write(&html_path, html::page(&scenario.name, &markdown, &drawn, stem))
        .map_err(|error| format!("{}: {error}", html_path.display()))?;
    std::fs::write(path, markdown).map_err(|error| format!("{}: {error}", path.display()))
}

fn swarm_command(args: &SwarmArgs) -> ExitCode {
    let scenario = match Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("kuota-sim swarm: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    if let Err(message) = flag_within("--seeds", args.seeds, 1, swarm::SEEDS_MAX)
        .and_then(|()| flag_within("--threads", threads, 1, swarm::THREADS_MAX))
    {
        eprintln!("kuota-sim swarm: {message}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let meta_seed = args.meta_seed.unwrap_or(scenario.seed);
    println!("meta-seed={meta_seed}");
    if scenario.queue.is_some() {
        return queued_swarm_command(args, &scenario, meta_seed, threads);
    }
    println!(
        "kuota-sim swarm: {}, {} seeds with random faults, {threads} threads",
        scenario.name, args.seeds
    );
    let options = RunOptions { break_fencing: args.break_fencing, progress: true, ..RunOptions::default() };
    let outcome = swarm::run(&scenario, meta_seed, args.seeds, threads, options);
    eprintln!(
        "kuota-sim swarm: {} seeds in {:.2} s of wall time ({:.2} ms per seed per thread)",
        outcome.seeds_run,
        outcome.elapsed.as_secs_f64(),
        outcome.elapsed.as_secs_f64() * 1_000.0 * threads as f64 / outcome.seeds_run.max(1) as f64
    );
    let Some(failure) = outcome.first_failure else {
        println!("every seed kept every invariant ({} seeds)", outcome.seeds_run);
        return ExitCode::SUCCESS;
    };
    println!(
        "first failing seed: {} (number {} of the swarm, on the crowd of seed {})",
        failure.seed, failure.index, failure.crowd_seed
    );
    for fault in &failure.faults {
        println!("  fault: {}", fault.describe());
    }
    for (check, count, detail) in &failure.violations {
        println!("  violated ({count} times): {check}: {detail}");
    }
    let broken = if args.break_fencing { " --break-fencing" } else { "" };
    println!(
        "replay: kuota-sim run {} --seed {} --random-faults --fault-seed {}{broken}",
        args.scenario.display(),
        failure.crowd_seed,
        failure.seed
    );
    ExitCode::from(EXIT_INVARIANT_VIOLATED)
}

/// `run` of a queued scenario: the queue model, its report and the sweep.
fn queued_run_command(args: &RunArgs, scenario: &Scenario, seed: u64) -> ExitCode {
    if args.target_p99_ms.is_some() || args.break_model || args.break_fencing || args.fault_seed.is_some() {
        return bad_input(
            "a queued scenario (with [queue]) takes neither --target-p99-ms, --break-model, --break-fencing \
             nor --fault-seed",
        );
    }
    let scenario = if args.random_faults {
        queue_swarm::with_random_queue_faults(scenario, seed)
    } else {
        scenario.clone()
    };
    let options = QueueRunOptions { break_draw_seed: args.break_draw_seed };
    let started = Instant::now();
    let result = simulate_queue(&scenario, seed, options);
    let sweep = if args.no_sweep { Vec::new() } else { queue_report::sweep(&scenario, seed) };
    let text = queue_report::render(&scenario, &result, &sweep);
    print!("{text}");
    eprintln!(
        "kuota-sim: {} registrants, queued, {} runs in {:.2} s of wall time",
        scenario.arrivals.registrants,
        1 + sweep.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.report
        && let Err(error) = std::fs::write(path, &text)
    {
        eprintln!("kuota-sim run: cannot write the report to {}: {error}", path.display());
        return ExitCode::from(EXIT_OUTPUT_FAILED);
    }
    let violated = result.violations.total > 0 || sweep.iter().any(|row| row.result.violations.total > 0);
    exit_code(if violated { Verdict::InvariantViolated } else { Verdict::Done })
}

/// `swarm` of a queued scenario: each seed draws queue settings and owner restarts.
fn queued_swarm_command(args: &SwarmArgs, scenario: &Scenario, meta_seed: u64, threads: usize) -> ExitCode {
    if args.break_fencing {
        eprintln!("kuota-sim swarm: a queued scenario has no fencing to break (try --break-draw-seed)");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    println!(
        "kuota-sim swarm: {}, {} seeds with random queue settings and owner restarts, {threads} threads",
        scenario.name, args.seeds
    );
    let options = QueueRunOptions { break_draw_seed: args.break_draw_seed };
    let outcome = queue_swarm::run(scenario, meta_seed, args.seeds, threads, options, true);
    eprintln!(
        "kuota-sim swarm: {} seeds in {:.2} s of wall time ({:.2} ms per seed per thread)",
        outcome.seeds_run,
        outcome.elapsed.as_secs_f64(),
        outcome.elapsed.as_secs_f64() * 1_000.0 * threads as f64 / outcome.seeds_run.max(1) as f64
    );
    let Some(failure) = outcome.first_failure else {
        println!("every seed kept every queue invariant ({} seeds)", outcome.seeds_run);
        return ExitCode::SUCCESS;
    };
    println!("first failing seed: {} (number {} of the swarm)", failure.seed, failure.index);
    println!("  drawn: {}", failure.drawn);
    for (check, count, detail) in &failure.violations {
        println!("  violated ({count} times): {check}: {detail}");
    }
    let broken = if args.break_draw_seed { " --break-draw-seed" } else { "" };
    println!(
        "replay: kuota-sim run {} --seed {} --random-faults --no-sweep{broken}",
        args.scenario.display(),
        failure.seed
    );
    ExitCode::from(EXIT_INVARIANT_VIOLATED)
}

/// `load --queue`: the settings, every bound checked; the target first, so that a refused URL
/// is reported before anything else and nothing is sent.
fn queued_load_config(args: &LoadArgs) -> Result<load::queue::QueueLoadConfig, String> {
    let target = Target::new(&args.url, args.allow_remote).map_err(|error| error.to_string())?;
    let admin_token = args
        .admin_token
        .clone()
        .ok_or("--queue creates its event: give --admin-token (or KUOTA_ADMIN_TOKEN)")?;
    flag_within("--capacity", args.capacity, 1, kuota_engine::limits::CATEGORY_CAPACITY_MAX)?;
    flag_within("--registrants", args.registrants, 1, load::queue::QUEUE_REGISTRANTS_MAX)?;
    flag_within("--lobby-seconds", args.lobby_seconds, 0.001, load::queue::LOBBY_SECONDS_MAX)?;
    flag_within(
        "--pass-ttl-seconds",
        args.pass_ttl_seconds,
        kuota_engine::limits::PASS_TTL_SECONDS_MIN,
        kuota_engine::limits::PASS_TTL_SECONDS_MAX,
    )?;
    flag_within("--overbook", args.overbook, 1.0, 10.0)?;
    if let Some(rate) = args.admit_per_second {
        flag_within("--admit-per-second", rate, 0.001, load::RATE_MAX_PER_SECOND)?;
    }
    flag_within("--seconds", args.seconds, f64::MIN_POSITIVE, load::SECONDS_MAX)?;
    flag_within("--timeout-ms", args.timeout_ms, 1, load::REQUEST_TIMEOUT_MS_MAX)?;
    let connections = args.connections.unwrap_or(load::OPEN_LOOP_CONNECTIONS_DEFAULT);
    flag_within("--connections", connections, 1, load::CONNECTIONS_MAX)?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| since.as_nanos() as u64)
    });
    Ok(load::queue::QueueLoadConfig {
        target,
        admin_token,
        capacity: args.capacity,
        registrants: args.registrants,
        lobby_seconds: args.lobby_seconds,
        pass_ttl_seconds: args.pass_ttl_seconds,
        overbook: args.overbook,
        admit_per_second: args.admit_per_second,
        seconds: args.seconds,
        connections,
        timeout: Duration::from_millis(args.timeout_ms),
        seed,
    })
}

/// Prints a load report and writes it to `--report` when given; the exit code that ends the
/// command when the report cannot be written or a client-side check was violated.
fn report_load(args: &LoadArgs, text: &str, violations: u64) -> Option<ExitCode> {
    print!("{text}");
    if let Some(path) = &args.report
        && let Err(error) = std::fs::write(path, text)
    {
        eprintln!("kuota-sim load: cannot write the report to {}: {error}", path.display());
        return Some(ExitCode::from(EXIT_OUTPUT_FAILED));
    }
    if violations > 0 {
        eprintln!("kuota-sim load: a client-side check was violated; see the Checks section");
        return Some(ExitCode::from(EXIT_CHECK_VIOLATED));
    }
    None
}

fn queued_load_command(args: &LoadArgs) -> ExitCode {
    let config = match queued_load_config(args) {
        Ok(config) => config,
        Err(message) => return load_bad_input(message),
    };
    let outcome = match load::queue::run(config) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("kuota-sim load: {error}");
            return ExitCode::from(EXIT_LOAD_FAILED);
        }
    };
    if let Some(exit) = report_load(args, &load::queue::render(&outcome), outcome.violations()) {
        return exit;
    }
    ExitCode::SUCCESS
}
