//! Admin sessions: trade the admin token for a session cookie, and log out.

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_persist::session::{SessionData, SessionId};

use crate::domain::json_object;
use crate::error::{ApiError, FieldError};
use crate::routes::json_body;
use crate::state::{AppState, SESSION_COOKIE};
use crate::tokens::constant_time_eq;

/// How long an admin session lasts, in seconds.
pub const ADMIN_SESSION_TTL_SECONDS: u64 = 8 * 60 * 60;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/admin/sessions").route(web::post().to(log_in)).route(web::delete().to(log_out)),
    );
}

#[tracing::instrument(skip(state, request, payload))]
async fn log_in(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let object = json_object(&body)?;
    let Some(serde_json::Value::String(token)) = object.get("token") else {
        return Err(ApiError::Validation(vec![FieldError::new("token", "is required and must be a string")]));
    };
    if !constant_time_eq(token, &state.admin_token) {
        return Err(ApiError::Unauthorized);
    }
    let data = SessionData { subject: "admin".into(), created_at_ms: state.now_ms() };
    let ttl = Duration::from_secs(ADMIN_SESSION_TTL_SECONDS);
    let id = state
        .sessions
        .create(data, ttl)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("{error}")))?;
    let cookie = Cookie::build(SESSION_COOKIE, id.as_str().to_string())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(ADMIN_SESSION_TTL_SECONDS as i64))
        .finish();
    Ok(HttpResponse::Created()
        .cookie(cookie)
        .json(serde_json::json!({ "expires_in_seconds": ADMIN_SESSION_TTL_SECONDS })))
}

#[tracing::instrument(skip(state, request))]
async fn log_out(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = request.cookie(SESSION_COOKIE)
        && let Ok(id) = SessionId::parse(cookie.value())
    {
        state.sessions.delete(&id).await.map_err(|error| ApiError::Internal(anyhow::anyhow!("{error}")))?;
    }
    let mut expired = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    expired.make_removal();
    Ok(HttpResponse::NoContent().cookie(expired).finish())
}
