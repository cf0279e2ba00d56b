//! `--scale-out`: what a second Kuota node buys over one store. Two hot events are sold at once
//! in a closed loop, `--connections` to each, each on a fresh database:
//!
//! 1. one node owns both events and takes all the load;
//! 2. two nodes over the same MariaDB and Redis, each owning one event (it created and first
//!    read it), each taking its own event's load: nothing is forwarded.
//!
//! The aggregate admissions/s of the two, side by side, with the CPU each part spent per
//! admission (the nodes' and MariaDB's, read from `/proc`), show where the work goes and whether
//! the store or the machine saturates first. Every part shares this machine's cores, the
//! generator included, so the second node cannot add cores here: the figure says what it adds
//! when the nodes are what limits, and what the store costs when they are not.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::database::{self, Admin, Counters, Sandbox};
use crate::http::{self, Connection};
use crate::load::{self, PhaseResult, Plan, Registrants, Target};
use crate::report::Latency;
use crate::scenario::Settings;
use crate::servers::{self, Binaries, Contender, Launch, Server};
use crate::system;

/// The two hot events.
const EVENTS: [&str; 2] = ["hot-a", "hot-b"];

/// One layout's figures.
#[derive(Debug, Default)]
struct Layout {
    nodes: usize,
    /// Admissions of each event.
    accepted: [u64; 2],
    /// The longer of the two selling windows.
    window: Duration,
    latency: Option<Latency>,
    errors: u64,
    node_cpu: Duration,
    store_cpu: Option<Duration>,
    counters: Counters,
}

impl Layout {
    fn accepted_per_second(&self) -> f64 {
        let total = self.accepted.iter().sum::<u64>() as f64;
        if self.window.is_zero() { 0.0 } else { total / self.window.as_secs_f64() }
    }

    fn per_accepted_us(&self, spent: Duration) -> f64 {
        let total = self.accepted.iter().sum::<u64>().max(1) as f64;
        spent.as_secs_f64() * 1e6 / total
    }
}

pub async fn run(settings: &Settings, binaries: &Binaries, admin: &Admin) -> anyhow::Result<()> {
    let mut layouts = Vec::new();
    for nodes in [1, 2] {
        eprintln!("[scale-out] {nodes} node(s) …");
        let layout = measure(settings, binaries, admin, nodes).await?;
        eprintln!("    {:.0} admissions/s", layout.accepted_per_second());
        layouts.push(layout);
    }
    print(settings, &layouts);
    Ok(())
}

async fn measure(
    settings: &Settings,
    binaries: &Binaries,
    admin: &Admin,
    nodes: usize,
) -> anyhow::Result<Layout> {
    let name = format!("kuota_e2e_{}_scale_{nodes}", settings.run_id);
    let prefix = format!("kuota-e2e:{}:scale-{nodes}:", settings.run_id);
    database::in_sandbox(admin, &settings.redis_url, &name, &prefix, async |sandbox| {
        measure_in(settings, binaries, admin, sandbox, &prefix, nodes).await
    })
    .await
}

async fn measure_in(
    settings: &Settings,
    binaries: &Binaries,
    admin: &Admin,
    sandbox: &Sandbox,
    prefix: &str,
    nodes: usize,
) -> anyhow::Result<Layout> {
    let mut servers = Vec::new();
    for node in 0..nodes {
        let node_id = format!("e2e-scale-{node}");
        let launch = Launch {
            contender: Contender::Kuota,
            database_url: &sandbox.server_url,
            redis_url: &settings.redis_url,
            redis_prefix: prefix,
            admin_token: &settings.admin_token,
            http_workers: settings.http_workers,
            core: None,
            log: settings.log_directory.join(format!("scale-{nodes}-node-{node}.log")),
            kuota_log: &settings.kuota_log,
            kuota_settings: &settings.kuota_settings,
            database_connections: settings.database_connections,
            lock_retry_ms: settings.lock_retry_ms,
            node_id: Some(&node_id),
        };
        match servers::start(&launch, binaries).await {
            Ok(server) => servers.push(server),
            Err(error) => {
                let _already_failing = stop_all(servers).await;
                return Err(error);
            }
        }
    }
    let measured = phases(settings, admin, sandbox, &servers).await;
    let tails: Vec<String> = servers.iter().map(Server::log_tail).collect();
    let stopped = stop_all(servers).await;
    let layout = measured.with_context(|| format!("the end of the logs:\n{}", tails.join("\n---\n")))?;
    stopped?;
    Ok(Layout { nodes, ..layout })
}

async fn stop_all(servers: Vec<Server>) -> anyhow::Result<()> {
    let mut result = Ok(());
    for server in servers {
        result = result.and(server.stop().await);
    }
    result
}

