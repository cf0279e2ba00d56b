//! The contenders as processes: where their binaries are, how each is started (pinned to a core
//! or not), how the harness learns its port, and how it is stopped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::http::{self, Connection};

/// How long a server may take to print its address, in seconds (Kuota migrates its schema).
const STARTUP_SECONDS_MAX: u64 = 60;
/// How long a server may take to exit after SIGTERM, in seconds (Kuota drains its writer).
const STOP_SECONDS_MAX: u64 = 60;
/// How often the log is read while waiting for the address, in ms.
const STARTUP_POLL_MS: u64 = 20;
/// Lines of a server's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// What every server prints once it listens, followed by its address.
const LISTENING_MARKER: &str = "listening on http://";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contender {
    Ceiling,
    DurableCeiling,
    LockAndTransaction,
    RedisCounter,
    Kuota,
}

impl Contender {
    pub const ALL: [Contender; 5] = [
        Contender::Ceiling,
        Contender::DurableCeiling,
        Contender::LockAndTransaction,
        Contender::RedisCounter,
        Contender::Kuota,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Ceiling => "ceiling",
            Contender::DurableCeiling => "durable-ceiling",
            Contender::LockAndTransaction => "lock-and-transaction",
            Contender::RedisCounter => "redis-counter",
            Contender::Kuota => "kuota",
        }
    }

    pub fn parse(name: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|contender| contender.name() == name)
    }

    /// False for the ceiling, which stores nothing.
    pub fn stores_registrations(self) -> bool {
        self != Contender::Ceiling
    }

    /// False for the two ceilings, which answer every registration without deciding anything:
    /// they never sell out, so their sold-out phase is a `GET` and nothing is checked for
    /// overselling or duplicates.
    pub fn decides(self) -> bool {
        !matches!(self, Contender::Ceiling | Contender::DurableCeiling)
    }
}

/// The binaries the harness starts.
#[derive(Debug)]
pub struct Binaries {
    kuota: PathBuf,
    baseline: PathBuf,
}

impl Binaries {
    /// Looks in `directory`, or next to this program (`target/release/` when run by cargo).
    pub fn locate(directory: Option<PathBuf>) -> anyhow::Result<Binaries> {
        let directory = match directory {
            Some(directory) => directory,
            None => std::env::current_exe()?.parent().context("this program has no directory")?.to_path_buf(),
        };
        let binaries = Binaries { kuota: directory.join("kuota"), baseline: directory.join("baseline") };
        for binary in [&binaries.kuota, &binaries.baseline] {
            anyhow::ensure!(
                binary.is_file(),
                "{} is missing: build everything first with `cargo build --release --bins` \
                 (or point --bin-dir at the folder that holds `kuota` and `baseline`)",
                binary.display()
            );
        }
        Ok(binaries)
    }

    /// When the Kuota binary was built, for the report.
    pub fn kuota_built(&self) -> String {
        let modified = std::fs::metadata(&self.kuota).and_then(|metadata| metadata.modified());
        let age = modified.ok().and_then(|time| time.elapsed().ok());
        age.map_or("?".into(), |age| format!("{} min before the run", age.as_secs() / 60))
    }
}

/// How to start one contender.
#[derive(Debug)]
pub struct Launch<'a> {
    pub contender: Contender,
    pub database_url: &'a str,
    pub redis_url: &'a str,
    pub redis_prefix: &'a str,
    pub admin_token: &'a str,
    pub http_workers: usize,
    /// `Some(core)` to pin the server there with `taskset`.
    pub core: Option<usize>,
    pub log: PathBuf,
    /// `RUST_LOG` for Kuota.
    pub kuota_log: &'a str,
    /// Extra `KUOTA_*` settings, applied last.
    pub kuota_settings: &'a [(String, String)],
    pub database_connections: u32,
    pub lock_retry_ms: u64,
    /// Kuota's node id, when several nodes run (`KUOTA_NODE_ID`; the host name otherwise).
    pub node_id: Option<&'a str>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub pid: u32,
    pub port: u16,
    log: PathBuf,
}

/// Starts the contender and waits until it listens.
pub async fn start(launch: &Launch<'_>, binaries: &Binaries) -> anyhow::Result<Server> {
    let binary = match launch.contender {
        Contender::Kuota => &binaries.kuota,
        _ => &binaries.baseline,
    };
    let mut command = match launch.core {
        Some(core) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(core.to_string()).arg(binary);
            taskset
        }
        None => Command::new(binary),
    };
    configure(&mut command, launch);
    let log = std::fs::File::create(&launch.log)
        .with_context(|| format!("creating the log {}", launch.log.display()))?;
    command.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).stdin(Stdio::null());
    // A harness that dies (or is interrupted) must not leave servers behind.
    command.kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    // `taskset` execs the program, so the child's id is the server's.
    let pid = child.id().context("the server exited at once")?;
    let mut server = Server { child, pid, port: 0, log: launch.log.clone() };
    server.port = server.wait_for_port().await?;
    Ok(server)
}

/// Starts the server, runs `work` against it and stops it; an error of `work` carries the end of
/// the server's log.
pub async fn serving<T>(
    launch: &Launch<'_>,
    binaries: &Binaries,
    work: impl AsyncFnOnce(&Server) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let server = start(launch, binaries).await?;
    let measured = work(&server).await;
    let tail = server.log_tail();
    let stopped = server.stop().await;
    let value = measured.with_context(|| format!("the end of its log:\n{tail}"))?;
    stopped?;
    Ok(value)
}

