//! The write-behind writer on MariaDB: committed registrations per second, registrations per
//! transaction and latencies for `batch_size_max` of 1, 10, 100 and 1,000, beside one
//! autocommitted `INSERT` per registration, in the same run. With the argument `recovery` it
//! measures instead how long `load` takes for an event with 1,000,000 stored registrations, and
//! the resident memory after it.
//!
//! ```text
//! cargo bench -p kuota-benches --bench write_behind              # the batching table
//! cargo bench -p kuota-benches --bench write_behind -- recovery  # 1M-registration recovery
//! ```
//!
//! It uses the MariaDB at `KUOTA_BENCH_MYSQL_URL` (else `KUOTA_TEST_MYSQL_URL`, else
//! `mysql://root@127.0.0.1:3306`), in a database of its own that it drops at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kuota_engine::store::{EventLoader, Submission, SubmissionSender};
use kuota_engine::{CategoryCode, Command, EventId, EventQuota, RegistrationDetails, Timestamp};
use kuota_persist::store::SqlStore;
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig, WriteBehindStats};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

const MYSQL_URL_DEFAULT: &str = "mysql://root@127.0.0.1:3306";

/// How long each configuration is driven at saturation, in seconds.
const RUN_SECONDS: u64 = 5;

/// Batch sizes compared, in effects (one registration is one effect).
const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1_000];

/// Registrations each event keeps waiting for their answers, in batches of `batch_size_max`:
/// enough that a full batch is always ready while another commits (saturation), few enough
/// that the latency measured is the writer's, not a long queue's.
const IN_FLIGHT_BATCHES: usize = 3;

/// Pause between two configurations, in seconds, so that the database has flushed and purged
/// what the previous one (and its dropped database) left.
const SETTLE_SECONDS: u64 = 3;

/// Submissions the recovery seeding keeps waiting for answers at once.
const ANSWERS_IN_FLIGHT_MAX: usize = 65_536;

/// Connections the autocommit baseline inserts on, as many as the writer may use.
const BASELINE_CONNECTIONS: u32 = 4;

/// Registrations stored for the recovery measurement.
const RECOVERY_REGISTRATIONS: usize = 1_000_000;

/// Loads measured, each in a fresh process.
const RECOVERY_LOADS: usize = 3;

/// Registrations decided per submission while seeding the recovery database (seeding speed
/// only; the measurement is the load).
const SEED_REGISTRATIONS_PER_SUBMISSION: usize = 50;

/// What the writer answers a submission.
type Answer = Result<(), kuota_engine::store::StoreError>;

fn server_url() -> String {
    std::env::var("KUOTA_BENCH_MYSQL_URL")
        .or_else(|_| std::env::var("KUOTA_TEST_MYSQL_URL"))
        .unwrap_or_else(|_| MYSQL_URL_DEFAULT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn main() {
    // `cargo bench` passes `--bench`; the words that matter are the others.
    let arguments: Vec<String> =
        std::env::args().skip(1).filter(|argument| !argument.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match arguments.first().map(String::as_str) {
        Some("recovery") => runtime.block_on(recovery()),
        Some("recovery-load") => runtime.block_on(recovery_load(&arguments[1], &arguments[2])),
        _ => runtime.block_on(batching()),
    }
}

/// A database of its own, dropped when done.
struct BenchDatabase {
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create(label: &str) -> BenchDatabase {
        let name = format!("kuota_bench_{label}_{}", std::process::id());
        let mut server = sqlx::MySqlConnection::connect(&server_url()).await.expect("MariaDB answers");
        let sql = format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut server)
            .await
            .expect("the bench may create databases");
        let url = format!("{}/{name}", server_url());
        BenchDatabase { name, url }
    }

    async fn drop_database(self) {
        let mut server = sqlx::MySqlConnection::connect(&server_url()).await.expect("MariaDB answers");
        let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut server)
            .await
            .expect("the bench may drop databases");
    }
}

fn now() -> Timestamp {
    kuota_engine::Clock::now(&kuota_engine::SystemClock)
}

/// What one configuration measured.
struct Run {
    label: String,
    registrations: u64,
    elapsed: Duration,
    ack_latency_micros: Histogram<u64>,
    stats: Option<WriteBehindStats>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.registrations as f64 / self.elapsed.as_secs_f64()
    }
}

