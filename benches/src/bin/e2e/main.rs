//! `e2e`: Kuota against the designs people run today, in one command, on this machine.
//!
//! Starts each contender in turn on loopback (the `ceiling`, `durable-ceiling`,
//! `lock-and-transaction` and `redis-counter` baselines of the `baseline` binary, then the real
//! `kuota`), each with a fresh
//! MariaDB database and its own Redis key prefix, drives every one with the same load from the
//! same generator, and prints one table per pinning mode and Kuota's goals. It builds nothing:
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p kuota-benches --bin e2e -- --seconds 10
//! ```
//!
//! # Layout
//! - `http`: the minimal HTTP/1.1 keep-alive client and the requests.
//! - `load`: closed- and open-loop load over N connections, with latency histograms.
//! - `servers`: the contenders' binaries, starting (pinned or not) and stopping them.
//! - `database`: per-contender database and user, MariaDB's counters, integrity checks, Redis.
//! - `scenario`: the phases every contender goes through.
//! - `overload`: `--overload`, Kuota past its sustainable rate and with many connections.
//! - `scale_out`: `--scale-out`, one node against two over the same store.
//! - `queue`: `--queue`, durable queue joins and ticket reads beside the ceiling's `GET`.
//! - `report`: measurements, medians over repeats, the table and the goals.
//! - `system`: `/proc` readings (CPU time, peak RSS, load) and `taskset` pinning.

mod database;
mod http;
mod load;
mod overload;
mod queue;
mod report;
mod scale_out;
mod scenario;
mod servers;
mod system;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

use crate::database::Admin;
use crate::report::{Measurement, Pass};
use crate::scenario::{Run, Settings};
use crate::servers::{Binaries, Contender};

/// The core servers are pinned to, and the core the generator is pinned to.
const SERVER_CORE: usize = 0;
const GENERATOR_CORE: &str = "1";
/// Every core, to unpin the generator again (taskset keeps the ones that exist).
const ALL_CORES: &str = "0-1023";
/// The hot event of `--seats short`: sold out within about two seconds here, the opening's burst.
const SEATS_SHORT: u64 = 30_000;
/// The hot event of `--seats long`: at least ten seconds of steady selling here.
const SEATS_LONG: u64 = 300_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pinning {
    /// Server on core 0, load generator on core 1 (MariaDB and Redis float).
    Pinned,
    /// Everything floats over all cores.
    Unpinned,
    /// Pinned, then unpinned.
    Both,
}

