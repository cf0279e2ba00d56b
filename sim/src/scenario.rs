//! A scenario file: the event, who arrives when, how they behave and the system that serves
//! them. Parsed from TOML (unknown keys are errors, so that a typo is not silently ignored),
//! then validated field by field; every error names the file and the field or line.

use std::path::Path;

use kuota_api::configuration::{
    LEASE_TTL_MS_DEFAULT, REDIS_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT, STORE_STALL_MS_DEFAULT,
    STORE_TIMEOUT_MS_DEFAULT,
};
use kuota_engine::limits::{MAILBOX_CAPACITY_MAX, PENDING_DECISIONS_MAX};
use kuota_engine::{CategoryCode, CategoryConfig, EventConfig, EventId, QuotaLimits};
use kuota_persist::lease::{LEASE_TTL_MAX_MS, LEASE_TTL_MIN_MS};
use serde::Deserialize;

use crate::distribution::Distribution;

/// Registrants one scenario may have; each costs about a hundred bytes of simulator state.
pub const REGISTRANTS_MAX: u32 = 10_000_000;
/// Nodes one scenario may have.
pub const NODES_MAX: u32 = 1_024;
/// HTTP workers one node may have.
pub const HTTP_WORKERS_PER_NODE_MAX: u32 = 4_096;
/// Largest value a queue bound of the model may be set to, in entries.
pub const QUEUE_BOUND_MAX: u32 = 10_000_000;
/// Largest write-behind batch, in effects.
pub const BATCH_SIZE_LIMIT_EFFECTS: u32 = 100_000;
/// Database connections one scenario may have.
pub const DATABASE_CONNECTIONS_MAX: u32 = 10_000;
/// Requests one registrant may send for one action (first try, retries and refreshes).
pub const ATTEMPTS_LIMIT: u32 = 100;
/// Longest arrival window (spike plus tail), in seconds: a week.
pub const ARRIVAL_WINDOW_SECONDS_MAX: f64 = 7.0 * 24.0 * 3_600.0;
/// Longest `Retry-After` the model may send, in seconds.
pub const RETRY_AFTER_SECONDS_MAX: u32 = 3_600;
/// Faults one scenario may have.
pub const FAULTS_MAX: usize = 32;
/// Longest fault, and longest timeout a scenario may set, in seconds: an hour.
pub const FAULT_SECONDS_MAX: f64 = 3_600.0;
/// Registrations recovery reads per second: `EventLoader::load` of an event with 1,000,000
/// stored registrations took 1.71–2.28 s on this project's machine (MariaDB 10.11,
/// `cargo bench -p kuota-benches --bench write_behind -- recovery`, docs/benchmarks.md,
/// 2026-11-24); the slowest run's rate, so that the model does not promise a faster reload.
pub const RECOVERY_REGISTRATIONS_PER_SECOND_MEASURED: f64 = 1_000_000.0 / 2.28;

/// Opening a store connection, in milliseconds: TCP connect, MariaDB's greeting, the handshake
/// (root, no password) and one statement, as the pool opens one and runs its session settings.
/// Against this project's MariaDB 10.11 on 127.0.0.1 on 2026-12-06, with other builds on the
/// machine (`scripts/store-connections.py`): medians of 400 set-ups of 0.37 and 0.46 ms in two
/// sessions; their mean.
pub const STORE_CONNECT_MS_MEASURED: f64 = 0.41;
/// What MariaDB spends on a connection whose client gave up before it was served (accepting it,
/// greeting it, finding it closed), in milliseconds, before it serves a connection opened after
/// it: the same script, a set-up behind bursts of 50, 100 and 200 such connections (median of 12
/// bursts each), in the same two sessions, waited 0.07–0.24 ms more per connection; the median
/// of the six.
pub const STORE_ABANDONED_CONNECTION_MS_MEASURED: f64 = 0.12;

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// `message` is toml's, which names the line and column and shows the line.
    #[error("scenario {path} is not a valid scenario file:\n{message}")]
    Parse { path: String, message: String },
    #[error("scenario {path}: field `{field}`: {reason}")]
    Invalid { path: String, field: String, reason: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The seed used when `--seed` is not given.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub event: EventSection,
    pub arrivals: Arrivals,
    #[serde(default)]
    pub behaviour: Behaviour,
    pub system: System,
    /// Things that break during the run, in virtual time.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// A queue in front of the opening (`crate::model::queue`); registrations then need a pass.
    #[serde(default)]
    pub queue: Option<QueueSection>,
}

