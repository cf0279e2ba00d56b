//! Admin sessions: trade the admin token for a session cookie, and log out.

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_persist::session::{SessionData, SessionId};
use serde::{Deserialize, Serialize};

use crate::domain::{Found, json_object, read_closed};
use crate::error::{ApiError, FieldError};
use crate::http::json_body;
use crate::middleware::resource;
use crate::responses::{JsonBodyRefused, Problem};
use crate::state::{AppState, SESSION_COOKIE};
use crate::tokens::constant_time_eq;

/// How long an admin session lasts, in seconds.
pub const ADMIN_SESSION_TTL_SECONDS: u64 = 8 * 60 * 60;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        resource("/v1/admin/sessions").route(web::post().to(log_in)).route(web::delete().to(log_out)),
    );
}

/// The body of `POST /v1/admin/sessions`. Closed: another member is refused (422).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogIn {
    /// The admin token.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    token: Found<String>,
}

/// An admin session was opened; its id is in the `Set-Cookie` header.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    #[schema(example = 28800)]
    pub expires_in_seconds: u64,
}

#[utoipa::path(
    post,
    path = "/v1/admin/sessions",
    operation_id = "log_in",
    tag = "admin",
    summary = "Trade the admin token for a session cookie",
    request_body = LogIn,
    responses(
        (
            status = 201,
            description = "Logged in.",
            body = Session,
            headers((
                "Set-Cookie" = String,
                description = "`kuota_session=...; HttpOnly; SameSite=Strict; Path=/`."
            ))
        ),
        (
            status = 400,
            description = "Malformed JSON (`malformed_body`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (
            status = 401,
            description = "Not the admin token (`unauthorized`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        JsonBodyRefused,
        (
            status = 422,
            description = "No `token` string (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        )
    )
)]
#[tracing::instrument(skip(state, request, payload))]
async fn log_in(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let mut errors = Vec::new();
    let log_in: LogIn = read_closed(json_object(&body)?, "", &mut errors)?;
    let Found::Present(token) = log_in.token else {
        errors.push(FieldError::new("token", "is required and must be a string"));
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if !constant_time_eq(&token, &state.auth.admin_token) {
        return Err(ApiError::Unauthorized);
    }
    let data = SessionData { subject: "admin".into(), created_at_ms: state.now_ms() };
    let ttl = Duration::from_secs(ADMIN_SESSION_TTL_SECONDS);
    let id = state.auth.sessions.create(data, ttl).await?;
    let cookie = Cookie::build(SESSION_COOKIE, id.as_str().to_string())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(ADMIN_SESSION_TTL_SECONDS as i64))
        .finish();
    Ok(HttpResponse::Created().cookie(cookie).json(Session { expires_in_seconds: ADMIN_SESSION_TTL_SECONDS }))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/sessions",
    operation_id = "log_out",
    tag = "admin",
    summary = "Log out",
    description = "Ends the session named by the cookie, if any, and clears the cookie.",
    responses((
        status = 204,
        description = "Logged out.",
        headers(("Set-Cookie" = String, description = "Clears `kuota_session`."))
    )),
    security((), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request))]
async fn log_out(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = request.cookie(SESSION_COOKIE)
        && let Ok(id) = SessionId::parse(cookie.value())
    {
        state.auth.sessions.delete(&id).await?;
    }
    let mut expired = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    expired.make_removal();
    Ok(HttpResponse::NoContent().cookie(expired).finish())
}
