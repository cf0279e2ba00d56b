//! Event ownership leases, against the Redis named by `KUOTA_TEST_REDIS_URL` and against the
//! in-process implementation: both must obey the same rules, so most test bodies run on both.
//! Each Redis test works under a random key prefix and deletes its keys when it ends.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kuota_engine::EventId;
use kuota_engine::ownership::{Claim, Ownership};
use kuota_engine::store::BoxFuture;
use kuota_persist::lease::{
    InProcessLeases, LEASE_SAFETY_MARGIN_MIN_MS, LEASE_TTL_MIN_MS, Lease, LeaseError, Leases, RedisLeases,
    lease_safety_margin, spawn_renewal,
};
use kuota_persist::ownership::{LeaseOwnership, NodeIdentity};
use kuota_persist::random;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::redis_support::{PrivateRedis, TestRedis, free_port};

/// Acquirers racing for one key in the contention test.
const CONCURRENT_ACQUIRERS: usize = 64;

/// A short lease, so that expiry tests finish quickly while the safety margin (100 ms) still
/// leaves a validity window of 200 ms.
const SHORT_TTL_MS: u64 = 300;

/// A lease long enough that a test never sees it expire by accident.
const LONG_TTL_MS: u64 = 10_000;

/// Time added to a TTL when a test waits for it to run out: Redis expires keys within a
/// millisecond, and this leaves room for a loaded test machine.
const EXPIRY_SLACK_MS: u64 = 100;

/// The Redis command timeout of the frozen-Redis tests, in milliseconds.
const COMMAND_TIMEOUT_MS: u64 = 200;

/// Time a command may take past its timeout on a loaded test machine, in milliseconds.
const TIMEOUT_SLACK_MS: u64 = 300;

impl TestRedis {
    fn leases(&self) -> Arc<dyn Leases> {
        Arc::new(RedisLeases::new(self.connection.clone(), self.prefix.clone()))
    }

    /// The Redis key behind a lease key (the layout `RedisLeases` documents).
    fn lease_key(&self, key: &str) -> String {
        format!("{}lease:{}", self.prefix, key)
    }
}

fn milliseconds(count: u64) -> Duration {
    Duration::from_millis(count)
}