/// What breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The database answers nothing (a frozen MariaDB): commits, probes and loads wait.
    StoreStall,
    /// Every commit attempt that starts during the fault takes `extra_latency_ms` longer.
    CommitLatency,
    /// The event's owner node dies; it restarts (same node id) after `duration_seconds`.
    OwnerCrash,
    /// The event's owner node stops (SIGSTOP) for `duration_seconds`, then goes on.
    OwnerFreeze,
    /// Redis answers nothing: lease renewals and claims fail.
    RedisOutage,
    /// The owner's lease commands reach Redis and take effect, but their replies are lost.
    LostLeaseReply,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::StoreStall,
        FaultKind::CommitLatency,
        FaultKind::OwnerCrash,
        FaultKind::OwnerFreeze,
        FaultKind::RedisOutage,
        FaultKind::LostLeaseReply,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::StoreStall => "store_stall",
            FaultKind::CommitLatency => "commit_latency",
            FaultKind::OwnerCrash => "owner_crash",
            FaultKind::OwnerFreeze => "owner_freeze",
            FaultKind::RedisOutage => "redis_outage",
            FaultKind::LostLeaseReply => "lost_lease_reply",
        }
    }
}

/// One fault: what, when (seconds after opening) and for how long.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    pub start_seconds: f64,
    /// How long it lasts; for `owner_crash`, how long until the node is restarted.
    pub duration_seconds: f64,
    /// `commit_latency` only: added to each commit attempt that starts during the fault.
    #[serde(default)]
    pub extra_latency_ms: f64,
    /// After the fault, measure recovery as the live fault suite does (`api/tests/api/faults`:
    /// `/readyz` polls, then a registration to each node until each is decided); the report
    /// gives it beside the model's own time to recover.
    #[serde(default)]
    pub suite_probes: bool,
}

impl Fault {
    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let extra = if self.kind == FaultKind::CommitLatency {
            format!(" (+{} ms per commit)", self.extra_latency_ms)
        } else {
            String::new()
        };
        format!("{} at {} s for {} s{extra}", self.kind.name(), self.start_seconds, self.duration_seconds)
    }
}

fn default_seed() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSection {
    /// 0: a registration is confirmed at once; more: it is held this long for payment.
    #[serde(default)]
    pub hold_ttl_seconds: u32,
    #[serde(default = "default_waitlist_length_max")]
    pub waitlist_length_max: u32,
    pub categories: Vec<CategorySection>,
}

fn default_waitlist_length_max() -> u32 {
    QuotaLimits::default().waitlist_length_max
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySection {
    pub code: String,
    #[serde(default)]
    pub name: Option<String>,
    pub capacity: u32,
    /// Share of registrants who want this category; unset for all: in proportion to capacity.
    #[serde(default)]
    pub demand_share: Option<f64>,
}

/// How the spike's arrivals spread over its window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpikeShape {
    /// A constant rate: a Poisson process (given the count, arrival times are uniform).
    #[default]
    Poisson,
    /// The rate grows linearly from zero to its peak at the end of the spike.
    RampUp,
    /// The rate peaks at opening and falls linearly to zero at the end of the spike.
    RampDown,
}

