//! A store that does not answer is a 503 with `Retry-After` on every route that reads it (reads,
//! replays, listings), never a 500: the request may work once the store answers again.

use super::faults::one_fault_at_a_time;
use super::private_servers::PrivateMariaDb;
use super::support::{ADMIN_TOKEN, Response, race, registration, spawn_app_on};

fn describe(response: &Response) -> String {
    format!("{} {}", response.status, String::from_utf8_lossy(&response.body))
}

fn assert_unavailable(what: &str, response: &Response) {
    assert_eq!(response.status, 503, "{what}: {}", describe(response));
    assert_eq!(response.code_if_problem(), "overloaded", "{what}: {}", describe(response));
    let retry_after = response.header("retry-after").and_then(|value| value.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|seconds| seconds >= 1), "{what}: Retry-After, {}", describe(response));
}

#[actix_rt::test]
async fn reads_replays_and_listings_of_a_frozen_store_are_503_with_retry_after() {
    let _turn = one_fault_at_a_time().await;
    let mariadb = PrivateMariaDb::start().await;
    let database_url = mariadb.create_database().await;
    let app = spawn_app_on(&database_url, |settings| {
        settings.store_timeout_ms = 300;
        settings.request_timeout_ms = 5_000;
    })
    .await;
    app.create_event(race("race", 5, 0)).await;
    let first = app.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(first.status, 201, "{}", describe(&first));
    let id = first.json()["id"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {}", first.json()["access_token"].as_str().unwrap());
    let admin = format!("Bearer {ADMIN_TOKEN}");

    mariadb.freeze();
    // A replay rebuilds its answer from the stored registration.
    let replay = app.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_unavailable("a replay", &replay);
    let read = app.get(&format!("/v1/registrations/{id}"), &[("Authorization", &bearer)]).await;
    assert_unavailable("a registration read", &read);
    let listing = app.get("/v1/events/race/registrations", &[("Authorization", &admin)]).await;
    assert_unavailable("the registrations listing", &listing);
    let audit = app.get("/v1/events/race/audit", &[("Authorization", &admin)]).await;
    assert_unavailable("the audit trail", &audit);
    let webhooks = app.get("/v1/webhooks", &[("Authorization", &admin)]).await;
    assert_unavailable("the webhooks listing", &webhooks);
    // What needs no store still answers from memory.
    let event = app.get("/v1/events/race", &[]).await;
    assert_eq!(event.status, 200, "{}", describe(&event));
    mariadb.thaw();

    let again = app.get(&format!("/v1/registrations/{id}"), &[("Authorization", &bearer)]).await;
    assert_eq!(again.status, 200, "served again once the store answers: {}", describe(&again));
}
