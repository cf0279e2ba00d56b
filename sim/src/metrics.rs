//! What a run measures: answers by class with their latencies (hdrhistogram), registrants'
//! final states, write-behind figures, and per-second series of rates and queue depths.

use hdrhistogram::Histogram;

use crate::charts::OPENING_SECONDS_MAX;
use crate::distribution::{MICROS_PER_SECOND, Micros, SAMPLE_MAX_US};

/// Largest latency the histograms resolve, in microseconds; larger values are recorded as it.
pub const LATENCY_MAX_US: u64 = 2 * SAMPLE_MAX_US;
/// Significant figures of the summary histograms (0.1 % resolution).
const SUMMARY_SIGNIFICANT_FIGURES: u8 = 3;
/// Significant figures of the per-bucket histograms behind the latency chart (1 % resolution),
/// kept low because there is one per chart bucket.
const SERIES_SIGNIFICANT_FIGURES: u8 = 2;
/// Largest latency the per-bucket histograms resolve, in microseconds (an hour).
const SERIES_LATENCY_MAX_US: u64 = 3_600 * MICROS_PER_SECOND;

/// How a request was answered: the HTTP answer it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerClass {
    Held,
    Confirmed,
    Waitlisted,
    SoldOut,
    SoldOutFastPath,
    AlreadyRegistered,
    KeyInFlight,
    PaymentConfirmed,
    HoldExpired,
    Cancelled,
    OtherRefusal,
    ShedNodeQueue,
    ShedMailbox,
    ShedPendingDecisions,
    ShedWriteQueue,
    ShedIdempotencyFull,
    RateLimited,
    ShedStoreStalled,
    ShedDeadline,
    ShedStoreFailed,
    ShedMoving,
    ShedLeaseUnavailable,
    ConnectionLost,
}

