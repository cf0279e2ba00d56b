//! `kuota-sim load --queue`: a queued opening end to end against a running Kuota. It creates an
//! event with a queue (the lobby open now, `opens_at` `--lobby-seconds` later), and each of
//! `--registrants` joins the lobby (`POST /v1/events/{id}/queue`), polls its ticket
//! (`GET /v1/queue/{ticket_id}`) when `Retry-After` says, and registers with the `Queue-Pass`
//! once admitted. Along the way every registrant also tries what the queue must refuse: a
//! registration without a pass once the event is open (403 `queue_pass_required`), its used
//! pass again under a new key (403 `queue_pass_invalid`), and a second join (200, the same
//! ticket).
//!
//! The checks, in the report and the exit code: no registration without a pass, no registrant
//! twice, and the seats the server counts at the end equal to the registrations acknowledged
//! and, when the crowd outnumbers the seats, to the capacity (every seat sold, none twice).
//! Every wait is bounded by `--seconds` (plus one request timeout).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuota_engine::{Clock, SystemClock, Timestamp};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::http::{Pool, Request, Response};
use super::target::Target;
use super::{LoadError, RETRY_AFTER_WAIT_SECONDS_MAX, checks, lock, read_event};
use crate::invariants::Violations;
use crate::metrics::at_quantile;

/// Registrants one queued run may have.
pub const QUEUE_REGISTRANTS_MAX: u32 = 100_000;
/// Longest lobby of a queued run, in seconds.
pub const LOBBY_SECONDS_MAX: f64 = 3_600.0;
/// The lobby opens this long before the event is created, so that the first join is never
/// early on a server whose clock is a little behind ours, in milliseconds.
const LOBBY_OPENED_BEFORE_MS: u64 = 60_000;

pub const CHECK_NO_PASS: &str = "no registration without a pass (403 queue_pass_required)";
pub const CHECK_ONE_PASS: &str = "a used pass makes no second registration (403 queue_pass_invalid)";
pub const CHECK_ONE_TICKET: &str = "a second join gets the same ticket (200)";
pub const CHECK_PASS_SEAT: &str = "with overbook 1.0, every pass used in time gets a seat";
pub const CHECK_SOLD: &str =
    "seats the server counts = registrations acknowledged (= capacity when outnumbered)";

/// Every check, in the order the report lists them.
pub const QUEUE_LOAD_CHECKS: [&str; 5] =
    [CHECK_NO_PASS, CHECK_ONE_PASS, CHECK_ONE_TICKET, CHECK_PASS_SEAT, CHECK_SOLD];

/// A queued run's settings; the command line checks every bound.
#[derive(Clone, Debug)]
pub struct QueueLoadConfig {
    pub target: Target,
    pub admin_token: String,
    pub capacity: u32,
    pub registrants: u32,
    pub lobby_seconds: f64,
    pub pass_ttl_seconds: u32,
    pub overbook: f64,
    pub admit_per_second: Option<f64>,
    /// The run ends (no more requests) this long after it starts.
    pub seconds: f64,
    pub connections: u32,
    pub timeout: Duration,
    pub seed: u64,
}

/// How one registrant's story ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    Registered,
    /// Admitted, and the registration found no seat (only with overbook above 1).
    AdmittedSoldOut,
    /// The ticket read `sold_out`.
    SoldOut,
    /// The pass lapsed (read `expired`, or the registration got `queue_pass_invalid`).
    Expired,
    /// No ticket: the join was refused.
    NoTicket,
    /// An answer the run did not expect, or no answer (its error kind).
    Failed,
    /// Still waiting when the run's time was up.
    OutOfTime,
}

impl Ending {
    fn describe(self) -> &'static str {
        match self {
            Ending::Registered => "registered with the pass",
            Ending::AdmittedSoldOut => "admitted, found the event sold out",
            Ending::SoldOut => "read sold_out while waiting",
            Ending::Expired => "the pass lapsed",
            Ending::NoTicket => "the join was refused",
            Ending::Failed => "an unexpected answer or none",
            Ending::OutOfTime => "still waiting when the run's time was up",
        }
    }
}