impl SpikeShape {
    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            SpikeShape::Poisson => "poisson",
            SpikeShape::RampUp => "ramp_up",
            SpikeShape::RampDown => "ramp_down",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    pub registrants: u32,
    /// Share of registrants arriving in the spike, which starts at opening.
    pub spike_share: f64,
    pub spike_seconds: f64,
    #[serde(default)]
    pub shape: SpikeShape,
    /// The rest arrive at a constant rate over this many seconds after the spike.
    #[serde(default)]
    pub tail_seconds: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Retry after a 503 or 429 (after `Retry-After` plus jitter); otherwise give up at once.
    pub retry_on_overload: bool,
    /// With `retry_on_overload`, a lost connection (its node died, or refused it while down) is
    /// retried too, as a browser's user would; the live fault suite's client retries only a
    /// 503 (`register_with_one_retry` in `api/tests/api/faults/load.rs`).
    pub retry_on_connection_lost: bool,
    /// Extra wait added to `Retry-After`, drawn uniformly from 0 to this.
    pub retry_jitter_ms: f64,
    /// Requests one registrant sends for one action at most (first try included).
    pub attempts_max: u32,
    /// Share of registrants who press "register" again when no answer came within `patience_ms`.
    pub impatient_share: f64,
    pub patience_ms: f64,
    /// Share of registrants who ask to join the waitlist when their category is sold out.
    pub waitlist_share: f64,
    /// Share of held registrants who pay (the payment callback confirms), after `pay_delay`.
    pub pay_share: f64,
    pub pay_delay: Distribution,
    /// Share of registrants with a registration who cancel it, after `cancel_delay`.
    pub cancel_share: f64,
    pub cancel_delay: Distribution,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            retry_on_overload: true,
            retry_on_connection_lost: true,
            retry_jitter_ms: 1_000.0,
            attempts_max: 5,
            impatient_share: 0.0,
            patience_ms: 5_000.0,
            waitlist_share: 0.0,
            pay_share: 1.0,
            pay_delay: Distribution::Constant { value_ms: 60_000.0 },
            cancel_share: 0.0,
            cancel_delay: Distribution::Constant { value_ms: 600_000.0 },
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub nodes: u32,
    pub http_workers_per_node: u32,
    /// Requests waiting for an HTTP worker on one node; more is 503.
    pub http_queue_max: u32,
    /// CPU time of one request on an HTTP worker (parsing, checks, answering).
    pub http_service: Distribution,
    /// Time the event actor spends on one command (`EventQuota::apply` and bookkeeping).
    pub actor_service: Distribution,
    #[serde(default = "default_mailbox_capacity_max")]
    pub mailbox_capacity_max: u32,
    #[serde(default = "default_pending_decisions_max")]
    pub pending_decisions_max: u32,
    /// Submissions waiting for a write-behind batch; more is 503.
    pub write_queue_max: u32,
    /// Longest wait of a submission before its batch is committed; 0: commit at once.
    pub flush_interval_ms: f64,
    /// Effects in one database transaction at most.
    pub batch_size_max: u32,
    /// Transactions in flight at once.
    pub database_connections: u32,
    pub commit_latency: Distribution,
    /// Extra commit time per effect in the batch.
    #[serde(default)]
    pub commit_per_effect_ms: f64,
    /// Registrant to node and back.
    pub network_round_trip: Distribution,
    /// Node to the event's owner and back, for requests that land on another node.
    #[serde(default)]
    pub forward_round_trip_ms: f64,
    /// How old the published counters are on nodes that do not own the event.
    #[serde(default)]
    pub counters_lag_ms: f64,
    #[serde(default = "default_retry_after_seconds")]
    pub retry_after_seconds: u32,
    /// Registration writes per registrant e-mail per minute; 0: no limit.
    #[serde(default = "default_rate_limit_email_per_minute")]
    pub rate_limit_email_per_minute: u32,
    /// A request not answered within this gets 503 (`KUOTA_REQUEST_TIMEOUT_MS`).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// One commit attempt, probe or load may take this long (`KUOTA_STORE_TIMEOUT_MS`).
    #[serde(default = "default_store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// Writes are refused while the oldest commit is older than this (`KUOTA_STORE_STALL_MS`).
    #[serde(default = "default_store_stall_ms")]
    pub store_stall_ms: u64,
    /// The event's ownership lease (`KUOTA_LEASE_TTL_MS`).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// One Redis command may take this long (`KUOTA_REDIS_TIMEOUT_MS`).
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Stored registrations a load (recovery) reads per second.
    #[serde(default = "default_recovery_registrations_per_second")]
    pub recovery_registrations_per_second: f64,
    /// Opening a store connection: what the next call of a caller whose call the store timeout
    /// cut short pays first (the cut call's connection was closed).
    #[serde(default = "default_store_connect")]
    pub store_connect: Distribution,
    /// What the database spends, once a stall ends, on each connection whose call was cut short
    /// during it, before it serves anything newer.
    #[serde(default = "default_store_abandoned_connection_ms")]
    pub store_abandoned_connection_ms: f64,
    /// What a load (recovery) takes besides reading the registrations at
    /// `recovery_registrations_per_second`: its transaction's statements and the building of
    /// the event. When absent, one `commit_latency`.
    #[serde(default)]
    pub load_latency: Option<Distribution>,
    /// One Redis command as a node sees it (its round trip and the client's work): a claim
    /// waits for each of its commands before its load starts. Absent: answered at once.
    #[serde(default)]
    pub redis_command: Option<Distribution>,
    /// How long a restarted process, once its port is bound (its "listening" line), takes to
    /// start its HTTP workers: connections made meanwhile wait in its listen backlog, and are
    /// served in order once the workers run. Absent: at once.
    #[serde(default)]
    pub workers_start: Option<Distribution>,
    /// What a restarted process's first claim takes besides its Redis commands: the first use
    /// of the request path while the process's start-up work (its background tasks' first
    /// rounds) runs alongside. Absent: nothing.
    #[serde(default)]
    pub restart_first_claim: Option<Distribution>,
}

