//! One file per resource, each with `configure`. What they share for reading requests and
//! writing answers is in `crate::http`, below them, where the use cases (`crate::use_cases`)
//! find it too.

pub mod admin;
pub mod dashboard;
pub mod events;
pub mod operations;
pub mod queue;
pub mod queue_stream;
pub mod registrations;
pub mod webhooks;

use actix_web::web;

/// Registers every resource. The order is the cost of a request: actix tries the resources in
/// the order they were registered, and each one with a path parameter is tried with a regex
/// capture (`actix_router::ResourceDef::capture_match_info_fn`), so a request pays one capture
/// for every such resource registered before its own. The routes a crowd polls come first: a
/// ticket read (`queue` registers it first), then the event's read. Registrations, joins and
/// ticket reads of an event that runs here skip the router (`owner_routing::serve_here`). Patterns
/// never overlap (a parameter matches one segment), so the order changes no answer.
pub fn configure(config: &mut web::ServiceConfig) {
    queue::configure(config);
    events::configure(config);
    registrations::configure(config);
    queue_stream::configure(config);
    admin::configure(config);
    operations::configure(config);
    dashboard::configure(config);
    webhooks::configure(config);
}