/// What the run saw.
#[derive(Debug, Default)]
pub struct QueueRecorder {
    pub endings: BTreeMap<Ending, u64>,
    /// Answers by request kind and status row ("join 202", "poll 200 waiting").
    pub answers: BTreeMap<String, u64>,
    /// Join → the poll that read `admitted`, in milliseconds.
    pub waits_ms: Vec<u64>,
    pub polls: u64,
    pub registered: u64,
    /// Registrants' first unexpected answers, a few.
    pub surprises: Vec<String>,
    pub violations: Violations,
}

/// Surprising answers quoted in the report, at most.
const SURPRISES_MAX: usize = 5;

impl QueueRecorder {
    fn answer(&mut self, kind: &str, response: &Response) {
        let detail = match response.status {
            200..=299 => ticket_status(response).unwrap_or_default(),
            _ => checks::problem_code(&response.body).unwrap_or_default(),
        };
        *self
            .answers
            .entry(format!("{kind} {} {detail}", response.status).trim_end().to_string())
            .or_insert(0) += 1;
    }

    fn surprise(&mut self, what: String) {
        if self.surprises.len() < SURPRISES_MAX {
            self.surprises.push(what);
        }
    }
}

/// Everything a queued run produced.
#[derive(Debug)]
pub struct QueueLoadOutcome {
    pub config: QueueLoadConfig,
    pub event_id: String,
    pub recorder: QueueRecorder,
    /// Confirmed plus held on the server at the end.
    pub server_taken: Result<u64, String>,
    pub elapsed: Duration,
}

impl QueueLoadOutcome {
    pub fn violations(&self) -> u64 {
        self.recorder.violations.total
    }
}

fn ticket_status(response: &Response) -> Option<String> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    body.get("status").and_then(Value::as_str).map(str::to_string)
}

struct Shared {
    pool: Pool,
    event_id: String,
    deadline: Instant,
    overbook_is_one: bool,
    tag: String,
    recorder: Mutex<QueueRecorder>,
}

impl Shared {
    async fn send(&self, kind: &str, request: &Request<'_>) -> Option<Response> {
        match self.pool.send(request).await {
            Ok(response) => {
                lock(&self.recorder).answer(kind, &response);
                Some(response)
            }
            Err(error) => {
                *lock(&self.recorder)
                    .answers
                    .entry(format!("{kind} failed: {}", error.kind()))
                    .or_insert(0) += 1;
                None
            }
        }
    }

    fn violation(&self, check: &'static str, detail: String) {
        lock(&self.recorder).violations.add(check, detail);
    }

    async fn join(&self, email: &str, key: &str) -> Option<Response> {
        let path = self.pool.target().path(&format!("/v1/events/{}/queue", self.event_id));
        let body = json!({ "email": email }).to_string();
        let headers = [("Idempotency-Key", key)];
        let request = Request { method: "POST", path: &path, headers: &headers, body: Some(body.as_bytes()) };
        self.send("join", &request).await
    }

    async fn register(&self, email: &str, key: &str, pass: Option<&str>) -> Option<Response> {
        let path = self.pool.target().path(&format!("/v1/events/{}/registrations", self.event_id));
        let body =
            json!({ "category": "C1", "email": email, "full_name": "Queue Load Registrant" }).to_string();
        let mut headers = vec![("Idempotency-Key", key)];
        if let Some(pass) = pass {
            headers.push(("Queue-Pass", pass));
        }
        let request = Request { method: "POST", path: &path, headers: &headers, body: Some(body.as_bytes()) };
        let kind = if pass.is_some() { "register" } else { "register without a pass" };
        self.send(kind, &request).await
    }

    /// One registrant, from joining to the end of its story.
    async fn registrant(self: Arc<Self>, index: u32) {
        let ending = self.registrant_story(index).await;
        *lock(&self.recorder).endings.entry(ending).or_insert(0) += 1;
    }

