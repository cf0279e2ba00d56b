//! One test per row of the contract's registration table, holds, cancels and confirmations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuota_engine::{Clock, ManualClock, SystemClock};
use serde_json::json;

use super::support::{
    Backend, SharedRedis, race, registration, spawn_app, spawn_app_with, spawn_app_with_clock,
};

#[actix_rt::test]
async fn a_seat_in_an_event_without_holds_is_confirmed_with_201() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 2, 0)).await;
    let response = app.register("race", "k1", &registration("10K", "Ana@Example.org")).await;
    assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
    let body = response.json();
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["event_id"], "race");
    assert_eq!(body["category"], "10K");
    assert_eq!(body["id"], "race.1");
    assert_eq!(body["access_token"].as_str().unwrap().len(), 32);
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
}

#[actix_rt::test]
async fn a_seat_in_an_event_with_holds_is_held_with_its_expiry() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 2, 600)).await;
    let response = app.register("race", "k1", &registration("10K", "ana@example.org")).await;
    assert_eq!(response.status, 201);
    assert_eq!(response.json()["status"], "held");
    assert!(response.json()["expires_at"].is_string());
}

#[actix_rt::test]
async fn sold_out_with_waitlist_is_202_with_a_position_and_without_is_409_sold_out() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    assert_eq!(app.register("race", "k1", &registration("10K", "a@example.org")).await.status, 201);
    let mut waiting = registration("10K", "b@example.org");
    waiting["waitlist"] = json!(true);
    let response = app.register("race", "k2", &waiting).await;
    assert_eq!(response.status, 202);
    assert_eq!(response.json()["status"], "waitlisted");
    assert_eq!(response.json()["waitlist_position"], 1);
    let refused = app.register("race", "k3", &registration("10K", "c@example.org")).await;
    assert_eq!((refused.status, refused.code()), (409, "sold_out".into()));
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
}

#[actix_rt::test]
async fn the_same_registrant_again_is_409_already_registered() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    let again = app.register("race", "k2", &registration("10K", " A@EXAMPLE.ORG ")).await;
    assert_eq!((again.status, again.code()), (409, "already_registered".into()));
    assert!(again.json().get("id").is_none(), "no details of the other registration");
}

#[actix_rt::test]
async fn a_retry_with_the_same_key_and_body_replays_the_first_answer_byte_for_byte() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    let first = app.register("race", "k1", &registration("10K", "a@example.org")).await;
    let again = app.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // A refusal decided by the event is replayed too.
    let sold_out = app.register("race", "k2", &registration("10K", "b@example.org")).await;
    let replayed = app.register("race", "k2", &registration("10K", "b@example.org")).await;
    assert_eq!((replayed.status, &replayed.body), (sold_out.status, &sold_out.body));
}

#[actix_rt::test]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    let reused = app.register("race", "k1", &registration("10K", "b@example.org")).await;
    assert_eq!((reused.status, reused.code()), (422, "idempotency_key_reused".into()));
}

#[actix_rt::test]
async fn a_missing_or_invalid_idempotency_key_is_400() {
    let app = spawn_app(Backend::Sqlite).await;
    app.create_event(race("race", 5, 0)).await;
    let body = registration("10K", "a@example.org");
    let missing = app.post_json("/v1/events/race/registrations", &[], &body).await;
    assert_eq!((missing.status, missing.code()), (400, "idempotency_key_missing".into()));
    let long = "k".repeat(256);
    let invalid = app.register("race", &long, &body).await;
    assert_eq!((invalid.status, invalid.code()), (400, "idempotency_key_invalid".into()));
}

