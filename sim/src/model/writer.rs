//! The write-behind writer: submissions wait in a bounded queue until a batch is due (it is
//! full, or its oldest submission has waited the flush interval) and a connection is free;
//! each batch is one transaction whose latency is drawn. Batches on different connections may
//! commit out of order, but the store view and the answers advance only over the committed
//! prefix, in submission order: what the actor's in-order release does with a pipelined writer.
//!
//! Faults follow `persist/src/write_behind/commit.rs`: an attempt that takes longer than the
//! store timeout is cut short and rolled back, and tried again after a pause growing fourfold,
//! up to `commit_attempts_max` attempts; a batch that fails for good fails every later write of
//! its epoch (`EarlierWriteFailed`), counts toward the breaker, and makes the actor roll back. A
//! batch whose epoch is older than the store's is fenced: nothing of it is stored.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::mem::take;

use kuota_engine::Effect;

use super::Simulation;
use super::agenda::{EventKind, Incarnation};
use crate::distribution::{MICROS_PER_MILLI, Micros};

/// A decision's effects waiting in the queue; the effects themselves wait in `Writer::queued`.
#[derive(Clone, Debug)]
struct Submission {
    id: u64,
    epoch: u64,
    enqueued_at: Micros,
    effects: usize,
}

#[derive(Clone, Debug)]
struct Batch {
    first_submission: u64,
    last_submission: u64,
    epoch: u64,
    /// How many effects it holds: those after every earlier batch's in `Writer::queued`.
    effects: usize,
    latency_us: Micros,
    /// The database's own time for the current attempt (its drawn latency and a connection),
    /// which stalls pause (`FaultPlan::store_work_done`).
    work_us: Micros,
    attempts: u32,
    attempt_started: Micros,
    /// The current attempt ran into the store timeout.
    timed_out: bool,
}

#[derive(Debug)]
pub(super) struct Writer {
    /// Names this writer in its timers (see `EventKind::FlushDue`).
    pub(super) id: Incarnation,
    queue: VecDeque<Submission>,
    /// The effects of every submission not yet durable, in submission order: those of the
    /// batches taken (in flight, or committed after a gap) first, then those of `queue`. One
    /// buffer for all of them, so that a decision's effects cost no allocation of their own, and
    /// a batch is a count of them rather than a copy (each `Effect` is 168 bytes, and moving them
    /// into batches was 1.6 % of a swarm seed's time, perf); they leave it once durable.
    queued: VecDeque<Effect>,
    /// Effects of `queued` that belong to batches taken (the rest wait in `queue`'s submissions).
    batched: usize,
    next_submission: u64,
    connections_busy: u32,
    in_flight: Vec<Option<Batch>>,
    free_slots: Vec<u32>,
    /// Committed batches not yet part of the durable prefix, by first submission: a few at
    /// most (one per connection), usually none, so a sorted queue, not a map (a `BTreeMap`
    /// allocated a node for every batch, some 500 instructions a commit).
    committed: VecDeque<Batch>,
    /// Every submission below this one is committed and applied to the store view.
    durable_below: u64,
    flush_at: Option<Micros>,
}

/// The queues of a writer done with, emptied, kept with their room for the thread's next
/// writer (`Writer::new`). A store stall fills a writer's queue to thousands of effects, and
/// each run, rollback and change of owner starts a new writer: growing a fresh queue again
/// copied every effect at each doubling and took its memory from the system page by page. At
/// most one set, no larger than the largest queue the thread ran (`write_queue_max`
/// submissions, which validation bounds).
type SpareQueues = (VecDeque<Submission>, VecDeque<Effect>);

thread_local! {
    static SPARE_QUEUES: RefCell<Option<SpareQueues>> = const { RefCell::new(None) };
}