#[derive(Debug, Parser)]
#[command(
    name = "e2e",
    about = "Kuota against the lock-and-transaction and Redis-counter designs, end to end"
)]
struct Args {
    /// Seconds of each phase (admissions stop earlier once the event is sold out).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unmeasured load before the admissions.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Client connections (closed loop: requests in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seats of the hot event: `short` (30,000: sold out within two seconds here, the opening's
    /// burst), `long` (300,000: at least 10 s of steady selling here) or a number. Several
    /// (comma-separated) run one after the other, each with its own tables.
    #[arg(long, value_delimiter = ',', default_value = "short", value_parser = parse_seats)]
    seats: Vec<u64>,
    /// Passes over all contenders; the table shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[arg(long, value_enum, default_value_t = Pinning::Both)]
    pinning: Pinning,
    /// Contenders, in order (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,durable-ceiling,lock-and-transaction,redis-counter,kuota"
    )]
    contenders: Vec<String>,
    /// MariaDB as an administrator (databases and users are created and dropped).
    #[arg(long, env = "KUOTA_BENCH_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
    mysql_url: String,
    /// Contenders reach MariaDB through this Unix socket instead of TCP (the administrator
    /// connection still uses --mysql-url).
    #[arg(long, value_name = "PATH")]
    mysql_socket: Option<String>,
    #[arg(long, env = "KUOTA_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// HTTP worker threads of every server [default: the number of cores, Kuota's default].
    #[arg(long)]
    http_workers: Option<usize>,
    /// Percent of requests that repeat an earlier registrant's e-mail (with a new key).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=50))]
    resubmit_percent: u64,
    /// RUST_LOG for Kuota (`info` logs every request; the baselines log none).
    #[arg(long, default_value = "warn")]
    kuota_log: String,
    /// An extra Kuota setting, as `KUOTA_NAME=value` (repeatable; for experiments such as
    /// `KUOTA_FLUSH_INTERVAL_MS=0`). The benchmark proper runs Kuota's defaults.
    #[arg(long = "kuota-setting", value_name = "KUOTA_NAME=VALUE", value_parser = parse_kuota_setting)]
    kuota_settings: Vec<(String, String)>,
    /// Database pool size of the baselines (Kuota's is its own).
    #[arg(long, default_value_t = 32)]
    database_connections: u32,
    /// Pause between attempts on a busy lock in lock-and-transaction, in ms.
    #[arg(long, default_value_t = 2)]
    lock_retry_ms: u64,
    /// Most requests one phase sends.
    #[arg(long, default_value_t = 10_000_000)]
    requests_max: u64,
    /// Folder with `kuota` and `baseline` [default: this program's folder].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the servers' logs (they are deleted after a successful run).
    #[arg(long)]
    keep_logs: bool,
    /// Instead of the comparison: Kuota alone, at its sustainable rate (a closed loop), then an
    /// open loop at `--overload-factor` times it, then with `--hold-connections` connections
    /// (see `overload`); one column per folder of `--kuota-dirs`.
    #[arg(long)]
    overload: bool,
    #[arg(long, default_value_t = 10.0)]
    overload_factor: f64,
    /// Connections of the overload's open loop.
    #[arg(long, default_value_t = 2_000)]
    overload_connections: usize,
    /// Connections opened at once in the last phase of `--overload` (raise `ulimit -n`).
    #[arg(long, default_value_t = 15_000)]
    hold_connections: usize,
    /// Seats of each of the two events `--overload` sells from (neither may sell out).
    #[arg(long, default_value_t = 5_000_000)]
    overload_seats: u64,
    /// In `--overload`, a connection refused with `Retry-After` waits that long before its next
    /// request.
    #[arg(long)]
    honor_retry_after: bool,
    /// Folders with a `kuota` (and `baseline`) to run `--overload` against, side by side
    /// (comma-separated) [default: --bin-dir].
    #[arg(long, value_delimiter = ',')]
    kuota_dirs: Vec<PathBuf>,
    /// Kuota as two nodes over one database and Redis prefix: the events are owned by one, and
    /// the load is sent to the other, which forwards every request (the baselines run as usual).
    #[arg(long)]
    forwarded: bool,
    /// Instead of the comparison: Kuota alone, two hot events sold at once, first by one node,
    /// then by two over the same store, each owning one (see `scale_out`); `--seats` per event.
    #[arg(long)]
    scale_out: bool,
    /// Instead of the comparison: Kuota's queue (durable joins/s, ticket reads/s) beside the
    /// ceiling's `GET` (see `queue`); `--seats` of the queued event.
    #[arg(long)]
    queue: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread: the generator takes one core's worth at most, and pinning it is one call.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.overload {
        return run_overload(args).await;
    }
    if args.scale_out {
        return run_scale_out(args).await;
    }
    if args.queue {
        return run_queue(args).await;
    }
    let contenders = args
        .contenders
        .iter()
        .map(|name| Contender::parse(name).ok_or_else(|| anyhow::anyhow!("unknown contender {name:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let binaries = Binaries::locate(args.bin_dir.clone())?;
    let pinnings = pinnings(args.pinning)?;
    let admin = Admin::connect(&args.mysql_url, args.mysql_socket.clone()).await?;
    let measured = measure_sizes(&args, &contenders, &binaries, &pinnings, &admin).await;
    admin.close().await;
    measured
}

/// The comparison, once per size of `--seats`.
async fn measure_sizes(
    args: &Args,
    contenders: &[Contender],
    binaries: &Binaries,
    pinnings: &[bool],
    admin: &Admin,
) -> anyhow::Result<()> {
    for &seats in &args.seats {
        let settings = settings(args, seats)?;
        std::fs::create_dir_all(&settings.log_directory)?;
        print_header(args, &settings, admin, binaries).await?;
        let context = Context { contenders, settings: &settings, binaries, admin };
        let passes = measure_all(&context, pinnings, args.repeat).await?;
        print_results(&passes, pinnings, contenders, args.repeat, seats);
        if !args.keep_logs {
            let _ = std::fs::remove_dir_all(&settings.log_directory);
        }
    }
    Ok(())
}

async fn run_overload(args: Args) -> anyhow::Result<()> {
    let mut kuota_directories = args.kuota_dirs.clone();
    if kuota_directories.is_empty() {
        let here = std::env::current_exe()?.parent().map(PathBuf::from);
        kuota_directories.push(args.bin_dir.clone().or(here).ok_or_else(|| anyhow::anyhow!("no folder"))?);
    }
    let scenario = overload::Overload {
        factor: args.overload_factor,
        overload_connections: args.overload_connections,
        hold_connections: args.hold_connections,
        seats: args.overload_seats,
        honor_retry_after: args.honor_retry_after,
        kuota_directories,
    };
    with_store(&args, args.overload_seats, async |settings, admin| {
        overload::run(settings, &scenario, admin).await
    })
    .await
}

async fn run_scale_out(args: Args) -> anyhow::Result<()> {
    let binaries = Binaries::locate(args.bin_dir.clone())?;
    let seats = args.seats.first().copied().unwrap_or(SEATS_LONG);
    with_store(&args, seats, async |settings, admin| scale_out::run(settings, &binaries, admin).await).await
}

async fn run_queue(args: Args) -> anyhow::Result<()> {
    let binaries = Binaries::locate(args.bin_dir.clone())?;
    let pinned = pinnings(args.pinning)?.contains(&true);
    let seats = args.seats.first().copied().unwrap_or(SEATS_SHORT);
    with_store(&args, seats, async |settings, admin| queue::run(settings, &binaries, admin, pinned).await)
        .await
}

/// Runs a scenario of its own (`--overload`, `--scale-out`, `--queue`) with the store's
/// administrator connection and the settings for `seats`; the servers' logs are removed
/// afterwards unless `--keep-logs`.
async fn with_store(
    args: &Args,
    seats: u64,
    scenario: impl AsyncFnOnce(&Settings, &Admin) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.mysql_url, args.mysql_socket.clone()).await?;
    let settings = settings(args, seats)?;
    std::fs::create_dir_all(&settings.log_directory)?;
    let measured = scenario(&settings, &admin).await;
    admin.close().await;
    measured?;
    if !args.keep_logs {
        let _ = std::fs::remove_dir_all(&settings.log_directory);
    }
    Ok(())
}

/// What every pass needs.
struct Context<'a> {
    contenders: &'a [Contender],
    settings: &'a Settings,
    binaries: &'a Binaries,
    admin: &'a Admin,
}