fn default_request_timeout_ms() -> u64 {
    REQUEST_TIMEOUT_MS_DEFAULT
}

fn default_store_timeout_ms() -> u64 {
    STORE_TIMEOUT_MS_DEFAULT
}

fn default_store_stall_ms() -> u64 {
    STORE_STALL_MS_DEFAULT
}

fn default_lease_ttl_ms() -> u64 {
    LEASE_TTL_MS_DEFAULT
}

fn default_redis_timeout_ms() -> u64 {
    REDIS_TIMEOUT_MS_DEFAULT
}

fn default_recovery_registrations_per_second() -> f64 {
    RECOVERY_REGISTRATIONS_PER_SECOND_MEASURED
}

fn default_store_connect() -> Distribution {
    Distribution::Constant { value_ms: STORE_CONNECT_MS_MEASURED }
}

fn default_store_abandoned_connection_ms() -> f64 {
    STORE_ABANDONED_CONNECTION_MS_MEASURED
}

fn default_mailbox_capacity_max() -> u32 {
    MAILBOX_CAPACITY_MAX as u32
}

fn default_pending_decisions_max() -> u32 {
    PENDING_DECISIONS_MAX as u32
}

fn default_retry_after_seconds() -> u32 {
    1
}

/// The API's default (`KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE`).
fn default_rate_limit_email_per_minute() -> u32 {
    6
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: shown.clone(), source })?;
        Scenario::parse(&text, &shown)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|error| ScenarioError::Parse { path: origin.to_string(), message: error.to_string() })?;
        scenario.validate().map_err(|(field, reason)| ScenarioError::Invalid {
            path: origin.to_string(),
            field,
            reason,
        })?;
        Ok(scenario)
    }

    /// The engine's configuration of the simulated event.
    pub fn event_config(&self) -> EventConfig {
        let categories = self
            .event
            .categories
            .iter()
            .map(|category| CategoryConfig {
                code: CategoryCode::parse(&category.code).expect("codes are checked by validate()"),
                name: category.name.clone().unwrap_or_else(|| category.code.clone()),
                capacity: category.capacity,
            })
            .collect();
        EventConfig {
            id: EventId::parse("simulated").expect("a constant valid event id"),
            name: self.name.clone(),
            opens_at: None,
            closes_at: None,
            hold_ttl_seconds: self.event.hold_ttl_seconds,
            categories,
            limits: QuotaLimits {
                waitlist_length_max: self.event.waitlist_length_max,
                ..QuotaLimits::default()
            },
            queue: None,
        }
    }

    /// Total seats of all categories.
    pub fn seats(&self) -> u64 {
        self.event.categories.iter().map(|category| u64::from(category.capacity)).sum()
    }

    /// Each category's share of demand, in configuration order, summing to 1.
    pub fn demand_shares(&self) -> Vec<f64> {
        let categories = &self.event.categories;
        let weights: Vec<f64> = if categories.iter().any(|category| category.demand_share.is_some()) {
            categories.iter().map(|category| category.demand_share.unwrap_or(0.0)).collect()
        } else {
            categories.iter().map(|category| f64::from(category.capacity)).collect()
        };
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            // Only reachable with zero seats everywhere; spread demand evenly.
            return vec![1.0 / categories.len() as f64; categories.len()];
        }
        weights.iter().map(|weight| weight / total).collect()
    }
}

