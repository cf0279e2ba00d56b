//! Settings, in layers: defaults, then an optional TOML file (`--config FILE`), then `KUOTA_*`
//! environment variables, then command-line flags. Names are part of the API contract.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kuota_persist::write_behind::WriteBehindConfig;
use serde::Deserialize;

/// Every setting as a flag (and its environment variable). Unset ones fall back to the file,
/// then to the defaults.
#[derive(Debug, Default, Parser)]
#[command(name = "kuota", version, about = "Kuota: event registration quotas under flash crowds")]
pub struct Cli {
    /// TOML file with any of the settings below (keys are the flag names with underscores).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KUOTA_LISTEN")]
    pub listen: Option<String>,
    /// Store: mysql://user:password@host:port/database or sqlite://path [default: sqlite://data/kuota.db].
    #[arg(long, env = "KUOTA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for leases, sessions and shared rate limits; unset = in-process.
    #[arg(long, env = "KUOTA_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this deployment writes [default: kuota:].
    #[arg(long, env = "KUOTA_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Admin bearer token; unset = a random one printed once at startup.
    #[arg(long, env = "KUOTA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Registration writes per second per client IP (0 = off) [default: 20].
    #[arg(long, env = "KUOTA_RATE_LIMIT_IP_PER_SECOND")]
    pub rate_limit_ip_per_second: Option<u32>,
    /// Burst of registration writes per client IP [default: 40].
    #[arg(long, env = "KUOTA_RATE_LIMIT_IP_BURST")]
    pub rate_limit_ip_burst: Option<u32>,
    /// Registration writes per minute per registrant e-mail (0 = off) [default: 6].
    #[arg(long, env = "KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE")]
    pub rate_limit_email_per_minute: Option<u32>,
    /// Comma-separated proxy IPs whose X-Forwarded-For is trusted [default: none].
    #[arg(long, env = "KUOTA_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// This node's id in a cluster [default: host name].
    #[arg(long, env = "KUOTA_NODE_ID")]
    pub node_id: Option<String>,
    /// URL other nodes reach this one at [default: the listen address].
    #[arg(long, env = "KUOTA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long an event's ownership lease lasts unless renewed, in ms; a crashed owner's events
    /// wait this long for a new owner [default: 3000].
    #[arg(long, env = "KUOTA_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Every request is answered within this, in ms: a registration not committed by then is a
    /// 503 with Retry-After (its key stays in flight until its batch resolves) [default: 2000].
    #[arg(long, env = "KUOTA_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// How long one call to the store (a statement, a commit, a free connection) may take, in ms,
    /// before it counts as failed [default: 1000].
    #[arg(long, env = "KUOTA_STORE_TIMEOUT_MS")]
    pub store_timeout_ms: Option<u64>,
    /// The store counts as stalled, and registration writes are refused at once, while the
    /// oldest commit in flight is older than this, in ms [default: 1000].
    #[arg(long, env = "KUOTA_STORE_STALL_MS")]
    pub store_stall_ms: Option<u64>,
    /// How long one Redis command may take, in ms, before it counts as failed [default: 250].
    #[arg(long, env = "KUOTA_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Open client connections this node accepts at once; more wait in the listen backlog
    /// [default: 4096].
    #[arg(long, env = "KUOTA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request body, in bytes [default: 16384].
    #[arg(long, env = "KUOTA_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// How long a write-behind batch gathers before it may commit, in ms; 0 commits as soon as
    /// the previous commit of its event finished [default: 0].
    #[arg(long, env = "KUOTA_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Most effects in one write-behind transaction [default: 1000].
    #[arg(long, env = "KUOTA_BATCH_SIZE_MAX")]
    pub batch_size_max: Option<usize>,
    /// Submissions the write-behind queue holds before requests are shed [default: 16384].
    #[arg(long, env = "KUOTA_WRITE_QUEUE_CAPACITY_MAX")]
    pub write_queue_capacity_max: Option<usize>,
    /// Messages one event actor's mailbox holds before requests are shed [default: 4096].
    #[arg(long, env = "KUOTA_MAILBOX_CAPACITY_MAX")]
    pub mailbox_capacity_max: Option<usize>,
    /// Dedicated threads that run event actors; 0 runs them on the main thread, beside the
    /// write-behind writer [default: 1].
    #[arg(long, env = "KUOTA_ACTOR_THREADS")]
    pub actor_threads: Option<usize>,
    /// HTTP worker threads [default: the number of cores].
    #[arg(long, env = "KUOTA_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// How long a replayable decision is kept, in seconds [default: 86400].
    #[arg(long, env = "KUOTA_IDEMPOTENCY_RETENTION_SECONDS")]
    pub idempotency_retention_seconds: Option<u32>,
    /// Log format: json, pretty or auto (pretty on a terminal) [default: auto].
    #[arg(long, env = "KUOTA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Outbox delivery on this node: `webhooks` (to the endpoints of `/v1/webhooks`), `log` (each
    /// entry as a log line) or `off` (another node or an external relay reads the outbox table)
    /// [default: webhooks].
    #[arg(long, env = "KUOTA_OUTBOX_DELIVERY")]
    pub outbox_delivery: Option<String>,
    /// Comma-separated hosts webhooks may reach over plain http:// and at private, loopback or
    /// link-local addresses [default: none].
    #[arg(long, env = "KUOTA_WEBHOOK_ALLOW_HOSTS")]
    pub webhook_allow_hosts: Option<String>,
    /// Pauses before each webhook retry, in seconds, comma-separated; each is spread by ±10 %
    /// [default: 5,300,1800,7200,18000,36000,50400,72000,86400].
    #[arg(long, env = "KUOTA_WEBHOOK_RETRY_SCHEDULE")]
    pub webhook_retry_schedule: Option<String>,
    /// How long one webhook attempt may take, in ms [default: 15000].
    #[arg(long, env = "KUOTA_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
}

