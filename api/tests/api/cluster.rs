//! Two nodes over one MariaDB database and one Redis prefix: the event's lease elects one owner,
//! the other node forwards to it, and ownership moves when the owner stops or loses its lease.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use super::support::{
    ADMIN_TOKEN, Backend, Response, SharedRedis, TestApp, race, redis_url, registration, spawn_app_on,
    spawn_app_with,
};

impl SharedRedis {
    fn lease_key(&self, event: &str) -> String {
        format!("{}lease:event:{event}", self.prefix)
    }

    /// The node id in the event's lease, if any.
    fn lease_holder(&self, event: &str) -> Option<String> {
        let value: Option<String> =
            redis::cmd("GET").arg(self.lease_key(event)).query(&mut self.connection()).unwrap();
        value.and_then(|value| value.split(' ').nth(1).map(str::to_owned))
    }
}

/// A node of the cluster: same Redis prefix, its own id, advertising its real (bound) port.
fn as_node<'a>(
    redis: &'a SharedRedis,
    node_id: &'a str,
    lease_ttl_ms: u64,
) -> impl FnOnce(&mut kuota_api::configuration::Settings) + 'a {
    move |settings| {
        redis.join(settings, node_id);
        settings.advertise_url = "http://127.0.0.1:0".into();
        settings.lease_ttl_ms = lease_ttl_ms;
    }
}

async fn two_nodes(redis: &SharedRedis, lease_ttl_ms: u64) -> (TestApp, TestApp) {
    let a = spawn_app_with(Backend::MariaDb, as_node(redis, "node-a", lease_ttl_ms)).await;
    let b = spawn_app_on(&a.database_url, as_node(redis, "node-b", lease_ttl_ms)).await;
    (a, b)
}

async fn database(app: &TestApp) -> sqlx::MySqlConnection {
    sqlx::MySqlConnection::connect(&app.database_url).await.expect("MariaDB answers")
}

async fn confirmed_rows(app: &TestApp, event: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM registrations WHERE event_id = ? AND status = 'confirmed'")
        .bind(event)
        .fetch_one(&mut database(app).await)
        .await
        .unwrap()
}

/// How often the event was loaded, i.e. how many actors ever ran it.
async fn epoch(app: &TestApp, event: &str) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM events WHERE id = ?")
        .bind(event)
        .fetch_one(&mut database(app).await)
        .await
        .unwrap()
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

#[actix_rt::test]
async fn two_nodes_sell_every_seat_once_through_one_owner() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    let seats = 6;
    a.create_event(race("race", seats, 0)).await;
    let (mut confirmed, mut sold_out) = (0, 0);
    for n in 0..15 {
        let node = if n % 2 == 0 { &a } else { &b };
        let response =
            node.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
        match (response.status, response.code_if_problem().as_str()) {
            (201, _) => confirmed += 1,
            (409, "sold_out") => sold_out += 1,
            _ => panic!("registration {n} got {}: {}", response.status, text(&response)),
        }
        if n % 2 == 1 {
            assert_eq!(response.header("kuota-owner"), Some("node-a"), "node b forwards to the owner");
        }
    }
    assert_eq!((confirmed, sold_out), (seats, 15 - seats));
    assert_eq!(confirmed_rows(&a, "race").await, i64::from(seats));
    assert_eq!(epoch(&a, "race").await, 1, "only node a ever loaded the event");
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-a"));
    // Reads that need the actor are forwarded as well, with their caching headers.
    let via_b = b.get("/v1/events/race", &[]).await;
    assert_eq!(via_b.status, 200, "{}", text(&via_b));
    assert_eq!(via_b.json()["status"], "sold_out");
    let etag = via_b.header("etag").expect("an ETag is relayed").to_string();
    let unchanged = b.get("/v1/events/race", &[("If-None-Match", &etag)]).await;
    assert_eq!(unchanged.status, 304);
    // The stream never ends, so a node that does not own the event sends the client over.
    let stream = b.get("/v1/events/race/stream", &[]).await;
    assert_eq!(stream.status, 307);
    assert_eq!(
        stream.header("location"),
        Some(format!("http://127.0.0.1:{}/v1/events/race/stream", a.port).as_str())
    );
}

