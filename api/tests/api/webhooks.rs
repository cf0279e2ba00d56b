//! Webhooks against a real receiver: an actix-web server on a loopback port in this process,
//! listed in `KUOTA_WEBHOOK_ALLOW_HOSTS`, whose answers each test scripts. Signatures are
//! checked with a few lines of `hmac` here, not with the sender's code. The retry schedule is
//! compressed to fractions of a second by its own setting, and the attempt timeout shortened
//! by its own; those are real timers in a real HTTP client and server (a paused clock would
//! move on whenever both wait on their sockets), and every wait here has a deadline. The
//! fan-out's round deadline is tested on a paused clock against a frozen store: nothing there
//! answers, so the clock moves only to the deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use kuota_api::configuration::Settings;
use kuota_engine::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use sha2::Sha256;

use super::private_servers::{KuotaProcess, PrivateMariaDb};
use super::support::{
    Backend, SharedRedis, TestApp, race, registration, spawn_app_on, spawn_app_with, spawn_app_with_clock,
};

/// How long a test waits for deliveries before it fails.
const DELIVERY_DEADLINE_SECONDS: u64 = 30;

/// What the receiver answers next; once the script is empty, 204.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// No answer until the sender gives up.
    Silence,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Default)]
struct ReceiverState {
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
    /// Webhook ids being answered right now, and whether one was ever answered twice at once.
    in_flight: Mutex<HashSet<String>>,
    overlapped: Mutex<bool>,
    /// How long each answer takes (to make concurrent deliveries overlap if they can).
    answer_delay: Mutex<Duration>,
}

struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), Arc::default()).await
    }

    async fn start_on(listener: TcpListener, state: Arc<ReceiverState>) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let shared = web::Data::from(state.clone());
        let server =
            HttpServer::new(move || App::new().app_data(shared.clone()).default_service(web::to(receive)))
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver { port, state, server: handle }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn script(&self, answers: &[Answer]) {
        self.state.script.lock().unwrap().extend(answers.iter().copied());
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(DELIVERY_DEADLINE_SECONDS);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {DELIVERY_DEADLINE_SECONDS} s; got {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(state: web::Data<ReceiverState>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        request.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string()
    };
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if !state.in_flight.lock().unwrap().insert(received.id.clone()) {
        *state.overlapped.lock().unwrap() = true;
    }
    let answer = state.script.lock().unwrap().pop_front().unwrap_or(Answer::Status(204));
    let delay = *state.answer_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    state.received.lock().unwrap().push(received.clone());
    state.in_flight.lock().unwrap().remove(&received.id);
    match answer {
        Answer::Status(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
        }
        // Parks this answer; the sender's timeout ends the request and the connection.
        Answer::Silence => std::future::pending().await,
    }
}

/// The spec's verification, written from the spec: HMAC-SHA256 of `id.timestamp.body` under
/// the secret's decoded bytes, base64, prefixed `v1,`; any of the space-separated signatures.
fn verify(secret: &str, received: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received.signature.split(' ').any(|signature| signature == expected)
}

fn body(received: &Received) -> Value {
    serde_json::from_str(&received.body).unwrap()
}

async fn webhook_app(backend: Backend, retry_schedule: &str) -> TestApp {
    spawn_app_with(backend, webhook_settings(retry_schedule)).await
}

/// Webhook delivery to this machine, with `retry_schedule`.
fn webhook_settings(retry_schedule: &str) -> impl FnOnce(&mut Settings) {
    let schedule = retry_schedule.to_string();
    move |settings| {
        settings.outbox_delivery = "webhooks".into();
        settings.webhook_allow_hosts = "127.0.0.1".into();
        settings.webhook_retry_schedule = schedule;
        settings.webhook_timeout_ms = 500;
    }
}

/// Creates an endpoint for `url` and `types`; returns its id and secret.
async fn create_endpoint(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let response =
        app.admin("POST", "/v1/webhooks", Some(&json!({ "url": url, "event_types": types }))).await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    let created = response.json();
    (created["id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string())
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    let response = app.admin("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(response.status, 200);
    response.json()
}

async fn wait_for_endpoint(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(DELIVERY_DEADLINE_SECONDS);
    loop {
        let read = endpoint(app, id).await;
        if done(&read) {
            return read;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DELIVERY_DEADLINE_SECONDS} s; {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ALL_TYPES: [&str; 7] = [
    "registration.created",
    "registration.confirmed",
    "registration.cancelled",
    "registration.expired",
    "registration.promoted",
    "event.sold_out",
    "queue.admitted",
];

#[actix_rt::test]
async fn every_event_type_reaches_a_real_receiver_signed() {
    let receiver = Receiver::start().await;
    let app = webhook_app(Backend::MariaDb, "0.1").await;
    let (_, secret) = create_endpoint(&app, &receiver.url(), &ALL_TYPES).await;
    // One seat with a one-second hold: a holds it (sold out), b waits, a is confirmed and then
    // cancelled, b is promoted to a hold that expires.
    app.create_event(race("race", 1, 1)).await;
    let held = app.register("race", "k-a", &registration("10K", "a@x.org")).await;
    assert_eq!(held.status, 201);
    let a = held.json();
    let mut waiting = registration("10K", "b@x.org");
    waiting["waitlist"] = json!(true);
    assert_eq!(app.register("race", "k-b", &waiting).await.status, 202);
    let a_id = a["id"].as_str().unwrap();
    assert_eq!(app.admin("POST", &format!("/v1/registrations/{a_id}/confirm"), None).await.status, 200);
    // Queue admissions come from the queue, which writes them to the outbox as any entry.
    let mut connection =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(&app.database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, registration_number, kind, payload_json, available_at, created_at) \
         VALUES ('race', 0, 'queue_admitted', \
         '{\"ticket_id\":\"race.q1\",\"event_id\":\"race\",\"status\":\"admitted\",\"pass_expires_at\":1000}', 0, 0)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    receiver.wait_for("a's creation and confirmation", |received| received.len() >= 3).await;
    let token = format!("Bearer {}", a["access_token"].as_str().unwrap());
    let cancelled =
        app.request("DELETE", &format!("/v1/registrations/{a_id}"), &[("Authorization", &token)], None).await;
    assert_eq!(cancelled.status, 200);
    let received = receiver
        .wait_for("every event type", |received| {
            let types: HashSet<String> = received
                .iter()
                .map(|received| body(received)["type"].as_str().unwrap().to_string())
                .collect();
            ALL_TYPES.iter().all(|wanted| types.contains(*wanted))
        })
        .await;
    for delivery in &received {
        assert!(verify(&secret, delivery), "a bad signature: {delivery:?}");
        assert!(delivery.id.starts_with("msg_"));
        let payload = body(delivery);
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(!delivery.body.contains("access_token"), "{}", delivery.body);
    }
    let of_type = |wanted: &str| -> Vec<Value> {
        received.iter().map(body).filter(|payload| payload["type"] == wanted).collect()
    };
    // In order per registration only: a's and b's creations may arrive either way round.
    let created = of_type("registration.created");
    let created_a = created.iter().find(|payload| payload["data"]["id"] == a["id"]).expect("a's creation");
    assert_eq!(created_a["data"]["status"], "held");
    let created_b =
        created.iter().find(|payload| payload["data"]["email"] == "b@x.org").expect("b's creation");
    assert_eq!(created_b["data"]["status"], "waitlisted");
    assert_eq!(of_type("registration.confirmed")[0]["data"]["status"], "confirmed");
    assert_eq!(of_type("registration.cancelled")[0]["data"]["id"], a["id"]);
    assert_eq!(of_type("registration.promoted")[0]["data"]["email"], "b@x.org");
    assert_eq!(of_type("registration.expired")[0]["data"]["email"], "b@x.org");
    assert_eq!(of_type("event.sold_out")[0]["data"]["id"], "race");
    let admitted = &of_type("queue.admitted")[0]["data"];
    assert_eq!(admitted["ticket_id"], "race.q1");
    assert_eq!(admitted["pass_expires_at"], "1970-01-01T00:00:01.000Z", "as RFC 3339");
    // Messages of one registration arrive in their order.
    let a_types: Vec<String> = received
        .iter()
        .map(body)
        .filter(|payload| payload["data"]["id"] == a["id"])
        .map(|payload| payload["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(a_types, ["registration.created", "registration.confirmed", "registration.cancelled"]);
}

/// A real queued event: the ticket admitted at the draw reaches the receiver as `queue.admitted`,
/// with its pass's expiry and without the pass.
#[actix_rt::test]
async fn a_ticket_admitted_at_the_draw_is_announced_as_queue_admitted() {
    let receiver = Receiver::start().await;
    let clock = ManualClock::new(SystemClock.now());
    let app = spawn_app_with_clock(Backend::MariaDb, webhook_settings("0.1"), Arc::new(clock.clone())).await;
    create_endpoint(&app, &receiver.url(), &["queue.admitted"]).await;
    let opens_in = super::queue::OPENS_IN_MS;
    let created = app.create_event(super::queue::queued_race("opening", 1, opens_in, json!({}))).await;
    let joined = super::queue::join(&app, "opening", "k-ana", "ana@x.org").await;
    assert_eq!(joined.status, 202);
    let ticket_id = joined.json()["ticket_id"].as_str().unwrap().to_owned();
    super::queue::open(&clock, &created);
    super::queue::drawn(&app, "opening").await;
    let received = receiver.wait_for("the admission", |received| !received.is_empty()).await;
    let payload = body(&received[0]);
    assert_eq!(payload["type"], "queue.admitted");
    assert_eq!(
        (payload["data"]["ticket_id"].as_str(), payload["data"]["status"].as_str()),
        (Some(ticket_id.as_str()), Some("admitted"))
    );
    assert!(payload["data"]["pass_expires_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{payload}");
    assert!(payload["data"].get("pass").is_none(), "the pass is the registrant's: {payload}");
}

#[actix_rt::test]
async fn a_message_is_retried_after_a_500_and_a_timeout_with_the_same_id() {
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(500), Answer::Silence]);
    let app = webhook_app(Backend::Sqlite, "0.2,0.2,0.2").await;
    let (id, secret) = create_endpoint(&app, &receiver.url(), &["registration.created"]).await;
    app.create_event(race("race", 5, 0)).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "a@x.org")).await.status, 201);
    let read = wait_for_endpoint(&app, &id, "delivered at the third attempt", |read| {
        read["deliveries"]["succeeded"] == 1
    })
    .await;
    assert_eq!(read["failed_attempts"], 2);
    assert_eq!(read["deliveries"], json!({ "succeeded": 1, "pending": 0, "dead": 0 }));
    let received = receiver.received();
    assert_eq!(received.len(), 3, "{received:#?}");
    assert!(received.iter().all(|attempt| attempt.id == received[0].id && verify(&secret, attempt)));
}

#[actix_rt::test]
async fn a_message_is_dead_after_the_schedule_and_a_replay_sends_it_again() {
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(503), Answer::Status(502)]);
    let app = webhook_app(Backend::Sqlite, "0.1").await;
    let (id, _) = create_endpoint(&app, &receiver.url(), &["registration.created"]).await;
    app.create_event(race("race", 5, 0)).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "a@x.org")).await.status, 201);
    wait_for_endpoint(&app, &id, "dead after two attempts", |read| read["deliveries"]["dead"] == 1).await;
    let replay = app.admin("POST", &format!("/v1/webhooks/{id}/replay"), None).await;
    assert_eq!((replay.status, replay.json()["replayed"].clone()), (202, json!(1)));
    wait_for_endpoint(&app, &id, "delivered after the replay", |read| read["deliveries"]["succeeded"] == 1)
        .await;
    assert_eq!(receiver.received().len(), 3);
}

