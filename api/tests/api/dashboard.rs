//! The operators' page (`GET /admin`), its assets, and the admin-only JSON it reads. The page
//! itself is driven in a real browser in `browser`.

use super::support::{ADMIN_TOKEN, Backend, race, registration, spawn_app, spawn_app_with};

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
    // Every 2xx was committed, its outbox entry with it.
    assert_eq!(node["outbox"]["pending"], 2, "{node}");
    assert_eq!(node["outbox"]["dead"], 0);
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
