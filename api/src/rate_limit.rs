//! GCRA rate limits (the generic cell rate algorithm): per client IP and per registrant
//! e-mail on the registration route. Each key keeps one number, its theoretical arrival time.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kuota_persist::redis_connection::bounded;

/// Keys one limiter tracks. Past this, keys whose state has lapsed are dropped first; if the
/// table is still full, new keys are let through untracked (failing open keeps registrants in,
/// and the IP limit still bounds each client already tracked).
pub const RATE_LIMIT_KEYS_MAX: usize = 200_000;

/// A refusal: when to retry, and the header values that explain it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after_seconds: u64,
    pub policy: String,
    pub state: String,
}

#[derive(Debug)]
pub struct Gcra<K: Hash + Eq> {
    name: &'static str,
    /// Milliseconds between two requests at the sustained rate.
    emission_interval_ms: u64,
    /// How far ahead of now the theoretical arrival time may run: the burst.
    tolerance_ms: u64,
    burst: u32,
    window_seconds: u64,
    theoretical_arrival_ms: DashMap<K, u64>,
}

/// The same GCRA in Redis, so that a limit holds across nodes. Time is Redis's own (`TIME`),
/// so nodes with skewed clocks still agree. Returns 0 when allowed, else the wait in ms.
const GCRA_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local arrival = tonumber(redis.call('GET', KEYS[1]) or now)
if arrival < now then arrival = now end
local allowed_at = arrival - tolerance
if allowed_at > now then return allowed_at - now end
local next_arrival = arrival + emission
redis.call('SET', KEYS[1], next_arrival, 'PX', next_arrival - now + 1000)
return 0
";

/// How long shared checks are skipped after one failed, in milliseconds: while Redis is away,
/// every registration would otherwise wait a command timeout before the local fallback.
pub const SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS: u64 = 1_000;

/// A `Gcra` whose state lives in Redis under `prefix`.
#[derive(Debug)]
pub struct SharedGcra {
    script: redis::Script,
    prefix: String,
    /// A check fails once it has waited this long, and the caller limits locally instead.
    command_timeout: Duration,
    /// Checks fail at once, without asking Redis, until this instant (milliseconds after
    /// `created_at`): a check failed shortly before.
    paused_until_ms: AtomicU64,
    created_at: Instant,
}

impl SharedGcra {
    /// Checks bounded by `command_timeout` (`KUOTA_REDIS_TIMEOUT_MS`).
    pub fn new(prefix: &str, command_timeout: Duration) -> Self {
        SharedGcra {
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: format!("{prefix}rate:"),
            command_timeout,
            paused_until_ms: AtomicU64::new(0),
            created_at: Instant::now(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.created_at.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts one request of `key` against `limit`'s rate, in Redis. Fails after the command
    /// timeout at the latest, so that the caller's fallback to the local limiter comes in time,
    /// and fails at once for `SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS` after a failure.
    pub async fn check<K: Hash + Eq + Clone>(
        &self,
        limit: &Gcra<K>,
        key: &str,
        connection: &mut redis::aio::ConnectionManager,
    ) -> redis::RedisResult<Result<(), Refusal>> {
        if self.elapsed_ms() < self.paused_until_ms.load(Ordering::Relaxed) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "skipped",
                "a shared rate limit check failed less than a second ago".to_owned(),
            )));
        }
        let mut invocation = self.script.key(format!("{}{}:{key}", self.prefix, limit.name));
        invocation.arg(limit.emission_interval_ms).arg(limit.tolerance_ms);
        let answer = bounded(self.command_timeout, invocation.invoke_async(connection)).await;
        if answer.is_err() {
            self.paused_until_ms.store(
                self.elapsed_ms().saturating_add(SHARED_LIMIT_PAUSE_AFTER_FAILURE_MS),
                Ordering::Relaxed,
            );
        }
        let wait_ms: u64 = answer?;
        Ok(if wait_ms == 0 { Ok(()) } else { Err(limit.refusal(wait_ms)) })
    }
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    /// `None` when `requests` is 0 (the limit is off).
    pub fn new(name: &'static str, requests: u32, window_seconds: u64, burst: u32) -> Option<Self> {
        if requests == 0 {
            return None;
        }
        let emission_interval_ms = (window_seconds * 1_000 / u64::from(requests)).max(1);
        let burst = burst.max(1);
        Some(Gcra {
            name,
            emission_interval_ms,
            tolerance_ms: emission_interval_ms * u64::from(burst - 1),
            burst,
            window_seconds,
            theoretical_arrival_ms: DashMap::new(),
        })
    }

    fn policy(&self) -> String {
        format!("\"{}\";q={};w={}", self.name, self.burst, self.window_seconds)
    }

    fn refusal(&self, wait_ms: u64) -> Refusal {
        let retry_after_seconds = wait_ms.div_ceil(1_000).max(1);
        Refusal {
            retry_after_seconds,
            policy: self.policy(),
            state: format!("\"{}\";r=0;t={retry_after_seconds}", self.name),
        }
    }

    /// Counts one request of `key` at `now_ms`, or refuses it.
    pub fn check(&self, key: &K, now_ms: u64) -> Result<(), Refusal> {
        if self.theoretical_arrival_ms.len() >= RATE_LIMIT_KEYS_MAX
            && !self.theoretical_arrival_ms.contains_key(key)
        {
            self.theoretical_arrival_ms.retain(|_, arrival| *arrival > now_ms);
            if self.theoretical_arrival_ms.len() >= RATE_LIMIT_KEYS_MAX {
                return Ok(());
            }
        }
        let mut arrival = self.theoretical_arrival_ms.entry(key.clone()).or_insert(now_ms);
        let theoretical = (*arrival).max(now_ms);
        let allowed_at = theoretical.saturating_sub(self.tolerance_ms);
        if allowed_at > now_ms {
            return Err(self.refusal(allowed_at - now_ms));
        }
        *arrival = theoretical + self.emission_interval_ms;
        Ok(())
    }
}

