//! The queue-join use case (`POST /v1/events/{event_id}/queue`): one ticket per e-mail per event,
//! placed by the draw before `opens_at` and at the tail after, acknowledged once committed.
//!
//! `answer` is its one door (see `crate::use_cases`).

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::Stream;
use kuota_engine::actor::EventHandle;
use kuota_engine::{Decision, Email, EventId, Fingerprint, Idempotency, JoinQueue, Outcome};

use crate::error::{ApiError, ProblemExtra};
use crate::http::mark_replayed;
use crate::queue::{TicketBody, no_queue};
use crate::state::AppState;
use crate::use_cases::Submission;
use crate::{admission, domain, tokens};

/// How long a client should wait after `queue_full`, in seconds: a queue only fills up, so
/// this is a "do not hammer", not a promise.
pub const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 60;

/// A queue join, typed.
#[derive(Debug)]
pub struct JoinQueueRequest<'a> {
    pub event_id: &'a EventId,
    pub submission: Submission,
}

/// Answers `POST /v1/events/{event_id}/queue` for `event_id`: the route's handler calls it, and
/// so does the owner-routing layer for an event it `located` running here.
pub async fn answer<P>(
    state: &AppState,
    event_id: &EventId,
    located: Option<EventHandle>,
    request: &HttpRequest,
    payload: P,
) -> Result<HttpResponse, ApiError>
where
    P: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    let submission = Submission::read(state, request, payload).await?;
    join(state, JoinQueueRequest { event_id, submission }, located).await
}

/// Decides a join: the limits, the event and its queue, the body, then the actor.
#[tracing::instrument(name = "join", skip_all, fields(event_id = %request.event_id))]
pub async fn join(
    state: &AppState,
    request: JoinQueueRequest<'_>,
    located: Option<EventHandle>,
) -> Result<HttpResponse, ApiError> {
    let JoinQueueRequest { event_id, submission: Submission { key, body, client } } = request;
    state.limits.limit_client(client)?;
    let event = state.events.located_event(event_id, located).await?;
    if event.config().queue.is_none() {
        return Err(no_queue());
    }
    let registrant = domain::queue_join(&body)?;
    state.limits.limit_registrant(&registrant).await?;
    state.shedding.refuse_if_stalled()?;
    let fingerprint: Fingerprint = tokens::fingerprint(&[b"queue", registrant.as_bytes()]);
    let idempotency = Some(Idempotency { key, fingerprint });
    // Joins share the adaptive limit of registrations in flight: both wait for a commit.
    let _permit = state
        .shedding
        .admission
        .try_acquire()
        .ok_or_else(|| state.shedding.shed(admission::REFUSAL_REASON))?;
    let (outcome, _) = event
        .join_queue(JoinQueue { registrant: Email::from(registrant), idempotency })
        .await
        .map_err(|error| state.shedding.actor_error(error))?;
    match outcome {
        Outcome::Decided(decision) => join_response(state, event_id, &decision, false),
        Outcome::Replayed(decision) => join_response(state, event_id, &decision, true),
        Outcome::KeyInFlight => Err(ApiError::KeyInFlight),
        Outcome::KeyReused => Err(ApiError::KeyReused),
        Outcome::IdempotencyFull => Err(state.shedding.shed("the event keeps too many idempotency keys")),
        Outcome::QueueFull => {
            Err(ApiError::QueueFull { retry_after_seconds: QUEUE_FULL_RETRY_AFTER_SECONDS })
        }
        Outcome::NoQueue => Err(no_queue()),
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a queue join"))),
    }
}

/// The answer to a join (or its replay): 202 for a new ticket, 200 for the registrant's
/// existing one, or the window's refusals.
fn join_response(
    state: &AppState,
    event: &EventId,
    decision: &Decision,
    replayed: bool,
) -> Result<HttpResponse, ApiError> {
    let mut response = match decision {
        Decision::QueueJoined { new, view } => {
            let status = if *new { StatusCode::ACCEPTED } else { StatusCode::OK };
            HttpResponse::build(status).json(TicketBody::new(&state.token_secret, event, view, *new))
        }
        Decision::NotOpen { opens_at } => ApiError::Conflict {
            status: StatusCode::CONFLICT,
            code: "not_open",
            detail: "the queue's lobby has not opened yet".into(),
            extra: ProblemExtra { lobby_opens_at: Some(*opens_at), ..ProblemExtra::default() },
        }
        .error_response(),
        Decision::Closed => ApiError::conflict("closed", "registration has closed").error_response(),
        other => return Err(ApiError::Internal(anyhow::anyhow!("{other:?} is not a queue decision"))),
    };
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}