impl AnswerClass {
    pub const ALL: [AnswerClass; 23] = [
        AnswerClass::Held,
        AnswerClass::Confirmed,
        AnswerClass::Waitlisted,
        AnswerClass::SoldOut,
        AnswerClass::SoldOutFastPath,
        AnswerClass::AlreadyRegistered,
        AnswerClass::KeyInFlight,
        AnswerClass::PaymentConfirmed,
        AnswerClass::HoldExpired,
        AnswerClass::Cancelled,
        AnswerClass::OtherRefusal,
        AnswerClass::ShedNodeQueue,
        AnswerClass::ShedMailbox,
        AnswerClass::ShedPendingDecisions,
        AnswerClass::ShedWriteQueue,
        AnswerClass::ShedIdempotencyFull,
        AnswerClass::RateLimited,
        AnswerClass::ShedStoreStalled,
        AnswerClass::ShedDeadline,
        AnswerClass::ShedStoreFailed,
        AnswerClass::ShedMoving,
        AnswerClass::ShedLeaseUnavailable,
        AnswerClass::ConnectionLost,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AnswerClass::Held => "held (201)",
            AnswerClass::Confirmed => "confirmed (201)",
            AnswerClass::Waitlisted => "waitlisted (202)",
            AnswerClass::SoldOut => "sold out (409, by the actor)",
            AnswerClass::SoldOutFastPath => "sold out (409, fast path)",
            AnswerClass::AlreadyRegistered => "already registered (409)",
            AnswerClass::KeyInFlight => "key in flight (409)",
            AnswerClass::PaymentConfirmed => "payment confirmed (200)",
            AnswerClass::HoldExpired => "hold expired (410)",
            AnswerClass::Cancelled => "cancelled (200)",
            AnswerClass::OtherRefusal => {
                "other refusal (409: payment or cancel of an ended or waitlisted registration)"
            }
            AnswerClass::ShedNodeQueue => "shed: node queue full (503)",
            AnswerClass::ShedMailbox => "shed: actor mailbox full (503)",
            AnswerClass::ShedPendingDecisions => "shed: pending decisions full (503)",
            AnswerClass::ShedWriteQueue => "shed: write-behind queue full (503)",
            AnswerClass::ShedIdempotencyFull => "shed: idempotency table full (503)",
            AnswerClass::RateLimited => "rate limited (429)",
            AnswerClass::ShedStoreStalled => "shed: store stalled, writes refused (503)",
            AnswerClass::ShedDeadline => "shed: request deadline passed (503)",
            AnswerClass::ShedStoreFailed => "shed: store failed the write, event reloading (503)",
            AnswerClass::ShedMoving => "shed: owner moving or unreachable (503)",
            AnswerClass::ShedLeaseUnavailable => "shed: lease service unavailable (503)",
            AnswerClass::ConnectionLost => "no answer: node down, connection refused or reset",
        }
    }

    /// A 503: refused for lack of room, to be retried after `Retry-After`.
    pub fn is_shed(self) -> bool {
        matches!(
            self,
            AnswerClass::ShedNodeQueue
                | AnswerClass::ShedMailbox
                | AnswerClass::ShedPendingDecisions
                | AnswerClass::ShedWriteQueue
                | AnswerClass::ShedIdempotencyFull
                | AnswerClass::ShedStoreStalled
                | AnswerClass::ShedDeadline
                | AnswerClass::ShedStoreFailed
                | AnswerClass::ShedMoving
                | AnswerClass::ShedLeaseUnavailable
        )
    }

    /// A 503 or 429, or no answer at all: the client comes back later.
    pub fn asks_to_retry(self) -> bool {
        self.is_shed() || self == AnswerClass::RateLimited || self == AnswerClass::ConnectionLost
    }

    /// A refusal a fault causes (the store, the lease service or a node failing), as opposed
    /// to one for load.
    pub fn is_fault_refusal(self) -> bool {
        matches!(
            self,
            AnswerClass::ShedStoreStalled
                | AnswerClass::ShedDeadline
                | AnswerClass::ShedStoreFailed
                | AnswerClass::ShedMoving
                | AnswerClass::ShedLeaseUnavailable
                | AnswerClass::ConnectionLost
        )
    }

    /// A decision the event's actor took and answered (not a refusal, not the fast path).
    pub fn is_actor_decision(self) -> bool {
        matches!(
            self,
            AnswerClass::Held
                | AnswerClass::Confirmed
                | AnswerClass::Waitlisted
                | AnswerClass::SoldOut
                | AnswerClass::AlreadyRegistered
                | AnswerClass::PaymentConfirmed
                | AnswerClass::HoldExpired
                | AnswerClass::Cancelled
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a registrant's story ended, as the store (or, without a registration, the client) saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalState {
    Confirmed,
    Held,
    Waitlisted,
    Expired,
    Cancelled,
    SoldOut,
    AlreadyRegistered,
    GaveUp,
    Other,
}

impl FinalState {
    pub const ALL: [FinalState; 9] = [
        FinalState::Confirmed,
        FinalState::Held,
        FinalState::Waitlisted,
        FinalState::Expired,
        FinalState::Cancelled,
        FinalState::SoldOut,
        FinalState::AlreadyRegistered,
        FinalState::GaveUp,
        FinalState::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FinalState::Confirmed => "confirmed",
            FinalState::Held => "held (hold still running at the end)",
            FinalState::Waitlisted => "waitlisted (still waiting at the end)",
            FinalState::Expired => "hold expired unpaid",
            FinalState::Cancelled => "cancelled",
            FinalState::SoldOut => "sold out",
            FinalState::AlreadyRegistered => "already registered",
            FinalState::GaveUp => "gave up (no decision within the attempts allowed)",
            FinalState::Other => "other",
        }
    }
}

/// Counts of effects by kind, as the store committed them.
#[derive(Clone, Copy, Debug, Default)]
pub struct EffectCounts {
    pub created_held: u64,
    pub created_confirmed: u64,
    pub created_waitlisted: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub promoted: u64,
    pub decisions_recorded: u64,
    pub other: u64,
}

/// One second of virtual time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecondStats {
    /// Registrants pressing "register" for the first time.
    pub arrivals: u32,
    /// Requests sent (first tries, retries, refreshes, payments, cancels).
    pub requests: u32,
    /// Seats given by a decision (held or confirmed).
    pub admissions: u32,
    pub answers: u32,
    /// Answers that asked to come back later (503 and 429).
    pub refused_for_load: u32,
    /// Largest number of requests waiting for an HTTP worker, summed over nodes.
    pub node_queue_max: u32,
    pub mailbox_max: u32,
    pub write_queue_max: u32,
    pub transactions: u32,
    pub effects_committed: u32,
}

/// The part of the run the charts show, cut into equal buckets.
#[derive(Clone, Copy, Debug)]
pub struct ChartWindow {
    pub bucket_seconds: u64,
    pub buckets: usize,
}

