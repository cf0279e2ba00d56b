//! The requests on an event that the owner-routing layer answers without the router, one module
//! per use case: the writes a client submits with an `Idempotency-Key`, `register`
//! (`POST /v1/events/{event_id}/registrations`) and `join_queue`
//! (`POST /v1/events/{event_id}/queue`); and the read a waiting crowd polls, `read_ticket`
//! (`GET /v1/queue/{ticket_id}`).
//!
//! Each has one door, `answer`, which the route calls and which the owner-routing layer
//! (`crate::owner_routing`) calls for an event that runs here, so that the answer is the same
//! byte for byte whichever way the request came. The writes' `answer` reads the HTTP request
//! once into the use case's typed request (`Submission`, and the use case's own fields), then
//! decides.

pub mod join_queue;
pub mod read_ticket;
pub mod register;

use std::net::IpAddr;

use actix_web::error::PayloadError;
use actix_web::{HttpRequest, web};
use futures_util::Stream;
use kuota_engine::IdempotencyKey;

use crate::domain;
use crate::error::ApiError;
use crate::http::{IDEMPOTENCY_KEY, json_body};
use crate::state::AppState;

/// What every submitted write brings, read from its HTTP request: the key, the JSON body within
/// its limit, and the client its per-IP limit counts.
#[derive(Debug)]
pub struct Submission {
    pub key: IdempotencyKey,
    pub body: web::Bytes,
    /// The client as this node or, for a forwarded request, the first node saw it; `None` when
    /// it cannot be told (no peer address) or no per-IP limit is configured (`AppState::client_of`).
    pub client: Option<IpAddr>,
}

impl Submission {
    /// Reads the key (400 when missing or invalid), then the body (415, 413, 400), in that
    /// order: the order of the contract's refusals.
    pub async fn read<P>(state: &AppState, request: &HttpRequest, payload: P) -> Result<Submission, ApiError>
    where
        P: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
    {
        let key =
            domain::idempotency_key(request.headers().get(&IDEMPOTENCY_KEY).map(|value| value.as_bytes()))?;
        let body = json_body(request, payload, state.settings.body_limit_bytes).await?;
        Ok(Submission { key, body, client: state.limits.client_of(request) })
    }
}
