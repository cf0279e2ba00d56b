//! Events, capacity changes, admin authentication, listings and the availability stream.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{ADMIN_TOKEN, Backend, race, registration, spawn_app};

#[actix_rt::test]
async fn an_event_reads_back_with_live_availability_an_etag_and_a_304() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 3, 0)).await;
    let first = app.get("/v1/events/race", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("public, max-age=1"));
    let body = first.json();
    assert_eq!(body["status"], "open");
    assert_eq!(body["opens_at"], serde_json::Value::Null);
    assert_eq!(body["categories"][0]["available"], 3);
    let etag = first.header("etag").unwrap().to_string();
    assert_eq!(app.get("/v1/events/race", &[("If-None-Match", &etag)]).await.status, 304);
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    let changed = app.get("/v1/events/race", &[("If-None-Match", &etag)]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["categories"][0]["confirmed"], 1);
    assert_eq!(app.get("/v1/events/nope", &[]).await.status, 404);
}

#[actix_rt::test]
async fn creating_an_event_validates_every_field_and_refuses_a_duplicate_id() {
    let app = spawn_app(Backend::Sqlite).await;
    let invalid = json!({
        "id": "bad id", "name": "", "opens_at": "2026-01-02T00:00:00Z", "closes_at": "2026-01-01T00:00:00Z",
        "categories": [{ "code": "5K", "name": "5 km", "capacity": -1 }, { "code": "5K", "name": "x", "capacity": 1 }]
    });
    let response = app.admin("POST", "/v1/events", Some(&invalid)).await;
    assert_eq!((response.status, response.code()), (422, "validation_failed".into()));
    let fields: Vec<String> = response.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap().to_string())
        .collect();
    for field in ["id", "name", "closes_at", "categories[0].capacity", "categories[1].code"] {
        assert!(fields.contains(&field.to_string()), "{field} not in {fields:?}");
    }
    let none = app.admin("POST", "/v1/events", Some(&json!({ "name": "x", "categories": [] }))).await;
    assert_eq!(none.status, 422);
    app.create_event(race("race", 1, 0)).await;
    let again = app.admin("POST", "/v1/events", Some(&race("race", 1, 0))).await;
    assert_eq!(again.status, 409);
    let generated = app
        .admin(
            "POST",
            "/v1/events",
            Some(&json!({ "name": "x", "categories": [{"code": "A", "name": "a", "capacity": 1}] })),
        )
        .await;
    assert_eq!(generated.status, 201);
    assert!(!generated.json()["id"].as_str().unwrap().is_empty());
}

#[actix_rt::test]
async fn raising_capacity_promotes_the_waitlist_and_lowering_below_taken_is_409() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    let mut waiting = registration("10K", "b@example.org");
    waiting["waitlist"] = json!(true);
    let second = app.register("race", "k2", &waiting).await.json();
    let raised = app.admin("PATCH", "/v1/events/race/categories/10K", Some(&json!({ "capacity": 2 }))).await;
    assert_eq!(raised.status, 200, "{}", String::from_utf8_lossy(&raised.body));
    assert_eq!(raised.json()["categories"][0]["confirmed"], 2);
    let promoted =
        app.admin("GET", &format!("/v1/registrations/{}", second["id"].as_str().unwrap()), None).await;
    assert_eq!(promoted.json()["status"], "confirmed");
    let lowered = app.admin("PATCH", "/v1/events/race/categories/10K", Some(&json!({ "capacity": 1 }))).await;
    assert_eq!((lowered.status, lowered.code()), (409, "capacity_below_taken".into()));
    let negative =
        app.admin("PATCH", "/v1/events/race/categories/10K", Some(&json!({ "capacity": -3 }))).await;
    assert_eq!(negative.status, 422);
    let unknown = app.admin("PATCH", "/v1/events/race/categories/42K", Some(&json!({ "capacity": 3 }))).await;
    assert_eq!(unknown.status, 404);
}