/// Runs one test body against Redis and against the in-process leases, as two tests named
/// `<body>::in_redis` and `<body>::in_process`.
macro_rules! against_both {
    ($body:ident) => {
        mod $body {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn in_redis() {
                let redis = TestRedis::connect().await;
                super::$body(redis.leases()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn in_process() {
                super::$body(Arc::new(InProcessLeases::new())).await;
            }
        }
    };
}

against_both!(others_read_who_holds_a_lease_until_it_is_released);
async fn others_read_who_holds_a_lease_until_it_is_released(leases: Arc<dyn Leases>) {
    let ttl = milliseconds(LONG_TTL_MS);
    assert_eq!(leases.holder("event:who").await, Ok(None));
    let lease = leases.acquire_as("event:who", "node-a http://10.0.0.7:8080", ttl).await.unwrap().unwrap();
    assert_eq!(leases.holder("event:who").await, Ok(Some("node-a http://10.0.0.7:8080".to_owned())));
    assert_eq!(leases.acquire_as("event:who", "node-b http://10.0.0.8:8080", ttl).await, Ok(None));
    assert!(leases.renew(&lease).await.unwrap().is_some(), "the holder description is part of the token");
    assert_eq!(leases.release(&lease).await, Ok(true));
    assert_eq!(leases.holder("event:who").await, Ok(None));
    let anonymous = leases.acquire("event:who", ttl).await.unwrap().unwrap();
    assert_eq!(leases.holder("event:who").await, Ok(Some(String::new())));
    assert_eq!(leases.release(&anonymous).await, Ok(true));
}

against_both!(two_holders_never_both_hold);
async fn two_holders_never_both_hold(leases: Arc<dyn Leases>) {
    let attempts: Vec<_> = (0..CONCURRENT_ACQUIRERS)
        .map(|_| {
            let leases = Arc::clone(&leases);
            tokio::spawn(async move { leases.acquire("event:race", milliseconds(LONG_TTL_MS)).await })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        if let Some(lease) = attempt.await.expect("an acquirer task does not panic").expect("acquire answers")
        {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of {CONCURRENT_ACQUIRERS} concurrent acquirers wins");

    // While the winner holds the key, later attempts fail too.
    assert_eq!(leases.acquire("event:race", milliseconds(LONG_TTL_MS)).await, Ok(None));
    assert_eq!(leases.release(&winners[0]).await, Ok(true));
}

against_both!(an_expired_lease_lets_another_holder_acquire);
async fn an_expired_lease_lets_another_holder_acquire(leases: Arc<dyn Leases>) {
    let first =
        leases.acquire("event:expiry", milliseconds(SHORT_TTL_MS)).await.unwrap().expect("the key is free");
    assert_eq!(leases.acquire("event:expiry", milliseconds(SHORT_TTL_MS)).await, Ok(None));

    tokio::time::sleep(milliseconds(SHORT_TTL_MS + EXPIRY_SLACK_MS)).await;
    let second = leases
        .acquire("event:expiry", milliseconds(LONG_TTL_MS))
        .await
        .unwrap()
        .expect("the first lease expired");
    assert_ne!(first.token(), second.token());

    // The first holder can neither renew nor release what is now the second holder's.
    assert_eq!(leases.renew(&first).await, Ok(None));
    assert_eq!(leases.release(&first).await, Ok(false));
    assert!(leases.renew(&second).await.unwrap().is_some(), "the second holder still holds the key");
}

against_both!(a_release_by_a_non_holder_does_nothing);
async fn a_release_by_a_non_holder_does_nothing(leases: Arc<dyn Leases>) {
    let holder =
        leases.acquire("event:release", milliseconds(LONG_TTL_MS)).await.unwrap().expect("the key is free");
    let impostor =
        Lease::new("event:release", random::random_token_128(), milliseconds(LONG_TTL_MS), Instant::now());

    assert_eq!(leases.release(&impostor).await, Ok(false));
    assert_eq!(leases.acquire("event:release", milliseconds(LONG_TTL_MS)).await, Ok(None), "still held");
    assert!(leases.renew(&holder).await.unwrap().is_some(), "the holder still holds the key");

    assert_eq!(leases.release(&holder).await, Ok(true));
    assert_eq!(leases.release(&holder).await, Ok(false), "a second release finds nothing to release");
}

against_both!(a_renewal_by_a_non_holder_fails);
async fn a_renewal_by_a_non_holder_fails(leases: Arc<dyn Leases>) {
    let holder =
        leases.acquire("event:renew", milliseconds(LONG_TTL_MS)).await.unwrap().expect("the key is free");
    let impostor =
        Lease::new("event:renew", random::random_token_128(), milliseconds(LONG_TTL_MS), Instant::now());
    assert_eq!(leases.renew(&impostor).await, Ok(None));

    // Nor can anyone renew a key nobody holds.
    let stranger =
        Lease::new("event:unheld", random::random_token_128(), milliseconds(LONG_TTL_MS), Instant::now());
    assert_eq!(leases.renew(&stranger).await, Ok(None));
    assert!(leases.acquire("event:unheld", milliseconds(LONG_TTL_MS)).await.unwrap().is_some());

    assert_eq!(leases.release(&holder).await, Ok(true));
}

against_both!(a_released_lease_is_free_to_take_at_once);
async fn a_released_lease_is_free_to_take_at_once(leases: Arc<dyn Leases>) {
    let first =
        leases.acquire("event:handover", milliseconds(LONG_TTL_MS)).await.unwrap().expect("the key is free");
    assert_eq!(leases.release(&first).await, Ok(true));
    assert!(leases.acquire("event:handover", milliseconds(LONG_TTL_MS)).await.unwrap().is_some());
}

against_both!(a_renewal_keeps_the_token_and_restarts_the_ttl);
async fn a_renewal_keeps_the_token_and_restarts_the_ttl(leases: Arc<dyn Leases>) {
    let first =
        leases.acquire("event:extend", milliseconds(SHORT_TTL_MS)).await.unwrap().expect("the key is free");
    tokio::time::sleep(milliseconds(SHORT_TTL_MS / 2)).await;
    let renewed = leases.renew(&first).await.unwrap().expect("the holder renews in time");
    assert_eq!(renewed.token(), first.token());
    assert_eq!(renewed.ttl(), first.ttl());
    assert!(renewed.acquired_at() > first.acquired_at());
    assert!(renewed.valid_until() > first.valid_until());

    // Past the first TTL, the renewed lease still holds the key.
    tokio::time::sleep(milliseconds(SHORT_TTL_MS / 2 + EXPIRY_SLACK_MS / 2)).await;
    assert!(Instant::now() > first.acquired_at() + first.ttl());
    assert_eq!(leases.acquire("event:extend", milliseconds(SHORT_TTL_MS)).await, Ok(None));
    assert_eq!(leases.release(&renewed).await, Ok(true));
}

against_both!(a_key_or_ttl_out_of_bounds_is_refused);
async fn a_key_or_ttl_out_of_bounds_is_refused(leases: Arc<dyn Leases>) {
    let too_short = milliseconds(LEASE_TTL_MIN_MS - 1);
    assert!(matches!(leases.acquire("event:bounds", too_short).await, Err(LeaseError::InvalidTtl { .. })));
    assert!(matches!(
        leases.acquire("", milliseconds(LONG_TTL_MS)).await,
        Err(LeaseError::InvalidKey { .. })
    ));
    let long_key = "k".repeat(1000);
    assert!(matches!(
        leases.acquire(&long_key, milliseconds(LONG_TTL_MS)).await,
        Err(LeaseError::InvalidKey { .. })
    ));
}

against_both!(a_keeper_holds_a_lease_well_past_its_ttl_and_releases_it);
async fn a_keeper_holds_a_lease_well_past_its_ttl_and_releases_it(leases: Arc<dyn Leases>) {
    let lease =
        leases.acquire("event:kept", milliseconds(SHORT_TTL_MS)).await.unwrap().expect("the key is free");
    let first_expiry = lease.acquired_at() + lease.ttl();
    let keeper = spawn_renewal(Arc::clone(&leases), lease.clone(), lease.renewal_interval());

    tokio::time::sleep(milliseconds(3 * SHORT_TTL_MS)).await;
    let now = Instant::now();
    assert!(now > first_expiry + milliseconds(SHORT_TTL_MS));
    assert!(keeper.is_held(now), "the keeper renewed the lease in time");
    assert_eq!(keeper.lease().expect("held").token(), lease.token());
    assert_eq!(leases.acquire("event:kept", milliseconds(SHORT_TTL_MS)).await, Ok(None));

    assert_eq!(keeper.release().await, Ok(true));
    assert!(leases.acquire("event:kept", milliseconds(SHORT_TTL_MS)).await.unwrap().is_some());
}

against_both!(a_keeper_whose_lease_was_released_elsewhere_reports_the_loss_before_the_ttl);
async fn a_keeper_whose_lease_was_released_elsewhere_reports_the_loss_before_the_ttl(
    leases: Arc<dyn Leases>,
) {
    let ttl = milliseconds(1_000);
    let lease = leases.acquire("event:released", ttl).await.unwrap().expect("the key is free");
    let mut keeper = spawn_renewal(Arc::clone(&leases), lease.clone(), milliseconds(50));
    let updates = keeper.subscribe();

    // Someone else with the same lease (a component that thinks the event is done) releases
    // it, and another node takes it over.
    assert_eq!(leases.release(&lease).await, Ok(true));
    let thief = leases.acquire("event:released", ttl).await.unwrap().expect("the key was released");

    tokio::time::timeout(ttl, keeper.lost()).await.expect("the loss is reported within one TTL");
    let reported_at = Instant::now();
    assert!(keeper.lease().is_none());
    assert!(updates.borrow().is_none(), "subscribers see the loss too");
    assert!(!keeper.is_held(reported_at));
    // Every renewal the keeper made started after `lease.acquired_at`, so reporting before the
    // first lease's TTL is the strictest form of "before the TTL".
    assert!(
        reported_at < lease.acquired_at() + ttl,
        "the loss was reported {:?} before the TTL ran out",
        (lease.acquired_at() + ttl).saturating_duration_since(reported_at)
    );
    assert_eq!(leases.release(&thief).await, Ok(true));
}

against_both!(a_keeper_whose_renewals_hang_reports_the_loss_before_the_ttl);
async fn a_keeper_whose_renewals_hang_reports_the_loss_before_the_ttl(leases: Arc<dyn Leases>) {
    let ttl = milliseconds(1_000);
    let lease = leases.acquire("event:hung", ttl).await.unwrap().expect("the key is free");
    let hanging: Arc<dyn Leases> = Arc::new(Hanging);
    let mut keeper = spawn_renewal(hanging, lease.clone(), milliseconds(50));

    tokio::time::timeout(ttl, keeper.lost()).await.expect("the loss is reported within one TTL");
    let reported_at = Instant::now();
    assert!(reported_at >= lease.valid_until(), "the lease was held for as long as it was valid");
    assert!(
        reported_at < lease.acquired_at() + ttl,
        "the loss was reported {:?} before the TTL ran out",
        (lease.acquired_at() + ttl).saturating_duration_since(reported_at)
    );
    assert_eq!(leases.release(&lease).await, Ok(true));
}

against_both!(a_keeper_retries_failed_renewals_while_the_lease_is_valid);
async fn a_keeper_retries_failed_renewals_while_the_lease_is_valid(leases: Arc<dyn Leases>) {
    // Real time (Redis keeps its own clock), so a TTL with room for a loaded machine: the two
    // retries come 25 ms apart after the first renewal, at a third of the 900 ms validity. With
    // `SHORT_TTL_MS` (a 200 ms validity) a 130 ms scheduling delay lost the lease.
    let ttl_ms = 1_000;
    let lease = leases.acquire("event:flaky", milliseconds(ttl_ms)).await.unwrap().expect("the key is free");
    let first_expiry = lease.acquired_at() + lease.ttl();
    let flaky: Arc<dyn Leases> =
        Arc::new(Flaky { inner: Arc::clone(&leases), failures_left: AtomicUsize::new(2) });
    let keeper = spawn_renewal(Arc::clone(&flaky), lease.clone(), lease.renewal_interval());

    tokio::time::sleep(milliseconds(2 * ttl_ms)).await;
    let now = Instant::now();
    assert!(now > first_expiry);
    assert!(keeper.is_held(now), "two failed renewals were retried in time");
    assert_eq!(leases.acquire("event:flaky", milliseconds(ttl_ms)).await, Ok(None));
    assert_eq!(keeper.release().await, Ok(true));
}

against_both!(a_keeper_whose_renewals_keep_failing_reports_the_loss_before_the_ttl);
async fn a_keeper_whose_renewals_keep_failing_reports_the_loss_before_the_ttl(leases: Arc<dyn Leases>) {
    let ttl = milliseconds(1_000);
    let lease = leases.acquire("event:failing", ttl).await.unwrap().expect("the key is free");
    let failing: Arc<dyn Leases> =
        Arc::new(Flaky { inner: Arc::clone(&leases), failures_left: AtomicUsize::new(usize::MAX) });
    let mut keeper = spawn_renewal(failing, lease.clone(), milliseconds(50));

    tokio::time::timeout(ttl, keeper.lost()).await.expect("the loss is reported within one TTL");
    let reported_at = Instant::now();
    assert!(reported_at >= lease.valid_until(), "failed renewals are retried while the lease is valid");
    assert!(
        reported_at < lease.acquired_at() + ttl,
        "the loss was reported {:?} before the TTL ran out",
        (lease.acquired_at() + ttl).saturating_duration_since(reported_at)
    );
    assert_eq!(leases.release(&lease).await, Ok(true));
}

/// A lease service whose next `failures_left` renewals fail with an error before reaching the
/// real one, like a connection that drops for a moment.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Leases>,
    failures_left: AtomicUsize,
}

impl Leases for Flaky {
    fn acquire_as<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.inner.acquire_as(key, holder, ttl)
    }

    fn take_over_as<'a>(
        &'a self,
        key: &'a str,
        previous_holder: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.inner.take_over_as(key, previous_holder, holder, ttl)
    }

    fn holder<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>> {
        self.inner.holder(key)
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        let failed =
            self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
        if failed.is_ok() {
            Box::pin(std::future::ready(Err(LeaseError::Unavailable("connection reset".to_owned()))))
        } else {
            self.inner.renew(lease)
        }
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        self.inner.release(lease)
    }
}

/// A lease service that never answers, like one behind a partition with no timeouts.
#[derive(Debug)]
struct Hanging;

impl Leases for Hanging {
    fn acquire_as<'a>(
        &'a self,
        _key: &'a str,
        _holder: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::pending())
    }

    fn take_over_as<'a>(
        &'a self,
        _key: &'a str,
        _previous_holder: &'a str,
        _holder: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::pending())
    }

    fn holder<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>> {
        Box::pin(std::future::pending())
    }

    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(std::future::pending())
    }

    fn release<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_holder_whose_key_was_stolen_reports_the_loss_before_the_ttl() {
    let redis = TestRedis::connect().await;
    let leases = redis.leases();
    let ttl = milliseconds(1_000);
    let lease = leases.acquire("event:stolen", ttl).await.unwrap().expect("the key is free");
    let mut keeper = spawn_renewal(Arc::clone(&leases), lease.clone(), milliseconds(50));

    // Another party overwrites the key with its own token (as after an operator's FLUSH and a
    // new acquisition).
    let mut raw = redis.connection.clone();
    let _: () = redis::cmd("SET")
        .arg(redis.lease_key("event:stolen"))
        .arg("someone-else")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut raw)
        .await
        .expect("the test Redis accepts a SET");

    tokio::time::timeout(ttl, keeper.lost()).await.expect("the loss is reported within one TTL");
    let reported_at = Instant::now();
    assert!(reported_at < lease.acquired_at() + ttl, "reported before even the first TTL ran out");
    let stored: String = redis::cmd("GET")
        .arg(redis.lease_key("event:stolen"))
        .query_async(&mut raw)
        .await
        .expect("GET answers");
    assert_eq!(stored, "someone-else", "the former holder neither renewed nor deleted the thief's key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_holder_that_cannot_reach_redis_reports_the_loss_before_the_ttl() {
    let redis = TestRedis::connect().await;
    let ttl = milliseconds(1_000);
    let lease = redis.leases().acquire("event:partitioned", ttl).await.unwrap().expect("the key is free");

    // The holder's own connection goes to a loopback port nothing listens on: every renewal
    // fails or hangs while the connection manager retries, and the keeper must give up when the
    // lease stops being valid, not when Redis would expire it.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
        listener.local_addr().expect("a bound listener has an address").port()
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{closed_port}")).expect("the URL is valid");
    let unreachable = ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())
        .expect("a lazy connection manager does not connect yet");
    let cut_off: Arc<dyn Leases> = Arc::new(RedisLeases::new(unreachable, redis.prefix.clone()));
    let mut keeper = spawn_renewal(cut_off, lease.clone(), milliseconds(50));

    tokio::time::timeout(ttl, keeper.lost()).await.expect("the loss is reported within one TTL");
    let reported_at = Instant::now();
    assert!(reported_at >= lease.valid_until(), "a failing renewal is retried while the lease is valid");
    assert!(
        reported_at < lease.acquired_at() + ttl,
        "the loss was reported {:?} before the TTL ran out",
        (lease.acquired_at() + ttl).saturating_duration_since(reported_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_while_redis_is_frozen_fails_within_the_command_timeout() {
    let redis = PrivateRedis::start().await;
    // A connection manager that would wait for ever: the bound must come from the leases.
    let patient = ConnectionManagerConfig::new().set_response_timeout(None).set_connection_timeout(None);
    let connection =
        ConnectionManager::new_with_config(redis.client(), patient).await.expect("the private Redis answers");
    let timeout = milliseconds(COMMAND_TIMEOUT_MS);
    let leases = RedisLeases::new(connection, "kuota_t:").with_command_timeout(timeout);
    let lease = leases.acquire("event:frozen", milliseconds(LONG_TTL_MS)).await.unwrap().expect("free");

    redis.freeze();
    let started = Instant::now();
    let answer = leases.renew(&lease).await;
    let waited = started.elapsed();
    redis.thaw();

    assert!(matches!(answer, Err(LeaseError::Unavailable(_))), "{answer:?}");
    assert!(waited < timeout + milliseconds(TIMEOUT_SLACK_MS), "the renewal waited {waited:?}");
    assert!(leases.renew(&lease).await.unwrap().is_some(), "the same connection answers once thawed");
}

#[tokio::test]
async fn a_redis_lease_is_stored_under_the_prefix_with_the_ttl_in_milliseconds() {
    let redis = TestRedis::connect().await;
    let lease =
        redis.leases().acquire("event:layout", milliseconds(LONG_TTL_MS)).await.unwrap().expect("free");
    let mut raw = redis.connection.clone();
    let stored: String = redis::cmd("GET")
        .arg(redis.lease_key("event:layout"))
        .query_async(&mut raw)
        .await
        .expect("GET answers");
    assert_eq!(stored, lease.token());
    let remaining_ms: i64 = redis::cmd("PTTL")
        .arg(redis.lease_key("event:layout"))
        .query_async(&mut raw)
        .await
        .expect("PTTL answers");
    assert!((1..=LONG_TTL_MS as i64).contains(&remaining_ms), "{remaining_ms}");
}

#[test]
fn the_safety_margin_is_a_tenth_of_the_ttl_but_at_least_100_ms() {
    assert_eq!(lease_safety_margin(milliseconds(30_000)), milliseconds(3_000));
    assert_eq!(lease_safety_margin(milliseconds(1_000)), milliseconds(LEASE_SAFETY_MARGIN_MIN_MS));
    assert_eq!(lease_safety_margin(milliseconds(LEASE_TTL_MIN_MS)), milliseconds(LEASE_SAFETY_MARGIN_MIN_MS));
}

#[test]
fn a_lease_stops_being_valid_a_safety_margin_before_its_ttl() {
    let acquired_at = Instant::now();
    let lease = Lease::new("event:clock", "token", milliseconds(10_000), acquired_at);
    assert_eq!(lease.valid_until(), acquired_at + milliseconds(9_000));
    assert!(lease.is_valid(acquired_at));
    assert!(lease.is_valid(acquired_at + milliseconds(8_999)));
    assert!(!lease.is_valid(acquired_at + milliseconds(9_000)));
    assert!(lease.renewal_interval() < milliseconds(9_000));
}

#[test]
fn the_debug_form_of_a_lease_leaves_the_token_out() {
    let lease = Lease::new("event:debug", "secret-token", milliseconds(1_000), Instant::now());
    assert!(!format!("{lease:?}").contains("secret-token"));
}

/// A TCP proxy to `upstream` (a Redis) whose first connection is cut where the reply to the
/// first `SET … NX …` command would pass: the SET took effect, and its reply is lost with the
/// connection. Later connections are relayed untouched.
async fn proxy_losing_the_first_set_reply(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port is free");
    let address = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
            tokio::spawn(relay(client, server, std::mem::replace(&mut first, false)));
        }
    });
    address
}

