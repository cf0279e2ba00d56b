//! Bad input of every kind gets a clear 4xx problem document and stores nothing; arbitrary
//! bytes and JSON never get a 5xx.

use std::io::{Read, Write};

use proptest::prelude::*;
use serde_json::json;

use super::support::{ADMIN_TOKEN, Backend, TestApp, race, spawn_app};

const PATH: &str = "/v1/events/race/registrations";

async fn app_with_event() -> TestApp {
    let app = spawn_app(Backend::Sqlite).await;
    app.create_event(race("race", 5, 0)).await;
    app
}

async fn nothing_stored(app: &TestApp) {
    let listing = app.admin("GET", "/v1/events/race/registrations", None).await.json();
    assert_eq!(listing["items"].as_array().unwrap().len(), 0, "something was stored: {listing}");
}

async fn raw_post(app: &TestApp, content_type: &str, body: &[u8]) -> super::support::Response {
    app.request("POST", PATH, &[("Idempotency-Key", "k1"), ("Content-Type", content_type)], Some(body)).await
}

#[actix_rt::test]
async fn malformed_json_is_400_malformed_body() {
    let app = app_with_event().await;
    for body in [&b"{\"category\": "[..], b"not json", b"", b"[1,2]"] {
        let response = raw_post(&app, "application/json", body).await;
        assert_eq!((response.status, response.code()), (400, "malformed_body".into()), "{body:?}");
    }
    nothing_stored(&app).await;
}

#[actix_rt::test]
async fn invalid_utf8_is_400_malformed_body() {
    let app = app_with_event().await;
    let response = raw_post(&app, "application/json", b"{\"category\": \"10K\xff\xfe\"}").await;
    assert_eq!((response.status, response.code()), (400, "malformed_body".into()));
    nothing_stored(&app).await;
}

#[actix_rt::test]
async fn a_wrong_or_missing_content_type_is_415() {
    let app = app_with_event().await;
    let body = json!({ "category": "10K", "email": "a@example.org", "full_name": "A" }).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = raw_post(&app, content_type, body.as_bytes()).await;
        assert_eq!((response.status, response.code()), (415, "unsupported_media_type".into()));
    }
    let missing = app.request("POST", PATH, &[("Idempotency-Key", "k1")], Some(body.as_bytes())).await;
    assert_eq!(missing.status, 415);
    nothing_stored(&app).await;
}