impl ChartWindow {
    pub fn bucket_of(&self, at: Micros) -> Option<usize> {
        let bucket = (at / MICROS_PER_SECOND / self.bucket_seconds) as usize;
        (bucket < self.buckets).then_some(bucket)
    }

    pub fn seconds(&self) -> u64 {
        self.bucket_seconds * self.buckets as u64
    }
}

fn histogram(high: u64, figures: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, high, figures).expect("constant bounds with low >= 1 and high >= 2 * low")
}

/// The shortest window before and after a fault that its figures cover, in microseconds: a
/// fault of a second is compared with more than a second on either side.
pub const FAULT_WINDOW_MIN_US: Micros = 10 * MICROS_PER_SECOND;

/// Answers received in one window of time around a fault.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    pub from: Micros,
    pub until: Micros,
    pub answers: [u64; AnswerClass::ALL.len()],
    pub latency: Histogram<u64>,
}

impl FaultWindow {
    fn new(from: Micros, until: Micros, latencies_kept: bool) -> Self {
        let latency = if latencies_kept {
            histogram(SERIES_LATENCY_MAX_US, SERIES_SIGNIFICANT_FIGURES)
        } else {
            // Never recorded into (see `Metrics::counts_only`).
            histogram(2, 0)
        };
        FaultWindow { from, until, answers: [0; AnswerClass::ALL.len()], latency }
    }

    pub fn count(&self, class: AnswerClass) -> u64 {
        self.answers[class.index()]
    }

    pub fn total(&self) -> u64 {
        self.answers.iter().sum()
    }
}

/// What one fault did: answers before, during and after it (by when they reached the
/// registrant), and, as the servers answered: when requests were first and last refused for a
/// fault, when the event was served again, how many were shed, and who gave up.
#[derive(Clone, Debug)]
pub struct FaultStats {
    pub start: Micros,
    pub end: Micros,
    /// Refusals, recoveries, sheds and give-ups count until the after window ends or the next
    /// fault starts, whichever is first, so that one fault's figures are not another's.
    pub track_until: Micros,
    /// Before, during, after.
    pub windows: [FaultWindow; 3],
    pub first_refusal_at: Option<Micros>,
    pub last_refusal_at: Option<Micros>,
    /// When the last request refused for the fault reached its node.
    last_refused_arrival: Option<Micros>,
    /// When the event was served again: the first decision of its actor answered for a request
    /// that reached its node after every request refused for the fault had (a request that
    /// waited out a timeout is refused late, but for the time it came in).
    pub served_again_at: Option<Micros>,
    served_again_arrival: Micros,
    /// 503s and lost connections answered from the fault's start to the end of its after window.
    pub shed: u64,
    /// Registrants who gave up from the fault's start to the end of its after window.
    pub gave_up: u64,
    /// Recovery as the live fault suite measures it, for a fault with `suite_probes`.
    pub suite: Option<SuiteFigures>,
}

/// What the live fault suite's probing after a fault found (`model::suite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuiteFigures {
    /// What recovery is counted from: the fault's end, or `/readyz` saying 200 after a restart.
    pub since: Micros,
    /// When a `/readyz` poll said 200 (its answer reached the suite), if the suite polls.
    pub ready_at: Option<Micros>,
    /// The end of the last registration decided, once every node decided one.
    pub served_at: Option<Micros>,
    /// After a restart: the p99 latency of the requests sent in the suite's aftermath after
    /// `/readyz` said 200 (`node_killed_and_restarted`'s "during"), if any were.
    pub after_ready_p99: Option<Micros>,
}

impl FaultStats {
    /// A fault from `start` to `end`; `next_start` is when the next fault after it starts.
    /// Without `latencies_kept` its windows count answers only.
    pub fn new(start: Micros, end: Micros, next_start: Option<Micros>, latencies_kept: bool) -> Self {
        let margin = (end - start).max(FAULT_WINDOW_MIN_US);
        FaultStats {
            start,
            end,
            track_until: next_start.unwrap_or(Micros::MAX).min(end + margin).max(end),
            windows: [
                FaultWindow::new(start.saturating_sub(margin), start, latencies_kept),
                FaultWindow::new(start, end, latencies_kept),
                FaultWindow::new(end, end + margin, latencies_kept),
            ],
            first_refusal_at: None,
            last_refusal_at: None,
            last_refused_arrival: None,
            served_again_at: None,
            served_again_arrival: 0,
            shed: 0,
            gave_up: 0,
            suite: None,
        }
    }

