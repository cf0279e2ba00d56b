//! A registration has one door (`use_cases::register::answer`), which the owner-routing layer
//! calls for an event that runs here and the routed handler calls otherwise. A percent-encoded
//! event id (`r%61ce` is `race`, to the router and to the owner-routing layer alike) must take
//! the same door as the plain one: the same request sent both ways gets the same status,
//! headers and body. A ticket read has one door too (`use_cases::read_ticket::answer`): the
//! owner-routing layer answers `/v1/queue/race.q1` and `/v1/queue/r%61ce.q%31` itself, and leaves
//! `/v1/queue/race%2Eq1` (its event cannot be told before decoding) to the router; all three
//! answer alike.

use std::sync::Arc;

use kuota_engine::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};

use super::queue::{OPENS_IN_MS, drawn, join, open, queued_race};
use super::support::{
    ADMIN_TOKEN, Backend, Response, TestApp, race, registration, spawn_app, spawn_app_with,
    spawn_app_with_clock,
};

const FAST: &str = "/v1/events/race/registrations";
const ROUTED: &str = "/v1/events/r%61ce/registrations";

/// An answer without what differs between any two answers: the `Date` header.
fn comparable(response: &Response) -> (u16, Vec<(String, String)>, String) {
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    headers.sort();
    (response.status, headers, String::from_utf8_lossy(&response.body).into_owned())
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    app.request("POST", path, headers, Some(body)).await
}

/// Sends the request to both routes and asserts that they answer alike; returns the answer.
async fn both_answer_alike(app: &TestApp, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let fast = post(app, FAST, headers, body).await;
    let routed = post(app, ROUTED, headers, body).await;
    assert_eq!(comparable(&fast), comparable(&routed), "{headers:?} {}", String::from_utf8_lossy(body));
    fast
}

async fn register_at(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    post(app, path, &json_headers(key), body.to_string().as_bytes()).await
}

fn json_headers(key: &str) -> Vec<(&str, &str)> {
    vec![("Content-Type", "application/json"), ("Idempotency-Key", key)]
}

#[actix_rt::test]
async fn sold_out_answers_are_the_same_on_both_routes() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    let first = register_at(&app, FAST, "k0", &registration("10K", "a@example.org")).await;
    assert_eq!(first.status, 201);
    for (index, body) in [
        registration("10K", "b@example.org"),
        json!({ "category": "10K", "email": "c@example.org", "full_name": "C", "waitlist": false }),
    ]
    .iter()
    .enumerate()
    {
        let key = format!("sold-{index}");
        let answer = both_answer_alike(&app, &json_headers(&key), body.to_string().as_bytes()).await;
        assert_eq!((answer.status, answer.code()), (409, "sold_out".into()));
    }
    let metrics = String::from_utf8(app.get("/metrics", &[]).await.body).unwrap();
    for series in [
        r#"kuota_admissions_total{outcome="sold_out_fast"}"#,
        r#"kuota_http_requests_total{route="/v1/events/{event_id}/registrations",method="POST",status="409"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
}

#[actix_rt::test]
async fn admissions_and_their_replays_are_the_same_on_both_routes() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    let body = registration("10K", "a@example.org").to_string();
    let fast = post(&app, FAST, &json_headers("k1"), body.as_bytes()).await;
    let routed = register_at(&app, ROUTED, "k2", &registration("10K", "b@example.org")).await;
    assert_eq!(fast.status, 201, "{}", String::from_utf8_lossy(&fast.body));
    // A full event after the first: the routed request joined nothing and was refused.
    assert_eq!((routed.status, routed.code_if_problem()), (409, "sold_out".into()));
    let fields = |answer: &Response| -> Vec<String> {
        answer.json().as_object().map(|object| object.keys().cloned().collect()).unwrap_or_default()
    };
    assert_eq!(fields(&fast), ["access_token", "category", "created_at", "event_id", "id", "status"]);
    // A retry with the same key is a replay, the first answer byte for byte, on either route.
    let replayed = both_answer_alike(&app, &json_headers("k1"), body.as_bytes()).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, fast.body);
    let waiting = json!({ "category": "10K", "email": "w@example.org", "full_name": "W", "waitlist": true });
    let waitlisted = post(&app, FAST, &json_headers("k3"), waiting.to_string().as_bytes()).await;
    assert_eq!((waitlisted.status, waitlisted.json()["status"].clone()), (202, Value::from("waitlisted")));
    let replayed = both_answer_alike(&app, &json_headers("k3"), waiting.to_string().as_bytes()).await;
    assert_eq!(replayed.body, waitlisted.body);
}

