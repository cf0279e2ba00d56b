//! The operators' and organizers' page, `GET /admin`, and the JSON it reads.
//!
//! The page is static (HTML, CSS, plain ES modules and the vendored uPlot chart library), compiled
//! into the binary from `api/assets/`: no build step, nothing loaded from another host. It holds
//! no data of its own, so it is served without a credential; it shows a login form until it has
//! an admin session (`POST /v1/admin/sessions`), and everything it shows comes from the admin-only
//! JSON below and the public availability stream, at most one stream per open page.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::dashboard::{NodeView, Sampler};
use crate::error::ApiError;
use crate::middleware::resource;
use crate::responses::{Overloaded, Unauthorized};
use crate::routes::events::{EventView, event_view};
use crate::state::AppState;

/// Events the page lists at most, the newest first.
pub const DASHBOARD_EVENTS_MAX: u32 = 50;

pub const PAGE_PATH: &str = "/admin";

/// The page's files: name under `/admin/assets/`, media type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/admin/app.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/admin/charts.js")),
    ("admin.css", "text/css; charset=utf-8", include_bytes!("../../assets/admin/admin.css")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/vendor/uPlot.min.css")),
];
const PAGE: &str = include_str!("../../assets/admin/index.html");

/// The page may load only what this server serves, and talk only to it. uPlot sizes its canvas
/// through the style property (CSSOM), which `style-src 'self'` allows.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(PAGE_PATH).route(web::get().to(page)))
        .service(resource("/admin/assets/{name}").route(web::get().to(asset)))
        .service(resource("/v1/admin/dashboard/node").route(web::get().to(node)))
        .service(resource("/v1/admin/dashboard/events").route(web::get().to(events)));
}

/// The live page for organizers and operators (static HTML; its data needs an admin session).
#[utoipa::path(
    get,
    path = "/admin",
    operation_id = "admin_page",
    tag = "operations",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String))
)]
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(PAGE)
}

async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, media_type, bytes) =
        ASSETS.iter().find(|(name, _, _)| *name == path.as_str()).ok_or(ApiError::NotFound("the asset"))?;
    // The assets change only with the binary: revalidate rather than keep a stale copy after an
    // upgrade.
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, *media_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(*bytes))
}

#[utoipa::path(
    get,
    path = "/v1/admin/dashboard/node",
    operation_id = "dashboard_node",
    tag = "admin",
    summary = "This node's figures for the operators' page",
    description = "Admissions and refusals per second, request and commit p99s over the last \
        sampling interval (recomputed at most once a second, however many pages ask), the \
        write-behind backlog, the store and Redis, the busy flag, the events this node runs, and \
        the outbox. The same counters as `/metrics`, as JSON.",
    responses(
        (status = 200, description = "The node's figures.", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request))]
async fn node(
    state: web::Data<AppState>,
    sampler: web::Data<Sampler>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let view = sampler.view(&state).await;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(view))
}

/// The events the page lists.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardEvents<'a> {
    /// The newest events first, at most 50.
    pub items: Vec<DashboardEvent<'a>>,
}

/// An event as the page lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardEvent<'a> {
    #[schema(example = "city-race")]
    pub id: String,
    pub name: String,
    /// The live figures when this node runs the event, as `GET /v1/events/{event_id}` shows
    /// them; `null` otherwise (read it there, or follow its stream).
    #[schema(required = true, value_type = Option<crate::routes::events::EventView>)]
    pub here: Option<EventView<'a>>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/dashboard/events",
    operation_id = "dashboard_events",
    tag = "admin",
    summary = "The newest events, with live figures for those this node runs",
    responses(
        (status = 200, description = "The events.", body = DashboardEvents),
        (status = 401, response = Unauthorized),
        (status = 503, response = Overloaded)
    ),
    security(("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request))]
async fn events(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.auth.require_admin(&request).await?;
    let listed = state.store.recent_events(DASHBOARD_EVENTS_MAX).await?;
    let running = state.events.registry.mailbox_depths();
    let mut here = Vec::with_capacity(listed.len());
    for event in &listed {
        // Only events already running here: listing must not start (and claim) the others.
        let handle = match running.iter().any(|(id, _)| *id == event.id) {
            true => state.events.registry.event(&event.id).await.ok().flatten(),
            false => None,
        };
        here.push(handle.map(|handle| {
            let figures = handle.counters().snapshot();
            (handle, figures)
        }));
    }
    let now = state.clock.now();
    let items = listed
        .iter()
        .zip(&here)
        .map(|(event, here)| DashboardEvent {
            id: event.id.to_string(),
            name: event.name.clone(),
            here: here.as_ref().map(|(handle, figures)| event_view(handle, figures, now)),
        })
        .collect();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(DashboardEvents { items }))
}