#[actix_rt::test]
async fn registration_before_opening_is_not_open_and_after_closing_is_closed() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut future = race("future", 5, 0);
    future["opens_at"] = json!("2999-01-01T10:00:00Z");
    app.create_event(future).await;
    let early = app.register("future", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!((early.status, early.code()), (409, "not_open".into()));
    assert_eq!(early.json()["opens_at"], "2999-01-01T10:00:00.000Z");
    let mut past = race("past", 5, 0);
    past["opens_at"] = json!("2000-01-01T10:00:00Z");
    past["closes_at"] = json!("2000-01-02T10:00:00Z");
    app.create_event(past).await;
    let late = app.register("past", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!((late.status, late.code()), (409, "closed".into()));
}

#[actix_rt::test]
async fn a_client_over_its_rate_is_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.rate_limit_ip_per_second = 1;
        settings.rate_limit_ip_burst = 2;
    })
    .await;
    app.create_event(race("race", 50, 0)).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..4 {
        let response =
            app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
        statuses.push(response.status);
        if response.status == 429 {
            limited = Some(response);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("no 429 among {statuses:?}"));
    assert_eq!(limited.code(), "rate_limited");
    assert!(limited.header("retry-after").is_some());
    assert!(limited.header("ratelimit-policy").is_some());
    assert!(limited.header("ratelimit").is_some());
}

#[actix_rt::test]
async fn a_registrant_reads_their_registration_with_the_token_and_a_wrong_token_is_404() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    let created = app.register("race", "k1", &registration("10K", "a@example.org")).await.json();
    let path = format!("/v1/registrations/{}", created["id"].as_str().unwrap());
    let token = format!("Bearer {}", created["access_token"].as_str().unwrap());
    let read = app.get(&path, &[("Authorization", &token)]).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["status"], "confirmed");
    assert_eq!(read.json()["email"], "a@example.org");
    assert_eq!(app.get(&path, &[]).await.status, 401);
    let wrong = app.get(&path, &[("Authorization", "Bearer 00000000000000000000000000000000")]).await;
    assert_eq!(wrong.status, 404);
    let unknown = app.get("/v1/registrations/race.99", &[("Authorization", &token)]).await;
    assert_eq!(unknown.status, 404);
}

#[actix_rt::test]
async fn a_cancel_returns_the_seat_to_the_head_of_the_waitlist_and_cancelling_twice_is_200() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    let first = app.register("race", "k1", &registration("10K", "a@example.org")).await.json();
    let mut waiting = registration("10K", "b@example.org");
    waiting["waitlist"] = json!(true);
    let second = app.register("race", "k2", &waiting).await.json();
    let path = format!("/v1/registrations/{}", first["id"].as_str().unwrap());
    let token = format!("Bearer {}", first["access_token"].as_str().unwrap());
    let cancelled = app.request("DELETE", &path, &[("Authorization", &token)], None).await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    let again = app.request("DELETE", &path, &[("Authorization", &token)], None).await;
    assert_eq!(again.status, 200);
    let promoted_path = format!("/v1/registrations/{}", second["id"].as_str().unwrap());
    let promoted = app.admin("GET", &promoted_path, None).await;
    assert_eq!(promoted.json()["status"], "confirmed");
    // After a cancel the registrant may register again (and the seat is taken now: waitlist).
    let back = app.register("race", "k3", &registration("10K", "a@example.org")).await;
    assert_eq!((back.status, back.code()), (409, "sold_out".into()));
}

#[actix_rt::test]
async fn a_ten_minute_hold_expires_once_the_clock_passes_it_the_seat_returns_and_a_late_confirm_is_410() {
    // The engine's clock is the test's: the ten minutes pass at once, and no sleep measures them.
    let clock = ManualClock::new(SystemClock.now());
    let app = spawn_app_with_clock(Backend::MariaDb, |_| {}, Arc::new(clock.clone())).await;
    app.create_event(race("race", 1, 600)).await;
    let held = app.register("race", "k1", &registration("10K", "a@example.org")).await.json();
    assert_eq!(held["status"], "held");
    clock.advance_millis(600_000);
    // The actor looks for lapsed holds on a real-time tick (`HOLD_EXPIRY_TICK_MS`) and commits the
    // expiry through the store: that, not the hold, is what is waited for here.
    let deadline = Instant::now() + Duration::from_secs(10);
    let available = loop {
        let available =
            app.get("/v1/events/race", &[]).await.json()["categories"][0]["available"].as_u64().unwrap();
        if available == 1 || Instant::now() > deadline {
            break available;
        }
        tokio::time::sleep(Duration::from_millis(kuota_engine::limits::HOLD_EXPIRY_TICK_MS / 4)).await;
    };
    assert_eq!(available, 1, "the hold did not expire once the clock passed it");
    let confirm =
        app.admin("POST", &format!("/v1/registrations/{}/confirm", held["id"].as_str().unwrap()), None).await;
    assert_eq!((confirm.status, confirm.code()), (410, "hold_expired".into()));
}