#[actix_rt::test]
async fn a_replay_through_the_other_node_is_the_same_answer() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 1, 0)).await;
    let first = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(first.status, 201, "{}", text(&first));
    let replayed = a.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!((replayed.status, &replayed.body), (first.status, &first.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    let replayed_again = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!((replayed_again.status, &replayed_again.body), (first.status, &first.body));
    // The registrant reads and cancels through either node with their token.
    let token = first.json()["access_token"].as_str().unwrap().to_string();
    let id = first.json()["id"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let read = b.get(&format!("/v1/registrations/{id}"), &[("Authorization", &bearer)]).await;
    assert_eq!((read.status, read.json()["status"].clone()), (200, Value::from("confirmed")));
    let cancelled =
        b.request("DELETE", &format!("/v1/registrations/{id}"), &[("Authorization", &bearer)], None).await;
    assert_eq!((cancelled.status, cancelled.json()["status"].clone()), (200, Value::from("cancelled")));
    let again = b.register("race", "k2", &registration("10K", "bo@example.org")).await;
    assert_eq!(again.status, 201, "the cancelled seat is free again: {}", text(&again));
}

/// Registers, retrying the 503s of a handover (the client's part of the contract).
async fn register_until_decided(node: &TestApp, key: &str, email: &str) -> Response {
    for _ in 0..50 {
        let response = node.register("race", key, &registration("10K", email)).await;
        if response.status != 503 {
            return response;
        }
        assert!(response.header("retry-after").is_some(), "a 503 says when to retry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} was refused with 503 for 5 s");
}

#[actix_rt::test]
async fn when_the_owner_loses_its_lease_the_event_is_taken_anew_without_overselling() {
    let redis = SharedRedis::new();
    // A short lease, so that the former owner notices the loss within a few hundred ms.
    let (a, b) = two_nodes(&redis, 1_000).await;
    let seats = 8;
    a.create_event(race("race", seats, 0)).await;
    for n in 0..4 {
        let node = if n % 2 == 0 { &a } else { &b };
        assert_eq!(
            register_until_decided(node, &format!("k{n}"), &format!("r{n}@example.org")).await.status,
            201
        );
    }
    // Simulate the loss (an operator's FLUSH, a Redis failover that lost the key).
    let _: i64 = redis::cmd("DEL").arg(redis.lease_key("race")).query(&mut redis.connection()).unwrap();
    let (mut confirmed, mut sold_out) = (4, 0);
    let mut n = 4;
    let started = Instant::now();
    // Node a serves on until its renewal finds the lease gone (node b forwards to it for as
    // long as it remembers it as the owner); then whichever node claims first takes the lease.
    while n < 20 || redis.lease_holder("race").is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "nobody took the free lease");
        let node = if n % 2 == 1 { &a } else { &b };
        let response = register_until_decided(node, &format!("k{n}"), &format!("r{n}@example.org")).await;
        match (response.status, response.code_if_problem().as_str()) {
            (201, _) => confirmed += 1,
            (409, "sold_out") => sold_out += 1,
            _ => panic!("registration {n} got {}: {}", response.status, text(&response)),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((confirmed, sold_out), (seats, n - seats));
    assert_eq!(confirmed_rows(&a, "race").await, i64::from(seats), "never more rows than seats");
    let holder = redis.lease_holder("race");
    assert!(matches!(holder.as_deref(), Some("node-a" | "node-b")), "held by {holder:?}");
    assert!(epoch(&a, "race").await >= 2, "the new holder loaded the event under a new epoch");
}

#[actix_rt::test]
async fn a_forwarded_request_is_never_forwarded_again() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 5, 0)).await;
    let secret: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = 'token_secret'")
        .fetch_one(&mut database(&a).await)
        .await
        .unwrap();
    let token = kuota_api::cluster::forward_token(secret.as_bytes());
    // As if a third node had forwarded to b, believing b the owner.
    let headers = [
        ("Idempotency-Key", "k1"),
        ("Kuota-Forwarded-By", "node-c"),
        ("Kuota-Forward-Token", token.as_str()),
    ];
    let refused =
        b.post_json("/v1/events/race/registrations", &headers, &registration("10K", "ana@example.org")).await;
    assert_eq!((refused.status, refused.code().as_str()), (503, "overloaded"), "{}", text(&refused));
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("kuota-owner"), None, "answered by b itself, not relayed");
    assert_eq!(refused.header("kuota-not-owner"), Some("node-b"), "the forwarder learns its mistake");
    assert_eq!(confirmed_rows(&a, "race").await, 0, "the owner never saw it");
    // A client cannot pass for a node: without the token the marker is ignored and the request
    // is forwarded like any other.
    let spoofed =
        [("Idempotency-Key", "k2"), ("Kuota-Forwarded-By", "node-c"), ("Kuota-Forward-Token", "guess")];
    let forwarded =
        b.post_json("/v1/events/race/registrations", &spoofed, &registration("10K", "bo@example.org")).await;
    assert_eq!(forwarded.status, 201, "{}", text(&forwarded));
    assert_eq!(forwarded.header("kuota-owner"), Some("node-a"));
}

