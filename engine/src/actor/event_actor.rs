//! `EventActor`: owns one `EventQuota`, applies commands to it, sends the effects to the
//! writer and answers each caller only once its effects are durable. When the store fails a
//! submission, every decision not yet answered is rolled back by reloading the event from the
//! store (the committed truth), and those callers get an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tokio::sync::oneshot;

use crate::actor::messages::{
    ActorError, CancelMessage, ConfirmMessage, DrawMessage, JoinQueueMessage, RegisterMessage, Reply,
    SetCapacityMessage, StatusMessage, StopMessage, TicketMessage,
};
use crate::clock::{Clock, Timestamp};
use crate::command::{Command, Register};
use crate::counters::{PublishedCounters, TicketChanges};
use crate::effect::Effect;
use crate::ids::{EventId, Seq};
use crate::limits::{HOLD_EXPIRY_TICK_MS, PENDING_DECISIONS_MAX};
use crate::outcome::Outcome;
use crate::ownership::Tenure;
use crate::quota::EventQuota;
use crate::store::{EventLoader, StoreError, Submission, SubmissionSender};

/// Wait between two attempts to reload an event after a store failure.
pub const RELOAD_RETRY_DELAY_MS: u64 = 200;

/// What an event actor shares with every thread: its published counters and mailbox depth.
#[derive(Debug)]
pub struct EventShared {
    pub published: PublishedCounters,
    /// Messages sent and not yet handled; bounded by `MAILBOX_CAPACITY_MAX` at the sender.
    pub mailbox_depth: AtomicUsize,
}

#[derive(Debug)]
enum PendingState {
    InFlight,
    Durable,
    Failed(StoreError),
}

/// A decision taken and not yet answered.
#[derive(Debug)]
struct PendingDecision {
    submission: Option<u64>,
    state: PendingState,
    last_seq: Seq,
    outcome: Outcome,
    at: Timestamp,
    reply: Option<Reply>,
}

/// Everything an event actor is started with.
#[derive(Debug)]
pub struct EventActorParts {
    pub quota: EventQuota,
    pub epoch: u64,
    pub shared: Arc<EventShared>,
    pub submissions: SubmissionSender,
    pub loader: Arc<dyn EventLoader>,
    pub clock: Arc<dyn Clock>,
    /// The ownership the actor runs under; it steps down when that ends.
    pub tenure: Tenure,
}

#[derive(Debug)]
pub struct EventActor {
    event: EventId,
    quota: EventQuota,
    epoch: u64,
    shared: Arc<EventShared>,
    submissions: SubmissionSender,
    loader: Arc<dyn EventLoader>,
    clock: Arc<dyn Clock>,
    tenure: Tenure,
    pending: VecDeque<PendingDecision>,
    /// Effects of this mailbox burst, not yet sent; see `open_outbox`.
    outbox: Option<Outbox>,
    next_submission: u64,
    recovering: bool,
}

/// Effects gathered for one submission, with the writer's queue slot reserved for it.
#[derive(Debug)]
struct Outbox {
    permit: tokio::sync::mpsc::OwnedPermit<Submission>,
    effects: Vec<Effect>,
    submission: u64,
}

fn answer(reply: Option<Reply>, result: Result<(Outcome, Timestamp), ActorError>) {
    if let Some(reply) = reply {
        // The caller may have given up (a closed connection); nobody is left to tell.
        let _ = reply.send(result);
    }
}

impl EventActor {
    pub fn new(parts: EventActorParts) -> Self {
        parts.shared.published.publish(&parts.quota);
        if parts.quota.config().queue.is_some() {
            parts.shared.published.publish_queue(&parts.quota, parts.clock.now());
            parts.shared.published.publish_tickets(&parts.quota, TicketChanges::All);
        }
        parts.shared.published.note_decided_keys(&parts.quota);
        EventActor {
            event: parts.quota.config().id.clone(),
            quota: parts.quota,
            epoch: parts.epoch,
            shared: parts.shared,
            submissions: parts.submissions,
            loader: parts.loader,
            clock: parts.clock,
            tenure: parts.tenure,
            pending: VecDeque::new(),
            outbox: None,
            next_submission: 0,
            recovering: false,
        }
    }

