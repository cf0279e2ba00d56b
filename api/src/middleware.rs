//! The app-wide request middlewares (the request span and the request metrics) and `resource`,
//! which builds a resource that carries its route label.
//!
//! Neither middleware matches the path again. actix-web's `match_pattern()` runs the router's
//! regular expressions a second time and allocates the pattern on every request: with
//! tracing-actix-web's root span, which did the same once more and drew a UUID, that was a
//! quarter of the CPU of a sold-out answer (docs/benchmarks.md, "What limits Kuota now"). A
//! resource built with `resource` puts its pattern, a `&'static str`, in the request's
//! extensions instead; only requests that no such resource answered (the OpenAPI document,
//! Swagger UI, 404s) fall back to `match_pattern()`, and those are rare.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{Error, HttpMessage, Resource, web};
use futures_util::FutureExt;
use futures_util::future::Either;
use kuota_persist::random;
use metrics::{Counter, Histogram};
use tracing::Instrument;

use crate::metrics::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// The route label of requests that no resource matched.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The pattern of the resource that answered a request, for its metrics.
#[derive(Clone, Copy, Debug)]
struct RouteLabel(&'static str);

/// The registration resource's pattern: its route (`routes::registrations`), and the route label
/// of its metrics.
pub const REGISTRATIONS_PATTERN: &str = "/v1/events/{event_id}/registrations";

/// The event's segment of a registration's path, `/v1/events/{event_id}/registrations`, found by
/// its prefix and suffix in the path as sent (one segment, not empty: a path the resource's
/// pattern matches), without splitting the path into segments or running the router's
/// expressions. A path that spells its fixed parts with percent escapes is not found here.
pub fn registration_event_segment(path: &str) -> Option<&str> {
    let event = path.strip_prefix("/v1/events/")?.strip_suffix("/registrations")?;
    (!event.is_empty() && !event.contains('/')).then_some(event)
}

/// `web::resource(pattern)` that labels its requests' metrics with `pattern`, exactly the label
/// `match_pattern()` would give, without matching the path a second time.
pub fn resource(
    pattern: &'static str,
) -> Resource<
    impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse, Error = Error, InitError = ()>,
> {
    // A resource's middleware wraps all its routes, those added after `wrap_fn` too, and its
    // 405 answer for other methods, which `match_pattern()` labels with the pattern as well.
    web::resource(pattern).wrap_fn(move |request, service| {
        label_route(&request, pattern);
        service.call(request)
    })
}

/// Labels the request's metrics with `pattern`, as a resource built by `resource` does: for
/// answers given before the router, by the owner-routing layer (`owner_routing`), which answers
/// registrations and queue joins through their use case.
pub fn label_route(request: &impl HttpMessage, pattern: &'static str) {
    request.extensions_mut().insert(RouteLabel(pattern));
}

/// The pattern of the resource that matched `request` (`resource`, `label_route`), if any.
pub fn route_label(request: &impl HttpMessage) -> Option<&'static str> {
    request.extensions().get::<RouteLabel>().map(|label| label.0)
}

/// A request's target as the log shows it: the value of an `access_token` query parameter (a
/// ticket stream's credential, which a browser's `EventSource` can only send in the URL) is
/// left out.
struct LoggedTarget<'a>(&'a actix_web::http::Uri);

impl std::fmt::Display for LoggedTarget<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0.path())?;
        let Some(query) = self.0.query() else { return Ok(()) };
        for (index, pair) in query.split('&').enumerate() {
            formatter.write_str(if index == 0 { "?" } else { "&" })?;
            match pair.split_once('=') {
                Some(("access_token", _)) => formatter.write_str("access_token=(redacted)")?,
                _ => formatter.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// Runs the request inside its span, `HTTP request`, which every log line of the request
/// carries, with a request id. The span's fields (and the id) are computed only when the span
/// is enabled: `info_span!` evaluates them lazily, so under `RUST_LOG=warn` a request pays for
/// none of it.
pub fn in_request_span<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    let span = tracing::info_span!(
        "HTTP request",
        http.method = %request.method(),
        http.target = %LoggedTarget(request.uri()),
        request_id = %RequestId::next(),
        http.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        // Entering, cloning and recording into a disabled span does nothing: the request runs
        // without the wrappers.
        return Either::Left(service.call(request));
    }
    let future = span.in_scope(|| service.call(request));
    let finished = span.clone();
    Either::Right(future.instrument(span).map(move |result| {
        if let Ok(response) = &result {
            finished.record("http.status_code", response.status().as_u16());
        }
        result
    }))
}

/// Counts the request and records its duration in `kuota_http_requests_total` and
/// `kuota_http_request_duration_seconds`, labelled by route, method and status.
pub fn record_metrics<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    let started = Instant::now();
    service.call(request).map(move |result| {
        if let Ok(response) = &result {
            record(response, started.elapsed().as_secs_f64());
        }
        result
    })
}

