//! Webhook endpoints (admin): create (the secret is shown once), list, read with delivery
//! counts, delete, rotate the secret, replay dead messages. Delivery is `crate::webhooks`'.

use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::Clock;
use kuota_persist::store::{MessageCounts, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::json_object;
use crate::error::{ApiError, FieldError};
use crate::middleware::resource;
use crate::routes::json_body;
use crate::routes::registrations::page_bounds;
use crate::state::AppState;
use crate::time_format;
use crate::webhooks::destination::{AllowHosts, check_resolved, check_url};
use crate::webhooks::event_type::EventType;
use crate::webhooks::signing;

/// Endpoints one deployment may have: each one multiplies the deliveries of every entry.
pub const WEBHOOK_ENDPOINTS_MAX: u64 = 100;

/// Longest endpoint description, in characters.
pub const DESCRIPTION_LENGTH_MAX_CHARACTERS: usize = 500;

/// How long the secret before a rotation still signs, in seconds (the contract's 24 h).
pub const PREVIOUS_SECRET_VALID_SECONDS: u64 = 24 * 3_600;

/// Longest endpoint id (and list cursor), in characters.
const ENDPOINT_ID_LENGTH_MAX_CHARACTERS: usize = 40;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/v1/webhooks").route(web::post().to(create)).route(web::get().to(list)))
        .service(
            resource("/v1/webhooks/{webhook_id}").route(web::get().to(read)).route(web::delete().to(delete)),
        )
        .service(resource("/v1/webhooks/{webhook_id}/rotate").route(web::post().to(rotate)))
        .service(resource("/v1/webhooks/{webhook_id}/replay").route(web::post().to(replay)));
}

/// An endpoint as listed: never its secret.
#[derive(Serialize)]
struct EndpointView<'a> {
    id: &'a str,
    url: &'a str,
    event_types: &'a [String],
    description: Option<&'a str>,
    /// `null` while enabled; `gone` (it answered 410) or `failing` (failing for 5 days).
    disabled_reason: Option<&'a str>,
    created_at: String,
}

impl<'a> From<&'a WebhookEndpoint> for EndpointView<'a> {
    fn from(endpoint: &'a WebhookEndpoint) -> Self {
        EndpointView {
            id: &endpoint.id,
            url: &endpoint.url,
            event_types: &endpoint.event_types,
            description: endpoint.description.as_deref(),
            disabled_reason: endpoint.disabled_reason.as_deref(),
            created_at: time_format::format(endpoint.created_at),
        }
    }
}

/// `POST /v1/webhooks`: 201 with the secret, shown only here and by `rotate`.
#[tracing::instrument(skip(state, request, payload))]
async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let body = json_body(&request, payload, state.settings.body_limit_bytes).await?;
    let object = json_object(&body)?;
    let allow = AllowHosts::parse(&state.settings.webhook_allow_hosts);
    let new = parse_endpoint(&object, &allow)?;
    let url = check_url(&new.url, &allow).map_err(|reason| invalid("url", reason))?;
    check_resolved(&url, &allow).await.map_err(|reason| invalid("url", reason))?;
    if state.store.webhook_endpoint_count().await? >= WEBHOOK_ENDPOINTS_MAX {
        return Err(ApiError::conflict(
            "too_many_webhooks",
            format!("a deployment has at most {WEBHOOK_ENDPOINTS_MAX} webhook endpoints"),
        ));
    }
    let endpoint = WebhookEndpoint {
        id: format!("ep_{}", kuota_persist::random::token_hex(12)),
        url: new.url,
        description: new.description,
        event_types: new.event_types,
        secret: signing::new_secret(),
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        created_at: state.clock.now(),
    };
    state.store.create_webhook_endpoint(&endpoint).await?;
    let mut view = serde_json::to_value(EndpointView::from(&endpoint)).map_err(anyhow::Error::from)?;
    view["secret"] = Value::String(endpoint.secret.clone());
    Ok(HttpResponse::Created().json(view))
}

/// A create request's fields, checked.
struct NewEndpoint {
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
}