#[actix_rt::test]
async fn an_owner_that_does_not_answer_is_a_prompt_503() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.admin("POST", "/v1/events", Some(&race("race", 5, 0))).await;
    // The lease names a node that is gone (it crashed holding it): nothing listens there.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _: i64 = redis::cmd("DEL").arg(redis.lease_key("race")).query(&mut redis.connection()).unwrap();
    let _: () = redis::cmd("SET")
        .arg(redis.lease_key("race"))
        .arg(format!("token node-x http://127.0.0.1:{gone}"))
        .arg("PX")
        .arg(10_000)
        .query(&mut redis.connection())
        .unwrap();
    let started = std::time::Instant::now();
    let refused = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!((refused.status, refused.code().as_str()), (503, "overloaded"), "{}", text(&refused));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(text(&refused).contains("did not answer"), "{}", text(&refused));
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the connect timeout");
    drop(a);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node run by the real binary (so that it can be signalled), over `database_url` and the
/// test's Redis prefix, once it accepts connections.
async fn spawn_binary_node(
    redis: &SharedRedis,
    database_url: &str,
    node_id: &str,
    lease_ttl_ms: u64,
) -> (std::process::Child, TestApp) {
    let port = free_port();
    let process = Command::new(env!("CARGO_BIN_EXE_kuota"))
        .env("KUOTA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUOTA_ADVERTISE_URL", format!("http://127.0.0.1:{port}"))
        .env("KUOTA_NODE_ID", node_id)
        .env("KUOTA_DATABASE_URL", database_url)
        .env("KUOTA_REDIS_URL", redis_url())
        .env("KUOTA_REDIS_PREFIX", &redis.prefix)
        .env("KUOTA_LEASE_TTL_MS", lease_ttl_ms.to_string())
        .env("KUOTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KUOTA_RATE_LIMIT_IP_PER_SECOND", "0")
        .env("KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE", "0")
        .env("KUOTA_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = TestApp::attach(port);
    let mut started = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "{node_id} did not start");
    (process, node)
}

