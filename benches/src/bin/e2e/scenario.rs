//! One contender, start to finish: a fresh database and Redis prefix, the server, then the
//! phases every contender goes through alike.
//!
//! 1. warm-up: registrations to an event as large as the hot one, not measured;
//! 2. admissions: new registrants to the hot event (`seats` seats) in a closed loop, until the
//!    first `sold_out` answer or the phase's time;
//! 3. the hot event is filled up if the design could not fill it in time (so that every
//!    contender's sold-out phase runs against a full event);
//! 4. sold out: new registrants keep coming (the ceiling answers a `GET` instead);
//! 5. open loop: registrations to a third, roomy event at half the rate of phase 2;
//!
//! then the server is stopped (Kuota commits what it accepted) and the database checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::database::{self, Admin, Counters, Sandbox};
use crate::http::{self, Connection};
use crate::load::{self, PhaseResult, Plan, Registrants, Target};
use crate::report::{Latency, Measurement};
use crate::servers::{self, Binaries, Contender, Launch, Server, Work};
use crate::system;

/// The event of the admissions and the sold-out phase.
const HOT_EVENT: &str = "hot";
/// The event of the warm-up.
const WARMUP_EVENT: &str = "warmup";
/// The event of the open loop.
const PACED_EVENT: &str = "paced";
/// The open loop runs at this share of the contender's closed-loop accepted rate.
const PACED_SHARE: f64 = 0.5;
/// Seats of the open-loop event, as a multiple of the registrations it is sent (it must not
/// sell out: what is measured is the latency of admissions).
const PACED_SEATS_MARGIN: f64 = 1.5;
/// Kuota fills the hot event through its API; this bounds how long that may take, in seconds.
const FILL_SECONDS_MAX: u64 = 120;
/// The open loop's 100 ms slots whose slowest success took longer than this are shown, at
/// most `SLOW_MOMENTS_SHOWN` of them (twice the p99 goal: a stall, not the tail).
const SLOW_MOMENT: Duration = Duration::from_millis(20);
const SLOW_MOMENTS_SHOWN: usize = 5;

/// What every contender is run with.
#[derive(Debug)]
pub struct Settings {
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub connections: usize,
    pub seats: u64,
    pub requests_max: u64,
    pub http_workers: usize,
    pub resubmit_percent: u64,
    pub redis_url: String,
    pub kuota_log: String,
    pub kuota_settings: Vec<(String, String)>,
    pub database_connections: u32,
    pub lock_retry_ms: u64,
    /// Kuota as two nodes, the load sent to the one that forwards (`--forwarded`).
    pub forwarded: bool,
    pub log_directory: PathBuf,
    pub run_id: String,
    pub admin_token: String,
}

/// One contender in one pass.
#[derive(Debug)]
pub struct Run<'a> {
    pub contender: Contender,
    /// `Some(core)`: the server is pinned there (and the generator elsewhere).
    pub core: Option<usize>,
    /// Unique within the run: names the database, the user and the Redis prefix.
    pub ordinal: usize,
    pub settings: &'a Settings,
    pub binaries: &'a Binaries,
    pub admin: &'a Admin,
}

/// Runs the contender and cleans up after it, whatever happened.
pub async fn measure(run: &Run<'_>) -> anyhow::Result<Measurement> {
    let settings = run.settings;
    let name = format!("kuota_e2e_{}_{}", settings.run_id, run.ordinal);
    let prefix = format!("kuota-e2e:{}:{}:", settings.run_id, run.ordinal);
    let load_average = system::load_average().unwrap_or(0.0);
    let mut measurement =
        database::in_sandbox(run.admin, &settings.redis_url, &name, &prefix, async |sandbox| {
            measure_in(run, sandbox, &prefix).await
        })
        .await?;
    measurement.load_average = load_average;
    Ok(measurement)
}

