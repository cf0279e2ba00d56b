//! Registrations: create (the hot path), read, cancel, confirm, and the admin listing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::{EndedStatus, EventId, Outcome, RegistrationId};
use kuota_persist::store::{RegistrationRow, RowStatus};
use serde::Serialize;

use crate::error::{ApiError, FieldError};
use crate::http::page_bounds;
use crate::middleware::resource;
use crate::responses::{
    EventNotFound, JsonBodyRefused, NoCredential, Overloaded, Problem, RateLimited, Unauthorized,
};
use crate::state::{AppState, bearer};
use crate::use_cases::register::{self, Admission};
use crate::{time_format, tokens};

// The registration's id names its event; webhooks and the audit trail write it too.
pub use crate::use_cases::register::external_id;

// The registration resource's pattern, which the request metrics know too.
pub use crate::middleware::REGISTRATIONS_PATTERN;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(REGISTRATIONS_PATTERN).route(web::post().to(create)).route(web::get().to(list)))
        .service(
            resource("/v1/registrations/{registration_id}")
                .route(web::get().to(read))
                .route(web::delete().to(cancel)),
        )
        .service(resource("/v1/registrations/{registration_id}/confirm").route(web::post().to(confirm)));
}

/// A registration as its registrant or an organizer reads it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Registration)]
pub struct RegistrationView {
    #[schema(example = "city-race.17")]
    id: String,
    #[schema(example = "city-race")]
    event_id: String,
    #[schema(example = "10K")]
    category: String,
    #[schema(value_type = crate::responses::RegistrationStatus)]
    status: &'static str,
    /// Normalized: trimmed and lower-cased.
    #[schema(example = "ana@example.org")]
    email: String,
    #[schema(example = "Ana Runner")]
    full_name: String,
    #[schema(required = true)]
    phone: Option<String>,
    #[schema(required = true, value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
    /// While `waitlisted`: 1 for the head of the waitlist.
    #[schema(required = true)]
    waitlist_position: Option<u32>,
    /// While `held`: when the hold lapses unless confirmed.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// One page of an event's registrations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationPage {
    items: Vec<RegistrationView>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl RegistrationView {
    /// The view with `status` in place of the stored one: a webhook announces the status its
    /// change set, which the registration may have left since.
    pub fn with_status(mut self, status: RowStatus) -> Self {
        self.status = status.as_str();
        self
    }
}

impl From<&RegistrationRow> for RegistrationView {
    fn from(row: &RegistrationRow) -> Self {
        RegistrationView {
            id: external_id(&row.event, row.id),
            event_id: row.event.to_string(),
            category: row.category.to_string(),
            status: row.status.as_str(),
            email: row.email.clone(),
            full_name: row.full_name.clone(),
            phone: row.phone.clone(),
            attributes: row.attributes_json.as_deref().and_then(|text| serde_json::from_str(text).ok()),
            waitlist_position: row.waitlist_position.filter(|_| row.status == RowStatus::Waitlisted),
            expires_at: row
                .hold_expires_at
                .filter(|_| row.status == RowStatus::Held)
                .map(time_format::format),
            created_at: time_format::format(row.created_at),
            updated_at: time_format::format(row.updated_at),
        }
    }
}

fn parse_external_id(text: &str) -> Result<(EventId, RegistrationId), ApiError> {
    let not_found = || ApiError::NotFound("the registration");
    let (event, number) = text.rsplit_once('.').ok_or_else(not_found)?;
    let event = EventId::parse(event).map_err(|_| not_found())?;
    let number = number.parse::<u64>().ok().filter(|number| *number > 0).ok_or_else(not_found)?;
    Ok((event, RegistrationId(number)))
}

#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/registrations",
    operation_id = "register",
    tag = "public",
    summary = "Register for an event",
    description = "Takes a seat (`confirmed`, or `held` when the event has holds), joins the waitlist \
        (`waitlist: true`), or is refused. What the event decided (201, 202, and 409 `sold_out`, \
        `already_registered`, `not_open`, `closed`) is stored with the `Idempotency-Key` and replayed \
        byte for byte, with `Idempotent-Replayed: true`, to a retry with the same key and body; \
        what was refused before reaching the event is not stored, so a retry is decided afresh.",
    params(
        ("event_id" = String, Path, description = "The event's id."),
        (
            "Idempotency-Key" = String,
            Header,
            description = "Required; scoped to the event. The same key with the same body gets the same \
                answer.",
            min_length = 1,
            max_length = 255,
            pattern = "^[ -~]+$"
        ),
        (
            "Queue-Pass" = Option<String>,
            Header,
            description = "Required for a queued event: the `pass` of the registrant's admitted ticket, or \
                the `waitlist_pass` of its sold-out ticket (with `waitlist: true`)."
        )
    ),
    request_body = crate::domain::RegistrationBody,
    responses(
        (
            status = 201,
            description = "A seat: `confirmed`, or `held` until `expires_at` when the event has holds.",
            body = Admission,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay."))
        ),
        (
            status = 202,
            description = "Sold out and `waitlist: true`: `waitlisted` at `waitlist_position`.",
            body = Admission,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay."))
        ),
        (
            status = 400,
            description = "`idempotency_key_missing`, `idempotency_key_invalid` (not 1–255 printable \
                ASCII) or `malformed_body`.",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 403,
            description = "A queued event: no `Queue-Pass` (`queue_pass_required`), or a pass that is \
                unknown, expired, used, another registrant's, or a waitlist pass without `waitlist: true` \
                (`queue_pass_invalid`). Checked right after `not_open`/`closed`; not stored with the key.",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 404, response = EventNotFound),
        (
            status = 409,
            description = "`sold_out`; `already_registered` (this e-mail has an active registration in \
                the event); `not_open` (with `opens_at`); `closed`; or `idempotency_key_in_flight` (the \
                same key is still being decided: retry after `Retry-After`).",
            body = Problem,
            content_type = "application/problem+json",
            headers(
                ("Idempotent-Replayed" = String, description = "`true` on a replay."),
                ("Retry-After" = u64, description = "With `idempotency_key_in_flight`.")
            ),
            examples(
                ("sold_out" = (value = json!({
                    "type": "https://kuota.dev/problems/sold_out", "title": "Conflict", "status": 409,
                    "detail": "the category is sold out", "code": "sold_out"
                }))),
                ("not_open" = (value = json!({
                    "type": "https://kuota.dev/problems/not_open", "title": "Conflict", "status": 409,
                    "detail": "registration has not opened yet", "code": "not_open",
                    "opens_at": "2026-11-24T10:00:00Z"
                })))
            )
        ),
        JsonBodyRefused,
        (
            status = 422,
            description = "`validation_failed` with `errors` (bad e-mail, unknown category, missing or \
                too long field), or `idempotency_key_reused` (the key came with another body).",
            body = Problem,
            content_type = "application/problem+json",
            example = json!({
                "type": "https://kuota.dev/problems/validation_failed", "title": "Validation failed",
                "status": 422, "detail": "the request has invalid fields", "code": "validation_failed",
                "errors": [{ "field": "email", "message": "an e-mail address needs an '@'" }]
            })
        ),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded)
    )
)]
async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let event_id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    // The owner-routing layer answers this route itself when the event runs here; what reaches
    // the router has an event located nowhere or not yet, and is looked up again.
    register::answer(&state, &event_id, None, &request, payload).await
}

