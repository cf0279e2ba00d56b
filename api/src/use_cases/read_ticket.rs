//! The ticket read (`GET /v1/queue/{ticket_id}`): what a waiting crowd polls, answered from the
//! figures the event's actor published, so that polling costs the actor nothing.
//!
//! `answer` is its one door (see `crate::use_cases`): the route's handler calls it, and so does
//! the owner-routing layer for a ticket whose event runs here, without the router.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use kuota_engine::actor::{ActorError, EventHandle};
use kuota_engine::{EventId, TicketId, TicketView};

use crate::error::ApiError;
use crate::queue::TicketBody;
use crate::state::{AppState, bearer};
use crate::tokens;

/// Answers `GET /v1/queue/{ticket_id}` for `ticket_id` (the path segment, percent-decoded),
/// with `located`, the event the owner-routing layer found running here, if any.
#[tracing::instrument(name = "read", skip_all, fields(ticket_id = %ticket_id))]
pub async fn answer(
    state: &AppState,
    request: &HttpRequest,
    ticket_id: &str,
    located: Option<EventHandle>,
) -> Result<HttpResponse, ApiError> {
    let (event_id, ticket) = authorized_ticket(state, request, ticket_id, None).await?;
    let not_found = || ApiError::NotFound("the ticket");
    let located = located.filter(|event| event.config().id == event_id);
    let event = state.events.located_event(&event_id, located).await?;
    let view = current_ticket(state, &event, ticket)
        .await
        .map_err(|error| state.shedding.actor_error(error))?
        .ok_or_else(not_found)?;
    let body = TicketBody::new(&state.token_secret, &event_id, &view, false);
    Ok(HttpResponse::Ok()
        .insert_header((header::RETRY_AFTER, view.refresh_after_seconds.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

/// A ticket as it reads now: from the figures the event's actor published (the crowd's polling
/// costs the actor nothing), or from the actor when those cannot tell (`ticket_view`).
pub(crate) async fn current_ticket(
    state: &AppState,
    event: &EventHandle,
    ticket: TicketId,
) -> Result<Option<TicketView>, ActorError> {
    let now = state.clock.now();
    let published =
        event.config().opens_at.and_then(|opens_at| event.counters().ticket_view(ticket, opens_at, now));
    match published {
        Some(view) => Ok(Some(view)),
        // A stream reads on its own after its answer's head, outside the request deadline:
        // the deadline is kept here for it.
        None => {
            answered_within(Duration::from_millis(state.settings.request_timeout_ms), event.ticket(ticket))
                .await
        }
    }
}

/// The actor's answer, or `Overloaded` (a 503, or a stream's "try again at the next tick")
/// when none came within `deadline`.
async fn answered_within<T>(
    deadline: Duration,
    answer: impl std::future::Future<Output = Result<T, ActorError>>,
) -> Result<T, ActorError> {
    tokio::time::timeout(deadline, answer).await.unwrap_or(Err(ActorError::Overloaded))
}

/// The ticket `ticket_id` names, if the request may read it: with the ticket's access token (in
/// `Authorization: Bearer`, or given as `query_token` by a stream) or as an admin. 401 without
/// any credential; 404 for a token that is not the ticket's, as for an unknown ticket.
pub(crate) async fn authorized_ticket(
    state: &AppState,
    request: &HttpRequest,
    ticket_id: &str,
    query_token: Option<&str>,
) -> Result<(EventId, TicketId), ApiError> {
    let token = bearer(request).or(query_token);
    let parsed = TicketId::parse(ticket_id).ok();
    // The ticket's own token first: it is what a waiting crowd polls with, and it answers
    // without the admin's credentials (a comparison, and a session cookie read from Redis).
    if let (Some(token), Some((event_id, ticket))) = (token, &parsed)
        && tokens::constant_time_eq(
            token,
            &crate::queue::access_token(&state.token_secret, event_id, *ticket),
        )
    {
        return parsed.ok_or(ApiError::NotFound("the ticket"));
    }
    let is_admin = state.auth.is_admin(request).await?;
    if token.is_none() && !is_admin {
        return Err(ApiError::Unauthorized);
    }
    parsed.filter(|_| is_admin).ok_or(ApiError::NotFound("the ticket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_actor_that_does_not_answer_is_overloaded_at_the_deadline_and_not_before() {
        let deadline = Duration::from_millis(2_000);
        let started = tokio::time::Instant::now();
        let silent = std::future::pending::<Result<u32, ActorError>>();
        assert!(matches!(answered_within(deadline, silent).await, Err(ActorError::Overloaded)));
        assert_eq!(started.elapsed(), deadline, "refused exactly at the deadline (paused time)");
        assert_eq!(answered_within(deadline, async { Ok::<_, ActorError>(7) }).await.unwrap(), 7);
    }
}