async fn measure_in(run: &Run<'_>, sandbox: &Sandbox, prefix: &str) -> anyhow::Result<Measurement> {
    let settings = run.settings;
    let log = settings.log_directory.join(format!("{}-{}.log", run.ordinal, run.contender.name()));
    let launch = Launch {
        contender: run.contender,
        database_url: &sandbox.server_url,
        redis_url: &settings.redis_url,
        redis_prefix: prefix,
        admin_token: &settings.admin_token,
        http_workers: settings.http_workers,
        core: run.core,
        log,
        kuota_log: &settings.kuota_log,
        kuota_settings: &settings.kuota_settings,
        database_connections: settings.database_connections,
        lock_retry_ms: settings.lock_retry_ms,
        node_id: None,
    };
    let forwarded = settings.forwarded && run.contender == Contender::Kuota;
    let owner_launch = Launch { node_id: forwarded.then_some("e2e-owner"), ..launch };
    let server = servers::start(&owner_launch, run.binaries).await?;
    let front = if forwarded {
        let log = settings.log_directory.join(format!("{}-{}-front.log", run.ordinal, run.contender.name()));
        let front_launch = Launch { node_id: Some("e2e-front"), log, ..owner_launch };
        match servers::start(&front_launch, run.binaries).await {
            Ok(front) => Some(front),
            Err(error) => {
                let _ = server.stop().await;
                return Err(error.context("starting the forwarding node"));
            }
        }
    } else {
        None
    };
    let phases = Phases { run, server: &server, front: front.as_ref(), sandbox, prefix };
    let outcome = phases.all().await;
    let peak = system::peak_resident_bytes(server.pid);
    let tail = server.log_tail();
    // The forwarding node first: it holds no lease and no write-behind.
    let front_stopped = match front {
        Some(front) => front.stop().await,
        None => Ok(()),
    };
    let stopped = server.stop().await.and(front_stopped);
    let (mut measurement, hot_acknowledged) =
        outcome.with_context(|| format!("{} failed; the end of its log:\n{tail}", run.contender.name()))?;
    stopped?;
    measurement.peak_resident_bytes = peak;
    check_integrity(run, sandbox, &mut measurement, hot_acknowledged).await?;
    Ok(measurement)
}

/// Oversold seats, duplicate registrants and acknowledged registrations missing, read after the
/// server stopped (Kuota has then committed everything it acknowledged).
async fn check_integrity(
    run: &Run<'_>,
    sandbox: &Sandbox,
    measurement: &mut Measurement,
    hot_acknowledged: u64,
) -> anyhow::Result<()> {
    if !run.contender.decides() {
        return Ok(());
    }
    let stored = run.admin.stored(sandbox, run.contender, HOT_EVENT).await?;
    let ours = stored.rows.saturating_sub(measurement.topped_up);
    measurement.stored = Some(stored.rows);
    measurement.oversold = Some(stored.rows.saturating_sub(run.settings.seats));
    measurement.duplicates = Some(stored.rows - stored.distinct_registrants.min(stored.rows));
    measurement.lost = Some(hot_acknowledged.saturating_sub(ours));
    Ok(())
}

/// The phases against one running server.
struct Phases<'a> {
    run: &'a Run<'a>,
    /// The server, or with `--forwarded` the node that owns the events.
    server: &'a Server,
    /// With `--forwarded`: the node the load is sent to, which forwards it to `server`.
    front: Option<&'a Server>,
    sandbox: &'a Sandbox,
    prefix: &'a str,
}

/// CPU and database counters at one instant.
struct Snapshot {
    server_cpu: Duration,
    /// The MariaDB process's, when it runs on this machine.
    database_cpu: Option<Duration>,
    generator_cpu: Duration,
    counters: Counters,
    work: Work,
}