fn record<B>(response: &ServiceResponse<B>, seconds: f64) {
    let request = response.request();
    // A registration answered before the router (`owner_routing`), nearly every request of a
    // sale, carries no label: found by its path, it needs none. A label is an entry in the
    // request's extensions, whose table is allocated for it and freed with the request: about 500
    // instructions per request (callgrind), against a few to compare the path's ends.
    let route = request.extensions().get::<RouteLabel>().map(|label| label.0).or_else(|| {
        (*request.method() == Method::POST && registration_event_segment(request.path()).is_some())
            .then_some(REGISTRATIONS_PATTERN)
    });
    let status = response.status().as_u16();
    if let (Some(route), Some(method)) = (route, standard_method(request.method())) {
        SERIES.with_borrow_mut(|series| {
            let key = SeriesKey { route: SeriesKey::text(route), method: SeriesKey::text(method), status };
            let series = series.entry(key).or_insert_with(|| Series::new(route, method, status));
            series.requests.increment(1);
            series.duration.record(seconds);
        });
        return;
    }
    let route = request.match_pattern().unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    let labels = [("route", route), ("method", request.method().to_string()), ("status", status.to_string())];
    ::metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    ::metrics::histogram!(HTTP_REQUEST_DURATION, &labels).record(seconds);
}

/// The handles of one (route, method, status) series. Looking a series up through the
/// `counter!` macro builds its key (a label vector) and hashes it in the recorder's registry on
/// every request; a handle is the registered atomic itself.
#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

impl Series {
    fn new(route: &'static str, method: &'static str, status: u16) -> Self {
        let labels =
            [("route", route.to_string()), ("method", method.to_string()), ("status", status.to_string())];
        Series {
            requests: ::metrics::counter!(HTTP_REQUESTS, &labels),
            duration: ::metrics::histogram!(HTTP_REQUEST_DURATION, &labels),
        }
    }
}

/// A series as its cache finds it: the address and length of its route and method names (each
/// a `&'static str`, so they name one text for the process's life, even where the compiler lets
/// a shorter text share a longer one's start) and its status. Hashing them costs a few
/// instructions where hashing the texts with SipHash cost several hundred per request. Two equal
/// texts at two addresses are two entries with the same handles, which is harmless: the
/// recorder gives one series one atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    route: (usize, usize),
    method: (usize, usize),
    status: u16,
}

impl SeriesKey {
    fn text(text: &'static str) -> (usize, usize) {
        (text.as_ptr() as usize, text.len())
    }
}

/// Hashes a `SeriesKey` by multiplying and rotating its words (as FxHash does): its fields are
/// addresses and a status chosen by the code, not by a client, so a keyed hash buys nothing.
#[derive(Clone, Copy, Debug, Default)]
struct SeriesKeyHasher(u64);

