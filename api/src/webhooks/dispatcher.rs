//! Sends the message rows the fan-out wrote: claims due ones (`SqlStore::claim_webhook_messages`),
//! sends each as its own task, at most `endpoint_concurrency_max` at once per endpoint, and
//! settles them in batches: delivered, retried after the schedule's next pause (or the
//! receiver's `Retry-After`, whichever is later), dead when the schedule is over, or its
//! endpoint disabled on a 410. Also keeps the delivery metrics and purges succeeded messages
//! past their retention.
//!
//! # Throughput
//! One claim takes up to `ENDPOINT_HELD_PER_SLOT` messages per send slot of an endpoint, and
//! they wait on this node for a slot: a claim (three statements) feeds several attempts, instead
//! of one claim per ended attempt. The claim lasts for that wait (one attempt timeout) as well
//! as for the attempt and its settlement; a message whose claim has become too short for an
//! attempt and its settlement is left unsent (`unsent`), and whoever claims it after its claim
//! ran out sends it. Ended attempts are settled by one task, many per transaction
//! (`SETTLE_BATCH_MAX`): one commit for a batch instead of one per attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuota_engine::{Clock, Timestamp};
use kuota_persist::store::{ClaimedMessage, MessageSettlement, SettledAttempt, SqlStore};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics;
use crate::webhooks::retry::{RetrySchedule, random_jitter};
use crate::webhooks::sender::{Answer, Sender};

/// Messages one node holds at once (claimed and not yet settled), over all endpoints.
pub const IN_FLIGHT_MAX: usize = 256;

/// Attempts in flight to one endpoint from one node: enough for a receiver that answers in
/// 100 ms to take 80 messages a second from each node, few enough not to flood it with a backlog.
pub const ENDPOINT_IN_FLIGHT_MAX: usize = 8;

/// Messages one node holds for one endpoint, per send slot: one claim feeds a slot this many
/// attempts (see the module documentation).
pub const ENDPOINT_HELD_PER_SLOT: usize = 4;

/// Ended attempts settled in one transaction, at most.
pub const SETTLE_BATCH_MAX: usize = 128;

/// Pause after a round that found nothing due, unless the fan-out wakes the dispatcher, in ms.
const POLL_INTERVAL_MS: u64 = 250;

/// An endpoint whose attempts have all failed for this long is disabled (the contract's 5 days).
pub const FAILING_DISABLE_AFTER_SECONDS: u64 = 5 * 24 * 3_600;

/// How often succeeded messages past their retention are purged, in seconds.
const PURGE_INTERVAL_SECONDS: u64 = 600;

/// How long succeeded messages are kept (for the endpoint's counts), in seconds.
pub const SUCCEEDED_RETENTION_SECONDS: u64 = 7 * 24 * 3_600;

/// Due messages one claim looks at.
pub const ROUND_MESSAGES_MAX: u32 = 200;

/// Added to an attempt's timeout for its claim, so that no other node takes the message while
/// this one may still send or settle it.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// How often the backlog metrics are read from the store.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Chunks (of 1,000 messages) one purge deletes at most.
const PURGE_CHUNKS_MAX: u32 = 100;

#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    pub retry_schedule: RetrySchedule,
    /// One attempt's deadline (the contract's 15 s).
    pub attempt_timeout: Duration,
    /// Attempts in flight at once to one endpoint, from this node.
    pub endpoint_concurrency_max: usize,
    /// Pause after a round that found nothing due, unless the fan-out wakes the dispatcher.
    pub poll_interval: Duration,
    /// An endpoint whose failures began this long ago is disabled (`failing`).
    pub failing_disable_after: Duration,
    pub purge_interval: Duration,
    /// Succeeded messages are kept this long (for the endpoint's counts), then purged.
    pub succeeded_retention: Duration,
}

impl DispatcherConfig {
    pub fn new(retry_schedule: RetrySchedule, attempt_timeout: Duration) -> DispatcherConfig {
        DispatcherConfig {
            retry_schedule,
            attempt_timeout,
            endpoint_concurrency_max: ENDPOINT_IN_FLIGHT_MAX,
            poll_interval: Duration::from_millis(POLL_INTERVAL_MS),
            failing_disable_after: Duration::from_secs(FAILING_DISABLE_AFTER_SECONDS),
            purge_interval: Duration::from_secs(PURGE_INTERVAL_SECONDS),
            succeeded_retention: Duration::from_secs(SUCCEEDED_RETENTION_SECONDS),
        }
    }