/// A validation failure: the field's path and why.
type Invalid = (String, String);

fn require(condition: bool, field: &str, reason: impl FnOnce() -> String) -> Result<(), Invalid> {
    if condition { Ok(()) } else { Err((field.to_string(), reason())) }
}

fn share(value: f64, field: &str) -> Result<(), Invalid> {
    require((0.0..=1.0).contains(&value), field, || format!("must be between 0 and 1 (got {value})"))
}

fn within(value: u32, low: u32, high: u32, field: &str) -> Result<(), Invalid> {
    require((low..=high).contains(&value), field, || {
        format!("must be between {low} and {high} (got {value})")
    })
}

fn milliseconds(value: f64, field: &str) -> Result<(), Invalid> {
    require(value.is_finite() && value >= 0.0, field, || {
        format!("must be a number of milliseconds >= 0 (got {value})")
    })
}

fn distribution(value: &Distribution, field: &str) -> Result<(), Invalid> {
    match value.problem() {
        Some(problem) => Err((field.to_string(), problem)),
        None => Ok(()),
    }
}

impl Scenario {
    fn validate(&self) -> Result<(), Invalid> {
        require(!self.name.trim().is_empty(), "name", || "must not be empty".into())?;
        self.validate_event()?;
        self.validate_arrivals()?;
        self.validate_behaviour()?;
        self.validate_system()?;
        self.validate_faults()?;
        match &self.queue {
            Some(queue) => {
                require(self.faults.is_empty(), "faults", || {
                    "a queued scenario has no [[faults]]: its owner restarts are queue.restarts_seconds"
                        .into()
                })?;
                queue.validate()
            }
            None => Ok(()),
        }
    }

