//! `kuota-sim load`: a load driver for a running Kuota, the role k6 or Locust would play.
//!
//! It creates an event (with the admin token) or uses an existing one, then sends registration
//! requests, open-loop at a target rate (Poisson or evenly spaced arrivals, with a linear ramp)
//! or closed-loop with a number of virtual users; some registrations are sent again with the
//! same `Idempotency-Key` (concurrently or after the answer), and `Retry-After` on 503, 429 and
//! 409 `idempotency_key_in_flight` is honoured when asked. It reports requests per second and
//! latency percentiles by answer (hdrhistogram), and checks what the answers promise (see
//! `checks`); a violated check makes it exit non-zero.
//!
//! Every run is bounded in time (`--seconds`, plus one request timeout to collect the last
//! answers) and in requests (`--requests-max`), and stops by itself. Traffic only goes to the
//! `Target`, which is loopback unless `--allow-remote` was given.
//!
//! Latency is measured from when a request was due, not from when it was written: in the open
//! loop a request that waited for a free connection (or for the generator itself) counts that
//! wait, so a slow server cannot hide behind a slow generator (coordinated omission).
//!
//! # Layout
//! - `target`: the URL, and the loopback rule.
//! - `http`: the HTTP/1.1 keep-alive client and its connection pool.
//! - `checks`: the client-side checks on every answer.
//! - `report`: the Markdown report.
//! - `queue`: `--queue`, a queued opening end to end (join, poll, register with the pass).

pub mod checks;
pub mod http;
pub mod queue;
pub mod report;
pub mod target;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::random::{Rng, Stream};
use checks::Ledger;
use http::{HttpError, Pool, Request, Response};
use target::Target;

/// Longest run, in seconds.
pub const SECONDS_MAX: f64 = 3_600.0;
/// Requests one run may send at most; the checks keep about a hundred bytes per key.
pub const REQUESTS_MAX: u64 = 2_000_000;
/// Highest open-loop rate, in requests per second.
pub const RATE_MAX_PER_SECOND: f64 = 100_000.0;
/// Virtual users of a closed loop, at most.
pub const USERS_MAX: u32 = 4_096;
/// Connections open at once, at most.
pub const CONNECTIONS_MAX: u32 = 4_096;
/// Connections of an open loop when `--connections` is not given: enough that a server
/// answering a few thousand requests a second slowly does not make requests queue in the
/// generator, few enough for a default file-descriptor limit.
pub const OPEN_LOOP_CONNECTIONS_DEFAULT: u32 = 1_000;
/// Longest wait for one answer, in milliseconds.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 120_000;
/// Longest `Retry-After` honoured, in seconds; a longer one is waited this long.
pub const RETRY_AFTER_WAIT_SECONDS_MAX: u64 = 60;
/// Runtime threads of the generator, at most.
pub const THREADS_MAX: u32 = 64;
/// Distinct answer rows (status and code) of the report; later ones share one row.
const ANSWER_ROWS_MAX: usize = 32;
/// Largest latency the histograms resolve, in microseconds (ten minutes).
const LATENCY_MAX_US: u64 = 600 * 1_000_000;
/// Significant figures of the latency histograms (0.1 % resolution).
const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;
/// How long after the last request's timeout the run waits before abandoning what is left, in
/// milliseconds: time for answers already on their way.
const FINAL_GRACE_MS: u64 = 1_000;
/// Linux reports process CPU time in `/proc` in USER_HZ ticks, which the kernel's ABI fixes at
/// 100 per second whatever the kernel's own tick rate.
const PROC_TICKS_PER_SECOND: f64 = 100.0;

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The server could not be reached, or refused to create or show the event.
    #[error("{0}")]
    Setup(String),
}

/// How arrivals are spaced in the open loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// A Poisson process (exponential gaps), as the simulator's `poisson` spike draws them.
    Poisson,
    /// Evenly spaced.
    Even,
}

/// Open or closed loop.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Requests are due at `rate_per_second` (ramped linearly from zero over `ramp_seconds`),
    /// whether or not earlier ones were answered.
    Open { rate_per_second: f64, ramp_seconds: f64, spacing: Spacing },
    /// `users` each send a registration, wait for its answer (and retries), think, and go again.
    Closed { users: u32, think: Duration },
}