    /// Messages this node holds for one endpoint at once.
    fn endpoint_held_max(&self) -> usize {
        self.endpoint_concurrency_max * ENDPOINT_HELD_PER_SLOT
    }

    /// How long a claim lasts: the wait for a send slot (one attempt's timeout at most), the
    /// attempt, and the margin for its settlement.
    fn claim_length(&self) -> Duration {
        self.attempt_timeout * 2 + CLAIM_MARGIN
    }
}

/// A running dispatcher; `stop` ends it once its attempts in flight ended.
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The messages this node holds for one endpoint, and its send slots.
struct Held {
    messages: usize,
    slots: Arc<Semaphore>,
}

/// What every attempt's task shares.
struct Shared {
    store: SqlStore,
    sender: Sender,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    /// Per endpoint id, while this node holds messages for it.
    held: Mutex<HashMap<String, Held>>,
    /// Wakes the claiming loop when settled messages made room.
    room: Notify,
}

/// An ended attempt on its way to the settling task.
struct Ended {
    message: ClaimedMessage,
    token: Arc<str>,
    until: Timestamp,
    settlement: MessageSettlement,
    outcome: &'static str,
}

impl Dispatcher {
    /// Starts the dispatcher as a task of the current tokio runtime; `written` wakes it.
    pub fn start(
        store: SqlStore,
        sender: Sender,
        clock: Arc<dyn Clock>,
        config: DispatcherConfig,
        written: Arc<Notify>,
    ) -> Dispatcher {
        let (stop, mut stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            sender,
            clock,
            config,
            held: Mutex::new(HashMap::new()),
            room: Notify::new(),
        });
        let task = tokio::spawn(async move {
            // Bounded by what a node holds: every held message sends one `Ended` at most.
            let (ended, to_settle) = mpsc::channel(IN_FLIGHT_MAX);
            let settling = tokio::spawn(settle_ended(shared.clone(), to_settle));
            let mut attempts = JoinSet::new();
            let mut next_sample = Instant::now();
            let mut next_purge = Instant::now() + shared.config.purge_interval;
            while !*stopped.borrow() {
                while attempts.try_join_next().is_some() {}
                let more_due = match claim_and_send(&shared, &mut attempts, &ended).await {
                    Ok(more_due) => more_due,
                    Err(error) => {
                        tracing::warn!(error = %error.chain(), "webhook claim failed; trying again after the poll interval");
                        false
                    }
                };
                if Instant::now() >= next_sample {
                    next_sample = Instant::now() + BACKLOG_SAMPLE_INTERVAL;
                    sample_backlog(&shared).await;
                }
                if Instant::now() >= next_purge {
                    next_purge = Instant::now() + shared.config.purge_interval;
                    purge(&shared).await;
                }
                let poll = tokio::time::sleep(shared.config.poll_interval);
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        () = written.notified() => break,
                        () = &mut poll => break,
                        // Room again, and messages were left due for the want of it.
                        () = shared.room.notified(), if more_due => break,
                        Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                    }
                }
            }
            // Attempts in flight end within their claims; their claims keep others off them.
            let drained = tokio::time::timeout(shared.config.claim_length(), async {
                while attempts.join_next().await.is_some() {}
            });
            if drained.await.is_err() {
                attempts.shutdown().await;
            }
            // The settling task ends once it settled what the attempts sent it.
            drop(ended);
            if let Err(error) = settling.await
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        });
        Dispatcher { stop, task }
    }

    /// Stops claiming, and waits for the attempts in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

fn lock(held: &Mutex<HashMap<String, Held>>) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
    // Never held across an await; a poisoned lock only means a panic between two map updates.
    held.lock().unwrap_or_else(|error| error.into_inner())
}

/// Lets go of `count` messages held for `endpoint`, and wakes the claiming loop.
fn release(shared: &Shared, endpoint: &str, count: usize) {
    let mut held = lock(&shared.held);
    if let Some(entry) = held.get_mut(endpoint) {
        entry.messages = entry.messages.saturating_sub(count);
        if entry.messages == 0 {
            held.remove(endpoint);
        }
    }
    drop(held);
    shared.room.notify_one();
}