    fn validate_faults(&self) -> Result<(), Invalid> {
        require(self.faults.len() <= FAULTS_MAX, "faults", || {
            format!("at most {FAULTS_MAX} faults (got {})", self.faults.len())
        })?;
        for (index, fault) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{index}].{name}");
            require(
                fault.start_seconds.is_finite()
                    && (0.0..=ARRIVAL_WINDOW_SECONDS_MAX).contains(&fault.start_seconds),
                &field("start_seconds"),
                || {
                    format!(
                        "must be between 0 and {ARRIVAL_WINDOW_SECONDS_MAX} (got {})",
                        fault.start_seconds
                    )
                },
            )?;
            require(
                fault.duration_seconds.is_finite()
                    && fault.duration_seconds > 0.0
                    && fault.duration_seconds <= FAULT_SECONDS_MAX,
                &field("duration_seconds"),
                || format!("must be > 0 and at most {FAULT_SECONDS_MAX} (got {})", fault.duration_seconds),
            )?;
            milliseconds(fault.extra_latency_ms, &field("extra_latency_ms"))?;
            require(
                fault.extra_latency_ms == 0.0 || fault.kind == FaultKind::CommitLatency,
                &field("extra_latency_ms"),
                || "only a commit_latency fault has an extra latency".into(),
            )?;
        }
        Ok(())
    }

    fn validate_event(&self) -> Result<(), Invalid> {
        for (index, category) in self.event.categories.iter().enumerate() {
            let field = |name: &str| format!("event.categories[{index}].{name}");
            if let Err(error) = CategoryCode::parse(&category.code) {
                return Err((field("code"), error.to_string()));
            }
            if let Some(demand) = category.demand_share {
                share(demand, &field("demand_share"))?;
            }
        }
        let shares_given = self.event.categories.iter().filter(|category| category.demand_share.is_some());
        let shares_total: f64 = shares_given.clone().filter_map(|category| category.demand_share).sum();
        require(shares_given.count() == 0 || shares_total > 0.0, "event.categories", || {
            "demand_share must be positive for at least one category".into()
        })?;
        self.event_config().validate().map_err(|error| ("event.categories".to_string(), error.to_string()))
    }

    fn validate_arrivals(&self) -> Result<(), Invalid> {
        let arrivals = &self.arrivals;
        within(arrivals.registrants, 1, REGISTRANTS_MAX, "arrivals.registrants")?;
        share(arrivals.spike_share, "arrivals.spike_share")?;
        let seconds = |value: f64, field: &str| {
            require(value.is_finite() && (0.0..=ARRIVAL_WINDOW_SECONDS_MAX).contains(&value), field, || {
                format!("must be between 0 and {ARRIVAL_WINDOW_SECONDS_MAX} seconds (got {value})")
            })
        };
        seconds(arrivals.spike_seconds, "arrivals.spike_seconds")?;
        seconds(arrivals.tail_seconds, "arrivals.tail_seconds")?;
        require(
            arrivals.spike_share == 0.0 || arrivals.spike_seconds > 0.0,
            "arrivals.spike_seconds",
            || "must be > 0 when spike_share is above 0".into(),
        )?;
        require(arrivals.spike_share == 1.0 || arrivals.tail_seconds > 0.0, "arrivals.tail_seconds", || {
            "must be > 0 when spike_share is below 1 (the rest arrive in the tail)".into()
        })?;
        seconds(arrivals.spike_seconds + arrivals.tail_seconds, "arrivals.tail_seconds")
    }

    fn validate_behaviour(&self) -> Result<(), Invalid> {
        let behaviour = &self.behaviour;
        milliseconds(behaviour.retry_jitter_ms, "behaviour.retry_jitter_ms")?;
        within(behaviour.attempts_max, 1, ATTEMPTS_LIMIT, "behaviour.attempts_max")?;
        share(behaviour.impatient_share, "behaviour.impatient_share")?;
        milliseconds(behaviour.patience_ms, "behaviour.patience_ms")?;
        require(
            behaviour.impatient_share == 0.0 || behaviour.patience_ms > 0.0,
            "behaviour.patience_ms",
            || "must be > 0 when impatient_share is above 0".into(),
        )?;
        share(behaviour.waitlist_share, "behaviour.waitlist_share")?;
        share(behaviour.pay_share, "behaviour.pay_share")?;
        distribution(&behaviour.pay_delay, "behaviour.pay_delay")?;
        share(behaviour.cancel_share, "behaviour.cancel_share")?;
        distribution(&behaviour.cancel_delay, "behaviour.cancel_delay")
    }

    fn validate_system(&self) -> Result<(), Invalid> {
        let system = &self.system;
        within(system.nodes, 1, NODES_MAX, "system.nodes")?;
        within(system.http_workers_per_node, 1, HTTP_WORKERS_PER_NODE_MAX, "system.http_workers_per_node")?;
        within(system.http_queue_max, 0, QUEUE_BOUND_MAX, "system.http_queue_max")?;
        within(system.mailbox_capacity_max, 1, QUEUE_BOUND_MAX, "system.mailbox_capacity_max")?;
        within(system.pending_decisions_max, 1, QUEUE_BOUND_MAX, "system.pending_decisions_max")?;
        within(system.write_queue_max, 1, QUEUE_BOUND_MAX, "system.write_queue_max")?;
        within(system.batch_size_max, 1, BATCH_SIZE_LIMIT_EFFECTS, "system.batch_size_max")?;
        within(system.database_connections, 1, DATABASE_CONNECTIONS_MAX, "system.database_connections")?;
        within(system.retry_after_seconds, 0, RETRY_AFTER_SECONDS_MAX, "system.retry_after_seconds")?;
        milliseconds(system.flush_interval_ms, "system.flush_interval_ms")?;
        milliseconds(system.commit_per_effect_ms, "system.commit_per_effect_ms")?;
        milliseconds(system.forward_round_trip_ms, "system.forward_round_trip_ms")?;
        milliseconds(system.counters_lag_ms, "system.counters_lag_ms")?;
        distribution(&system.http_service, "system.http_service")?;
        distribution(&system.actor_service, "system.actor_service")?;
        distribution(&system.commit_latency, "system.commit_latency")?;
        let optional = [
            (&system.load_latency, "system.load_latency"),
            (&system.redis_command, "system.redis_command"),
            (&system.workers_start, "system.workers_start"),
            (&system.restart_first_claim, "system.restart_first_claim"),
        ];
        for (value, field) in optional {
            if let Some(value) = value {
                distribution(value, field)?;
            }
        }
        distribution(&system.network_round_trip, "system.network_round_trip")?;
        distribution(&system.store_connect, "system.store_connect")?;
        milliseconds(system.store_abandoned_connection_ms, "system.store_abandoned_connection_ms")?;
        let timeout_max_ms = (FAULT_SECONDS_MAX * 1_000.0) as u64;
        let timeout = |value: u64, field: &str| {
            require((1..=timeout_max_ms).contains(&value), field, || {
                format!("must be between 1 and {timeout_max_ms} ms (got {value})")
            })
        };
        timeout(system.request_timeout_ms, "system.request_timeout_ms")?;
        timeout(system.store_timeout_ms, "system.store_timeout_ms")?;
        timeout(system.store_stall_ms, "system.store_stall_ms")?;
        timeout(system.redis_timeout_ms, "system.redis_timeout_ms")?;
        require(
            (LEASE_TTL_MIN_MS..=LEASE_TTL_MAX_MS).contains(&system.lease_ttl_ms),
            "system.lease_ttl_ms",
            || {
                format!(
                    "must be between {LEASE_TTL_MIN_MS} and {LEASE_TTL_MAX_MS} ms (got {})",
                    system.lease_ttl_ms
                )
            },
        )?;
        require(
            system.recovery_registrations_per_second.is_finite()
                && system.recovery_registrations_per_second > 0.0,
            "system.recovery_registrations_per_second",
            || format!("must be a number > 0 (got {})", system.recovery_registrations_per_second),
        )
    }
}