/// The event the run registers for.
#[derive(Clone, Debug)]
pub enum EventChoice {
    /// Create one: `categories` categories of `capacity` seats each.
    Create { admin_token: String, categories: u32, capacity: u32, hold_ttl_seconds: u32 },
    /// An existing event, by id.
    Existing(String),
}

/// Everything a run needs; the command line builds it after checking every bound.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: Target,
    pub event: EventChoice,
    pub mode: Mode,
    pub seconds: f64,
    pub requests_max: u64,
    pub connections: u32,
    pub timeout: Duration,
    /// Share of registrations sent again with the same key; half of those concurrently.
    pub retry_share: f64,
    /// Share of registrations for an e-mail already used, with a new key (a second tab).
    pub repeat_registrant_share: f64,
    pub honour_retry_after: bool,
    /// Requests per registration attempt with `Retry-After` honoured, the first included.
    pub attempts_max: u32,
    /// Extra wait after `Retry-After`, uniform from 0 to this.
    pub retry_jitter: Duration,
    pub threads: u32,
    pub seed: u64,
}

/// Latency histogram in microseconds.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_FIGURES)
        .expect("constant bounds with low >= 1 and high >= 2 * low")
}

/// How one registration is sent again with its key, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    No,
    /// On another connection right away, while the first is in flight.
    Concurrently,
    /// Once the first attempt is answered.
    AfterAnswer,
}

/// One registration to send.
#[derive(Clone, Debug)]
struct Job {
    key: String,
    email: String,
    category: String,
    body: Vec<u8>,
    resend: Resend,
    jitter: Duration,
}

/// Draws registrations: who, which category, whether to send again.
#[derive(Debug)]
struct Planner {
    rng: Rng,
    tag: String,
    next: u64,
    /// Categories with the cumulative share of demand (in proportion to free seats).
    categories: Vec<(String, f64)>,
    retry_share: f64,
    repeat_registrant_share: f64,
    retry_jitter_us: u64,
}

impl Planner {
    fn new(config: &LoadConfig, seats: &BTreeMap<String, u64>) -> Self {
        let total: u64 = seats.values().sum();
        let mut cumulative = 0.0;
        let categories = seats
            .iter()
            .map(|(code, free)| {
                // With no free seat anywhere, demand spreads evenly.
                cumulative += if total == 0 { 1.0 / seats.len() as f64 } else { *free as f64 / total as f64 };
                (code.clone(), cumulative)
            })
            .collect();
        Planner {
            rng: Rng::new(config.seed, Stream::Behaviour),
            tag: format!("{:x}", config.seed),
            next: 0,
            categories,
            retry_share: config.retry_share,
            repeat_registrant_share: config.repeat_registrant_share,
            retry_jitter_us: config.retry_jitter.as_micros() as u64,
        }
    }

    fn next_job(&mut self) -> Job {
        let index = self.next;
        self.next += 1;
        let registrant = if index > 0 && self.rng.chance(self.repeat_registrant_share) {
            self.rng.below(index)
        } else {
            index
        };
        let draw = self.rng.unit();
        let category = self
            .categories
            .iter()
            .find(|(_, cumulative)| draw < *cumulative)
            .or(self.categories.last())
            .map(|(code, _)| code.clone())
            .unwrap_or_default();
        let resend = match (self.rng.chance(self.retry_share), self.rng.chance(0.5)) {
            (false, _) => Resend::No,
            (true, true) => Resend::Concurrently,
            (true, false) => Resend::AfterAnswer,
        };
        let jitter = Duration::from_micros(self.rng.below(self.retry_jitter_us + 1));
        let email = format!("load-{}-{registrant}@example.test", self.tag);
        let body = serde_json::json!({
            "category": category,
            "email": email,
            "full_name": format!("Load Registrant {registrant}"),
        })
        .to_string()
        .into_bytes();
        Job { key: format!("load-{}-{index}", self.tag), email, category, body, resend, jitter }
    }
}

