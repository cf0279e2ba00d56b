//! The outbox worker's `Deliver` in `webhooks` mode: each entry becomes one message row per
//! endpoint that wants its type, with the body every attempt of it sends; the dispatcher then
//! sends them. Entries no endpoint wants are settled at once. This runs in the worker, never in
//! the write-behind's transaction: a registration still writes the same row, whatever the
//! endpoints. Creations come as entries with id 0, derived by the worker from the registration
//! rows (see `kuota_persist::store::CreationClaim`), in rounds of their own before the entries:
//! their messages are stored with outbox id 0, told apart by their registration.
//!
//! A round of the worker is fanned out together (`Deliver::deliver_all`): one read of the
//! endpoints, one read of the round's registrations per event, one multi-row write of all the
//! round's messages. The endpoints are read in every round, after its entries were claimed, so
//! an entry committed after an endpoint was created always sees it (a cached list once left
//! such entries settled without a message for the new endpoint: lost deliveries). Disabled
//! endpoints get their messages too; they wait, unclaimed, until a replay enables the endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kuota_engine::{EventId, RegistrationId};
use kuota_persist::outbox::{Deliver, DeliveryResult, no_answer};
use kuota_persist::store::{NewMessage, OutboxRow, RegistrationRow, SqlStore, WebhookEndpoint};
use serde::Serialize;
use tokio::sync::Notify;

use crate::routes::registrations::{RegistrationView, external_id};
use crate::time_format;
use crate::webhooks::event_type::EventType;

/// See the module documentation.
pub struct FanOut {
    store: SqlStore,
    clock: Arc<dyn kuota_engine::Clock>,
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

/// One entry's message, before it is written for each endpoint that wants it.
struct Planned<'a> {
    /// The entry's position in the round.
    entry: usize,
    event_type: EventType,
    body: String,
    ordering_key: String,
    message_id: String,
    endpoints: Vec<&'a WebhookEndpoint>,
}

impl FanOut {
    pub fn new(store: SqlStore, clock: Arc<dyn kuota_engine::Clock>, written: Arc<Notify>) -> FanOut {
        FanOut { store, clock, written }
    }

    /// Fans a round's entries out; one result per entry, in order.
    async fn fan_out_all(&self, entries: &[OutboxRow]) -> Vec<DeliveryResult> {
        let mut results: Vec<DeliveryResult> = vec![Ok(()); entries.len()];
        let endpoints = match self.store.all_webhook_endpoints().await {
            Ok(endpoints) => endpoints,
            Err(error) => return vec![Err(error.to_string()); entries.len()],
        };
        // Entry position, type and the endpoints that want it, for the entries some endpoint wants.
        let mut wanted = Vec::new();
        for (position, entry) in entries.iter().enumerate() {
            let Some(event_type) = EventType::of_outbox_kind(&entry.kind) else {
                tracing::warn!(outbox_id = entry.id, kind = %entry.kind, "an outbox kind no webhook stands for; settled");
                continue;
            };
            let wanting: Vec<&WebhookEndpoint> = endpoints
                .iter()
                .filter(|endpoint| endpoint.event_types.iter().any(|wanted| wanted == event_type.as_str()))
                .collect();
            if !wanting.is_empty() {
                wanted.push((position, event_type, wanting));
            }
        }
        if wanted.is_empty() {
            return results;
        }
        let registrations = self.registrations(entries, &wanted).await;
        let mut planned = Vec::with_capacity(wanted.len());
        for (position, event_type, wanting) in wanted {
            let entry = &entries[position];
            match self.body(entry, event_type, &registrations) {
                Ok((body, ordering_key)) => planned.push(Planned {
                    entry: position,
                    event_type,
                    body,
                    ordering_key,
                    message_id: format!("msg_{}", kuota_persist::random::token_hex(16)),
                    endpoints: wanting,
                }),
                Err(error) => results[position] = Err(error),
            }
        }
        let messages: Vec<(u64, NewMessage<'_>)> = planned
            .iter()
            .flat_map(|plan| {
                plan.endpoints.iter().map(move |endpoint| {
                    let message = NewMessage {
                        endpoint_id: &endpoint.id,
                        message_id: &plan.message_id,
                        event_type: plan.event_type.as_str(),
                        ordering_key: &plan.ordering_key,
                        body: &plan.body,
                    };
                    (entries[plan.entry].id, message)
                })
            })
            .collect();
        if let Err(error) = self.store.insert_webhook_messages(&messages, self.clock.now()).await {
            for plan in &planned {
                results[plan.entry] = Err(error.to_string());
            }
            return results;
        }
        if !messages.is_empty() {
            self.written.notify_one();
        }
        results
    }

    /// The registrations the wanted entries announce, read per event in one statement each; an
    /// event whose read failed maps to its error.
    async fn registrations(
        &self,
        entries: &[OutboxRow],
        wanted: &[(usize, EventType, Vec<&WebhookEndpoint>)],
    ) -> HashMap<EventId, Result<HashMap<RegistrationId, RegistrationRow>, String>> {
        let mut numbers: HashMap<&EventId, Vec<RegistrationId>> = HashMap::new();
        for (position, event_type, _) in wanted {
            if event_type.is_about_a_registration() {
                let entry = &entries[*position];
                numbers.entry(&entry.event).or_default().push(entry.registration);
            }
        }
        let mut found = HashMap::new();
        for (event, mut numbers) in numbers {
            numbers.sort_unstable();
            numbers.dedup();
            let rows =
                self.store.registrations_by_number(event, &numbers).await.map_err(|error| error.to_string());
            let rows = rows.map(|rows| rows.into_iter().map(|row| (row.id, row)).collect());
            found.insert(event.clone(), rows);
        }
        found
    }

    /// The body, and the ordering key: the registration, or the event for event-wide types.
    fn body(
        &self,
        entry: &OutboxRow,
        event_type: EventType,
        registrations: &HashMap<EventId, Result<HashMap<RegistrationId, RegistrationRow>, String>>,
    ) -> Result<(String, String), String> {
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
        let rows = match registrations.get(&entry.event) {
            Some(Ok(rows)) => rows,
            Some(Err(error)) => return Err(error.clone()),
            None => return Err(format!("the registrations of event {} were not read", entry.event)),
        };
        let row = rows.get(&entry.registration).ok_or_else(|| {
            format!("registration {} is not stored", external_id(&entry.event, entry.registration))
        })?;
        let mut data = RegistrationView::from(row);
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
        Box::pin(async move {
            let mut results = self.fan_out_all(std::slice::from_ref(entry)).await;
            results.pop().unwrap_or_else(|| Err("no result from the fan-out".into()))
        })
    }

    fn deliver_all<'a>(
        &'a self,
        entries: &'a [OutboxRow],
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<DeliveryResult>> + Send + 'a>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.fan_out_all(entries)).await {
                Ok(results) => results,
                // Nothing of the round may have been written; what was is not written twice.
                Err(_) => vec![Err(no_answer(timeout)); entries.len()],
            }
        })
    }
}
