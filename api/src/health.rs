//! Whether the store and Redis answer, found out in the background so that `/readyz` reads it
//! at once: a probe on the request path would wait for the very part that does not answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kuota_persist::redis_connection;
use kuota_persist::store::SqlStore;
use tokio::task::JoinHandle;

/// How often the store and Redis are probed, in milliseconds: `/readyz` sees a part come and
/// go within this (plus the probe's own timeout when it does not answer).
pub const HEALTH_PROBE_INTERVAL_MS: u64 = 250;

/// What the latest probes found; the probing task stops when this is dropped.
#[derive(Debug)]
pub struct Health {
    answers: Arc<Answers>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Answers {
    store: AtomicBool,
    /// True without Redis: nothing to fail.
    redis: AtomicBool,
}

impl Health {
    /// Probes `store` (and `redis`, when given) every `HEALTH_PROBE_INTERVAL_MS`, on the current
    /// tokio runtime: the store's ping is bounded by its own call timeout, and Redis's by
    /// `redis_timeout`. Both count as answering until a
    /// probe says otherwise: the store and Redis answered at startup.
    pub fn monitor(
        store: SqlStore,
        redis: Option<redis::aio::ConnectionManager>,
        redis_timeout: Duration,
    ) -> Health {
        let answers = Arc::new(Answers { store: AtomicBool::new(true), redis: AtomicBool::new(true) });
        let probed = answers.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(HEALTH_PROBE_INTERVAL_MS));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                probed.store.store(store.ping().await.is_ok(), Ordering::Relaxed);
                if let Some(redis) = &redis {
                    let mut connection = redis.clone();
                    let command = redis::cmd("PING");
                    let ping = command.query_async::<String>(&mut connection);
                    let redis_answers = redis_connection::bounded(redis_timeout, ping).await.is_ok();
                    probed.redis.store(redis_answers, Ordering::Relaxed);
                }
            }
        });
        Health { answers, task }
    }

    /// The store answered its latest probe.
    pub fn store_answers(&self) -> bool {
        self.answers.store.load(Ordering::Relaxed)
    }

    /// Redis answered its latest probe (true without Redis).
    pub fn redis_answers(&self) -> bool {
        self.answers.redis.load(Ordering::Relaxed)
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.task.abort();
    }
}
