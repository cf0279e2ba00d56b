//! Registrations: create (the hot path), read, cancel, confirm, and the admin listing.

use std::sync::LazyLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::Stream;
use kuota_engine::actor::EventHandle;
use kuota_engine::{Decision, EndedStatus, EventId, Outcome, RegistrationId, Timestamp};
use kuota_persist::store::{RegistrationRow, RowStatus};
use serde::Serialize;

use crate::error::ApiError;
use crate::middleware::{label_route, resource};
use crate::openapi::{Overloaded, PayloadTooLarge, Problem, RateLimited, Unauthorized, UnsupportedMediaType};
use crate::routes::json_body;
use crate::state::{AppState, bearer};
use crate::{admission, domain, metrics, time_format, tokens};

/// Registrations one listing page may hold.
pub const PAGE_LIMIT_MAX: u32 = 500;
const PAGE_LIMIT_DEFAULT: u32 = 50;

/// The registration resource's pattern: its route, and the route label of its metrics, those of
/// the fast route's answers (`create_here`) too.
pub const REGISTRATIONS_PATTERN: &str = "/v1/events/{event_id}/registrations";

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

/// The answer to a registration request that got (or waits for) a seat.
#[derive(Serialize, utoipa::ToSchema)]
struct Admission<'a> {
    #[schema(example = "city-race.17")]
    id: String,
    #[schema(example = "city-race")]
    event_id: &'a str,
    #[schema(example = "10K")]
    category: &'a str,
    #[schema(value_type = crate::openapi::AdmissionStatus)]
    status: &'static str,
    /// With `waitlisted`: 1 for the head of the waitlist.
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<u32>,
    /// With `held`: when the hold lapses unless confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The registrant's bearer token for `GET` and `DELETE /v1/registrations/{registration_id}`.
    access_token: &'a str,
    #[schema(format = DateTime)]
    created_at: String,
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
    #[schema(value_type = crate::openapi::RegistrationStatus)]
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

/// The body of `POST /v1/events/{event_id}/registrations`.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({ "category": "10K", "email": "ana@example.org", "full_name": "Ana Runner" }))]
pub struct NewRegistration {
    /// The code of one of the event's categories.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9_-]+$")]
    pub category: String,
    /// Trimmed and lower-cased; a registrant has at most one active (`held`, `confirmed` or
    /// `waitlisted`) registration per event.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 200)]
    pub full_name: String,
    #[schema(max_length = 32)]
    pub phone: Option<String>,
    /// Anything the organizer asks for; at most 4 KiB serialized.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
    /// When sold out, join the waitlist (202) instead of being refused (409 `sold_out`).
    #[schema(default = false)]
    pub waitlist: Option<bool>,
}

/// One page of an event's registrations.
#[derive(utoipa::ToSchema)]
// Only describes the page, which `list` writes with `json!`; its items' type is private and
// has no `Debug`.
#[allow(dead_code, missing_debug_implementations)]
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

/// `<event>.<number>`: ids are opaque to clients, but they name their event.
pub fn external_id(event: &EventId, registration: RegistrationId) -> String {
    format!("{event}.{registration}")
}

fn parse_external_id(text: &str) -> Result<(EventId, RegistrationId), ApiError> {
    let not_found = || ApiError::NotFound("the registration");
    let (event, number) = text.rsplit_once('.').ok_or_else(not_found)?;
    let event = EventId::parse(event).map_err(|_| not_found())?;
    let number = number.parse::<u64>().ok().filter(|number| *number > 0).ok_or_else(not_found)?;
    Ok((event, RegistrationId(number)))
}

fn admission_response(
    decision: &Decision,
    event: &EventId,
    category: &str,
    access_token: &str,
    created_at: Timestamp,
    replayed: bool,
) -> Result<HttpResponse, ApiError> {
    let (status, registration, label, waitlist_position, expires_at) = match *decision {
        Decision::Confirmed { registration } => (StatusCode::CREATED, registration, "confirmed", None, None),
        Decision::Held { registration, expires_at } => {
            (StatusCode::CREATED, registration, "held", None, Some(time_format::format(expires_at)))
        }
        Decision::Waitlisted { registration, position } => {
            (StatusCode::ACCEPTED, registration, "waitlisted", Some(position), None)
        }
        _ => return Err(refusal(decision)),
    };
    let body = Admission {
        id: external_id(event, registration),
        event_id: event.as_str(),
        category,
        status: label,
        waitlist_position,
        expires_at,
        access_token,
        created_at: time_format::format(created_at),
    };
    let mut response = HttpResponse::build(status).json(body);
    if replayed {
        super::mark_replayed(&mut response);
    }
    Ok(response)
}