/// Loads a registration the caller may see: its registrant (by access token) or an admin.
async fn authorized_row(
    state: &AppState,
    request: &HttpRequest,
    id: &str,
) -> Result<RegistrationRow, ApiError> {
    let is_admin = state.auth.is_admin(request).await?;
    let token = bearer(request);
    if !is_admin && token.is_none() {
        return Err(ApiError::Unauthorized);
    }
    let (event, registration) = parse_external_id(id)?;
    let row = state
        .store
        .registration(&event, registration)
        .await?
        .ok_or(ApiError::NotFound("the registration"))?;
    let token_matches = token.is_some_and(|token| {
        tokens::constant_time_eq(tokens::token_hash(token.as_bytes()).as_str(), &row.access_token_hash)
    });
    if is_admin || token_matches { Ok(row) } else { Err(ApiError::NotFound("the registration")) }
}

#[utoipa::path(
    get,
    path = "/v1/registrations/{registration_id}",
    operation_id = "get_registration",
    tag = "public",
    summary = "A registration, with its current status",
    params(("registration_id" = String, Path, description = "The `id` from the registration's answer.")),
    responses(
        (status = 200, description = "The registration.", body = RegistrationView),
        (status = 401, response = NoCredential),
        (
            status = 404,
            description = "No such registration, or the token is not its registrant's (`not_found`: \
                existence is never revealed).",
            body = Problem,
            content_type = "application/problem+json"
        )
    ),
    security(("registrant_token" = []), ("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(registration_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let row = authorized_row(&state, &request, &path).await?;
    let mut view = RegistrationView::from(&row);
    if row.status == RowStatus::Waitlisted {
        // The stored position is the one at joining; the actor knows where it stands now.
        let event = state.events.event_of(&request, &row.event).await?;
        let status = event.status(row.id).await.map_err(|error| state.shedding.actor_error(error))?;
        if let Some((kuota_engine::ActiveStatus::Waitlisted, Some(position))) = status {
            view.waitlist_position = Some(position);
        }
    }
    Ok(HttpResponse::Ok().json(view))
}

async fn reread(state: &AppState, row: &RegistrationRow) -> Result<HttpResponse, ApiError> {
    let fresh =
        state.store.registration(&row.event, row.id).await?.ok_or(ApiError::NotFound("the registration"))?;
    Ok(HttpResponse::Ok().json(RegistrationView::from(&fresh)))
}

#[utoipa::path(
    delete,
    path = "/v1/registrations/{registration_id}",
    operation_id = "cancel_registration",
    tag = "public",
    summary = "Cancel a registration",
    description = "The seat returns to the pool and the head of the waitlist is promoted (to `held` or \
        `confirmed`, per the event). Idempotent: cancelling again answers 200.",
    params(("registration_id" = String, Path, description = "The `id` from the registration's answer.")),
    responses(
        (status = 200, description = "The registration, `cancelled`.", body = RegistrationView),
        (status = 401, response = NoCredential),
        (
            status = 404,
            description = "No such registration, or the token is not its registrant's (`not_found`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 410,
            description = "The hold had already expired (`hold_expired`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 503, response = Overloaded)
    ),
    security(("registrant_token" = []), ("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(registration_id = %path))]
async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let row = authorized_row(&state, &request, &path).await?;
    if row.status == RowStatus::Cancelled {
        return reread(&state, &row).await;
    }
    state.shedding.refuse_if_stalled()?;
    let event = state.events.event_of(&request, &row.event).await?;
    match event.cancel(row.id).await.map_err(|error| state.shedding.actor_error(error))? {
        Outcome::RegistrationCancelled { .. } => reread(&state, &row).await,
        Outcome::AlreadyEnded { status: EndedStatus::Expired, .. } => Err(ApiError::Conflict {
            status: StatusCode::GONE,
            code: "hold_expired",
            detail: "the hold had already expired".into(),
            extra: crate::error::ProblemExtra::default(),
        }),
        Outcome::UnknownRegistration => reread(&state, &row).await,
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a cancel"))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/registrations/{registration_id}/confirm",
    operation_id = "confirm_registration",
    tag = "admin",
    summary = "Confirm a held registration (payment callback)",
    description = "`held` → `confirmed`. Idempotent: 200 again when already confirmed.",
    params(("registration_id" = String, Path, description = "The registration's id.")),
    responses(
        (status = 200, description = "The registration, `confirmed`.", body = RegistrationView),
        (status = 401, response = Unauthorized),
        (
            status = 404,
            description = "No such registration (`not_found`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 409,
            description = "`registration_cancelled`, or `not_held` (a waitlisted registration).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 410,
            description = "The hold lapsed before the confirmation (`hold_expired`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(registration_id = %path))]
async fn confirm(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let row = authorized_row(&state, &request, &path).await?;
    let expired = || ApiError::Conflict {
        status: StatusCode::GONE,
        code: "hold_expired",
        detail: "the hold expired before the confirmation".into(),
        extra: crate::error::ProblemExtra::default(),
    };
    match row.status {
        RowStatus::Expired => return Err(expired()),
        RowStatus::Cancelled => {
            return Err(ApiError::conflict("registration_cancelled", "the registration was cancelled"));
        }
        RowStatus::Confirmed => return reread(&state, &row).await,
        RowStatus::Held | RowStatus::Waitlisted => {}
    }
    state.shedding.refuse_if_stalled()?;
    let event = state.events.event_of(&request, &row.event).await?;
    match event.confirm(row.id).await.map_err(|error| state.shedding.actor_error(error))? {
        Outcome::RegistrationConfirmed { .. } => reread(&state, &row).await,
        Outcome::HoldExpired { .. } => Err(expired()),
        Outcome::NotHeld { .. } => {
            Err(ApiError::conflict("not_held", "only a held registration can be confirmed"))
        }
        Outcome::AlreadyEnded { .. } => {
            Err(ApiError::conflict("registration_cancelled", "the registration was cancelled"))
        }
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a confirm"))),
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Only registrations with this status.
    #[param(value_type = Option<crate::responses::RegistrationStatus>)]
    status: Option<String>,
    /// Registrations per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; the first page without it.
    #[param(pattern = "^[0-9]{0,19}$")]
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}/registrations",
    operation_id = "list_registrations",
    tag = "admin",
    summary = "An event's registrations",
    description = "Paginated by keyset from the store: follow `next_cursor` until it is `null`.",
    params(("event_id" = String, Path, description = "The event's id."), PageQuery),
    responses(
        (status = 200, description = "One page.", body = RegistrationPage),
        (status = 401, response = Unauthorized),
        (status = 404, response = EventNotFound),
        (
            status = 422,
            description = "`limit` outside 1–500, an unknown `status` or a bad `cursor` \
                (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        )
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, query), fields(event_id = %path))]
async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let event = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let (limit, cursor) = page_bounds(query.limit.as_deref(), query.cursor.as_deref())?;
    // An empty `status=` names no status: refused like any other unknown one.
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(RowStatus::parse(text).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "status",
                "must be held, confirmed, waitlisted, cancelled or expired",
            )])
        })?),
    };
    if state.store.event_config(&event).await?.is_none() {
        return Err(ApiError::NotFound("the event"));
    }
    let rows = state.store.registrations_page(&event, status, limit, cursor.map(RegistrationId)).await?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|row| row.id.0.to_string())).flatten();
    let items = rows.iter().map(RegistrationView::from).collect();
    Ok(HttpResponse::Ok().json(RegistrationPage { items, next_cursor }))
}