    fn covers(&self, at: Micros) -> bool {
        self.start <= at && at < self.track_until
    }
}

/// Every figure a run collects.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub answers: [u64; AnswerClass::ALL.len()],
    pub latency: Vec<Histogram<u64>>,
    /// Latency of every answer to a registration request, whatever it was.
    pub registration_latency: Histogram<u64>,
    /// From a registrant's first press to the answer that ended their registration attempt.
    pub time_to_final_answer: Histogram<u64>,
    pub replays: u64,
    pub requests_sent: u64,
    pub superseded_answers: u64,
    pub effects: EffectCounts,
    pub transactions: u64,
    pub batch_effects_max: u64,
    pub commit_latency: Histogram<u64>,
    pub node_queue_peak: u64,
    pub mailbox_peak: u64,
    pub write_queue_peak: u64,
    pub pending_peak: u64,
    pub seconds: Vec<SecondStats>,
    pub window: ChartWindow,
    pub window_latency: Vec<Option<Histogram<u32>>>,
    /// Latency of the answers received in each second of the opening, for its chart.
    pub opening_latency: Vec<Option<Histogram<u32>>>,
    pub sold_out_at: Option<Micros>,
    /// When the last answer reached its client.
    pub last_answer_at: Micros,
    pub events_processed: u64,
    /// One per scenario fault, in the scenario's order.
    pub faults: Vec<FaultStats>,
    /// Whether latencies are recorded (histograms and the charts' series); without them only
    /// the counts are kept, which is all the swarm reads (see `Metrics::counts_only`).
    pub latencies_kept: bool,
}

impl Metrics {
    pub fn new(window: ChartWindow) -> Self {
        Metrics::with_histograms(window, || histogram(LATENCY_MAX_US, SUMMARY_SIGNIFICANT_FIGURES), true)
    }

    /// Metrics that count answers, effects and peaks but record no latency: no histogram is
    /// allocated or filled, and no chart series kept. The swarm runs on these, since it only
    /// reads the invariants; nothing the model decides reads a latency, so a seed runs the same
    /// either way.
    pub fn counts_only(window: ChartWindow) -> Self {
        // The smallest histogram hdrhistogram makes, never recorded into.
        Metrics::with_histograms(ChartWindow { buckets: 0, ..window }, || histogram(2, 0), false)
    }

    fn with_histograms(
        window: ChartWindow,
        summary: impl Fn() -> Histogram<u64>,
        latencies_kept: bool,
    ) -> Self {
        Metrics {
            answers: [0; AnswerClass::ALL.len()],
            latency: AnswerClass::ALL.iter().map(|_| summary()).collect(),
            registration_latency: summary(),
            time_to_final_answer: summary(),
            replays: 0,
            requests_sent: 0,
            superseded_answers: 0,
            effects: EffectCounts::default(),
            transactions: 0,
            batch_effects_max: 0,
            commit_latency: summary(),
            node_queue_peak: 0,
            mailbox_peak: 0,
            write_queue_peak: 0,
            pending_peak: 0,
            seconds: Vec::new(),
            window,
            window_latency: (0..window.buckets).map(|_| None).collect(),
            opening_latency: Vec::new(),
            sold_out_at: None,
            last_answer_at: 0,
            events_processed: 0,
            faults: Vec::new(),
            latencies_kept,
        }
    }

    /// A server answered `class` at `at` to a request that reached its node at `arrived_at`:
    /// the fault figures' refusals and recoveries.
    pub fn note_server_answer(&mut self, class: AnswerClass, at: Micros, arrived_at: Micros) {
        for fault in self.faults.iter_mut().filter(|fault| fault.covers(at)) {
            if class.asks_to_retry() {
                fault.shed += 1;
            }
            if class.is_fault_refusal() {
                fault.first_refusal_at.get_or_insert(at);
                fault.last_refusal_at = Some(at);
                if fault.last_refused_arrival.is_none_or(|last| arrived_at > last) {
                    fault.last_refused_arrival = Some(arrived_at);
                    if fault.served_again_arrival <= arrived_at {
                        fault.served_again_at = None;
                    }
                }
            } else if class.is_actor_decision()
                && fault.served_again_at.is_none()
                && fault.last_refused_arrival.is_some_and(|last| arrived_at > last)
            {
                fault.served_again_at = Some(at);
                fault.served_again_arrival = arrived_at;
            }
        }
    }

