//! One Redis connection per node, shared by leases, sessions and the shared rate limits, and the
//! bound on every command sent over it.
//!
//! No caller may wait on Redis longer than its command timeout: a frozen or unreachable Redis
//! must turn into a fast error (leases step down, sessions and rate limits fall back), never
//! into a hung request. The connection manager is configured for it (`connection_config`), but
//! its response timeout alone does not bound a command: one issued while the manager reconnects
//! first waits for the new connection, then for its reply. So each command is also wrapped in
//! `bounded`, whose timeout covers both.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take by default, in milliseconds (`KUOTA_REDIS_TIMEOUT_MS`).
pub const REDIS_COMMAND_TIMEOUT_DEFAULT_MS: u64 = 250;

/// Attempts a reconnection makes after the first before it reports failure. Commands issued
/// meanwhile wait for the reconnection, so it must stay short; the next command after a failed
/// reconnection starts another.
pub const REDIS_RECONNECT_RETRIES_MAX: usize = 1;

/// The shortest pause between two reconnection attempts, in milliseconds.
pub const REDIS_RECONNECT_DELAY_MIN_MS: u64 = 50;

/// The connection manager's settings for commands bounded by `command_timeout`: each reply and
/// each connection attempt within it, and reconnection retries few and short.
pub fn connection_config(command_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(command_timeout))
        .set_connection_timeout(Some(command_timeout))
        .set_number_of_retries(REDIS_RECONNECT_RETRIES_MAX)
        .set_min_delay(Duration::from_millis(REDIS_RECONNECT_DELAY_MIN_MS))
        .set_max_delay(command_timeout)
}

/// How long a node starting up waits for Redis to accept a first connection, in milliseconds:
/// Redis and the nodes are often started together.
pub const REDIS_STARTUP_WAIT_MS: u64 = 10_000;

/// The pause between two first connection attempts at startup, in milliseconds.
pub const REDIS_STARTUP_RETRY_DELAY_MS: u64 = 200;

/// Connects to `url` with `connection_config(command_timeout)`. A Redis that cannot be reached
/// yet is tried again for up to `REDIS_STARTUP_WAIT_MS`; other errors (a bad password, say)
/// fail at once.
pub async fn connect(url: &str, command_timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let give_up_at = tokio::time::Instant::now() + Duration::from_millis(REDIS_STARTUP_WAIT_MS);
    loop {
        let error = match ConnectionManager::new_with_config(
            client.clone(),
            connection_config(command_timeout),
        )
        .await
        {
            Ok(manager) => return Ok(manager),
            Err(error) => error,
        };
        let retry_at = tokio::time::Instant::now() + Duration::from_millis(REDIS_STARTUP_RETRY_DELAY_MS);
        let unreachable = error.is_io_error() || error.is_connection_refusal() || error.is_timeout();
        if !unreachable || retry_at >= give_up_at {
            return Err(error);
        }
        tracing::warn!(%error, "Redis does not answer yet; trying again");
        tokio::time::sleep_until(retry_at).await;
    }
}

/// Runs one Redis command, failing with a timeout error when it has not answered within
/// `command_timeout`. A command cut short may still take effect in Redis: callers treat the
/// error as an unknown outcome.
pub async fn bounded<T>(
    command_timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(command_timeout, command).await {
        Ok(answer) => answer,
        Err(_elapsed) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("Redis did not answer within {} ms", command_timeout.as_millis()),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_command_that_never_answers_ends_at_its_timeout() {
        let timeout = Duration::from_millis(REDIS_COMMAND_TIMEOUT_DEFAULT_MS);
        let started = Instant::now();
        let answer: redis::RedisResult<()> = bounded(timeout, std::future::pending()).await;
        assert_eq!(started.elapsed(), timeout);
        let failure = answer.unwrap_err();
        assert!(failure.is_timeout(), "{failure}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_answered_in_time_keeps_its_answer() {
        let timeout = Duration::from_millis(REDIS_COMMAND_TIMEOUT_DEFAULT_MS);
        let slow = async {
            tokio::time::sleep(timeout - Duration::from_millis(1)).await;
            Ok::<_, redis::RedisError>("OK")
        };
        assert_eq!(bounded(timeout, slow).await.unwrap(), "OK");
    }
}