#[actix_rt::test]
async fn bad_input_is_refused_alike_on_both_routes() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    let valid = registration("10K", "a@example.org").to_string();
    let json = ("Content-Type", "application/json");
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (vec![json], valid.clone()),
        (vec![json, ("Idempotency-Key", "")], valid.clone()),
        (vec![("Content-Type", "text/plain"), ("Idempotency-Key", "k")], valid.clone()),
        (vec![("Idempotency-Key", "k")], valid.clone()),
        (vec![("Content-Type", "APPLICATION/JSON; charset=utf-8"), ("Idempotency-Key", "k")], "[1]".into()),
        (json_headers("k"), "{\"category\": ".into()),
        (json_headers("k"), String::new()),
        (json_headers("k"), json!({}).to_string()),
        (json_headers("k"), json!({ "category": 10, "email": ["a"], "full_name": true }).to_string()),
        (json_headers("k"), json!({ "category": "42K", "email": "nope", "full_name": "", "extra": 1 }).to_string()),
        (
            json_headers("k"),
            r#"{"category":"10K","email":"a@example.org","full_name":"A","phone":null,"phone":"1234567890123456789012345678901234"}"#
                .into(),
        ),
        (json_headers("k"), format!("{{\"full_name\": \"{}\"}}", "x".repeat(20_000))),
    ];
    for (headers, body) in &cases {
        let answer = both_answer_alike(&app, headers, body.as_bytes()).await;
        assert!((400..500).contains(&answer.status), "{answer:?}");
    }
    let listing = app.admin("GET", "/v1/events/race/registrations", None).await.json();
    assert_eq!(listing["items"].as_array().unwrap().len(), 0, "something was stored: {listing}");
}

#[actix_rt::test]
async fn an_unknown_event_and_another_method_are_answered_alike_on_both_routes() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    let body = registration("10K", "a@example.org").to_string();
    let unknown = post(&app, "/v1/events/nope/registrations", &json_headers("k"), body.as_bytes()).await;
    let routed = post(&app, "/v1/events/n%6Fpe/registrations", &json_headers("k"), body.as_bytes()).await;
    assert_eq!(comparable(&unknown), comparable(&routed));
    assert_eq!(unknown.status, 404);
    let put = app.request("PUT", FAST, &json_headers("k"), Some(body.as_bytes())).await;
    let routed = app.request("PUT", ROUTED, &json_headers("k"), Some(body.as_bytes())).await;
    assert_eq!(comparable(&put), comparable(&routed));
    assert_eq!(put.status, 405);
    assert_eq!(put.code_if_problem(), "method_not_allowed");
    assert_eq!(put.header("allow"), Some("GET, POST"));
}

/// The owner-routing layer looks a running event up by its path's text and leaves an id that is
/// not one to the router: a malformed id (too long, a character outside the alphabet, decoded
/// or not) gets the very 404 problem document an unknown event gets, and a running event's id
/// with one character more or less is not that event.
#[actix_rt::test]
async fn a_malformed_event_id_gets_the_same_404_as_an_unknown_one() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    let body = registration("10K", "a@example.org").to_string();
    let unknown = post(&app, "/v1/events/nope/registrations", &json_headers("k"), body.as_bytes()).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code_if_problem(), "not_found");
    let too_long = format!("/v1/events/{}/registrations", "r".repeat(65));
    for path in [
        too_long.as_str(),
        "/v1/events/ra.ce/registrations",
        "/v1/events/ra%2Ece/registrations",
        "/v1/events/rac/registrations",
        "/v1/events/racee/registrations",
        "/v1/events/RACE/registrations",
    ] {
        let answer = post(&app, path, &json_headers("k"), body.as_bytes()).await;
        assert_eq!(comparable(&answer), comparable(&unknown), "{path}");
    }
    let listing = app.admin("GET", "/v1/events/race/registrations", None).await.json();
    assert_eq!(listing["items"].as_array().unwrap().len(), 0, "something was stored: {listing}");
}

/// The three spellings of ticket `race.q{number}`'s path: plain and decoded by the owner-routing
/// layer, which answer it, and one whose event only the router can tell.
fn ticket_paths(number: u32) -> [String; 3] {
    let digits: String = number.to_string().bytes().map(|digit| format!("%{digit:02X}")).collect();
    [
        format!("/v1/queue/race.q{number}"),
        format!("/v1/queue/r%61ce.q{digits}"),
        format!("/v1/queue/race%2Eq{number}"),
    ]
}

/// Reads ticket `number` on its three paths with `headers` and asserts that they answer alike;
/// returns the answer.
async fn ticket_read_alike(app: &TestApp, number: u32, headers: &[(&str, &str)]) -> Response {
    let [plain, decoded, routed] = ticket_paths(number);
    let answer = app.get(&plain, headers).await;
    for other in [decoded, routed] {
        let read = app.get(&other, headers).await;
        assert_eq!(comparable(&answer), comparable(&read), "{other} {headers:?}");
    }
    answer
}

