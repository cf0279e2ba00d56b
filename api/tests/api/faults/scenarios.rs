//! One test per fault. Each runs every seed of the profile (quick: one random seed), prints its
//! figures line before checking, and reports every goal it missed. A comment at each goal
//! names the feature that keeps it (`// kept by: <feature>`), so that a miss points at it.

use std::time::{Duration, Instant};

use kuota_api::configuration::Settings;

use super::super::private_servers::{KuotaProcess, PrivateMariaDb, PrivateRedis};
use super::super::support::{ADMIN_TOKEN, TestApp, race, spawn_app_on};
use super::client::{Readiness, readiness, send, wait_until_ready};
use super::load::{
    Sample, Trickle, figures_line, latency_percentile_ms, register, served_again, started_within,
};
use super::store_check::check_store;
use super::*;

const EVENT: &str = "race";
/// More seats than any run sells: the scenarios measure waiting, not selling out.
const SEATS: u32 = 100_000;
/// The trickle runs this long before the fault, so the fault hits a node in its stride.
const WARM_UP: Duration = Duration::from_secs(1);
/// The trickle goes on this long after the fault ends (more than the recovery bound, so that a
/// node that recovers late is seen).
const AFTERMATH: Duration = Duration::from_millis(2_500);
/// How long the scenario waits for service to come back, to measure it even when it is late.
const SERVED_AGAIN_PATIENCE: Duration = Duration::from_secs(15);
/// How long a retried key may stay undecided once the fault is over.
const RETRY_PATIENCE: Duration = Duration::from_secs(5);
/// Lease TTL of the two-node scenarios: a frozen owner's events move within this plus 1 s.
const LEASE_TTL_MS: u64 = 2_000;
/// Redis prefix of the cluster scenarios (the Redis is private, so any prefix is free).
const REDIS_PREFIX: &str = "kuota_fault:";

/// The liveness settings every scenario's nodes run with (short, to keep the runs short).
fn with_short_deadlines(settings: &mut Settings) {
    settings.request_timeout_ms = REQUEST_TIMEOUT_MS;
    settings.store_timeout_ms = STORE_TIMEOUT_MS;
    settings.store_stall_ms = STORE_STALL_MS;
    settings.redis_timeout_ms = REDIS_TIMEOUT_MS;
}

fn as_cluster_node<'a>(
    redis: &'a PrivateRedis,
    node_id: &'a str,
    lease_ttl_ms: u64,
) -> impl FnOnce(&mut Settings) + 'a {
    move |settings| {
        with_short_deadlines(settings);
        settings.redis_url = Some(redis.url());
        settings.redis_prefix = REDIS_PREFIX.into();
        settings.node_id = node_id.into();
        settings.lease_ttl_ms = lease_ttl_ms;
    }
}

