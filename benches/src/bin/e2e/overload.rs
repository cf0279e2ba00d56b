//! `--overload`: Kuota pushed past what it can serve, one column per Kuota binary (a branch
//! beside its base, say), each on a fresh database:
//!
//! 1. the sustainable rate: new registrants in a closed loop over `--connections`;
//! 2. overload: an open loop at `--overload-factor` times that rate over
//!    `--overload-connections`, to a roomy event;
//! 3. many connections: `--hold-connections` opened at once (each given `CONNECT_SECONDS_MAX`;
//!    raise `ulimit -n` first), then the same open loop over those that connected, to a sold-out
//!    event: its answers come from memory and add nothing to it, so what the server's resident
//!    memory gains is what the connections cost.
//!
//! With `--honor-retry-after`, a connection refused with 503 or 429 waits the `Retry-After` it
//! was given before its next request, as a client keeping the contract does; without it, it
//! sends its next request when due (at once, when it is late).
//!
//! Latencies are the server's own: the buckets of `kuota_http_request_duration_seconds` of the
//! registration route, per status, read from `/metrics` before and after each phase (a p99 shown
//! as "≤ 5 ms" means the 5 ms bucket holds 99 % of the phase's answers; the client's clock would
//! charge the generator's own queue to the server). Memory is the server's `VmRSS` and `VmHWM`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::database::{self, Admin};
use crate::http::{self, Connection};
use crate::load::{self, PhaseResult, Plan, Registrants, Target};
use crate::scenario::Settings;
use crate::servers::{self, Binaries, Contender, Launch, Server};
use crate::system;

/// How long one connection of the many-connections phase may take to open, in seconds: past
/// a server's connection cap and its listen backlog, a connection waits for SYN retries.
const CONNECT_SECONDS_MAX: u64 = 3;
/// How long the server is left idle after the last phase before its resident memory is read
/// again, in seconds: past its keep-alive (5 s), so that idle connections are closed.
const IDLE_SECONDS: u64 = 7;
/// How often the server's resident memory is read while the many connections are open, in ms.
const RESIDENT_SAMPLE_MS: u64 = 100;
/// The registration route, as the metrics label it.
const REGISTRATION_ROUTE: &str = "route=\"/v1/events/{event_id}/registrations\"";
/// The duration histogram's bucket lines.
const BUCKET_PREFIX: &str = "kuota_http_request_duration_seconds_bucket{";

/// What the scenario is run with, beyond the comparison's settings.
#[derive(Debug)]
pub struct Overload {
    pub factor: f64,
    pub overload_connections: usize,
    pub hold_connections: usize,
    /// Seats of the sustained and the overloaded event (the held one has one): none may sell out
    /// during its phase. The engine sizes an event's tables for its seats when it loads it, so
    /// this also sets how much of the server's memory the events take.
    pub seats: u64,
    pub honor_retry_after: bool,
    pub kuota_directories: Vec<PathBuf>,
}

/// The admission limit's gauge line.
const ADMISSION_LIMIT_PREFIX: &str = "kuota_admission_limit ";

/// What the scenario reads from `/metrics`.
#[derive(Debug)]
struct Scrape {
    statuses: BTreeMap<u16, Buckets>,
    admission_limit: Option<f64>,
}

/// One status's buckets: (upper bound in seconds, answers at or below it).
type Buckets = Vec<(f64, u64)>;

/// What one server measured in one open-loop phase.
#[derive(Clone, Debug, Default)]
struct Phase {
    offered_per_second: f64,
    sent_per_second: f64,
    created_per_second: f64,
    /// Server side, per status: answers and the bucket that holds 99 % of them.
    statuses: BTreeMap<u16, (u64, f64)>,
    unanswered: u64,
    broken_connections: u64,
    connected: usize,
    /// `kuota_admission_limit` at the end of the phase, when the server has one.
    admission_limit: Option<f64>,
}

/// What one server measured.
#[derive(Debug, Default)]
struct Column {
    name: String,
    sustainable_per_second: f64,
    overload: Phase,
    hold: Phase,
    resident_start_bytes: u64,
    /// After the closed loop: what its admissions hold.
    resident_after_sustain_bytes: u64,
    resident_after_overload_bytes: u64,
    resident_peak_bytes: u64,
    /// The most `VmRSS` while the many connections were open.
    resident_hold_peak_bytes: u64,
    resident_after_hold_bytes: u64,
    resident_idle_bytes: u64,
}