/// `clone_from` copies into the queues `self` allocated (see `Simulation`'s `clone_from`).
impl Clone for Writer {
    fn clone(&self) -> Self {
        Writer {
            id: self.id,
            queue: self.queue.clone(),
            queued: self.queued.clone(),
            batched: self.batched,
            next_submission: self.next_submission,
            connections_busy: self.connections_busy,
            in_flight: self.in_flight.clone(),
            free_slots: self.free_slots.clone(),
            committed: self.committed.clone(),
            durable_below: self.durable_below,
            flush_at: self.flush_at,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Writer {
            id,
            queue,
            queued,
            batched,
            next_submission,
            connections_busy,
            in_flight,
            free_slots,
            committed,
            durable_below,
            flush_at,
        } = source;
        self.id = *id;
        self.queue.clone_from(queue);
        self.queued.clone_from(queued);
        self.batched = *batched;
        self.next_submission = *next_submission;
        self.connections_busy = *connections_busy;
        self.in_flight.clone_from(in_flight);
        self.free_slots.clone_from(free_slots);
        self.committed.clone_from(committed);
        self.durable_below = *durable_below;
        self.flush_at = *flush_at;
    }
}

impl Writer {
    pub(super) fn new(id: Incarnation) -> Self {
        Writer::around(id, SPARE_QUEUES.with_borrow_mut(Option::take).unwrap_or_default())
    }

    /// A new writer whose queues grow into `queues`' room (empty).
    fn around(id: Incarnation, (queue, queued): SpareQueues) -> Self {
        Writer {
            id,
            queue,
            queued,
            batched: 0,
            next_submission: 0,
            connections_busy: 0,
            in_flight: Vec::new(),
            free_slots: Vec::new(),
            committed: VecDeque::new(),
            durable_below: 0,
            flush_at: None,
        }
    }

    pub(super) fn is_full(&self, write_queue_max: u32) -> bool {
        self.queue.len() >= write_queue_max as usize
    }

    pub(super) fn durable_below(&self) -> u64 {
        self.durable_below
    }

    /// A batch is committing (an attempt runs, or it waits to try again).
    pub(super) fn commits_in_flight(&self) -> bool {
        self.connections_busy > 0
    }

    /// How long the oldest attempt in flight has run (0 when none is).
    pub(super) fn oldest_attempt_age(&self, now: Micros) -> Micros {
        self.in_flight.iter().flatten().map(|batch| now - batch.attempt_started).max().unwrap_or(0)
    }

    /// Takes the next batch from the head of the queue: whole submissions, up to
    /// `batch_size_max` effects (a larger single submission goes alone).
    fn take_batch(&mut self, batch_size_max: usize) -> Batch {
        // How many submissions the batch takes, and their effects, before moving any.
        let (mut taken, mut effects) = (0, 0);
        for next in &self.queue {
            if effects > 0 && effects + next.effects > batch_size_max {
                break;
            }
            taken += 1;
            effects += next.effects;
        }
        let first = self.queue.front().expect("take_batch is only called with a waiting submission");
        let (first_submission, epoch) = (first.id, first.epoch);
        // A batch takes at least the first submission, whatever its size.
        let last_submission = self.queue[taken - 1].id;
        self.queue.drain(..taken);
        self.batched += effects;
        Batch {
            first_submission,
            last_submission,
            epoch,
            effects,
            latency_us: 0,
            work_us: 0,
            attempts: 0,
            attempt_started: 0,
            timed_out: false,
        }
    }

    /// Effects queued and not yet in a batch.
    fn unbatched(&self) -> usize {
        self.queued.len() - self.batched
    }

    fn park(&mut self, batch: Batch) -> u32 {
        self.connections_busy += 1;
        if let Some(slot) = self.free_slots.pop() {
            self.in_flight[slot as usize] = Some(batch);
            return slot;
        }
        self.in_flight.push(Some(batch));
        (self.in_flight.len() - 1) as u32
    }

    fn unpark(&mut self, slot: u32) -> Option<Batch> {
        let batch = self.in_flight.get_mut(slot as usize)?.take()?;
        self.free_slots.push(slot);
        self.connections_busy -= 1;
        Some(batch)
    }

    /// A batch failed for good: every write not yet durable fails with it (those of its epoch
    /// that come later cannot commit on top of it), and the actor's decisions are rolled back.
    /// The writer goes on as `id`, so that the failed batches' timers find nothing.
    pub(super) fn fail_everything(&mut self, id: Incarnation) {
        let next_submission = self.next_submission;
        let queues = self.take_queues();
        *self = Writer::around(id, queues);
        self.next_submission = next_submission;
        self.durable_below = next_submission;
    }

    /// The queues, emptied, with their room; this writer is left with none.
    fn take_queues(&mut self) -> SpareQueues {
        let (mut queue, mut queued) = (take(&mut self.queue), take(&mut self.queued));
        queue.clear();
        queued.clear();
        self.batched = 0;
        (queue, queued)
    }

