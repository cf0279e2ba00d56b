//! The operators' page (`GET /admin`), its assets, and the admin-only JSON it reads. The page
//! itself is driven in a real browser in `browser`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::{
    ADMIN_TOKEN, Backend, TestApp, fresh_database, race, registration, settings, spawn_app, spawn_app_with,
};

const ASSETS: &[(&str, &str)] = &[
    ("app.js", "text/javascript"),
    ("charts.js", "text/javascript"),
    ("admin.css", "text/css"),
    ("uPlot.iife.min.js", "text/javascript"),
    ("uPlot.min.css", "text/css"),
];

#[actix_rt::test]
async fn the_page_and_its_assets_come_from_the_binary_under_a_strict_content_policy() {
    let app = spawn_app(Backend::Sqlite).await;
    let page = app.get("/admin", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|value| value.starts_with("text/html")));
    let policy = page.header("content-security-policy").expect("a content security policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    let html = String::from_utf8(page.body).unwrap();
    for (name, media_type) in ASSETS {
        assert!(html.contains(&format!("/admin/assets/{name}")) || *name == "charts.js", "{name} not linked");
        let asset = app.get(&format!("/admin/assets/{name}"), &[]).await;
        assert_eq!(asset.status, 200, "{name}");
        assert!(asset.header("content-type").is_some_and(|value| value.starts_with(media_type)), "{name}");
        assert!(!asset.body.is_empty(), "{name} is empty");
    }
    let missing = app.get("/admin/assets/secrets.txt", &[]).await;
    assert_eq!((missing.status, missing.code()), (404, "not_found".to_string()));
    let traversal = app.get("/admin/assets/..%2FCargo.toml", &[]).await;
    assert_eq!(traversal.status, 404);
}

#[actix_rt::test]
async fn the_pages_json_needs_the_admin_token_or_a_session() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in ["/v1/admin/dashboard/node", "/v1/admin/dashboard/events"] {
        let anonymous = app.get(path, &[]).await;
        assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized".to_string()), "{path}");
        let forged = app.get(path, &[("Cookie", "kuota_session=forged")]).await;
        assert_eq!(forged.status, 401, "{path}");
        assert_eq!(app.admin("GET", path, None).await.status, 200, "{path}");
    }
    let login = serde_json::json!({ "token": ADMIN_TOKEN });
    let session = app.post_json("/v1/admin/sessions", &[], &login).await;
    let cookie = session.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let node = app.get("/v1/admin/dashboard/node", &[("Cookie", &cookie)]).await;
    assert_eq!(node.status, 200);
}