    async fn registrant_story(&self, index: u32) -> Ending {
        let email = format!("queue-{}-{index}@example.test", self.tag);
        let joined_at = Instant::now();
        let Some(joined) = self.join(&email, &format!("q-{}-{index}", self.tag)).await else {
            return Ending::Failed;
        };
        if joined.status != 202 {
            lock(&self.recorder).surprise(format!("join of {email}: {}", joined.status));
            return Ending::NoTicket;
        }
        let ticket: Value = serde_json::from_slice(&joined.body).unwrap_or_default();
        let (Some(ticket_id), Some(token)) = (
            ticket["ticket_id"].as_str().map(str::to_string),
            ticket["access_token"].as_str().map(str::to_string),
        ) else {
            lock(&self.recorder)
                .surprise(format!("join of {email}: a 202 without ticket_id or access_token"));
            return Ending::Failed;
        };
        // Joining again (another key) must give the same ticket, 200.
        if let Some(again) = self.join(&email, &format!("q-{}-{index}-again", self.tag)).await {
            let same: Value = serde_json::from_slice(&again.body).unwrap_or_default();
            if again.status != 200 || same["ticket_id"].as_str() != Some(ticket_id.as_str()) {
                self.violation(
                    CHECK_ONE_TICKET,
                    format!("{email}: second join got {} {}", again.status, quote(&again.body)),
                );
            }
        }
        let mut view = ticket;
        let mut retry_after = joined.retry_after_seconds();
        let mut probed = false;
        loop {
            // Once the event is open (the pass is checked after `not_open`), a registration
            // without a pass must be refused.
            if !probed && view["status"].as_str() != Some("lobby") {
                probed = true;
                self.probe_without_pass(&email, index).await;
            }
            match view["status"].as_str() {
                Some("admitted") => break,
                Some("sold_out") => return Ending::SoldOut,
                Some("expired") => return Ending::Expired,
                Some("lobby" | "waiting") => {}
                other => {
                    lock(&self.recorder).surprise(format!("{ticket_id}: status {other:?}"));
                    return Ending::Failed;
                }
            }
            let told = view["refresh_after_seconds"].as_u64().or(retry_after).unwrap_or(1);
            let wake_at = Instant::now() + Duration::from_secs(told.clamp(1, RETRY_AFTER_WAIT_SECONDS_MAX));
            if wake_at >= self.deadline {
                return Ending::OutOfTime;
            }
            tokio::time::sleep_until(wake_at.into()).await;
            let Some(polled) = self.poll(&ticket_id, &token).await else { return Ending::Failed };
            if polled.status != 200 {
                lock(&self.recorder).surprise(format!("poll of {ticket_id}: {}", polled.status));
                return Ending::Failed;
            }
            retry_after = polled.retry_after_seconds();
            view = serde_json::from_slice(&polled.body).unwrap_or_default();
        }
        lock(&self.recorder).waits_ms.push(joined_at.elapsed().as_millis() as u64);
        let Some(pass) = view["pass"].as_str().map(str::to_string) else {
            lock(&self.recorder).surprise(format!("{ticket_id}: admitted without a pass"));
            return Ending::Failed;
        };
        let Some(registered) = self.register(&email, &format!("r-{}-{index}", self.tag), Some(&pass)).await
        else {
            return Ending::Failed;
        };
        let code = checks::problem_code(&registered.body);
        let ending = match (registered.status, code.as_deref()) {
            (201, _) => Ending::Registered,
            (409, Some("sold_out")) => Ending::AdmittedSoldOut,
            (403, Some("queue_pass_invalid")) => Ending::Expired,
            (status, code) => {
                lock(&self.recorder).surprise(format!("registration of {email}: {status} {code:?}"));
                return Ending::Failed;
            }
        };
        if ending == Ending::AdmittedSoldOut && self.overbook_is_one {
            self.violation(
                CHECK_PASS_SEAT,
                format!("{email}: a pass of overbook 1.0 found the event sold out"),
            );
        }
        if ending == Ending::Registered {
            lock(&self.recorder).registered += 1;
            // The same pass under a new key must not make a second registration.
            if let Some(again) =
                self.register(&email, &format!("r-{}-{index}-twice", self.tag), Some(&pass)).await
                && (again.status != 403
                    || checks::problem_code(&again.body).as_deref() != Some("queue_pass_invalid"))
            {
                self.violation(
                    CHECK_ONE_PASS,
                    format!("{email}: the pass again: {} {}", again.status, quote(&again.body)),
                );
            }
        }
        ending
    }

