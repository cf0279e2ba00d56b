//! The outbox worker's `Deliver` in `webhooks` mode: each entry becomes one message row per
//! endpoint that wants its type (`SqlStore::insert_webhook_messages`), with the body every
//! attempt of it sends; the dispatcher then sends them. Entries no endpoint wants are settled at
//! once. This runs in the worker, never in the write-behind's transaction: a registration still
//! writes the same rows, whatever the endpoints.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuota_persist::outbox::{Deliver, DeliveryResult};
use kuota_persist::store::{NewMessage, OutboxRow, SqlStore, WebhookEndpoint};
use serde::Serialize;
use tokio::sync::Notify;

use crate::routes::registrations::{RegistrationView, external_id};
use crate::time_format;
use crate::webhooks::event_type::EventType;

/// How long the fan-out reuses the list of endpoints before reading it again, in ms: every
/// entry needs it, and endpoints change rarely. An endpoint created (or deleted) just now
/// gets (or stops getting) messages after this.
pub const ENDPOINT_CACHE_TTL_MS: u64 = 1_000;

/// See the module documentation.
pub struct FanOut {
    store: SqlStore,
    clock: Arc<dyn kuota_engine::Clock>,
    /// The enabled endpoints, and when they were read.
    endpoints: Mutex<Option<(Instant, Arc<Vec<WebhookEndpoint>>)>>,
    /// Wakes the dispatcher when new messages are written.
    written: Arc<Notify>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("FanOut").finish_non_exhaustive()
    }
}

/// The body every attempt of one message sends.
#[derive(Serialize)]
struct Payload<'a, T: Serialize> {
    #[serde(rename = "type")]
    event_type: &'static str,
    timestamp: String,
    data: &'a T,
}

impl FanOut {
    pub fn new(store: SqlStore, clock: Arc<dyn kuota_engine::Clock>, written: Arc<Notify>) -> FanOut {
        FanOut { store, clock, endpoints: Mutex::new(None), written }
    }

    async fn endpoints(&self) -> Result<Arc<Vec<WebhookEndpoint>>, String> {
        let ttl = Duration::from_millis(ENDPOINT_CACHE_TTL_MS);
        // The lock is never held across an await; a poisoned one only means another thread
        // panicked between two plain assignments.
        if let Some((read_at, endpoints)) = &*self.endpoints.lock().unwrap_or_else(|error| error.into_inner())
            && read_at.elapsed() < ttl
        {
            return Ok(endpoints.clone());
        }
        let endpoints =
            Arc::new(self.store.enabled_webhook_endpoints().await.map_err(|error| error.to_string())?);
        *self.endpoints.lock().unwrap_or_else(|error| error.into_inner()) =
            Some((Instant::now(), endpoints.clone()));
        Ok(endpoints)
    }

    async fn fan_out(&self, entry: &OutboxRow) -> DeliveryResult {
        let Some(event_type) = EventType::of_outbox_kind(&entry.kind) else {
            tracing::warn!(outbox_id = entry.id, kind = %entry.kind, "an outbox kind no webhook stands for; settled");
            return Ok(());
        };
        let endpoints = self.endpoints().await?;
        let wanting: Vec<&WebhookEndpoint> = endpoints
            .iter()
            .filter(|endpoint| endpoint.event_types.iter().any(|wanted| wanted == event_type.as_str()))
            .collect();
        if wanting.is_empty() {
            return Ok(());
        }
        let (body, ordering_key) = self.body(entry, event_type).await?;
        let message_id = format!("msg_{}", kuota_persist::random::token_hex(16));
        let messages: Vec<NewMessage<'_>> = wanting
            .iter()
            .map(|endpoint| NewMessage {
                endpoint_id: &endpoint.id,
                message_id: &message_id,
                event_type: event_type.as_str(),
                ordering_key: &ordering_key,
                body: &body,
            })
            .collect();
        self.store
            .insert_webhook_messages(entry.id, &messages, self.clock.now())
            .await
            .map_err(|error| error.to_string())?;
        self.written.notify_one();
        Ok(())
    }

    /// The body, and the ordering key: the registration, or the event for event-wide types.
    async fn body(&self, entry: &OutboxRow, event_type: EventType) -> Result<(String, String), String> {
        let timestamp = time_format::format(entry.created_at);
        if !event_type.is_about_a_registration() {
            // Event-wide entries carry their data as their payload.
            let mut data: serde_json::Value =
                serde_json::from_str(&entry.payload_json).map_err(|error| format!("payload: {error}"))?;
            // The write-behind notes an admitted ticket's pass expiry in milliseconds; the
            // API shows times as RFC 3339.
            if let Some(expires) = data.get_mut("pass_expires_at")
                && let Some(millis) = expires.as_u64()
            {
                *expires = serde_json::Value::String(time_format::format(
                    kuota_engine::Timestamp::from_millis(millis),
                ));
            }
            let body = serialize(&Payload { event_type: event_type.as_str(), timestamp, data: &data })?;
            return Ok((body, entry.event.to_string()));
        }
        let row = self
            .store
            .registration(&entry.event, entry.registration)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| {
                format!("registration {} is not stored", external_id(&entry.event, entry.registration))
            })?;
        let mut data = RegistrationView::from(&row);
        // The status the entry announces: the registration may have moved on since.
        if let Some(status) = announced_status(&entry.payload_json) {
            data = data.with_status(status);
        }
        let body = serialize(&Payload { event_type: event_type.as_str(), timestamp, data: &data })?;
        Ok((body, external_id(&entry.event, entry.registration)))
    }
}

fn serialize<T: Serialize>(payload: &Payload<'_, T>) -> Result<String, String> {
    serde_json::to_string(payload).map_err(|error| format!("the payload does not serialize: {error}"))
}

/// The `status` the write-behind put in an entry's payload.
fn announced_status(payload_json: &str) -> Option<kuota_persist::store::RowStatus> {
    let payload: serde_json::Value = serde_json::from_str(payload_json).ok()?;
    kuota_persist::store::RowStatus::parse(payload.get("status")?.as_str()?)
}

impl Deliver for FanOut {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        Box::pin(self.fan_out(entry))
    }
}
