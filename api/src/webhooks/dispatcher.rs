//! Sends the message rows the fan-out wrote: claims due ones (`SqlStore::claim_webhook_messages`),
//! sends each as its own task, at most `endpoint_concurrency_max` at once per endpoint and
//! `IN_FLIGHT_MAX` in all on this node, and settles each as soon as it ends: delivered, retried
//! after the schedule's next pause (or the receiver's `Retry-After`, whichever is later), dead
//! when the schedule is over, or its endpoint disabled on a 410. Also keeps the delivery
//! metrics and purges succeeded messages past their retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuota_engine::{Clock, Timestamp};
use kuota_persist::store::{ClaimedMessage, MessageSettlement, SqlStore};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics;
use crate::webhooks::retry::{RetrySchedule, random_jitter};
use crate::webhooks::sender::{Answer, Sender};

/// Attempts in flight on one node, over all endpoints.
pub const IN_FLIGHT_MAX: usize = 256;

/// Attempts in flight to one endpoint from one node: enough for a receiver that answers in
/// 100 ms to take 80 messages a second from each node, few enough not to flood it with a backlog.
pub const ENDPOINT_IN_FLIGHT_MAX: usize = 8;

/// Settlements running at once on one node: each holds one of the store's connections, which
/// the registrations' writer and the API's reads share (`MYSQL_CONNECTIONS_MAX`, 8), so
/// attempts that end together queue here rather than for a connection.
const SETTLEMENTS_IN_FLIGHT_MAX: usize = 2;

/// Pause after a round that found nothing due, unless the fan-out wakes the dispatcher, in ms.
const POLL_INTERVAL_MS: u64 = 250;

/// An endpoint whose attempts have all failed for this long is disabled (the contract's 5 days).
pub const FAILING_DISABLE_AFTER_SECONDS: u64 = 5 * 24 * 3_600;

/// How often succeeded messages past their retention are purged, in seconds.
const PURGE_INTERVAL_SECONDS: u64 = 600;

/// How long succeeded messages are kept (for the endpoint's counts), in seconds.
pub const SUCCEEDED_RETENTION_SECONDS: u64 = 7 * 24 * 3_600;

/// Due messages one claim looks at.
const ROUND_MESSAGES_MAX: u32 = 200;

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
}

/// A running dispatcher; `stop` ends it once its attempts in flight ended.
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What every attempt's task shares.
struct Shared {
    store: SqlStore,
    sender: Sender,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    /// Attempts in flight per endpoint id.
    in_flight: Mutex<HashMap<String, usize>>,
    /// See `SETTLEMENTS_IN_FLIGHT_MAX`.
    settlements: Semaphore,
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
            in_flight: Mutex::new(HashMap::new()),
            settlements: Semaphore::new(SETTLEMENTS_IN_FLIGHT_MAX),
        });
        let task = tokio::spawn(async move {
            let mut attempts = JoinSet::new();
            let mut next_sample = Instant::now();
            let mut next_purge = Instant::now() + shared.config.purge_interval;
            while !*stopped.borrow() {
                while attempts.try_join_next().is_some() {}
                if let Err(error) = claim_and_send(&shared, &mut attempts).await {
                    tracing::warn!(%error, "webhook claim failed; trying again after the poll interval");
                }
                if Instant::now() >= next_sample {
                    next_sample = Instant::now() + BACKLOG_SAMPLE_INTERVAL;
                    sample_backlog(&shared).await;
                }
                if Instant::now() >= next_purge {
                    next_purge = Instant::now() + shared.config.purge_interval;
                    purge(&shared).await;
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = written.notified() => {}
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
                    Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                }
            }
            // Attempts in flight end within their timeout; their claims keep others off them.
            let drained = tokio::time::timeout(shared.config.attempt_timeout + CLAIM_MARGIN, async {
                while attempts.join_next().await.is_some() {}
            });
            if drained.await.is_err() {
                attempts.shutdown().await;
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

fn lock(in_flight: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // Never held across an await; a poisoned lock only means a panic between two map updates.
    in_flight.lock().unwrap_or_else(|error| error.into_inner())
}

/// Claims what this node has room for and starts an attempt for each.
async fn claim_and_send(
    shared: &Arc<Shared>,
    attempts: &mut JoinSet<()>,
) -> Result<(), kuota_persist::store::PersistError> {
    let room = IN_FLIGHT_MAX.saturating_sub(attempts.len());
    if room == 0 {
        return Ok(());
    }
    let now = shared.clock.now();
    let until = now.plus_millis((shared.config.attempt_timeout + CLAIM_MARGIN).as_millis() as u64);
    let mut planned = lock(&shared.in_flight).clone();
    let mut admitted = 0;
    let per_endpoint = shared.config.endpoint_concurrency_max;
    let claim = shared
        .store
        .claim_webhook_messages(now, until, ROUND_MESSAGES_MAX, |endpoint| {
            let count = planned.entry(endpoint.to_owned()).or_default();
            if admitted >= room || *count >= per_endpoint {
                return false;
            }
            *count += 1;
            admitted += 1;
            true
        })
        .await?;
    let token: Arc<str> = claim.token.into();
    for message in claim.messages {
        *lock(&shared.in_flight).entry(message.endpoint.id.clone()).or_default() += 1;
        let (shared, token) = (shared.clone(), token.clone());
        attempts.spawn(async move {
            attempt_and_settle(&shared, &message, (&token, claim.until)).await;
            let mut in_flight = lock(&shared.in_flight);
            if let Some(count) = in_flight.get_mut(&message.endpoint.id) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(&message.endpoint.id);
                }
            }
        });
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(message_id = %message.message_id, endpoint_id = %message.endpoint.id))]
async fn attempt_and_settle(shared: &Shared, message: &ClaimedMessage, claim: (&str, Timestamp)) {
    let now = shared.clock.now();
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
    // The semaphore is never closed.
    let _permit = shared.settlements.acquire().await.expect("the settlement semaphore is open");
    let settled_at = shared.clock.now();
    let failing_disable_before = Timestamp::from_millis(
        settled_at.as_millis().saturating_sub(shared.config.failing_disable_after.as_millis() as u64),
    );
    let outcome = match shared
        .store
        .settle_webhook_message(claim, message, &settlement, settled_at, failing_disable_before)
        .await
    {
        Ok(true) => outcome,
        // The claim ran out (the store stalled longer than the margin): another node owns the
        // message now and sends it again.
        Ok(false) => "claim_lost",
        Err(error) => {
            tracing::warn!(%error, "a webhook attempt could not be settled; it is sent again when its claim ends");
            "claim_lost"
        }
    };
    ::metrics::counter!(metrics::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
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