#[actix_rt::test]
async fn after_the_owner_stops_gracefully_the_other_node_takes_over_at_once() {
    let redis = SharedRedis::new();
    // Node b in this process; node a is the real binary, so that it can be stopped with SIGTERM.
    // The lease is long: only a release at shutdown lets b take over without waiting for it.
    let b = spawn_app_with(Backend::MariaDb, as_node(&redis, "node-b", 60_000)).await;
    let (mut a_process, a) = spawn_binary_node(&redis, &b.database_url, "node-a", 60_000).await;
    let seats = 6;
    a.create_event(race("race", seats, 0)).await;
    for n in 0..4 {
        let node = if n % 2 == 0 { &a } else { &b };
        let response =
            node.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
        assert_eq!(response.status, 201, "{}", text(&response));
    }
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-a"));
    let killed = Command::new("kill").args(["-TERM", &a_process.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..300 {
        if let Some(status) = a_process.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = exited.unwrap_or_else(|| {
        let _ = a_process.kill();
        panic!("node a did not stop within 15 s of SIGTERM")
    });
    assert!(exited.success(), "exit status {exited:?}");
    assert_eq!(redis.lease_holder("race"), None, "node a released its lease after draining");
    let (mut confirmed, mut sold_out) = (4, 0);
    for n in 4..12 {
        let response =
            b.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
        match (response.status, response.code_if_problem().as_str()) {
            (201, _) => confirmed += 1,
            (409, "sold_out") => sold_out += 1,
            _ => panic!("registration {n} got {}: {}", response.status, text(&response)),
        }
    }
    assert_eq!((confirmed, sold_out), (seats, 12 - seats));
    assert_eq!(confirmed_rows(&b, "race").await, i64::from(seats));
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-b"));
    // A replay of what node a decided, now answered by node b.
    let replay = b.register("race", "k0", &registration("10K", "r0@example.org")).await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, Some("true")));
}

/// Room for scheduling on a loaded machine (load average near 10 on 2 cores) past a deadline.
const LOADED_MACHINE_SLACK_MS: u64 = 300;

/// Points the event's lease at `url` under `node_id`, as if that node had taken it.
fn lease_to(redis: &SharedRedis, event: &str, node_id: &str, url: &str) {
    let _: () = redis::cmd("SET")
        .arg(redis.lease_key(event))
        .arg(format!("token {node_id} {url}"))
        .arg("PX")
        .arg(10_000)
        .query(&mut redis.connection())
        .unwrap();
}

/// A node frozen in place: its kernel accepts connections, the process reads nothing and never
/// answers. Counts the connections accepted.
async fn frozen_owner() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

#[actix_rt::test]
async fn forwarding_to_a_frozen_owner_is_a_503_within_a_second_then_refused_at_once() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 5, 0)).await;
    let (url, accepted) = frozen_owner().await;
    lease_to(&redis, "race", "node-x", &url);
    let started = Instant::now();
    let refused = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    let waited = started.elapsed();
    assert_eq!((refused.status, refused.code().as_str()), (503, "overloaded"), "{}", text(&refused));
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The forward's deadline, with room for a loaded machine (on an idle one: 0.90 s).
    let bound =
        Duration::from_millis(kuota_api::forward::FORWARD_ANSWER_TIMEOUT_MS + LOADED_MACHINE_SLACK_MS);
    assert!(waited < bound, "answered within the forward deadline, not {waited:?}");
    // The breaker: nothing more is sent to the frozen node, and the refusal is immediate.
    for n in 2..6 {
        let started = Instant::now();
        let refused = b.register("race", &format!("k{n}"), &registration("10K", "bo@example.org")).await;
        assert_eq!((refused.status, refused.code().as_str()), (503, "overloaded"), "{}", text(&refused));
        assert!(refused.header("retry-after").is_some());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "refused at once, not {:?}",
            started.elapsed()
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "only the first request reached the frozen node");
    drop(a);
}