#[actix_rt::test]
async fn confirming_a_held_registration_is_200_and_idempotent() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 600)).await;
    let held = app.register("race", "k1", &registration("10K", "a@example.org")).await.json();
    let path = format!("/v1/registrations/{}/confirm", held["id"].as_str().unwrap());
    let confirmed = app.admin("POST", &path, None).await;
    assert_eq!(confirmed.status, 200, "{}", String::from_utf8_lossy(&confirmed.body));
    assert_eq!(confirmed.json()["status"], "confirmed");
    assert_eq!(app.admin("POST", &path, None).await.status, 200);
    assert_eq!(app.request("POST", &path, &[], None).await.status, 401);
}

#[actix_rt::test]
async fn the_core_flows_work_on_the_embedded_sqlite_store() {
    let app = spawn_app(Backend::Sqlite).await;
    app.create_event(race("race", 1, 0)).await;
    let first = app.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(first.status, 201);
    let replay = app.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(replay.body, first.body);
    let refused = app.register("race", "k2", &registration("10K", "b@example.org")).await;
    assert_eq!(refused.code(), "sold_out");
}

#[actix_rt::test]
async fn with_redis_the_per_email_limit_holds_across_two_nodes() {
    let redis = SharedRedis::new();
    let node = |node_id: &'static str| {
        let redis = &redis;
        move |settings: &mut kuota_api::configuration::Settings| {
            redis.join(settings, node_id);
            settings.rate_limit_email_per_minute = 1;
        }
    };
    // One deployment (one database, one Redis prefix): each node owns the event it created, so
    // the two registrations below are decided on different nodes.
    let first = spawn_app_with(Backend::MariaDb, node("node-a")).await;
    let second = super::support::spawn_app_on(&first.database_url, node("node-b")).await;
    first.create_event(race("race", 5, 0)).await;
    second.create_event(race("relay", 5, 0)).await;
    let allowed = first.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(allowed.status, 201);
    let limited = second.register("relay", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited".into()));
    assert_eq!(limited.header("kuota-owner"), None, "decided by the second node itself");
    let other = second.register("relay", "k2", &registration("10K", "b@example.org")).await;
    assert_eq!(other.status, 201, "the limit is per e-mail");
}

#[actix_rt::test]
async fn a_waitlisted_registrant_reads_their_current_position() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    app.register("race", "k0", &registration("10K", "seated@example.org")).await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        let mut waiting = registration("10K", &format!("w{n}@example.org"));
        waiting["waitlist"] = json!(true);
        ids.push(app.register("race", &format!("k{n}"), &waiting).await.json());
    }
    let second = format!("/v1/registrations/{}", ids[1]["id"].as_str().unwrap());
    let token = format!("Bearer {}", ids[1]["access_token"].as_str().unwrap());
    assert_eq!(app.get(&second, &[("Authorization", &token)]).await.json()["waitlist_position"], 2);
    let first = format!("/v1/registrations/{}", ids[0]["id"].as_str().unwrap());
    assert_eq!(app.admin("DELETE", &first, None).await.status, 200);
    let moved = app.get(&second, &[("Authorization", &token)]).await.json();
    assert_eq!(
        (moved["status"].as_str(), moved["waitlist_position"].as_u64()),
        (Some("waitlisted"), Some(1))
    );
}
