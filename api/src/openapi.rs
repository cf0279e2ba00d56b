//! The OpenAPI 3.1 document of the whole API, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they answer with, served at `/openapi.json`; and a Swagger UI at
//! `/docs` whose assets are compiled into the binary (`utoipa-swagger-ui`'s `vendored` feature),
//! so the page works offline and loads nothing from another host.
//!
//! Schemas that describe one resource live with its handlers in `routes/`; the ones shared by
//! every resource (problem documents, status names, the shared responses) in `responses`; the
//! security schemes here. Nothing imports this module but `startup`: it stands above `routes`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::middleware::resource;
use crate::responses::{
    AdmissionStatus, Busy, EventNotFound, EventStatus, FieldError, NoCredential, NotFound, Overloaded,
    PayloadTooLarge, Problem, RateLimited, RegistrationStatus, Unauthorized, UnsupportedMediaType,
};
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
        events::list,
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
            crate::domain::NewEvent,
            crate::domain::NewCategory,
            crate::domain::CapacityChange,
            events::AuditPage,
            events::AuditEntry,
            events::EventPage,
            events::Availability,
            events::EventSummary,
            crate::domain::RegistrationBody,
            registrations::RegistrationPage,
            admin::LogIn,
            admin::Session,
            operations::Health,
            operations::Readiness,
            crate::queue::NewQueue,
            crate::domain::NewTicket,
            crate::queue::TicketStatusSchema,
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
        responses(Unauthorized, NoCredential, NotFound, EventNotFound, PayloadTooLarge, UnsupportedMediaType, RateLimited, Overloaded)
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

/// The methods the document names for each path, as an `Allow` header's value (`GET, POST`).
static ALLOWED_METHODS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let document: serde_json::Value =
        serde_json::from_slice(&DOCUMENT).expect("the document is the JSON just serialized");
    let Some(paths) = document["paths"].as_object() else { return HashMap::new() };
    paths
        .iter()
        .map(|(path, item)| {
            let methods: Vec<String> = item
                .as_object()
                .into_iter()
                .flat_map(|operations| operations.keys())
                .filter(|method| HTTP_METHODS.contains(&method.as_str()))
                .map(|method| method.to_ascii_uppercase())
                .collect();
            (path.clone(), methods.join(", "))
        })
        .collect()
});

/// The operations a path item of OpenAPI 3.1 may hold.
const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The `Allow` header of a 405 for the resource `pattern`: the methods this document names for it.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    ALLOWED_METHODS.get(pattern).map(String::as_str)
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(DOCUMENT_PATH).route(web::get().to(document)))
        .service(resource(DOCS_PATH).route(web::get().to(docs)))
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