#[actix_rt::test]
async fn a_failed_forward_forgets_the_owner_so_the_next_request_asks_the_lease_again() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 5, 0)).await;
    // The lease names a node that is gone: nothing listens at its address.
    lease_to(&redis, "race", "node-x", &format!("http://127.0.0.1:{}", free_port()));
    let refused = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(refused.status, 503, "{}", text(&refused));
    // The lease runs out. Had node b kept node x as the owner, it would forward there (or its
    // breaker would refuse) until the entry expired; it asks the lease instead, and takes it.
    let _: i64 = redis::cmd("DEL").arg(redis.lease_key("race")).query(&mut redis.connection()).unwrap();
    let served = b.register("race", "k2", &registration("10K", "bo@example.org")).await;
    assert_eq!(served.status, 201, "{}", text(&served));
    assert_eq!(served.header("kuota-owner"), None, "decided by node b itself");
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-b"));
    drop(a);
}

#[actix_rt::test]
async fn many_forwarded_requests_over_kept_alive_connections_each_get_their_own_answer() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    let seats = 40;
    a.create_event(race("race", seats, 0)).await;
    let b = &b;
    let register = |n: usize| async move {
        let email = format!("r{n}@example.org");
        (n, b.register("race", &format!("k{n}"), &registration("10K", &email)).await)
    };
    let mut answers = Vec::new();
    // Eight at a time, so that node b keeps several connections to node a, and reuses them.
    for wave in 0..8 {
        answers.extend(futures_util::future::join_all((0..8).map(|i| register(wave * 8 + i))).await);
    }
    let (mut confirmed, mut sold_out) = (0, 0);
    let mut ids = std::collections::HashSet::new();
    for (n, response) in &answers {
        assert_eq!(response.header("kuota-owner"), Some("node-a"), "{}", text(response));
        match (response.status, response.code_if_problem().as_str()) {
            (201, _) => {
                confirmed += 1;
                assert!(ids.insert(response.json()["id"].as_str().unwrap().to_string()), "an id once");
            }
            (409, "sold_out") => sold_out += 1,
            _ => panic!("registration {n} got {}: {}", response.status, text(response)),
        }
    }
    assert_eq!((confirmed, sold_out), (seats, 64 - seats));
    assert_eq!(confirmed_rows(&a, "race").await, i64::from(seats));
    // Each registrant reads their own registration through node b with the token they got.
    for (n, first) in answers.iter().filter(|(_, response)| response.status == 201) {
        let id = first.json()["id"].as_str().unwrap().to_string();
        let bearer = format!("Bearer {}", first.json()["access_token"].as_str().unwrap());
        let read = b.get(&format!("/v1/registrations/{id}"), &[("Authorization", &bearer)]).await;
        assert_eq!(read.status, 200, "{}", text(&read));
        assert_eq!(read.json()["email"], format!("r{n}@example.org"), "the answer to this request");
    }
    // Replays through node b answer each key as before.
    for (n, first) in answers.iter().take(16) {
        let (_, replay) = register(*n).await;
        assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    }
}

/// A node that has just handed its events over: it gives the lease up (deletes it) and answers
/// every forwarded request as a former owner does, 503 marked `Kuota-Not-Owner`. Counts the
/// requests it answered.
fn former_owner(redis: &SharedRedis, event: &str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let answered = Arc::new(AtomicUsize::new(0));
    let counted = answered.clone();
    let lease_key = redis.lease_key(event);
    let mut connection = redis.connection();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        while let Ok((mut stream, _)) = listener.accept() {
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stream.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..read]);
                let Some(head_end) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse().unwrap());
                if received.len() < head_end + 4 + length {
                    continue;
                }
                received.drain(..head_end + 4 + length);
                let _: i64 = redis::cmd("DEL").arg(&lease_key).query(&mut connection).unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"code":"overloaded"}"#;
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
                     retry-after: 1\r\nkuota-not-owner: node-x\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (url, answered)
}

