//! Events: create (admin), read with live availability, change a category's capacity (admin),
//! and the audit trail (admin).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::actor::EventHandle;
use kuota_engine::{CategoryAvailability, CategoryCode, EventId, Outcome, Timestamp};
use serde::Serialize;

use crate::error::ApiError;
use crate::routes::json_body;
use crate::routes::registrations::page_bounds;
use crate::state::AppState;
use crate::{domain, time_format};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/v1/events").route(web::post().to(create)))
        .service(web::resource("/v1/events/{event_id}").route(web::get().to(read)))
        .service(
            web::resource("/v1/events/{event_id}/categories/{code}").route(web::patch().to(change_capacity)),
        )
        .service(web::resource("/v1/events/{event_id}/audit").route(web::get().to(audit)))
        .service(web::resource("/v1/events/{event_id}/stream").route(web::get().to(stream)));
}

/// Server-Sent Events subscribers one node serves at once; more get 503.
pub const STREAM_SUBSCRIBERS_MAX: usize = 10_000;
/// Updates of one stream are coalesced to at most one per this interval, in ms.
const STREAM_UPDATE_INTERVAL_MS: u64 = 250;
/// A comment line keeps idle connections (and proxies) alive this often, in seconds.
const STREAM_HEARTBEAT_SECONDS: u64 = 15;

/// Counts a subscriber while its stream lives.
struct Subscription(web::Data<AppState>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.stream_subscribers.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

struct StreamState {
    subscription: Subscription,
    event: EventHandle,
    sent: Option<(u64, &'static str)>,
    last_write: std::time::Instant,
}

fn availability_frame(event: &EventHandle, state: &AppState) -> (web::Bytes, (u64, &'static str)) {
    let now = kuota_engine::Clock::now(&state.clock);
    let version = event.counters().version();
    let figures = event.counters().snapshot();
    let view = event_view(event, &figures, now);
    let status = view.status;
    let data =
        serde_json::json!({ "event_id": view.id, "status": view.status, "categories": view.categories });
    (web::Bytes::from(format!("event: availability\ndata: {data}\n\n")), (version, status))
}

#[tracing::instrument(skip(state), fields(event_id = %path))]
async fn stream(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let event = state.event(&id).await?;
    let subscribers = state.stream_subscribers.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let subscription = Subscription(state.clone());
    if subscribers >= STREAM_SUBSCRIBERS_MAX {
        return Err(state.shed("too many stream subscribers"));
    }
    let initial = StreamState { subscription, event, sent: None, last_write: std::time::Instant::now() };
    let frames = futures_util::stream::unfold(initial, |mut current| async move {
        loop {
            let app = &current.subscription.0;
            let (frame, key) = availability_frame(&current.event, app);
            if current.sent != Some(key) {
                current.sent = Some(key);
                current.last_write = std::time::Instant::now();
                return Some((Ok::<_, actix_web::Error>(frame), current));
            }
            if current.last_write.elapsed() >= std::time::Duration::from_secs(STREAM_HEARTBEAT_SECONDS) {
                current.last_write = std::time::Instant::now();
                return Some((Ok(web::Bytes::from_static(b": heartbeat\n\n")), current));
            }
            tokio::time::sleep(std::time::Duration::from_millis(STREAM_UPDATE_INTERVAL_MS)).await;
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(frames))
}

#[derive(Debug, Serialize)]
struct CategoryView<'a> {
    code: &'a str,
    name: &'a str,
    capacity: u32,
    confirmed: u32,
    held: u32,
    available: u32,
    waitlisted: u32,
}

#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    id: &'a str,
    name: &'a str,
    opens_at: Option<String>,
    closes_at: Option<String>,
    hold_ttl_seconds: u32,
    status: &'static str,
    categories: Vec<CategoryView<'a>>,
}

/// `scheduled`, `open`, `closed` or `sold_out`, from the window and the figures.
pub fn event_status(
    event: &kuota_engine::EventConfig,
    figures: &[CategoryAvailability],
    now: Timestamp,
) -> &'static str {
    if event.opens_at.is_some_and(|opens_at| now < opens_at) {
        "scheduled"
    } else if event.closes_at.is_some_and(|closes_at| now >= closes_at) {
        "closed"
    } else if figures.iter().all(|category| category.available == 0) {
        "sold_out"
    } else {
        "open"
    }
}

/// The event as `GET /v1/events/{id}` and the stream show it.
pub fn event_view<'a>(
    event: &'a EventHandle,
    figures: &'a [CategoryAvailability],
    now: Timestamp,
) -> EventView<'a> {
    let config = event.config();
    EventView {
        id: config.id.as_str(),
        name: &config.name,
        opens_at: config.opens_at.map(time_format::format),
        closes_at: config.closes_at.map(time_format::format),
        hold_ttl_seconds: config.hold_ttl_seconds,
        status: event_status(config, figures, now),
        categories: config
            .categories
            .iter()
            .zip(figures)
            .map(|(category, figures)| CategoryView {
                code: category.code.as_str(),
                name: &category.name,
                capacity: figures.capacity,
                confirmed: figures.confirmed,
                held: figures.held,
                available: figures.available,
                waitlisted: figures.waitlisted,
            })
            .collect(),
    }
}

