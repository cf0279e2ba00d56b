//! `GET /v1/queue/{ticket_id}/stream`: one ticket followed live (Server-Sent Events), for front
//! ends that would rather be told than poll.
//!
//! A stream reads its ticket (from the figures the actor published; from the actor only when
//! those cannot tell) when the answer can have changed, and no more often than the ticket's
//! place in line calls for: every admission moves everyone behind it, and 10,000 streams sending
//! a frame on every change would cost more than 10,000 pollers who wait as told. What a
//! registrant must learn at once (the draw happening, the seats running out or coming back) is
//! seen in the event's figures and read at the next tick; anything else waits for the ticket's
//! own pace.

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use kuota_engine::actor::{ActorError, EventHandle};
use kuota_engine::{EventId, TicketId, TicketStatus, TicketView};

use crate::error::ApiError;
use crate::middleware::resource;
use crate::queue::TicketBody;
use crate::responses::{Overloaded, Problem};
use crate::routes::events::{STREAM_HEARTBEAT_SECONDS, STREAM_UPDATE_INTERVAL_MS, Subscription};
use crate::state::AppState;
use crate::use_cases::read_ticket;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(resource("/v1/queue/{ticket_id}/stream").route(web::get().to(stream)));
}

/// A waiting ticket is read again at most every `refresh_after_seconds` ÷ this: four updates
/// in the time a poller would ask once.
const WAITING_READS_PER_REFRESH: u64 = 4;
/// The longest a waiting ticket's stream goes without a fresh read, in ms, so that `ahead` and
/// `eta_seconds` never look frozen.
const WAITING_READ_INTERVAL_MAX_MS: u64 = 15_000;

/// How often a stream may ask the actor for a ticket in this reading.
fn read_interval(view: &TicketView) -> Duration {
    let milliseconds = match view.status {
        TicketStatus::Waiting | TicketStatus::Lobby => (u64::from(view.refresh_after_seconds) * 1_000
            / WAITING_READS_PER_REFRESH)
            .clamp(STREAM_UPDATE_INTERVAL_MS, WAITING_READ_INTERVAL_MAX_MS),
        // An admitted ticket waits for its own registration or expiry: tell it at once.
        TicketStatus::Admitted | TicketStatus::SoldOut | TicketStatus::Used | TicketStatus::Expired => {
            STREAM_UPDATE_INTERVAL_MS
        }
    };
    Duration::from_millis(milliseconds)
}

/// A ticket that can change no more: its stream ends after saying so.
fn is_final(view: &TicketView) -> bool {
    matches!(view.status, TicketStatus::Used | TicketStatus::Expired)
}

/// What the event's published figures say without asking the actor: whether the draw has
/// happened, and whether no seat can reach a waiting ticket any more. A change of either is read
/// at the next tick whatever the ticket's pace.
fn landmarks(event: &EventHandle) -> (bool, bool) {
    let counters = event.counters();
    (counters.queue_snapshot().drawn, counters.queue_exhausted())
}

struct Follow {
    /// Holds the subscriber's place under `STREAM_SUBSCRIBERS_MAX` while the stream lives.
    subscription: Subscription,
    event: EventHandle,
    event_id: EventId,
    ticket: TicketId,
    shown: TicketView,
    /// The figures' version and landmarks at the last read.
    version: u64,
    landmarks: (bool, bool),
    last_read: Instant,
    last_write: Instant,
    /// The last frame was a final ticket's: end the stream.
    done: bool,
}

impl Follow {
    fn frame(&self, view: &TicketView) -> web::Bytes {
        let secret = &self.subscription.state().token_secret;
        let body = TicketBody::new(secret, &self.event_id, view, false);
        // A struct of strings and numbers: serializing it cannot fail.
        let data = serde_json::to_string(&body).expect("a ticket serializes to JSON");
        web::Bytes::from(format!("event: ticket\ndata: {data}\n\n"))
    }

    fn read_due(&self, version: u64, landmarks: (bool, bool)) -> bool {
        let elapsed = self.last_read.elapsed();
        landmarks != self.landmarks
            || (version != self.version && elapsed >= read_interval(&self.shown))
            // `eta_seconds` and `refresh_after_seconds` move with time alone, and a lobby ticket
            // counts down to the draw.
            || elapsed >= Duration::from_millis(WAITING_READ_INTERVAL_MAX_MS)
    }

