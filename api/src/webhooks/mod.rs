//! Webhooks to the organizer's systems, by the Standard Webhooks spec (v1): the outbox worker
//! fans each entry out to the endpoints that want its type, and a dispatcher sends, signs,
//! retries and settles each message. See `docs/webhooks.md`.
//!
//! # Layout
//! - `event_type`: the event types and the outbox kinds they come from.
//! - `signing`: `whsec_` secrets and `v1` signatures.
//! - `destination`: which URLs may be called (against SSRF), at creation and after DNS resolution.
//! - `retry`: the retry schedule with jitter.
//! - `sender`: the HTTP client; one attempt and what its answer means.
//! - `fan_out`: the outbox worker's `Deliver`: one message row per endpoint that wants the entry.
//! - `dispatcher`: claims due messages, sends them with bounded concurrency, settles them.
//! - `sold_out`: announces an event's sell-out through the outbox.

pub mod destination;
pub mod dispatcher;
pub mod event_type;
pub mod fan_out;
pub mod retry;
pub mod sender;
pub mod signing;
pub mod sold_out;

use std::sync::Arc;
use std::time::Duration;

use kuota_engine::Clock;
use kuota_persist::store::SqlStore;
use tokio::sync::Notify;

use crate::configuration::Settings;
use crate::webhooks::destination::AllowHosts;
use crate::webhooks::dispatcher::{Dispatcher, DispatcherConfig};
use crate::webhooks::fan_out::FanOut;
use crate::webhooks::retry::RetrySchedule;
use crate::webhooks::sender::Sender;

/// The fan-out for the outbox worker, and the dispatcher already running.
pub fn start(
    store: &SqlStore,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(FanOut, Dispatcher)> {
    let allow = AllowHosts::parse(&settings.webhook_allow_hosts);
    let schedule = RetrySchedule::parse(&settings.webhook_retry_schedule).map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_millis(settings.webhook_timeout_ms);
    let sender = Sender::new(allow, timeout)?;
    let written = Arc::new(Notify::new());
    let fan_out = FanOut::new(store.clone(), clock.clone(), written.clone());
    let dispatcher =
        Dispatcher::start(store.clone(), sender, clock, DispatcherConfig::new(schedule, timeout), written);
    Ok((fan_out, dispatcher))
}