#[actix_rt::test]
async fn a_handover_that_the_remembered_owner_reports_is_followed_at_once() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 5, 0)).await;
    let (url, answered) = former_owner(&redis, "race");
    lease_to(&redis, "race", "node-x", &url);
    // Node b learns node x as the owner, forwards, hears that x is not the owner any more,
    // looks again, finds the lease free, takes it and decides the registration itself.
    let served = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(served.status, 201, "{}", text(&served));
    assert_eq!(served.header("kuota-owner"), None, "decided by node b itself");
    assert_eq!(served.header("kuota-not-owner"), None);
    assert_eq!(answered.load(Ordering::SeqCst), 1, "node x was asked once");
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-b"));
    let replay = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!((replay.status, &replay.body), (201, &served.body), "the body was read once, and kept");
    drop(a);
}

#[actix_rt::test]
async fn the_events_of_a_frozen_owner_are_taken_over_as_soon_as_its_lease_runs_out() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(race("race", 100, 0)).await;
    let (url, _accepted) = frozen_owner().await;
    // Node x's lease as it stood when node x froze: it runs out in 1.45 s, never renewed.
    let lease_ms = 1_450;
    let _: () = redis::cmd("SET")
        .arg(redis.lease_key("race"))
        .arg(format!("token node-x {url}"))
        .arg("PX")
        .arg(lease_ms)
        .query(&mut redis.connection())
        .unwrap();
    let runs_out = Instant::now() + Duration::from_millis(lease_ms);
    // The first registrant waits for the forward deadline, and node b stops sending to node x.
    let refused = b.register("race", "first", &registration("10K", "first@example.org")).await;
    assert_eq!(refused.status, 503, "{}", text(&refused));
    // Registrants keep coming every 20 ms, each on its own connection, as a crowd does (one of
    // them may be the breaker's probe and wait up to the forward deadline).
    let first_served: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut registrants = Vec::new();
    for n in 0..200 {
        if first_served.lock().unwrap().is_some() {
            break;
        }
        let (port, first_served) = (b.port, first_served.clone());
        registrants.push(actix_rt::spawn(async move {
            let sent = Instant::now();
            let email = format!("r{n}@example.org");
            let response =
                TestApp::attach(port).register("race", &format!("k{n}"), &registration("10K", &email)).await;
            match response.status {
                201 => {
                    let mut first = first_served.lock().unwrap();
                    *first = Some(first.map_or(sent, |first| first.min(sent)));
                }
                503 => assert!(response.header("retry-after").is_some()),
                status => panic!("registration {n} got {status}: {}", text(&response)),
            }
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for registrant in registrants {
        registrant.await.unwrap();
    }
    let first = first_served.lock().unwrap().expect("node b served once node x's lease ran out");
    // Node b does not wait for its remembered entry to expire (up to 500 ms) while node x fails.
    let late = first.saturating_duration_since(runs_out);
    // Without the faster re-reading, 470 ms; with it, tens of ms, plus room for a loaded machine.
    assert!(late < Duration::from_millis(350), "served {late:?} after the lease ran out");
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-b"));
    drop(a);
}

/// How long the first request to a restarted node may take: a claim that takes the previous
/// life's lease over and a load, with room for a loaded machine. Waiting the lease out would
/// take a minute here.
const RESTARTED_SERVES_WITHIN_MS: u64 = 1_000;

#[actix_rt::test]
async fn a_node_killed_and_restarted_under_the_same_id_serves_its_events_at_once() {
    let redis = SharedRedis::new();
    // Node b only provides the database here; node a's previous life is the real binary, so
    // that it can be killed with SIGKILL while it holds the event's (long) lease.
    let b = spawn_app_with(Backend::MariaDb, as_node(&redis, "node-b", 60_000)).await;
    let (mut previous_life, a) = spawn_binary_node(&redis, &b.database_url, "node-a", 60_000).await;
    a.create_event(race("race", 5, 0)).await;
    let first = a.register("race", "k0", &registration("10K", "r0@example.org")).await;
    assert_eq!(first.status, 201, "{}", text(&first));
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-a"));
    previous_life.kill().expect("the previous life is ours to kill");
    previous_life.wait().expect("it exits");
    let epoch_before = epoch(&b, "race").await;

    let restarted = spawn_app_on(&b.database_url, as_node(&redis, "node-a", 60_000)).await;
    let started = std::time::Instant::now();
    let response = restarted.register("race", "k1", &registration("10K", "r1@example.org")).await;
    let waited = started.elapsed();

    assert_eq!(response.status, 201, "{}", text(&response));
    assert!(waited < Duration::from_millis(RESTARTED_SERVES_WITHIN_MS), "the first request took {waited:?}");
    assert_eq!(redis.lease_holder("race").as_deref(), Some("node-a"));
    assert_eq!(epoch(&b, "race").await, epoch_before + 1, "the new life loaded under a new epoch");
    assert_eq!(confirmed_rows(&b, "race").await, 2);
}

#[actix_rt::test]
async fn a_queue_is_held_by_the_owner_and_served_through_either_node() {
    use super::queue::{drawn, join, queued_race, register_with_pass, ticket};
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    a.create_event(queued_race("race", 1, 1_000, serde_json::json!({}))).await;
    let ana = join(&b, "race", "k-ana", "ana@example.org").await;
    assert_eq!(ana.status, 202, "{}", text(&ana));
    assert_eq!(ana.header("kuota-owner"), Some("node-a"), "node b forwards joins to the owner");
    let replay = join(&a, "race", "k-ana", "ana@example.org").await;
    assert_eq!(replay.body, ana.body, "the same answer through the owner");
    let ana = ana.json();
    let (id, token) = (ana["ticket_id"].as_str().unwrap(), ana["access_token"].as_str().unwrap());
    assert_eq!(drawn(&b, "race").await, drawn(&a, "race").await);
    let read = ticket(&b, id, token).await;
    assert_eq!((read.status, read.json()["status"].as_str()), (200, Some("admitted")));
    assert!(read.header("retry-after").is_some(), "headers are relayed");
    let pass = read.json()["pass"].as_str().unwrap().to_string();
    let seated = register_with_pass(&b, "race", "r1", &registration("10K", "ana@example.org"), &pass).await;
    assert_eq!(seated.status, 201, "{}", text(&seated));
    assert_eq!(epoch(&a, "race").await, 1, "only node a ever loaded the event");
}

#[actix_rt::test]
async fn a_percent_encoded_event_id_takes_the_same_way_to_the_owner() {
    let redis = SharedRedis::new();
    let (a, b) = two_nodes(&redis, 10_000).await;
    // Seats to spare: the event does not sell out, which this test is not about.
    a.create_event(race("race", 5, 0)).await;
    // `r%61ce` is `race`: node b forwards it to node a as it forwards `race`, not 503.
    let via_b = b
        .post_json(
            "/v1/events/r%61ce/registrations",
            &[("Idempotency-Key", "k1")],
            &registration("10K", "ana@example.org"),
        )
        .await;
    assert_eq!(via_b.status, 201, "{}", text(&via_b));
    assert_eq!(via_b.header("kuota-owner"), Some("node-a"), "forwarded to the owner");
    let replayed = b.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(
        (replayed.status, &replayed.body),
        (via_b.status, &via_b.body),
        "the same key, the same event"
    );
    // On the owner, the encoded id is answered here, as the plain one is.
    let on_a = a
        .post_json(
            "/v1/events/%72ace/registrations",
            &[("Idempotency-Key", "k2")],
            &registration("10K", "bo@example.org"),
        )
        .await;
    assert_eq!(on_a.status, 201, "{}", text(&on_a));
    assert_eq!(on_a.header("kuota-owner"), None, "answered by the owner itself");
    // The other routes of the event take the same way.
    let read = b.get("/v1/events/r%61ce", &[]).await;
    assert_eq!((read.status, read.header("kuota-owner")), (200, Some("node-a")), "{}", text(&read));
    assert_eq!(epoch(&a, "race").await, 1, "only node a ever loaded the event");
}