/// What the run measured; behind one lock, taken once per answer.
#[derive(Debug)]
pub struct Recorder {
    /// Latency per answer row ("201 confirmed", "409 sold_out", "503 overloaded"), in µs.
    pub answers: BTreeMap<String, Histogram<u64>>,
    pub all_answers: Histogram<u64>,
    /// Requests that got no answer, by kind.
    pub failures: BTreeMap<&'static str, u64>,
    /// Answers with `Idempotent-Replayed: true`.
    pub replayed: u64,
    /// Answers received in each second since the start.
    pub per_second: Vec<u64>,
    /// Open loop: how late requests were sent compared with their schedule, in µs.
    pub dispatch_lag: Histogram<u64>,
    /// Retry-After waits taken.
    pub retry_after_waits: u64,
    /// Refusals (503, 429, key in flight) that were not sent again: not asked to, out of
    /// attempts, or past the end of the run.
    pub refusals_left: u64,
    pub last_answer_us: u64,
    pub ledger: Ledger,
}

impl Recorder {
    fn new(seats: BTreeMap<String, u64>, seconds: f64) -> Self {
        Recorder {
            answers: BTreeMap::new(),
            all_answers: latency_histogram(),
            failures: BTreeMap::new(),
            replayed: 0,
            per_second: vec![0; seconds.ceil() as usize + 1],
            dispatch_lag: latency_histogram(),
            retry_after_waits: 0,
            refusals_left: 0,
            last_answer_us: 0,
            ledger: Ledger::new(seats),
        }
    }

    fn record(&mut self, job: &Job, response: &Response, latency_us: u64, at_us: u64) {
        let row = answer_row(response);
        let rows = self.answers.len();
        let row =
            if self.answers.contains_key(&row) || rows < ANSWER_ROWS_MAX { row } else { "other".into() };
        let histogram = self.answers.entry(row).or_insert_with(latency_histogram);
        histogram.saturating_record(latency_us.max(1));
        self.all_answers.saturating_record(latency_us.max(1));
        if response.header("idempotent-replayed").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            self.replayed += 1;
        }
        let second = (at_us / 1_000_000) as usize;
        if let Some(count) = self.per_second.get_mut(second) {
            *count += 1;
        }
        self.last_answer_us = self.last_answer_us.max(at_us);
        self.ledger.observe(&job.key, &job.email, &job.category, response);
    }

    /// Answers in all.
    pub fn answered(&self) -> u64 {
        self.all_answers.len()
    }
}

/// `201 confirmed`, `409 sold_out`, `503 overloaded`: the status and what the body says.
fn answer_row(response: &Response) -> String {
    let facts: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let field = |name: &str| {
        facts
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let detail = if response.status < 300 { field("status") } else { field("code") };
    match detail {
        Some(detail) => format!("{} {detail}", response.status),
        None => response.status.to_string(),
    }
}

/// Everything a finished run produced, for the report.
#[derive(Debug)]
pub struct LoadOutcome {
    pub config: LoadConfig,
    pub event_id: String,
    pub created_event: bool,
    pub recorder: Recorder,
    pub requests_sent: u64,
    pub connections_opened: u64,
    /// Requests that waited in the generator for a free connection.
    pub connection_waits: u64,
    /// Registrations still waiting for an answer when the run gave up on them.
    pub abandoned: u64,
    /// Confirmed, held and waitlisted per category on the server at the end, if it could be read.
    pub server_figures: Result<BTreeMap<String, CategoryFigures>, String>,
    pub elapsed: Duration,
    /// CPU time this process used during the run, in seconds (Linux only).
    pub generator_cpu_seconds: Option<f64>,
}

impl LoadOutcome {
    pub fn violations(&self) -> u64 {
        self.recorder.ledger.violations.total
    }
}

/// One category as `GET /v1/events/{id}` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CategoryFigures {
    pub capacity: u64,
    pub confirmed: u64,
    pub held: u64,
    pub available: u64,
    pub waitlisted: u64,
}

/// State shared by every task of a run.
#[derive(Debug)]
struct Shared {
    pool: Pool,
    registrations_path: String,
    planner: Mutex<Planner>,
    /// Requests that may still be sent.
    budget: AtomicU64,
    started: Instant,
    deadline: Instant,
    honour_retry_after: bool,
    attempts_max: u32,
    recorder: Mutex<Recorder>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a task panicked, which aborts the run's result anyway through the
    // panic; the data behind it is still consistent enough to report.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Takes one request from the budget, if the run is not over.
    fn may_send(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .budget
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
                .is_ok()
    }