#[actix_rt::test]
async fn a_ticket_read_answers_alike_on_every_route_in_every_status() {
    let clock = ManualClock::new(SystemClock.now());
    let app = spawn_app_with_clock(Backend::MariaDb, |_| {}, Arc::new(clock.clone())).await;
    let created = app.create_event(queued_race("race", 1, OPENS_IN_MS, json!({}))).await;
    let mut tokens = Vec::new();
    for (index, email) in ["a@example.org", "b@example.org"].iter().enumerate() {
        let joined = join(&app, "race", &format!("k{index}"), email).await;
        assert_eq!(joined.status, 202, "{}", String::from_utf8_lossy(&joined.body));
        assert_eq!(joined.json()["ticket_id"], format!("race.q{}", index + 1));
        tokens.push(format!("Bearer {}", joined.json()["access_token"].as_str().unwrap()));
    }
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let read = |number: u32| ticket_read_alike(&app, number, &[]);
    assert_eq!(read(1).await.status, 401);
    for (number, authorization, status) in
        [(1, &tokens[0], 200), (1, &tokens[1], 404), (3, &tokens[0], 404), (2, &admin, 200)]
    {
        let answer = ticket_read_alike(&app, number, &[("Authorization", authorization.as_str())]).await;
        assert_eq!(answer.status, status, "ticket {number}: {}", String::from_utf8_lossy(&answer.body));
    }
    let lobby = ticket_read_alike(&app, 1, &[("Authorization", &tokens[0])]).await;
    assert_eq!(lobby.json()["status"], "lobby");
    assert_eq!(lobby.header("cache-control"), Some("no-store"));

    // After the draw: one seat, so one ticket holds a pass and the other waits.
    open(&clock, &created);
    drawn(&app, "race").await;
    let mut statuses = Vec::new();
    for (number, token) in [(1, &tokens[0]), (2, &tokens[1])] {
        let answer = ticket_read_alike(&app, number, &[("Authorization", token)]).await;
        assert_eq!(answer.header("retry-after").unwrap(), answer.json()["refresh_after_seconds"].to_string());
        statuses.push(answer.json()["status"].as_str().unwrap().to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, ["admitted", "waiting"]);

    let metrics = String::from_utf8(app.get("/metrics", &[]).await.body).unwrap();
    for status in [200, 401, 404] {
        let series = format!(
            r#"kuota_http_requests_total{{route="/v1/queue/{{ticket_id}}",method="GET",status="{status}"}}"#
        );
        assert!(metrics.contains(&series), "{series} missing from:\n{metrics}");
    }
}

/// Sends a registration's head and body in the writes given (each a number of the request's
/// bytes), a pause before each write after the first, and returns the answer's head.
async fn send_in_parts(
    stream: &mut tokio::net::TcpStream,
    key: &str,
    email: &str,
    parts: &[usize],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = registration("10K", email).to_string();
    let request = format!(
        "POST {FAST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sent = 0;
    for (index, length) in parts.iter().enumerate() {
        if index > 0 {
            // Not a wait for a condition: the server must have read, and polled, what came
            // before this write on its own, which only the time between the writes can make so.
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        stream.write_all(&request.as_bytes()[sent..sent + length]).await.unwrap();
        sent += length;
    }
    stream.write_all(&request.as_bytes()[sent..]).await.unwrap();
    // Well within the request's deadline (60 s): a body that woke nobody would be read only then.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                })
                .and_then(|length| length.trim().parse::<usize>().ok())
                .expect("the answer has a length");
            if body.len() >= length {
                return head.to_owned();
            }
        }
        let read =
            tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await.expect("an answer within 10 s");
        answer.extend_from_slice(&buffer[..read.unwrap()]);
    }
}

/// The owner-routing layer reads a registration's body without handing it the task's waker
/// (`http::DispatcherFedBody`): the dispatcher that feeds a body in polls its request again. A
/// body that arrives after its head, whole or in parts, is answered as it arrives, on a fresh
/// connection and on a kept-alive one alike, not at the request's deadline.
#[actix_rt::test]
async fn a_body_that_arrives_after_its_head_is_answered_when_it_arrives() {
    let app = spawn_app_with(Backend::Sqlite, |settings| settings.request_timeout_ms = 60_000).await;
    app.create_event(race("race", 1, 0)).await;
    let head_length = |key: &str, email: &str| {
        let body = registration("10K", email).to_string();
        format!(
            "POST {FAST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .len()
    };
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let admitted =
        send_in_parts(&mut stream, "late-1", "a@example.org", &[head_length("late-1", "a@example.org")])
            .await;
    assert!(admitted.starts_with("HTTP/1.1 201"), "{admitted}");
    let length = head_length("late-2", "b@example.org");
    let sold_out = send_in_parts(&mut stream, "late-2", "b@example.org", &[length, 10]).await;
    assert!(sold_out.starts_with("HTTP/1.1 409"), "{sold_out}");
    let mut fresh = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let sold_out = send_in_parts(&mut fresh, "late-3", "c@example.org", &[length - 3]).await;
    assert!(sold_out.starts_with("HTTP/1.1 409"), "{sold_out}");
}
