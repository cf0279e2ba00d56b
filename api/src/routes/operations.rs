//! Liveness, readiness, the busy banner and metrics.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::metrics;
use crate::middleware::resource;
use crate::state::AppState;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/readyz").route(web::get().to(readyz)))
        .service(resource("/metrics").route(web::get().to(render_metrics)))
        .service(resource("/v1/status").route(web::get().to(status)));
}

/// Liveness: `{"status": "ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({ "status": "ok" }))]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness: `ready`, or `not_ready` with the failing parts named.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({ "status": "not_ready", "failing": ["store"] }))]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// With `not_ready`: `store`, `redis` and/or `write_behind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing: Option<Vec<&'static str>>,
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process serves.", body = Health))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness",
    description = "The store answers and commits (not stalled), Redis answers when configured, and \
        the write-behind's breaker is closed. Read from background probes: answers at once.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; `failing` names the parts.", body = Readiness)
    )
)]
/// Reads what the background probes (`health`) and the writer found, and waits for nothing:
/// it answers in microseconds whether the store is frozen, gone or well.
#[tracing::instrument(skip(state))]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut failing = Vec::new();
    if !state.health.store_answers() || state.shedding.write_behind.stalled() {
        failing.push("store");
    }
    if !state.health.redis_answers() {
        failing.push("redis");
    }
    if state.shedding.write_behind.breaker_open() {
        failing.push("write_behind");
    }
    if failing.is_empty() {
        HttpResponse::Ok().json(Readiness { status: "ready", failing: None })
    } else {
        HttpResponse::ServiceUnavailable().json(Readiness { status: "not_ready", failing: Some(failing) })
    }
}

#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "status",
    tag = "operations",
    summary = "The system busy banner",
    description = "Busy while the server sheds load or the store is failing, and a few seconds after.",
    responses((status = 200, description = "Whether to show the banner.", body = crate::responses::Busy))
)]
async fn status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.shedding.busy())
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Request rate and latency per route and status, admissions by outcome, write-behind \
        queue depth, batch size and commit latency, store errors, shed and rate-limited counts, owned \
        events, mailbox depth.",
    responses((
        status = 200,
        description = "The Prometheus text exposition format.",
        content_type = "text/plain; version=0.0.4",
        body = String
    ))
)]
async fn render_metrics(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.shedding.write_behind.stats();
    ::metrics::gauge!(metrics::WRITE_QUEUE_DEPTH).set(state.shedding.write_behind.queue_depth() as f64);
    ::metrics::gauge!(metrics::OWNED_EVENTS).set(state.events.registry.owned_events() as f64);
    for (event, depth) in state.events.registry.mailbox_depths() {
        ::metrics::gauge!(metrics::MAILBOX_DEPTH, "event_id" => event.to_string()).set(depth as f64);
    }
    let mut text = state.metrics.render();
    // The writer keeps its own counters (it has no metrics dependency); they are written out
    // here in the exposition format.
    let counters = [
        (metrics::WRITE_BATCHES, "Write-behind transactions committed.", stats.batches_committed),
        (metrics::WRITE_EFFECTS, "Effects committed by the write-behind.", stats.effects_committed),
        (
            metrics::WRITE_BATCHES_FAILED,
            "Write-behind transactions that failed for good.",
            stats.batches_failed,
        ),
        (
            metrics::WRITE_FENCED,
            "Submissions refused because another node owns the event.",
            stats.submissions_fenced,
        ),
    ];
    for (name, help, value) in counters {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
    }
    let breaker = u8::from(stats.breaker_open);
    text.push_str(&format!(
        "# TYPE {} gauge\n{} {breaker}\n",
        metrics::WRITE_BREAKER_OPEN,
        metrics::WRITE_BREAKER_OPEN
    ));
    write_histogram(&mut text, metrics::WRITE_BATCH_SIZE, &stats.batch_effects, 1.0);
    write_histogram(&mut text, metrics::WRITE_COMMIT_DURATION, &stats.commit_latency_micros, 1e-6);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}

/// Writes a per-bucket histogram as a cumulative Prometheus histogram, scaling its unit.
fn write_histogram(
    text: &mut String,
    name: &str,
    histogram: &kuota_persist::write_behind::Histogram,
    scale: f64,
) {
    text.push_str(&format!("# TYPE {name} histogram\n"));
    let mut cumulative = 0;
    for (index, count) in histogram.counts.iter().enumerate() {
        cumulative += count;
        let bound = histogram
            .bounds
            .get(index)
            .map_or_else(|| "+Inf".to_string(), |bound| (*bound as f64 * scale).to_string());
        text.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
    }
    if histogram.counts.len() <= histogram.bounds.len() {
        text.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
    }
    text.push_str(&format!("{name}_sum {}\n{name}_count {cumulative}\n", histogram.sum as f64 * scale));
}
