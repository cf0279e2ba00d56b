//! The write-behind writer: drains the engine's bounded submission queue and commits the
//! submissions in batches, one transaction each ("group commit"), answering every submission
//! once its batch committed or certainly will not.
//!
//! How a batch forms: the first submission opens it; it gathers more for up to
//! `flush_interval_ms` (0 by default: not at all), or until it holds `batch_size_max` effects.
//! It starts when a connection is free (at most `connections_max` batches commit at once) and
//! each of its events is free: in no batch still committing, or only in batches that have
//! already written their rows and now commit (`COMMITS_PER_EVENT_MAX`). While one batch commits the next
//! one gathers; that wait is what forms batches under load, with no timer: an idle writer
//! commits a lone registration at once, and a busy one commits everything that arrived during
//! its last commit together. Submissions of events that are free start without the others.
//!
//! Commits of one event stay in submission order although three may be in flight: a later
//! batch's writes wait for the earlier ones' row locks, and its `last_seq` update matches only
//! the row the one before it leaves (`SqlStore::commit_batch_signalling`). If an earlier one
//! fails, the later ones cannot commit either, and fail too.
//!
//! The engine's contract (`kuota_engine::store`) is kept here: once a submission of an (event,
//! epoch) failed, every later one of that pair fails (`EarlierWriteFailed`); a stale epoch is
//! `Fenced`; the same effects twice change nothing. A store that keeps failing opens a breaker,
//! which fails submissions at once until a probe finds the store working again.
//!
//! # Layout
//! - `commit`: one batch's transaction, its retries, and the answers.
//! - `stats`: the counters behind `WriteBehindHandle::stats`.

mod commit;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kuota_engine::EventId;
use kuota_engine::store::{StoreError, Submission, SubmissionReceiver, SubmissionSender, submission_channel};
use tokio::sync::mpsc::WeakSender;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use self::commit::CommitOutcome;
use self::stats::Shared;
pub use self::stats::{
    BATCH_EFFECTS_BOUNDS, COMMIT_LATENCY_BOUNDS_MICROS, Histogram, RETRY_AFTER_SECONDS_MAX, WriteBehindStats,
    retry_after_seconds,
};
use crate::store::{CreationFeed, SqlStore};

/// Batches one writer may have committing at once (see `store::WRITER_CONNECTIONS_MAX`).
pub use crate::store::WRITER_CONNECTIONS_MAX as CONNECTIONS_MAX;

/// Batches of one event committing at once, at most: one that is writing while those before it
/// commit. A batch of an event starts beside the event's batches in flight only once each of
/// them has written its rows (the latest of them then holds the event's row lock, which the one
/// before it released when it committed; `commit_batch_signalling`): its writes then wait for
/// that commit, and it commits only on top of it.
///
/// Three, not two: a batch whose `COMMIT` has released the row lock still waits for its log
/// flush, and with two the next batch could not start until that flush ended. The end-to-end
/// harness (64 connections, one hot event; docs/benchmarks.md) measured about 1.4× the
/// admissions per second with three on a loaded machine, where commits take longer, at the same
/// MariaDB CPU per admission, and the same rate on a quiet one; four added nothing measurable.
const COMMITS_PER_EVENT_MAX: usize = 3;

/// (event, epoch) pairs the writer remembers as failed. A pair is forgotten as soon as a newer
/// epoch of its event shows up (its owner reloaded, and the store fences the old epoch from
/// then on); the bound only matters if that many events failed and were never reloaded.
const POISONED_PAIRS_MAX: usize = 65_536;