#[actix_rt::test]
async fn admin_routes_need_the_token_or_a_session_and_logout_ends_the_session() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = race("race", 1, 0).to_string();
    let headers = [("Content-Type", "application/json")];
    assert_eq!(app.request("POST", "/v1/events", &headers, Some(body.as_bytes())).await.status, 401);
    let wrong = [("Content-Type", "application/json"), ("Authorization", "Bearer wrong")];
    assert_eq!(app.request("POST", "/v1/events", &wrong, Some(body.as_bytes())).await.status, 401);
    let bad_login = app.post_json("/v1/admin/sessions", &[], &json!({ "token": "wrong" })).await;
    assert_eq!(bad_login.status, 401);
    let login = app.post_json("/v1/admin/sessions", &[], &json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(login.status, 201);
    let cookie = login.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let with_session = [("Content-Type", "application/json"), ("Cookie", cookie.as_str())];
    assert_eq!(app.request("POST", "/v1/events", &with_session, Some(body.as_bytes())).await.status, 201);
    assert_eq!(app.request("DELETE", "/v1/admin/sessions", &[("Cookie", &cookie)], None).await.status, 204);
    let after = app.request("GET", "/v1/events/race/registrations", &[("Cookie", &cookie)], None).await;
    assert_eq!(after.status, 401);
}

#[actix_rt::test]
async fn the_registration_listing_pages_by_keyset_and_filters_by_status() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    for n in 0..5 {
        app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page =
            app.admin("GET", &format!("/v1/events/race/registrations?limit=2&cursor={cursor}"), None).await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
        let body = page.json();
        seen.extend(
            body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, (1..=5).map(|n| format!("race.{n}")).collect::<Vec<_>>());
    let cancelled = app.admin("GET", "/v1/events/race/registrations?status=cancelled", None).await;
    assert_eq!(cancelled.json()["items"].as_array().unwrap().len(), 0);
    assert_eq!(app.admin("GET", "/v1/events/race/registrations?limit=501", None).await.status, 422);
    assert_eq!(app.admin("GET", "/v1/events/race/registrations?status=gone", None).await.status, 422);
    // An empty status is no status: refused as `gone` is, not taken for "any".
    let empty = app.admin("GET", "/v1/events/race/registrations?status=", None).await;
    assert_eq!((empty.status, empty.code_if_problem().as_str()), (422, "validation_failed"));
    let audit = app.admin("GET", "/v1/events/race/audit?limit=3", None).await;
    assert_eq!(audit.status, 200);
    assert_eq!(audit.json()["items"].as_array().unwrap().len(), 3);
    assert!(audit.json()["next_cursor"].is_string());
}

#[actix_rt::test]
async fn the_event_listing_pages_by_keyset_in_id_order_for_admins_only() {
    for backend in [Backend::MariaDb, Backend::Sqlite] {
        let app = spawn_app(backend).await;
        for id in ["delta", "alpha", "charlie", "bravo", "echo"] {
            app.create_event(race(id, 5, 0)).await;
        }
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = app.admin("GET", &format!("/v1/events?limit=2&cursor={cursor}"), None).await;
            assert_eq!(page.status, 200, "{backend:?}: {}", String::from_utf8_lossy(&page.body));
            let body = page.json();
            for item in body["items"].as_array().unwrap() {
                assert_eq!(item["name"], "City Race");
                assert!(item["created_at"].as_str().is_some_and(|at| at.ends_with('Z')));
                seen.push(item["id"].as_str().unwrap().to_string());
            }
            match body["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, ["alpha", "bravo", "charlie", "delta", "echo"], "{backend:?}");
        assert_eq!(app.get("/v1/events", &[]).await.status, 401);
        for bad in ["/v1/events?limit=0", "/v1/events?limit=501", "/v1/events?cursor=not%20an%20id"] {
            let refused = app.admin("GET", bad, None).await;
            assert_eq!(
                (refused.status, refused.code_if_problem().as_str()),
                (422, "validation_failed"),
                "{bad}"
            );
        }
    }
}

#[actix_rt::test]
async fn the_stream_sends_availability_on_connect_and_after_a_registration() {
    let app = spawn_app(Backend::Sqlite).await;
    app.create_event(race("race", 3, 0)).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream.write_all(b"GET /v1/events/race/stream HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut received = String::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut registered = false;
    while received.matches("event: availability").count() < 2 {
        let read =
            tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await.expect("an update within 10 s");
        received.push_str(&String::from_utf8_lossy(&buffer[..read.unwrap()]));
        if !registered && received.contains("event: availability") {
            registered = true;
            assert!(received.contains("text/event-stream"));
            assert!(received.contains("\"available\":3"));
            app.register("race", "k1", &registration("10K", "a@example.org")).await;
        }
    }
    assert!(received.contains("\"available\":2"), "{received}");
}
