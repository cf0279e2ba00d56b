//! The owner-routing layer: the app-wide middleware that sends a request for an event to the
//! event's owner, and answers the submitted writes and the ticket read of an event that runs here
//! through their use case (`crate::use_cases`) without the router.
//!
//! A forwarded request that reaches a node which is not the owner either is answered
//! `503 overloaded` with `Retry-After`, never forwarded again: ownership is moving, and the
//! client's retry finds the new owner. That 503 is marked `Kuota-Not-Owner`, so that the
//! forwarding node forgets the owner it remembered (`OwnerCache`).
//!
//! Forwarding costs no lease service round trip while the owner is remembered (`OwnerCache`),
//! reuses kept-alive connections, and answers 503 within a second when the owner does not
//! answer, then at once while the owner's breaker is open (`Forwarder`). When a remembered
//! owner certainly did nothing with the request (it could not be reached, or said it is not the
//! owner), the owner is looked up afresh once and the request goes where the lease now says.
//!
//! Path segments are read percent-decoded, as the router reads them, so that
//! `/v1/events/r%61ce/registrations` takes the same way as `/v1/events/race/registrations`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use kuota_engine::EventId;
use kuota_engine::actor::{EventHandle, Located, Registry};
use kuota_engine::ownership::Owner;

use crate::cluster::{FORWARD_TOKEN, FORWARDED_BY, ForwardedClient, LocatedHere, NOT_OWNER, OWNER};
use crate::error::ApiError;
use crate::forward::{self, ForwardError, Outgoing, PeerAddress};
use crate::http::{DispatcherFedBody, read_bounded};
use crate::metrics;
use crate::middleware::{label_route, registration_event_segment};
use crate::owner_cache::FAILING_OWNER_ENTRY_MS_MAX;
use crate::rate_limit::client_ip;
use crate::routes::queue::{QUEUE_PATTERN, TICKET_PATTERN};
use crate::routes::registrations::REGISTRATIONS_PATTERN;
use crate::state::AppState;
use crate::use_cases::{join_queue, read_ticket, register};

/// What precedes the ticket id in the path of a ticket read (`TICKET_PATTERN`).
const TICKET_PATH_PREFIX: &str = "/v1/queue/";

/// How long a client should wait when the owner changes hands or does not answer, in seconds:
/// a handover completes within a renewal interval, a dead owner's lease within its TTL, and
/// the retry is cheap either way.
pub const OWNER_MOVING_RETRY_AFTER_SECONDS: u64 = 1;

/// Request headers a forwarded request keeps; the rest are the hop's own.
const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "idempotency-key",
    "queue-pass",
    "authorization",
    "cookie",
    "if-none-match",
    "x-request-id",
    "traceparent",
    "accept",
];

/// Answer headers that describe the hop, not the answer; actix writes its own.
const HOP_BY_HOP_ANSWER_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "date",
    "upgrade",
    "trailer",
    NOT_OWNER,
];

/// The use cases the owner-routing layer answers itself for an event that runs here: the
/// submitted writes of a flash crowd, and the read its waiting part polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UseCase {
    Submitted(Submitted),
    TicketRead,
}

/// The submitted writes among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submitted {
    Registration,
    QueueJoin,
}

/// A route that needs the event's actor, and therefore its owner, as the path names it.
#[derive(Debug, PartialEq, Eq)]
struct RouteInPath<'p> {
    /// The event's id, percent-decoded (borrowed from the path unless it had a `%`), and a
    /// valid one (`EventId::check`).
    event: Cow<'p, str>,
    stream: bool,
    use_case: Option<UseCase>,
    pattern: &'static str,
}

/// A route that needs the event's actor, and therefore its owner.
#[derive(Debug)]
struct OwnedRoute {
    event: EventId,
    /// The event, when it ran here as the request came in: found by the path's text, without
    /// making an id of it (which allocated a copy per request).
    running: Option<EventHandle>,
    /// `GET /v1/events/{event_id}/stream` and `GET /v1/queue/{ticket_id}/stream`: redirected
    /// rather than relayed (they never end).
    stream: bool,
    /// A submitted write (a registration, a queue join) or a ticket read: answered by its use
    /// case without the router when the event runs here.
    use_case: Option<UseCase>,
    /// The pattern of the resource that serves the route: the metrics label of an answer given
    /// here (forwarded, redirected or refused), so that the metrics need not match the path
    /// against every resource again.
    pattern: &'static str,
}

