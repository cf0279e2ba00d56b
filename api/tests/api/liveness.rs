//! Answers under a store that does not commit: the request deadline, writes refused at once
//! while the store is stalled, reads and readiness from memory, and a retry that never
//! registers anyone twice. The store is made to hang by a transaction that holds the event's row
//! lock on a connection of the test's own (the fault suite freezes a private server instead).

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use super::support::{Backend, Response, TestApp, race, registration, spawn_app_with};

/// Settings that keep the test short: a store call fails after 300 ms, the store counts as
/// stalled after 200 ms, and every request is answered within 800 ms.
const STORE_TIMEOUT_MS: u64 = 300;
const STORE_STALL_MS: u64 = 200;
const REQUEST_TIMEOUT_MS: u64 = 800;

/// What a refusal that waits for nothing may take here, on a loaded two-core machine.
const IMMEDIATE_MS: u128 = 250;

async fn hold_event_row(app: &TestApp, event: &str) -> sqlx::MySqlConnection {
    let mut holder = sqlx::MySqlConnection::connect(&app.database_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT id FROM events WHERE id = '{event}' FOR UPDATE"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    holder
}

async fn timed(request: impl std::future::Future<Output = Response>) -> (Response, Duration) {
    let started = Instant::now();
    let response = request.await;
    (response, started.elapsed())
}

fn retry_after(response: &Response) -> u64 {
    response.header("retry-after").and_then(|value| value.parse().ok()).unwrap_or_else(|| {
        panic!(
            "a 503 carries Retry-After: {:?} {}",
            response.headers,
            String::from_utf8_lossy(&response.body)
        )
    })
}

#[actix_rt::test]
async fn a_store_that_does_not_commit_turns_writes_into_fast_503s_while_reads_go_on() {
    let app = spawn_app_with(Backend::MariaDb, |settings| {
        settings.store_timeout_ms = STORE_TIMEOUT_MS;
        settings.store_stall_ms = STORE_STALL_MS;
        settings.request_timeout_ms = REQUEST_TIMEOUT_MS;
    })
    .await;
    app.create_event(race("race", 10, 0)).await;
    assert_eq!(app.register("race", "k-a", &registration("10K", "a@example.org")).await.status, 201);

    let mut holder = hold_event_row(&app, "race").await;
    let late = registration("10K", "b@example.org");
    let (waited, elapsed) = timed(app.register("race", "k-b", &late)).await;
    assert_eq!((waited.status, waited.code()), (503, "overloaded".into()), "{waited:?}");
    assert!(retry_after(&waited) >= 1);
    assert!(
        elapsed < Duration::from_millis(REQUEST_TIMEOUT_MS + 700),
        "answered within the deadline: {elapsed:?}"
    );

    let (refused, elapsed) = timed(app.register("race", "k-c", &registration("10K", "c@example.org"))).await;
    assert_eq!((refused.status, refused.code()), (503, "overloaded".into()));
    assert!(retry_after(&refused) >= 1);
    assert!(elapsed.as_millis() < IMMEDIATE_MS, "refused at once while stalled: {elapsed:?}");

    let (event, elapsed) = timed(app.get("/v1/events/race", &[])).await;
    assert_eq!(event.status, 200, "reads go on from memory");
    // Its figures include the decision still waiting for its commit.
    assert_eq!(event.json()["categories"][0]["capacity"], 10);
    assert!(elapsed.as_millis() < IMMEDIATE_MS, "{elapsed:?}");
    let (ready, elapsed) = timed(app.get("/readyz", &[])).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["failing"].as_array().unwrap().contains(&Value::from("store")),
        "{:?}",
        ready.json()
    );
    assert!(elapsed.as_millis() < IMMEDIATE_MS, "readiness waits for nothing: {elapsed:?}");

    // The same key while its batch is unresolved: in flight, or refused; never a second decision.
    let retried = app.register("race", "k-b", &late).await;
    assert!(
        [(409, "idempotency_key_in_flight"), (503, "overloaded")]
            .contains(&(retried.status, retried.code().as_str())),
        "{retried:?}"
    );

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    let started = Instant::now();
    let answer = loop {
        let answer = app.register("race", "k-b", &late).await;
        if answer.status == 201 {
            break answer;
        }
        assert!([409, 503].contains(&answer.status), "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "registrations work again once the store commits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer.json()["status"], "confirmed");
    let listed = app.admin("GET", "/v1/events/race/registrations", None).await.json();
    let emails: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|row| row["email"].as_str().unwrap()).collect();
    assert_eq!(emails.iter().filter(|email| **email == "b@example.org").count(), 1, "{emails:?}");
    assert!(!emails.contains(&"c@example.org"), "a refused write left nothing behind");
    let started = Instant::now();
    while app.get("/readyz", &[]).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(2), "ready again once the store commits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store whose reads time out answers 503 with `Retry-After`, not 500: the request may work
/// in a moment.
#[actix_rt::test]
async fn a_store_read_that_times_out_is_a_503_with_retry_after() {
    let app = spawn_app_with(Backend::MariaDb, |settings| settings.store_timeout_ms = STORE_TIMEOUT_MS).await;
    app.create_event(race("race", 10, 0)).await;
    let registered = app.register("race", "k-a", &registration("10K", "a@example.org")).await;
    let id = registered.json()["id"].as_str().unwrap().to_owned();
    // Plain reads take no row locks; a table lock held elsewhere blocks them.
    let mut holder = sqlx::MySqlConnection::connect(&app.database_url).await.unwrap();
    sqlx::raw_sql("LOCK TABLES registrations WRITE").execute(&mut holder).await.unwrap();
    let listed = app.admin("GET", "/v1/events/race/registrations", None).await;
    sqlx::raw_sql("UNLOCK TABLES").execute(&mut holder).await.unwrap();
    assert_eq!((listed.status, listed.code()), (503, "overloaded".into()), "{listed:?} ({id})");
    assert!(retry_after(&listed) >= 1);
}
