//! `--queue`: Kuota's queue in front of a hot event, with the ceiling's `GET` measured in the
//! same run for scale. Each on a fresh database:
//!
//! 1. durable joins: a queued event whose lobby is open (its draw an hour away), new
//!    registrants joining in a closed loop over `--connections`; every 202 is committed, so
//!    joins/s is the durable rate, with the latency, server CPU, rows written and MariaDB's CPU
//!    per join (on the contender's connections, and the whole `mariadbd` process);
//! 2. ticket reads: `TICKETS_READ` tickets joined beforehand, read in turn with their tokens
//!    (`GET /v1/queue/{ticket}`) in a closed loop;
//! 3. the ceiling's `GET /v1/events/{id}` in a closed loop: what reading a small document costs
//!    here at most; ticket reads/s are shown against it.
//!
//! The servers are pinned as in the comparison's pinned mode when `taskset` works.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::database::{self, Admin};
use crate::http::{self, Connection};
use crate::load::{self, PhaseResult, Plan, Registrants, Target};
use crate::report::Latency;
use crate::scenario::Settings;
use crate::servers::{self, Binaries, Contender, Launch, Server};
use crate::system;

/// The queued event.
const EVENT: &str = "queued";
/// Tickets joined before the read phase, read in turn.
const TICKETS_READ: usize = 1_000;
/// The lobby opens this many seconds after the event is created (it may not open in the past).
const LOBBY_OPENS_IN_SECONDS: i64 = 2;
/// The draw is this far away: every join of the run lands in the lobby.
const DRAW_IN_SECONDS: i64 = 3_600;
/// Tickets the queue may hold: far more than a run joins.
const QUEUE_MAX: u64 = 10_000_000;

/// One closed-loop phase's figures.
#[derive(Debug, Default)]
struct Phase {
    per_second: f64,
    latency: Option<Latency>,
    errors: u64,
    server_cpu_us: Option<f64>,
    rows_written: Option<f64>,
    /// MariaDB's CPU on the contender's connections (per-user statistics), µs each.
    database_cpu_us: Option<f64>,
    /// The `mariadbd` process's CPU (every thread, every client), µs each.
    database_process_cpu_us: Option<f64>,
}

pub async fn run(
    settings: &Settings,
    binaries: &Binaries,
    admin: &Admin,
    pinned: bool,
) -> anyhow::Result<()> {
    if pinned {
        system::pin_self(crate::GENERATOR_CORE)?;
    }
    let core = pinned.then_some(crate::SERVER_CORE);
    eprintln!("[queue] kuota …");
    let (joins, reads) = measure_kuota(settings, binaries, admin, core).await?;
    eprintln!("    {:.0} joins/s, {:.0} ticket reads/s", joins.per_second, reads.per_second);
    eprintln!("[queue] ceiling …");
    let ceiling = measure_ceiling(settings, binaries, core).await?;
    eprintln!("    {:.0} GET/s", ceiling.per_second);
    print(settings, pinned, &joins, &reads, &ceiling);
    Ok(())
}

fn launch<'a>(
    settings: &'a Settings,
    contender: Contender,
    url: &'a str,
    prefix: &'a str,
    core: Option<usize>,
) -> Launch<'a> {
    Launch {
        contender,
        database_url: url,
        redis_url: &settings.redis_url,
        redis_prefix: prefix,
        admin_token: &settings.admin_token,
        http_workers: settings.http_workers,
        core,
        log: settings.log_directory.join(format!("queue-{}.log", contender.name())),
        kuota_log: &settings.kuota_log,
        kuota_settings: &settings.kuota_settings,
        database_connections: settings.database_connections,
        lock_retry_ms: settings.lock_retry_ms,
        node_id: None,
    }
}

async fn measure_kuota(
    settings: &Settings,
    binaries: &Binaries,
    admin: &Admin,
    core: Option<usize>,
) -> anyhow::Result<(Phase, Phase)> {
    let name = format!("kuota_e2e_{}_queue", settings.run_id);
    let prefix = format!("kuota-e2e:{}:queue:", settings.run_id);
    database::in_sandbox(admin, &settings.redis_url, &name, &prefix, async |sandbox| {
        let launch = launch(settings, Contender::Kuota, &sandbox.server_url, &prefix, core);
        servers::serving(&launch, binaries, async |server| {
            kuota_phases(settings, admin, sandbox, server).await
        })
        .await
    })
    .await
}