/// The client address to limit: the peer, or the first untrusted hop of `X-Forwarded-For`
/// when the peer is a trusted proxy.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for.unwrap_or("").split(',').rev().map(str::trim);
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(address) if trusted_proxies.contains(&address) => continue,
            Ok(address) => return Some(address),
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_are_refused_until_the_rate_allows() {
        let limiter = Gcra::new("ip", 2, 1, 3).unwrap();
        for _ in 0..3 {
            assert!(limiter.check(&"a", 1_000).is_ok());
        }
        let refusal = limiter.check(&"a", 1_000).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, 1);
        assert!(limiter.check(&"b", 1_000).is_ok(), "keys are independent");
        assert!(limiter.check(&"a", 1_500).is_ok(), "one request per 500 ms at 2/s");
        assert!(limiter.check(&"a", 1_500).is_err());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        assert!(Gcra::<&str>::new("ip", 0, 1, 10).is_none());
    }

    // Paused time: the timeout passes as soon as nothing but it is left to happen (the
    // connection to the silent listener completes at once in the kernel).
    #[tokio::test(start_paused = true)]
    async fn a_shared_check_against_a_redis_that_never_answers_fails_within_its_timeout() {
        // A listener that is never accepted from: connecting succeeds (the kernel completes the
        // handshake) and then nothing answers, as with a frozen Redis.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let client = redis::Client::open(url).unwrap();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(None);
        let mut connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap();
        let timeout = Duration::from_millis(100);
        let shared = SharedGcra::new("kuota_t:", timeout);
        let limit = Gcra::<String>::new("email", 6, 60, 6).unwrap();

        let started = tokio::time::Instant::now();
        let answer = shared.check(&limit, "someone@example.com", &mut connection).await;

        assert!(answer.is_err(), "a silent Redis is an error, for the caller to limit locally");
        assert_eq!(started.elapsed(), timeout, "refused at its timeout");
        let again = tokio::time::Instant::now();
        let answer = shared.check(&limit, "someone@example.com", &mut connection).await;
        assert!(answer.is_err());
        assert_eq!(again.elapsed(), Duration::ZERO, "the next check does not wait again");
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(Some(proxy), Some("203.0.113.9, 10.0.0.1"), &[proxy]), Some(client));
        assert_eq!(client_ip(Some(client), Some("198.51.100.1"), &[proxy]), Some(client));
    }
}
