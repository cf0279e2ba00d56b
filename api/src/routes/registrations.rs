//! Registrations: create (the hot path), read, cancel, confirm, and the admin listing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::{Decision, EndedStatus, EventId, IdempotencyKey, Outcome, RegistrationId, Timestamp};
use kuota_persist::store::{RegistrationRow, RowStatus};
use serde::Serialize;

use crate::error::ApiError;
use crate::routes::json_body;
use crate::state::{AppState, bearer};
use crate::{domain, metrics, time_format, tokens};

/// Registrations one listing page may hold.
pub const PAGE_LIMIT_MAX: u32 = 500;
const PAGE_LIMIT_DEFAULT: u32 = 50;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/events/{event_id}/registrations")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/registrations/{registration_id}")
                .route(web::get().to(read))
                .route(web::delete().to(cancel)),
        )
        .service(web::resource("/v1/registrations/{registration_id}/confirm").route(web::post().to(confirm)));
}

/// The answer to a registration request that got (or waits for) a seat.
#[derive(Serialize)]
struct Admission<'a> {
    id: String,
    event_id: &'a str,
    category: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    access_token: &'a str,
    created_at: String,
}

/// A registration as its registrant or an organizer reads it.
#[derive(Serialize)]
struct RegistrationView {
    id: String,
    event_id: String,
    category: String,
    status: &'static str,
    email: String,
    full_name: String,
    phone: Option<String>,
    attributes: Option<serde_json::Value>,
    waitlist_position: Option<u32>,
    expires_at: Option<String>,
    created_at: String,
    updated_at: String,
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
    key: &IdempotencyKey,
    state: &AppState,
    created_at: Timestamp,
    replayed: bool,
) -> Result<HttpResponse, ApiError> {
    let token = tokens::access_token(&state.token_secret, event, key);
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
        access_token: &token,
        created_at: time_format::format(created_at),
    };
    let mut response = HttpResponse::build(status);
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(body))
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
        Outcome::KeyInFlight => "key_in_flight",
        Outcome::KeyReused => "key_reused",
        _ => "other",
    }
}

#[tracing::instrument(skip(state, request, payload), fields(event_id = %path))]
async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let event_id = EventId::parse(&path).map_err(|_| ApiError::NotFound("the event"))?;
    let key =
        domain::idempotency_key(request.headers().get("idempotency-key").map(|value| value.as_bytes()))?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    state.limit_client(&request)?;
    let event = state.event(&event_id).await?;
    let parsed = domain::registration(&body, event.config(), key.clone(), &state.token_secret)?;
    state.limit_registrant(&parsed.register.registrant).await?;
    let category = parsed.register.category.clone();
    // Sold out is answered from the published counters, unless this key may have been decided
    // before (then its decision must be replayed, which only the actor knows).
    let sold_out = event.counters().is_sold_out(&category, parsed.register.waitlist) == Some(true);
    if sold_out && !event.counters().may_have_seen_key(&key) {
        ::metrics::counter!(metrics::ADMISSIONS, "outcome" => "sold_out_fast").increment(1);
        return Err(refusal(&Decision::SoldOut));
    }
    if state.write_behind.breaker_open() {
        return Err(state.shed("the store is failing"));
    }
    let (outcome, decided_at) =
        event.register_timed(parsed.register).await.map_err(|error| state.actor_error(error))?;
    ::metrics::counter!(metrics::ADMISSIONS, "outcome" => outcome_label(&outcome)).increment(1);
    match outcome {
        Outcome::Decided(decision) => {
            admission_response(&decision, &event_id, category.as_str(), &key, &state, decided_at, false)
        }
        Outcome::Replayed(decision) => replay(&state, &event_id, &key, &decision).await,
        Outcome::KeyInFlight => Err(ApiError::KeyInFlight),
        Outcome::KeyReused => Err(ApiError::KeyReused),
        Outcome::IdempotencyFull => Err(state.shed("the event keeps too many idempotency keys")),
        Outcome::UnknownCategory => Err(ApiError::Validation(vec![crate::error::FieldError::new(
            "category",
            "is not a category of this event",
        )])),
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a registration"))),
    }
}

/// Answers a retry with the first decision's status and body, byte for byte: the body is
/// rebuilt from the stored registration (its category and creation time) and the token is
/// derived again from the same key.
async fn replay(
    state: &AppState,
    event: &EventId,
    key: &IdempotencyKey,
    decision: &Decision,
) -> Result<HttpResponse, ApiError> {
    let Some(registration) = decision.registration() else {
        let mut response = actix_web::ResponseError::error_response(&refusal(decision));
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
            actix_web::http::header::HeaderValue::from_static("true"),
        );
        return Ok(response);
    };
    let row = state
        .store
        .registration(event, registration)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("replayed registration {registration} is not stored"))
        })?;
    admission_response(decision, event, row.category.as_str(), key, state, row.created_at, true)
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
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?
        .ok_or(ApiError::NotFound("the registration"))?;
    let token_matches = token
        .is_some_and(|token| tokens::constant_time_eq(&tokens::token_hash(token), &row.access_token_hash));
    if is_admin || token_matches { Ok(row) } else { Err(ApiError::NotFound("the registration")) }
}

#[tracing::instrument(skip(state, request), fields(registration_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let row = authorized_row(&state, &request, &path).await?;
    Ok(HttpResponse::Ok().json(RegistrationView::from(&row)))
}

async fn reread(state: &AppState, row: &RegistrationRow) -> Result<HttpResponse, ApiError> {
    let fresh = state
        .store
        .registration(&row.event, row.id)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?
        .ok_or(ApiError::NotFound("the registration"))?;
    Ok(HttpResponse::Ok().json(RegistrationView::from(&fresh)))
}

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
    let event = state.event(&row.event).await?;
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
    let event = state.event(&row.event).await?;
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

#[derive(serde::Deserialize)]
struct PageQuery {
    status: Option<String>,
    limit: Option<String>,
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
    if state
        .store
        .event_config(&event)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?
        .is_none()
    {
        return Err(ApiError::NotFound("the event"));
    }
    let rows = state
        .store
        .registrations_page(&event, status, limit, cursor.map(RegistrationId))
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!(error)))?;
    let next_cursor =
        (rows.len() == limit as usize).then(|| rows.last().map(|row| row.id.0.to_string())).flatten();
    let items: Vec<RegistrationView> = rows.iter().map(RegistrationView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}