impl Phases<'_> {
    fn settings(&self) -> &Settings {
        self.run.settings
    }

    fn plan(&self, target: Target, duration: Duration, stop_when_sold_out: bool) -> Plan {
        Plan {
            port: self.front.unwrap_or(self.server).port,
            connections: self.settings().connections,
            duration,
            requests_max: self.settings().requests_max,
            target,
            stop_when_sold_out,
            honor_retry_after: false,
            end_on_time: false,
        }
    }

    fn register(event: &str) -> Target {
        Target::Register { event: event.into() }
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let front_cpu = self.front.and_then(|front| system::cpu_time(front.pid)).unwrap_or_default();
        Ok(Snapshot {
            server_cpu: system::cpu_time(self.server.pid).unwrap_or_default() + front_cpu,
            database_cpu: system::store_cpu_time(),
            generator_cpu: system::own_cpu_time().unwrap_or_default(),
            counters: self.run.admin.counters(self.sandbox).await?,
            work: self.server.work(self.run.contender).await?,
        })
    }

    async fn create_event(&self, event: &str, seats: u64) -> anyhow::Result<()> {
        let mut connection = Connection::open(self.server.port).await?;
        let response =
            connection.exchange(&http::create_event(&self.settings().admin_token, event, seats)).await?;
        anyhow::ensure!(response.status == 201, "creating {event}: {} {}", response.status, response.text());
        if self.front.is_some() {
            // The owner takes the event's lease now, so that the forwarding node finds it owned.
            let read = connection.exchange(&http::get(&format!("/v1/events/{event}"))).await?;
            anyhow::ensure!(read.status == 200, "reading {event}: {} {}", read.status, read.text());
        }
        Ok(())
    }

    /// Every phase; returns the measurement and how many registrations to the hot event were
    /// acknowledged.
    async fn all(&self) -> anyhow::Result<(Measurement, u64)> {
        let registrants = Arc::new(Registrants::new(self.settings().resubmit_percent));
        self.create_event(HOT_EVENT, self.settings().seats).await?;
        self.warm_up(&registrants).await?;
        let mut measurement = Measurement::default();
        let admission = self.admissions(&mut measurement, &registrants).await?;
        let filled = self.fill(&admission, registrants.clone()).await?;
        measurement.topped_up = filled.topped_up;
        let late_admissions = self.sold_out(&mut measurement, &registrants).await?;
        self.paced(&mut measurement, registrants).await?;
        let acknowledged = admission.tally.successes() + filled.acknowledged + late_admissions;
        Ok((measurement, acknowledged))
    }

    async fn warm_up(&self, registrants: &Arc<Registrants>) -> anyhow::Result<()> {
        // As many seats as the hot event: a warm-up that fills it turns to sold-out answers,
        // which warm up as well, and a larger event would inflate the servers' memory.
        self.create_event(WARMUP_EVENT, self.settings().seats).await?;
        let duration = Duration::from_secs(self.settings().warmup_seconds);
        load::closed_loop(self.plan(Self::register(WARMUP_EVENT), duration, false), registrants.clone())
            .await?;
        Ok(())
    }

    async fn admissions(
        &self,
        measurement: &mut Measurement,
        registrants: &Arc<Registrants>,
    ) -> anyhow::Result<PhaseResult> {
        let duration = Duration::from_secs(self.settings().seconds);
        let before = self.snapshot().await?;
        let plan = self.plan(Self::register(HOT_EVENT), duration, true);
        let admission = load::closed_loop(plan, registrants.clone()).await?;
        let after = self.snapshot().await?;
        record_admission(measurement, &admission, &before, &after);
        keep_what_applies(self.run.contender, measurement);
        Ok(admission)
    }

    /// New registrants keep coming to the full event; returns the 2xx answers a storing design
    /// gave (seats sold past the end, which the integrity check then counts).
    async fn sold_out(
        &self,
        measurement: &mut Measurement,
        registrants: &Arc<Registrants>,
    ) -> anyhow::Result<u64> {
        let target = match self.run.contender.decides() {
            false => Target::Get { path: format!("/v1/events/{HOT_EVENT}") },
            true => Self::register(HOT_EVENT),
        };
        let duration = Duration::from_secs(self.settings().seconds);
        let before = self.snapshot().await?;
        let sold_out = load::closed_loop(self.plan(target, duration, false), registrants.clone()).await?;
        let after = self.snapshot().await?;
        record_sold_out(measurement, &sold_out, &before, &after);
        Ok(if self.run.contender.decides() { sold_out.tally.successes() } else { 0 })
    }

    /// The open loop at `PACED_SHARE` of the closed loop's accepted rate, on an event that
    /// cannot sell out.
    async fn paced(
        &self,
        measurement: &mut Measurement,
        registrants: Arc<Registrants>,
    ) -> anyhow::Result<()> {
        let rate = measurement.accepted_per_second * PACED_SHARE;
        if rate <= 0.0 {
            return Ok(());
        }
        let duration = Duration::from_secs(self.settings().seconds);
        let seats = (rate * duration.as_secs_f64() * PACED_SEATS_MARGIN).ceil() as u64 + 1;
        self.create_event(PACED_EVENT, seats).await?;
        let flushing_before = self.run.admin.flushing().await?;
        let paced =
            load::open_loop(self.plan(Self::register(PACED_EVENT), duration, false), registrants, rate)
                .await?;
        if let (Some(before), Some(after)) = (flushing_before, self.run.admin.flushing().await?) {
            measurement.paced_pages_flushed =
                Some(after.pages_flushed.saturating_sub(before.pages_flushed) as f64);
            measurement.paced_checkpoint_share = (before.checkpoint_age_max > 0)
                .then(|| before.checkpoint_age as f64 / before.checkpoint_age_max as f64);
        }
        measurement.paced_rate = rate;
        measurement.paced_latency = Latency::of(&paced.tally.successes);
        measurement.paced_errors = paced.tally.errors();
        measurement.paced_slow_moments = paced.slow_moments(SLOW_MOMENT, SLOW_MOMENTS_SHOWN);
        Ok(())
    }

    /// Makes sure the hot event is full before the sold-out phase: Kuota through its API (its
    /// state lives in its actor), the baselines straight into their tables.
    async fn fill(&self, admission: &PhaseResult, registrants: Arc<Registrants>) -> anyhow::Result<Filled> {
        let contender = self.run.contender;
        if admission.tally.first_sold_out_at.is_some() || !contender.decides() {
            return Ok(Filled::default());
        }
        if contender == Contender::Kuota {
            let plan = self.plan(Self::register(HOT_EVENT), Duration::from_secs(FILL_SECONDS_MAX), true);
            let filled = load::closed_loop(plan, registrants).await?;
            return Ok(Filled { acknowledged: filled.tally.successes(), topped_up: 0 });
        }
        let seats = self.settings().seats;
        let stored = self.run.admin.stored(self.sandbox, contender, HOT_EVENT).await?;
        let missing = seats.saturating_sub(stored.rows);
        self.run.admin.top_up(self.sandbox, HOT_EVENT, missing).await?;
        if contender == Contender::RedisCounter {
            database::set_seat_counter(&self.settings().redis_url, self.prefix, HOT_EVENT, seats).await?;
        }
        Ok(Filled { acknowledged: 0, topped_up: missing })
    }
}