/// The answer to a request refused as sold out from the published counters, the hottest answer
/// of a sale: the same status, headers and bytes as `refusal(&Decision::SoldOut)`, whose
/// problem document is serialized once per process instead of once per request.
fn sold_out_response() -> HttpResponse {
    static RENDERED: LazyLock<(StatusCode, HeaderValue, web::Bytes)> = LazyLock::new(|| {
        let response = refusal(&Decision::SoldOut).error_response();
        let status = response.status();
        // `ApiError::error_response` always sets the problem document's content type.
        let content_type =
            response.headers().get(header::CONTENT_TYPE).cloned().expect("a problem names its content type");
        // A problem document is one in-memory buffer, never a stream.
        let body = response.into_body().try_into_bytes().expect("a problem document is a single buffer");
        (status, content_type, body)
    });
    let (status, content_type, body) = &*RENDERED;
    HttpResponse::build(*status)
        .insert_header((header::CONTENT_TYPE, content_type.clone()))
        .body(body.clone())
}

/// The problem document of a decision that refused a seat.
fn refusal(decision: &Decision) -> ApiError {
    match decision {
        Decision::SoldOut => ApiError::conflict("sold_out", "the category is sold out"),
        Decision::AlreadyRegistered => ApiError::conflict(
            "already_registered",
            "this registrant already has a registration for the event",
        ),
        Decision::NotOpen { opens_at } => ApiError::Conflict {
            status: StatusCode::CONFLICT,
            code: "not_open",
            detail: "registration has not opened yet".into(),
            extra: Some(serde_json::json!({ "opens_at": time_format::format(*opens_at) })),
        },
        Decision::Closed => ApiError::conflict("closed", "registration has closed"),
        // Only refusals reach here; the admissions are answered by `admission_response`.
        other => ApiError::Internal(anyhow::anyhow!("{other:?} is not a refusal")),
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Decided(Decision::Confirmed { .. }) => "confirmed",
        Outcome::Decided(Decision::Held { .. }) => "held",
        Outcome::Decided(Decision::Waitlisted { .. }) => "waitlisted",
        Outcome::Decided(Decision::SoldOut) => "sold_out",
        Outcome::Decided(Decision::AlreadyRegistered) => "already_registered",
        Outcome::Decided(Decision::NotOpen { .. }) => "not_open",
        Outcome::Decided(Decision::Closed) => "closed",
        Outcome::Replayed(_) => "replayed",
        Outcome::QueuePassRequired => "queue_pass_required",
        Outcome::QueuePassInvalid => "queue_pass_invalid",
        Outcome::KeyInFlight => "key_in_flight",
        Outcome::KeyReused => "key_reused",
        _ => "other",
    }
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
    request_body = NewRegistration,
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
        (
            status = 404,
            description = "No such event (`not_found`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
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
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
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
    // The ownership middleware answers this route itself when the event runs here
    // (`create_here`); what reaches the router has an event located elsewhere, nowhere, not yet,
    // or an id the middleware does not read (percent-encoded), and is looked up again.
    answer_registration(&state, &event_id, None, &request, payload).await
}

/// Answers `POST /v1/events/{event_id}/registrations` for an event that runs on this node, from
/// the ownership middleware, which has already matched the path by hand and located the event:
/// no router (it tries the resources in order, with a regular expression each) and no second
/// lookup of the event. The answer is what the routed `create` would give, byte for byte: the
/// same `answer_registration`, an error turned into its problem document as actix turns a handler's, and
/// the resource's route label for the request metrics. The request span is the middleware's,
/// which wraps this as it wraps the router.
pub async fn create_here(
    request: ServiceRequest,
    state: &AppState,
    event_id: &EventId,
    event: EventHandle,
) -> ServiceResponse {
    label_route(&request, REGISTRATIONS_PATTERN);
    let (request, payload) = request.into_parts();
    let response = match answer_registration(state, event_id, Some(event), &request, payload).await {
        Ok(response) => response,
        Err(error) => HttpResponse::from_error(error),
    };
    ServiceResponse::new(request, response)
}

/// A registration request for `event_id`, whether routed (`create`) or answered by the fast
/// route (`create_here`), which hands over the event it `located`. The span is the one the
/// routed handler always had, so that log lines read as before: its name, `create`, and its
/// fields, `path` as `#[instrument]` recorded the `web::Path<String>` argument (its `Debug`),
/// then `event_id`.
#[tracing::instrument(
    name = "create",
    skip_all,
    fields(path = %format_args!("Path({:?})", event_id.as_str()), event_id = %event_id)
)]
async fn answer_registration<P>(
    state: &AppState,
    event_id: &EventId,
    located: Option<EventHandle>,
    request: &HttpRequest,
    payload: P,
) -> Result<HttpResponse, ApiError>
where
    P: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    let key =
        domain::idempotency_key(request.headers().get("idempotency-key").map(|value| value.as_bytes()))?;
    let body = json_body(request, payload, state.settings.body_limit_bytes).await?;
    state.limit_client(request)?;
    let event = state.located_event(event_id, located).await?;
    let parsed = domain::registration(&body, event.config())?;
    state.limit_registrant(&parsed.registrant).await?;
    // Sold out is answered from the published counters, unless this key may have been decided
    // before (then its decision must be replayed, which only the actor knows). This comes before
    // the access token and the fingerprint are derived: a sold-out answer needs neither. Not for
    // a queued event: its pass is checked before `sold_out`, and only the actor can.
    let queued = event.config().queue.is_some();
    let sold_out = !queued && event.counters().is_sold_out(&parsed.category, parsed.waitlist) == Some(true);
    if sold_out && !event.counters().may_have_seen_key(&key) {
        metrics::sold_out_fast().increment(1);
        return Ok(sold_out_response());
    }
    state.refuse_if_stalled()?;
    let category = parsed.category.clone();
    let (mut register, access_token) = parsed.into_register(event_id, key.clone(), &state.token_secret);
    if queued && let Some(pass) = request.headers().get("queue-pass") {
        register.queue_pass = Some(crate::queue::parse_pass(&state.token_secret, event_id, pass.as_bytes()));
    }
    // Past the adaptive limit on registrations in flight, refused at once (see `admission`).
    let _permit = state.admission.try_acquire().ok_or_else(|| state.shed(admission::REFUSAL_REASON))?;
    let (outcome, decided_at) =
        event.register_timed(register).await.map_err(|error| state.actor_error(error))?;
    ::metrics::counter!(metrics::ADMISSIONS, "outcome" => outcome_label(&outcome)).increment(1);
    match outcome {
        Outcome::Decided(decision) => {
            admission_response(&decision, event_id, category.as_str(), &access_token, decided_at, false)
        }
        // Boxed (see `cluster::route_to_owner`): a store query's state is large, and replays rare.
        Outcome::Replayed(decision) => Box::pin(replay(state, event_id, &access_token, &decision)).await,
        Outcome::KeyInFlight => Err(ApiError::KeyInFlight),
        Outcome::KeyReused => Err(ApiError::KeyReused),
        Outcome::IdempotencyFull => Err(state.shed("the event keeps too many idempotency keys")),
        Outcome::QueuePassRequired => Err(ApiError::Conflict {
            status: StatusCode::FORBIDDEN,
            code: "queue_pass_required",
            detail: "this event admits registrations through its queue: send the ticket's pass in Queue-Pass"
                .into(),
            extra: None,
        }),
        Outcome::QueuePassInvalid => Err(ApiError::Conflict {
            status: StatusCode::FORBIDDEN,
            code: "queue_pass_invalid",
            detail: "the Queue-Pass is unknown, expired, used, another registrant's, or a waitlist pass \
                used for a seat"
                .into(),
            extra: None,
        }),
        Outcome::UnknownCategory => Err(ApiError::Validation(vec![crate::error::FieldError::new(
            "category",
            "is not a category of this event",
        )])),
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a registration"))),
    }
}