impl OwnedRoute {
    /// `route` with its event: the running one's id, shared, or else one made of the path's text.
    fn of(route: RouteInPath<'_>, registry: &Registry) -> Self {
        let RouteInPath { event, stream, use_case, pattern } = route;
        let running = registry.running_event(&event);
        let event = match &running {
            Some(handle) => handle.config().id.clone(),
            // `owned_route` took only valid ids.
            None => EventId::parse(&event).expect("owned_route checked the event id"),
        };
        OwnedRoute { event, running, stream, use_case, pattern }
    }
}

/// Which routes reach an event's actor. Listings and the audit trail read the store and stay
/// local; reading a registration needs the actor only for a waitlist position, but is sent to
/// the owner all the same so that every node answers alike.
fn owned_route<'p>(method: &str, path: &'p str) -> Option<RouteInPath<'p>> {
    // A registration, nearly every request of a sale, is found without splitting the path into
    // segments (about 400 instructions): the same route the match below finds.
    if method == "POST"
        && let Some(event) = registration_event_segment(path)
    {
        return Some(RouteInPath {
            event: event_id_text(event)?,
            stream: false,
            use_case: Some(UseCase::Submitted(Submitted::Registration)),
            pattern: REGISTRATIONS_PATTERN,
        });
    }
    // The segments in an array, not a `Vec`: every request asks, and none of these routes has
    // more than four.
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in path.strip_prefix("/v1/")?.split('/') {
        *segments.get_mut(count)? = segment;
        count += 1;
    }
    use Submitted::{QueueJoin, Registration};
    use UseCase::{Submitted as Write, TicketRead};
    let (event, stream, use_case, pattern) = match (method, &segments[..count]) {
        ("GET", ["events", event]) => (*event, false, None, "/v1/events/{event_id}"),
        ("POST", ["events", event, "registrations"]) => {
            (*event, false, Some(Write(Registration)), REGISTRATIONS_PATTERN)
        }
        ("PATCH", ["events", event, "categories", _]) => {
            (*event, false, None, "/v1/events/{event_id}/categories/{code}")
        }
        ("GET", ["events", event, "stream"]) => (*event, true, None, "/v1/events/{event_id}/stream"),
        ("POST", ["events", event, "queue"]) => (*event, false, Some(Write(QueueJoin)), QUEUE_PATTERN),
        ("GET", ["events", event, "queue", "draw"]) => {
            (*event, false, None, "/v1/events/{event_id}/queue/draw")
        }
        ("GET", ["queue", ticket]) => (ticket.rsplit_once('.')?.0, false, Some(TicketRead), TICKET_PATTERN),
        ("GET", ["queue", ticket, "stream"]) => {
            (ticket.rsplit_once('.')?.0, true, None, "/v1/queue/{ticket_id}/stream")
        }
        ("GET" | "DELETE", ["registrations", registration]) => {
            (registration.rsplit_once('.')?.0, false, None, "/v1/registrations/{registration_id}")
        }
        ("POST", ["registrations", registration, "confirm"]) => {
            (registration.rsplit_once('.')?.0, false, None, "/v1/registrations/{registration_id}/confirm")
        }
        _ => return None,
    };
    Some(RouteInPath { event: event_id_text(event)?, stream, use_case, pattern })
}

/// A path segment's event id: percent-decoded, if it is a valid one.
fn event_id_text(segment: &str) -> Option<Cow<'_, str>> {
    percent_decoded(segment).filter(|text| EventId::check(text).is_ok())
}