#[actix_rt::test]
async fn a_410_disables_the_endpoint_until_a_replay() {
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(410)]);
    let app = webhook_app(Backend::MariaDb, "0.1").await;
    let (id, _) = create_endpoint(&app, &receiver.url(), &["registration.created"]).await;
    app.create_event(race("race", 5, 0)).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "a@x.org")).await.status, 201);
    let read = wait_for_endpoint(&app, &id, "disabled", |read| read["disabled_reason"] == "gone").await;
    assert_eq!(read["deliveries"]["dead"], 1);
    assert_eq!(app.register("race", "k2", &registration("10K", "b@x.org")).await.status, 201);
    wait_for_endpoint(&app, &id, "the second message waits", |read| read["deliveries"]["pending"] == 1).await;
    assert_eq!(receiver.received().len(), 1, "a disabled endpoint gets nothing");
    assert_eq!(app.admin("POST", &format!("/v1/webhooks/{id}/replay"), None).await.status, 202);
    let read =
        wait_for_endpoint(&app, &id, "both delivered", |read| read["deliveries"]["succeeded"] == 2).await;
    assert_eq!(read["disabled_reason"], Value::Null);
}

#[actix_rt::test]
async fn nothing_is_lost_while_the_receiver_is_down() {
    // The receiver's port, reserved and closed: connections are refused until it comes up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let app = webhook_app(Backend::MariaDb, "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2").await;
    let (id, secret) =
        create_endpoint(&app, &format!("http://127.0.0.1:{port}/hooks"), &["registration.created"]).await;
    app.create_event(race("race", 50, 0)).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let answer =
            app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
        ids.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    wait_for_endpoint(&app, &id, "failing while down", |read| read["failed_attempts"].as_u64() >= Some(10))
        .await;
    let receiver = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), Arc::default()).await;
    let received = receiver
        .wait_for("every registration", |received| {
            let delivered: HashSet<String> = received
                .iter()
                .map(|received| body(received)["data"]["id"].as_str().unwrap().to_string())
                .collect();
            ids.iter().all(|id| delivered.contains(id))
        })
        .await;
    assert!(received.iter().all(|delivery| verify(&secret, delivery)));
    let read =
        wait_for_endpoint(&app, &id, "all settled", |read| read["deliveries"]["succeeded"] == 10).await;
    assert_eq!(read["deliveries"]["dead"], 0);
}