    /// What a writer still has when its owner lost the event, in submission order, with each
    /// batch's epoch: it sends them to the store all the same.
    pub(super) fn into_unfinished(mut self) -> Vec<(u64, Vec<Effect>)> {
        // Batches and waiting submissions in submission order, which is the order of their
        // effects in `queued`.
        let mut batches: Vec<(u64, u64, usize)> = take(&mut self.committed)
            .into_iter()
            .chain(take(&mut self.in_flight).into_iter().flatten())
            .map(|batch| (batch.first_submission, batch.epoch, batch.effects))
            .chain(
                self.queue.drain(..).map(|submission| (submission.id, submission.epoch, submission.effects)),
            )
            .collect();
        batches.sort_by_key(|(first, _, _)| *first);
        let queued = &mut self.queued;
        batches.into_iter().map(|(_, epoch, effects)| (epoch, queued.drain(..effects).collect())).collect()
    }
}

impl Drop for Writer {
    /// Keeps the queues for the thread's next writer, unless a roomier set is kept already.
    fn drop(&mut self) {
        let queues = self.take_queues();
        // `try_with`: a writer dropped while the thread's locals are being torn down keeps
        // nothing, rather than panicking in a drop.
        let _ = SPARE_QUEUES.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.as_ref().is_none_or(|(_, queued)| queued.capacity() < queues.1.capacity()) {
                *spare = Some(queues);
            }
        });
    }
}