/// A path segment as the router reads it: `%XX` decoded. Borrowed when it has no `%` (every
/// request a client library sends); `None` when it does not decode to UTF-8, which no event id
/// is. A malformed escape is left as it is, as the router leaves it, and no event id has a `%`.
fn percent_decoded(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// The middleware (`actix_web::middleware::from_fn`): a request for an event owned elsewhere is
/// forwarded to its owner, once; a submitted write (a registration, a queue join) or a ticket
/// read for an event that runs here is answered by its use case at once, without the router;
/// everything else goes to the handlers, with the event when it runs here (`LocatedHere`).
///
/// Every request is answered within `KUOTA_REQUEST_TIMEOUT_MS` (a stream too: the deadline
/// covers its answer's head, its lookup and first read, not the body that follows): one that is not gets 503 `overloaded` with `Retry-After`, and
/// what it waited for is dropped. A registration dropped that way stays with its event: its key
/// is in flight (a retry gets 409 `idempotency_key_in_flight`) until its batch commits or fails,
/// and then replays what was decided; nothing is acknowledged that is not committed. The late
/// answer is an error that actix turns into the response: a response of our own would need the
/// request, which the router must hold alone (it fails on a request that was cloned). The
/// deadline is kept here, where the state is at hand anyway, rather than in a middleware of its
/// own that would look the state up once more per request.
pub async fn route_to_owner(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let route = owned_route(request.method().as_str(), request.path())
        .map(|route| OwnedRoute::of(route, &state.events.registry));
    let deadline = Duration::from_millis(state.settings.request_timeout_ms);
    match tokio::time::timeout(deadline, route_parsed(request, next, &state, route)).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::warn!(deadline_ms = deadline.as_millis() as u64, "request deadline passed");
            Err(state.shedding.shed("the request was not answered within its deadline; retry").into())
        }
    }
}

/// `route_to_owner` within the request's deadline, for the route `owned_route` found.
async fn route_parsed(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &web::Data<AppState>,
    route: Option<OwnedRoute>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(mut route) = route else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let forwarded_by = state.cluster.forwarded_by(request.headers()).map(str::to_owned);
    if forwarded_by.is_some() {
        let client = forwarded_client_ip(request.headers(), &state.settings.trusted_proxies);
        request.extensions_mut().insert(ForwardedClient(client));
    }
    // The event found running as the request came in, or else looked up (and started) now.
    let located = match route.running.take() {
        Some(event) => Ok(Located::Here(event)),
        None => state.events.registry.locate(&route.event).await,
    };
    let owner = match located {
        Ok(Located::Elsewhere(owner)) => owner,
        Ok(Located::Here(event)) => return serve_here(request, next, state, &route, event).await,
        // No such event, or errors (the lease service or the store is down): left to the
        // handler, which meets them again and answers them as it always does.
        Ok(Located::Missing) | Err(_) => return Ok(next.call(request).await?.map_into_boxed_body()),
    };
    let (http_request, payload) = request.into_parts();
    label_route(&http_request, route.pattern);
    let response = if let Some(from) = forwarded_by {
        tracing::warn!(event_id = %route.event, %from, owner = %owner.node_id, "forwarded here, owned elsewhere");
        let mut response = moving("the event's owner is changing; retry").error_response();
        if let Ok(value) = HeaderValue::from_str(state.cluster.node_id()) {
            response.headers_mut().insert(HeaderName::from_static(NOT_OWNER), value);
        }
        response
    } else if owner.node_id == state.cluster.node_id() {
        // The lease names this node but this run does not hold it: a claim takes an earlier
        // run's lease over at once, so this is a take-over racing with another claim of this
        // node. The retry finds the event running here.
        moving("this node is taking the event over; retry").error_response()
    } else if route.stream {
        redirect(&owner, &http_request)
    } else {
        // Boxed: forwarding's state (the client and its buffers) is most of 9 KB, and this
        // middleware's future, as large as its largest state, is carried by value through the
        // span and metrics wrappers and copied at each, on every request. A forwarded request,
        // rare, pays one allocation instead.
        match Box::pin(forward_with_one_fresh_look(state, &route, owner, &http_request, payload)).await {
            Routed::Answered(response) => response,
            Routed::OwnedHere(event, body) => {
                let request = ServiceRequest::from_parts(http_request, Payload::from(body));
                return serve_here(request, next, state, &route, event).await;
            }
        }
    };
    Ok(ServiceResponse::new(http_request, response))
}