/// Every repeat, every pinning mode, every contender; a contender that fails is reported and
/// left out of its pass.
async fn measure_all(
    context: &Context<'_>,
    pinnings: &[bool],
    repeat: usize,
) -> anyhow::Result<Vec<(bool, Pass)>> {
    let mut passes = Vec::new();
    let mut ordinal = 0;
    for round in 1..=repeat {
        for &pinned in pinnings {
            // `pinnings` holds `true` only when `taskset` works; unpinning needs it as well.
            if pinnings.contains(&true) {
                system::pin_self(if pinned { GENERATOR_CORE } else { ALL_CORES })?;
            }
            let mut pass = Pass::new();
            for &contender in context.contenders {
                ordinal += 1;
                let core = pinned.then_some(SERVER_CORE);
                let Context { settings, binaries, admin, .. } = *context;
                let run = Run { contender, core, ordinal, settings, binaries, admin };
                eprintln!("[pass {round}/{repeat}, {}] {} …", mode(pinned), contender.name());
                match scenario::measure(&run).await {
                    Ok(measurement) => {
                        eprintln!("    {}", summary(&measurement));
                        pass.push((contender, measurement));
                    }
                    Err(error) => eprintln!("    FAILED: {error:#}"),
                }
            }
            report::relate(&mut pass);
            passes.push((pinned, pass));
        }
    }
    Ok(passes)
}

fn parse_kuota_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if name.starts_with("KUOTA_") => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KUOTA_NAME=value")),
    }
}

fn pinnings(pinning: Pinning) -> anyhow::Result<Vec<bool>> {
    let available = system::taskset_available();
    let wanted = match pinning {
        Pinning::Pinned => vec![true],
        Pinning::Unpinned => vec![false],
        Pinning::Both => vec![true, false],
    };
    if available {
        return Ok(wanted);
    }
    anyhow::ensure!(pinning != Pinning::Pinned, "`taskset` is not available: pinning is impossible");
    eprintln!("`taskset` is not available: running unpinned only");
    Ok(vec![false])
}

/// `short`, `long` or a number of seats.
fn parse_seats(text: &str) -> Result<u64, String> {
    match text {
        "short" => Ok(SEATS_SHORT),
        "long" => Ok(SEATS_LONG),
        number => number.parse().ok().filter(|seats| *seats > 0).ok_or_else(|| {
            format!("{text:?} is not `short` ({SEATS_SHORT}), `long` ({SEATS_LONG}) or a number of seats")
        }),
    }
}