/// The same settings as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    admin_token: Option<String>,
    rate_limit_ip_per_second: Option<u32>,
    rate_limit_ip_burst: Option<u32>,
    rate_limit_email_per_minute: Option<u32>,
    trusted_proxies: Option<String>,
    node_id: Option<String>,
    advertise_url: Option<String>,
    lease_ttl_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    store_timeout_ms: Option<u64>,
    store_stall_ms: Option<u64>,
    redis_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    body_limit_bytes: Option<usize>,
    flush_interval_ms: Option<u64>,
    batch_size_max: Option<usize>,
    write_queue_capacity_max: Option<usize>,
    mailbox_capacity_max: Option<usize>,
    actor_threads: Option<usize>,
    http_workers: Option<usize>,
    idempotency_retention_seconds: Option<u32>,
    log_format: Option<String>,
    outbox_delivery: Option<String>,
    webhook_allow_hosts: Option<String>,
    webhook_retry_schedule: Option<String>,
    webhook_timeout_ms: Option<u64>,
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub admin_token: Option<String>,
    pub rate_limit_ip_per_second: u32,
    pub rate_limit_ip_burst: u32,
    pub rate_limit_email_per_minute: u32,
    pub trusted_proxies: Vec<IpAddr>,
    pub node_id: String,
    pub advertise_url: String,
    pub lease_ttl_ms: u64,
    pub request_timeout_ms: u64,
    pub store_timeout_ms: u64,
    pub store_stall_ms: u64,
    pub redis_timeout_ms: u64,
    pub max_connections: usize,
    pub body_limit_bytes: usize,
    pub flush_interval_ms: u64,
    pub batch_size_max: usize,
    pub write_queue_capacity_max: usize,
    pub mailbox_capacity_max: usize,
    pub actor_threads: usize,
    pub http_workers: usize,
    pub idempotency_retention_seconds: u32,
    pub log_format: String,
    pub outbox_delivery: String,
    pub webhook_allow_hosts: String,
    pub webhook_retry_schedule: String,
    pub webhook_timeout_ms: u64,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/kuota.db";

/// How long an event's ownership lease lasts unless renewed, in ms: another node takes over a
/// crashed or frozen owner's events within this plus a second.
pub const LEASE_TTL_MS_DEFAULT: u64 = 3_000;

/// How long a request may take before it is answered 503, in ms.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2_000;

/// How long one store call may take, in ms.
pub const STORE_TIMEOUT_MS_DEFAULT: u64 = 1_000;

/// How old the oldest commit in flight may get before the store counts as stalled, in ms.
pub const STORE_STALL_MS_DEFAULT: u64 = 1_000;

/// How long one Redis command may take, in ms.
pub const REDIS_TIMEOUT_MS_DEFAULT: u64 = 250;

/// How long one webhook attempt may take, in ms (the contract's 15 s).
pub const WEBHOOK_TIMEOUT_MS_DEFAULT: u64 = 15_000;