/// The node that owns and serves `EVENTS[index]`.
fn owner(servers: &[Server], index: usize) -> &Server {
    &servers[index % servers.len()]
}

async fn phases(
    settings: &Settings,
    admin: &Admin,
    sandbox: &Sandbox,
    servers: &[Server],
) -> anyhow::Result<Layout> {
    for (index, event) in EVENTS.iter().enumerate() {
        let server = owner(servers, index);
        let mut connection = Connection::open(server.port).await?;
        let created =
            connection.exchange(&http::create_event(&settings.admin_token, event, settings.seats)).await?;
        anyhow::ensure!(created.status == 201, "creating {event}: {} {}", created.status, created.text());
        // The node that reads it first takes its lease: each event is owned where its load goes.
        let read = connection.exchange(&http::get(&format!("/v1/events/{event}"))).await?;
        anyhow::ensure!(read.status == 200, "reading {event}: {} {}", read.status, read.text());
    }
    let registrants = Arc::new(Registrants::new(0));
    let plan = |index: usize, seconds: u64| Plan {
        port: owner(servers, index).port,
        connections: settings.connections,
        duration: Duration::from_secs(seconds),
        requests_max: settings.requests_max,
        target: Target::Register { event: EVENTS[index].into() },
        stop_when_sold_out: true,
        honor_retry_after: false,
        end_on_time: false,
    };
    // Warm-up on both, unmeasured.
    let (first, second) = tokio::join!(
        load::closed_loop(plan(0, settings.warmup_seconds), registrants.clone()),
        load::closed_loop(plan(1, settings.warmup_seconds), registrants.clone()),
    );
    first?;
    second?;

    let node_cpu = || servers.iter().filter_map(|server| system::cpu_time(server.pid)).sum::<Duration>();
    let before = (node_cpu(), system::store_cpu_time(), admin.counters(sandbox).await?);
    let (first, second) = tokio::join!(
        load::closed_loop(plan(0, settings.seconds), registrants.clone()),
        load::closed_loop(plan(1, settings.seconds), registrants.clone()),
    );
    let (first, second): (PhaseResult, PhaseResult) = (first?, second?);
    let after = (node_cpu(), system::store_cpu_time(), admin.counters(sandbox).await?);

    let window = |phase: &PhaseResult| match phase.tally.first_sold_out_at {
        Some(_) => phase.tally.last_success_at,
        None => phase.elapsed,
    };
    let mut successes = first.tally.successes.clone();
    successes.add(&second.tally.successes).context("the same histogram bounds")?;
    Ok(Layout {
        nodes: servers.len(),
        accepted: [first.tally.successes(), second.tally.successes()],
        window: window(&first).max(window(&second)),
        latency: Latency::of(&successes),
        errors: first.tally.errors() + second.tally.errors(),
        node_cpu: after.0.saturating_sub(before.0),
        store_cpu: after.1.zip(before.1).map(|(after, before)| after.saturating_sub(before)),
        counters: after.2.since(before.2),
    })
}

fn print(settings: &Settings, layouts: &[Layout]) {
    println!("# Kuota scale-out over one store, {}", system::utc_now());
    println!();
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("- command: `e2e {}`", command.join(" "));
    println!("- machine: {}", system::machine());
    println!(
        "- two hot events of {} seats, {} connections each in a closed loop, {} s (or until sold out), \
         {} HTTP workers per node; every part shares the machine's cores, unpinned",
        settings.seats, settings.connections, settings.seconds, settings.http_workers
    );
    println!();
    println!(
        "| nodes | admissions/s (both events) | ÷ one node | p50 / p99 / max (ms) | errors | node CPU per admission (µs) | MariaDB CPU per admission (µs) | DB rows written per admission |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|");
    let single = layouts.first().map_or(0.0, Layout::accepted_per_second);
    for layout in layouts {
        let rows = layout.counters.rows_written as f64 / layout.accepted.iter().sum::<u64>().max(1) as f64;
        let store =
            layout.store_cpu.map_or("—".into(), |spent| format!("{:.0}", layout.per_accepted_us(spent)));
        let times = if single > 0.0 {
            format!("{:.2}×", layout.accepted_per_second() / single)
        } else {
            "—".into()
        };
        println!(
            "| {} | {:.0} | {times} | {} | {} | {:.0} | {store} | {rows:.2} |",
            layout.nodes,
            layout.accepted_per_second(),
            Latency::show(layout.latency),
            layout.errors,
            layout.per_accepted_us(layout.node_cpu),
        );
    }
    println!();
}
