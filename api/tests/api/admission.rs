//! Admission through the real server: a burst past the limit on registrations in flight is
//! refused at once with 503 and `Retry-After`, never with a 500, and what was admitted is
//! decided as usual; connections past `KUOTA_MAX_CONNECTIONS` wait until one closes.

use std::sync::Arc;
use std::time::Duration;

use kuota_api::admission::REFUSAL_REASON;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use super::support::{Backend, race, registration, spawn_app_with};

/// Registrations sent at the same moment.
const BURST_REQUESTS: usize = 96;
/// The connection cap of the server that tests it: two HTTP workers with 4 each.
const CONNECTIONS_MAX: usize = 8;
/// How long a connection past the cap is watched for an answer it must not get, in ms.
const UNSERVED_WATCH_MS: u64 = 300;
/// How long a served request may take to be answered, in seconds.
const ANSWER_SECONDS_MAX: u64 = 10;

/// The mailbox capacity the server gets, which bounds its admission limit (see
/// `AdmissionBounds::within_mailbox`): far below the burst.
const MAILBOX_CAPACITY: usize = 4;

#[actix_rt::test]
async fn a_burst_beyond_the_limit_gets_immediate_503s_with_retry_after_and_no_500s() {
    let app = Arc::new(
        spawn_app_with(Backend::MariaDb, |settings| settings.mailbox_capacity_max = MAILBOX_CAPACITY).await,
    );
    app.create_event(race("race", 10_000, 0)).await;
    let start = Arc::new(Barrier::new(BURST_REQUESTS));
    let requests: Vec<_> = (0..BURST_REQUESTS)
        .map(|n| {
            let (app, start) = (app.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let response = app
                    .register("race", &format!("key-{n}"), &registration("10K", &format!("r{n}@example.org")))
                    .await;
                (n, response)
            })
        })
        .collect();
    let (mut created, mut refused, mut other) = (0, Vec::new(), Vec::new());
    for request in requests {
        let (n, response) = request.await.expect("the request task finishes");
        match response.status {
            201 => created += 1,
            503 => {
                assert_eq!(response.code(), "overloaded");
                assert_eq!(response.json()["detail"], REFUSAL_REASON);
                let retry_after = response.header("retry-after").expect("a refusal says when to retry");
                assert!(retry_after.parse::<u64>().is_ok_and(|seconds| seconds >= 1), "{retry_after}");
                refused.push(n);
            }
            status => other.push((status, response.code_if_problem())),
        }
    }
    assert!(other.is_empty(), "only 201 and 503 are expected: {other:?}");
    assert!(
        !refused.is_empty(),
        "a burst of {BURST_REQUESTS} past a limit of {MAILBOX_CAPACITY} is refused in part"
    );
    assert!(created >= MAILBOX_CAPACITY, "the limit admits what it holds: {created} created");
    // What was refused was not decided: a retry with the same key is decided afresh.
    let n = refused[0];
    let retried =
        app.register("race", &format!("key-{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
    assert_eq!(retried.status, 201);
}

/// Sends a kept-alive `GET /healthz` on `stream` and reads its answer's head.
async fn health_check(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("the request is sent");
    let mut received = Vec::new();
    let mut buffer = [0_u8; 1_024];
    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.expect("the answer is read");
        assert!(read > 0, "the server closed the connection without answering");
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).lines().next().unwrap_or_default().to_string()
}

#[actix_rt::test]
async fn a_connection_past_the_cap_is_served_only_once_another_closes() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.max_connections = CONNECTIONS_MAX;
        settings.http_workers = 2;
    })
    .await;
    // Each connection is answered once, so the server has accepted it; then it stays open, idle.
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.expect("the server listens");
        assert_eq!(health_check(&mut stream).await, "HTTP/1.1 200 OK");
        open.push(stream);
    }
    // The kernel completes the next connection (it waits in the backlog), but no worker takes it.
    let mut waiting = TcpStream::connect(("127.0.0.1", app.port)).await.expect("the backlog holds it");
    let watched =
        tokio::time::timeout(Duration::from_millis(UNSERVED_WATCH_MS), health_check(&mut waiting)).await;
    assert!(watched.is_err(), "a connection past the cap was served: {watched:?}");
    drop(open.pop());
    let served = tokio::time::timeout(Duration::from_secs(ANSWER_SECONDS_MAX), async {
        let mut buffer = [0_u8; 1_024];
        let read = waiting.read(&mut buffer).await.expect("the answer is read");
        String::from_utf8_lossy(&buffer[..read]).lines().next().unwrap_or_default().to_string()
    })
    .await;
    assert_eq!(served.as_deref(), Ok("HTTP/1.1 200 OK"), "served once a connection closed");
}