/// Answers a retry with the first decision's status and body, byte for byte: the body is
/// rebuilt from the stored registration (its category and creation time), and the token, being
/// derived from the event and the key, is the one the first answer carried.
async fn replay(
    state: &AppState,
    event: &EventId,
    access_token: &str,
    decision: &Decision,
) -> Result<HttpResponse, ApiError> {
    let Some(registration) = decision.registration() else {
        let mut response = actix_web::ResponseError::error_response(&refusal(decision));
        super::mark_replayed(&mut response);
        return Ok(response);
    };
    let row = state.store.registration(event, registration).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("replayed registration {registration} is not stored"))
    })?;
    admission_response(decision, event, row.category.as_str(), access_token, row.created_at, true)
}

/// Loads a registration the caller may see: its registrant (by access token) or an admin.
async fn authorized_row(
    state: &AppState,
    request: &HttpRequest,
    id: &str,
) -> Result<RegistrationRow, ApiError> {
    let is_admin = state.is_admin(request).await?;
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
    let token_matches = token
        .is_some_and(|token| tokens::constant_time_eq(&tokens::token_hash(token), &row.access_token_hash));
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
        (
            status = 401,
            description = "No credential at all (`unauthorized`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
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
        let event = state.event_of(&request, &row.event).await?;
        let status = event.status(row.id).await.map_err(|error| state.actor_error(error))?;
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
        (
            status = 401,
            description = "No credential at all (`unauthorized`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
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
    state.refuse_if_stalled()?;
    let event = state.event_of(&request, &row.event).await?;
    match event.cancel(row.id).await.map_err(|error| state.actor_error(error))? {
        Outcome::RegistrationCancelled { .. } => reread(&state, &row).await,
        Outcome::AlreadyEnded { status: EndedStatus::Expired, .. } => Err(ApiError::Conflict {
            status: StatusCode::GONE,
            code: "hold_expired",
            detail: "the hold had already expired".into(),
            extra: None,
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
    state.require_admin(&request).await?;
    let row = authorized_row(&state, &request, &path).await?;
    let expired = || ApiError::Conflict {
        status: StatusCode::GONE,
        code: "hold_expired",
        detail: "the hold expired before the confirmation".into(),
        extra: None,
    };
    match row.status {
        RowStatus::Expired => return Err(expired()),
        RowStatus::Cancelled => {
            return Err(ApiError::conflict("registration_cancelled", "the registration was cancelled"));
        }
        RowStatus::Confirmed => return reread(&state, &row).await,
        RowStatus::Held | RowStatus::Waitlisted => {}
    }
    state.refuse_if_stalled()?;
    let event = state.event_of(&request, &row.event).await?;
    match event.confirm(row.id).await.map_err(|error| state.actor_error(error))? {
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
    #[param(value_type = Option<crate::openapi::RegistrationStatus>)]
    status: Option<String>,
    /// Registrations per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; the first page without it.
    cursor: Option<String>,
}

/// Parses `limit` (1–500, default 50) and a numeric `cursor`.
pub fn page_bounds(limit: Option<&str>, cursor: Option<&str>) -> Result<(u32, Option<u64>), ApiError> {
    let limit = match limit {
        None => PAGE_LIMIT_DEFAULT,
        Some(text) => {
            text.parse::<u32>().ok().filter(|limit| (1..=PAGE_LIMIT_MAX).contains(limit)).ok_or_else(
                || ApiError::Validation(vec![crate::error::FieldError::new("limit", "must be 1 to 500")]),
            )?
        }
    };
    let cursor = match cursor.filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::Validation(vec![crate::error::FieldError::new(
                "cursor",
                "is not a cursor from a previous page",
            )])
        })?),
    };
    Ok((limit, cursor))
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
        (
            status = 404,
            description = "No such event (`not_found`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
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
    state.require_admin(&request).await?;
    let event = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let (limit, cursor) = page_bounds(query.limit.as_deref(), query.cursor.as_deref())?;
    let status = match query.status.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(RowStatus::parse(text).ok_or_else(|| {
            ApiError::Validation(vec![crate::error::FieldError::new(
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
    let items: Vec<RegistrationView> = rows.iter().map(RegistrationView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prerendered_sold_out_answer_is_the_refusal_byte_for_byte() {
        let expected = refusal(&Decision::SoldOut).error_response();
        let prerendered = sold_out_response();
        assert_eq!(prerendered.status(), expected.status());
        let headers = |response: &HttpResponse| {
            let mut headers: Vec<_> =
                response.headers().iter().map(|(name, value)| (name.clone(), value.clone())).collect();
            headers.sort_by(|left, right| left.0.as_str().cmp(right.0.as_str()));
            headers
        };
        assert_eq!(headers(&prerendered), headers(&expected));
        let body = |response: HttpResponse| response.into_body().try_into_bytes().ok().unwrap();
        assert_eq!(body(prerendered), body(expected));
    }
}