/// The event runs here: a submitted write or a ticket read is answered by its use case at once,
/// anything else by its handler.
async fn serve_here(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &AppState,
    route: &OwnedRoute,
    event: EventHandle,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let submitted = match route.use_case {
        Some(UseCase::Submitted(submitted)) => submitted,
        Some(UseCase::TicketRead) => return read_ticket_here(request, next, state, route, event).await,
        None => {
            request.extensions_mut().insert(LocatedHere(event));
            return Ok(next.call(request).await?.map_into_boxed_body());
        }
    };
    // The route label the resource would have given, for the request metrics; they find a
    // registration's by its path (`middleware::registration_event_segment`).
    if submitted != Submitted::Registration {
        label_route(&request, route.pattern);
    }
    let (request, payload) = request.into_parts();
    // This future is the dispatcher's service call: its body wakes nobody (`DispatcherFedBody`).
    let payload = DispatcherFedBody(payload);
    let answer = match submitted {
        Submitted::Registration => {
            register::answer(state, &route.event, Some(event), &request, payload).await
        }
        // Boxed (see `route_to_owner`): joins are rarer than registrations and must not make
        // this future larger.
        Submitted::QueueJoin => {
            Box::pin(join_queue::answer(state, &route.event, Some(event), &request, payload)).await
        }
    };
    // An error becomes its problem document, as actix turns a handler's.
    let response = answer.unwrap_or_else(HttpResponse::from_error);
    Ok(ServiceResponse::new(request, response))
}