/// How often the drain rate is updated and the breaker's probe considered, in milliseconds.
pub const TICK_INTERVAL_MS: u64 = 250;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteBehindConfig {
    /// How long a batch gathers after its first submission, in milliseconds, before it may
    /// start. 0 (the default) starts it as soon as a connection and its events are free: batches
    /// still form from what arrives while the previous commit runs, and an idle writer adds no
    /// wait. The end-to-end benchmark measured 2 ms against 0 (docs/benchmarks.md): the wait
    /// only lengthened every commit cycle (+35 % accepted/s without it at 64 clients).
    pub flush_interval_ms: u64,
    /// Effects one batch gathers at most (a single submission with more still goes alone).
    pub batch_size_max: usize,
    /// Submissions the queue holds; the engine's actors `try_reserve` in it, so a full queue
    /// is an immediate `Overloaded`.
    pub queue_capacity_max: usize,
    /// Batches committing at once, each on its own connection: of different events, or up to
    /// three of one event (`COMMITS_PER_EVENT_MAX`); at most `CONNECTIONS_MAX`, and one on
    /// SQLite. Three by default, so that one hot event can use all three: the end-to-end harness
    /// measured about 1.4× the admissions per second of two on a loaded machine, the same on a
    /// quiet one (docs/benchmarks.md, 2026-12-06);
    /// `benches/benches/write_behind.rs` had measured one hot event with batches of 100 at
    /// 30,500 registrations/s with two against 16,900/s with one (a batch writes while the one
    /// before it commits), and four events with batches of 1,000 at 31,900/s against 30,100/s,
    /// on 2 cores shared with MariaDB (2026-11-24).
    pub connections_max: u32,
    /// Attempts of one transaction after transient errors (deadlock, lost connection).
    pub commit_attempts_max: u32,
    /// Pause before the first retry, in milliseconds; each further retry waits four times longer.
    pub retry_backoff_ms: u64,
    /// Batches failing in a row (after their retries) that open the breaker.
    pub breaker_failures_max: u32,
    /// While the breaker is open or the store is stalled, how often the store is probed, in
    /// milliseconds (looked at every `TICK_INTERVAL_MS`, so shorter intervals act as that).
    pub breaker_probe_interval_ms: u64,
    /// How long one attempt of a batch's transaction may take, in milliseconds. An attempt that
    /// takes longer is cut short: its connection is closed (the database rolls the transaction
    /// back, unless it received the `COMMIT` already), and the next attempt, on a fresh
    /// connection, reads the event rows under their lock and writes only what is not stored yet
    /// (see `SqlStore::commit_batch`): the outcome is read back, never guessed.
    pub commit_timeout_ms: u64,
    /// The store counts as stalled while the oldest commit in flight is older than this, in
    /// milliseconds (see `WriteBehindHandle::stalled`).
    pub stall_threshold_ms: u64,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        WriteBehindConfig {
            flush_interval_ms: 0,
            batch_size_max: 1_000,
            queue_capacity_max: 16_384,
            connections_max: 3,
            commit_attempts_max: 3,
            retry_backoff_ms: 20,
            breaker_failures_max: 3,
            breaker_probe_interval_ms: 250,
            commit_timeout_ms: 1_000,
            stall_threshold_ms: 1_000,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct WriteBehind;

impl WriteBehind {
    /// Starts the writer as a task of the current tokio runtime and returns the sending side of
    /// its queue (for the engine's `Registry`) and a handle to watch and await it. The creations
    /// of every committed submission go to `feed` (the node's outbox delivery worker, see
    /// `crate::store::creation_feed`), if there is one.
    pub fn start(
        store: SqlStore,
        config: WriteBehindConfig,
        feed: Option<CreationFeed>,
    ) -> (SubmissionSender, WriteBehindHandle) {
        let (sender, receiver) = submission_channel(config.queue_capacity_max.max(1));
        let shared = Arc::new(Shared::publishing_to(store.health().clone()));
        let concurrency =
            if store.is_embedded() { 1 } else { config.connections_max.clamp(1, CONNECTIONS_MAX) };
        let (written_sender, written) = tokio::sync::mpsc::channel(CONNECTIONS_MAX as usize);
        let dispatcher = Dispatcher {
            store,
            feed,
            config,
            concurrency: concurrency as usize,
            receiver,
            input_closed: false,
            shared: shared.clone(),
            open: Vec::new(),
            open_effects: 0,
            open_deadline: None,
            busy: HashMap::new(),
            next_batch: 0,
            in_flight: HashMap::new(),
            written_sender,
            written,
            commits: JoinSet::new(),
            poisoned: Poisoned::default(),
            consecutive_failures: 0,
            probes: JoinSet::new(),
            last_probe: None,
            slow_commit_said: None,
        };
        let (finished_sender, finished) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            dispatcher.run().await;
            // Nobody may be watching; that is fine.
            let _ = finished_sender.send(true);
        });
        let stall_threshold = Duration::from_millis(config.stall_threshold_ms);
        let handle = WriteBehindHandle { shared, queue: sender.downgrade(), task, finished, stall_threshold };
        (sender, handle)
    }
}