#[actix_rt::test]
async fn two_nodes_never_send_one_message_twice_at_once() {
    let receiver = Receiver::start().await;
    *receiver.state.answer_delay.lock().unwrap() = Duration::from_millis(30);
    let first = webhook_app(Backend::MariaDb, "0.1").await;
    let second = spawn_app_on(&first.database_url, |settings| {
        settings.node_id = "second".into();
        settings.outbox_delivery = "webhooks".into();
        settings.webhook_allow_hosts = "127.0.0.1".into();
        settings.webhook_retry_schedule = "0.1".into();
        settings.webhook_timeout_ms = 500;
    })
    .await;
    let (id, _) = create_endpoint(&first, &receiver.url(), &["registration.created"]).await;
    first.create_event(race("race", 100, 0)).await;
    for n in 0..40 {
        let answer =
            first.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
    }
    let received = receiver.wait_for("forty messages", |received| received.len() >= 40).await;
    wait_for_endpoint(&second, &id, "all settled", |read| read["deliveries"]["succeeded"] == 40).await;
    assert!(!*receiver.state.overlapped.lock().unwrap(), "one message was sent twice at once");
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for delivery in &received {
        *per_id.entry(&delivery.id).or_default() += 1;
    }
    assert_eq!(per_id.len(), 40);
    assert!(per_id.values().all(|count| *count == 1), "{per_id:?}");
    receiver.server.stop(true).await;
}

#[actix_rt::test]
async fn a_rotated_endpoint_is_signed_with_both_secrets_within_two_seconds_of_the_commit() {
    let receiver = Receiver::start().await;
    let app = webhook_app(Backend::Sqlite, "0.1").await;
    let (id, old) = create_endpoint(&app, &receiver.url(), &["registration.created"]).await;
    let rotated = app.admin("POST", &format!("/v1/webhooks/{id}/rotate"), None).await;
    assert_eq!(rotated.status, 200);
    let new = rotated.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    app.create_event(race("race", 5, 0)).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "a@x.org")).await.status, 201);
    let committed = Instant::now();
    let received = receiver.wait_for("one message", |received| !received.is_empty()).await;
    assert!(
        committed.elapsed() < Duration::from_secs(2),
        "the first attempt came {:?} after the commit",
        committed.elapsed()
    );
    assert!(verify(&old, &received[0]) && verify(&new, &received[0]));
    assert_eq!(received[0].signature.split(' ').count(), 2);
}