#[tracing::instrument(skip(state, request, payload))]
async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let generated = kuota_persist::random::token_hex(6);
    let config = domain::new_event(&body, &generated, state.settings.idempotency_retention_seconds)?;
    let now = kuota_engine::Clock::now(&state.clock);
    let created = state
        .store
        .create_event(&config, now)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?;
    if !created {
        return Err(ApiError::conflict("event_exists", format!("an event with id {} exists", config.id)));
    }
    tracing::info!(event_id = %config.id, "event created");
    let event = state.event(&config.id).await?;
    let figures = event.counters().snapshot();
    let location = format!("/v1/events/{}", config.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(event_view(&event, &figures, now)))
}

#[tracing::instrument(skip(state, request), fields(event_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let event = state.event(&id).await?;
    let now = kuota_engine::Clock::now(&state.clock);
    let figures = event.counters().snapshot();
    let status = event_status(event.config(), &figures, now);
    // The counters' version changes with every figure; the status with the clock.
    let etag = format!("\"{}-{}\"", event.counters().version(), status);
    let matches =
        request.headers().get(header::IF_NONE_MATCH).and_then(|value| value.to_str().ok()).is_some_and(
            |value| value.split(',').any(|candidate| candidate.trim().trim_start_matches("W/") == etag),
        );
    let cache = (header::CACHE_CONTROL, "public, max-age=1");
    if matches {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header(cache)
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header(cache)
        .json(event_view(&event, &figures, now)))
}

#[tracing::instrument(skip(state, request, payload), fields(event_id = %path.0))]
async fn change_capacity(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let id = EventId::parse(&path.0).map_err(|_| ApiError::NotFound("the event"))?;
    let code = CategoryCode::parse(&path.1).map_err(|_| ApiError::NotFound("the category"))?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let capacity = domain::capacity(&body)?;
    let event = state.event(&id).await?;
    match event.set_capacity(code, capacity).await.map_err(|error| state.actor_error(error))? {
        Outcome::CapacityChanged { .. } => {
            let now = kuota_engine::Clock::now(&state.clock);
            let figures = event.counters().snapshot();
            Ok(HttpResponse::Ok().json(event_view(&event, &figures, now)))
        }
        Outcome::CapacityBelowTaken { taken, .. } => Err(ApiError::Conflict {
            status: actix_web::http::StatusCode::CONFLICT,
            code: "capacity_below_taken",
            detail: format!("{taken} seats are taken (confirmed or held); capacity cannot go below that"),
            extra: Some(serde_json::json!({ "taken": taken })),
        }),
        Outcome::UnknownCategory => Err(ApiError::NotFound("the category")),
        other => {
            Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a capacity change")))
        }
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[tracing::instrument(skip(state, request, query), fields(event_id = %path))]
async fn audit(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let (limit, cursor) = page_bounds(query.limit.as_deref(), query.cursor.as_deref())?;
    let store_error = |error| ApiError::Internal(anyhow::anyhow!("{error}"));
    if state.store.event_config(&id).await.map_err(store_error)?.is_none() {
        return Err(ApiError::NotFound("the event"));
    }
    let rows = state.store.audit_page(&id, limit, cursor).await.map_err(store_error)?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|row| row.id.to_string())).flatten();
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "id": row.id,
                "registration_id": row.registration.map(|registration| crate::routes::registrations::external_id(&id, registration)),
                "seq": row.seq.0,
                "kind": row.kind,
                "detail": serde_json::from_str::<serde_json::Value>(&row.detail_json).unwrap_or(serde_json::Value::Null),
                "at": time_format::format(row.at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}