/// Watches a running writer, and waits for it to finish.
#[derive(Debug)]
pub struct WriteBehindHandle {
    shared: Arc<Shared>,
    /// Weak, so that the handle does not keep the queue open.
    queue: WeakSender<Submission>,
    task: JoinHandle<()>,
    /// Turns true when the writer has finished (see `drained`).
    finished: tokio::sync::watch::Receiver<bool>,
    stall_threshold: Duration,
}

impl WriteBehindHandle {
    /// Submissions waiting: in the queue, gathering, or committing.
    pub fn queue_depth(&self) -> usize {
        let queued = self.queue.upgrade().map_or(0, |sender| sender.max_capacity() - sender.capacity());
        queued + self.shared.taken.load(Ordering::Relaxed)
    }

    /// The store keeps failing: new submissions are failed at once until a probe succeeds.
    pub fn breaker_open(&self) -> bool {
        self.shared.breaker_open.load(Ordering::Relaxed)
    }

    /// The store does not commit now: the oldest commit in flight is older than the stall
    /// threshold, or an attempt timed out (or a batch failed because of the store) and nothing
    /// has worked since, or the breaker is open. Cheap (a few atomic loads): callers ask before
    /// every write, and refuse it at once instead of letting it wait for a store that does not
    /// answer. It clears with the first commit that works, or with a probe of the store (every
    /// `breaker_probe_interval_ms`) that answers.
    pub fn stalled(&self) -> bool {
        self.shared.stalled_at(Instant::now(), self.stall_threshold)
    }

    /// How long the oldest commit in flight has been running (zero when none is).
    pub fn oldest_commit_age(&self) -> Duration {
        self.shared.oldest_commit_age(Instant::now())
    }

    pub fn stats(&self) -> WriteBehindStats {
        self.shared.snapshot()
    }

    /// The `Retry-After` to advise a refused caller: how long the queue takes to drain.
    pub fn retry_after_seconds(&self) -> u64 {
        retry_after_seconds(self.queue_depth(), self.shared.drain_rate_per_second())
    }

