//! Many registrants at once: exactly the seats are sold, the rest refused, nothing fails; and
//! a retry storm creates no duplicate and replays identical answers.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::support::{Backend, TestApp, race, registration, spawn_app};

/// Requests in flight at once from the test client.
const CLIENT_CONCURRENCY_MAX: usize = 200;

async fn confirmed_in_database(app: &TestApp) -> i64 {
    let mut connection =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(&app.database_url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM registrations WHERE status = 'confirmed'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    count
}

#[actix_rt::test]
async fn two_thousand_concurrent_registrations_for_500_seats_sell_exactly_500() {
    let app = Arc::new(spawn_app(Backend::MariaDb).await);
    app.create_event(race("race", 500, 0)).await;
    let gate = Arc::new(Semaphore::new(CLIENT_CONCURRENCY_MAX));
    let attempts: Vec<_> = (0..2_000)
        .map(|n| {
            let (app, gate) = (app.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let response = app
                    .register("race", &format!("key-{n}"), &registration("10K", &format!("r{n}@example.org")))
                    .await;
                (response.status, response.code_if_problem())
            })
        })
        .collect();
    let (mut created, mut sold_out, mut other) = (0, 0, Vec::new());
    for attempt in attempts {
        match attempt.await.unwrap() {
            (201, _) => created += 1,
            (409, code) if code == "sold_out" => sold_out += 1,
            unexpected => other.push(unexpected),
        }
    }
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!((created, sold_out), (500, 1_500));
    assert_eq!(confirmed_in_database(&app).await, 500);
}

#[actix_rt::test]
async fn a_retry_storm_creates_no_duplicate_and_replays_identical_answers() {
    let app = Arc::new(spawn_app(Backend::MariaDb).await);
    app.create_event(race("race", 40, 0)).await;
    let registrants = 60;
    let mut tasks = Vec::new();
    for n in 0..registrants {
        // Each request goes out 2 to 4 times with the same key, some at the same moment.
        for copy in 0..(2 + n % 3) {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                if copy == 3 {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let body = registration("10K", &format!("storm{n}@example.org"));
                let response = app.register("race", &format!("storm-{n}"), &body).await;
                let code = response.code_if_problem();
                (n, response.status, response.body, code)
            }));
        }
    }
    let mut answers: std::collections::HashMap<usize, Vec<(u16, Vec<u8>)>> = std::collections::HashMap::new();
    for task in tasks {
        let (n, status, body, code) = task.await.unwrap();
        assert!(status < 500, "a 5xx in the storm: {status} {code}");
        if code == "idempotency_key_in_flight" {
            continue; // A concurrent copy; the client retries it after Retry-After.
        }
        answers.entry(n).or_default().push((status, body));
    }
    for (n, copies) in &answers {
        assert!(copies.windows(2).all(|pair| pair[0] == pair[1]), "registrant {n} got different answers");
    }
    assert_eq!(confirmed_in_database(&app).await, 40);
    let listing = app.admin("GET", "/v1/events/race/registrations?limit=500", None).await.json();
    let emails: Vec<&str> =
        listing["items"].as_array().unwrap().iter().map(|item| item["email"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<&&str> = emails.iter().collect();
    assert_eq!(unique.len(), emails.len(), "a registrant was registered twice");
}
