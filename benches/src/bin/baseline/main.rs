//! `baseline`: the designs Kuota is compared against, each a small actix-web server that takes
//! the same requests as Kuota's API (`POST /v1/events` with the admin token,
//! `POST /v1/events/{id}/registrations` with an `Idempotency-Key`) over the same MariaDB and
//! Redis. The end-to-end harness (`e2e`) starts them; by hand:
//!
//! ```sh
//! cargo run --release -p kuota-benches --bin baseline -- --design redis-counter \
//!     --database-url mysql://root@127.0.0.1:3306/bench --redis-url redis://127.0.0.1:6379 --admin-token t
//! ```
//!
//! # Layout
//! - `common`: request checks, answers, the schema, event creation, the capacity cache.
//! - `ceiling`: parses and answers 201 without storing anything.
//! - `durable_ceiling`: the ceiling plus one plain row per request, committed in groups.
//! - `lock_transaction`: a Redis lock per event around a counting MySQL transaction.
//! - `redis_counter`: an atomic Lua counter in Redis, then one `INSERT` per admission.

mod ceiling;
mod common;
mod durable_ceiling;
mod lock_transaction;
mod redis_counter;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;

use crate::common::Capacities;
use crate::durable_ceiling::GroupCommit;

/// The largest request body, in bytes (Kuota's default `KUOTA_BODY_LIMIT_BYTES`).
const BODY_LIMIT_BYTES: usize = 16 * 1024;
/// How long in-flight requests may finish after a stop signal, in seconds.
const SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;
/// How long a request waits for a pooled database connection, in ms.
const POOL_ACQUIRE_TIMEOUT_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Design {
    Ceiling,
    DurableCeiling,
    LockAndTransaction,
    RedisCounter,
}

#[derive(Debug, Parser)]
#[command(name = "baseline", about = "The designs Kuota's end-to-end benchmark compares against")]
struct Args {
    #[arg(long, value_enum)]
    design: Design,
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// mysql://user@host:port/database (not needed by the ceiling).
    #[arg(long)]
    database_url: Option<String>,
    /// redis://host:port (not needed by the ceiling).
    #[arg(long)]
    redis_url: Option<String>,
    /// Prefix of every Redis key this server writes.
    #[arg(long, default_value = "kuota-bench:")]
    redis_prefix: String,
    /// Bearer token of `POST /v1/events`.
    #[arg(long)]
    admin_token: String,
    /// HTTP worker threads [default: the number of cores, as Kuota].
    #[arg(long)]
    workers: Option<usize>,
    /// Connections in the database pool.
    #[arg(long, default_value_t = 32)]
    database_connections: u32,
    /// Pause between two attempts to take a busy lock, in ms (Laravel's `block()` waits 250).
    #[arg(long, default_value_t = 2)]
    lock_retry_ms: u64,
    /// Groups committing at once (durable-ceiling) [default: Kuota's writer connections].
    #[arg(long, default_value_t = kuota_persist::write_behind::CONNECTIONS_MAX as usize)]
    committers: usize,
}

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    pub admin_token: String,
    pub database: Option<MySqlPool>,
    pub redis: Option<ConnectionManager>,
    pub redis_prefix: String,
    pub capacities: Capacities,
    pub lock_retry: Duration,
    pub stats: Arc<Stats>,
    /// The durable ceiling's committers.
    pub group_commit: Option<GroupCommit>,
}

/// What the harness reads from `GET /bench/stats`: work the design did, counted where it is done.
#[derive(Debug, Default)]
pub struct Stats {
    /// Database transactions ended (committed or rolled back; an autocommit statement is one).
    pub transactions: AtomicU64,
    /// `SET NX` attempts on a lock (lock-and-transaction only).
    pub lock_attempts: AtomicU64,
}

impl Stats {
    pub fn count_transaction(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

async fn stats(state: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "transactions": state.stats.transactions.load(Ordering::Relaxed),
        "lock_attempts": state.stats.lock_attempts.load(Ordering::Relaxed),
    }))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shared = web::Data::new(connect(&args).await?);
    let listener = TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let design = args.design;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(BODY_LIMIT_BYTES))
            .route("/healthz", web::get().to(HttpResponse::Ok))
            .route("/bench/stats", web::get().to(stats))
            .configure(|config| match design {
                Design::Ceiling => ceiling::configure(config),
                Design::DurableCeiling => durable_ceiling::configure(config),
                Design::LockAndTransaction => lock_transaction::configure(config),
                Design::RedisCounter => redis_counter::configure(config),
            })
    })
    .workers(workers)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECONDS)
    .listen(listener)?
    .run();
    // The harness waits for this line to learn the port.
    println!("baseline {design:?} listening on http://{address}");
    std::io::stdout().flush()?;
    server.await.context("serving HTTP")
}

/// Opens the pool (creating the schema) and the Redis connection the design needs.
async fn connect(args: &Args) -> anyhow::Result<Shared> {
    let needs_database = args.design != Design::Ceiling;
    let needs_redis = matches!(args.design, Design::LockAndTransaction | Design::RedisCounter);
    let database = match (&args.database_url, needs_database) {
        (Some(url), true) => Some(open_database(url, args.database_connections, args.design).await?),
        (None, true) => anyhow::bail!("--database-url is required by {:?}", args.design),
        (_, false) => None,
    };
    let redis = match (&args.redis_url, needs_redis) {
        (Some(url), true) => {
            let client = redis::Client::open(url.as_str()).context("parsing --redis-url")?;
            Some(ConnectionManager::new(client).await.context("connecting to Redis")?)
        }
        (None, true) => anyhow::bail!("--redis-url is required by {:?}", args.design),
        (_, false) => None,
    };
    let stats = Arc::new(Stats::default());
    let group_commit = match (&database, args.design) {
        (Some(pool), Design::DurableCeiling) => {
            Some(GroupCommit::start(pool.clone(), args.committers, stats.clone()))
        }
        _ => None,
    };
    Ok(Shared {
        admin_token: args.admin_token.clone(),
        database,
        redis,
        redis_prefix: args.redis_prefix.clone(),
        capacities: Capacities::default(),
        lock_retry: Duration::from_millis(args.lock_retry_ms),
        stats,
        group_commit,
    })
}

async fn open_database(url: &str, connections: u32, design: Design) -> anyhow::Result<MySqlPool> {
    let pool = MySqlPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
        .connect(url)
        .await
        .context("connecting to MariaDB")?;
    for statement in common::SCHEMA {
        sqlx::query(statement).execute(&pool).await.context("creating the schema")?;
    }
    if design == Design::DurableCeiling {
        sqlx::query(durable_ceiling::SCHEMA).execute(&pool).await.context("creating the schema")?;
    }
    Ok(pool)
}