/// Claims what this node has room for and starts an attempt for each. Returns whether due
/// messages were left for the want of room (or the claim's limit).
async fn claim_and_send(
    shared: &Arc<Shared>,
    attempts: &mut JoinSet<()>,
    ended: &mpsc::Sender<Ended>,
) -> Result<bool, kuota_persist::store::PersistError> {
    let mut planned: HashMap<String, usize> =
        lock(&shared.held).iter().map(|(endpoint, held)| (endpoint.clone(), held.messages)).collect();
    let held_total: usize = planned.values().sum();
    let room = IN_FLIGHT_MAX.saturating_sub(held_total);
    if room == 0 {
        return Ok(true);
    }
    let now = shared.clock.now();
    let until = now.plus_millis(shared.config.claim_length().as_millis() as u64);
    let (mut admitted, mut seen, mut refused) = (0, 0_u32, false);
    let per_endpoint = shared.config.endpoint_held_max();
    let claim = shared
        .store
        .claim_webhook_messages(now, until, ROUND_MESSAGES_MAX, |endpoint| {
            seen += 1;
            let count = planned.entry(endpoint.to_owned()).or_default();
            if admitted >= room || *count >= per_endpoint {
                refused = true;
                return false;
            }
            *count += 1;
            admitted += 1;
            true
        })
        .await?;
    let (token, until): (Arc<str>, Timestamp) = (claim.token.into(), claim.until);
    for message in claim.messages {
        let slots = {
            let mut held = lock(&shared.held);
            let entry = held.entry(message.endpoint.id.clone()).or_insert_with(|| Held {
                messages: 0,
                slots: Arc::new(Semaphore::new(shared.config.endpoint_concurrency_max)),
            });
            entry.messages += 1;
            entry.slots.clone()
        };
        let (shared, token, ended) = (shared.clone(), token.clone(), ended.clone());
        attempts.spawn(async move {
            // The semaphore is never closed.
            let slot = slots.acquire_owned().await.expect("an endpoint's send slots are open");
            let now = shared.clock.now();
            let needed = (shared.config.attempt_timeout + CLAIM_MARGIN).as_millis() as u64;
            if now.plus_millis(needed) > until {
                // Too late to send and settle within the claim: whoever claims the message once
                // the claim ran out sends it.
                drop(slot);
                ::metrics::counter!(metrics::WEBHOOK_DELIVERIES, "outcome" => "unsent").increment(1);
                release(&shared, &message.endpoint.id, 1);
                return;
            }
            let (settlement, outcome) = attempt(&shared, &message, now).await;
            drop(slot);
            let ended_attempt = Ended { message, token, until, settlement, outcome };
            if let Err(unsent) = ended.send(ended_attempt).await {
                // The settling task is gone (the dispatcher stops): the claim runs out instead.
                release(&shared, &unsent.0.message.endpoint.id, 1);
            }
        });
    }
    Ok(refused || seen >= ROUND_MESSAGES_MAX)
}

#[tracing::instrument(skip_all, fields(message_id = %message.message_id, endpoint_id = %message.endpoint.id))]
async fn attempt(
    shared: &Shared,
    message: &ClaimedMessage,
    now: Timestamp,
) -> (MessageSettlement, &'static str) {
    let started = Instant::now();
    let answer = shared.sender.attempt(message, now).await;
    ::metrics::histogram!(metrics::WEBHOOK_ATTEMPT_DURATION).record(started.elapsed().as_secs_f64());
    let (settlement, outcome) = settlement(&shared.config.retry_schedule, message.attempts + 1, answer, now);
    if let MessageSettlement::Retry { error, .. }
    | MessageSettlement::Dead { error }
    | MessageSettlement::Gone { error } = &settlement
    {
        tracing::info!(attempts = message.attempts + 1, %error, outcome, "webhook attempt failed");
    }
    (settlement, outcome)
}