    /// Like `closed`, for a handle that is shared: resolves once the writer has finished.
    pub async fn drained(&self) {
        let mut finished = self.finished.clone();
        // An error means the writer task ended without saying so (it panicked): also finished.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Resolves once every sender is dropped and every accepted submission is answered
    /// (committed, or failed by the store): the end of a graceful shutdown.
    pub async fn closed(self) {
        if let Err(error) = self.task.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// (event, epoch) pairs with a failed submission.
#[derive(Debug, Default)]
struct Poisoned {
    pairs: HashMap<EventId, Vec<u64>>,
    /// Insertion order, to forget the oldest pair when over `POISONED_PAIRS_MAX`.
    order: VecDeque<(EventId, u64)>,
}

impl Poisoned {
    fn insert(&mut self, event: EventId, epoch: u64) {
        let epochs = self.pairs.entry(event.clone()).or_default();
        if epochs.contains(&epoch) {
            return;
        }
        epochs.push(epoch);
        self.order.push_back((event, epoch));
        if self.order.len() > POISONED_PAIRS_MAX
            && let Some((oldest, oldest_epoch)) = self.order.pop_front()
        {
            self.forget(&oldest, |epoch| epoch == oldest_epoch);
        }
    }

    /// Whether the pair failed before. A newer epoch means the event's owner reloaded, after
    /// which the store itself fences the older epochs: those are forgotten.
    fn check(&mut self, event: &EventId, epoch: u64) -> bool {
        let Some(epochs) = self.pairs.get(event) else { return false };
        if epochs.contains(&epoch) {
            return true;
        }
        if epochs.iter().all(|poisoned| *poisoned < epoch) {
            self.forget(event, |_| true);
            self.order.retain(|(poisoned, _)| poisoned != event);
        }
        false
    }

    fn forget(&mut self, event: &EventId, which: impl Fn(u64) -> bool) {
        if let Some(epochs) = self.pairs.get_mut(event) {
            epochs.retain(|epoch| !which(*epoch));
            if epochs.is_empty() {
                self.pairs.remove(event);
            }
        }
    }
}

struct Dispatcher {
    store: SqlStore,
    /// Where committed creations go, if anywhere.
    feed: Option<CreationFeed>,
    config: WriteBehindConfig,
    concurrency: usize,
    receiver: SubmissionReceiver,
    input_closed: bool,
    shared: Arc<Shared>,
    /// The batch gathering now, in submission order.
    open: Vec<Submission>,
    open_effects: usize,
    open_deadline: Option<Instant>,
    /// Events in a committing batch, with those batches' numbers, oldest first (at most
    /// `COMMITS_PER_EVENT_MAX`).
    busy: HashMap<EventId, Vec<u64>>,
    /// The number of the next batch to start.
    next_batch: u64,
    /// Committing batches: whether each has written its rows (see `COMMITS_PER_EVENT_MAX`), and
    /// when it started (for `WriteBehindHandle::stalled`).
    in_flight: HashMap<u64, InFlight>,
    /// Where a commit task says its batch is written; bounded by the batches in flight, which
    /// each say it once at most.
    written_sender: tokio::sync::mpsc::Sender<u64>,
    written: tokio::sync::mpsc::Receiver<u64>,
    commits: JoinSet<CommitOutcome>,
    poisoned: Poisoned,
    consecutive_failures: u32,
    probes: JoinSet<bool>,
    last_probe: Option<Instant>,
    /// The batch last said in the log to run past the stall threshold (said once per batch).
    slow_commit_said: Option<u64>,
}

impl Dispatcher {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_INTERVAL_MS));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let mut received = Vec::new();
        loop {
            self.start_due_batches();
            if self.input_closed && self.open.is_empty() && self.commits.is_empty() {
                break;
            }
            let room = self.config.batch_size_max.saturating_sub(self.open_effects);
            let receiving = !self.input_closed && room > 0;
            let wake_at = self.open_deadline.filter(|deadline| *deadline > Instant::now());
            tokio::select! {
                biased;
                Some(batch) = self.written.recv() => {
                    // A batch says it before its commit ends; were it ended, nothing changes.
                    if let Some(in_flight) = self.in_flight.get_mut(&batch) {
                        in_flight.written = true;
                    }
                }
                Some(joined) = self.commits.join_next(), if !self.commits.is_empty() => {
                    // A commit task only panics on a bug. Its events would stay busy forever, so
                    // the writer stops with it: every waiting actor sees its write fail, and a
                    // closed queue refuses new ones.
                    match joined {
                        Ok(outcome) => self.finished(outcome),
                        Err(error) => panic!("a commit task failed: {error}"),
                    }
                }
                Some(probe) = self.probes.join_next(), if !self.probes.is_empty() => {
                    self.probed(probe.unwrap_or(false));
                }
                count = self.receiver.recv_many(&mut received, room), if receiving => {
                    if count == 0 {
                        self.input_closed = true;
                    }
                    for submission in received.drain(..) {
                        self.accept(submission);
                    }
                }
                () = sleep_until(wake_at), if wake_at.is_some() => {}
                _ = ticker.tick() => {
                    let now = Instant::now();
                    self.shared.tick(now - last_tick);
                    last_tick = now;
                    self.say_if_a_commit_is_slow(now);
                    self.maybe_probe(now);
                }
            }
        }
        self.shared.taken.store(0, Ordering::Relaxed);
    }