/// The environment of a `kuota` process node with the same settings as `as_cluster_node`
/// (without Redis: a single node).
fn process_environment(
    database_url: &str,
    redis: Option<&PrivateRedis>,
    node_id: &str,
    lease_ttl_ms: u64,
) -> Vec<(String, String)> {
    let mut environment: Vec<(String, String)> = [
        ("KUOTA_DATABASE_URL", database_url.to_string()),
        ("KUOTA_REDIS_PREFIX", REDIS_PREFIX.to_string()),
        ("KUOTA_NODE_ID", node_id.to_string()),
        ("KUOTA_LEASE_TTL_MS", lease_ttl_ms.to_string()),
        ("KUOTA_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
        ("KUOTA_RATE_LIMIT_IP_PER_SECOND", "0".to_string()),
        ("KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE", "0".to_string()),
        ("KUOTA_REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS.to_string()),
        ("KUOTA_STORE_TIMEOUT_MS", STORE_TIMEOUT_MS.to_string()),
        ("KUOTA_STORE_STALL_MS", STORE_STALL_MS.to_string()),
        ("KUOTA_REDIS_TIMEOUT_MS", REDIS_TIMEOUT_MS.to_string()),
        ("KUOTA_HTTP_WORKERS", "2".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    if let Some(redis) = redis {
        environment.push(("KUOTA_REDIS_URL".to_string(), redis.url()));
    }
    environment
}

async fn start_process_node(environment: &[(String, String)]) -> KuotaProcess {
    let pairs: Vec<(&str, &str)> =
        environment.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    KuotaProcess::start(&pairs).await
}

/// Registers through `node` and insists on a 201: the node then owns the event.
async fn first_registration(node: &TestApp) {
    let sample = register(node.port, EVENT, "first", "first@example.org", false).await;
    assert_eq!(sample.status(), Some(201), "the first registration: {}", sample.describe());
}

/// Runs `scenario` once for each seed of the profile, while no other fault scenario runs, and
/// fails with every goal any of the runs missed.
async fn every_seed(scenario: impl AsyncFn(&Profile, u64) -> Goals) {
    let _turn = one_fault_at_a_time().await;
    let profile = profile();
    let mut runs = Vec::new();
    for seed in profile.seeds.clone() {
        runs.push(scenario(&profile, seed).await);
    }
    assert_all_kept(runs);
}

/// The liveness goals for every request of a run: answered, within `bound_ms`, and with an
/// answer the contract allows (a decision, or 503 with Retry-After, or the key in flight).
fn check_every_answer(goals: &mut Goals, samples: &[&Sample], bound_ms: u128) {
    for sample in samples {
        // kept by: request deadline (KUOTA_REQUEST_TIMEOUT_MS) and store timeouts
        goals.check(sample.answer.is_ok(), "every request is answered", || {
            format!("never answered: {}", sample.describe())
        });
        // kept by: request deadline (KUOTA_REQUEST_TIMEOUT_MS) and store timeouts
        goals.check(
            sample.elapsed.as_millis() <= bound_ms,
            "every request is answered within the bound",
            || format!("answered after more than {bound_ms} ms: {}", sample.describe()),
        );
        goals.check(
            sample.answer.is_err() || sample.is_allowed_during_a_fault(),
            "every answer is a decision, 503 with Retry-After, or 'in flight'",
            || format!("an answer the contract does not allow: {}", sample.describe()),
        );
    }
}

/// Every request started `RECOVERY_MS_MAX` after `returned` got a decision.
fn check_recovered(goals: &mut Goals, samples: &[Sample], returned: Instant, what: &str) {
    let bound = returned + Duration::from_millis(RECOVERY_MS_MAX);
    for sample in samples.iter().filter(|sample| !sample.retry && sample.started >= bound) {
        goals.check(sample.is_decided(), "served again within 1 s", || {
            format!("not served {RECOVERY_MS_MAX} ms after {what}: {}", sample.describe())
        });
    }
}

/// Retries, with the same key and body, every key that got no decision, until it does (409
/// in flight means: try again shortly). Returns the retries.
async fn retry_undecided_keys(goals: &mut Goals, samples: &[Sample]) -> Vec<Sample> {
    let mut retries = Vec::new();
    let mut undecided: Vec<&Sample> = Vec::new();
    for sample in samples.iter().filter(|sample| !sample.retry) {
        let decided = samples.iter().any(|other| other.key == sample.key && other.is_decided());
        if !decided {
            undecided.push(sample);
        }
    }
    for sample in undecided {
        let deadline = Instant::now() + RETRY_PATIENCE;
        loop {
            let retry = register(sample.port, EVENT, &sample.key, &sample.email, true).await;
            let decided = retry.is_decided();
            let in_flight = retry.code() == "idempotency_key_in_flight";
            goals.check(decided || in_flight, "a retry after a 503 gets the outcome or 'in flight'", || {
                format!(
                    "a retry after the fault got neither the outcome nor 'in flight': {}",
                    retry.describe()
                )
            });
            retries.push(retry);
            if decided || !in_flight {
                break;
            }
            if Instant::now() >= deadline {
                // kept by: request deadline (a key in flight resolves once its batch does)
                goals.check(false, "a key in flight resolves once the fault is over", || {
                    format!("{} still in flight {RETRY_PATIENCE:?} after the fault", sample.key)
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    retries
}

fn readiness_summary(probes: &[Readiness]) -> String {
    let slowest = probes.iter().map(|probe| probe.elapsed.as_millis()).max().unwrap_or(0);
    let not_ready = probes.iter().filter(|probe| probe.status == Some(503)).count();
    format!("/readyz during the fault: {not_ready}/{} answered 503, slowest {slowest} ms", probes.len())
}

/// Probes `/readyz` every 100 ms from `from` until `until`.
async fn probe_readiness(port: u16, from: Instant, until: Instant) -> Vec<Readiness> {
    let (readiness, _) = probe_during_the_fault(port, from, until, false).await;
    readiness
}

/// What keeps working from memory while the store is away: a read of the event, and the
/// refusal of a registration for a sold-out event.
#[derive(Debug)]
struct FromMemory {
    what: &'static str,
    elapsed: Duration,
    status: Option<u16>,
    code: String,
}

impl FromMemory {
    fn is_expected(&self) -> bool {
        match self.what {
            "a read of the event" => self.status == Some(200),
            _ => self.status == Some(409) && self.code == "sold_out",
        }
    }
}

/// Probes `/readyz` every 100 ms from `from` until `until`, and with `from_memory` a read of
/// the event and a registration for the sold-out event each time as well. On a thread and a
/// runtime of their own: the trickle's hundreds of connections a second on the test's runtime
/// would otherwise add their scheduling delays to a probe's few milliseconds.
async fn probe_during_the_fault(
    port: u16,
    from: Instant,
    until: Instant,
    from_memory: bool,
) -> (Vec<Readiness>, Vec<FromMemory>) {
    let probing = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the probes");
        runtime.block_on(probe_in_turn(port, from, until, from_memory))
    });
    tokio::task::spawn_blocking(move || probing.join().expect("the probes do not panic"))
        .await
        .expect("joining the probes does not panic")
}

async fn probe_in_turn(
    port: u16,
    from: Instant,
    until: Instant,
    from_memory: bool,
) -> (Vec<Readiness>, Vec<FromMemory>) {
    tokio::time::sleep(from.saturating_duration_since(Instant::now())).await;
    let (mut readiness_probes, mut memory_probes) = (Vec::new(), Vec::new());
    while Instant::now() < until {
        readiness_probes.push(readiness(port).await);
        if from_memory {
            let read =
                send(port, "GET", &format!("/v1/events/{EVENT}"), &[], None, Duration::from_secs(5)).await;
            memory_probes.push(FromMemory {
                what: "a read of the event",
                elapsed: read.elapsed,
                status: read.answer.as_ref().ok().map(|response| response.status),
                code: String::new(),
            });
            let number = memory_probes.len();
            let key = format!("full{number}");
            let refused = register(port, SOLD_OUT_EVENT, &key, &format!("{key}@example.org"), false).await;
            memory_probes.push(FromMemory {
                what: "a registration for a sold-out event",
                elapsed: refused.elapsed,
                status: refused.status(),
                code: refused.code().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (readiness_probes, memory_probes)
}

fn show_mib(mib: Option<u64>) -> String {
    mib.map_or("?".into(), |mib| mib.to_string())
}

/// The highest resident memory of the node, sampled every 50 ms until `until`.
async fn peak_resident_mib(node: &KuotaProcess, until: Instant) -> Option<u64> {
    let mut peak = node.resident_mib();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(node.resident_mib());
    }
    peak
}

// ---------------------------------------------------------------------------------------------
// (a), (b): the store frozen, or killed and restarted
// ---------------------------------------------------------------------------------------------

/// An event whose only seat is taken before the fault.
const SOLD_OUT_EVENT: &str = "full";
/// Reads and sold-out answers come from memory while the store is away: within this, which is
/// under the store timeout, so an answer that waited on the store cannot pass (the rest is
/// loopback and scheduling, with the load generator on the same two cores).
const FROM_MEMORY_ANSWER_MS_MAX: u64 = 250;
/// Registrations are refused "within milliseconds" once the node knows the store is stalled:
/// the 99th percentile of what the registrants saw, so that one scheduling hiccup on a shared
/// machine is not a miss, while waiting on the store (hundreds of ms) always is.
const STALLED_REFUSAL_P99_MS_MAX: u128 = 50;
/// The node notices a stall when its oldest commit passes the threshold; it may take this long
/// more (a commit that was just starting when the store froze).
const STALL_NOTICE_MARGIN_MS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreFault {
    Frozen,
    Killed,
}

#[actix_rt::test]
async fn a_frozen_store_gets_fast_refusals_and_serves_again_within_a_second_of_thawing() {
    every_seed(async |profile, seed| store_fault(profile, seed, StoreFault::Frozen).await).await;
}

#[actix_rt::test]
async fn a_killed_store_gets_fast_refusals_and_serves_again_within_a_second_of_its_restart() {
    every_seed(async |profile, seed| store_fault(profile, seed, StoreFault::Killed).await).await;
}

async fn store_fault(profile: &Profile, seed: u64, fault: StoreFault) -> Goals {
    let scenario = match fault {
        StoreFault::Frozen => "MariaDB frozen (SIGSTOP)",
        StoreFault::Killed => "MariaDB killed (SIGKILL), restarted",
    };
    let mut goals = Goals::new(scenario, seed);
    let mut random = Random::new(seed);
    let mut mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    // A process, so that its memory can be read while requests pile up.
    let node = start_process_node(&process_environment(&database_url, None, "node-a", LEASE_TTL_MS)).await;
    let app = TestApp::attach(node.port);
    app.create_event(race(EVENT, SEATS, 0)).await;
    first_registration(&app).await;
    app.create_event(race(SOLD_OUT_EVENT, 1, 0)).await;
    let only_seat = register(app.port, SOLD_OUT_EVENT, "only", "only@example.org", false).await;
    assert_eq!(only_seat.status(), Some(201), "{}", only_seat.describe());

    let trickle = Trickle::start(EVENT, vec![app.port], profile.rate_per_second, random.next_u64());
    tokio::time::sleep(WARM_UP + Duration::from_millis(random.below(500))).await;
    let resident_before_mib = node.resident_mib();
    let fault_started = Instant::now();
    match fault {
        StoreFault::Frozen => mariadb.freeze(),
        StoreFault::Killed => mariadb.kill(),
    }
    // The node may take the stall threshold to notice, and a commit in flight to find out.
    let probes_from = fault_started + Duration::from_millis(STORE_STALL_MS + STORE_TIMEOUT_MS);
    let ((probes, memory_probes), resident_peak_mib) = tokio::join!(
        probe_during_the_fault(app.port, probes_from, fault_started + profile.outage, true),
        peak_resident_mib(&node, fault_started + profile.outage)
    );
    let fault_ended = match fault {
        StoreFault::Frozen => {
            mariadb.thaw();
            Instant::now()
        }
        StoreFault::Killed => {
            mariadb.restart().await;
            Instant::now()
        }
    };
    let ready = wait_until_ready(app.port, Duration::from_secs(10)).await;
    let (recovered, probes_after) =
        served_again(EVENT, &[app.port], fault_ended, SERVED_AGAIN_PATIENCE).await;
    tokio::time::sleep(AFTERMATH.saturating_sub(fault_ended.elapsed())).await;
    let mut samples = trickle.stop().await;
    samples.extend(probes_after);
    let resident_after_mib = node.resident_mib();

    let during = started_within(&samples, fault_started, fault_ended);
    let stall_seen = fault_started + Duration::from_millis(STORE_STALL_MS + STALL_NOTICE_MARGIN_MS);
    let stalled = started_within(&samples, stall_seen, fault_ended);
    let stalled_p99_ms = latency_percentile_ms(&stalled, 99.0);
    let ready_ms = ready.map(|ready| ready.saturating_duration_since(fault_ended).as_millis());
    println!(
        "{}",
        figures_line(
            scenario,
            seed,
            profile.name,
            &during,
            (
                recovered,
                if fault == StoreFault::Frozen { "SIGCONT" } else { "the restarted MariaDB answered" }
            ),
            &format!(
                "outage {} ms; from {} ms into it, p99 {stalled_p99_ms} ms; {}; /readyz 200 again {} after; \
                 node RSS {} MiB before, peak {} during, {} after",
                profile.outage.as_millis(),
                STORE_STALL_MS + STALL_NOTICE_MARGIN_MS,
                readiness_summary(&probes),
                ready_ms.map_or("never".into(), |ms| format!("{ms} ms")),
                show_mib(resident_before_mib),
                show_mib(resident_peak_mib),
                show_mib(resident_after_mib),
            ),
        )
    );

    let all: Vec<&Sample> = samples.iter().collect();
    check_every_answer(&mut goals, &all, u128::from(REQUEST_TIMEOUT_MS + ANSWER_MARGIN_MS));
    goals.check(!probes.is_empty(), "/readyz is probed during the fault", || {
        "no /readyz probe during the fault".into()
    });
    for probe in &probes {
        // kept by: store stall detection (/readyz 503 naming store in ≤ 50 ms)
        goals.check(
            probe.status == Some(503) && probe.failing.iter().any(|part| part == "store"),
            "/readyz answers 503 naming store during the fault",
            || format!("/readyz during the fault answered {:?} naming {:?}", probe.status, probe.failing),
        );
        // kept by: store stall detection (/readyz 503 naming store in ≤ 50 ms)
        goals.check(
            probe.elapsed.as_millis() <= u128::from(READINESS_ANSWER_MS_MAX),
            "/readyz answers within 50 ms during the fault",
            || format!("/readyz during the fault took {} ms", probe.elapsed.as_millis()),
        );
    }
    for probe in &memory_probes {
        // kept by: store stall detection (reads and sold-out answers from memory)
        goals.check(
            probe.is_expected() && probe.elapsed.as_millis() <= u128::from(FROM_MEMORY_ANSWER_MS_MAX),
            "reads and sold-out answers go on from memory during the fault",
            || {
                format!(
                    "{} during the fault: {:?} {} after {} ms",
                    probe.what,
                    probe.status,
                    probe.code,
                    probe.elapsed.as_millis()
                )
            },
        );
    }
    // Once the node has seen the stall, a registration is refused at once, not at the deadline.
    // kept by: store stall detection (writes refused within milliseconds)
    goals.check(
        stalled_p99_ms <= STALLED_REFUSAL_P99_MS_MAX,
        "registrations are refused at once while the store is stalled (p99)",
        || {
            let slowest = stalled.iter().max_by_key(|sample| sample.elapsed);
            format!(
                "p99 {stalled_p99_ms} ms over {} requests; the slowest: {}",
                stalled.len(),
                slowest.map_or(String::new(), |sample| sample.describe())
            )
        },
    );
    // kept by: store stall detection (recovery within 1 s of the store returning)
    goals.check(
        ready_ms.is_some_and(|ms| ms <= u128::from(RECOVERY_MS_MAX)),
        "/readyz says 200 within 1 s of the store's return",
        || format!("/readyz said 200 again {ready_ms:?} ms after the store returned"),
    );
    check_recovered(&mut goals, &samples, fault_ended, "the store returned");
    let retries = retry_undecided_keys(&mut goals, &samples).await;
    let everything: Vec<Sample> = samples.into_iter().chain(retries).collect();
    check_store(&database_url, EVENT, &everything, &mut goals).await;
    check_store(&database_url, SOLD_OUT_EVENT, &[only_seat], &mut goals).await;
    if !goals.missed_goals().is_empty() {
        // What the writer said about the store, to tell a late probe from a slow first commit.
        let words = ["the store", "a batch failed", "breaker", "stall threshold", "reload"];
        println!("the node's log about the store (last 30 lines):\n{}", node.log_lines_with(&words, 30));
    }
    goals
}

// ---------------------------------------------------------------------------------------------
// (c): Redis frozen under two nodes
// ---------------------------------------------------------------------------------------------

/// A rate limit that the scenarios' load never reaches (all of it comes from 127.0.0.1).
const NEVER_LIMITING_PER_SECOND: u32 = 100_000;
/// A request may make a Redis call or two before it knows it cannot: the Redis timeout plus
/// a margin, well under the request deadline.
const REDIS_ANSWER_MS_MAX: u64 = REDIS_TIMEOUT_MS + 2 * ANSWER_MARGIN_MS;

#[actix_rt::test]
async fn while_redis_is_frozen_no_request_waits_on_it_and_the_events_are_owned_again_within_a_second() {
    every_seed(async |profile, seed| redis_frozen(profile, seed).await).await;
}

async fn lease_holder(redis: &PrivateRedis) -> Option<String> {
    let client = redis::Client::open(redis.url()).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let value: Option<String> = redis::cmd("GET")
        .arg(format!("{REDIS_PREFIX}lease:event:{EVENT}"))
        .query_async(&mut connection)
        .await
        .ok()?;
    // "token node-id url"
    value.and_then(|value| value.split(' ').nth(1).map(str::to_string))
}

async fn redis_frozen(profile: &Profile, seed: u64) -> Goals {
    let scenario = "Redis frozen (SIGSTOP), two nodes";
    let mut goals = Goals::new(scenario, seed);
    let mut random = Random::new(seed);
    let redis = PrivateRedis::start().await;
    let mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    // Shared rate limits on, high enough never to refuse: each registration consults Redis,
    // and must fall back to the local limiter rather than wait while Redis is away.
    let with_shared_rate_limits = |node_id: &'static str| {
        let as_node = as_cluster_node(&redis, node_id, LEASE_TTL_MS);
        move |settings: &mut Settings| {
            as_node(settings);
            settings.rate_limit_ip_per_second = NEVER_LIMITING_PER_SECOND;
            settings.rate_limit_ip_burst = NEVER_LIMITING_PER_SECOND;
            settings.rate_limit_email_per_minute = NEVER_LIMITING_PER_SECOND;
        }
    };
    let a = spawn_app_on(&database_url, with_shared_rate_limits("node-a")).await;
    let b = spawn_app_on(&database_url, with_shared_rate_limits("node-b")).await;
    a.create_event(race(EVENT, SEATS, 0)).await;
    first_registration(&a).await;

    let trickle = Trickle::start(EVENT, vec![a.port, b.port], profile.rate_per_second, random.next_u64());
    tokio::time::sleep(WARM_UP + Duration::from_millis(random.below(500))).await;
    let fault_started = Instant::now();
    redis.freeze();
    let probes = probe_readiness(
        a.port,
        fault_started + Duration::from_millis(REDIS_TIMEOUT_MS),
        fault_started + profile.outage,
    )
    .await;
    redis.thaw();
    let fault_ended = Instant::now();
    let (recovered, probes_after) =
        served_again(EVENT, &[a.port, b.port], fault_ended, SERVED_AGAIN_PATIENCE).await;
    tokio::time::sleep(AFTERMATH.saturating_sub(fault_ended.elapsed())).await;
    let mut samples = trickle.stop().await;
    samples.extend(probes_after);

    let during = started_within(&samples, fault_started, fault_ended);
    let holder = lease_holder(&redis).await;
    println!(
        "{}",
        figures_line(
            scenario,
            seed,
            profile.name,
            &during,
            (recovered, "SIGCONT to Redis"),
            &format!(
                "outage {} ms; lease TTL {LEASE_TTL_MS} ms; {}; lease afterwards: {holder:?}",
                profile.outage.as_millis(),
                readiness_summary(&probes)
            ),
        )
    );

    let all: Vec<&Sample> = samples.iter().collect();
    // kept by: Redis timeouts (no request waits on Redis beyond its timeout)
    check_every_answer(&mut goals, &all, u128::from(REDIS_ANSWER_MS_MAX));
    // kept by: lease adoption after a lost reply (owned again ≤ 1 s after Redis returns)
    check_recovered(&mut goals, &samples, fault_ended, "Redis returned");
    // No orphaned lease: one node holds it and runs the event; the other relays to it.
    goals.check(holder.is_some(), "no orphaned lease after Redis returns", || {
        "no node holds the event's lease after Redis returned".into()
    });
    if let Some(holder) = &holder {
        for (node, id) in [(&a, "node-a"), (&b, "node-b")] {
            let sample =
                register(node.port, EVENT, &format!("after-{id}"), &format!("after-{id}@example.org"), false)
                    .await;
            let owner = sample.answer.as_ref().ok().and_then(|answer| answer.owner.clone());
            let expected = if id == holder { None } else { Some(holder.clone()) };
            // kept by: lease adoption after a lost reply (no lease held by a node that does not run the event)
            goals.check(
                sample.status() == Some(201) && owner == expected,
                "the lease holder runs the event, the other node relays to it",
                || {
                    format!(
                        "after the fault, through {id} (lease held by {holder}): {} relayed by {owner:?}",
                        sample.describe()
                    )
                },
            );
        }
    }
    let retries = retry_undecided_keys(&mut goals, &samples).await;
    let everything: Vec<Sample> = samples.into_iter().chain(retries).collect();
    check_store(&database_url, EVENT, &everything, &mut goals).await;
    goals
}

// ---------------------------------------------------------------------------------------------
// (d): the owner node frozen under two nodes
// ---------------------------------------------------------------------------------------------

/// Registrations sent to the owner at once just before it freezes.
const OWNER_BURST_REGISTRATIONS: usize = 40;
/// Forwarded requests are answered within this while the owner does not answer.
const FORWARD_ANSWER_MS_MAX: u64 = 1_000;

#[actix_rt::test]
async fn when_the_owner_node_freezes_the_other_node_serves_its_event_within_the_lease_ttl_and_a_second() {
    every_seed(async |profile, seed| owner_frozen(profile, seed).await).await;
}

async fn epoch(database_url: &str) -> i64 {
    let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT epoch FROM events WHERE id = ?")
        .bind(EVENT)
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

async fn owner_frozen(profile: &Profile, seed: u64) -> Goals {
    let scenario = "owner node frozen (SIGSTOP), two nodes";
    let mut goals = Goals::new(scenario, seed);
    let mut random = Random::new(seed);
    let redis = PrivateRedis::start().await;
    // Node b in this process; node a, the owner, a real process that can be frozen.
    let mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    let b = spawn_app_on(&database_url, as_cluster_node(&redis, "node-b", LEASE_TTL_MS)).await;
    let a_process =
        start_process_node(&process_environment(&database_url, Some(&redis), "node-a", LEASE_TTL_MS)).await;
    let a = TestApp::attach(a_process.port);
    // Seats for about half the registrations: the event sells out during the outage, so that
    // two owners in turn must not sell more than the capacity between them.
    let outage = profile.outage.max(Duration::from_millis(LEASE_TTL_MS + 2_000));
    let seats =
        profile.rate_per_second * (1 + outage.as_secs() as u32 / 2) + OWNER_BURST_REGISTRATIONS as u32;
    a.create_event(race(EVENT, seats, 0)).await;
    first_registration(&a).await;

    let trickle = Trickle::start(EVENT, vec![a.port, b.port], profile.rate_per_second, random.next_u64());
    tokio::time::sleep(WARM_UP + Duration::from_millis(random.below(500))).await;
    // Freeze the owner in the middle of committing a burst, as in the runs where a frozen
    // owner's open transaction held the event row's lock against the new owner.
    trickle.burst(a.port, OWNER_BURST_REGISTRATIONS);
    tokio::time::sleep(Duration::from_millis(2 + random.below(30))).await;
    // Registrants stop reaching the frozen node (a load balancer's health check would see to
    // it); what was sent to it stays in flight until it thaws.
    trickle.aim_at(vec![b.port]);
    let fault_started = Instant::now();
    a_process.freeze();
    tokio::time::sleep(outage).await;
    a_process.thaw();
    let fault_ended = Instant::now();
    trickle.aim_at(vec![a.port, b.port]);
    let (recovered, probes_after) =
        served_again(EVENT, &[a.port, b.port], fault_ended, SERVED_AGAIN_PATIENCE).await;
    tokio::time::sleep(AFTERMATH.saturating_sub(fault_ended.elapsed())).await;
    let mut samples = trickle.stop().await;
    samples.extend(probes_after);

    let during: Vec<&Sample> = started_within(&samples, fault_started, fault_ended)
        .into_iter()
        .filter(|sample| sample.port == b.port)
        .collect();
    // Served by b itself: a decision without a relaying owner.
    let taken_over_ms = during
        .iter()
        .filter(|sample| {
            sample.is_decided() && sample.answer.as_ref().is_ok_and(|answer| answer.owner.is_none())
        })
        .map(|sample| sample.finished().saturating_duration_since(fault_started).as_millis())
        .min();
    let forwarded: Vec<&Sample> = during
        .iter()
        .copied()
        .filter(|sample| {
            taken_over_ms.is_none_or(|ms| sample.started < fault_started + Duration::from_millis(ms as u64))
        })
        .collect();
    println!(
        "{}",
        figures_line(
            scenario,
            seed,
            profile.name,
            &during,
            (recovered, "SIGCONT to the owner"),
            &format!(
                "owner frozen {} ms; lease TTL {LEASE_TTL_MS} ms; served by the other node {} after the freeze; before that, p99 {} ms",
                outage.as_millis(),
                taken_over_ms.map_or("never".into(), |ms| format!("{ms} ms")),
                latency_percentile_ms(&forwarded, 99.0)
            ),
        )
    );

    // kept by: forwarding timeouts/breaker (forwarded requests answered ≤ 1 s)
    check_every_answer(&mut goals, &during, u128::from(FORWARD_ANSWER_MS_MAX + ANSWER_MARGIN_MS));
    let takeover_bound_ms = u128::from(LEASE_TTL_MS + 1_000);
    // kept by: takeover not blocked by a frozen owner's transaction (served ≤ TTL + 1 s)
    goals.check(taken_over_ms.is_some_and(|ms| ms <= takeover_bound_ms), "the other node serves within the lease TTL + 1 s", || {
        format!("the other node served the event {taken_over_ms:?} ms after the owner froze (bound {takeover_bound_ms} ms)")
    });
    let takeover_deadline = fault_started + Duration::from_millis(takeover_bound_ms as u64);
    for sample in during.iter().filter(|sample| !sample.retry && sample.started >= takeover_deadline) {
        // kept by: takeover not blocked by a frozen owner's transaction
        goals.check(sample.is_decided(), "served by the other node after the lease TTL + 1 s", || {
            format!("not served after the takeover bound: {}", sample.describe())
        });
    }
    // What the frozen node answers once it thaws must be true too (the store check below) and
    // allowed; it cannot answer while frozen, so no latency bound for those.
    for sample in samples.iter().filter(|sample| sample.port == a.port && sample.started < fault_started) {
        goals.check(
            sample.answer.is_err() || sample.is_allowed_during_a_fault(),
            "the thawed owner's answers are allowed ones",
            || format!("the thawed owner answered: {}", sample.describe()),
        );
    }
    check_recovered(&mut goals, &samples, fault_ended, "the owner thawed");
    let retries = retry_undecided_keys(&mut goals, &samples).await;
    let everything: Vec<Sample> = samples.into_iter().chain(retries).collect();
    check_store(&database_url, EVENT, &everything, &mut goals).await;
    goals.check(epoch(&database_url).await >= 2, "the other node loaded the event under a new epoch", || {
        "the event was never loaded by a second owner".into()
    });
    drop(a_process);
    goals
}

// ---------------------------------------------------------------------------------------------
// (e): kill -9 of a node, restarted with the same node id
// ---------------------------------------------------------------------------------------------

/// Long, so that a restarted node that waits out its previous life's lease is plainly seen.
const RESTART_LEASE_TTL_MS: u64 = 5_000;

#[actix_rt::test]
async fn a_node_killed_and_restarted_with_its_node_id_serves_its_events_within_a_second_of_being_ready() {
    every_seed(async |profile, seed| node_killed_and_restarted(profile, seed).await).await;
}

async fn node_killed_and_restarted(profile: &Profile, seed: u64) -> Goals {
    let scenario = "node killed (kill -9), restarted with its node id";
    let mut goals = Goals::new(scenario, seed);
    let mut random = Random::new(seed);
    let redis = PrivateRedis::start().await;
    let mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    let mut node =
        start_process_node(&process_environment(&database_url, Some(&redis), "node-a", RESTART_LEASE_TTL_MS))
            .await;
    let client = TestApp::attach(node.port);
    client.create_event(race(EVENT, SEATS, 0)).await;
    first_registration(&client).await;

    let trickle = Trickle::start(EVENT, vec![node.port], profile.rate_per_second, random.next_u64());
    tokio::time::sleep(WARM_UP + Duration::from_millis(random.below(500))).await;
    let killed = Instant::now();
    node.kill();
    tokio::time::sleep(Duration::from_millis(random.below(500))).await;
    node.restart().await;
    let ready = wait_until_ready(node.port, Duration::from_secs(20)).await;
    let ready_at = ready.unwrap_or_else(Instant::now);
    let (recovered, probes_after) = served_again(EVENT, &[node.port], ready_at, SERVED_AGAIN_PATIENCE).await;
    tokio::time::sleep(AFTERMATH.saturating_sub(ready_at.elapsed())).await;
    let mut samples = trickle.stop().await;
    samples.extend(probes_after);

    let after_ready = started_within(&samples, ready_at, Instant::now());
    let down_ms = ready_at.saturating_duration_since(killed).as_millis();
    println!(
        "{}",
        figures_line(
            scenario,
            seed,
            profile.name,
            &after_ready,
            (recovered, "/readyz said 200"),
            &format!(
                "(\"during\" = after /readyz said 200) lease TTL {RESTART_LEASE_TTL_MS} ms; killed to ready {down_ms} ms"
            ),
        )
    );

    goals.check(ready.is_some(), "the restarted node says ready", || {
        "the restarted node never said ready".into()
    });
    check_every_answer(&mut goals, &after_ready, u128::from(REQUEST_TIMEOUT_MS + ANSWER_MARGIN_MS));
    // kept by: same-node-id restart recognizes its previous life's lease (served ≤ 1 s after ready)
    check_recovered(&mut goals, &samples, ready_at, "/readyz said 200");
    let retries = retry_undecided_keys(&mut goals, &samples).await;
    let everything: Vec<Sample> = samples.into_iter().chain(retries).collect();
    check_store(&database_url, EVENT, &everything, &mut goals).await;
    drop(node);
    goals
}

// ---------------------------------------------------------------------------------------------
// (f): nodes started together on a fresh database
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn nodes_started_at_the_same_moment_on_a_fresh_database_all_come_up() {
    every_seed(async |profile, seed| nodes_started_together(profile, seed).await).await;
}

async fn nodes_started_together(profile: &Profile, seed: u64) -> Goals {
    let scenario = "nodes started together on a fresh database";
    let mut goals = Goals::new(scenario, seed);
    let redis = PrivateRedis::start().await;
    let mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    let count = profile.nodes_started_together;
    // The seed shuffles which node id starts first; they all start within a few ms.
    let mut random = Random::new(seed);
    let offset = random.below(count as u64) as usize;
    let environments: Vec<Vec<(String, String)>> = (0..count)
        .map(|n| {
            process_environment(
                &database_url,
                Some(&redis),
                &format!("node-{}", (n + offset) % count),
                LEASE_TTL_MS,
            )
        })
        .collect();
    let started = Instant::now();
    let starts = environments.iter().map(|environment| async move {
        let pairs: Vec<(&str, &str)> =
            environment.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        KuotaProcess::try_start(&pairs).await
    });
    let nodes = futures_util::future::join_all(starts).await;
    let mut ready = Vec::new();
    for node in nodes.iter().flatten() {
        ready.push(wait_until_ready(node.port, Duration::from_secs(20)).await);
    }
    let up = ready.iter().flatten().count();
    let all_ready_ms =
        ready.iter().flatten().max().map(|last| last.saturating_duration_since(started).as_millis());
    println!(
        "fault-figures | {scenario} | {}, seed {seed} | {up} of {count} nodes up and ready | all ready {} after the start",
        profile.name,
        all_ready_ms.map_or("never".into(), |ms| format!("{ms} ms"))
    );
    for node in &nodes {
        // kept by: migrations under a lock (nodes start together)
        goals.check(node.is_ok(), "every node started together comes up", || {
            format!("a node did not come up: {}", node.as_ref().err().cloned().unwrap_or_default())
        });
    }
    goals.check(up == count, "every node started together says ready", || {
        format!("{up} of {count} nodes said ready")
    });
    goals
}