async fn batching() {
    println!("write-behind on MariaDB ({}), {RUN_SECONDS} s per row at saturation", server_url());
    let mut runs = Vec::new();
    for batch_size_max in BATCH_SIZES {
        runs.push(writer_run(batch_size_max, 1, 1).await);
    }
    // Two batches of the one event in flight: one writes while the one before it commits.
    runs.push(writer_run(100, 1, 2).await);
    for connections_max in [1, 2] {
        runs.push(writer_run(1_000, 4, connections_max).await);
    }
    runs.push(autocommit_run().await);
    println!();
    println!(
        "| {:<38} | {:>12} | {:>9} | {:>13} | {:>13} | {:>13} | {:>13} |",
        "configuration",
        "registr./s",
        "regs/tx",
        "tx p50 (ms)",
        "tx p99 (ms)",
        "ack p50 (ms)",
        "ack p99 (ms)"
    );
    println!("|{:-<40}|{:->14}|{:->11}|{:->15}|{:->15}|{:->15}|{:->15}|", "", "", "", "", "", "", "");
    for run in &runs {
        let (per_transaction, transaction_p50, transaction_p99) = match &run.stats {
            Some(stats) => (
                format!("{:.1}", stats.effects_committed as f64 / stats.batches_committed.max(1) as f64),
                bucket_millis(stats.commit_latency_micros.quantile_upper_bound(0.5)),
                bucket_millis(stats.commit_latency_micros.quantile_upper_bound(0.99)),
            ),
            None => ("1.0".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<38} | {:>12.0} | {:>9} | {:>13} | {:>13} | {:>13.2} | {:>13.2} |",
            run.label,
            run.per_second(),
            per_transaction,
            transaction_p50,
            transaction_p99,
            run.ack_latency_micros.value_at_quantile(0.5) as f64 / 1_000.0,
            run.ack_latency_micros.value_at_quantile(0.99) as f64 / 1_000.0,
        );
    }
    println!();
    println!("tx: BEGIN to COMMIT of one batch (upper bound of its histogram bucket);");
    println!(
        "ack: a registration's submission to its acknowledgement, with {IN_FLIGHT_BATCHES} batches in flight per event."
    );
    println!(
        "autocommit: one INSERT of the registration row alone per registration, {BASELINE_CONNECTIONS} connections."
    );
}

fn bucket_millis(bound: Option<u64>) -> String {
    match bound {
        None => "-".into(),
        Some(u64::MAX) => "> 10000".into(),
        Some(micros) => format!("≤ {:.2}", micros as f64 / 1_000.0),
    }
}

