//! The load generator: N kept-alive connections on loopback. Closed loop: each connection sends
//! its next request as soon as the last one is answered. Open loop: requests are due at a fixed
//! rate whatever the server does, and a late answer counts from when its request was due (so a
//! slow server cannot hide its queue by slowing the generator down: no coordinated omission).
//! Every phase is bounded by a duration and a request count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use crate::http::{self, Connection, Response};

/// Latencies are recorded in microseconds, from 1 µs to this bound.
const LATENCY_MAX_MICROSECONDS: u64 = 120_000_000;
/// Significant digits the latency histograms keep.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Pause after a broken connection before it is opened again, so a dead server is not spun on.
const RECONNECT_PAUSE_MS: u64 = 10;
/// An answer not received within this many seconds counts as unanswered, and its connection is
/// dropped: a server that holds a connection without serving it (past its connection cap, say)
/// cannot hold a phase open forever.
const ANSWER_SECONDS_MAX: u64 = 10;
/// Registrants who submit again reuse the e-mail of the registrant this many requests earlier
/// (still in flight or just answered, to race the first submission).
const RESUBMIT_DISTANCE: u64 = 50;
/// A phase's successes are also kept as the slowest one per slot of this length, so that a
/// stall can be placed in time (and set beside the store's counters sampled meanwhile).
const SLOT: Duration = Duration::from_millis(100);
/// Slots kept per phase (10 minutes); answers after that are in the histograms only.
const SLOTS_MAX: usize = 6_000;

/// What a phase sends.
#[derive(Clone, Debug)]
pub enum Target {
    /// A registration of a new registrant (`Registrants`) to this event.
    Register { event: String },
    /// The same `GET` again and again.
    Get { path: String },
    /// A queue join of a new registrant to this event (`POST /v1/events/{event}/queue`).
    Join { event: String },
    /// These requests in turn, again and again (ticket reads with their tokens, say).
    Cycle { requests: Arc<Vec<Vec<u8>>> },
}

/// Hands out registrant numbers: every request gets a new key, and (unless resubmissions are
/// asked for) a new e-mail.
#[derive(Debug)]
pub struct Registrants {
    next: AtomicU64,
    resubmit_percent: u64,
}

impl Registrants {
    pub fn new(resubmit_percent: u64) -> Registrants {
        Registrants { next: AtomicU64::new(0), resubmit_percent }
    }

    /// Takes `count` registrant numbers for the caller's own requests; returns the first.
    pub fn reserve(&self, count: u64) -> u64 {
        self.next.fetch_add(count, Ordering::Relaxed)
    }

    /// The next request's sequence number (its key) and registrant number (its e-mail).
    fn next(&self) -> (u64, u64) {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let resubmits = sequence >= RESUBMIT_DISTANCE && sequence % 100 < self.resubmit_percent;
        (sequence, if resubmits { sequence - RESUBMIT_DISTANCE } else { sequence })
    }
}

impl Target {
    fn request(&self, registrants: &Registrants) -> Vec<u8> {
        match self {
            Target::Register { event } => {
                let (sequence, registrant) = registrants.next();
                http::registration(event, sequence, registrant)
            }
            Target::Get { path } => http::get(path),
            Target::Join { event } => {
                let (sequence, registrant) = registrants.next();
                http::queue_join(event, sequence, registrant)
            }
            Target::Cycle { requests } => {
                let (sequence, _) = registrants.next();
                requests[(sequence % requests.len().max(1) as u64) as usize].clone()
            }
        }
    }
}

/// One phase of load.
#[derive(Clone, Debug)]
pub struct Plan {
    pub port: u16,
    pub connections: usize,
    pub duration: Duration,
    pub requests_max: u64,
    pub target: Target,
    /// Closed loop only: stop at the first `sold_out` answer (the event is full).
    pub stop_when_sold_out: bool,
    /// After a 429 or 503 with `Retry-After`, the connection waits that long before its next
    /// request, as a client that keeps the contract does.
    pub honor_retry_after: bool,
    /// Open loop only: no request leaves after the phase's duration, even one that was due
    /// before it (the server fell behind); a server that cannot keep up then ends the phase on
    /// time instead of serving its whole backlog.
    pub end_on_time: bool,
}

/// How one answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 201/202 to a registration, 200 to a read.
    Success,
    SoldOut,
    AlreadyRegistered,
    /// 429 or 503: refused before a decision, to be retried.
    Shed,
    /// Any other status.
    Failed,
}