pub async fn run(settings: &Settings, overload: &Overload, admin: &Admin) -> anyhow::Result<()> {
    let mut columns = Vec::new();
    for (ordinal, directory) in overload.kuota_directories.iter().enumerate() {
        let binaries = Binaries::locate(Some(directory.clone()))?;
        eprintln!("[overload] {} …", directory.display());
        let mut column = measure(&binaries, ordinal + 1, settings, overload, admin).await?;
        column.name = directory.display().to_string();
        eprintln!("    {column:?}");
        columns.push(column);
    }
    print(settings, overload, &columns);
    Ok(())
}

async fn measure(
    binaries: &Binaries,
    ordinal: usize,
    settings: &Settings,
    overload: &Overload,
    admin: &Admin,
) -> anyhow::Result<Column> {
    let name = format!("kuota_e2e_{}_{}", settings.run_id, ordinal);
    let prefix = format!("kuota-e2e:{}:{}:", settings.run_id, ordinal);
    database::in_sandbox(admin, &settings.redis_url, &name, &prefix, async |sandbox| {
        let launch = Launch {
            contender: Contender::Kuota,
            database_url: &sandbox.server_url,
            redis_url: &settings.redis_url,
            redis_prefix: &prefix,
            admin_token: &settings.admin_token,
            http_workers: settings.http_workers,
            core: None,
            log: settings.log_directory.join(format!("{ordinal}-overload.log")),
            kuota_log: &settings.kuota_log,
            kuota_settings: &settings.kuota_settings,
            database_connections: settings.database_connections,
            lock_retry_ms: settings.lock_retry_ms,
            node_id: None,
        };
        servers::serving(&launch, binaries, async |server| phases(server, settings, overload).await).await
    })
    .await
}

async fn phases(server: &Server, settings: &Settings, overload: &Overload) -> anyhow::Result<Column> {
    let registrants = Arc::new(Registrants::new(0));
    for (event, seats) in [("sustain", overload.seats), ("overload", overload.seats), ("hold", 1)] {
        create_event(server.port, &settings.admin_token, event, seats).await?;
    }
    let mut connection = Connection::open(server.port).await?;
    let taken = connection.exchange(&http::registration("hold", u64::MAX, u64::MAX)).await?;
    anyhow::ensure!(taken.status == 201, "taking the one seat of hold: {}", taken.status);
    drop(connection);
    let plan = |event: &str, seconds: u64, connections: usize| Plan {
        port: server.port,
        connections,
        duration: Duration::from_secs(seconds),
        requests_max: settings.requests_max,
        target: Target::Register { event: event.into() },
        stop_when_sold_out: false,
        honor_retry_after: overload.honor_retry_after,
        end_on_time: true,
    };
    let mut column = Column { resident_start_bytes: resident(server.pid), ..Column::default() };
    load::closed_loop(plan("sustain", settings.warmup_seconds, settings.connections), registrants.clone())
        .await?;
    let sustained =
        load::closed_loop(plan("sustain", settings.seconds, settings.connections), registrants.clone())
            .await?;
    column.sustainable_per_second = per_second(sustained.tally.successes(), &sustained);
    column.resident_after_sustain_bytes = resident(server.pid);
    let offered = column.sustainable_per_second * overload.factor;
    anyhow::ensure!(offered > 0.0, "nothing was admitted in the closed loop");

    let before = registration_buckets(server.port).await?;
    // Opened at once, as in the many-connections phase: one after the other, those past a
    // connection cap would each wait out SYN retries while the first ones sat idle.
    let connections = open_many(server.port, overload.overload_connections).await;
    let connected = connections.len();
    let plan_overload = plan("overload", settings.seconds, connected);
    let result = load::open_loop_over(plan_overload, connections, registrants.clone(), offered).await?;
    let after = registration_buckets(server.port).await?;
    column.overload = phase(&result, offered, &before, &after, connected);
    column.resident_after_overload_bytes = resident(server.pid);

    // The connections' memory is read while they are open, every `RESIDENT_SAMPLE_MS`.
    let most_resident = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let (most_resident, pid) = (most_resident.clone(), server.pid);
        async move {
            loop {
                most_resident.fetch_max(resident(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(RESIDENT_SAMPLE_MS)).await;
            }
        }
    });
    let connections = open_many(server.port, overload.hold_connections).await;
    let connected = connections.len();
    let plan = plan("hold", settings.seconds, connected);
    let result = load::open_loop_over(plan, connections, registrants, offered).await?;
    sampling.abort();
    column.resident_hold_peak_bytes = most_resident.load(Ordering::Relaxed);
    column.resident_after_hold_bytes = resident(server.pid);
    column.resident_peak_bytes = system::peak_resident_bytes(server.pid).unwrap_or(0);
    let held = registration_buckets(server.port).await?;
    column.hold = phase(&result, offered, &after, &held, connected);
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    column.resident_idle_bytes = resident(server.pid);
    Ok(column)
}