    async fn probe_without_pass(&self, email: &str, index: u32) {
        if let Some(refused) = self.register(email, &format!("r-{}-{index}-nopass", self.tag), None).await
            && (refused.status != 403
                || checks::problem_code(&refused.body).as_deref() != Some("queue_pass_required"))
        {
            self.violation(
                CHECK_NO_PASS,
                format!("{email}: without a pass: {} {}", refused.status, quote(&refused.body)),
            );
        }
    }

    async fn poll(&self, ticket_id: &str, token: &str) -> Option<Response> {
        lock(&self.recorder).polls += 1;
        let path = self.pool.target().path(&format!("/v1/queue/{ticket_id}"));
        let authorization = format!("Bearer {token}");
        let headers = [("Authorization", authorization.as_str())];
        let request = Request { method: "GET", path: &path, headers: &headers, body: None };
        self.send("poll", &request).await
    }
}

fn quote(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).to_string()
}

/// Runs a queued opening described by `config` on a runtime of its own.
pub fn run(config: QueueLoadConfig) -> Result<QueueLoadOutcome, LoadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| LoadError::Setup(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: QueueLoadConfig) -> Result<QueueLoadOutcome, LoadError> {
    let setup = Pool::new(config.target.clone(), 1, config.timeout);
    let event_id = create_queued_event(&setup, &config).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(config.seconds);
    let shared = Arc::new(Shared {
        pool: Pool::new(config.target.clone(), config.connections as usize, config.timeout),
        event_id: event_id.clone(),
        deadline,
        overbook_is_one: config.overbook <= 1.0,
        tag: format!("{:x}", config.seed),
        recorder: Mutex::new(QueueRecorder::default()),
    });
    let mut registrants = JoinSet::new();
    for index in 0..config.registrants {
        registrants.spawn(shared.clone().registrant(index));
    }
    // A registrant sends nothing new after the deadline; one timeout more collects the answers.
    let give_up_at = deadline + config.timeout;
    let _ = tokio::time::timeout_at(give_up_at.into(), async {
        while registrants.join_next().await.is_some() {}
    })
    .await;
    let left = registrants.len() as u64;
    registrants.abort_all();
    while registrants.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let server_taken = read_event(&setup, &event_id)
        .await
        .map(|figures| figures.values().map(|category| category.confirmed + category.held).sum::<u64>());
    let mut recorder = std::mem::take(&mut *lock(&shared.recorder));
    if left > 0 {
        *recorder.endings.entry(Ending::OutOfTime).or_insert(0) += left;
    }
    match &server_taken {
        Ok(taken) => {
            let outnumbered = u64::from(config.registrants) > u64::from(config.capacity);
            let everyone_done = !recorder.endings.contains_key(&Ending::OutOfTime);
            if *taken != recorder.registered {
                recorder.violations.add(
                    CHECK_SOLD,
                    format!(
                        "the server counts {taken} seats taken; {} registrations were acknowledged",
                        recorder.registered
                    ),
                );
            } else if outnumbered && everyone_done && *taken != u64::from(config.capacity) {
                recorder.violations.add(
                    CHECK_SOLD,
                    format!("{taken} of {} seats sold to a crowd of {}", config.capacity, config.registrants),
                );
            }
        }
        Err(error) => {
            recorder.violations.add(CHECK_SOLD, format!("the event could not be read at the end: {error}"))
        }
    }
    Ok(QueueLoadOutcome { config, event_id, recorder, server_taken, elapsed })
}