    fn has_budget(&self) -> bool {
        Instant::now() < self.deadline && self.budget.load(Ordering::Acquire) > 0
    }

    fn next_job(&self) -> Job {
        lock(&self.planner).next_job()
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }

    /// Sends `job` once, then again while the answer is a refusal with `Retry-After` and that is
    /// honoured; `due` is when the first attempt should have gone out.
    async fn attempt(&self, job: &Job, due: Instant) {
        let headers = [("Idempotency-Key", job.key.as_str())];
        let request = Request {
            method: "POST",
            path: &self.registrations_path,
            headers: &headers,
            body: Some(&job.body),
        };
        let mut due = due;
        for attempt in 1..=self.attempts_max {
            if !self.may_send() {
                return;
            }
            let result = self.pool.send(&request).await;
            let now = Instant::now();
            let latency_us = now.saturating_duration_since(due).as_micros() as u64;
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    *lock(&self.recorder).failures.entry(error.kind()).or_insert(0) += 1;
                    return;
                }
            };
            lock(&self.recorder).record(job, &response, latency_us, self.micros_since_start(now));
            let Some(wait) = refusal_wait(&response) else {
                return;
            };
            let wait = wait + job.jitter;
            let again_at = Instant::now() + wait;
            if !self.honour_retry_after || attempt == self.attempts_max || again_at >= self.deadline {
                lock(&self.recorder).refusals_left += 1;
                return;
            }
            lock(&self.recorder).retry_after_waits += 1;
            tokio::time::sleep_until(again_at.into()).await;
            due = Instant::now();
        }
    }

    async fn run_job(self: Arc<Self>, job: Job, due: Instant) {
        match job.resend {
            Resend::No => self.attempt(&job, due).await,
            Resend::Concurrently => {
                tokio::join!(self.attempt(&job, due), self.attempt(&job, Instant::now()));
            }
            Resend::AfterAnswer => {
                self.attempt(&job, due).await;
                self.attempt(&job, Instant::now()).await;
            }
        }
    }
}

/// The wait a refusal asks for: 503, 429, and 409 `idempotency_key_in_flight`, with
/// `Retry-After` (capped); `None` for every other answer.
fn refusal_wait(response: &Response) -> Option<Duration> {
    let refusal = match response.status {
        503 | 429 => true,
        409 => checks::problem_code(&response.body).as_deref() == Some("idempotency_key_in_flight"),
        _ => false,
    };
    if !refusal {
        return None;
    }
    let seconds = response.retry_after_seconds().unwrap_or(1).min(RETRY_AFTER_WAIT_SECONDS_MAX);
    Some(Duration::from_secs(seconds))
}