/// Open client connections one node accepts at once.
pub const MAX_CONNECTIONS_DEFAULT: usize = 4_096;

impl Settings {
    /// Merges flags and environment (already in `cli`) over the file over the defaults.
    pub fn load(cli: Cli) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration file {}", path.display()))?;
                toml::from_str::<FileSettings>(&text)
                    .with_context(|| format!("in the configuration file {}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let listen = cli.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let trusted = cli.trusted_proxies.or(file.trusted_proxies).unwrap_or_default();
        let trusted_proxies = trusted
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<IpAddr>().with_context(|| format!("trusted proxy {text:?} is not an IP"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let node_id = cli.node_id.or(file.node_id).unwrap_or_else(host_name);
        let advertise_url =
            cli.advertise_url.or(file.advertise_url).unwrap_or_else(|| format!("http://{listen}"));
        let settings = Settings {
            database_url: cli
                .database_url
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            redis_url: cli.redis_url.or(file.redis_url).filter(|url| !url.is_empty()),
            redis_prefix: cli.redis_prefix.or(file.redis_prefix).unwrap_or_else(|| "kuota:".into()),
            admin_token: cli.admin_token.or(file.admin_token).filter(|token| !token.is_empty()),
            rate_limit_ip_per_second: cli
                .rate_limit_ip_per_second
                .or(file.rate_limit_ip_per_second)
                .unwrap_or(20),
            rate_limit_ip_burst: cli.rate_limit_ip_burst.or(file.rate_limit_ip_burst).unwrap_or(40),
            rate_limit_email_per_minute: cli
                .rate_limit_email_per_minute
                .or(file.rate_limit_email_per_minute)
                .unwrap_or(6),
            trusted_proxies,
            node_id,
            advertise_url,
            lease_ttl_ms: cli.lease_ttl_ms.or(file.lease_ttl_ms).unwrap_or(LEASE_TTL_MS_DEFAULT),
            request_timeout_ms: cli
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .unwrap_or(REQUEST_TIMEOUT_MS_DEFAULT),
            store_timeout_ms: cli
                .store_timeout_ms
                .or(file.store_timeout_ms)
                .unwrap_or(STORE_TIMEOUT_MS_DEFAULT),
            store_stall_ms: cli.store_stall_ms.or(file.store_stall_ms).unwrap_or(STORE_STALL_MS_DEFAULT),
            redis_timeout_ms: cli
                .redis_timeout_ms
                .or(file.redis_timeout_ms)
                .unwrap_or(REDIS_TIMEOUT_MS_DEFAULT),
            max_connections: cli.max_connections.or(file.max_connections).unwrap_or(MAX_CONNECTIONS_DEFAULT),
            listen,
            body_limit_bytes: cli.body_limit_bytes.or(file.body_limit_bytes).unwrap_or(16 * 1024),
            flush_interval_ms: cli
                .flush_interval_ms
                .or(file.flush_interval_ms)
                .unwrap_or(WriteBehindConfig::default().flush_interval_ms),
            batch_size_max: cli.batch_size_max.or(file.batch_size_max).unwrap_or(1_000),
            write_queue_capacity_max: cli
                .write_queue_capacity_max
                .or(file.write_queue_capacity_max)
                .unwrap_or(16_384),
            mailbox_capacity_max: cli
                .mailbox_capacity_max
                .or(file.mailbox_capacity_max)
                .unwrap_or(kuota_engine::limits::MAILBOX_CAPACITY_MAX),
            actor_threads: cli.actor_threads.or(file.actor_threads).unwrap_or(1),
            http_workers: cli
                .http_workers
                .or(file.http_workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
                .max(1),
            idempotency_retention_seconds: cli
                .idempotency_retention_seconds
                .or(file.idempotency_retention_seconds)
                .unwrap_or(24 * 60 * 60),
            log_format: cli.log_format.or(file.log_format).unwrap_or_else(|| "auto".into()),
            outbox_delivery: cli
                .outbox_delivery
                .or(file.outbox_delivery)
                .unwrap_or_else(|| "webhooks".into()),
            webhook_allow_hosts: cli.webhook_allow_hosts.or(file.webhook_allow_hosts).unwrap_or_default(),
            webhook_retry_schedule: cli
                .webhook_retry_schedule
                .or(file.webhook_retry_schedule)
                .unwrap_or_else(|| crate::webhooks::retry::RETRY_SCHEDULE_DEFAULT.into()),
            webhook_timeout_ms: cli
                .webhook_timeout_ms
                .or(file.webhook_timeout_ms)
                .unwrap_or(WEBHOOK_TIMEOUT_MS_DEFAULT),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.body_limit_bytes >= 1_024, "body_limit_bytes must be at least 1024");
        anyhow::ensure!(
            (10..=600_000).contains(&self.request_timeout_ms),
            "request_timeout_ms must be 10 to 600000"
        );
        anyhow::ensure!(
            (10..=600_000).contains(&self.store_timeout_ms),
            "store_timeout_ms must be 10 to 600000"
        );
        anyhow::ensure!((10..=600_000).contains(&self.store_stall_ms), "store_stall_ms must be 10 to 600000");
        anyhow::ensure!(
            (10..=60_000).contains(&self.redis_timeout_ms),
            "redis_timeout_ms must be 10 to 60000"
        );
        anyhow::ensure!(self.max_connections >= 1, "max_connections must be at least 1");
        anyhow::ensure!((1..=10_000).contains(&self.batch_size_max), "batch_size_max must be 1 to 10000");
        anyhow::ensure!(self.write_queue_capacity_max >= 1, "write_queue_capacity_max must be at least 1");
        anyhow::ensure!(self.mailbox_capacity_max >= 1, "mailbox_capacity_max must be at least 1");
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "json" | "pretty" | "auto"),
            "log_format must be json, pretty or auto"
        );
        anyhow::ensure!(
            matches!(self.outbox_delivery.as_str(), "webhooks" | "log" | "off"),
            "outbox_delivery must be webhooks, log or off"
        );
        crate::webhooks::retry::RetrySchedule::parse(&self.webhook_retry_schedule)
            .map_err(|error| anyhow::anyhow!("webhook_retry_schedule {error}"))?;
        anyhow::ensure!(
            (100..=600_000).contains(&self.webhook_timeout_ms),
            "webhook_timeout_ms must be 100 to 600000"
        );
        anyhow::ensure!(
            self.database_url.starts_with("mysql://") || self.database_url.starts_with("sqlite:"),
            "database_url must start with mysql:// or sqlite:"
        );
        anyhow::ensure!(
            kuota_persist::ownership::NodeIdentity::new(&self.node_id, &self.advertise_url).is_some(),
            "node_id and advertise_url must be non-empty and without spaces"
        );
        let lease_ttl_range = kuota_persist::lease::LEASE_TTL_MIN_MS..=kuota_persist::lease::LEASE_TTL_MAX_MS;
        anyhow::ensure!(
            lease_ttl_range.contains(&self.lease_ttl_ms),
            "lease_ttl_ms must be {} to {}",
            lease_ttl_range.start(),
            lease_ttl_range.end()
        );
        Ok(())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "kuota".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_configuration_it_serves_on_localhost_with_sqlite() {
        let settings = Settings::load(Cli::default()).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert_eq!(settings.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(settings.redis_url, None);
        assert_eq!((settings.rate_limit_ip_per_second, settings.rate_limit_ip_burst), (20, 40));
        assert_eq!(settings.rate_limit_email_per_minute, 6);
        assert_eq!(settings.outbox_delivery, "webhooks");
        assert_eq!(settings.webhook_timeout_ms, 15_000);
    }

    #[test]
    fn bad_webhook_settings_are_refused_at_startup() {
        let refused = [
            Cli { outbox_delivery: Some("http".into()), ..Cli::default() },
            Cli { webhook_retry_schedule: Some("5,soon".into()), ..Cli::default() },
            Cli { webhook_timeout_ms: Some(0), ..Cli::default() },
        ];
        for cli in refused {
            let shown = format!("{cli:?}");
            assert!(Settings::load(cli).is_err(), "{shown}");
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let path = std::env::temp_dir().join(format!("kuota-config-{}.toml", std::process::id()));
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nbatch_size_max = 10\n").unwrap();
        let cli = Cli { config: Some(path.clone()), batch_size_max: Some(20), ..Cli::default() };
        let settings = Settings::load(cli).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:9000");
        assert_eq!(settings.batch_size_max, 20);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_that_names_it() {
        let path = std::env::temp_dir().join(format!("kuota-config-bad-{}.toml", std::process::id()));
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = Settings::load(Cli { config: Some(path.clone()), ..Cli::default() }).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{error:#}").contains("lisen"), "{error:#}");
    }
}