fn plan(settings: &Settings, port: u16, target: Target, seconds: u64) -> Plan {
    Plan {
        port,
        connections: settings.connections,
        duration: Duration::from_secs(seconds),
        requests_max: settings.requests_max,
        target,
        stop_when_sold_out: false,
        honor_retry_after: false,
        end_on_time: false,
    }
}

async fn kuota_phases(
    settings: &Settings,
    admin: &Admin,
    sandbox: &database::Sandbox,
    server: &Server,
) -> anyhow::Result<(Phase, Phase)> {
    let mut connection = Connection::open(server.port).await?;
    let create = http::create_queued_event(
        &settings.admin_token,
        EVENT,
        settings.seats,
        &system::rfc3339_in(LOBBY_OPENS_IN_SECONDS),
        &system::rfc3339_in(DRAW_IN_SECONDS),
        QUEUE_MAX,
    );
    let created = connection.exchange(&create).await?;
    anyhow::ensure!(created.status == 201, "creating {EVENT}: {} {}", created.status, created.text());
    // Past the lobby's opening, to the next whole second the contract counts in.
    tokio::time::sleep(Duration::from_secs(LOBBY_OPENS_IN_SECONDS as u64 + 1)).await;

    let registrants = Arc::new(Registrants::new(0));
    let join = || Target::Join { event: EVENT.into() };
    load::closed_loop(plan(settings, server.port, join(), settings.warmup_seconds), registrants.clone())
        .await?;
    let before = (system::cpu_time(server.pid), admin.counters(sandbox).await?, system::store_cpu_time());
    let joined =
        load::closed_loop(plan(settings, server.port, join(), settings.seconds), registrants.clone()).await?;
    let after = (system::cpu_time(server.pid), admin.counters(sandbox).await?, system::store_cpu_time());
    let mut joins = phase(&joined);
    let count = joined.tally.successes().max(1) as f64;
    joins.server_cpu_us = cpu_per_success(before.0, after.0, &joined);
    let written = after.1.since(before.1);
    joins.rows_written = Some(written.rows_written as f64 / count);
    joins.database_cpu_us = written.cpu_seconds.map(|seconds| seconds * 1e6 / count);
    joins.database_process_cpu_us =
        after.2.zip(before.2).map(|(after, before)| after.saturating_sub(before).as_secs_f64() * 1e6 / count);
    if let Some(failure) = &joined.tally.first_failure {
        eprintln!("    first unexpected answer during joins: {failure}");
    }

    // A connection of its own: the first one was idle past the server's keep-alive meanwhile.
    let mut connection = Connection::open(server.port).await?;
    let tickets = Arc::new(join_tickets(&mut connection, &registrants).await?);
    let read = Target::Cycle { requests: tickets };
    let before = system::cpu_time(server.pid);
    let reads = load::closed_loop(plan(settings, server.port, read, settings.seconds), registrants).await?;
    let after = system::cpu_time(server.pid);
    if let Some(failure) = &reads.tally.first_failure {
        eprintln!("    first unexpected answer during ticket reads: {failure}");
    }
    let mut reads_phase = phase(&reads);
    reads_phase.server_cpu_us = cpu_per_success(before, after, &reads);
    Ok((joins, reads_phase))
}

/// The server's CPU time between two readings, in µs per successful answer of `result`: unlike
/// answers per second, it does not depend on whether the generator or another process held the
/// cores meanwhile, so a busy machine still compares the ticket read with the ceiling's `GET`.
fn cpu_per_success(before: Option<Duration>, after: Option<Duration>, result: &PhaseResult) -> Option<f64> {
    let count = result.tally.successes().max(1) as f64;
    after.zip(before).map(|(after, before)| after.saturating_sub(before).as_secs_f64() * 1e6 / count)
}

/// Joins `TICKETS_READ` new registrants one by one; returns a read of each ticket, with its token.
async fn join_tickets(
    connection: &mut Connection,
    registrants: &Registrants,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut reads = Vec::with_capacity(TICKETS_READ);
    let first = registrants.reserve(TICKETS_READ as u64);
    for number in first..first + TICKETS_READ as u64 {
        let answer = connection.exchange(&http::queue_join(EVENT, number, number)).await?;
        anyhow::ensure!(answer.status == 202, "joining: {} {}", answer.status, answer.text());
        let ticket: serde_json::Value = serde_json::from_slice(&answer.body).context("a ticket in JSON")?;
        let (Some(id), Some(token)) = (ticket["ticket_id"].as_str(), ticket["access_token"].as_str()) else {
            anyhow::bail!("a ticket without ticket_id or access_token: {}", answer.text());
        };
        reads.push(http::ticket_read(id, token));
    }
    Ok(reads)
}