fn settings(args: &Args, seats: u64) -> anyhow::Result<Settings> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    // Unique enough to keep two runs (or a crashed earlier one) apart; not a secret.
    let run_id = format!("{:08x}", (nanos as u64 ^ u64::from(std::process::id())) & 0xffff_ffff);
    let http_workers =
        args.http_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    Ok(Settings {
        seconds: args.seconds,
        warmup_seconds: args.warmup_seconds,
        connections: args.connections,
        seats,
        requests_max: args.requests_max,
        http_workers,
        resubmit_percent: args.resubmit_percent,
        redis_url: args.redis_url.clone(),
        kuota_log: args.kuota_log.clone(),
        kuota_settings: args.kuota_settings.clone(),
        database_connections: args.database_connections,
        lock_retry_ms: args.lock_retry_ms,
        forwarded: args.forwarded,
        log_directory: std::env::temp_dir().join(format!("kuota-e2e-{run_id}")),
        admin_token: format!("e2e-admin-{run_id}"),
        run_id,
    })
}

async fn print_header(
    args: &Args,
    settings: &Settings,
    admin: &Admin,
    binaries: &Binaries,
) -> anyhow::Result<()> {
    println!("# Kuota end to end, {}", system::utc_now());
    println!();
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("- command: `e2e {}`", command.join(" "));
    println!("- machine: {}", system::machine());
    println!("- store: {}, reached over {}", admin.describe().await?, admin.transport());
    println!("- kuota binary built {}", binaries.kuota_built());
    println!(
        "- load: {} connections, {} s per phase (admissions stop when sold out), {} seats, {} % resubmissions, \
         {} HTTP workers per server, {} pass(es)",
        settings.connections,
        settings.seconds,
        settings.seats,
        settings.resubmit_percent,
        settings.http_workers,
        args.repeat
    );
    println!(
        "- the load generator (one thread) shares this machine's cores with the server, MariaDB and Redis; \
         pinned = server on core {SERVER_CORE}, generator on core {GENERATOR_CORE}, MariaDB and Redis unpinned"
    );
    let counters = if admin.counts_per_user() {
        "MariaDB per-user statistics (each contender connects as its own user)"
    } else {
        "MariaDB global status (Questions, Handler_write/update/delete): includes every other client"
    };
    println!("- database statements and rows written: {counters}; transactions: counted by each server");
    let extra: Vec<String> =
        settings.kuota_settings.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let extra = if extra.is_empty() { "its defaults otherwise".into() } else { extra.join(" ") };
    println!("- Kuota: RUST_LOG={}, durable acknowledgements, rate limits off, {extra}", settings.kuota_log);
    if settings.forwarded {
        println!(
            "- Kuota forwarded: two nodes; the load goes to the one that does not own the events, which \
             forwards every request to the owner (CPU is both nodes', peak RSS the owner's)"
        );
    }
    println!();
    Ok(())
}

fn mode(pinned: bool) -> &'static str {
    if pinned { "pinned" } else { "unpinned" }
}

fn summary(measurement: &Measurement) -> String {
    let p99 = |latency: Option<report::Latency>| latency.map_or(0.0, |latency| latency.p99 / 1_000.0);
    format!(
        "{:.0} accepted/s (p99 {:.2} ms), sold out {:.0}/s (p99 {:.2} ms), open loop {:.0}/s p99 {:.2} ms, errors {}",
        measurement.accepted_per_second,
        p99(measurement.success_latency),
        measurement.sold_out_answers_per_second,
        p99(measurement.sold_out_latency),
        measurement.paced_rate,
        p99(measurement.paced_latency),
        measurement.admission_errors + measurement.sold_out_errors + measurement.paced_errors,
    ) + &slow_moments(&measurement.paced_slow_moments)
}

/// The open loop's slowest moments, to set beside what else the machine recorded then.
fn slow_moments(moments: &[(f64, f64)]) -> String {
    if moments.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = moments.iter().map(|(at, ms)| format!("{at:.1}: {ms:.1} ms")).collect();
    format!("\n      open loop's slowest 100 ms slots (Unix time: slowest success): {}", shown.join(", "))
}

fn print_results(
    passes: &[(bool, Pass)],
    pinnings: &[bool],
    contenders: &[Contender],
    repeat: usize,
    seats: u64,
) {
    for &pinned in pinnings {
        let columns: Vec<(Contender, Measurement)> = contenders
            .iter()
            .filter_map(|&contender| {
                let runs: Vec<&Measurement> = passes
                    .iter()
                    .filter(|(mode, _)| *mode == pinned)
                    .flat_map(|(_, pass)| {
                        pass.iter().filter(|(which, _)| *which == contender).map(|(_, m)| m)
                    })
                    .collect();
                (!runs.is_empty()).then(|| (contender, report::combine(&runs)))
            })
            .collect();
        let of = if repeat > 1 { format!("median of {repeat} passes") } else { "one pass".into() };
        println!("## {seats} seats, {} ({of})", mode(pinned));
        println!();
        print!("{}", report::table(&columns));
        println!();
        println!("Kuota's goals ({}):", mode(pinned));
        print!("{}", report::goals(&columns));
        println!();
    }
}
