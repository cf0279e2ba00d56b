//! The queue of an event with a fair opening: join, read a ticket, read the draw; and the
//! `queue` object of the event (docs/design/API.md, "Queue").

use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::actor::EventHandle;
use kuota_engine::queue::hex;
use kuota_engine::{EventConfig, EventId, Timestamp};
use serde::Serialize;

use crate::cluster::LocatedHere;
use crate::error::ApiError;
use crate::middleware::resource;
use crate::queue::TicketBody;
use crate::responses::{JsonBodyRefused, Overloaded, Problem, RateLimited};
use crate::state::AppState;
use crate::time_format;
use crate::use_cases::{join_queue, read_ticket};

/// The queue resource's pattern: its route, and the route label of the joins the owner-routing
/// layer answers without the router.
pub const QUEUE_PATTERN: &str = "/v1/events/{event_id}/queue";

/// The ticket resource's pattern: its route, and the route label of the reads the owner-routing
/// layer answers without the router.
pub const TICKET_PATTERN: &str = "/v1/queue/{ticket_id}";

/// The ticket read first: it is what a waiting crowd polls when it reaches the router (see
/// `routes::configure`).
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(TICKET_PATTERN).route(web::get().to(read)))
        .service(resource(QUEUE_PATTERN).route(web::post().to(join)))
        .service(resource("/v1/events/{event_id}/queue/draw").route(web::get().to(draw)));
}

/// The queue of an event, in `GET /v1/events/{event_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    #[schema(format = DateTime)]
    lobby_opens_at: String,
    /// Lower-case hex SHA-256 of the draw seed's 32 bytes, from the moment the lobby opens.
    #[schema(required = true)]
    draw_commitment: Option<String>,
    /// The seed (64 hex characters) after the draw; `null` before.
    #[schema(required = true)]
    draw_seed: Option<String>,
    /// Tickets in the lobby or waiting in line.
    waiting: u64,
    admitted_outstanding: u64,
    /// Admissions per second over the last `pass_ttl_seconds` (at least 60 s, at most an hour),
    /// counted from the end of the first pass (used or lapsed), or from the first admission of a
    /// queue paced by `admit_per_second`; `null` before that or while none.
    #[schema(required = true)]
    admission_rate: Option<f64>,
}

/// The lobby's tickets in drawn order, to recompute the draw.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DrawView {
    event_id: String,
    draw_commitment: String,
    draw_seed: String,
    ticket_ids: Vec<String>,
}

/// `"-lobby"` once the lobby of a queued event opened (its commitment shows from then on),
/// `""` otherwise: part of the event's `ETag`.
pub fn lobby_phase(config: &EventConfig, now: Timestamp) -> &'static str {
    match &config.queue {
        Some(queue) if now >= queue.lobby_opens_at => "-lobby",
        _ => "",
    }
}

pub fn queue_view(event: &EventHandle, now: Timestamp) -> Option<QueueView> {
    let queue = event.config().queue.as_ref()?;
    let figures = event.counters().queue_snapshot();
    Some(QueueView {
        lobby_opens_at: time_format::format(queue.lobby_opens_at),
        draw_commitment: (now >= queue.lobby_opens_at).then(|| hex(&queue.draw_seed.commitment())),
        draw_seed: figures.drawn.then(|| hex(&queue.draw_seed.0)),
        waiting: figures.waiting,
        admitted_outstanding: figures.admitted_outstanding,
        admission_rate: figures.admission_rate,
    })
}

#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/queue",
    operation_id = "join_queue",
    tag = "public",
    summary = "Join an event's queue",
    description = "One ticket per e-mail per event. Before `opens_at` the ticket waits in the lobby \
        and is placed by the draw; later it goes to the tail. What the event decided (202, 200, 409 \
        `not_open`, `closed`) is stored with the `Idempotency-Key` and replayed byte for byte. \
        Acknowledged = committed.",
    params(
        ("event_id" = String, Path, description = "The event's id."),
        ("Idempotency-Key" = String, Header, description = "Required; scoped to the event.", min_length = 1, max_length = 255, pattern = "^[ -~]+$")
    ),
    request_body = crate::domain::NewTicket,
    responses(
        (status = 202, description = "A new ticket, with its `access_token`.", body = TicketBody,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay."))),
        (status = 200, description = "The registrant's existing ticket (no `access_token`).", body = TicketBody),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid` or `malformed_body`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event (`not_found`), or it has no queue (`no_queue`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not_open` (before `lobby_opens_at`, with it), `closed`, or \
            `idempotency_key_in_flight`.", body = Problem, content_type = "application/problem+json"),
        JsonBodyRefused,
        (status = 422, description = "`validation_failed` or `idempotency_key_reused`.", body = Problem,
            content_type = "application/problem+json"),
        (status = 429, response = RateLimited),
        (status = 503, description = "`queue_full` (`queue_max` tickets handed out) or `overloaded`, with \
            `Retry-After`.", body = Problem, content_type = "application/problem+json")
    )
)]
async fn join(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let event_id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    // As with registrations: the owner-routing layer answers a join itself when the event runs
    // here; what reaches the router has an event located nowhere or not yet.
    join_queue::answer(&state, &event_id, None, &request, payload).await
}

#[utoipa::path(
    get,
    path = "/v1/queue/{ticket_id}",
    operation_id = "get_ticket",
    tag = "public",
    summary = "A queue ticket as it stands now",
    params(("ticket_id" = String, Path, description = "The `ticket_id` from the join's answer.")),
    responses(
        (status = 200, description = "The ticket; poll again after `Retry-After` (= `refresh_after_seconds`).",
            body = TicketBody, headers(("Retry-After" = u32))),
        (status = 401, description = "No credential (`unauthorized`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ticket, or the token is not its own (`not_found`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, response = Overloaded)
    ),
    security(("registrant_token" = []), ("admin_token" = []), ("admin_session" = []))
)]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // The owner-routing layer answers a read itself when the ticket's event runs here; what
    // reaches the router has an event located nowhere or not yet.
    read_ticket::answer(&state, &request, &path, LocatedHere::of(&request)).await
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}/queue/draw",
    operation_id = "get_draw",
    tag = "public",
    summary = "The draw, to recompute it",
    description = "The lobby's tickets in drawn order: ascending `HMAC-SHA256(key = seed bytes, message = \
        ticket_id)` as a big-endian number. SHA-256 of the seed's bytes is `draw_commitment`.",
    params(("event_id" = String, Path, description = "The event's id.")),
    responses(
        (status = 200, description = "The draw.", body = DrawView),
        (status = 404, description = "No such event (`not_found`) or no queue (`no_queue`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Before the draw (`not_drawn`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, response = Overloaded)
    )
)]
#[tracing::instrument(skip(state, request), fields(event_id = %path))]
async fn draw(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let event_id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let event = state.events.event_of(&request, &event_id).await?;
    let seed = event.config().queue.as_ref().ok_or_else(crate::queue::no_queue)?.draw_seed;
    let lobby = event
        .draw()
        .await
        .map_err(|error| state.shedding.actor_error(error))?
        .ok_or_else(|| ApiError::conflict("not_drawn", "the draw happens at opens_at"))?;
    Ok(HttpResponse::Ok().json(DrawView {
        event_id: event_id.to_string(),
        draw_commitment: hex(&seed.commitment()),
        draw_seed: hex(&seed.0),
        ticket_ids: lobby.iter().map(|ticket| ticket.text(&event_id)).collect(),
    }))
}