async fn create_queued_event(pool: &Pool, config: &QueueLoadConfig) -> Result<String, LoadError> {
    let now = SystemClock.now();
    let opens_at = now.plus_millis((config.lobby_seconds * 1_000.0).round() as u64);
    let lobby_opens_at = Timestamp::from_millis(now.as_millis().saturating_sub(LOBBY_OPENED_BEFORE_MS));
    let mut queue = json!({
        "lobby_opens_at": kuota_api::time_format::format(lobby_opens_at),
        "pass_ttl_seconds": config.pass_ttl_seconds,
        "overbook": config.overbook,
    });
    if let Some(rate) = config.admit_per_second {
        queue["admit_per_second"] = json!(rate);
    }
    let body = json!({
        "name": format!("kuota-sim load --queue {:x}", config.seed),
        "opens_at": kuota_api::time_format::format(opens_at),
        "hold_ttl_seconds": 0,
        "categories": [{ "code": "C1", "name": "Category 1", "capacity": config.capacity }],
        "queue": queue,
    })
    .to_string();
    let authorization = format!("Bearer {}", config.admin_token);
    let headers = [("Authorization", authorization.as_str())];
    let path = pool.target().path("/v1/events");
    let request = Request { method: "POST", path: &path, headers: &headers, body: Some(body.as_bytes()) };
    let response = pool.send(&request).await.map_err(|error| {
        LoadError::Setup(format!("cannot create the queued event at {}: {error}", pool.target().url()))
    })?;
    if response.status != 201 {
        return Err(LoadError::Setup(format!(
            "creating the queued event: the server answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )));
    }
    let created: Value = serde_json::from_slice(&response.body).map_err(|error| {
        LoadError::Setup(format!("creating the queued event: the answer is not JSON: {error}"))
    })?;
    created
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| LoadError::Setup("creating the queued event: the answer has no id".into()))
}

/// The Markdown report of a queued run; `seed=<n>` is its first line.
pub fn render(outcome: &QueueLoadOutcome) -> String {
    let config = &outcome.config;
    let recorder = &outcome.recorder;
    let mut out = String::new();
    let _ = writeln!(out, "seed={}", config.seed);
    let _ = writeln!(out, "# kuota-sim load --queue: {}\n", config.target.url());
    let _ = writeln!(
        out,
        "Event `{}`: {} seats, {} registrants in a lobby of {} s; pass_ttl_seconds {}, overbook {}, \
         admit_per_second {}. The run took {:.1} s.\n",
        outcome.event_id,
        config.capacity,
        config.registrants,
        config.lobby_seconds,
        config.pass_ttl_seconds,
        config.overbook,
        config.admit_per_second.map_or("none".to_string(), |rate| rate.to_string()),
        outcome.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "## Registrants\n\n| ending | registrants |\n|---|---:|");
    for (ending, count) in &recorder.endings {
        let _ = writeln!(out, "| {} | {count} |", ending.describe());
    }
    let mut waits = recorder.waits_ms.clone();
    waits.sort_unstable();
    let at = |quantile: f64| {
        at_quantile(&waits, quantile)
            .map_or("–".to_string(), |wait| format!("{:.1} s", wait as f64 / 1_000.0))
    };
    let _ = writeln!(
        out,
        "\nJoin → reading `admitted` ({} registrants): p50 {}, p90 {}, max {}. Polls: {}.\n",
        waits.len(),
        at(0.5),
        at(0.9),
        at(1.0),
        recorder.polls
    );
    let _ = writeln!(out, "## Answers\n\n| request and answer | count |\n|---|---:|");
    for (row, count) in &recorder.answers {
        let _ = writeln!(out, "| {row} | {count} |");
    }
    let taken = match &outcome.server_taken {
        Ok(taken) => taken.to_string(),
        Err(error) => format!("unknown ({error})"),
    };
    let _ = writeln!(
        out,
        "\nSeats taken on the server at the end: {taken} of {}; registrations acknowledged: {}.\n",
        config.capacity, recorder.registered
    );
    if !recorder.surprises.is_empty() {
        let _ = writeln!(out, "Unexpected answers (first {}):\n", recorder.surprises.len());
        for surprise in &recorder.surprises {
            let _ = writeln!(out, "- {surprise}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Checks\n");
    for check in QUEUE_LOAD_CHECKS {
        match recorder.violations.of(check) {
            None => {
                let _ = writeln!(out, "- ok: {check}");
            }
            Some(found) => {
                let _ = writeln!(
                    out,
                    "- VIOLATED ({} times): {check}: {}",
                    found.count,
                    found.details.join("; ")
                );
            }
        }
    }
    out
}