#[actix_rt::test]
async fn endpoints_are_listed_by_page_without_secrets_and_deleted() {
    let app = webhook_app(Backend::Sqlite, "0.1").await;
    let mut created = Vec::new();
    for n in 0..3 {
        // Listed hosts: creating them resolves no name.
        let url = format!("http://127.0.0.1:9/hooks{n}");
        created.push(create_endpoint(&app, &url, &["event.sold_out"]).await.0);
    }
    created.sort();
    let first = app.admin("GET", "/v1/webhooks?limit=2", None).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert!(first["items"][0].get("secret").is_none());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app.admin("GET", &format!("/v1/webhooks?limit=2&cursor={cursor}"), None).await.json();
    assert_eq!(second["items"][0]["id"], created[2].as_str());
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(app.admin("DELETE", &format!("/v1/webhooks/{}", created[0]), None).await.status, 204);
    assert_eq!(app.admin("GET", &format!("/v1/webhooks/{}", created[0]), None).await.status, 404);
    assert_eq!(app.admin("DELETE", &format!("/v1/webhooks/{}", created[0]), None).await.status, 404);
}

#[actix_rt::test]
async fn bad_endpoint_requests_get_a_problem_and_change_nothing() {
    let app = webhook_app(Backend::Sqlite, "0.1").await;
    let types = json!(["registration.created"]);
    let refused = [
        (json!({ "url": "http://hooks.example.com/k", "event_types": types }), "url"),
        (json!({ "url": "ftp://hooks.example.com/k", "event_types": types }), "url"),
        (json!({ "url": "https://10.0.0.7/k", "event_types": types }), "url"),
        (json!({ "url": "https://169.254.169.254/latest", "event_types": types }), "url"),
        (json!({ "url": "https://[::1]/k", "event_types": types }), "url"),
        // A name that resolves to loopback (through /etc/hosts), caught after resolution.
        (json!({ "url": "https://localhost/k", "event_types": types }), "url"),
        (json!({ "url": "https://user:pw@hooks.example.com/k", "event_types": types }), "url"),
        (json!({ "url": 7, "event_types": types }), "url"),
        (json!({ "event_types": types }), "url"),
        (json!({ "url": "https://hooks.example.com/k" }), "event_types"),
        (json!({ "url": "https://hooks.example.com/k", "event_types": [] }), "event_types"),
        (
            json!({ "url": "https://hooks.example.com/k", "event_types": ["registration.made"] }),
            "event_types",
        ),
        (
            json!({ "url": "https://hooks.example.com/k", "event_types": ["event.sold_out", "event.sold_out"] }),
            "event_types",
        ),
        (
            json!({ "url": "https://hooks.example.com/k", "event_types": types, "description": "d".repeat(501) }),
            "description",
        ),
    ];
    for (request, field) in refused {
        let response = app.admin("POST", "/v1/webhooks", Some(&request)).await;
        assert_eq!(response.status, 422, "{request}");
        assert_eq!(response.code(), "validation_failed");
        assert_eq!(response.json()["errors"][0]["field"], field, "{request}");
    }
    let no_admin = app
        .post_json(
            "/v1/webhooks",
            &[],
            &json!({ "url": "https://hooks.example.com/k", "event_types": types }),
        )
        .await;
    assert_eq!(no_admin.status, 401);
    let authorization = format!("Bearer {}", super::support::ADMIN_TOKEN);
    let malformed = app
        .request(
            "POST",
            "/v1/webhooks",
            &[("Authorization", &authorization), ("Content-Type", "application/json")],
            Some(b"{"),
        )
        .await;
    assert_eq!((malformed.status, malformed.code()), (400, "malformed_body".to_string()));
    let text = app
        .request(
            "POST",
            "/v1/webhooks",
            &[("Authorization", &authorization), ("Content-Type", "text/plain")],
            Some(b"x"),
        )
        .await;
    assert_eq!(text.status, 415);
    for path in ["/v1/webhooks?limit=0", "/v1/webhooks?limit=501", "/v1/webhooks?cursor=%2F..%2F"] {
        assert_eq!(app.admin("GET", path, None).await.status, 422, "{path}");
    }
    for (method, path) in [
        ("GET", "/v1/webhooks/ep_missing"),
        ("DELETE", "/v1/webhooks/ep_missing"),
        ("POST", "/v1/webhooks/ep_missing/rotate"),
        ("POST", "/v1/webhooks/ep_missing/replay"),
        ("GET", "/v1/webhooks/..%2Fx"),
    ] {
        assert_eq!(app.admin(method, path, None).await.status, 404, "{method} {path}");
    }
    assert_eq!(app.get("/v1/webhooks", &[]).await.status, 401);
    let listed = app.admin("GET", "/v1/webhooks", None).await.json();
    assert_eq!(listed["items"], json!([]), "nothing was created");
}

