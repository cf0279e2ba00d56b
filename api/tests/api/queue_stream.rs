//! `GET /v1/queue/{ticket_id}/stream`: a queue ticket followed live. Like the queue's own tests,
//! these run on the server's real clock (the event opens a second and a half after it is
//! created), and every read has a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuota_engine::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::queue::{OPENS_IN_MS, join, open, queued_race, register_with_pass};
use super::support::{Backend, TestApp, registration, spawn_app_with_clock};

/// How long a test waits for a frame it expects.
const FRAME_WAIT_MS: u64 = 10_000;

/// One open stream, read frame by frame.
struct TicketStream {
    connection: TcpStream,
    received: String,
}

impl TicketStream {
    /// Opens the stream of `ticket_id` and returns it with the answer's status.
    async fn open(app: &TestApp, ticket_id: &str, credential: Credential<'_>) -> (u16, TicketStream) {
        let mut connection = TcpStream::connect(("127.0.0.1", app.port)).await.expect("the server accepts");
        let (query, header) = match credential {
            Credential::Query(token) => (format!("?access_token={token}"), String::new()),
            Credential::Header(token) => (String::new(), format!("Authorization: Bearer {token}\r\n")),
            Credential::None => (String::new(), String::new()),
        };
        let request = format!(
            "GET /v1/queue/{ticket_id}/stream{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{header}\r\n"
        );
        connection.write_all(request.as_bytes()).await.expect("the request is sent");
        let mut stream = TicketStream { connection, received: String::new() };
        while !stream.received.contains("\r\n\r\n") {
            assert!(stream.read_more().await, "the connection closed before the answer's head");
        }
        let status = stream.received.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status");
        (status, stream)
    }

    /// Reads what comes next; false once the server closed the connection.
    async fn read_more(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        let read =
            tokio::time::timeout(Duration::from_millis(FRAME_WAIT_MS), self.connection.read(&mut buffer))
                .await
                .expect("the server says something within the deadline")
                .expect("the stream is read");
        self.received.push_str(&String::from_utf8_lossy(&buffer[..read]));
        read > 0
    }

    /// The next `ticket` frame's data, or `None` once the stream ended.
    async fn next_ticket(&mut self) -> Option<Value> {
        const FRAME: &str = "event: ticket\ndata: ";
        loop {
            if let Some(start) = self.received.find(FRAME)
                && let Some(length) = self.received[start + FRAME.len()..].find('\n')
            {
                let data_start = start + FRAME.len();
                let data = serde_json::from_str(&self.received[data_start..data_start + length])
                    .expect("a frame's data is JSON");
                self.received.drain(..data_start + length);
                return Some(data);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Frames until one whose status is not `status`.
    async fn next_other_than(&mut self, status: &str) -> Value {
        loop {
            let frame = self.next_ticket().await.expect("the stream goes on");
            if frame["status"] != status {
                return frame;
            }
        }
    }
}

enum Credential<'a> {
    Query(&'a str),
    Header(&'a str),
    None,
}

#[actix_rt::test]
async fn a_ticket_stream_tells_the_draw_the_admission_the_last_seat_and_then_ends() {
    // The event opens when the test moves the server's clock, once both streams are open.
    let clock = ManualClock::new(SystemClock.now());
    let app = spawn_app_with_clock(Backend::Sqlite, |_| {}, Arc::new(clock.clone())).await;
    let created = app.create_event(queued_race("race", 1, OPENS_IN_MS, json!({}))).await;
    let ana = join(&app, "race", "k-ana", "ana@x.org").await.json();
    let bo = join(&app, "race", "k-bo", "bo@x.org").await.json();
    let id = |ticket: &Value| ticket["ticket_id"].as_str().unwrap().to_owned();
    let token = |ticket: &Value| ticket["access_token"].as_str().unwrap().to_owned();

    // Credentials as for reading the ticket: none is 401, another ticket's token 404.
    assert_eq!(TicketStream::open(&app, &id(&ana), Credential::None).await.0, 401);
    assert_eq!(TicketStream::open(&app, &id(&ana), Credential::Query(&token(&bo))).await.0, 404);
    assert_eq!(TicketStream::open(&app, "race.q99", Credential::Query(&token(&ana))).await.0, 404);

    // The token as a query parameter (what a browser's EventSource can send), or as a header.
    let (status, mut ana_stream) = TicketStream::open(&app, &id(&ana), Credential::Query(&token(&ana))).await;
    assert_eq!(status, 200);
    assert!(ana_stream.received.to_ascii_lowercase().contains("content-type: text/event-stream"));
    let (status, mut bo_stream) = TicketStream::open(&app, &id(&bo), Credential::Header(&token(&bo))).await;
    assert_eq!(status, 200);
    assert_eq!(ana_stream.next_ticket().await.unwrap()["status"], "lobby");
    assert_eq!(bo_stream.next_ticket().await.unwrap()["status"], "lobby");
    open(&clock, &created);

    // The draw: one seat, so the first in drawn order is admitted and the other waits.
    let ana_drawn = ana_stream.next_other_than("lobby").await;
    let bo_drawn = bo_stream.next_other_than("lobby").await;
    let (mut first, mut second, first_email, second_drawn) = match ana_drawn["status"].as_str() {
        Some("admitted") => (ana_stream, bo_stream, "ana@x.org", bo_drawn.clone()),
        _ => (bo_stream, ana_stream, "bo@x.org", ana_drawn.clone()),
    };
    let first_drawn = if first_email == "ana@x.org" { ana_drawn } else { bo_drawn };
    assert_eq!(first_drawn["status"], "admitted", "{first_drawn}");
    assert_eq!((second_drawn["status"].as_str(), second_drawn["ahead"].as_u64()), (Some("waiting"), Some(0)));
    let pass = first_drawn["pass"].as_str().expect("an admitted ticket's frame carries its pass");

    // The pass used: its ticket's stream says so and ends; the other ticket reads sold_out at
    // once, since no seat can reach it any more.
    let seated = register_with_pass(&app, "race", "r1", &registration("10K", first_email), pass).await;
    assert_eq!(seated.status, 201);
    let registered_at = Instant::now();
    assert_eq!(first.next_other_than("admitted").await["status"], "used");
    assert!(first.next_ticket().await.is_none(), "the stream of a used ticket ends");
    let sold_out = second.next_other_than("waiting").await;
    assert_eq!(sold_out["status"], "sold_out");
    assert!(sold_out["waitlist_pass"].is_string());
    assert!(
        registered_at.elapsed() < Duration::from_secs(2),
        "sold_out reached the stream {:?} after the last seat went",
        registered_at.elapsed()
    );

    // A ticket that can change no more: 204, which tells an EventSource to stop reconnecting.
    let first_id = if first_email == "ana@x.org" { id(&ana) } else { id(&bo) };
    let first_token = if first_email == "ana@x.org" { token(&ana) } else { token(&bo) };
    assert_eq!(TicketStream::open(&app, &first_id, Credential::Query(&first_token)).await.0, 204);
}