/// Drives the writer at saturation: one producer per event decides registrations with the real
/// `EventQuota` and submits each as soon as the queue has room.
async fn writer_run(batch_size_max: usize, events: usize, connections_max: u32) -> Run {
    tokio::time::sleep(Duration::from_secs(SETTLE_SECONDS)).await;
    let database = BenchDatabase::create("writer").await;
    let store = SqlStore::connect(&database.url).await.expect("the bench database takes the schema");
    let config = WriteBehindConfig { batch_size_max, connections_max, ..WriteBehindConfig::default() };
    let (sender, writer) = WriteBehind::start(store.clone(), config, None);
    let in_flight = IN_FLIGHT_BATCHES * batch_size_max * events;
    let (answers, mut answered) = mpsc::channel::<(Instant, oneshot::Receiver<Answer>)>(in_flight);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut producers = Vec::new();
    for index in 0..events {
        let config =
            kuota_benches::fixtures::event_with_categories(&format!("race{index}"), &[("10K", 10_000_000)]);
        assert!(store.create_event(&config, now()).await.expect("the event is stored"));
        let loaded = store.load(&config.id).await.expect("the event loads").expect("it exists");
        producers.push(tokio::spawn(produce(
            loaded.quota,
            loaded.epoch,
            sender.clone(),
            answers.clone(),
            stop.clone(),
        )));
    }
    drop(answers);
    drop(sender);
    let collector = tokio::spawn(async move {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        let mut registrations = 0u64;
        let mut last = Instant::now();
        while let Some((sent_at, answer)) = answered.recv().await {
            match answer.await {
                Ok(Ok(())) => {
                    last = Instant::now();
                    registrations += 1;
                    latency
                        .saturating_record(u64::try_from((last - sent_at).as_micros()).unwrap_or(u64::MAX));
                }
                Ok(Err(error)) => panic!("the writer failed a submission: {error}"),
                Err(_) => panic!("the writer dropped a submission"),
            }
        }
        (registrations, last, latency)
    });
    tokio::time::sleep(Duration::from_secs(RUN_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.await.expect("a producer does not panic");
    }
    let (registrations, last, ack_latency_micros) = collector.await.expect("the collector does not panic");
    let stats = writer.stats();
    writer.closed().await;
    store.close().await;
    database.drop_database().await;
    let label = format!(
        "batch ≤ {batch_size_max}, {events} event{}, {connections_max} conn.",
        if events == 1 { "" } else { "s" }
    );
    eprintln!("{label}: {registrations} registrations, {} retries", stats.retries);
    Run { label, registrations, elapsed: last - started, ack_latency_micros, stats: Some(stats) }
}

async fn produce(
    mut quota: EventQuota,
    epoch: u64,
    sender: SubmissionSender,
    answers: mpsc::Sender<(Instant, oneshot::Receiver<Answer>)>,
    stop: Arc<AtomicBool>,
) {
    let category = CategoryCode::parse("10K").expect("a valid code");
    let details = Arc::new(RegistrationDetails {
        full_name: "Bench Runner".into(),
        access_token_hash: "a3f1c2d4e5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2".into(),
        ..Default::default()
    });
    let event = quota.config().id.clone();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let request = kuota_benches::fixtures::request(n, &category, &details);
        n += 1;
        let (_, effects) = quota.apply(&Command::Register(request), now());
        let Ok(permit) = sender.reserve().await else { return };
        let (done, answer) = oneshot::channel();
        let sent_at = Instant::now();
        permit.send(Submission { event: event.clone(), epoch, effects, done });
        if answers.send((sent_at, answer)).await.is_err() {
            return;
        }
    }
}

/// One `INSERT` per registration in autocommit mode, on `BASELINE_CONNECTIONS` connections.
async fn autocommit_run() -> Run {
    tokio::time::sleep(Duration::from_secs(SETTLE_SECONDS)).await;
    let database = BenchDatabase::create("autocommit").await;
    let store = SqlStore::connect(&database.url).await.expect("the bench database takes the schema");
    store.close().await;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(BASELINE_CONNECTIONS)
        .connect(&database.url)
        .await
        .expect("MariaDB answers");
    let next = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(RUN_SECONDS);
    let mut workers = Vec::new();
    for _ in 0..BASELINE_CONNECTIONS {
        let (pool, next) = (pool.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
            let mut count = 0u64;
            while Instant::now() < deadline {
                let number = next.fetch_add(1, Ordering::Relaxed) as i64;
                let email = format!("runner{number}@example.org");
                let at = now().as_millis() as i64;
                let insert_started = Instant::now();
                sqlx::query(
                    "INSERT INTO registrations (event_id, number, category_code, email, active_email, full_name, \
                     status, access_token_hash, created_at, updated_at) \
                     VALUES ('race', ?, '10K', ?, ?, 'Bench Runner', 'confirmed', 'hash', ?, ?)",
                )
                .bind(number)
                .bind(&email)
                .bind(&email)
                .bind(at)
                .bind(at)
                .execute(&pool)
                .await
                .expect("the insert succeeds");
                latency.saturating_record(insert_started.elapsed().as_micros() as u64);
                count += 1;
            }
            (count, latency)
        }));
    }
    let mut registrations = 0;
    let mut ack_latency_micros = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for worker in workers {
        let (count, latency) = worker.await.expect("a worker does not panic");
        registrations += count;
        ack_latency_micros.add(latency).expect("same bounds");
    }
    let elapsed = started.elapsed();
    pool.close().await;
    database.drop_database().await;
    let label = "autocommit INSERT per registration".to_owned();
    eprintln!("{label}: {registrations} registrations");
    Run { label, registrations, elapsed, ack_latency_micros, stats: None }
}