/// Settles ended attempts as they come, up to `SETTLE_BATCH_MAX` per transaction, until the
/// dispatcher stops and every attempt sent what it had.
async fn settle_ended(shared: Arc<Shared>, mut to_settle: mpsc::Receiver<Ended>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH_MAX);
    while to_settle.recv_many(&mut batch, SETTLE_BATCH_MAX).await > 0 {
        let settled_at = shared.clock.now();
        let failing_disable_before = Timestamp::from_millis(
            settled_at.as_millis().saturating_sub(shared.config.failing_disable_after.as_millis() as u64),
        );
        let attempts: Vec<SettledAttempt<'_>> = batch
            .iter()
            .map(|ended| SettledAttempt {
                token: &ended.token,
                until: ended.until,
                message: &ended.message,
                settlement: &ended.settlement,
            })
            .collect();
        let settled = match shared
            .store
            .settle_webhook_messages(&attempts, settled_at, failing_disable_before)
            .await
        {
            Ok(settled) => settled,
            Err(error) => {
                tracing::warn!(error = %error.chain(), attempts = batch.len(), "webhook attempts could not be settled; they are sent again when their claims end");
                vec![false; batch.len()]
            }
        };
        drop(attempts);
        for (ended, settled) in batch.drain(..).zip(settled) {
            // `claim_lost`: the claim ran out (the store stalled longer than the margin), and
            // another node owns the message now and sends it again.
            let outcome = if settled { ended.outcome } else { "claim_lost" };
            ::metrics::counter!(metrics::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
            release(&shared, &ended.message.endpoint.id, 1);
        }
    }
}

/// What an answer means for the message, and the outcome label of the metrics.
pub fn settlement(
    schedule: &RetrySchedule,
    attempts: u32,
    answer: Answer,
    now: Timestamp,
) -> (MessageSettlement, &'static str) {
    match answer {
        Answer::Delivered => (MessageSettlement::Succeeded, "succeeded"),
        Answer::Gone => (MessageSettlement::Gone { error: "answered 410 Gone".into() }, "gone"),
        Answer::Failed { error, retry_after } => match schedule.delay_after(attempts, random_jitter()) {
            None => (MessageSettlement::Dead { error }, "dead"),
            Some(delay) => {
                // Never sooner than the receiver asked, nor than the schedule says.
                let delay = retry_after.map_or(delay, |asked| asked.max(delay));
                let retry_at = now.plus_millis(delay.as_millis() as u64);
                (MessageSettlement::Retry { retry_at, error }, "retried")
            }
        },
    }
}

async fn sample_backlog(shared: &Shared) {
    match shared.store.webhook_backlog().await {
        Ok(backlog) => {
            let now = shared.clock.now().as_millis();
            let age_ms =
                backlog.oldest_undelivered.map_or(0, |oldest| now.saturating_sub(oldest.as_millis()));
            ::metrics::gauge!(metrics::WEBHOOK_OLDEST_UNDELIVERED).set(age_ms as f64 / 1_000.0);
            ::metrics::gauge!(metrics::WEBHOOK_DEAD).set(backlog.dead as f64);
        }
        Err(error) => tracing::warn!(%error, "webhook backlog not read"),
    }
}

async fn purge(shared: &Shared) {
    let now = shared.clock.now().as_millis();
    let before =
        Timestamp::from_millis(now.saturating_sub(shared.config.succeeded_retention.as_millis() as u64));
    match shared.store.purge_webhook_messages(before, PURGE_CHUNKS_MAX).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged succeeded webhook messages past retention"),
        Err(error) => tracing::warn!(%error, "webhook purge failed; trying again at the next interval"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_retried_after_the_later_of_the_schedule_and_retry_after() {
        let schedule = RetrySchedule::parse("10,20").unwrap();
        let now = Timestamp::from_millis(1_000_000);
        let failed = |retry_after| Answer::Failed { error: "answered 503".into(), retry_after };
        let (first, outcome) = settlement(&schedule, 1, failed(Some(Duration::from_secs(60))), now);
        assert_eq!(outcome, "retried");
        assert_eq!(
            first,
            MessageSettlement::Retry { retry_at: now.plus_seconds(60), error: "answered 503".into() }
        );
        let (second, _) = settlement(&schedule, 2, failed(None), now);
        let MessageSettlement::Retry { retry_at, .. } = second else { panic!("{second:?}") };
        assert!((18_000..=22_000).contains(&(retry_at.as_millis() - now.as_millis())));
        assert_eq!(settlement(&schedule, 3, failed(None), now).1, "dead");
        assert_eq!(settlement(&schedule, 1, Answer::Gone, now).1, "gone");
    }
}