    /// Applies one command and adds its effects to the outbox; the caller is answered in
    /// `release_settled`, once the outbox's submission is committed.
    fn decide(&mut self, command: Command, reply: Option<Reply>, context: &mut Context<Self>) {
        if self.recovering {
            return answer(reply, Err(ActorError::Recovering));
        }
        if !self.tenure.is_held() {
            // Checked against the clock before every decision, so that a renewal task running
            // late cannot stretch ownership past the lease's safety margin.
            tracing::warn!(event_id = %self.event, "ownership lapsed; stepping down");
            answer(reply, Err(ActorError::Stopped));
            return context.stop();
        }
        if self.pending.len() >= PENDING_DECISIONS_MAX {
            return answer(reply, Err(ActorError::Overloaded));
        }
        // Reserve the writer's queue slot before deciding: a decision whose effects could not be
        // sent would have to be undone.
        if self.outbox.is_none() && !self.open_outbox(context) {
            return answer(reply, Err(ActorError::Overloaded));
        }
        if let Command::Register(Register { idempotency: Some(idempotency), .. }) = &command {
            // Before the decision, so that no reader can see it decided yet not noted.
            self.shared.published.note_idempotency_key(&idempotency.key);
        }
        let at = self.clock.now();
        let (outcome, effects) = self.quota.apply(&command, at);
        self.shared.published.publish(&self.quota);
        self.shared.published.publish_queue(&self.quota, at);
        self.shared.published.publish_tickets(&self.quota, TicketChanges::Effects(&effects));
        let last_seq = self.quota.last_seq();
        if effects.is_empty() {
            if self.pending.is_empty() {
                return answer(reply, Ok((outcome, at)));
            }
            // Decided on top of decisions not yet durable: answer in order, after them.
            let state = PendingState::Durable;
            self.pending.push_back(PendingDecision { submission: None, state, last_seq, outcome, at, reply });
            return;
        }
        // `open_outbox` above made sure there is one.
        let outbox = self.outbox.as_mut().expect("an open outbox");
        outbox.effects.extend(effects);
        let submission = Some(outbox.submission);
        let state = PendingState::InFlight;
        self.pending.push_back(PendingDecision { submission, state, last_seq, outcome, at, reply });
    }

    /// Reserves a slot in the writer's queue for the decisions of this mailbox burst, and
    /// schedules the flush: actix polls spawned futures after it has drained the mailbox, so
    /// every decision taken until then shares one submission (one commit round trip, one
    /// completion) instead of one each.
    fn open_outbox(&mut self, context: &mut Context<Self>) -> bool {
        let Ok(permit) = self.submissions.clone().try_reserve_owned() else {
            return false;
        };
        let submission = self.next_submission;
        self.next_submission += 1;
        self.outbox = Some(Outbox { permit, effects: Vec::new(), submission });
        context.spawn(actix::fut::ready(()).map(|(), actor: &mut Self, context| actor.flush(context)));
        true
    }

    /// Sends the outbox's effects as one submission and waits for its completion.
    fn flush(&mut self, context: &mut Context<Self>) {
        let Some(outbox) = self.outbox.take() else { return };
        if outbox.effects.is_empty() {
            return; // Dropping the permit frees the slot.
        }
        let (done, committed) = oneshot::channel();
        let effects = outbox.effects;
        outbox.permit.send(Submission { event: self.event.clone(), epoch: self.epoch, effects, done });
        let submission = outbox.submission;
        let settled = committed.into_actor(self).map(move |result, actor, context| {
            let result = result.unwrap_or_else(|_| Err(StoreError::Unavailable("the writer stopped".into())));
            actor.settle(submission, result, context);
        });
        context.spawn(settled);
    }

    fn settle(&mut self, submission: u64, result: Result<(), StoreError>, context: &mut Context<Self>) {
        // After a rollback the entries are gone: their callers were answered already.
        for entry in self.pending.iter_mut().filter(|entry| entry.submission == Some(submission)) {
            entry.state = match &result {
                Ok(()) => PendingState::Durable,
                Err(error) => PendingState::Failed(error.clone()),
            };
        }
        self.release_settled(context);
    }

    /// Answers durable decisions from the front, in order; rolls back at the first failure.
    fn release_settled(&mut self, context: &mut Context<Self>) {
        while let Some(front) = self.pending.front() {
            match &front.state {
                PendingState::InFlight => return,
                PendingState::Failed(error) => {
                    let error = error.clone();
                    return self.roll_back(error, context);
                }
                PendingState::Durable => {
                    // The loop condition just saw the front entry.
                    let entry = self.pending.pop_front().unwrap();
                    self.quota.mark_durable(entry.last_seq);
                    answer(entry.reply, Ok((entry.outcome, entry.at)));
                }
            }
        }
    }

    /// Fails every unanswered decision and reloads the event: the store holds exactly what
    /// was committed, so the reloaded quota is the state with those decisions undone.
    fn roll_back(&mut self, error: StoreError, context: &mut Context<Self>) {
        tracing::warn!(event_id = %self.event, %error, pending = self.pending.len(), "store failed a write; rolling back");
        for entry in self.pending.drain(..) {
            answer(entry.reply, Err(ActorError::StoreFailed(error.clone())));
        }
        // Its effects belong to decisions just failed.
        self.outbox = None;
        if error == StoreError::Fenced {
            // Another node owns the event now. Reloading would take it back; step down instead.
            return context.stop();
        }
        self.recovering = true;
        self.reload(context);
    }