/// Seeds an event with `RECOVERY_REGISTRATIONS` confirmed, keyed registrations through the
/// writer, then loads it `RECOVERY_LOADS` times, each in a fresh process.
async fn recovery() {
    let database = BenchDatabase::create("recovery").await;
    let store = SqlStore::connect(&database.url).await.expect("the bench database takes the schema");
    let capacity = u32::try_from(RECOVERY_REGISTRATIONS / 2).expect("fits");
    let config =
        kuota_benches::fixtures::event_with_categories("race", &[("10K", capacity), ("21K", capacity)]);
    assert!(store.create_event(&config, now()).await.expect("the event is stored"));
    let loaded = store.load(&config.id).await.expect("the event loads").expect("it exists");
    let mut quota = loaded.quota;
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let codes = [CategoryCode::parse("10K").expect("valid"), CategoryCode::parse("21K").expect("valid")];
    let details = Arc::new(RegistrationDetails {
        full_name: "Bench Runner".into(),
        phone: Some("+41 79 000 00 00".into()),
        attributes_json: Some(r#"{"shirt":"M","club":"Bench Runners"}"#.into()),
        access_token_hash: "a3f1c2d4e5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2".into(),
    });
    let seeding = Instant::now();
    let (answers, mut answered) = mpsc::channel::<oneshot::Receiver<Answer>>(ANSWERS_IN_FLIGHT_MAX);
    let collector = tokio::spawn(async move {
        while let Some(answer) = answered.recv().await {
            answer.await.expect("answered").expect("the seed commits");
        }
    });
    let mut effects = Vec::new();
    for n in 0..RECOVERY_REGISTRATIONS {
        let request = kuota_benches::fixtures::request(n, &codes[n % 2], &details);
        let (_, decided) = quota.apply(&Command::Register(request), now());
        effects.extend(decided);
        if effects.len() >= SEED_REGISTRATIONS_PER_SUBMISSION || n + 1 == RECOVERY_REGISTRATIONS {
            let (done, answer) = oneshot::channel();
            let submission = Submission {
                event: config.id.clone(),
                epoch: loaded.epoch,
                effects: std::mem::take(&mut effects),
                done,
            };
            sender.send(submission).await.expect("the writer runs");
            answers.send(answer).await.expect("the collector runs");
        }
    }
    drop(answers);
    collector.await.expect("the seed commits");
    drop(sender);
    writer.closed().await;
    let seeded_in = seeding.elapsed();
    println!(
        "seeded {RECOVERY_REGISTRATIONS} registrations (with as many idempotency entries) in {:.1} s: {:.0} registrations/s",
        seeded_in.as_secs_f64(),
        RECOVERY_REGISTRATIONS as f64 / seeded_in.as_secs_f64()
    );
    drop(quota);
    store.close().await;

    let executable = std::env::current_exe().expect("the bench knows its own path");
    for attempt in 1..=RECOVERY_LOADS {
        let output = std::process::Command::new(&executable)
            .args(["recovery-load", database.url.as_str(), "race"])
            .output()
            .expect("the bench runs itself");
        assert!(output.status.success(), "the load failed: {}", String::from_utf8_lossy(&output.stderr));
        print!("load {attempt}: {}", String::from_utf8_lossy(&output.stdout));
    }
    database.drop_database().await;
}

/// In a fresh process: connect, load the event once, print the time and the memory.
async fn recovery_load(url: &str, event: &str) {
    let store = SqlStore::connect(url).await.expect("the database answers");
    let before = memory_kilobytes("VmRSS:");
    let started = Instant::now();
    let loaded = store
        .load(&EventId::parse(event).expect("a valid id"))
        .await
        .expect("the event loads")
        .expect("the event exists");
    let elapsed = started.elapsed();
    let after = memory_kilobytes("VmRSS:");
    let peak = memory_kilobytes("VmHWM:");
    println!(
        "{} active registrations, {} idempotency entries, epoch {}: ready in {:.2} s; resident {} MiB \
         (+{} MiB for the event), peak {} MiB",
        loaded.quota.active_registrations(),
        loaded.quota.idempotency_entries(),
        loaded.epoch,
        elapsed.as_secs_f64(),
        after / 1024,
        after.saturating_sub(before) / 1024,
        peak / 1024,
    );
}

/// A memory figure of this process from `/proc/self/status`, in KiB (0 where unavailable).
fn memory_kilobytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kilobytes| kilobytes.parse().ok())
        .unwrap_or(0)
}