/// Runs the load described by `config` on a runtime of its own.
pub fn run(config: LoadConfig) -> Result<LoadOutcome, LoadError> {
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads as usize)
            .enable_all()
            .build()
    }
    .map_err(|error| LoadError::Setup(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: LoadConfig) -> Result<LoadOutcome, LoadError> {
    let setup_pool = Pool::new(config.target.clone(), 1, config.timeout);
    let (event_id, created_event) = match &config.event {
        EventChoice::Create { admin_token, categories, capacity, hold_ttl_seconds } => {
            let id = create_event(
                &setup_pool,
                admin_token,
                *categories,
                *capacity,
                *hold_ttl_seconds,
                config.seed,
            )
            .await?;
            (id, true)
        }
        EventChoice::Existing(id) => (id.clone(), false),
    };
    let figures = read_event(&setup_pool, &event_id).await.map_err(LoadError::Setup)?;
    let seats: BTreeMap<String, u64> =
        figures.iter().map(|(code, figures)| (code.clone(), figures.available)).collect();
    let cpu_at_start = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(config.seconds);
    let shared = Arc::new(Shared {
        pool: Pool::new(config.target.clone(), config.connections as usize, config.timeout),
        registrations_path: config.target.path(&format!("/v1/events/{event_id}/registrations")),
        planner: Mutex::new(Planner::new(&config, &seats)),
        budget: AtomicU64::new(config.requests_max),
        started,
        deadline,
        honour_retry_after: config.honour_retry_after,
        attempts_max: config.attempts_max,
        recorder: Mutex::new(Recorder::new(seats, config.seconds + config.timeout.as_secs_f64() + 1.0)),
    });
    let mut jobs = JoinSet::new();
    match config.mode {
        Mode::Open { rate_per_second, ramp_seconds, spacing } => {
            let schedule = Schedule { rate_per_second, ramp_seconds, seconds: config.seconds };
            dispatch_open_loop(&shared, &mut jobs, schedule, spacing, config.seed).await;
        }
        Mode::Closed { users, think } => {
            for _ in 0..users {
                jobs.spawn(user(shared.clone(), think));
            }
        }
    }
    // Every request has its own timeout and no new one starts after the deadline, so waiting
    // one timeout past it (and a little) collects every answer that will come.
    let give_up_at = deadline + config.timeout + Duration::from_millis(FINAL_GRACE_MS);
    let _ =
        tokio::time::timeout_at(give_up_at.into(), async { while jobs.join_next().await.is_some() {} }).await;
    let abandoned = jobs.len() as u64;
    jobs.abort_all();
    // Aborted tasks end at their next await; wait for that, so that nothing records any more.
    while jobs.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let generator_cpu_seconds = cpu_at_start.zip(process_cpu_seconds()).map(|(start, end)| end - start);
    let server_figures = read_event(&setup_pool, &event_id).await;
    let requests_sent = config.requests_max - shared.budget.load(Ordering::Acquire);
    let connections_opened = shared.pool.opened();
    let connection_waits = shared.pool.waited();
    let mut recorder = std::mem::replace(&mut *lock(&shared.recorder), Recorder::new(BTreeMap::new(), 0.0));
    if created_event && let Ok(figures) = &server_figures {
        let taken =
            figures.iter().map(|(code, figures)| (code.clone(), figures.confirmed + figures.held)).collect();
        recorder.ledger.check_server_counts(&taken);
    }
    Ok(LoadOutcome {
        config,
        event_id,
        created_event,
        recorder,
        requests_sent,
        connections_opened,
        connection_waits,
        abandoned,
        server_figures,
        elapsed,
        generator_cpu_seconds,
    })
}

/// A virtual user of the closed loop.
async fn user(shared: Arc<Shared>, think: Duration) {
    while shared.has_budget() {
        let job = shared.next_job();
        shared.clone().run_job(job, Instant::now()).await;
        if !think.is_zero() {
            tokio::time::sleep(think).await;
        }
    }
}

/// When the open loop's requests are due: the rate ramps linearly from zero to
/// `rate_per_second` over `ramp_seconds`, then stays.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub rate_per_second: f64,
    pub ramp_seconds: f64,
    pub seconds: f64,
}

impl Schedule {
    /// The time (in seconds) by which `arrivals` requests are due on average: the inverse of
    /// the cumulative rate `R t² / 2T` during the ramp and `R T / 2 + R (t − T)` after it.
    pub fn time_of(&self, arrivals: f64) -> f64 {
        let (rate, ramp) = (self.rate_per_second, self.ramp_seconds);
        let during_ramp = rate * ramp / 2.0;
        if arrivals < during_ramp {
            (2.0 * ramp * arrivals / rate).sqrt()
        } else {
            ramp + (arrivals - during_ramp) / rate
        }
    }
}

async fn dispatch_open_loop(
    shared: &Arc<Shared>,
    jobs: &mut JoinSet<()>,
    schedule: Schedule,
    spacing: Spacing,
    seed: u64,
) {
    let mut rng = Rng::new(seed, Stream::Arrivals);
    let mut arrivals = 0.0;
    loop {
        // Unit-rate gaps mapped through the inverse cumulative rate give the ramped process.
        arrivals += match spacing {
            Spacing::Poisson => rng.exponential(1.0),
            Spacing::Even => 1.0,
        };
        let offset = schedule.time_of(arrivals);
        if offset >= schedule.seconds || !shared.has_budget() {
            return;
        }
        let due = shared.started + Duration::from_secs_f64(offset);
        tokio::time::sleep_until(due.into()).await;
        let lag_us = due.elapsed().as_micros() as u64;
        lock(&shared.recorder).dispatch_lag.saturating_record(lag_us.max(1));
        let job = shared.next_job();
        jobs.spawn(shared.clone().run_job(job, due));
        // Finished jobs are dropped as they come, so the set only holds those in flight.
        while jobs.try_join_next().is_some() {}
    }
}