/// Owner restarts one queued scenario may have.
pub const QUEUE_RESTARTS_MAX: usize = 32;

/// The `[queue]` section: the event's queue settings (as `POST /v1/events` takes them, with the
/// lobby's opening given relative to `opens_at`) and how the crowd behaves in the queue.
/// Virtual time 0 is still the opening; lobby joiners arrive before it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// The lobby opens this long before `opens_at` (`lobby_opens_at = opens_at - lobby_seconds`).
    pub lobby_seconds: f64,
    /// Share of registrants who join in the lobby, uniformly over it; the rest join after the
    /// opening as `[arrivals]` says.
    pub lobby_share: f64,
    #[serde(default = "default_pass_ttl_seconds")]
    pub pass_ttl_seconds: u32,
    #[serde(default = "default_overbook")]
    pub overbook: f64,
    /// Admissions per second at most; unset: only the inventory bounds admission.
    #[serde(default)]
    pub admit_per_second: Option<f64>,
    #[serde(default = "default_queue_max")]
    pub queue_max: u32,
    /// Share of registrants who give up waiting after their `patience` (from joining); they
    /// stop polling, and a pass that later comes to their ticket lapses unused.
    #[serde(default)]
    pub abandon_share: f64,
    #[serde(default = "default_patience")]
    pub patience: Distribution,
    /// From reading `admitted` to sending the registration (filling in the form).
    #[serde(default = "default_register_delay")]
    pub register_delay: Distribution,
    /// Seconds after the opening at which the owner restarts and rebuilds the event, queue
    /// included, from what the store holds (the swarm draws these per seed).
    #[serde(default)]
    pub restarts_seconds: Vec<f64>,
}

fn default_pass_ttl_seconds() -> u32 {
    600
}