async fn create_event(port: u16, admin_token: &str, event: &str, seats: u64) -> anyhow::Result<()> {
    let mut connection = Connection::open(port).await?;
    let response = connection.exchange(&http::create_event(admin_token, event, seats)).await?;
    anyhow::ensure!(response.status == 201, "creating {event}: {} {}", response.status, response.text());
    Ok(())
}

/// Opens up to `count` connections at once; those not open within `CONNECT_SECONDS_MAX` are
/// left out.
async fn open_many(port: u16, count: usize) -> Vec<Connection> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..count {
        opening.spawn(tokio::time::timeout(Duration::from_secs(CONNECT_SECONDS_MAX), Connection::open(port)));
    }
    let mut connections = Vec::with_capacity(count);
    while let Some(opened) = opening.join_next().await {
        if let Ok(Ok(Ok(connection))) = opened {
            connections.push(connection);
        }
    }
    connections
}

fn phase(result: &PhaseResult, offered: f64, before: &Scrape, after: &Scrape, connected: usize) -> Phase {
    let tally = &result.tally;
    let answered = tally.successes() + tally.sold_out + tally.already_registered + tally.shed + tally.failed;
    let statuses = after
        .statuses
        .iter()
        .filter_map(|(status, buckets)| {
            let earlier = before.statuses.get(status);
            let counts: Buckets = buckets
                .iter()
                .enumerate()
                .map(|(index, &(bound, count))| {
                    let then = earlier.and_then(|earlier| earlier.get(index)).map_or(0, |&(_, count)| count);
                    (bound, count.saturating_sub(then))
                })
                .collect();
            let total = counts.last().map_or(0, |&(_, count)| count);
            let p99 = counts.iter().find(|&&(_, count)| count as f64 >= total as f64 * 0.99)?.0;
            (total > 0).then_some((*status, (total, p99)))
        })
        .collect();
    Phase {
        offered_per_second: offered,
        sent_per_second: per_second(answered + tally.unanswered, result),
        created_per_second: per_second(tally.successes(), result),
        statuses,
        unanswered: tally.unanswered,
        broken_connections: tally.broken_connections,
        connected,
        admission_limit: after.admission_limit,
    }
}

/// The registration route's duration buckets from `/metrics`, per status.
async fn registration_buckets(port: u16) -> anyhow::Result<Scrape> {
    let mut connection = Connection::open(port).await?;
    let response = connection.exchange(&http::get("/metrics")).await?;
    anyhow::ensure!(response.status == 200, "GET /metrics: {}", response.status);
    let mut statuses: BTreeMap<u16, Buckets> = BTreeMap::new();
    let mut admission_limit = None;
    for line in response.text().lines() {
        if let Some(value) = line.strip_prefix(ADMISSION_LIMIT_PREFIX) {
            admission_limit = value.trim().parse().ok();
        }
        let Some(rest) = line.strip_prefix(BUCKET_PREFIX) else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        if !labels.contains(REGISTRATION_ROUTE) || !labels.contains("method=\"POST\"") {
            continue;
        }
        let (Some(status), Some(bound)) = (label(labels, "status"), label(labels, "le")) else { continue };
        let Ok(status) = status.parse::<u16>() else { continue };
        let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::INFINITY) };
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        statuses.entry(status).or_default().push((bound, count));
    }
    for buckets in statuses.values_mut() {
        buckets.sort_by(|left, right| left.0.total_cmp(&right.0));
    }
    Ok(Scrape { statuses, admission_limit })
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let length = labels[start..].find('"')?;
    Some(&labels[start..start + length])
}