async fn create_event(
    pool: &Pool,
    admin_token: &str,
    categories: u32,
    capacity: u32,
    hold_ttl_seconds: u32,
    seed: u64,
) -> Result<String, LoadError> {
    let categories: Vec<serde_json::Value> = (1..=categories)
        .map(|number| serde_json::json!({ "code": format!("C{number}"), "name": format!("Category {number}"), "capacity": capacity }))
        .collect();
    let body = serde_json::json!({
        "name": format!("kuota-sim load {seed:x}"),
        "hold_ttl_seconds": hold_ttl_seconds,
        "categories": categories,
    })
    .to_string();
    let authorization = format!("Bearer {admin_token}");
    let headers = [("Authorization", authorization.as_str())];
    let path = pool.target().path("/v1/events");
    let request = Request { method: "POST", path: &path, headers: &headers, body: Some(body.as_bytes()) };
    let response =
        pool.send(&request).await.map_err(|error| setup_failure(pool, "create the event", &error))?;
    if response.status != 201 {
        return Err(LoadError::Setup(format!(
            "creating the event: the server answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )));
    }
    let created: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|error| LoadError::Setup(format!("creating the event: the answer is not JSON: {error}")))?;
    created
        .get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| LoadError::Setup("creating the event: the answer has no id".into()))
}

fn setup_failure(pool: &Pool, what: &str, error: &HttpError) -> LoadError {
    LoadError::Setup(format!("cannot {what} at {}: {error}", pool.target().url()))
}

/// The event's categories as `GET /v1/events/{id}` shows them, by code.
async fn read_event(pool: &Pool, event_id: &str) -> Result<BTreeMap<String, CategoryFigures>, String> {
    let path = pool.target().path(&format!("/v1/events/{event_id}"));
    let request = Request { method: "GET", path: &path, headers: &[], body: None };
    let response = pool
        .send(&request)
        .await
        .map_err(|error| format!("cannot read event {event_id} at {}: {error}", pool.target().url()))?;
    if response.status != 200 {
        return Err(format!(
            "reading event {event_id}: the server answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    let event: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|error| format!("reading event {event_id}: {error}"))?;
    let categories = event
        .get("categories")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| format!("reading event {event_id}: the answer has no categories"))?;
    let number = |category: &serde_json::Value, name: &str| {
        category.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0)
    };
    let mut figures = BTreeMap::new();
    for category in categories {
        let code = category
            .get("code")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("reading event {event_id}: a category has no code"))?;
        figures.insert(
            code.to_string(),
            CategoryFigures {
                capacity: number(category, "capacity"),
                confirmed: number(category, "confirmed"),
                held: number(category, "held"),
                available: number(category, "available"),
                waitlisted: number(category, "waitlisted"),
            },
        );
    }
    Ok(figures)
}

/// User plus system CPU time of this process so far, in seconds; `None` off Linux.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis
    // start with the state (field 3), so utime and stime (fields 14 and 15) are 11 and 12 on.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / PROC_TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_reaches_its_rate_and_then_keeps_it() {
        let schedule = Schedule { rate_per_second: 100.0, ramp_seconds: 10.0, seconds: 60.0 };
        // 500 requests are due during the ramp, then 100 more every second.
        assert!((schedule.time_of(500.0) - 10.0).abs() < 1e-9);
        assert!((schedule.time_of(600.0) - 11.0).abs() < 1e-9);
        assert!((schedule.time_of(125.0) - 5.0).abs() < 1e-9, "a quarter of the ramp's requests by half way");
        let flat = Schedule { ramp_seconds: 0.0, ..schedule };
        assert!((flat.time_of(250.0) - 2.5).abs() < 1e-9);
    }

    #[test]
    fn process_cpu_time_is_readable_here() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu_seconds().is_some_and(|seconds| seconds >= 0.0));
        }
    }
}