    fn reload(&mut self, context: &mut Context<Self>) {
        let loader = self.loader.clone();
        let event = self.event.clone();
        let loading = async move { loader.load(&event).await }.into_actor(self).map(|result, actor, context| {
            match result {
                Ok(Some(loaded)) => {
                    actor.quota = loaded.quota;
                    actor.epoch = loaded.epoch;
                    actor.recovering = false;
                    actor.shared.published.publish(&actor.quota);
                    if actor.quota.config().queue.is_some() {
                        actor.shared.published.publish_queue(&actor.quota, actor.clock.now());
                        // A rolled-back decision may have moved tickets the store never saw.
                        actor.shared.published.publish_tickets(&actor.quota, TicketChanges::All);
                    }
                    actor.shared.published.note_decided_keys(&actor.quota);
                    tracing::info!(event_id = %actor.event, epoch = actor.epoch, "event reloaded after a store failure");
                }
                Ok(None) => context.stop(),
                Err(error) => {
                    tracing::warn!(event_id = %actor.event, %error, "reloading the event failed; retrying");
                    context.run_later(Duration::from_millis(RELOAD_RETRY_DELAY_MS), |actor, context| {
                        actor.reload(context)
                    });
                }
            }
        });
        context.spawn(loading);
    }

    fn message_received(&self) {
        self.shared.mailbox_depth.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Actor for EventActor {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        if let Some(lost) = self.tenure.take_lost() {
            context.spawn(lost.into_actor(self).map(|(), actor, context| {
                tracing::warn!(event_id = %actor.event, "ownership lost; stepping down");
                context.stop();
            }));
        }
        context.run_interval(Duration::from_millis(HOLD_EXPIRY_TICK_MS), |actor, context| {
            let queued = actor.quota.config().queue.is_some();
            // The clock is read only when something may be due: most events have no queue, and
            // their ticks stay as cheap as a hold lookup.
            if !queued && actor.quota.next_hold_expiry().is_none() {
                return;
            }
            let now = actor.clock.now();
            let due = actor.quota.next_hold_expiry().is_some_and(|expiry| expiry <= now)
                || actor.quota.queue_work_due(now);
            if queued {
                // The admission rate slides with time even when nothing is decided.
                actor.shared.published.publish_queue(&actor.quota, now);
            }
            if due && !actor.recovering {
                actor.decide(Command::ExpireHolds, None, context);
            }
        });
    }

    fn stopped(&mut self, _context: &mut Self::Context) {
        for entry in self.pending.drain(..) {
            answer(entry.reply, Err(ActorError::Stopped));
        }
    }
}

impl Handler<RegisterMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: RegisterMessage, context: &mut Self::Context) {
        self.message_received();
        self.decide(Command::Register(message.request), Some(message.reply), context);
    }
}

impl Handler<ConfirmMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: ConfirmMessage, context: &mut Self::Context) {
        self.message_received();
        let command = Command::Confirm { registration: message.registration };
        self.decide(command, Some(message.reply), context);
    }
}

impl Handler<CancelMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: CancelMessage, context: &mut Self::Context) {
        self.message_received();
        let command = Command::Cancel { registration: message.registration };
        self.decide(command, Some(message.reply), context);
    }
}

impl Handler<SetCapacityMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: SetCapacityMessage, context: &mut Self::Context) {
        self.message_received();
        let command = Command::SetCapacity { category: message.category, capacity: message.capacity };
        self.decide(command, Some(message.reply), context);
    }
}

impl Handler<JoinQueueMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: JoinQueueMessage, context: &mut Self::Context) {
        self.message_received();
        if let Some(idempotency) = &message.request.idempotency {
            // As for registrations: noted before the decision.
            self.shared.published.note_idempotency_key(&idempotency.key);
        }
        self.decide(Command::JoinQueue(message.request), Some(message.reply), context);
    }
}

impl Handler<TicketMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: TicketMessage, _context: &mut Self::Context) {
        self.message_received();
        // The caller may have given up; nobody is left to tell.
        let _ = message.reply.send(self.quota.ticket_view(message.ticket, self.clock.now()));
    }
}

impl Handler<DrawMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: DrawMessage, _context: &mut Self::Context) {
        self.message_received();
        // The caller may have given up; nobody is left to tell.
        let _ = message.reply.send(self.quota.drawn_lobby());
    }
}

impl Handler<StatusMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, message: StatusMessage, _context: &mut Self::Context) {
        self.message_received();
        // The caller may have given up; nobody is left to tell.
        let _ = message.reply.send(self.quota.status_of(message.registration));
    }
}

impl Handler<StopMessage> for EventActor {
    type Result = ();

    fn handle(&mut self, _message: StopMessage, context: &mut Self::Context) {
        context.stop();
    }
}