#[actix_rt::test]
async fn a_node_killed_mid_round_loses_no_message() {
    let receiver = Receiver::start().await;
    // Slow answers, so that the node dies with attempts in flight.
    *receiver.state.answer_delay.lock().unwrap() = Duration::from_millis(100);
    let survivor = webhook_app(Backend::MariaDb, "0.2,0.2,0.2,0.2,0.2").await;
    let mut doomed = KuotaProcess::start(&[
        ("KUOTA_DATABASE_URL", survivor.database_url.as_str()),
        ("KUOTA_ADMIN_TOKEN", super::support::ADMIN_TOKEN),
        ("KUOTA_NODE_ID", "doomed"),
        ("KUOTA_RATE_LIMIT_IP_PER_SECOND", "0"),
        ("KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE", "0"),
        ("KUOTA_OUTBOX_DELIVERY", "webhooks"),
        ("KUOTA_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
        ("KUOTA_WEBHOOK_RETRY_SCHEDULE", "0.2,0.2,0.2,0.2,0.2"),
        ("KUOTA_WEBHOOK_TIMEOUT_MS", "500"),
    ])
    .await;
    let (id, _) = create_endpoint(&survivor, &receiver.url(), &["registration.created"]).await;
    let node = TestApp::attach(doomed.port);
    node.create_event(race("race", 100, 0)).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        let answer =
            node.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
        ids.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    receiver.wait_for("the first deliveries", |received| received.len() >= 3).await;
    doomed.kill();
    // The survivor takes over the dead node's claims once they run out (the attempt timeout
    // plus a margin for messages, the outbox's delivery timeout plus a margin for entries).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .map(|received| body(received)["data"]["id"].as_str().unwrap().to_string())
            .collect();
        if ids.iter().all(|id| delivered.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lost after the kill: {:?}",
            ids.iter().filter(|id| !delivered.contains(*id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read =
        wait_for_endpoint(&survivor, &id, "all settled", |read| read["deliveries"]["succeeded"] == 30).await;
    assert_eq!(read["deliveries"]["dead"], 0);
}

#[actix_rt::test]
async fn entries_no_endpoint_wants_are_settled_at_once() {
    let receiver = Receiver::start().await;
    let app = webhook_app(Backend::MariaDb, "0.1").await;
    create_endpoint(&app, &receiver.url(), &["registration.cancelled"]).await;
    app.create_event(race("race", 5, 0)).await;
    for n in 0..3 {
        let answer =
            app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
    }
    let store = kuota_persist::store::SqlStore::connect(&app.database_url).await.unwrap();
    creations_delivered_through(&store, 3).await;
    assert!(store.outbox_page(100, None).await.unwrap().is_empty(), "a creation has no outbox entry");
    assert!(receiver.received().is_empty(), "the endpoint wants cancellations only");
}

/// Waits until the delivery worker has fanned out the creations of `race` through `number`.
async fn creations_delivered_through(store: &kuota_persist::store::SqlStore, number: u64) {
    let race = kuota_engine::EventId::parse("race").unwrap();
    let deadline = Instant::now() + Duration::from_secs(DELIVERY_DEADLINE_SECONDS);
    loop {
        let cursor = store.creation_cursor(&race).await.unwrap();
        if cursor >= Some(number) {
            assert_eq!(cursor, Some(number), "past the registrations stored");
            return;
        }
        assert!(Instant::now() < deadline, "creations fanned out through {cursor:?}, not {number}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn an_endpoint_created_between_two_registrations_gets_the_second_even_on_a_closed_port() {
    // The receiver's port, reserved and closed: every attempt is refused.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let app = webhook_app(Backend::MariaDb, "30").await;
    app.create_event(race("race", 5, 0)).await;
    let store = kuota_persist::store::SqlStore::connect(&app.database_url).await.unwrap();
    // Fanned out while no endpoint exists: the cursor passes it without a message.
    assert_eq!(app.register("race", "k0", &registration("10K", "r0@x.org")).await.status, 201);
    creations_delivered_through(&store, 1).await;
    // Within a second of that fan-out (a cached endpoint list once lasted that long).
    let url = format!("http://127.0.0.1:{port}/hooks");
    let (id, _) = create_endpoint(&app, &url, &["registration.created"]).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "r1@x.org")).await.status, 201);
    creations_delivered_through(&store, 2).await;
    // Committed after the endpoint was: its creation became a message, refused and waiting for
    // its retry, never an entry settled with nothing written.
    let read = wait_for_endpoint(&app, &id, "the second registration's attempt", |read| {
        read["failed_attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(
        (read["deliveries"]["pending"].as_u64(), read["deliveries"]["succeeded"].as_u64()),
        (Some(1), Some(0))
    );
}

/// Each registration is cancelled right after its 201, so its cancellation's outbox entry is
/// often claimed before the walk of the creations reached it: the receiver still gets every
/// registration's `registration.created` before its `registration.cancelled`.
async fn creations_come_before_their_registrations_cancellations(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = webhook_app(backend, "0.1").await;
    let (_, secret) =
        create_endpoint(&app, &receiver.url(), &["registration.created", "registration.cancelled"]).await;
    app.create_event(race("race", 50, 0)).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let answer =
            app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
        let created = answer.json();
        let id = created["id"].as_str().unwrap().to_string();
        let token = format!("Bearer {}", created["access_token"].as_str().unwrap());
        let cancelled = app
            .request("DELETE", &format!("/v1/registrations/{id}"), &[("Authorization", &token)], None)
            .await;
        assert_eq!(cancelled.status, 200);
        ids.push(id);
    }
    let received =
        receiver.wait_for("every creation and cancellation", |received| received.len() >= 24).await;
    assert!(received.iter().all(|delivery| verify(&secret, delivery)));
    for id in &ids {
        let of_it: Vec<Value> =
            received.iter().map(body).filter(|payload| payload["data"]["id"] == *id).collect();
        let types: Vec<&str> = of_it.iter().map(|payload| payload["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["registration.created", "registration.cancelled"], "{id}");
        // The status each announces: the registration was created confirmed.
        assert_eq!(of_it[0]["data"]["status"], "confirmed");
        assert_eq!(of_it[1]["data"]["status"], "cancelled");
    }
    receiver.server.stop(true).await;
}

#[actix_rt::test]
async fn creations_come_before_their_registrations_cancellations_on_mariadb() {
    creations_come_before_their_registrations_cancellations(Backend::MariaDb).await;
}

#[actix_rt::test]
async fn creations_come_before_their_registrations_cancellations_on_sqlite() {
    creations_come_before_their_registrations_cancellations(Backend::Sqlite).await;
}

/// Two nodes over one store and Redis, each running the delivery worker: the event's owner
/// loses its lease midway and the event is loaded anew (a new epoch) by whichever node claims it
/// first. Every registration's creation reaches the receiver once, before its cancellation.
#[actix_rt::test]
async fn every_creation_is_announced_once_across_a_change_of_owner() {
    let receiver = Receiver::start().await;
    let redis = SharedRedis::new();
    let node = |node_id: &'static str| {
        let redis = &redis;
        move |settings: &mut kuota_api::configuration::Settings| {
            redis.join(settings, node_id);
            settings.advertise_url = "http://127.0.0.1:0".into();
            // Short, so that the former owner notices the loss within a few hundred ms.
            settings.lease_ttl_ms = 1_000;
            settings.outbox_delivery = "webhooks".into();
            settings.webhook_allow_hosts = "127.0.0.1".into();
            settings.webhook_retry_schedule = "0.1".into();
            settings.webhook_timeout_ms = 500;
        }
    };
    let a = spawn_app_with(Backend::MariaDb, node("node-a")).await;
    let b = spawn_app_on(&a.database_url, node("node-b")).await;
    create_endpoint(&a, &receiver.url(), &["registration.created", "registration.cancelled"]).await;
    a.create_event(race("race", 100, 0)).await;
    let register = async |n: usize| -> Value {
        let node = if n.is_multiple_of(2) { &a } else { &b };
        for _ in 0..50 {
            let body = registration("10K", &format!("r{n}@x.org"));
            let response = node.register("race", &format!("k{n}"), &body).await;
            if response.status == 201 {
                return response.json();
            }
            assert_eq!(response.status, 503, "{n}: {}", String::from_utf8_lossy(&response.body));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} was refused with 503 for 5 s");
    };
    let mut registered = Vec::new();
    for n in 0..6 {
        registered.push(register(n).await);
    }
    let lease = format!("{}lease:event:race", redis.prefix);
    let _: i64 = redis::cmd("DEL").arg(&lease).query(&mut redis.connection()).unwrap();
    for n in 6..20 {
        registered.push(register(n).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&a.database_url).await.unwrap();
    let (epoch,): (i64,) = sqlx::query_as("SELECT epoch FROM events WHERE id = 'race'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(epoch >= 2, "the event was loaded anew: epoch {epoch}");
    let cancelled = [&registered[0], &registered[19]];
    for created in cancelled {
        let path = format!("/v1/registrations/{}", created["id"].as_str().unwrap());
        let mut answered = None;
        for _ in 0..50 {
            let response = a.admin("DELETE", &path, None).await;
            if response.status != 503 {
                answered = Some(response.status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answered, Some(200), "{path}");
    }
    receiver.wait_for("every creation and two cancellations", |received| received.len() >= 22).await;
    // An announcement made twice would follow the first: give it time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for payload in received.iter().map(body) {
        let key = (
            payload["type"].as_str().unwrap().to_string(),
            payload["data"]["id"].as_str().unwrap().to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), 22, "{seen:?}");
    assert!(seen.values().all(|count| *count == 1), "announced twice: {seen:?}");
    assert!(!*receiver.state.overlapped.lock().unwrap(), "one message was sent twice at once");
    for created in cancelled {
        let types: Vec<String> = received
            .iter()
            .map(body)
            .filter(|payload| payload["data"]["id"] == created["id"])
            .map(|payload| payload["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(types, ["registration.created", "registration.cancelled"]);
    }
    receiver.server.stop(true).await;
}

/// A round of the fan-out keeps to its deadline when the store does not answer: every entry of
/// the round fails as unanswered at the deadline, on a paused clock, before the store's own
/// timeouts. The store is a private MariaDB, frozen (SIGSTOP) once connected.
#[actix_rt::test]
async fn a_fan_out_round_against_a_frozen_store_ends_at_its_deadline() {
    use kuota_persist::outbox::{Deliver, no_answer};
    use kuota_persist::store::{OutboxRow, SqlStore};

    let mariadb = PrivateMariaDb::start().await;
    let url = mariadb.create_database().await;
    // Longer than the round: only the round's deadline can end it.
    let store = SqlStore::connect(&url)
        .await
        .expect("the private MariaDB")
        .with_call_timeout(Duration::from_secs(3_600));
    let fan_out = kuota_api::webhooks::fan_out::FanOut::new(
        store,
        Arc::new(SystemClock),
        Arc::new(tokio::sync::Notify::new()),
    );
    let entry = |id: u64| OutboxRow {
        id,
        event: kuota_engine::EventId::parse("race").unwrap(),
        registration: kuota_engine::RegistrationId(id),
        kind: "registration_cancelled".into(),
        payload_json: "{}".into(),
        status: "pending".into(),
        attempts: 1,
        available_at: kuota_engine::Timestamp::from_millis(0),
        created_at: kuota_engine::Timestamp::from_millis(0),
    };
    mariadb.freeze();
    tokio::time::pause();
    // Shorter than the pool's wait for a connection (`POOL_ACQUIRE_TIMEOUT_MS`, 5 s), which
    // would otherwise end the round's first store call with its own error.
    let round = Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    let results = fan_out.deliver_all(&[entry(1), entry(2)], round).await;
    let elapsed = started.elapsed();
    tokio::time::resume();
    mariadb.thaw();
    // The timer wheel's millisecond may round it up.
    let late = elapsed.checked_sub(round).expect("not before its deadline");
    assert!(late <= Duration::from_millis(1), "the round ended {late:?} after its deadline");
    assert_eq!(results, [Err(no_answer(round)), Err(no_answer(round))]);
}
