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

pub fn configure(config: &mut web::ServiceConfig) {
    events::configure(config);
    registrations::configure(config);
    queue::configure(config);
    queue_stream::configure(config);
    admin::configure(config);
    operations::configure(config);
    dashboard::configure(config);
    webhooks::configure(config);
}