fn resident(pid: u32) -> u64 {
    system::resident_bytes(pid).unwrap_or(0)
}

fn per_second(count: u64, result: &PhaseResult) -> f64 {
    count as f64 / result.elapsed.as_secs_f64().max(f64::EPSILON)
}

fn print(settings: &Settings, overload: &Overload, columns: &[Column]) {
    println!("# Kuota under overload, {}", system::utc_now());
    println!();
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("- command: `e2e {}`", command.join(" "));
    println!("- machine: {}", system::machine());
    println!(
        "- sustainable rate: closed loop over {} connections for {} s; overload: open loop at {}x it over {} \
         connections for {} s; then {} connections opened at once (each within {CONNECT_SECONDS_MAX} s) and the \
         same open loop over those that opened, to a sold-out event; {} HTTP workers, unpinned; clients {} \
         Retry-After",
        settings.connections,
        settings.seconds,
        overload.factor,
        overload.overload_connections,
        settings.seconds,
        overload.hold_connections,
        settings.http_workers,
        if overload.honor_retry_after { "honor" } else { "ignore" }
    );
    println!(
        "- server-side p99: the `kuota_http_request_duration_seconds` bucket that holds 99 % of the phase's answers"
    );
    println!();
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for column in columns {
        header.push_str(&format!(" {} |", column.name));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let row = |label: &str, value: &dyn Fn(&Column) -> String| {
        let cells: Vec<String> = columns.iter().map(value).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0));
    row("sustainable admissions/s (closed loop)", &|column| format!("{:.0}", column.sustainable_per_second));
    for (title, pick) in [("overload", 0), ("many connections", 1)] {
        let phase = move |column: &Column| -> Phase {
            if pick == 0 { column.overload.clone() } else { column.hold.clone() }
        };
        if pick < 2 {
            row(&format!("{title}: connections opened"), &|column| {
                let asked = if pick == 0 { overload.overload_connections } else { overload.hold_connections };
                format!("{} of {asked}", phase(column).connected)
            });
        }
        row(&format!("{title}: offered / sent per s"), &|column| {
            format!("{:.0} / {:.0}", phase(column).offered_per_second, phase(column).sent_per_second)
        });
        row(&format!("{title}: 201/s (goodput, share of sustainable)"), &|column| {
            let created = phase(column).created_per_second;
            format!(
                "{created:.0} ({:.0} %)",
                100.0 * created / column.sustainable_per_second.max(f64::EPSILON)
            )
        });
        for status in [201, 409, 503] {
            row(&format!("{title}: {status} answers, server-side p99"), &|column| {
                phase(column)
                    .statuses
                    .get(&status)
                    .map_or("—".into(), |&(count, p99)| format!("{count}, ≤ {}", bound(p99)))
            });
        }
        row(&format!("{title}: other statuses"), &|column| {
            let other: Vec<String> = phase(column)
                .statuses
                .iter()
                .filter(|(status, _)| ![201, 409, 503].contains(*status))
                .map(|(status, (count, _))| format!("{status} × {count}"))
                .collect();
            if other.is_empty() { "none".into() } else { other.join(", ") }
        });
        row(&format!("{title}: unanswered in 10 s / broken connections"), &|column| {
            format!("{} / {}", phase(column).unanswered, phase(column).broken_connections)
        });
        row(&format!("{title}: admission limit at the end"), &|column| {
            phase(column).admission_limit.map_or("—".into(), |limit| format!("{limit:.0}"))
        });
    }
    row("RSS at start", &|column| mib(column.resident_start_bytes));
    row("RSS after the closed loop", &|column| mib(column.resident_after_sustain_bytes));
    row("RSS after overload", &|column| mib(column.resident_after_overload_bytes));
    row("RSS while the many connections were open (most)", &|column| mib(column.resident_hold_peak_bytes));
    row("RSS after many connections", &|column| mib(column.resident_after_hold_bytes));
    row("RSS peak (VmHWM)", &|column| mib(column.resident_peak_bytes));
    row(&format!("RSS after {IDLE_SECONDS} s idle"), &|column| mib(column.resident_idle_bytes));
}

fn bound(seconds: f64) -> String {
    if seconds.is_infinite() {
        "∞".into()
    } else if seconds < 1.0 {
        format!("{} ms", seconds * 1e3)
    } else {
        format!("{seconds} s")
    }
}