impl std::hash::Hasher for SeriesKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u16(&mut self, word: u16) {
        self.write_u64(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

thread_local! {
    /// Each worker thread's series handles. Bounded without a limit of its own: routes are the
    /// resources' patterns, methods the nine standard ones (others are not cached) and statuses
    /// three digits.
    static SERIES: RefCell<HashMap<SeriesKey, Series, BuildHasherDefault<SeriesKeyHasher>>> =
        RefCell::new(HashMap::default());
}

/// The name of a standard method as a `&'static str`; `None` for an extension method, which a
/// client chooses freely and which therefore must not grow the per-thread cache.
fn standard_method(method: &Method) -> Option<&'static str> {
    const STANDARD_METHODS: [&str; 9] =
        ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT", "PATCH", "TRACE"];
    STANDARD_METHODS.into_iter().find(|name| *name == method.as_str())
}

/// A request's id in the logs: a prefix drawn at random once per process, so that the ids of
/// two processes (or of a restart) differ, then a sequence number, so that ids never repeat
/// within the process. Cheaper than a UUID per request, and drawn only when a span logs it.
#[derive(Debug)]
struct RequestId {
    prefix: u64,
    sequence: u64,
}

impl RequestId {
    fn next() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| u64::from_be_bytes(random::random_bytes()));
        RequestId { prefix, sequence: SEQUENCE.fetch_add(1, Ordering::Relaxed) }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}-{}", self.prefix, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_leaves_out_an_access_token_in_the_query_and_keeps_the_rest() {
        let shown = |target: &str| LoggedTarget(&target.parse().unwrap()).to_string();
        assert_eq!(
            shown("/v1/queue/race.q1/stream?access_token=secret&x=1"),
            "/v1/queue/race.q1/stream?access_token=(redacted)&x=1"
        );
        assert_eq!(shown("/v1/events/race/registrations?limit=2"), "/v1/events/race/registrations?limit=2");
        assert_eq!(shown("/healthz"), "/healthz");
    }

    #[test]
    fn request_ids_share_the_process_prefix_and_never_repeat() {
        let (first, second) = (RequestId::next(), RequestId::next());
        assert_eq!(first.prefix, second.prefix);
        assert!(second.sequence > first.sequence);
        assert_ne!(first.to_string(), second.to_string());
    }

    /// The cache's key tells apart every (route, method, status) whose texts differ, a route
    /// that starts another one included, and finds a series again by the same names.
    #[test]
    fn a_series_key_tells_routes_methods_and_statuses_apart() {
        let routes = ["/v1/events/{event_id}", "/v1/events/{event_id}/stream", "/v1/events"];
        let methods = ["GET", "POST"];
        let mut cache: HashMap<SeriesKey, usize, BuildHasherDefault<SeriesKeyHasher>> = HashMap::default();
        let key = |route: &'static str, method: &'static str, status: u16| SeriesKey {
            route: SeriesKey::text(route),
            method: SeriesKey::text(method),
            status,
        };
        for route in routes {
            for method in methods {
                for status in [200, 201, 409] {
                    let next = cache.len();
                    assert_eq!(*cache.entry(key(route, method, status)).or_insert(next), next);
                }
            }
        }
        assert_eq!(cache.len(), routes.len() * methods.len() * 3);
        assert_eq!(cache[&key(routes[1], methods[1], 409)], (2 + 1) * 3 + 2, "found again");
    }

    /// Wherever the ends of a path find a registration, the resource's pattern matches it; and
    /// they find one wherever the pattern matches a path without percent escapes.
    #[test]
    fn a_registration_path_is_found_where_its_resource_pattern_matches() {
        let resource = actix_web::dev::ResourceDef::new(REGISTRATIONS_PATTERN);
        for path in [
            "/v1/events/race/registrations",
            "/v1/events/r.a-c_e~!$&'()*+,;=:@/registrations",
            "/v1/events//registrations",
            "/v1/events/registrations",
            "/v1/events/a/b/registrations",
            "/v1/events/race/registrations/",
            "/v1/events/race/registrationsx",
            "/v1/events/race/xregistrations",
            "/v2/events/race/registrations",
            "/v1/events/race",
            "/v1/events/race/queue",
            "//v1/events/race/registrations",
        ] {
            assert_eq!(registration_event_segment(path).is_some(), resource.is_match(path), "{path}");
        }
        assert_eq!(registration_event_segment("/v1/events/race/registrations"), Some("race"));
        assert_eq!(registration_event_segment("/v1/events/ra%2Fce/registrations"), Some("ra%2Fce"));
        assert!(resource.is_match("/v1/events/ra%2Fce/registrations"));
    }

    #[test]
    fn only_standard_methods_get_a_static_name() {
        assert_eq!(standard_method(&Method::PATCH), Some("PATCH"));
        assert_eq!(standard_method(&Method::from_bytes(b"PURGE").unwrap()), None);
    }
}
