//! Webhook endpoints (admin): create (the secret is shown once), list, read with delivery
//! counts, delete, rotate the secret, replay dead messages. Delivery is `crate::webhooks`'.

use actix_web::{HttpRequest, HttpResponse, web};
use kuota_persist::store::{MessageCounts, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Found, json_object, read_closed};
use crate::error::{ApiError, FieldError};
use crate::http::json_body;
use crate::http::page_bounds;
use crate::middleware::resource;
use crate::responses::{JsonBodyRefused, NotFound, Problem, Unauthorized};
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

/// The body of `POST /v1/webhooks`. Closed: another member is refused (422).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "url": "https://crm.example.org/kuota",
    "event_types": ["registration.created", "registration.cancelled"],
    "description": "CRM"
}))]
pub struct NewWebhook {
    /// An absolute `https://` URL, or `http://` to a host in `KUOTA_WEBHOOK_ALLOW_HOSTS`; never
    /// a private, loopback or link-local address (as written or as resolved) unless its host is
    /// listed there (422 otherwise).
    #[serde(default)]
    #[schema(value_type = String, required = true, format = "uri", max_length = 2048)]
    url: Found<String>,
    /// Distinct, each one of `registration.created`, `registration.confirmed`,
    /// `registration.cancelled`, `registration.expired`, `registration.promoted`,
    /// `event.sold_out`, `queue.admitted`.
    #[serde(default)]
    #[schema(value_type = BTreeSet<String>, required = true, min_items = 1)]
    event_types: Found<Vec<Value>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 500)]
    description: Found<String>,
}

/// An endpoint as listed: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
pub struct EndpointView<'a> {
    #[schema(example = "ep_3f9a1c2b4d5e6f708192a3b4")]
    id: &'a str,
    url: &'a str,
    event_types: &'a [String],
    #[schema(required = true)]
    description: Option<&'a str>,
    /// `null` while enabled; `gone` (it answered 410) or `failing` (failing for 5 days).
    #[schema(required = true)]
    disabled_reason: Option<&'a str>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A new endpoint, with its secret (shown only here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CreatedWebhook)]
pub struct CreatedEndpoint<'a> {
    #[serde(flatten)]
    endpoint: EndpointView<'a>,
    /// `whsec_` + base64 of 32 random bytes: the signing secret.
    secret: &'a str,
}

/// An endpoint with its messages' counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookWithDeliveries)]
pub struct EndpointDetail<'a> {
    #[serde(flatten)]
    endpoint: EndpointView<'a>,
    deliveries: Deliveries,
    /// Attempts that failed, over the messages counted.
    failed_attempts: u64,
}

/// Messages by state (succeeded ones for 7 days).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    succeeded: u64,
    pending: u64,
    dead: u64,
}

/// One page of endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookPage)]
pub struct EndpointPage<'a> {
    items: Vec<EndpointView<'a>>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A rotated secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    id: String,
    /// The new secret, shown only here.
    secret: String,
    /// Until then the previous secret signs too.
    #[schema(format = DateTime)]
    previous_secret_expires_at: String,
}