impl Simulation<'_> {
    /// Queues a decision's effects, taking them out of `effects`; the actor reserved the room
    /// before deciding.
    pub(super) fn submit(&mut self, effects: &mut Vec<Effect>, epoch: u64) -> u64 {
        let writer = &mut self.writer;
        let id = writer.next_submission;
        writer.next_submission += 1;
        let count = effects.len();
        writer.queued.extend(effects.drain(..));
        writer.queue.push_back(Submission { id, epoch, enqueued_at: self.now, effects: count });
        self.metrics.observe_write_queue(self.now, writer.queue.len() as u64);
        self.try_flush();
        id
    }

    /// Starts every batch that is due while connections are free; arms the flush timer for
    /// the oldest submission when its batch is not due yet.
    pub(super) fn try_flush(&mut self) {
        let system = &self.scenario.system;
        let batch_size_max = system.batch_size_max as usize;
        while self.writer.connections_busy < system.database_connections {
            let Some(oldest) = self.writer.queue.front() else {
                return;
            };
            let due_at = oldest.enqueued_at + self.settings.flush_interval_us;
            if self.writer.unbatched() < batch_size_max && self.now < due_at {
                return self.arm_flush(due_at);
            }
            let batch = self.writer.take_batch(batch_size_max);
            let slot = self.writer.park(batch);
            self.start_attempt(slot);
        }
    }

    /// One attempt of a batch's transaction: its drawn latency, slowed by a latency fault,
    /// waiting out a stalled store, and cut short by the store timeout.
    fn start_attempt(&mut self, slot: u32) {
        let Some(effects) = self.writer.in_flight[slot as usize].as_ref().map(|batch| batch.effects) else {
            return;
        };
        let per_effect = (self.settings.commit_per_effect_us * effects as f64).round() as Micros;
        let mut latency = self.settings.commit_latency.sample_micros(&mut self.system_rng)
            + per_effect
            + self.faults.extra_commit_latency(self.now);
        if self.health.writer_connections_lost > 0 {
            // The connection of an attempt cut short was closed: this one opens one first.
            self.health.writer_connections_lost -= 1;
            latency += self.connect_us();
        }
        let done = self.faults.store_work_done(self.now, latency);
        let Some(batch) = self.writer.in_flight[slot as usize].as_mut() else { return };
        batch.attempts += 1;
        batch.attempt_started = self.now;
        batch.work_us = latency;
        batch.latency_us = done - self.now;
        batch.timed_out = batch.latency_us > self.settings.store_timeout_us;
        let ends_in = batch.latency_us.min(self.settings.store_timeout_us);
        let writer = self.writer.id;
        self.schedule_in(ends_in, EventKind::CommitDone { writer, batch: slot });
    }

    fn arm_flush(&mut self, due_at: Micros) {
        if self.writer.flush_at.is_none_or(|at| at > due_at || at < self.now) {
            self.writer.flush_at = Some(due_at);
            self.agenda.schedule(due_at, EventKind::FlushDue { writer: self.writer.id });
        }
    }

    pub(super) fn flush_due(&mut self, writer: Incarnation) {
        if writer != self.writer.id {
            return;
        }
        if self.writer.flush_at == Some(self.now) {
            self.writer.flush_at = None;
        }
        self.try_flush();
    }

    pub(super) fn commit_done(&mut self, writer: Incarnation, slot: u32) {
        if writer != self.writer.id {
            return;
        }
        let Some(batch) = self.writer.in_flight.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let done = self.faults.store_work_done(batch.attempt_started, batch.work_us);
        if !batch.timed_out && done > self.now {
            // The database came back but works through what a stall left it first (see
            // `stall_ends`), then does the commit: it is done then, or the timeout cuts it
            // short before.
            let timeout_at = batch.attempt_started + self.settings.store_timeout_us;
            batch.timed_out = done > timeout_at;
            batch.latency_us = done.min(timeout_at) - batch.attempt_started;
            let writer = self.writer.id;
            let at = done.min(timeout_at);
            return self.agenda.schedule(at, EventKind::CommitDone { writer, batch: slot });
        }
        if batch.timed_out {
            return self.attempt_timed_out(slot);
        }
        let batch = self.writer.unpark(slot).expect("the batch was just seen in flight");
        self.store_worked();
        self.metrics.record_transaction(self.now, batch.effects as u64, batch.latency_us);
        let committed = &mut self.writer.committed;
        let position = committed.partition_point(|earlier| earlier.first_submission < batch.first_submission);
        committed.insert(position, batch);
        self.advance_durable_prefix();
        self.release_durable();
        self.try_flush();
    }

    /// The attempt was cut short and rolled back: tried again after a pause, unless the
    /// attempts are used up; then the batch fails.
    fn attempt_timed_out(&mut self, slot: u32) {
        self.store_failed();
        if let Some(batch) = self.writer.in_flight[slot as usize].as_ref() {
            self.store_call_cut(batch.attempt_started);
        }
        let connections = self.scenario.system.database_connections;
        self.health.writer_connections_lost = (self.health.writer_connections_lost + 1).min(connections);
        let config = self.settings.write_behind;
        let attempts = self.writer.in_flight[slot as usize].as_ref().map_or(0, |batch| batch.attempts);
        if attempts < config.commit_attempts_max {
            let pause_ms = config.retry_backoff_ms.saturating_mul(4u64.saturating_pow(attempts - 1));
            let writer = self.writer.id;
            return self
                .schedule_in(pause_ms * MICROS_PER_MILLI, EventKind::CommitRetry { writer, batch: slot });
        }
        self.writer.unpark(slot);
        self.batch_failed();
        self.roll_back();
    }

    pub(super) fn commit_retry(&mut self, writer: Incarnation, slot: u32) {
        if writer == self.writer.id && self.writer.in_flight.get(slot as usize).is_some_and(Option::is_some) {
            self.start_attempt(slot);
        }
    }

    /// Applies committed batches to the store view in submission order, as far as there is
    /// no gap, and tells promoted registrants.
    fn advance_durable_prefix(&mut self) {
        while self
            .writer
            .committed
            .front()
            .is_some_and(|first| first.first_submission == self.writer.durable_below)
        {
            let batch = self.writer.committed.pop_front().expect("the loop condition just saw it");
            self.writer.durable_below = batch.last_submission + 1;
            // The batch's effects are the first of the queue: every earlier batch is durable and
            // gone from it. The queue is taken out while the store applies them (which touches
            // no writer) and put back without them.
            let mut queued = take(&mut self.writer.queued);
            self.commit_to_store(batch.epoch, queued.range(..batch.effects));
            queued.drain(..batch.effects);
            self.writer.queued = queued;
            self.writer.batched -= batch.effects;
        }
    }

    /// The store's side of a committed batch: fenced when its epoch is stale (unless the test
    /// switch turned fencing off), else applied to the store view.
    pub(super) fn commit_to_store<'e>(&mut self, epoch: u64, effects: impl IntoIterator<Item = &'e Effect>) {
        if epoch < self.cluster.store_epoch && !self.break_fencing {
            self.fenced_batches += 1;
            return;
        }
        for effect in effects {
            self.count_effect(effect);
            if let Some(promotion) = self.store.apply(effect) {
                self.announce_promotion(promotion);
            }
        }
    }
}