fn configure(command: &mut Command, launch: &Launch<'_>) {
    match launch.contender {
        Contender::Kuota => {
            // Only the settings below: a KUOTA_* variable of the caller's shell must not change
            // what is measured.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("KUOTA_") {
                    command.env_remove(&name);
                }
            }
            command
                .env("KUOTA_LISTEN", "127.0.0.1:0")
                .env("KUOTA_DATABASE_URL", launch.database_url)
                .env("KUOTA_REDIS_URL", launch.redis_url)
                .env("KUOTA_REDIS_PREFIX", launch.redis_prefix)
                .env("KUOTA_ADMIN_TOKEN", launch.admin_token)
                .env("KUOTA_RATE_LIMIT_IP_PER_SECOND", "0")
                .env("KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE", "0")
                .env("KUOTA_HTTP_WORKERS", launch.http_workers.to_string())
                .env("KUOTA_LOG_FORMAT", "json")
                .env("RUST_LOG", launch.kuota_log);
            if let Some(node_id) = launch.node_id {
                command.env("KUOTA_NODE_ID", node_id);
            }
            command.envs(launch.kuota_settings.iter().map(|(name, value)| (name, value)));
        }
        baseline => {
            let design = baseline.name();
            command
                .args(["--design", design, "--listen", "127.0.0.1:0"])
                .args(["--admin-token", launch.admin_token])
                .args(["--workers", &launch.http_workers.to_string()])
                .args(["--database-connections", &launch.database_connections.to_string()])
                .args(["--lock-retry-ms", &launch.lock_retry_ms.to_string()])
                .args(["--redis-prefix", launch.redis_prefix]);
            if baseline.stores_registrations() {
                command.args(["--database-url", launch.database_url, "--redis-url", launch.redis_url]);
            }
        }
    }
}

impl Server {
    async fn wait_for_port(&mut self) -> anyhow::Result<u16> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(STARTUP_SECONDS_MAX) {
            if let Some(port) = listening_port(&self.log) {
                return Ok(port);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited ({status}) before listening:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(STARTUP_POLL_MS)).await;
        }
        anyhow::bail!("the server did not listen within {STARTUP_SECONDS_MAX} s:\n{}", self.log_tail())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Asks the server to stop (SIGTERM: Kuota then commits what it accepted) and waits; kills
    /// it when it does not exit in time.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let signalled = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await?.success();
        let exited = signalled
            && tokio::time::timeout(Duration::from_secs(STOP_SECONDS_MAX), self.child.wait()).await.is_ok();
        if !exited {
            self.child.kill().await?;
            anyhow::bail!("the server did not stop within {STOP_SECONDS_MAX} s:\n{}", self.log_tail());
        }
        Ok(())
    }
}

/// Work a server reports having done, counted where it is done: Kuota's write-behind counters
/// (`GET /metrics`), the baselines' own (`GET /bench/stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    /// Database transactions ended (an autocommit statement is one).
    pub transactions: u64,
    /// Lock attempts (lock-and-transaction).
    pub lock_attempts: u64,
    /// Kuota only: seconds its write-behind spent committing, over `transactions`.
    pub commit_seconds: f64,
}

impl Work {
    pub fn since(self, before: Work) -> Work {
        Work {
            transactions: self.transactions.saturating_sub(before.transactions),
            lock_attempts: self.lock_attempts.saturating_sub(before.lock_attempts),
            commit_seconds: self.commit_seconds - before.commit_seconds,
        }
    }
}

impl Server {
    /// What the server says it has done so far (nothing, for the ceiling).
    pub async fn work(&self, contender: Contender) -> anyhow::Result<Work> {
        let path = match contender {
            Contender::Ceiling => return Ok(Work::default()),
            Contender::Kuota => "/metrics",
            _ => "/bench/stats",
        };
        let mut connection = Connection::open(self.port).await?;
        let response = connection.exchange(&http::get(path)).await?;
        anyhow::ensure!(response.status == 200, "GET {path}: {} {}", response.status, response.text());
        let text = response.text();
        if contender == Contender::Kuota {
            return Ok(Work {
                transactions: metric(&text, "kuota_write_behind_batches_total") as u64,
                lock_attempts: 0,
                commit_seconds: metric(&text, "kuota_write_behind_commit_duration_seconds_sum"),
            });
        }
        let stats: serde_json::Value = serde_json::from_str(&text)?;
        let field = |name: &str| stats[name].as_u64().unwrap_or(0);
        Ok(Work {
            transactions: field("transactions"),
            lock_attempts: field("lock_attempts"),
            commit_seconds: 0.0,
        })
    }
}

/// The value of an unlabelled sample in Prometheus text, or 0 when it is not there.
fn metric(text: &str, name: &str) -> f64 {
    let sample = text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' '));
    sample.and_then(|value| value.trim().parse().ok()).unwrap_or(0.0)
}

/// The port in the server's "listening on http://host:port" line, once it is there.
fn listening_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|line| line.contains(LISTENING_MARKER))?;
    let address = line.split(LISTENING_MARKER).nth(1)?.split_whitespace().next()?;
    address.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}