/// What a replay revived.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    id: String,
    /// Dead messages made due again.
    replayed: u64,
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
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "create_webhook",
    tag = "admin",
    summary = "Create a webhook endpoint",
    description = "Messages of the listed event types go to `url`, signed as the Standard Webhooks \
        spec (v1) says with the `secret` of the answer, which is shown only here.",
    request_body = NewWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown only here.", body = CreatedEndpoint),
        (
            status = 400,
            description = "Malformed JSON (`malformed_body`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        (status = 401, response = Unauthorized),
        (
            status = 409,
            description = "The deployment has its most endpoints (`too_many_webhooks`).",
            body = Problem,
            content_type = "application/problem+json"
        ),
        JsonBodyRefused,
        (
            status = 422,
            description = "A URL that is not https, or an internal address; an unknown or repeated event type; a description too long (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        )
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
    let allow = AllowHosts::parse(&state.settings.webhook_allow_hosts);
    let mut errors = Vec::new();
    let new = read_closed(json_object(&body)?, "", &mut errors)?;
    let new = parse_endpoint(new, &allow, errors)?;
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
    Ok(HttpResponse::Created()
        .json(CreatedEndpoint { endpoint: EndpointView::from(&endpoint), secret: &endpoint.secret }))
}

/// A create request's fields, checked.
struct NewEndpoint {
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
}

/// Checks a new endpoint; `errors` are the body's mistakes found so far (unknown members).
fn parse_endpoint(
    new: NewWebhook,
    allow: &AllowHosts,
    mut errors: Vec<FieldError>,
) -> Result<NewEndpoint, ApiError> {
    let url = match new.url {
        Found::Present(url) => match check_url(&url, allow) {
            Ok(_) => Some(url),
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
    match new.event_types {
        Found::Present(items) if !items.is_empty() => {
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
    let description = match new.description {
        Found::Absent => None,
        Found::Present(text) if text.chars().count() <= DESCRIPTION_LENGTH_MAX_CHARACTERS => Some(text),
        _ => {
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
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "admin",
    summary = "List webhook endpoints",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 500; 50 by default.", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page.", pattern = "^[A-Za-z0-9_]{0,40}$")
    ),
    responses(
        (status = 200, description = "One page, without secrets.", body = EndpointPage),
        (status = 401, response = Unauthorized),
        (
            status = 422,
            description = "`limit` outside 1–500 or a bad `cursor` (`validation_failed`).",
            body = Problem,
            content_type = "application/problem+json"
        )
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request, query))]
async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let (limit, _) = page_bounds(query.limit.as_deref(), None)?;
    let cursor = query.cursor.as_deref().filter(|cursor| !cursor.is_empty());
    if cursor.is_some_and(|cursor| !is_endpoint_id(cursor)) {
        return Err(invalid("cursor", "is not a cursor from a previous page".into()));
    }
    let endpoints = state.store.webhook_endpoints_page(limit, cursor).await?;
    let next_cursor =
        (endpoints.len() == limit as usize).then(|| endpoints.last().map(|last| last.id.clone())).flatten();
    let items = endpoints.iter().map(EndpointView::from).collect();
    Ok(HttpResponse::Ok().json(EndpointPage { items, next_cursor }))
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/{webhook_id}",
    operation_id = "read_webhook",
    tag = "admin",
    summary = "Read a webhook endpoint with its delivery counts",
    params(("webhook_id" = String, Path, description = "The `id` from the endpoint's creation.")),
    responses(
        (status = 200, description = "The endpoint, without its secret.", body = EndpointDetail),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let MessageCounts { succeeded, pending, dead, failed_attempts } =
        state.store.webhook_message_counts(&endpoint.id).await?;
    Ok(HttpResponse::Ok().json(EndpointDetail {
        endpoint: EndpointView::from(&endpoint),
        deliveries: Deliveries { succeeded, pending, dead },
        failed_attempts,
    }))
}

/// `DELETE /v1/webhooks/{id}`: the endpoint and its messages; 204.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{webhook_id}",
    operation_id = "delete_webhook",
    tag = "admin",
    summary = "Delete a webhook endpoint and its messages",
    params(("webhook_id" = String, Path, description = "The `id` from the endpoint's creation.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    if !is_endpoint_id(&path) || !state.store.delete_webhook_endpoint(&path).await? {
        return Err(ApiError::NotFound("the webhook endpoint"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/webhooks/{id}/rotate`: a new secret, shown once; the old one signs too for 24 h.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{webhook_id}/rotate",
    operation_id = "rotate_webhook_secret",
    tag = "admin",
    summary = "Rotate a webhook endpoint's secret",
    description = "The new secret is shown only here; the previous one signs too for 24 h (both \
        signatures are sent).",
    params(("webhook_id" = String, Path, description = "The `id` from the endpoint's creation.")),
    responses(
        (status = 200, description = "The new secret.", body = RotatedSecret),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn rotate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let secret = signing::new_secret();
    let previous_until = state.clock.now().plus_seconds(PREVIOUS_SECRET_VALID_SECONDS);
    if !state.store.rotate_webhook_secret(&endpoint.id, &secret, previous_until).await? {
        return Err(ApiError::NotFound("the webhook endpoint"));
    }
    Ok(HttpResponse::Ok().json(RotatedSecret {
        id: endpoint.id,
        secret,
        previous_secret_expires_at: time_format::format(previous_until),
    }))
}

/// `POST /v1/webhooks/{id}/replay`: dead messages are sent again (with a fresh schedule), and
/// a disabled endpoint is enabled: an organizer replays once the receiver is fixed. 202.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{webhook_id}/replay",
    operation_id = "replay_webhook",
    tag = "admin",
    summary = "Send a webhook endpoint's dead messages again",
    description = "Dead messages get a fresh retry schedule, and a disabled endpoint is enabled again.",
    params(("webhook_id" = String, Path, description = "The `id` from the endpoint's creation.")),
    responses(
        (status = 202, description = "Replayed.", body = Replayed),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(webhook_id = %path))]
async fn replay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let endpoint = stored(&state, &path).await?;
    let replayed = state.store.replay_webhook_messages(&endpoint.id, state.clock.now()).await?;
    Ok(HttpResponse::Accepted().json(Replayed { id: endpoint.id, replayed }))
}
