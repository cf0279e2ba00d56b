//! Health, readiness, the busy flag and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};

use super::support::{Backend, fresh_database, race, registration, settings, spawn_app};

#[actix_rt::test]
async fn health_readiness_and_status_answer_when_all_is_well() {
    let app = spawn_app(Backend::MariaDb).await;
    assert_eq!(app.get("/healthz", &[]).await.status, 200);
    assert_eq!(app.get("/readyz", &[]).await.status, 200);
    let status = app.get("/v1/status", &[]).await.json();
    assert_eq!(status["busy"], false);
}

#[actix_rt::test]
async fn metrics_contain_the_contract_series() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    app.register("race", "k2", &registration("10K", "b@example.org")).await;
    let metrics = String::from_utf8(app.get("/metrics", &[]).await.body).unwrap();
    for series in [
        "kuota_http_requests_total",
        "kuota_http_request_duration_seconds_bucket",
        "kuota_admissions_total",
        "kuota_write_behind_queue_depth",
        "kuota_write_behind_batch_size",
        "kuota_write_behind_commit_duration_seconds",
        "kuota_owned_events",
        "kuota_mailbox_depth",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
}

#[actix_rt::test]
async fn request_metrics_are_labelled_with_the_route_pattern_method_and_status() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 1, 0)).await;
    app.register("race", "k1", &registration("10K", "a@example.org")).await;
    app.register("race", "k2", &registration("10K", "b@example.org")).await;
    app.get("/nowhere", &[]).await;
    let metrics = String::from_utf8(app.get("/metrics", &[]).await.body).unwrap();
    for labels in [
        r#"kuota_http_requests_total{route="/v1/events/{event_id}/registrations",method="POST",status="201"}"#,
        r#"kuota_http_requests_total{route="/v1/events/{event_id}/registrations",method="POST",status="409"}"#,
        r#"kuota_http_requests_total{route="/v1/events",method="POST",status="201"}"#,
        r#"kuota_http_requests_total{route="unmatched",method="GET",status="404"}"#,
        r#"kuota_http_request_duration_seconds_count{route="/v1/events/{event_id}/registrations",method="POST",status="409"}"#,
    ] {
        assert!(metrics.contains(labels), "{labels} missing from:\n{metrics}");
    }
}

/// A TCP relay in front of MariaDB that can be cut: the database becomes unreachable on
/// demand, which the real server cannot be made to do without stopping it for everyone.
async fn cuttable_relay(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let watched = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            if watched.load(Ordering::SeqCst) {
                continue; // Dropping the socket refuses the connection.
            }
            let target = target.clone();
            let watched = watched.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else { return };
                let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                let cut = async {
                    while !watched.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = copy => {}, _ = cut => {} }
            });
        }
    });
    (port, cut)
}

#[actix_rt::test]
async fn readiness_turns_503_and_names_the_store_when_the_database_is_unreachable() {
    let (direct_url, _, _) = fresh_database(Backend::MariaDb).await;
    let (scheme_and_credentials, rest) =
        direct_url.rsplit_once('@').unwrap_or(("mysql://root", direct_url.trim_start_matches("mysql://")));
    let (host_port, database) = rest.split_once('/').unwrap();
    let (relay_port, cut) = cuttable_relay(host_port.to_string()).await;
    let relayed = format!("{scheme_and_credentials}@127.0.0.1:{relay_port}/{database}");
    let application = kuota_api::startup::Application::build(settings(&relayed)).await.unwrap();
    let port = application.port();
    actix_rt::spawn(application.run_until_stopped());
    let get = |path: &'static str| async move {
        let app = super::support::TestApp::attach(port);
        app.get(path, &[]).await
    };
    assert_eq!(get("/readyz").await.status, 200);
    cut.store(true, Ordering::SeqCst);
    // The relay notices the cut within 20 ms; readiness must follow within a few seconds.
    let mut not_ready = get("/readyz").await;
    for _ in 0..50 {
        if not_ready.status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        not_ready = get("/readyz").await;
    }
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.json()["failing"].as_array().unwrap().iter().any(|part| part == "store"));
    assert_eq!(get("/healthz").await.status, 200, "liveness does not depend on the store");
    // The database itself was created directly; drop it the same way.
    let base = direct_url.rsplit_once('/').unwrap().0.to_string();
    let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&mut connection)
        .await
        .unwrap();
}

#[actix_rt::test]
async fn the_server_delivers_outbox_entries_in_the_background() {
    let app = spawn_app(Backend::MariaDb).await;
    app.create_event(race("race", 5, 0)).await;
    for n in 0..3 {
        let answer =
            app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@x.org"))).await;
        assert_eq!(answer.status, 201);
    }
    // One row per admission: the creations are derived from the registration rows, walked
    // past the event's cursor; a cancellation is an outbox entry.
    let cancelled = app.admin("DELETE", "/v1/registrations/race.2", None).await;
    assert_eq!(cancelled.status, 200, "{}", String::from_utf8_lossy(&cancelled.body));
    let store = kuota_persist::store::SqlStore::connect(&app.database_url).await.unwrap();
    let race = kuota_engine::EventId::parse("race").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let entries = store.outbox_page(100, None).await.unwrap();
        let kinds: Vec<_> = entries.iter().map(|entry| (entry.registration.0, entry.kind.as_str())).collect();
        assert_eq!(kinds, [(2, "registration_cancelled")], "no entry for a creation");
        let cursor = store.creation_cursor(&race).await.unwrap();
        if cursor == Some(3) && entries.iter().all(|entry| entry.status == "delivered" && entry.attempts == 1)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered within 10 s: {cursor:?}, {entries:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