/// `GET /v1/queue/{ticket_id}` of an event that runs here. The ticket id is the path's last
/// segment percent-decoded, as the router's `Path` reads it; one that does not decode to UTF-8
/// (which no ticket id does) is left to the router and its handler, which answer it as they
/// answer any unknown ticket.
async fn read_ticket_here(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &AppState,
    route: &OwnedRoute,
    event: EventHandle,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let segment = request.path().strip_prefix(TICKET_PATH_PREFIX).and_then(percent_decoded);
    let Some(ticket_id) = segment else {
        request.extensions_mut().insert(LocatedHere(event));
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    label_route(&request, route.pattern);
    let answer = read_ticket::answer(state, request.request(), &ticket_id, Some(event)).await;
    // An error becomes its problem document, as actix turns a handler's.
    let response = answer.unwrap_or_else(HttpResponse::from_error);
    // The id borrows the request's path.
    drop(ticket_id);
    Ok(ServiceResponse::new(request.into_parts().0, response))
}

/// A 503 `overloaded` for a moment of changing ownership.
fn moving(reason: &'static str) -> ApiError {
    ::metrics::counter!(metrics::SHED, "reason" => reason).increment(1);
    ApiError::overloaded(reason, OWNER_MOVING_RETRY_AFTER_SECONDS)
}

/// A stream is long-lived: the client is sent to the owner instead of being relayed through
/// this node.
fn redirect(owner: &Owner, request: &actix_web::HttpRequest) -> HttpResponse {
    let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
    let location = format!("{}{target}", owner.url.trim_end_matches('/'));
    HttpResponse::TemporaryRedirect().insert_header((header::LOCATION, location)).finish()
}

/// Where a forwarded request ended.
enum Routed {
    /// An answer for the client: the owner's relayed, or a 503.
    Answered(HttpResponse),
    /// A fresh look found the event running here after all; the body is the request's.
    OwnedHere(EventHandle, web::Bytes),
}

/// Why a forward gave no answer to relay.
enum NotForwarded {
    /// The owner's breaker is open: nothing was sent, and nothing is learned about ownership.
    PeerFailing,
    /// The owner certainly did nothing: it could not be reached, or said it is not the owner.
    NothingDone(&'static str),
    /// The owner may have received the request but gave no usable answer in time.
    NoAnswer,
}

/// Forwards to `owner`. When that fails, the remembered owner is forgotten; and when the owner
/// certainly did nothing and was remembered (so the lease service was not asked for this
/// request), the owner is looked up afresh once: a handover (a graceful shutdown, a lost
/// lease) is then followed at once instead of answering 503.
async fn forward_with_one_fresh_look(
    state: &AppState,
    route: &OwnedRoute,
    mut owner: Owner,
    request: &actix_web::HttpRequest,
    mut payload: Payload,
) -> Routed {
    // Up to the same limit the handlers apply (413 beyond it).
    let body = match read_bounded(&mut payload, 0, state.settings.body_limit_bytes).await {
        Ok(body) => body,
        Err(error) => return Routed::Answered(error.error_response()),
    };
    // While the owner fails to answer, its remembered entry is read again from the lease at
    // least every `FAILING_OWNER_ENTRY_MS_MAX`: its lease runs out, and the event is then taken
    // over at once instead of waiting for the entry to expire.
    let failing =
        PeerAddress::parse(&owner.url).is_some_and(|peer| state.cluster.forwarder().is_failing(&peer));
    let recheck = Duration::from_millis(FAILING_OWNER_ENTRY_MS_MAX);
    if failing && state.cluster.owners().forget_older_than(&route.event, &owner.node_id, recheck) {
        match state.events.registry.locate(&route.event).await {
            Ok(Located::Here(event)) => return Routed::OwnedHere(event, body),
            Ok(Located::Elsewhere(fresh)) if fresh.node_id != state.cluster.node_id() => owner = fresh,
            _ => {
                return Routed::Answered(
                    moving("the event's owner is not answering; retry").error_response(),
                );
            }
        }
    }
    let mut fresh_look_taken = false;
    loop {
        let failure = match forward_to(state, &owner, request, &body).await {
            Ok(response) => return Routed::Answered(response),
            Err(failure) => failure,
        };
        let reason = match failure {
            NotForwarded::PeerFailing => {
                return Routed::Answered(
                    moving("the event's owner is not answering; retry").error_response(),
                );
            }
            NotForwarded::NoAnswer => {
                state.cluster.owners().forget(&route.event, &owner.node_id);
                return Routed::Answered(moving("the event's owner did not answer; retry").error_response());
            }
            NotForwarded::NothingDone(reason) => reason,
        };
        let remembered = state.cluster.owners().forget(&route.event, &owner.node_id);
        if !remembered || fresh_look_taken {
            return Routed::Answered(moving(reason).error_response());
        }
        fresh_look_taken = true;
        match state.events.registry.locate(&route.event).await {
            Ok(Located::Here(event)) => return Routed::OwnedHere(event, body),
            Ok(Located::Elsewhere(fresh)) if fresh != owner && fresh.node_id != state.cluster.node_id() => {
                owner = fresh;
            }
            Ok(Located::Elsewhere(same)) => {
                // The lease still names the owner that just failed: not worth remembering.
                state.cluster.owners().forget(&route.event, &same.node_id);
                return Routed::Answered(moving(reason).error_response());
            }
            Ok(Located::Missing) | Err(_) => return Routed::Answered(moving(reason).error_response()),
        }
    }
}

async fn forward_to(
    state: &AppState,
    owner: &Owner,
    request: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<HttpResponse, NotForwarded> {
    let Some(peer) = PeerAddress::parse(&owner.url) else {
        tracing::error!(owner = %owner.node_id, url = %owner.url, "the owner advertises an unusable URL");
        return Err(NotForwarded::NothingDone("the event's owner cannot be reached; retry"));
    };
    let client_chain = client_chain(request);
    let mut headers: Vec<(&str, &[u8])> = FORWARDED_REQUEST_HEADERS
        .iter()
        .filter_map(|name| request.headers().get(*name).map(|value| (*name, value.as_bytes())))
        .collect();
    headers.push(("x-forwarded-for", client_chain.as_bytes()));
    headers.push((FORWARDED_BY, state.cluster.node_id().as_bytes()));
    headers.push((FORWARD_TOKEN, state.cluster.forward_token().as_bytes()));
    let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
    let outgoing = Outgoing { method: request.method().as_str(), target, headers, body };
    let started = std::time::Instant::now();
    let answer = match state.cluster.forwarder().send(&peer, &outgoing).await {
        Ok(answer) => answer,
        Err(ForwardError::PeerFailing) => return Err(NotForwarded::PeerFailing),
        Err(error) => {
            tracing::warn!(owner = %owner.node_id, %error, "forwarding failed");
            return Err(if error.nothing_sent() {
                NotForwarded::NothingDone("the event's owner did not answer; retry")
            } else {
                NotForwarded::NoAnswer
            });
        }
    };
    ::metrics::histogram!(metrics::FORWARD_DURATION).record(started.elapsed().as_secs_f64());
    if answer.status == 503 && answer.header(NOT_OWNER).is_some() {
        tracing::info!(owner = %owner.node_id, "the remembered owner is not the owner any more");
        return Err(NotForwarded::NothingDone("the event's owner is changing; retry"));
    }
    relay(owner, answer).map_err(|error| {
        tracing::warn!(owner = %owner.node_id, %error, "the owner's answer cannot be relayed");
        NotForwarded::NoAnswer
    })
}

/// The owner's answer, as this node's.
fn relay(owner: &Owner, answer: forward::Answer) -> Result<HttpResponse, ApiError> {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the owner answered status {}", answer.status)))?;
    let mut response = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if HOP_BY_HOP_ANSWER_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_bytes(value)) {
            response.append_header((name, value));
        }
    }
    if let Ok(value) = HeaderValue::from_str(&owner.node_id) {
        response.insert_header((OWNER, value));
    }
    Ok(response.body(answer.body))
}

/// `X-Forwarded-For` for the owner: what this node received, then the peer it received it from,
/// so that the owner can find the client exactly as this node would have.
fn client_chain(request: &actix_web::HttpRequest) -> String {
    let received = request.headers().get("x-forwarded-for").and_then(|value| value.to_str().ok());
    let peer = request.peer_addr().map(|address| address.ip().to_string()).unwrap_or_default();
    match received.map(str::trim).filter(|chain| !chain.is_empty()) {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer,
    }
}

/// The client of a forwarded request: the last hop of its `X-Forwarded-For` is the peer the
/// forwarding node saw, the hops before it what that peer claimed; `client_ip` then decides as
/// the forwarding node would have.
fn forwarded_client_ip(headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let chain = headers.get("x-forwarded-for")?.to_str().ok()?;
    let (before, last) = match chain.rsplit_once(',') {
        Some((before, last)) => (Some(before), last),
        None => (None, chain),
    };
    let peer = last.trim().parse::<IpAddr>().ok()?;
    client_ip(Some(peer), before, trusted_proxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Option<(String, bool)> {
        owned_route(method, path).map(|route| (route.event.to_string(), route.stream))
    }

    #[test]
    fn routes_that_reach_an_actor_name_their_event() {
        assert_eq!(route("POST", "/v1/events/race/registrations"), Some(("race".into(), false)));
        assert_eq!(route("GET", "/v1/events/race"), Some(("race".into(), false)));
        assert_eq!(route("PATCH", "/v1/events/race/categories/10K"), Some(("race".into(), false)));
        assert_eq!(route("GET", "/v1/events/race/stream"), Some(("race".into(), true)));
        assert_eq!(route("GET", "/v1/queue/race.q7/stream"), Some(("race".into(), true)));
        assert_eq!(route("GET", "/v1/queue/race.q7"), Some(("race".into(), false)));
        assert_eq!(route("DELETE", "/v1/registrations/race.17"), Some(("race".into(), false)));
        assert_eq!(route("POST", "/v1/registrations/city.race.3/confirm"), None, "not an event id");
        assert_eq!(route("POST", "/v1/registrations/race.3/confirm"), Some(("race".into(), false)));
    }

    #[test]
    fn registrations_queue_joins_and_ticket_reads_are_answered_by_their_use_case() {
        let use_case = |method: &str, path: &str| owned_route(method, path).and_then(|route| route.use_case);
        assert_eq!(
            use_case("POST", "/v1/events/race/registrations"),
            Some(UseCase::Submitted(Submitted::Registration))
        );
        assert_eq!(use_case("POST", "/v1/events/race/queue"), Some(UseCase::Submitted(Submitted::QueueJoin)));
        assert_eq!(use_case("GET", "/v1/queue/race.q7"), Some(UseCase::TicketRead));
        assert_eq!(use_case("GET", "/v1/queue/race.q7/stream"), None);
        assert_eq!(use_case("GET", "/v1/events/race/registrations"), None);
        assert_eq!(use_case("POST", "/v1/events/race/registrations/"), None);
        assert_eq!(use_case("POST", "/v1/events/race/registrations/a/b"), None);
        assert_eq!(use_case("POST", "/v1/registrations/race.3/confirm"), None);
        assert_eq!(use_case("GET", "/v1/events/race/queue/draw"), None);
    }

    /// The registration route's shortcut finds what splitting the path finds, and nothing else.
    #[test]
    fn registration_paths_are_found_as_the_segments_find_them() {
        let found =
            |path: &str| owned_route("POST", path).map(|route| (route.event.to_string(), route.use_case));
        let registration = Some(UseCase::Submitted(Submitted::Registration));
        assert_eq!(found("/v1/events/race/registrations"), Some(("race".into(), registration)));
        assert_eq!(found("/v1/events/r%61ce/registrations"), Some(("race".into(), registration)));
        for path in [
            "/v1/events//registrations",
            "/v1/events/registrations",
            "/v1/events/a/b/registrations",
            "/v1/events/ra%2Fce/registrations",
            "/v1/events/race/registrations/",
            "/v1/events/race/registrationsx",
            "/v2/events/race/registrations",
        ] {
            assert_eq!(found(path), None, "{path}");
        }
        assert_eq!(owned_route("GET", "/v1/events/race/registrations"), None);
        assert_eq!(
            found("/v1/events/race/queue").and_then(|(_, use_case)| use_case),
            Some(UseCase::Submitted(Submitted::QueueJoin))
        );
    }

    #[test]
    fn percent_encoded_segments_name_the_event_the_router_would() {
        assert_eq!(route("POST", "/v1/events/r%61ce/registrations"), Some(("race".into(), false)));
        assert_eq!(route("GET", "/v1/events/%72%61%63%65"), Some(("race".into(), false)));
        assert_eq!(route("DELETE", "/v1/registrations/r%61ce.17"), Some(("race".into(), false)));
        // Not an event id once decoded, or not decodable: left to the router, which answers 404.
        assert_eq!(route("GET", "/v1/events/ra%2Fce"), None);
        assert_eq!(route("GET", "/v1/events/ra%zzce"), None);
        assert_eq!(route("GET", "/v1/events/ra%ffce"), None);
        assert_eq!(percent_decoded("race").map(|text| matches!(text, Cow::Borrowed(_))), Some(true));
    }

    #[test]
    fn routes_answered_here_are_labelled_with_their_resource_pattern() {
        let pattern = |method: &str, path: &str| owned_route(method, path).map(|route| route.pattern);
        assert_eq!(pattern("POST", "/v1/events/race/registrations"), Some(REGISTRATIONS_PATTERN));
        assert_eq!(pattern("GET", "/v1/events/race"), Some("/v1/events/{event_id}"));
        assert_eq!(
            pattern("PATCH", "/v1/events/race/categories/10K"),
            Some("/v1/events/{event_id}/categories/{code}")
        );
        assert_eq!(pattern("GET", "/v1/events/race/stream"), Some("/v1/events/{event_id}/stream"));
        assert_eq!(
            pattern("DELETE", "/v1/registrations/race.1"),
            Some("/v1/registrations/{registration_id}")
        );
        assert_eq!(
            pattern("POST", "/v1/registrations/race.1/confirm"),
            Some("/v1/registrations/{registration_id}/confirm")
        );
    }

    #[test]
    fn routes_served_from_the_store_stay_local() {
        assert_eq!(route("GET", "/v1/events/race/registrations"), None);
        assert_eq!(route("GET", "/v1/events/race/audit"), None);
        assert_eq!(route("POST", "/v1/events"), None);
        assert_eq!(route("GET", "/healthz"), None);
    }

    #[test]
    fn the_owner_finds_the_client_the_forwarding_node_saw() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("203.0.113.9"));
        assert_eq!(forwarded_client_ip(&headers, &[]), "203.0.113.9".parse().ok());
        // Behind a trusted proxy the forwarding node believed the proxy's hop; so does the owner.
        let chain = HeaderValue::from_static("198.51.100.4, 10.0.0.1");
        headers.insert(HeaderName::from_static("x-forwarded-for"), chain);
        assert_eq!(forwarded_client_ip(&headers, &[proxy]), "198.51.100.4".parse().ok());
        // Not behind one, what the client claimed counts for nothing.
        assert_eq!(forwarded_client_ip(&headers, &[]), Some(proxy));
    }
}