fn classify(response: &Response) -> Kind {
    match response.status {
        200..=202 => Kind::Success,
        409 if contains(&response.body, b"\"sold_out\"") => Kind::SoldOut,
        409 if contains(&response.body, b"\"already_registered\"") => Kind::AlreadyRegistered,
        429 | 503 => Kind::Shed,
        _ => Kind::Failed,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// What one phase saw: counts, latencies of successes and of refusals (409), and when the last
/// success and the first `sold_out` came, from the start of the phase.
#[derive(Clone, Debug)]
pub struct Tally {
    pub successes: Histogram<u64>,
    pub refusals: Histogram<u64>,
    pub sold_out: u64,
    pub already_registered: u64,
    pub shed: u64,
    pub failed: u64,
    pub broken_connections: u64,
    /// Requests without an answer within `ANSWER_SECONDS_MAX`.
    pub unanswered: u64,
    pub last_success_at: Duration,
    pub first_sold_out_at: Option<Duration>,
    /// The first unexpected answer, to show what went wrong.
    pub first_failure: Option<String>,
    /// The slowest success (µs) answered in each `SLOT` from the start of the phase.
    pub slowest_per_slot: Vec<u32>,
}

impl Tally {
    fn new() -> Tally {
        let histogram = || {
            Histogram::new_with_bounds(1, LATENCY_MAX_MICROSECONDS, LATENCY_SIGNIFICANT_DIGITS)
                .expect("the latency bounds are valid")
        };
        Tally {
            successes: histogram(),
            refusals: histogram(),
            sold_out: 0,
            already_registered: 0,
            shed: 0,
            failed: 0,
            broken_connections: 0,
            unanswered: 0,
            last_success_at: Duration::ZERO,
            first_sold_out_at: None,
            first_failure: None,
            slowest_per_slot: Vec::new(),
        }
    }

    fn record(&mut self, response: &Response, latency: Duration, since_start: Duration) -> Kind {
        let microseconds = latency.as_micros() as u64;
        let kind = classify(response);
        match kind {
            Kind::Success => {
                self.successes.saturating_record(microseconds);
                self.last_success_at = self.last_success_at.max(since_start);
                let slot = (since_start.as_micros() / SLOT.as_micros()) as usize;
                if slot < SLOTS_MAX {
                    if self.slowest_per_slot.len() <= slot {
                        self.slowest_per_slot.resize(slot + 1, 0);
                    }
                    let slowest = &mut self.slowest_per_slot[slot];
                    *slowest = (*slowest).max(u32::try_from(microseconds).unwrap_or(u32::MAX));
                }
            }
            Kind::SoldOut | Kind::AlreadyRegistered => {
                self.refusals.saturating_record(microseconds);
                if kind == Kind::SoldOut {
                    self.sold_out += 1;
                    self.first_sold_out_at.get_or_insert(since_start);
                } else {
                    self.already_registered += 1;
                }
            }
            Kind::Shed => self.shed += 1,
            Kind::Failed => {
                self.failed += 1;
                self.first_failure.get_or_insert_with(|| format!("{}: {}", response.status, response.text()));
            }
        }
        kind
    }

    fn merge(&mut self, other: &Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        self.successes.add(&other.successes).expect("same bounds");
        self.refusals.add(&other.refusals).expect("same bounds");
        self.sold_out += other.sold_out;
        self.already_registered += other.already_registered;
        self.shed += other.shed;
        self.failed += other.failed;
        self.broken_connections += other.broken_connections;
        self.unanswered += other.unanswered;
        self.last_success_at = self.last_success_at.max(other.last_success_at);
        if self.slowest_per_slot.len() < other.slowest_per_slot.len() {
            self.slowest_per_slot.resize(other.slowest_per_slot.len(), 0);
        }
        for (slowest, other) in self.slowest_per_slot.iter_mut().zip(&other.slowest_per_slot) {
            *slowest = (*slowest).max(*other);
        }
        self.first_sold_out_at = match (self.first_sold_out_at, other.first_sold_out_at) {
            (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
    }

    pub fn successes(&self) -> u64 {
        self.successes.len()
    }

    /// Answers that were neither a success nor a decided refusal.
    pub fn errors(&self) -> u64 {
        self.shed + self.failed + self.broken_connections + self.unanswered
    }
}

/// What a phase measured.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    pub tally: Tally,
    pub elapsed: Duration,
    /// When the phase started, by the wall clock.
    pub started_at: SystemTime,
}

impl PhaseResult {
    /// The `count` slots whose slowest success took longer than `over`, slowest first: when
    /// each began (seconds since the Unix epoch) and its slowest success (ms).
    pub fn slow_moments(&self, over: Duration, count: usize) -> Vec<(f64, f64)> {
        let start = self.started_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let over = over.as_micros() as u32;
        let mut slow: Vec<(usize, u32)> = (self.tally.slowest_per_slot.iter().copied().enumerate())
            .filter(|(_, slowest)| *slowest > over)
            .collect();
        slow.sort_by_key(|(_, slowest)| std::cmp::Reverse(*slowest));
        slow.truncate(count);
        slow.into_iter()
            .map(|(slot, slowest)| (start + (slot as f64) * SLOT.as_secs_f64(), f64::from(slowest) / 1_000.0))
            .collect()
    }
}

/// What every connection of a phase shares.
struct Shared {
    plan: Plan,
    registrants: Arc<Registrants>,
    started: Instant,
    issued: AtomicU64,
    stop: AtomicBool,
    /// Open loop only: requests per second.
    rate_per_second: f64,
}

impl Shared {
    /// Counts a request against the phase's bound; false once the phase is over.
    fn may_send(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.started.elapsed() < self.plan.duration
            && self.issued.fetch_add(1, Ordering::Relaxed) < self.plan.requests_max
    }
}

/// Runs `plan` in a closed loop.
pub async fn closed_loop(plan: Plan, registrants: Arc<Registrants>) -> anyhow::Result<PhaseResult> {
    run(plan, registrants, None).await
}

/// Runs `plan` in an open loop at `rate_per_second` requests per second.
pub async fn open_loop(
    plan: Plan,
    registrants: Arc<Registrants>,
    rate_per_second: f64,
) -> anyhow::Result<PhaseResult> {
    anyhow::ensure!(rate_per_second > 0.0, "an open loop needs a positive rate");
    run(plan, registrants, Some(rate_per_second)).await
}

/// Runs `plan` in an open loop at `rate_per_second` over `connections` opened beforehand (the
/// plan's count is not used).
pub async fn open_loop_over(
    plan: Plan,
    connections: Vec<Connection>,
    registrants: Arc<Registrants>,
    rate_per_second: f64,
) -> anyhow::Result<PhaseResult> {
    anyhow::ensure!(rate_per_second > 0.0, "an open loop needs a positive rate");
    drive(plan, connections, registrants, Some(rate_per_second)).await
}

async fn run(plan: Plan, registrants: Arc<Registrants>, rate: Option<f64>) -> anyhow::Result<PhaseResult> {
    // Connections are opened before the clock starts: connecting is not what is measured.
    let mut connections = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        connections.push(Connection::open(plan.port).await?);
    }
    drive(plan, connections, registrants, rate).await
}

async fn drive(
    plan: Plan,
    connections: Vec<Connection>,
    registrants: Arc<Registrants>,
    rate: Option<f64>,
) -> anyhow::Result<PhaseResult> {
    let started_at = SystemTime::now();
    let shared = Arc::new(Shared {
        plan,
        registrants,
        started: Instant::now(),
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        rate_per_second: rate.unwrap_or(0.0),
    });
    let mut workers = tokio::task::JoinSet::new();
    for connection in connections {
        let shared = shared.clone();
        match rate {
            None => workers.spawn(closed_worker(shared, connection)),
            Some(_) => workers.spawn(open_worker(shared, connection)),
        };
    }
    let mut tally = Tally::new();
    while let Some(worker) = workers.join_next().await {
        tally.merge(&worker?);
    }
    Ok(PhaseResult { tally, elapsed: shared.started.elapsed(), started_at })
}

async fn closed_worker(shared: Arc<Shared>, connection: Connection) -> Tally {
    let mut tally = Tally::new();
    let mut connection = Some(connection);
    while shared.may_send() {
        let request = shared.plan.target.request(&shared.registrants);
        let sent = Instant::now();
        let Some(kind) = exchange(&shared, &mut connection, &request, sent, &mut tally).await else {
            continue;
        };
        if kind == Kind::SoldOut && shared.plan.stop_when_sold_out {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    tally
}

async fn open_worker(shared: Arc<Shared>, connection: Connection) -> Tally {
    let mut tally = Tally::new();
    let mut connection = Some(connection);
    loop {
        let index = shared.issued.fetch_add(1, Ordering::Relaxed);
        let due = shared.started + Duration::from_secs_f64(index as f64 / shared.rate_per_second);
        let end = shared.started + shared.plan.duration;
        if index >= shared.plan.requests_max
            || due >= end
            || (shared.plan.end_on_time && Instant::now() >= end)
        {
            break;
        }
        let free = Instant::now();
        tokio::time::sleep_until(due.into()).await;
        // A request this connection could not send on time (it was busy: the server is behind)
        // counts from when it was due. One sent on time counts from when it left, so that the
        // timer's millisecond granularity is not charged to the server.
        let request = shared.plan.target.request(&shared.registrants);
        let start = if free > due { due } else { Instant::now() };
        exchange(&shared, &mut connection, &request, start, &mut tally).await;
    }
    tally
}

/// One request on `connection` (reopened when it broke); `None` when the connection failed.
async fn exchange(
    shared: &Shared,
    connection: &mut Option<Connection>,
    request: &[u8],
    start: Instant,
    tally: &mut Tally,
) -> Option<Kind> {
    if connection.is_none() {
        *connection = Connection::open(shared.plan.port).await.ok();
    }
    let result = match connection.as_mut() {
        Some(open) => {
            match tokio::time::timeout(Duration::from_secs(ANSWER_SECONDS_MAX), open.exchange(request)).await
            {
                Ok(result) => result,
                Err(_) => {
                    tally.unanswered += 1;
                    *connection = None;
                    return None;
                }
            }
        }
        None => Err(std::io::Error::other("could not connect")),
    };
    match result {
        Ok(response) => {
            let done = Instant::now();
            let kind = tally.record(&response, done - start, done - shared.started);
            if let (true, Kind::Shed, Some(seconds)) =
                (shared.plan.honor_retry_after, kind, response.retry_after_seconds)
            {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            Some(kind)
        }
        Err(_) => {
            tally.broken_connections += 1;
            *connection = None;
            tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await;
            None
        }
    }
}