    /// The next frame to send, or `None` when the stream is over.
    async fn next(mut self) -> Option<(Result<web::Bytes, actix_web::Error>, Follow)> {
        if self.done {
            return None;
        }
        loop {
            let version = self.event.counters().version();
            let landmarks = landmarks(&self.event);
            if self.read_due(version, landmarks) {
                self.last_read = Instant::now();
                let state = self.subscription.state();
                match read_ticket::current_ticket(state, &self.event, self.ticket).await {
                    Ok(Some(view)) => {
                        self.version = version;
                        self.landmarks = landmarks;
                        if view != self.shown {
                            let frame = self.frame(&view);
                            self.done = is_final(&view);
                            self.shown = view;
                            self.last_write = Instant::now();
                            return Some((Ok(frame), self));
                        }
                    }
                    // A full mailbox: try again at the next tick.
                    Err(ActorError::Overloaded) => {}
                    // The event stopped here (moved, recovering, shutting down): end the stream
                    // and let the client's reconnection find the owner.
                    Ok(None) | Err(_) => return None,
                }
            }
            if self.last_write.elapsed() >= Duration::from_secs(STREAM_HEARTBEAT_SECONDS) {
                self.last_write = Instant::now();
                return Some((Ok(web::Bytes::from_static(b": heartbeat\n\n")), self));
            }
            tokio::time::sleep(Duration::from_millis(STREAM_UPDATE_INTERVAL_MS)).await;
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/queue/{ticket_id}/stream",
    operation_id = "stream_ticket",
    tag = "public",
    summary = "Follow a queue ticket live (Server-Sent Events)",
    description = "On connect, and then whenever the ticket reads differently, an `event: ticket` whose \
        `data` is the ticket as `GET /v1/queue/{ticket_id}` shows it (with `pass` once admitted); a \
        `: heartbeat` comment every 15 s. Changes that matter at once (admitted, the draw, `sold_out` \
        and back, `used`, `expired`) arrive within a second; `ahead` and `eta_seconds` at most four \
        times per `refresh_after_seconds`. The stream ends after a `used` or `expired` ticket; a \
        connection to a ticket already in one of those states gets 204, which tells an `EventSource` \
        to stop reconnecting. Credentials as for `GET /v1/queue/{ticket_id}`, or the ticket's \
        `access_token` as the query parameter `access_token`, since a browser's `EventSource` cannot \
        send headers. A node that does not own the event answers 307 to the owner's address.",
    params(
        ("ticket_id" = String, Path, description = "The `ticket_id` from the join's answer."),
        ("access_token" = Option<String>, Query, description = "The ticket's `access_token`, instead of the \
            `Authorization` header.")
    ),
    responses(
        (
            status = 200,
            description = "The stream of `ticket` events.",
            content_type = "text/event-stream",
            body = String,
            example = "event: ticket\n\
                data: {\"ticket_id\":\"city-race.q17\",\"event_id\":\"city-race\",\"status\":\"waiting\",\
                \"position\":17,\"ahead\":3,\"eta_seconds\":2,\"refresh_after_seconds\":2}\n\n"
        ),
        (status = 204, description = "The ticket is `used` or `expired`: nothing more will be sent."),
        (status = 307, description = "The event runs on another node: its address, in `Location`."),
        (status = 401, description = "No credential (`unauthorized`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such ticket, or the token is not its own (`not_found`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, response = Overloaded)
    ),
    security((), ("registrant_token" = []), ("admin_token" = []), ("admin_session" = []))
)]
#[tracing::instrument(skip(state, request), fields(ticket_id = %path))]
async fn stream(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let token = query_token(&request);
    let (event_id, ticket) =
        read_ticket::authorized_ticket(&state, &request, &path, token.as_deref()).await?;
    let event = state.events.event_of(&request, &event_id).await?;
    let subscription = Subscription::open(&state)?;
    let not_found = || ApiError::NotFound("the ticket");
    let view = read_ticket::current_ticket(&state, &event, ticket)
        .await
        .map_err(|error| state.shedding.actor_error(error))?
        .ok_or_else(not_found)?;
    if is_final(&view) {
        return Ok(HttpResponse::NoContent().finish());
    }
    let now = Instant::now();
    let follow = Follow {
        subscription,
        version: event.counters().version(),
        landmarks: landmarks(&event),
        event,
        event_id,
        ticket,
        shown: view,
        last_read: now,
        last_write: now,
        done: false,
    };
    let first = follow.frame(&follow.shown);
    let rest = futures_util::stream::unfold(follow, Follow::next);
    let frames = futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(first) }), rest);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(frames))
}

/// The `access_token` query parameter, percent-decoded.
fn query_token(request: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
        .ok()?
        .into_inner()
        .remove("access_token")
        .filter(|token| !token.is_empty())
}
