//! The OpenAPI 3.1 document of the whole API, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they answer with, served at `/openapi.json`; and a Swagger UI at
//! `/docs` whose assets are compiled into the binary (`utoipa-swagger-ui`'s `vendored` feature),
//! so the page works offline and loads nothing from another host.
//!
//! Schemas that describe one resource live with its handlers in `routes/`; the ones shared by
//! every resource (problem documents, status names, security schemes) live here.

use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::routes::{admin, dashboard, events, operations, queue, queue_stream, registrations, webhooks};
use crate::state::SESSION_COOKIE;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where the browsable page is served; its assets are under `/docs/`.
pub const DOCS_PATH: &str = "/docs";

/// Names of the security schemes. `#[utoipa::path(security(...))]` takes only string literals,
/// so the handlers repeat these names; a test checks that every name used is declared here.
pub const ADMIN_TOKEN_SCHEME: &str = "admin_token";
pub const REGISTRANT_TOKEN_SCHEME: &str = "registrant_token";
pub const ADMIN_SESSION_SCHEME: &str = "admin_session";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Kuota HTTP API",
        description = "Quota engine for event registration. JSON in and out; errors are RFC 9457 \
            problem documents (`application/problem+json`) with a stable snake_case `code`. Times \
            are RFC 3339 UTC; ids are opaque strings."
    ),
    paths(
        events::read,
        registrations::create,
        registrations::read,
        registrations::cancel,
        events::stream,
        events::create,
        events::change_capacity,
        registrations::confirm,
        registrations::list,
        events::audit,
        admin::log_in,
        admin::log_out,
        dashboard::node,
        dashboard::events,
        dashboard::page,
        operations::healthz,
        operations::readyz,
        operations::render_metrics,
        operations::status,
        queue::join,
        queue::read,
        queue_stream::stream,
        queue::draw,
        webhooks::create,
        webhooks::list,
        webhooks::read,
        webhooks::delete,
        webhooks::rotate,
        webhooks::replay,
        document,
        docs,
    ),
    components(
        schemas(
            Problem,
            FieldError,
            EventStatus,
            AdmissionStatus,
            RegistrationStatus,
            Busy,
            events::NewEvent,
            events::NewCategory,
            events::CapacityChange,
            events::AuditPage,
            events::AuditEntry,
            registrations::NewRegistration,
            registrations::RegistrationPage,
            admin::LogIn,
            admin::Session,
            operations::Health,
            operations::Readiness,
            queue::NewQueue,
            queue::NewTicket,
            queue::TicketStatusSchema,
            queue::QueueView,
            queue::DrawView,
            crate::queue::TicketBody,
            crate::dashboard::NodeView,
            crate::dashboard::RefusalRates,
            crate::dashboard::RefusalCounts,
            crate::dashboard::WriteBehindView,
            crate::dashboard::OutboxView,
            dashboard::DashboardEvents,
            dashboard::DashboardEvent,
            webhooks::NewWebhook,
        ),
        responses(Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, RateLimited, Overloaded)
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "public", description = "What registrants call: read an event, register, read or cancel \
            their registration, follow availability live."),
        (name = "admin", description = "What organizers and payment callbacks call, with the admin token \
            or an admin session cookie."),
        (name = "operations", description = "Health, readiness, metrics, the busy banner and this \
            documentation."),
    )
)]
pub struct ApiDoc;

/// Adds the three credentials the API accepts.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build(),
            )
        };
        components.add_security_scheme(
            ADMIN_TOKEN_SCHEME,
            bearer("The admin token from configuration (`KUOTA_ADMIN_TOKEN`)."),
        );
        components.add_security_scheme(
            REGISTRANT_TOKEN_SCHEME,
            bearer("The registrant's `access_token`, from the answer to their registration."),
        );
        components.add_security_scheme(
            ADMIN_SESSION_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The admin session cookie set by `POST /v1/admin/sessions`.",
            ))),
        );
    }
}