fn default_overbook() -> f64 {
    1.0
}

fn default_queue_max() -> u32 {
    1_000_000
}

fn default_patience() -> Distribution {
    Distribution::Exponential { mean_ms: 1_800_000.0 }
}

fn default_register_delay() -> Distribution {
    Distribution::Constant { value_ms: 30_000.0 }
}

impl QueueSection {
    /// `overbook` in thousandths, as the engine takes it (rounded like the API does).
    pub fn overbook_permille(&self) -> u32 {
        (self.overbook * 1_000.0).round() as u32
    }

    /// `admit_per_second` in admissions per 1000 seconds, as the engine takes it.
    pub fn admit_per_kilosecond(&self) -> Option<u64> {
        self.admit_per_second.map(|rate| (rate * 1_000.0).round() as u64)
    }

    fn validate(&self) -> Result<(), Invalid> {
        require(
            self.lobby_seconds.is_finite()
                && self.lobby_seconds > 0.0
                && self.lobby_seconds <= ARRIVAL_WINDOW_SECONDS_MAX,
            "queue.lobby_seconds",
            || format!("must be > 0 and at most {ARRIVAL_WINDOW_SECONDS_MAX} (got {})", self.lobby_seconds),
        )?;
        share(self.lobby_share, "queue.lobby_share")?;
        share(self.abandon_share, "queue.abandon_share")?;
        distribution(&self.patience, "queue.patience")?;
        distribution(&self.register_delay, "queue.register_delay")?;
        require(self.overbook.is_finite(), "queue.overbook", || "must be a number".into())?;
        require(
            self.admit_per_second.is_none_or(|rate| rate.is_finite() && rate * 1_000.0 >= 1.0),
            "queue.admit_per_second",
            || "must be at least 0.001 when set".into(),
        )?;
        require(self.restarts_seconds.len() <= QUEUE_RESTARTS_MAX, "queue.restarts_seconds", || {
            format!("at most {QUEUE_RESTARTS_MAX} restarts (got {})", self.restarts_seconds.len())
        })?;
        for (index, at) in self.restarts_seconds.iter().enumerate() {
            require(
                at.is_finite() && (0.0..=ARRIVAL_WINDOW_SECONDS_MAX).contains(at),
                &format!("queue.restarts_seconds[{index}]"),
                || format!("must be between 0 and {ARRIVAL_WINDOW_SECONDS_MAX} (got {at})"),
            )?;
        }
        let opens_at = kuota_engine::Timestamp::from_seconds(ARRIVAL_WINDOW_SECONDS_MAX as u64);
        let config = self.engine_config(opens_at, kuota_engine::queue::DrawSeed([0; 32]));
        config.validate(Some(opens_at)).map_err(|error| {
            use kuota_engine::queue::QueueConfigError;
            let field = match error {
                QueueConfigError::PassTtl => "queue.pass_ttl_seconds",
                QueueConfigError::Overbook => "queue.overbook",
                QueueConfigError::AdmitPerSecond => "queue.admit_per_second",
                QueueConfigError::QueueMax => "queue.queue_max",
                QueueConfigError::WithoutOpening | QueueConfigError::LobbyNotBeforeOpening => {
                    "queue.lobby_seconds"
                }
            };
            (field.to_string(), error.to_string())
        })
    }

    /// The engine's queue settings for an event opening at `opens_at`.
    pub fn engine_config(
        &self,
        opens_at: kuota_engine::Timestamp,
        draw_seed: kuota_engine::queue::DrawSeed,
    ) -> kuota_engine::queue::QueueConfig {
        let lobby_ms = (self.lobby_seconds * 1_000.0).round() as u64;
        kuota_engine::queue::QueueConfig {
            lobby_opens_at: kuota_engine::Timestamp::from_millis(
                opens_at.as_millis().saturating_sub(lobby_ms),
            ),
            pass_ttl_seconds: self.pass_ttl_seconds,
            overbook_permille: self.overbook_permille(),
            admit_per_kilosecond: self.admit_per_kilosecond(),
            queue_max: self.queue_max,
            draw_seed,
        }
    }
}