#[actix_rt::test]
async fn the_node_view_counts_admissions_refusals_and_the_outbox_backlog() {
    // Nothing delivers the outbox: its entries stay in the backlog.
    let app = spawn_app_with(Backend::MariaDb, |settings| settings.outbox_delivery = "off".into()).await;
    app.create_event(race("race", 2, 0)).await;
    for n in 0..5 {
        app.register("race", &format!("k{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
    }
    let node = app.admin("GET", "/v1/admin/dashboard/node", None).await.json();
    // The counters are the process's recorder, which the other tests running beside this one
    // share: at least this test's own.
    assert!(node["admissions_total"].as_u64().unwrap() >= 2, "{node}");
    assert!(node["refusals_total"]["sold_out"].as_u64().unwrap() >= 3, "{node}");
    // The app's first view covers no interval yet: no rates, no p99s.
    assert_eq!(
        (node["interval_seconds"].as_f64(), node["admissions_per_second"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert!(node["request_p99_seconds"].is_null() && node["write_behind"]["commit_p99_seconds"].is_null());
    assert_eq!(node["node_id"], "test");
    assert_eq!(node["owned_events"], serde_json::json!(["race"]));
    assert_eq!((node["store"].as_str(), node["redis"].as_str()), (Some("up"), Some("not_configured")));
    assert_eq!(node["busy"]["busy"], false);
    assert_eq!(node["write_behind"]["breaker_open"], false);
    // Every 2xx was committed, its outbox entry with it; the sold-out announcement joins them
    // once the watcher looked (every `SOLD_OUT_CHECK_INTERVAL_MS`), which a loaded machine may
    // let happen before this read.
    let pending = node["outbox"]["pending"].as_u64();
    assert!(matches!(pending, Some(2 | 3)), "{node}");
    assert_eq!(node["outbox"]["dead"], 0);
    // No endpoint, no webhook message (persist's overview tests count them).
    assert_eq!((node["webhooks"]["pending"].as_u64(), node["webhooks"]["dead"].as_u64()), (Some(0), Some(0)));
    assert!(node["stream_subscribers_max"].as_u64().unwrap() > 0);
}

#[actix_rt::test]
async fn the_event_list_is_the_newest_first_with_figures_for_events_running_here() {
    let app = spawn_app(Backend::MariaDb).await;
    // Created in the same millisecond, they would list by id: the same order.
    app.create_event(race("older", 10, 0)).await;
    app.create_event(race("newer", 3, 0)).await;
    app.register("newer", "k1", &registration("10K", "a@example.org")).await;
    let listed = app.admin("GET", "/v1/admin/dashboard/events", None).await.json();
    let items = listed["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|item| item["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["newer", "older"]);
    let newer = &items[0]["here"]["categories"][0];
    assert_eq!((newer["capacity"].as_u64(), newer["available"].as_u64()), (Some(3), Some(2)));
}

/// The Grafana dashboard in `docs/` charts every series `/metrics` exposes, and no other.
#[test]
fn the_grafana_dashboard_charts_every_metric_kuota_exposes_and_no_other() {
    use kuota_api::metrics as m;
    let exposed = [
        m::HTTP_REQUESTS,
        m::HTTP_REQUEST_DURATION,
        m::ADMISSIONS,
        m::SHED,
        m::RATE_LIMITED,
        m::STORE_ERRORS,
        m::WRITE_QUEUE_DEPTH,
        m::WRITE_BATCHES,
        m::WRITE_EFFECTS,
        m::WRITE_BATCHES_FAILED,
        m::WRITE_FENCED,
        m::WRITE_BREAKER_OPEN,
        m::WRITE_BATCH_SIZE,
        m::WRITE_COMMIT_DURATION,
        m::OWNED_EVENTS,
        m::MAILBOX_DEPTH,
        m::FORWARD_DURATION,
        m::ADMISSION_LIMIT,
        m::ADMISSION_IN_FLIGHT,
        m::ADMISSION_REFUSED,
    ];
    let text = include_str!("../../../docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("the dashboard is JSON");
    let mut charted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expression = target["expr"].as_str().unwrap();
            for (start, _) in expression.match_indices("kuota_") {
                let name: String =
                    expression[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                // A histogram's series are its name with a suffix.
                let series = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|base| exposed.contains(base)))
                    .unwrap_or(&name)
                    .to_string();
                assert!(exposed.contains(&series.as_str()), "{series} is not a Kuota metric");
                charted.insert(series);
            }
        }
    }
    let missing: Vec<_> = exposed.iter().filter(|name| !charted.contains(**name)).collect();
    assert!(missing.is_empty(), "not charted: {missing:?}");
}

/// A TCP relay in front of MariaDB that can freeze: connections stay open and nothing passes, as
/// with a database that hangs, which the real server cannot be made to do for one test alone.
async fn freezable_relay(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = Arc::new(AtomicBool::new(false));
    let watched = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let ((client_in, client_out), (server_in, server_out)) =
                (client.into_split(), server.into_split());
            tokio::spawn(pump(client_in, server_out, watched.clone()));
            tokio::spawn(pump(server_in, client_out, watched.clone()));
        }
    });
    (port, frozen)
}

/// Copies one direction, holding what it read while `frozen`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await
        && read > 0
    {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[actix_rt::test]
async fn with_the_store_frozen_the_node_view_says_so_and_stops_waiting_for_it() {
    let (direct_url, _, _) = fresh_database(Backend::MariaDb).await;
    let (scheme_and_credentials, rest) =
        direct_url.rsplit_once('@').unwrap_or(("mysql://root", direct_url.trim_start_matches("mysql://")));
    let (host_port, database) = rest.split_once('/').unwrap();
    let (relay_port, frozen) = freezable_relay(host_port.to_string()).await;
    let relayed = format!("{scheme_and_credentials}@127.0.0.1:{relay_port}/{database}");
    let application = kuota_api::startup::Application::build(settings(&relayed)).await.unwrap();
    let app = TestApp::attach(application.port());
    let store_timeout = Duration::from_millis(settings(&relayed).store_timeout_ms);
    actix_rt::spawn(application.run_until_stopped());
    let node = app.admin("GET", "/v1/admin/dashboard/node", None).await.json();
    assert_eq!((node["store"].as_str(), node["outbox"]["pending"].as_u64()), (Some("up"), Some(0)));

    frozen.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = app.admin("GET", "/v1/admin/dashboard/node", None).await.json();
        if node["store"] == "down" {
            break;
        }
        assert!(Instant::now() < deadline, "the view still shows the store up: {node}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the probes found the store silent, a new view no longer waits for its timeout.
    tokio::time::sleep(Duration::from_millis(kuota_api::dashboard::DASHBOARD_SAMPLE_INTERVAL_MS)).await;
    let asked = Instant::now();
    let node = app.admin("GET", "/v1/admin/dashboard/node", None).await.json();
    assert!(asked.elapsed() < store_timeout / 2, "the view took {:?}", asked.elapsed());
    assert_eq!(node["store"], "down");
    assert!(node["outbox"].is_null() && node["webhooks"].is_null(), "{node}");
    frozen.store(false, Ordering::SeqCst);
    // The database itself was created directly; drop it the same way.
    let base = direct_url.rsplit_once('/').unwrap().0.to_string();
    let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&mut connection)
        .await
        .unwrap();
}
