//! The write-behind writer: submissions wait in a bounded queue until a batch is due (it is
//! full, or its oldest submission has waited the flush interval) and a connection is free;
//! each batch is one transaction whose latency is drawn. Batches on different connections may
//! commit out of order, but the store view and the answers advance only over the committed
//! prefix, in submission order: what the actor's in-order release does with a pipelined writer.

use std::collections::{BTreeMap, VecDeque};

use kuota_engine::Effect;

use super::Simulation;
use super::agenda::EventKind;
use crate::distribution::Micros;

#[derive(Debug)]
struct Submission {
    id: u64,
    enqueued_at: Micros,
    effects: Vec<Effect>,
}

#[derive(Debug)]
struct Batch {
    first_submission: u64,
    last_submission: u64,
    effects: Vec<Effect>,
    latency_us: Micros,
}

#[derive(Debug, Default)]
pub(super) struct Writer {
    queue: VecDeque<Submission>,
    queued_effects: usize,
    next_submission: u64,
    connections_busy: u32,
    in_flight: Vec<Option<Batch>>,
    free_slots: Vec<u32>,
    /// Committed batches not yet part of the durable prefix, by first submission.
    committed: BTreeMap<u64, Batch>,
    /// Every submission below this one is committed and applied to the store view.
    durable_below: u64,
    flush_at: Option<Micros>,
}

impl Writer {
    pub(super) fn is_full(&self, write_queue_max: u32) -> bool {
        self.queue.len() >= write_queue_max as usize
    }

    pub(super) fn durable_below(&self) -> u64 {
        self.durable_below
    }

    /// Takes the next batch from the head of the queue: whole submissions, up to
    /// `batch_size_max` effects (a larger single submission goes alone).
    fn take_batch(&mut self, batch_size_max: usize) -> Batch {
        let first = self.queue.front().expect("take_batch is only called with a waiting submission");
        let first_submission = first.id;
        let mut batch =
            Batch { first_submission, last_submission: first_submission, effects: Vec::new(), latency_us: 0 };
        while let Some(next) = self.queue.front() {
            if !batch.effects.is_empty() && batch.effects.len() + next.effects.len() > batch_size_max {
                break;
            }
            let submission = self.queue.pop_front().expect("the loop condition just saw the front");
            self.queued_effects -= submission.effects.len();
            batch.last_submission = submission.id;
            batch.effects.extend(submission.effects);
        }
        batch
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
}

impl Simulation<'_> {
    /// Queues a decision's effects; the actor reserved the room before deciding.
    pub(super) fn submit(&mut self, effects: Vec<Effect>) -> u64 {
        let writer = &mut self.writer;
        let id = writer.next_submission;
        writer.next_submission += 1;
        writer.queued_effects += effects.len();
        writer.queue.push_back(Submission { id, enqueued_at: self.now, effects });
        self.metrics.observe_write_queue(self.now, writer.queue.len() as u64);
        self.try_flush();
        id
    }

    /// Starts every batch that is due while connections are free; arms the flush timer for
    /// the oldest submission when its batch is not due yet.
    fn try_flush(&mut self) {
        let system = &self.scenario.system;
        let batch_size_max = system.batch_size_max as usize;
        while self.writer.connections_busy < system.database_connections {
            let Some(oldest) = self.writer.queue.front() else {
                return;
            };
            let due_at = oldest.enqueued_at + self.settings.flush_interval_us;
            if self.writer.queued_effects < batch_size_max && self.now < due_at {
                return self.arm_flush(due_at);
            }
            let mut batch = self.writer.take_batch(batch_size_max);
            let per_effect =
                (self.settings.commit_per_effect_us * batch.effects.len() as f64).round() as Micros;
            batch.latency_us = system.commit_latency.sample_micros(&mut self.system_rng) + per_effect;
            let latency = batch.latency_us;
            let slot = self.writer.park(batch);
            self.schedule_in(latency, EventKind::CommitDone { batch: slot });
        }
    }

    fn arm_flush(&mut self, due_at: Micros) {
        if self.writer.flush_at.is_none_or(|at| at > due_at || at < self.now) {
            self.writer.flush_at = Some(due_at);
            self.agenda.schedule(due_at, EventKind::FlushDue);
        }
    }

    pub(super) fn flush_due(&mut self) {
        if self.writer.flush_at == Some(self.now) {
            self.writer.flush_at = None;
        }
        self.try_flush();
    }

    pub(super) fn commit_done(&mut self, slot: u32) {
        let writer = &mut self.writer;
        let batch = writer.in_flight[slot as usize].take().expect("CommitDone names a batch in flight");
        writer.free_slots.push(slot);
        writer.connections_busy -= 1;
        self.metrics.record_transaction(self.now, batch.effects.len() as u64, batch.latency_us);
        self.writer.committed.insert(batch.first_submission, batch);
        self.advance_durable_prefix();
        self.release_durable();
        self.try_flush();
    }

    /// Applies committed batches to the store view in submission order, as far as there is
    /// no gap, and tells promoted registrants.
    fn advance_durable_prefix(&mut self) {
        while let Some(entry) = self.writer.committed.first_entry() {
            if *entry.key() != self.writer.durable_below {
                return;
            }
            let batch = entry.remove();
            for effect in &batch.effects {
                self.count_effect(effect);
                if let Some(promotion) = self.store.apply(effect) {
                    self.announce_promotion(promotion);
                }
            }
            self.writer.durable_below = batch.last_submission + 1;
        }
    }
}
