//! Events: create (admin), read with live availability, change a category's capacity (admin),
//! the audit trail (admin), and the listing of every event (admin).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::actor::EventHandle;
use kuota_engine::{CategoryAvailability, CategoryCode, EventId, Outcome, Timestamp};
use serde::Serialize;

use crate::error::{ApiError, FieldError};
use crate::http::json_body;
use crate::http::page_bounds;
use crate::middleware::resource;
use crate::responses::{EventNotFound, JsonBodyRefused, Overloaded, Problem, Unauthorized};
use crate::state::AppState;
use crate::{domain, time_format};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/v1/events").route(web::post().to(create)).route(web::get().to(list)))
        .service(resource("/v1/events/{event_id}").route(web::get().to(read)))
        .service(resource("/v1/events/{event_id}/categories/{code}").route(web::patch().to(change_capacity)))
        .service(resource("/v1/events/{event_id}/audit").route(web::get().to(audit)))
        .service(resource("/v1/events/{event_id}/stream").route(web::get().to(stream)));
}

/// Server-Sent Events subscribers one node serves at once; more get 503.
pub const STREAM_SUBSCRIBERS_MAX: usize = 10_000;
/// Updates of one stream are coalesced to at most one per this interval, in ms.
pub(crate) const STREAM_UPDATE_INTERVAL_MS: u64 = 250;
/// A comment line keeps idle connections (and proxies) alive this often, in seconds.
pub(crate) const STREAM_HEARTBEAT_SECONDS: u64 = 15;

/// Counts a subscriber (of any stream: an event's or a ticket's) while its stream lives.
pub(crate) struct Subscription(web::Data<AppState>);

impl Subscription {
    /// A place under `STREAM_SUBSCRIBERS_MAX`, or 503 when every place is taken.
    pub(crate) fn open(state: &web::Data<AppState>) -> Result<Subscription, ApiError> {
        let subscribers = state.stream_subscribers.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let subscription = Subscription(state.clone());
        if subscribers >= STREAM_SUBSCRIBERS_MAX {
            return Err(state.shedding.shed("too many stream subscribers"));
        }
        Ok(subscription)
    }

    pub(crate) fn state(&self) -> &AppState {
        &self.0
    }
}

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
    let now = state.clock.now();
    let version = event.counters().version();
    let figures = event.counters().snapshot();
    let view = event_view(event, &figures, now);
    let status = view.status;
    let data = Availability { categories: &view.categories, event_id: view.id, status: view.status };
    // Strings, numbers and lists of them always serialize.
    let data = serde_json::to_string(&data).expect("availability serializes");
    (web::Bytes::from(format!("event: availability\ndata: {data}\n\n")), (version, status))
}

/// The `data` of an `event: availability` of `GET /v1/events/{event_id}/stream`: the figures of
/// `GET /v1/events/{event_id}`, without what does not change. Its members in the order the
/// stream has always sent them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Availability<'a> {
    categories: &'a [CategoryView<'a>],
    #[schema(example = "city-race")]
    event_id: &'a str,
    #[schema(value_type = crate::responses::EventStatus)]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}/stream",
    operation_id = "stream_availability",
    tag = "public",
    summary = "Follow an event's availability live (Server-Sent Events)",
    description = "Server-Sent Events (`text/event-stream`). On connect, and then on every change \
        (coalesced to at most one every 250 ms), one event named `availability` whose `data` is one \
        line of JSON, the schema `Availability`: the event's `status` and its `categories` with the \
        same figures as `GET /v1/events/{event_id}`. A comment line `: heartbeat` every 15 s keeps \
        the connection open; no other event is sent. The stream never ends by itself; a node that \
        does not own the event answers 307 to the owner's address.",
    params(("event_id" = String, Path, description = "The event's id.")),
    responses(
        (
            status = 200,
            description = "The stream: `event: availability` then `data: ` and an `Availability` as \
                JSON, then a blank line; repeated on every change.",
            content_type = "text/event-stream",
            body = String,
            example = "event: availability\n\
                data: {\"event_id\":\"city-race\",\"status\":\"open\",\"categories\":[]}\n\n"
        ),
        (status = 404, response = EventNotFound),
        (status = 503, response = Overloaded)
    )
)]
#[tracing::instrument(skip(state, request), fields(event_id = %path))]
async fn stream(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let event = state.events.event_of(&request, &id).await?;
    let subscription = Subscription::open(&state)?;
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

/// A category with its live figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CategoryAvailability)]
struct CategoryView<'a> {
    #[schema(example = "10K")]
    code: &'a str,
    name: &'a str,
    capacity: u32,
    confirmed: u32,
    held: u32,
    available: u32,
    waitlisted: u32,
}