/// An RFC 9457 problem document: every error answer of the API.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "type": "https://kuota.dev/problems/sold_out",
    "title": "Conflict",
    "status": 409,
    "detail": "the category is sold out",
    "code": "sold_out"
}))]
pub struct Problem {
    /// A URI naming the kind of problem; ends with `code`.
    #[schema(rename = "type", format = "uri")]
    pub kind: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// Stable snake_case name of the problem, for programs (`sold_out`, `validation_failed`, ...).
    pub code: String,
    /// Every invalid field, with `validation_failed` from a request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// With `not_open`: when registration opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub opens_at: Option<String>,
    /// With `capacity_below_taken`: the seats confirmed or held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken: Option<u32>,
}

/// One invalid field of a request body.
#[derive(Debug, ToSchema)]
#[schema(example = json!({ "field": "email", "message": "an e-mail address needs an '@'" }))]
pub struct FieldError {
    /// The field's name; nested fields as `categories[0].capacity`.
    pub field: String,
    pub message: String,
}

/// Where an event stands: before its window, open, after its window, or with no seat left.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Scheduled,
    Open,
    Closed,
    SoldOut,
}

/// What a registration request got.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionStatus {
    Confirmed,
    Held,
    Waitlisted,
}

/// Where a registration stands.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    Held,
    Confirmed,
    Waitlisted,
    Cancelled,
    Expired,
}

/// What a front end shows as the "system busy" banner.
#[derive(Debug, ToSchema)]
pub struct Busy {
    pub busy: bool,
    /// Why, when busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "requests are being shed")]
    pub reason: Option<String>,
}

/// No admin credential (`unauthorized`): the admin token as a bearer token, or the admin
/// session cookie.
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unauthorized(pub Problem);

/// No such resource (`not_found`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The body is larger than the configured limit, 16 KiB by default (`payload_too_large`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The body is not `application/json` (`unsupported_media_type`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The client is over its rate limit (`rate_limited`).
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(
        ("Retry-After" = u64, description = "Seconds to wait before retrying."),
        ("RateLimit-Policy" = String, description = "The limit that applies."),
        ("RateLimit" = String, description = "What is left of it.")
    )
)]
pub struct RateLimited(pub Problem);

/// The server sheds load (`overloaded`): a mailbox or the write-behind backlog is full, or the
/// store is failing. Retry after the given seconds.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
)]
pub struct Overloaded(pub Problem);

/// The document, serialized once: it is the same for the life of the process.
static DOCUMENT: LazyLock<web::Bytes> = LazyLock::new(|| {
    // The document holds only strings, numbers and maps, which always serialize.
    let json = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
    web::Bytes::from(json)
});

/// Swagger UI's settings: read the document from this server, and never ask the public
/// validator (which Swagger UI would otherwise contact for a badge).
fn swagger_config() -> Config<'static> {
    Config::new([DOCUMENT_PATH]).validator_url("none").display_request_duration(true)
}

/// Swagger UI's page, served at `/docs` itself: its asset links are relative, so a `<base>`
/// makes them resolve under `/docs/` whether or not the address ends with a slash.
static DOCS_PAGE: LazyLock<String> = LazyLock::new(|| {
    // index.html is one of the assets compiled into utoipa-swagger-ui, so it is always there.
    let file = utoipa_swagger_ui::serve("index.html", Arc::new(swagger_config()))
        .ok()
        .flatten()
        .expect("Swagger UI's index.html is compiled in");
    let page = String::from_utf8_lossy(&file.bytes).into_owned();
    page.replacen("<head>", &format!("<head>\n    <base href=\"{DOCS_PATH}/\">"), 1).replacen(
        "<title>Swagger UI</title>",
        "<title>Kuota HTTP API</title>",
        1,
    )
});

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route(DOCUMENT_PATH, web::get().to(document))
        .route(DOCS_PATH, web::get().to(docs))
        .service(SwaggerUi::new(format!("{DOCS_PATH}/{{_:.*}}")).config(swagger_config()));
}

/// The OpenAPI 3.1 document of this API (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object))
)]
async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT.clone())
}

/// A browsable page of this document (Swagger UI, served entirely by this server).
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    responses((status = 200, description = "Swagger UI.", content_type = "text/html", body = String))
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(DOCS_PAGE.as_str())
}