async fn measure_ceiling(
    settings: &Settings,
    binaries: &Binaries,
    core: Option<usize>,
) -> anyhow::Result<Phase> {
    let prefix = format!("kuota-e2e:{}:queue-ceiling:", settings.run_id);
    let server = servers::start(&launch(settings, Contender::Ceiling, "", &prefix, core), binaries).await?;
    let target = Target::Get { path: format!("/v1/events/{EVENT}") };
    let registrants = Arc::new(Registrants::new(0));
    let before = system::cpu_time(server.pid);
    let measured =
        load::closed_loop(plan(settings, server.port, target, settings.seconds), registrants).await;
    let after = system::cpu_time(server.pid);
    let stopped = server.stop().await;
    let result = measured?;
    stopped?;
    let mut ceiling = phase(&result);
    ceiling.server_cpu_us = cpu_per_success(before, after, &result);
    Ok(ceiling)
}

fn phase(result: &PhaseResult) -> Phase {
    let elapsed = result.elapsed.as_secs_f64().max(f64::EPSILON);
    Phase {
        per_second: result.tally.successes() as f64 / elapsed,
        latency: Latency::of(&result.tally.successes),
        errors: result.tally.errors(),
        ..Phase::default()
    }
}

fn print(settings: &Settings, pinned: bool, joins: &Phase, reads: &Phase, ceiling: &Phase) {
    println!("# Kuota's queue, {}", system::utc_now());
    println!();
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("- command: `e2e {}`", command.join(" "));
    println!("- machine: {}", system::machine());
    let placement = if pinned { "servers on core 0, generator on core 1" } else { "unpinned" };
    println!(
        "- one queued event ({} seats, lobby open, draw an hour away), {} connections in a closed loop, \
         {} s per phase, {} HTTP workers; {placement}",
        settings.seats, settings.connections, settings.seconds, settings.http_workers
    );
    println!();
    println!(
        "| | per second | p50 / p99 / max (ms) | errors | server CPU (µs each) | DB rows written each \
         | DB CPU, Kuota's connections (µs each) | DB process CPU (µs each) |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    let decimal =
        |value: Option<f64>, places: usize| value.map_or("—".into(), |value| format!("{value:.places$}"));
    for (name, phase) in [
        ("durable queue joins (202, committed)", joins),
        ("ticket reads (`GET /v1/queue/{id}`)", reads),
        ("ceiling `GET /v1/events/{id}`", ceiling),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
            phase.per_second,
            Latency::show(phase.latency),
            phase.errors,
            decimal(phase.server_cpu_us, 0),
            decimal(phase.rows_written, 2),
            decimal(phase.database_cpu_us, 0),
            decimal(phase.database_process_cpu_us, 0),
        );
    }
    println!();
    let share = if ceiling.per_second > 0.0 { reads.per_second / ceiling.per_second } else { 0.0 };
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("Goals:");
    println!(
        "- durable joins/s: {:.0} (goal ≥ {JOINS_GOAL_PER_SECOND:.0}): {}",
        joins.per_second,
        verdict(joins.per_second >= JOINS_GOAL_PER_SECOND)
    );
    println!(
        "- ticket reads/s ÷ ceiling GET/s: {share:.2} (goal ≥ {READS_GOAL_SHARE_OF_CEILING}): {}",
        verdict(share >= READS_GOAL_SHARE_OF_CEILING)
    );
    if let (Some(read), Some(get)) = (reads.server_cpu_us, ceiling.server_cpu_us) {
        // What the goal asks of the server when the server is what limits both: its CPU per
        // answer may be at most 1 ÷ 0.7 of the ceiling's.
        println!(
            "- server CPU per ceiling GET ÷ per ticket read: {:.2} (the same share when the server's \
             core is what limits both)",
            get / read.max(f64::EPSILON)
        );
    }
    println!();
}

/// The queue issue's goals.
const JOINS_GOAL_PER_SECOND: f64 = 20_000.0;
const READS_GOAL_SHARE_OF_CEILING: f64 = 0.7;