/// An event with live availability per category.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventView<'a> {
    #[schema(example = "city-race")]
    id: &'a str,
    #[schema(example = "City Race")]
    name: &'a str,
    #[schema(required = true, format = DateTime)]
    opens_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    closes_at: Option<String>,
    hold_ttl_seconds: u32,
    #[schema(value_type = crate::responses::EventStatus)]
    status: &'static str,
    categories: Vec<CategoryView<'a>>,
    /// Only for an event with a queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<crate::routes::queue::QueueView>,
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
        queue: crate::routes::queue::queue_view(event, now),
    }
}

/// One page of an event's audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    /// The registration concerned, if any.
    #[schema(required = true, example = "city-race.17")]
    pub registration_id: Option<String>,
    /// The event's sequence number of the change.
    pub seq: u64,
    /// `created`, `confirmed`, `cancelled`, `expired`, `promoted`, `decision_recorded` or
    /// `capacity_changed`.
    #[schema(example = "created")]
    pub kind: String,
    /// What changed, as recorded.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    #[schema(format = DateTime)]
    pub at: String,
}

#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "create_event",
    tag = "admin",
    summary = "Create an event",
    request_body = crate::domain::NewEvent,
    responses(
        (
            status = 201,
            description = "Created; unset times are `null`.",
            body = EventView,
            headers(("Location" = String, description = "`/v1/events/{event_id}`."))
        ),
        (
            status = 400,
            description = "Malformed JSON (`malformed_body`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 401, response = Unauthorized),
        (
            status = 409,
            description = "An event with this id exists (`event_exists`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        JsonBodyRefused,
        (
            status = 422,
            description = "Invalid fields (`validation_failed`, with `errors`): `closes_at` not after \
                `opens_at`, no category, a duplicate code, a negative capacity, ...",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, payload))]
async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let generated = kuota_persist::random::token_hex(6);
    // The draw's seed: random here, committed to (its SHA-256 shown) once the lobby opens.
    let seed = kuota_persist::random::random_bytes::<32>();
    let config = domain::new_event(&body, &generated, state.settings.idempotency_retention_seconds, seed)?;
    let now = state.clock.now();
    let created = state.store.create_event(&config, now).await?;
    if !created {
        return Err(ApiError::conflict("event_exists", format!("an event with id {} exists", config.id)));
    }
    tracing::info!(event_id = %config.id, "event created");
    let event = state.events.event(&config.id).await?;
    let figures = event.counters().snapshot();
    let location = format!("/v1/events/{}", config.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(event_view(&event, &figures, now)))
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    operation_id = "get_event",
    tag = "public",
    summary = "An event with live availability",
    params(
        ("event_id" = String, Path, description = "The event's id."),
        (
            "If-None-Match" = Option<String>,
            Header,
            description = "An `ETag` from an earlier answer: 304 while it still matches."
        )
    ),
    responses(
        (
            status = 200,
            description = "The event.",
            body = EventView,
            headers(
                ("ETag" = String, description = "Changes with every figure and with the status."),
                ("Cache-Control" = String, description = "`public, max-age=1`.")
            )
        ),
        (
            status = 304,
            description = "Unchanged since the `ETag` given in `If-None-Match`.",
            headers(("ETag" = String), ("Cache-Control" = String))
        ),
        (status = 404, response = EventNotFound),
        (status = 503, response = Overloaded)
    )
)]
#[tracing::instrument(skip(state, request), fields(event_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let event = state.events.event_of(&request, &id).await?;
    let now = state.clock.now();
    let figures = event.counters().snapshot();
    let status = event_status(event.config(), &figures, now);
    // The counters' version changes with every figure; the status and the queue's commitment
    // with the clock.
    let lobby = crate::routes::queue::lobby_phase(event.config(), now);
    let etag = format!("\"{}-{}{lobby}\"", event.counters().version(), status);
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