#[actix_rt::test]
async fn a_body_over_the_limit_is_413_even_when_content_length_lies() {
    let app = app_with_event().await;
    let huge = format!("{{\"full_name\": \"{}\"}}", "x".repeat(20_000));
    let response = raw_post(&app, "application/json", huge.as_bytes()).await;
    assert_eq!((response.status, response.code()), (413, "payload_too_large".into()));
    let mut request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: k\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        request.extend_from_slice(format!("1000\r\n{}\r\n", "x".repeat(0x1000)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let chunked = app.send_raw(&request).await;
    assert_eq!(chunked.status, 413);
    nothing_stored(&app).await;
}

#[actix_rt::test]
async fn wrong_types_missing_fields_and_absurd_lengths_are_422_naming_each_field() {
    let app = app_with_event().await;
    let cases = [
        (
            json!({ "category": 10, "email": ["a"], "full_name": true }),
            vec!["category", "email", "full_name"],
        ),
        (json!({}), vec!["category", "email", "full_name"]),
        (json!({ "category": "42K", "email": "a@example.org", "full_name": "A" }), vec!["category"]),
        (json!({ "category": "10K", "email": "not-an-email", "full_name": "A" }), vec!["email"]),
        (
            json!({ "category": "10K", "email": format!("{}@example.org", "a".repeat(250)), "full_name": "x".repeat(201),
                    "phone": "1".repeat(33), "attributes": { "notes": "y".repeat(5_000) } }),
            vec!["email", "full_name", "phone", "attributes"],
        ),
        (
            json!({ "category": "10K", "email": "a@example.org", "full_name": "A", "attributes": [1] }),
            vec!["attributes"],
        ),
        (
            json!({ "category": "10K", "email": "a@example.org", "full_name": "A", "waitlist": "yes" }),
            vec!["waitlist"],
        ),
        (json!({ "category": "10K", "email": "a@example.org", "full_name": "A", "extra": 1 }), vec!["extra"]),
    ];
    for (body, fields) in cases {
        let response = app.register("race", "k1", &body).await;
        assert_eq!((response.status, response.code()), (422, "validation_failed".into()), "{body}");
        let named: Vec<String> = response.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["field"].as_str().unwrap().into())
            .collect();
        for field in fields {
            assert!(named.contains(&field.to_string()), "{field} not named for {body}: {named:?}");
        }
    }
    nothing_stored(&app).await;
}

/// The fields named in a 422's `errors`.
fn named_fields(response: &super::support::Response) -> Vec<String> {
    let body = response.json();
    body["errors"].as_array().map_or(Vec::new(), |errors| {
        errors.iter().map(|error| error["field"].as_str().unwrap_or_default().to_owned()).collect()
    })
}

#[actix_rt::test]
async fn every_body_is_closed_an_unknown_member_is_422_naming_it_and_changes_nothing() {
    let app = app_with_event().await;
    // A category of a new event: the member is named with the category's index.
    let mut event = race("other", 5, 0);
    event["categories"][0]["colour"] = json!("red");
    let response = app.admin("POST", "/v1/events", Some(&event)).await;
    assert_eq!(
        (response.status, response.code()),
        (422, "validation_failed".into()),
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(named_fields(&response), ["categories[0].colour"]);
    assert_eq!(app.admin("GET", "/v1/events/other", None).await.status, 404);

    // A webhook endpoint.
    let endpoint = json!({ "url": "https://crm.example.org/kuota", "event_types": ["registration.created"],
                           "secret": "mine" });
    let response = app.admin("POST", "/v1/webhooks", Some(&endpoint)).await;
    assert_eq!(
        (response.status, response.code()),
        (422, "validation_failed".into()),
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(named_fields(&response), ["secret"]);
    let listed = app.admin("GET", "/v1/webhooks", None).await.json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0), "{listed}");

    // Logging in, even with the right token: no session is opened.
    let body = json!({ "token": ADMIN_TOKEN, "remember_me": true });
    let response = app.post_json("/v1/admin/sessions", &[], &body).await;
    assert_eq!(
        (response.status, response.code()),
        (422, "validation_failed".into()),
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(named_fields(&response), ["remember_me"]);
    assert!(response.header("set-cookie").is_none());
}

#[actix_rt::test]
async fn an_unknown_event_or_malformed_ids_are_404_not_500() {
    let app = app_with_event().await;
    let body = json!({ "category": "10K", "email": "a@example.org", "full_name": "A" });
    assert_eq!(app.register("nope", "k1", &body).await.status, 404);
    assert_eq!(app.register("bad%20id", "k1", &body).await.status, 404);
    assert_eq!(app.admin("GET", "/v1/registrations/garbage", None).await.status, 404);
    assert_eq!(app.admin("GET", "/v1/registrations/race.0", None).await.status, 404);
    assert_eq!(app.get("/nowhere", &[]).await.status, 404);
    nothing_stored(&app).await;
}

/// A blocking request, for use inside proptest's synchronous cases.
fn blocking_post(port: u16, body: &[u8], content_type: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: fuzz\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response[..12.min(response.len())])
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(json!("10K")),
        Just(json!("a@example.org")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("category".to_string()),
                    Just("email".to_string()),
                    Just("full_name".to_string()),
                    ".{0,8}".prop_map(String::from)
                ],
                inner,
                0..5
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

#[actix_rt::test]
async fn arbitrary_bytes_and_json_never_get_a_5xx() {
    let app = app_with_event().await;
    let port = app.port;
    let statuses = tokio::task::spawn_blocking(move || {
        let seen = std::cell::RefCell::new(Vec::new());
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 150,
            ..ProptestConfig::default()
        });
        let strategy = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|value| value.to_string().into_bytes()),
        ];
        runner
            .run(&strategy, |body| {
                let status = blocking_post(port, &body, "application/json");
                prop_assert!(
                    (400..500).contains(&status) || status == 201,
                    "status {} for {:?}",
                    status,
                    String::from_utf8_lossy(&body)
                );
                seen.borrow_mut().push(status);
                Ok(())
            })
            .map(|_| seen.into_inner())
    })
    .await
    .unwrap();
    let statuses = statuses.unwrap_or_else(|failure| panic!("{failure}"));
    assert!(statuses.contains(&400), "the generator never produced malformed input");
}

/// Bodies of the common shape are read by hand (`RegistrationBody::read_plain`); at its edges
/// the server answers as the JSON reading does: whitespace and `null`s are taken, a repeated
/// member keeps its last value, and a raw control character or trailing bytes are malformed.
#[actix_rt::test]
async fn bodies_at_the_edges_of_the_common_shape_are_answered_as_json_reads_them() {
    let app = app_with_event().await;
    let post = |key: &'static str, body: &'static [u8]| {
        let app = &app;
        async move {
            app.request(
                "POST",
                PATH,
                &[("Idempotency-Key", key), ("Content-Type", "application/json")],
                Some(body),
            )
            .await
        }
    };
    let spaced = post(
        "k1",
        b" {\"category\" :\"10K\" ,\"email\":\"Ana@Example.org\",\n\"full_name\":\" Ana \",\"phone\":null,\"waitlist\":false} ",
    )
    .await;
    assert_eq!(spaced.status, 201);
    let repeated =
        post("k2", br#"{"category":"10K","email":"b@example.org","full_name":"B","full_name":"C"}"#).await;
    assert_eq!(repeated.status, 201);
    let control =
        post("k3", b"{\"category\":\"10K\",\"email\":\"c@example.org\",\"full_name\":\"C\x01\"}").await;
    assert_eq!((control.status, control.code()), (400, "malformed_body".into()));
    let trailing = post("k4", br#"{"category":"10K","email":"d@example.org","full_name":"D"} x"#).await;
    assert_eq!((trailing.status, trailing.code()), (400, "malformed_body".into()));
    let mistyped =
        post("k5", br#"{"category":"10K","email":"e@example.org","full_name":"E","waitlist":1}"#).await;
    assert_eq!((mistyped.status, mistyped.code()), (422, "validation_failed".into()));
    let listing = app.admin("GET", "/v1/events/race/registrations", None).await.json();
    let stored: Vec<(String, String)> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["email"].as_str().unwrap().into(), item["full_name"].as_str().unwrap().into()))
        .collect();
    assert_eq!(stored, [("ana@example.org".into(), "Ana".into()), ("b@example.org".into(), "C".into())]);
}