    /// A registrant gave up at `at`.
    pub fn note_gave_up(&mut self, at: Micros) {
        for fault in self.faults.iter_mut().filter(|fault| fault.covers(at)) {
            fault.gave_up += 1;
        }
    }

    /// The stats of the second holding `at`, created on first use.
    pub fn second(&mut self, at: Micros) -> &mut SecondStats {
        let index = (at / MICROS_PER_SECOND) as usize;
        if index >= self.seconds.len() {
            self.seconds.resize(index + 1, SecondStats::default());
        }
        &mut self.seconds[index]
    }

    pub fn count(&self, class: AnswerClass) -> u64 {
        self.answers[class.index()]
    }

    pub fn latency_of(&self, class: AnswerClass) -> &Histogram<u64> {
        &self.latency[class.index()]
    }

    pub fn answers_total(&self) -> u64 {
        self.answers.iter().sum()
    }

    /// Records one answer as its client received it.
    pub fn record_answer(&mut self, class: AnswerClass, latency_us: u64, at: Micros, registration: bool) {
        let latency_us = latency_us.max(1);
        self.last_answer_at = self.last_answer_at.max(at);
        self.answers[class.index()] += 1;
        for fault in &mut self.faults {
            if let Some(window) =
                fault.windows.iter_mut().find(|window| window.from <= at && at < window.until)
            {
                window.answers[class.index()] += 1;
                if self.latencies_kept {
                    window.latency.saturating_record(latency_us);
                }
            }
        }
        if !self.latencies_kept {
            return;
        }
        self.latency[class.index()].saturating_record(latency_us);
        if registration {
            self.registration_latency.saturating_record(latency_us);
        }
        let second = self.second(at);
        second.answers += 1;
        if class.asks_to_retry() {
            second.refused_for_load += 1;
        }
        let series = || {
            Histogram::new_with_bounds(1, SERIES_LATENCY_MAX_US, SERIES_SIGNIFICANT_FIGURES)
                .expect("constant bounds with low >= 1 and high >= 2 * low")
        };
        if let Some(bucket) = self.window.bucket_of(at) {
            self.window_latency[bucket].get_or_insert_with(series).saturating_record(latency_us);
        }
        let second = (at / MICROS_PER_SECOND) as usize;
        if second < OPENING_SECONDS_MAX as usize {
            if second >= self.opening_latency.len() {
                self.opening_latency.resize(second + 1, None);
            }
            self.opening_latency[second].get_or_insert_with(series).saturating_record(latency_us);
        }
    }

    /// A registrant's first press to their final answer (not kept by `counts_only`).
    pub fn note_time_to_final_answer(&mut self, since_first: Micros) {
        if self.latencies_kept {
            self.time_to_final_answer.saturating_record(since_first.max(1));
        }
    }

    pub fn observe_node_queue(&mut self, at: Micros, depth: u64) {
        self.node_queue_peak = self.node_queue_peak.max(depth);
        let second = self.second(at);
        second.node_queue_max = second.node_queue_max.max(depth as u32);
    }

    pub fn observe_mailbox(&mut self, at: Micros, depth: u64) {
        self.mailbox_peak = self.mailbox_peak.max(depth);
        let second = self.second(at);
        second.mailbox_max = second.mailbox_max.max(depth as u32);
    }

    pub fn observe_write_queue(&mut self, at: Micros, depth: u64) {
        self.write_queue_peak = self.write_queue_peak.max(depth);
        let second = self.second(at);
        second.write_queue_max = second.write_queue_max.max(depth as u32);
    }

    pub fn record_transaction(&mut self, at: Micros, effects: u64, latency_us: u64) {
        self.transactions += 1;
        self.batch_effects_max = self.batch_effects_max.max(effects);
        if self.latencies_kept {
            self.commit_latency.saturating_record(latency_us.max(1));
        }
        let second = self.second(at);
        second.transactions += 1;
        second.effects_committed += effects as u32;
    }
}

/// The value at `quantile` of sorted figures, by nearest rank (the live fault suite's
/// `latency_percentile_ms` counts so too); `None` for none.
pub(crate) fn at_quantile<T: Copy>(sorted: &[T], quantile: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}