/// What filling the hot event took.
#[derive(Debug, Default)]
struct Filled {
    /// Registrations acknowledged by the server while filling.
    acknowledged: u64,
    /// Rows the harness inserted itself.
    topped_up: u64,
}

fn record_admission(
    measurement: &mut Measurement,
    admission: &PhaseResult,
    before: &Snapshot,
    after: &Snapshot,
) {
    let tally = &admission.tally;
    let accepted = tally.successes();
    // Once sold out, the rate is that of the window in which seats were left.
    let window = match tally.first_sold_out_at {
        Some(_) => tally.last_success_at,
        None => admission.elapsed,
    };
    measurement.accepted = accepted;
    measurement.selling_seconds = window.as_secs_f64();
    measurement.sold_out_passes = u32::from(tally.first_sold_out_at.is_some());
    measurement.passes = 1;
    measurement.accepted_per_second = per_second(accepted, window);
    measurement.success_latency = Latency::of(&tally.successes);
    measurement.admission_errors = tally.errors();
    measurement.already_registered = tally.already_registered;
    let generator = after.generator_cpu.saturating_sub(before.generator_cpu);
    measurement.generator_busy = generator.as_secs_f64() / admission.elapsed.as_secs_f64().max(f64::EPSILON);
    let server = after.server_cpu.saturating_sub(before.server_cpu);
    measurement.server_cpu_per_accepted_us = per_item(server.as_secs_f64() * 1e6, accepted);
    let counters = after.counters.since(before.counters);
    measurement.statements_per_accepted = per_item(counters.statements as f64, accepted);
    measurement.rows_written_per_accepted = per_item(counters.rows_written as f64, accepted);
    measurement.database_cpu_per_accepted_us =
        counters.cpu_seconds.and_then(|seconds| per_item(seconds * 1e6, accepted));
    let database =
        after.database_cpu.zip(before.database_cpu).map(|(after, before)| after.saturating_sub(before));
    measurement.database_process_cpu_per_accepted_us =
        database.and_then(|spent| per_item(spent.as_secs_f64() * 1e6, accepted));
    let work = after.work.since(before.work);
    measurement.transactions_per_accepted = per_item(work.transactions as f64, accepted);
    measurement.lock_attempts_per_accepted = per_item(work.lock_attempts as f64, accepted);
    measurement.commit_ms = per_item(work.commit_seconds * 1e3, work.transactions);
    if let Some(failure) = &tally.first_failure {
        eprintln!("    first unexpected answer during admissions: {failure}");
    }
}

/// Leaves out the figures that do not apply to a contender (the ceiling stores nothing; only
/// lock-and-transaction takes locks; only Kuota has a write-behind).
fn keep_what_applies(contender: Contender, measurement: &mut Measurement) {
    if !contender.stores_registrations() {
        measurement.statements_per_accepted = None;
        measurement.rows_written_per_accepted = None;
        measurement.database_cpu_per_accepted_us = None;
        measurement.transactions_per_accepted = None;
    }
    if contender != Contender::LockAndTransaction {
        measurement.lock_attempts_per_accepted = None;
    }
    if contender != Contender::Kuota {
        measurement.commit_ms = None;
    }
}

fn record_sold_out(
    measurement: &mut Measurement,
    sold_out: &PhaseResult,
    before: &Snapshot,
    after: &Snapshot,
) {
    let tally = &sold_out.tally;
    let answers = tally.successes() + tally.sold_out + tally.already_registered;
    measurement.sold_out_answers_per_second = per_second(answers, sold_out.elapsed);
    let mut latencies = tally.successes.clone();
    // Same bounds: adding cannot fail.
    latencies.add(&tally.refusals).expect("same bounds");
    measurement.sold_out_latency = Latency::of(&latencies);
    measurement.sold_out_errors = tally.errors();
    let counters = after.counters.since(before.counters);
    measurement.statements_per_sold_out = per_item(counters.statements as f64, answers);
    let server = after.server_cpu.saturating_sub(before.server_cpu);
    measurement.server_cpu_per_sold_out_us = per_item(server.as_secs_f64() * 1e6, answers);
}

fn per_second(count: u64, window: Duration) -> f64 {
    if window.is_zero() { 0.0 } else { count as f64 / window.as_secs_f64() }
}

fn per_item(total: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| total / count as f64)
}