#[utoipa::path(
    patch,
    path = "/v1/events/{event_id}/categories/{code}",
    operation_id = "change_capacity",
    tag = "admin",
    summary = "Change a category's capacity",
    description = "Raising it promotes waitlisted registrants; it cannot go below the seats confirmed or \
        held.",
    params(
        ("event_id" = String, Path, description = "The event's id."),
        ("code" = String, Path, description = "The category's code.")
    ),
    request_body = crate::domain::CapacityChange,
    responses(
        (status = 200, description = "The event with its new figures.", body = EventView),
        (
            status = 400,
            description = "Malformed JSON (`malformed_body`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 401, response = Unauthorized),
        (
            status = 404,
            description = "No such event or category (`not_found`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 409,
            description = "Below the seats confirmed or held (`capacity_below_taken`, with `taken`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        JsonBodyRefused,
        (
            status = 422,
            description = "Invalid `capacity` (`validation_failed`, with `errors`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, payload), fields(event_id = %path.0))]
async fn change_capacity(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let id = EventId::parse(&path.0).map_err(|_| ApiError::NotFound("the event"))?;
    let code = CategoryCode::parse(&path.1).map_err(|_| ApiError::NotFound("the category"))?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let capacity = domain::capacity(&body)?;
    state.shedding.refuse_if_stalled()?;
    let event = state.events.event_of(&request, &id).await?;
    match event.set_capacity(code, capacity).await.map_err(|error| state.shedding.actor_error(error))? {
        Outcome::CapacityChanged { .. } => {
            let now = state.clock.now();
            let figures = event.counters().snapshot();
            Ok(HttpResponse::Ok().json(event_view(&event, &figures, now)))
        }
        Outcome::CapacityBelowTaken { taken, .. } => Err(ApiError::Conflict {
            status: actix_web::http::StatusCode::CONFLICT,
            code: "capacity_below_taken",
            detail: format!("{taken} seats are taken (confirmed or held); capacity cannot go below that"),
            extra: crate::error::ProblemExtra { taken: Some(taken), ..Default::default() },
        }),
        Outcome::UnknownCategory => Err(ApiError::NotFound("the category")),
        other => {
            Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a capacity change")))
        }
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Entries per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; the first page without it.
    #[param(pattern = "^[0-9]{0,19}$")]
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}/audit",
    operation_id = "list_audit_entries",
    tag = "admin",
    summary = "An event's audit trail",
    description = "Oldest first, paginated by keyset: follow `next_cursor` until it is `null`.",
    params(("event_id" = String, Path, description = "The event's id."), AuditQuery),
    responses(
        (status = 200, description = "One page of the trail.", body = AuditPage),
        (status = 401, response = Unauthorized),
        (status = 404, response = EventNotFound),
        (
            status = 422,
            description = "Invalid `limit` or `cursor` (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        )
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, query), fields(event_id = %path))]
async fn audit(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let (limit, cursor) = page_bounds(query.limit.as_deref(), query.cursor.as_deref())?;
    if state.store.event_config(&id).await?.is_none() {
        return Err(ApiError::NotFound("the event"));
    }
    let rows = state.store.audit_page(&id, limit, cursor).await?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|row| row.id.to_string())).flatten();
    let items = rows
        .into_iter()
        .map(|row| AuditEntry {
            id: row.id,
            registration_id: row
                .registration
                .map(|registration| crate::use_cases::register::external_id(&id, registration)),
            seq: row.seq.0,
            detail: serde_json::from_str(&row.detail_json).unwrap_or(serde_json::Value::Null),
            kind: row.kind,
            at: time_format::format(row.at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventPageQuery {
    /// Events per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (an event id); the first page without it.
    #[param(pattern = "^[A-Za-z0-9_-]{0,64}$")]
    cursor: Option<String>,
}

/// An event as the listing shows it: `GET /v1/events/{event_id}` has the rest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    #[schema(example = "city-race")]
    id: String,
    #[schema(example = "City Race")]
    name: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// One page of the events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    items: Vec<EventSummary>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "admin",
    summary = "Every event, by id",
    description = "Paginated by keyset from the store, in ascending `id` order: follow `next_cursor` \
        until it is `null`.",
    params(EventPageQuery),
    responses(
        (status = 200, description = "One page.", body = EventPage),
        (status = 401, response = Unauthorized),
        (
            status = 422,
            description = "`limit` outside 1–500, or a `cursor` that is not an event id \
                (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, query))]
async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<EventPageQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let (limit, _) = page_bounds(query.limit.as_deref(), None)?;
    let after = match query.cursor.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(EventId::parse(text).map_err(|_| {
            ApiError::Validation(vec![FieldError::new("cursor", "is not a cursor from a previous page")])
        })?),
    };
    let rows = state.store.events_page(after.as_ref(), limit).await?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|row| row.id.to_string())).flatten();
    let items = rows
        .iter()
        .map(|row| EventSummary {
            id: row.id.to_string(),
            name: row.name.clone(),
            created_at: time_format::format(row.created_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventPage { items, next_cursor }))
}