    /// Takes a submission off the queue into the open batch, or fails it at once.
    fn accept(&mut self, submission: Submission) {
        if self.poisoned.check(&submission.event, submission.epoch) {
            return self.refuse(submission, StoreError::EarlierWriteFailed);
        }
        if self.shared.breaker_open.load(Ordering::Relaxed) {
            return self.refuse(submission, breaker_refusal());
        }
        if self.open.is_empty() {
            self.open_deadline = Some(Instant::now() + Duration::from_millis(self.config.flush_interval_ms));
        }
        self.open_effects += submission.effects.len().max(1);
        self.open.push(submission);
        self.shared.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers a submission with an error and poisons its (event, epoch).
    fn refuse(&mut self, submission: Submission, error: StoreError) {
        self.shared.submission_failed(false);
        self.poisoned.insert(submission.event.clone(), submission.epoch);
        // The actor may have stopped meanwhile; then nobody waits for the answer.
        let _ = submission.done.send(Err(error));
    }

    /// Starts the open batch's submissions whose events are free, once the batch is due (full,
    /// past its flush interval, or the queue closed) and a connection is free.
    fn start_due_batches(&mut self) {
        let now = Instant::now();
        while !self.open.is_empty() && self.commits.len() < self.concurrency {
            let due = self.input_closed
                || self.open_effects >= self.config.batch_size_max
                || self.open_deadline.is_some_and(|deadline| deadline <= now);
            if !due {
                return;
            }
            let (startable, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
                .into_iter()
                .partition(|submission| self.may_start(&submission.event));
            self.open = waiting;
            self.open_effects = self.open.iter().map(|submission| submission.effects.len().max(1)).sum();
            if self.open.is_empty() {
                self.open_deadline = None;
            }
            if startable.is_empty() {
                return;
            }
            self.start(startable);
        }
    }

    /// Whether a batch with `event` may start now: the event has no batch in flight, or fewer
    /// than `COMMITS_PER_EVENT_MAX` and all of them written.
    fn may_start(&self, event: &EventId) -> bool {
        self.busy.get(event).is_none_or(|batches| {
            batches.len() < COMMITS_PER_EVENT_MAX
                && batches.iter().all(|batch| self.in_flight.get(batch).is_some_and(|batch| batch.written))
        })
    }

    fn start(&mut self, submissions: Vec<Submission>) {
        // Earlier submissions of these events have been answered, or are in a batch that is
        // committing and that this one can only commit after: check the poison once more.
        let mut batch = Vec::with_capacity(submissions.len());
        for submission in submissions {
            if self.poisoned.check(&submission.event, submission.epoch) {
                self.shared.taken.fetch_sub(1, Ordering::Relaxed);
                self.refuse(submission, StoreError::EarlierWriteFailed);
            } else if self.shared.breaker_open.load(Ordering::Relaxed) {
                self.shared.taken.fetch_sub(1, Ordering::Relaxed);
                self.refuse(submission, breaker_refusal());
            } else {
                batch.push(submission);
            }
        }
        if batch.is_empty() {
            return;
        }
        let number = self.next_batch;
        self.next_batch += 1;
        self.in_flight.insert(number, InFlight { written: false, started: Instant::now() });
        self.publish_oldest_commit();
        // Once per event, not per submission: `finished` releases each event of the batch once.
        let mut events: Vec<&EventId> = batch.iter().map(|submission| &submission.event).collect();
        events.sort_unstable();
        events.dedup();
        for event in events {
            self.busy.entry(event.clone()).or_default().push(number);
        }
        // Committing submissions still count as waiting for `queue_depth` until answered.
        let committing = batch.len();
        let shared = self.shared.clone();
        let written_sender = self.written_sender.clone();
        // Said once per batch (a retried batch may write again), so the channel holds as many
        // signals as batches can be in flight: never full. Were it full, the next batch of these
        // events would only wait for this commit to end.
        let mut said = false;
        let written = move || {
            if !std::mem::replace(&mut said, true) {
                let _ = written_sender.try_send(number);
            }
        };
        let feed = self.feed.clone();
        let task =
            commit::commit(self.store.clone(), self.config, shared.clone(), feed, batch, number, written);
        self.commits.spawn(async move {
            let outcome = task.await;
            shared.taken.fetch_sub(committing, Ordering::Relaxed);
            outcome
        });
        self.shared.commits_in_flight(self.commits.len());
    }

    fn publish_oldest_commit(&self) {
        self.shared.oldest_commit_started(self.in_flight.values().map(|batch| batch.started).min());
    }

    /// Says in the log, once per batch, that the oldest commit runs past the stall threshold
    /// (writes are refused meanwhile, see `WriteBehindHandle::stalled`), and in `finished` when
    /// it ends: a refusal without a failing store then explains itself.
    fn say_if_a_commit_is_slow(&mut self, now: Instant) {
        let threshold = Duration::from_millis(self.config.stall_threshold_ms);
        let oldest = self.in_flight.iter().min_by_key(|(_, batch)| batch.started);
        if let Some((&number, batch)) = oldest
            && now.saturating_duration_since(batch.started) > threshold
            && self.slow_commit_said != Some(number)
        {
            self.slow_commit_said = Some(number);
            let running_ms = now.saturating_duration_since(batch.started).as_millis();
            tracing::warn!(
                batch = number,
                running_ms,
                "a commit runs past the stall threshold: writes are refused"
            );
        }
    }

    fn finished(&mut self, outcome: CommitOutcome) {
        if let Some(batch) = self.in_flight.remove(&outcome.batch)
            && self.slow_commit_said == Some(outcome.batch)
        {
            let ran_ms = batch.started.elapsed().as_millis();
            tracing::info!(
                batch = outcome.batch,
                ran_ms,
                "the commit that ran past the stall threshold ended"
            );
        }
        self.publish_oldest_commit();
        for event in outcome.events {
            if let Some(batches) = self.busy.get_mut(&event) {
                batches.retain(|batch| *batch != outcome.batch);
                if batches.is_empty() {
                    self.busy.remove(&event);
                }
            }
        }
        for (event, epoch) in outcome.failed_pairs {
            self.poisoned.insert(event, epoch);
        }
        if outcome.store_failed && !outcome.store_worked {
            self.consecutive_failures += 1;
            if self.consecutive_failures >= self.config.breaker_failures_max.max(1) {
                self.open_breaker();
            }
        } else if outcome.store_worked {
            self.consecutive_failures = 0;
        }
    }

    fn open_breaker(&mut self) {
        if !self.shared.set_breaker_open(true) {
            tracing::error!(failures = self.consecutive_failures, "the store keeps failing: breaker open");
            self.last_probe = Some(Instant::now());
        }
        // Everything gathered would be refused when it starts; refuse it now.
        let refused = std::mem::take(&mut self.open);
        self.open_effects = 0;
        self.open_deadline = None;
        for submission in refused {
            self.shared.taken.fetch_sub(1, Ordering::Relaxed);
            self.refuse(submission, breaker_refusal());
        }
    }

    /// Probes the store while the breaker is open, or while it is failing and no commit is in
    /// flight to find out (the API refuses writes meanwhile, so no commit would).
    fn maybe_probe(&mut self, now: Instant) {
        let suspect = self.shared.breaker_open.load(Ordering::Relaxed)
            || (self.shared.store_failing() && self.commits.is_empty());
        if !suspect || !self.probes.is_empty() {
            return;
        }
        let interval = Duration::from_millis(self.config.breaker_probe_interval_ms);
        if self.last_probe.is_some_and(|last| now - last < interval) {
            return;
        }
        self.last_probe = Some(now);
        let store = self.store.clone();
        self.probes.spawn(async move { store.ping().await.is_ok() });
    }

    fn probed(&mut self, working: bool) {
        if working {
            tracing::info!("the store answers again");
            self.shared.set_store_failing(false);
            self.shared.set_breaker_open(false);
            // Half open: one more failing batch opens the breaker again.
            self.consecutive_failures = self.config.breaker_failures_max.saturating_sub(1);
        }
    }
}

fn breaker_refusal() -> StoreError {
    StoreError::Unavailable("the store keeps failing; writes are refused until it answers again".into())
}

/// A batch that is committing.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// It has written its rows and holds its events' row locks (see `COMMITS_PER_EVENT_MAX`).
    written: bool,
    started: Instant,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