fn parse_endpoint(
    object: &serde_json::Map<String, Value>,
    allow: &AllowHosts,
) -> Result<NewEndpoint, ApiError> {
    let mut errors = Vec::new();
    let url = match object.get("url") {
        Some(Value::String(url)) => match check_url(url, allow) {
            Ok(_) => Some(url.clone()),
            Err(reason) => {
                errors.push(FieldError::new("url", reason));
                None
            }
        },
        _ => {
            errors.push(FieldError::new("url", "is required and must be a string"));
            None
        }
    };
    let mut event_types = Vec::new();
    match object.get("event_types") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for item in items {
                match item.as_str().and_then(EventType::parse) {
                    Some(kind) if !event_types.contains(&kind.as_str().to_owned()) => {
                        event_types.push(kind.as_str().to_owned())
                    }
                    Some(kind) => errors
                        .push(FieldError::new("event_types", format!("{} is listed twice", kind.as_str()))),
                    None => errors.push(FieldError::new(
                        "event_types",
                        format!("{item} is not one of {}", EventType::ALL.map(EventType::as_str).join(", ")),
                    )),
                }
            }
        }
        _ => errors.push(FieldError::new("event_types", "is required: a non-empty array of event types")),
    }
    let description = match object.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.chars().count() <= DESCRIPTION_LENGTH_MAX_CHARACTERS => {
            Some(text.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                "description",
                format!("must be a string of at most {DESCRIPTION_LENGTH_MAX_CHARACTERS} characters"),
            ));
            None
        }
    };
    match url {
        Some(url) if errors.is_empty() => Ok(NewEndpoint { url, event_types, description }),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn invalid(field: &str, reason: String) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, reason)])
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/webhooks`: `{items, next_cursor}`, by id.
#[tracing::instrument(skip(state, request, query))]
async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let (limit, _) = page_bounds(query.limit.as_deref(), None)?;
    let cursor = query.cursor.as_deref().filter(|cursor| !cursor.is_empty());
    if cursor.is_some_and(|cursor| !is_endpoint_id(cursor)) {
        return Err(invalid("cursor", "is not a cursor from a previous page".into()));
    }
    let endpoints = state.store.webhook_endpoints_page(limit, cursor).await?;
    let next_cursor =
        (endpoints.len() == limit as usize).then(|| endpoints.last().map(|last| last.id.clone())).flatten();
    let items: Vec<EndpointView<'_>> = endpoints.iter().map(EndpointView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}

fn is_endpoint_id(text: &str) -> bool {
    text.len() <= ENDPOINT_ID_LENGTH_MAX_CHARACTERS
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

async fn stored(state: &AppState, id: &str) -> Result<WebhookEndpoint, ApiError> {
    let not_found = || ApiError::NotFound("the webhook endpoint");
    if !is_endpoint_id(id) {
        return Err(not_found());
    }
    state.store.webhook_endpoint(id).await?.ok_or_else(not_found)
}

/// `GET /v1/webhooks/{id}`: the endpoint with its messages' counts.
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let MessageCounts { succeeded, pending, dead, failed_attempts } =
        state.store.webhook_message_counts(&endpoint.id).await?;
    let mut view = serde_json::to_value(EndpointView::from(&endpoint)).map_err(anyhow::Error::from)?;
    view["deliveries"] = serde_json::json!({ "succeeded": succeeded, "pending": pending, "dead": dead });
    view["failed_attempts"] = failed_attempts.into();
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /v1/webhooks/{id}`: the endpoint and its messages; 204.
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    if !is_endpoint_id(&path) || !state.store.delete_webhook_endpoint(&path).await? {
        return Err(ApiError::NotFound("the webhook endpoint"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/webhooks/{id}/rotate`: a new secret, shown once; the old one signs too for 24 h.
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn rotate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let secret = signing::new_secret();
    let previous_until = state.clock.now().plus_seconds(PREVIOUS_SECRET_VALID_SECONDS);
    if !state.store.rotate_webhook_secret(&endpoint.id, &secret, previous_until).await? {
        return Err(ApiError::NotFound("the webhook endpoint"));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": endpoint.id,
        "secret": secret,
        "previous_secret_expires_at": time_format::format(previous_until),
    })))
}

/// `POST /v1/webhooks/{id}/replay`: dead messages are sent again (with a fresh schedule), and
/// a disabled endpoint is enabled: an organizer replays once the receiver is fixed. 202.
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn replay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let replayed = state.store.replay_webhook_messages(&endpoint.id, state.clock.now()).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": endpoint.id, "replayed": replayed })))
}