async fn relay(client: tokio::net::TcpStream, server: tokio::net::TcpStream, lose_set_reply: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let set_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set_seen = Arc::clone(&set_sent);
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = client_read.read(&mut buffer).await {
            let chunk = &buffer[..read];
            if lose_set_reply && chunk.windows(6).any(|window| window == b"\r\nNX\r\n") {
                // Marked before the SET leaves, so that its reply cannot overtake the mark.
                set_seen.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = server_read.read(&mut buffer).await {
            if set_sent.load(Ordering::SeqCst) {
                // The SET's reply: dropped, and the connection with it.
                return;
            }
            if client_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first closes both.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

fn socket_address(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("redis://").parse().expect("a private Redis URL is redis://ip:port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquisition_whose_reply_was_lost_is_adopted_when_the_key_holds_its_token() {
    let redis = PrivateRedis::start().await;
    let proxy = proxy_losing_the_first_set_reply(socket_address(&redis.url)).await;
    let timeout = milliseconds(COMMAND_TIMEOUT_MS);
    let connection = kuota_persist::redis_connection::connect(&format!("redis://{proxy}"), timeout)
        .await
        .expect("the proxy relays the handshake");
    let leases = RedisLeases::new(connection, "kuota_t:").with_command_timeout(timeout);

    let before = Instant::now();
    let lease = leases
        .acquire_as("event:lost-reply", "node-a http://a", milliseconds(LONG_TTL_MS))
        .await
        .expect("the lost reply is resolved by reading the key back")
        .expect("the key holds this acquisition's token");
    let after = Instant::now();

    assert!((before..=after).contains(&lease.acquired_at()), "the TTL counts from before the SET");
    let mut direct = redis.client().get_multiplexed_async_connection().await.expect("Redis answers");
    let stored: String =
        redis::cmd("GET").arg("kuota_t:lease:event:lost-reply").query_async(&mut direct).await.unwrap();
    assert_eq!(stored, lease.token());
    assert!(leases.renew(&lease).await.unwrap().is_some(), "the adopted lease is renewable");
    assert_eq!(leases.release(&lease).await, Ok(true));
}

/// How long a lease whose acquisition was lost may stay in Redis after Redis answers again, in
/// milliseconds: the release retries every `LEASE_ORPHAN_RELEASE_RETRY_DELAY_MS` plus a command
/// timeout, with room for a loaded machine; far below `LONG_TTL_MS`.
const ORPHAN_RELEASED_WITHIN_MS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquisition_sent_to_a_frozen_redis_is_released_once_redis_answers_again() {
    let redis = PrivateRedis::start().await;
    let timeout = milliseconds(COMMAND_TIMEOUT_MS);
    let connection = kuota_persist::redis_connection::connect(&redis.url, timeout)
        .await
        .expect("the private Redis answers");
    let leases = RedisLeases::new(connection, "kuota_t:").with_command_timeout(timeout);

    redis.freeze();
    let answer = leases.acquire_as("event:frozen", "node-a http://a", milliseconds(LONG_TTL_MS)).await;
    assert!(matches!(answer, Err(LeaseError::Unavailable(_))), "{answer:?}");
    redis.thaw();

    let mut direct = redis.client().get_multiplexed_async_connection().await.expect("Redis answers");
    let thawed_at = Instant::now();
    loop {
        let stored: Option<String> =
            redis::cmd("GET").arg("kuota_t:lease:event:frozen").query_async(&mut direct).await.unwrap();
        if stored.is_none() {
            break;
        }
        assert!(
            thawed_at.elapsed() < milliseconds(ORPHAN_RELEASED_WITHIN_MS),
            "the lease of a lost acquisition still names {stored:?}"
        );
        // Polling Redis from outside: the release happens in the holder's background task.
        tokio::time::sleep(milliseconds(20)).await;
    }
    // The SET did run when Redis resumed: the key was there, and was released.
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut direct).await.unwrap();
    assert!(info.contains("cmdstat_set:calls=1,"), "the SET ran once: {info}");
}

/// The default lease TTL: the previous life's keeper renews every 900 ms, so its loss shows
/// within a second, while waiting its lease out would take three.
const OWNERSHIP_TTL_MS: u64 = 3_000;

/// How long a claim may take, in milliseconds: a few Redis round trips on a loaded machine.
const CLAIM_WITHIN_MS: u64 = 500;

fn ownership(leases: Arc<dyn Leases>, node_id: &str, url: &str) -> LeaseOwnership {
    let node = NodeIdentity::new(node_id, url).expect("a valid node identity");
    LeaseOwnership::new(leases, node, milliseconds(OWNERSHIP_TTL_MS), tokio::runtime::Handle::current())
        .expect("the TTL is within bounds")
}

/// Two `LeaseOwnership`s with the same node id over one lease service: a node and its life after
/// a kill -9 and a restart (on another port, as with an advertised port 0).
async fn a_restarted_node_takes_over_the_leases_of_its_previous_life_at_once(leases: Arc<dyn Leases>) {
    let event = EventId::parse("restarted").expect("a valid event id");
    let previous_life = ownership(Arc::clone(&leases), "node-a", "http://127.0.0.1:1001");
    let Claim::Owned(mut previous_tenure) = previous_life.claim(&event).await.unwrap() else {
        panic!("the event is free");
    };

    let restarted = ownership(Arc::clone(&leases), "node-a", "http://127.0.0.1:1002");
    let started = Instant::now();
    let claim = restarted.claim(&event).await.unwrap();
    let waited = started.elapsed();

    let Claim::Owned(tenure) = claim else { panic!("the restarted node was sent elsewhere: {claim:?}") };
    assert!(tenure.is_held());
    assert!(waited < milliseconds(CLAIM_WITHIN_MS), "the take-over took {waited:?}");
    let lost = previous_tenure.take_lost().expect("the loss future is there");
    tokio::time::timeout(milliseconds(OWNERSHIP_TTL_MS), lost)
        .await
        .expect("the previous life's keeper finds its lease taken and steps down");
    assert!(!previous_tenure.is_held());

    let other = ownership(Arc::clone(&leases), "node-b", "http://127.0.0.1:2001");
    match other.claim(&event).await.unwrap() {
        Claim::Elsewhere(owner) => assert_eq!(owner.url, "http://127.0.0.1:1002", "the new life owns it"),
        Claim::Owned(_) => panic!("a node with another id took the event"),
    }
    restarted.release_all(milliseconds(CLAIM_WITHIN_MS)).await;
}

against_both!(a_restarted_node_takes_over_the_leases_of_its_previous_life_at_once);

async fn a_take_over_replaces_only_the_expected_holder(leases: Arc<dyn Leases>) {
    let ttl = milliseconds(LONG_TTL_MS);
    let held = leases.acquire_as("event:taken", "node-b http://b", ttl).await.unwrap().expect("free");
    let taken = leases.take_over_as("event:taken", "node-a http://a", "node-a http://a2", ttl).await;
    assert_eq!(taken, Ok(None), "the lease is node-b's, not node-a's");
    assert_eq!(leases.holder("event:taken").await.unwrap().as_deref(), Some("node-b http://b"));
    let free = leases.take_over_as("event:free", "node-a http://a", "node-a http://a2", ttl).await;
    assert_eq!(free, Ok(None), "there is nothing to take over");
    assert_eq!(leases.release(&held).await, Ok(true));
}

against_both!(a_take_over_replaces_only_the_expected_holder);

/// How soon after a restarted Redis answers the node's connection works again, in milliseconds.
const REDIS_BACK_WITHIN_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_fail_fast_while_redis_is_down_and_work_again_within_a_second_of_its_restart() {
    let port = free_port();
    let redis = PrivateRedis::start_on(port).await;
    let timeout = milliseconds(COMMAND_TIMEOUT_MS);
    let connection = kuota_persist::redis_connection::connect(&redis.url, timeout)
        .await
        .expect("the private Redis answers");
    let leases = RedisLeases::new(connection, "kuota_t:").with_command_timeout(timeout);
    assert!(leases.acquire("event:before", milliseconds(LONG_TTL_MS)).await.unwrap().is_some());

    drop(redis);
    for _ in 0..3 {
        let started = Instant::now();
        let answer = leases.holder("event:before").await;
        assert!(answer.is_err(), "Redis is gone: {answer:?}");
        assert!(
            started.elapsed() < timeout + milliseconds(TIMEOUT_SLACK_MS),
            "waited {:?}",
            started.elapsed()
        );
    }

    let restarted = PrivateRedis::start_on(port).await;
    let back_at = Instant::now();
    loop {
        match leases.acquire("event:after", milliseconds(LONG_TTL_MS)).await {
            Ok(Some(_)) => break,
            answer => assert!(
                back_at.elapsed() < milliseconds(REDIS_BACK_WITHIN_MS),
                "still failing {:?} after Redis came back: {answer:?}",
                back_at.elapsed()
            ),
        }
        // Polling: the connection manager reconnects in the background.
        tokio::time::sleep(milliseconds(20)).await;
    }
    drop(restarted);
}

/// A lease service that is down: every call fails, and is counted.
#[derive(Debug, Default)]
struct Down {
    calls: AtomicUsize,
}

impl Down {
    fn fail<T: Send + 'static>(&self) -> BoxFuture<'_, Result<T, LeaseError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Err(LeaseError::Unavailable("connection refused".to_owned()))))
    }
}

impl Leases for Down {
    fn acquire_as<'a>(
        &'a self,
        _key: &'a str,
        _holder: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.fail()
    }

    fn take_over_as<'a>(
        &'a self,
        _key: &'a str,
        _previous_holder: &'a str,
        _holder: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.fail()
    }

    fn holder<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<String>, LeaseError>> {
        self.fail()
    }

    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        self.fail()
    }

    fn release<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        self.fail()
    }
}

#[tokio::test]
async fn after_the_lease_service_failed_claims_fail_at_once_for_a_moment_then_ask_again() {
    let down = Arc::new(Down::default());
    let node = ownership(Arc::clone(&down) as Arc<dyn Leases>, "node-a", "http://127.0.0.1:1001");
    let event = EventId::parse("paused").expect("a valid event id");

    assert!(node.claim(&event).await.is_err());
    assert_eq!(down.calls.load(Ordering::SeqCst), 1);
    assert!(node.claim(&event).await.is_err());
    assert_eq!(down.calls.load(Ordering::SeqCst), 1, "the second claim did not wait on the service");

    // Real time: the pause is read on tokio's clock, but pausing it needs tokio's test-util
    // feature, which would rebuild tokio for the whole workspace's tests.
    tokio::time::sleep(milliseconds(kuota_persist::ownership::CLAIM_PAUSE_AFTER_UNAVAILABLE_MS)).await;
    assert!(node.claim(&event).await.is_err());
    assert_eq!(down.calls.load(Ordering::SeqCst), 2, "after the pause the service is asked again");
}
