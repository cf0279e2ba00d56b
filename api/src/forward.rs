//! The small HTTP/1.1 client that forwards a request to the node owning its event: kept-alive
//! connections per peer, every exchange under one named deadline, exactly one answer read per
//! request (by `Content-Length` or chunks) up to a named size, and a breaker per peer that stops
//! sending to a peer that did not answer until a probe finds it answering again.
//!
//! *Decision:* not `awc`. With `default-features = false` it still brings h2, a second `http`
//! crate, actix-tls, rand and sha1 (see docs/operations.md, "Several nodes"), for a job that is
//! one request line, a few headers and a body, towards a peer we wrote ourselves and that always
//! answers with `Content-Length` or chunks.
//!
//! # Bounds
//! - The peers remembered (`PEERS_MAX`), the idle connections kept per peer
//!   (`PEER_IDLE_CONNECTIONS_MAX`) and how long one is kept idle (`PEER_CONNECTION_IDLE_MS_MAX`).
//! - One exchange, connecting included, takes at most `FORWARD_ANSWER_TIMEOUT_MS`.
//! - A peer that failed is not sent anything for `PEER_COOL_DOWN_MS`; then one request probes it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long connecting to the owner may take, in ms: a live peer on the same network accepts
/// in well under a millisecond, and a lost SYN is only sent again after a second, past the
/// answer's deadline anyway; waiting longer only keeps the client waiting for a dead peer.
pub const FORWARD_CONNECT_TIMEOUT_MS: u64 = 250;

/// How long one forwarded exchange may take in all (connecting, a retry on a fresh connection,
/// sending, the answer), in ms.
///
/// *Why 900:* a forwarded request must be answered within 1 s (API.md, "Liveness"); 100 ms are
/// left for reading the client's body, relaying the answer and scheduling. A healthy owner
/// answers far sooner: it decides in microseconds and commits in milliseconds, so an owner
/// silent for 900 ms is stuck (frozen, or its store stalled), and waiting for its own 2 s
/// request deadline would break the 1 s bound. The owner is not told this deadline: a
/// registration it commits after the forwarder gave up is safe, because the 503 promises
/// nothing about the outcome and the client's retry with the same Idempotency-Key finds it
/// (409 `idempotency_key_in_flight`, then the 201 replayed), exactly as after the owner's own
/// deadline.
pub const FORWARD_ANSWER_TIMEOUT_MS: u64 = 900;

/// The largest answer relayed, head and body, in bytes. Kuota's answers are small JSON
/// documents; a larger one is a fault, not something to buffer.
pub const FORWARD_ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// Idle connections kept per peer, across all HTTP workers. At tens of thousands of forwarded
/// requests per second with millisecond answers, a few dozen are in use at once; more idle
/// ones would only hold the peer's sockets.
pub const PEER_IDLE_CONNECTIONS_MAX: usize = 32;

/// How long an idle connection is kept, in ms: well below actix-web's keep-alive (5 s), so that
/// a connection is seldom reused just as the peer closes it.
pub const PEER_CONNECTION_IDLE_MS_MAX: u64 = 2_000;

/// Peers remembered (their idle connections and breaker). A deployment has a handful of nodes;
/// the bound only keeps a stream of changing peer addresses from growing the map.
pub const PEERS_MAX: usize = 256;

/// How long a peer that failed to answer is not sent anything, in ms, before one request probes
/// it. Short against the lease TTL (≥ 2 s by default's reckoning): a peer that was only slow
/// for a moment is back within the client's first retry (`Retry-After: 1`), and a frozen one
/// costs one probe's wait per cool-down, not every request's.
pub const PEER_COOL_DOWN_MS: u64 = 500;

/// Where a peer listens, from its advertised `http://host:port` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub host: String,
    pub port: u16,
}

impl PeerAddress {
    /// `None` unless `url` is `http://host:port` (an optional trailing `/`); peers speak plain
    /// HTTP on the internal network.
    pub fn parse(url: &str) -> Option<PeerAddress> {
        let authority = url.strip_prefix("http://")?.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || authority.contains('/') {
            return None;
        }
        Some(PeerAddress { host: host.to_owned(), port: port.parse().ok()? })
    }
}

/// A request to send: the request line's parts, headers (each once), and the body.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query, as received.
    pub target: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
}

/// The owner's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, wanted: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.as_slice())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing was sent: the peer failed to answer recently, and its cool-down is not over.
    #[error("the owner failed to answer recently; not tried again for up to {PEER_COOL_DOWN_MS} ms")]
    PeerFailing,
    /// Nothing was sent: the owner could not be reached in time.
    #[error("the owner could not be reached: {0}")]
    Unreachable(String),
    /// The request may have been received, but no complete answer came in time.
    #[error("the owner did not answer: {0}")]
    NoAnswer(String),
    /// The answer was not HTTP, or too large.
    #[error("the owner's answer is unusable: {0}")]
    BadAnswer(String),
}

impl ForwardError {
    /// Whether the owner certainly never received the request.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, ForwardError::PeerFailing | ForwardError::Unreachable(_))
    }
}

/// Sends forwarded requests; one per node, shared by its HTTP workers. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct Forwarder {
    peers: Mutex<HashMap<PeerAddress, Peer>>,
}

#[derive(Debug)]
struct Peer {
    idle: Vec<IdleConnection>,
    health: Health,
    last_used: Instant,
}

/// An idle kept-alive connection. It is only taken again by the HTTP worker thread that opened
/// it: each actix worker runs its own runtime, and a socket stays registered with the reactor
/// of the runtime that created it.
#[derive(Debug)]
struct IdleConnection {
    stream: TcpStream,
    thread: ThreadId,
    since: Instant,
}

/// The breaker of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Sent to freely.
    Answering,
    /// Failed to answer; nothing is sent to it before `retry_at`.
    Failing { retry_at: Instant },
    /// One request, the probe, is on its way; the others are refused until it answers, or
    /// until `until` (the probe's own deadline, past which it was dropped without a verdict).
    Probing { until: Instant },
}

/// Whether a request may be sent to a peer now.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Send,
    Refuse,
}

impl Health {
    fn admit(&mut self, now: Instant) -> Admission {
        match *self {
            Health::Answering => Admission::Send,
            Health::Failing { retry_at } | Health::Probing { until: retry_at } if now < retry_at => {
                Admission::Refuse
            }
            Health::Failing { .. } | Health::Probing { .. } => {
                // The probe's deadline is the exchange's, and a little more: a probe whose
                // request was dropped (its client left) must not keep the peer refused for ever.
                let until = now + Duration::from_millis(FORWARD_ANSWER_TIMEOUT_MS + PEER_COOL_DOWN_MS);
                *self = Health::Probing { until };
                Admission::Send
            }
        }
    }

    /// Any answer shows the peer answering, a probe's or one sent before it failed.
    fn answered(&mut self) {
        *self = Health::Answering;
    }

    fn failed(&mut self, now: Instant) {
        *self = Health::Failing { retry_at: now + Duration::from_millis(PEER_COOL_DOWN_MS) };
    }
}

impl Forwarder {
    pub fn new() -> Forwarder {
        Forwarder::default()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerAddress, Peer>> {
        // Every critical section is a few map and vector operations; none can panic half-way.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` to `peer` and reads its answer, within `FORWARD_ANSWER_TIMEOUT_MS`;
    /// refused at once (`PeerFailing`) while the peer's breaker is open.
    pub async fn send(&self, peer: &PeerAddress, request: &Outgoing<'_>) -> Result<Answer, ForwardError> {
        let idle = self.begin(peer, Instant::now())?;
        let deadline = Instant::now() + Duration::from_millis(FORWARD_ANSWER_TIMEOUT_MS);
        let exchanged = tokio::time::timeout_at(deadline, self.exchange(peer, request, idle)).await;
        let result = exchanged.unwrap_or_else(|_| {
            Err(ForwardError::NoAnswer(format!("no answer within {FORWARD_ANSWER_TIMEOUT_MS} ms")))
        });
        let mut peers = self.peers();
        if let Some(state) = peers.get_mut(peer) {
            match &result {
                Ok(_) => state.health.answered(),
                Err(_) => {
                    state.health.failed(Instant::now());
                    // Connections to a peer that did not answer would only fail the same way.
                    state.idle.clear();
                }
            }
        }
        result
    }

    /// Whether `peer` failed to answer and has not answered since (its breaker is open, or a
    /// probe is on its way).
    pub fn is_failing(&self, peer: &PeerAddress) -> bool {
        self.peers().get(peer).is_some_and(|state| state.health != Health::Answering)
    }

    /// Admits the request by the peer's breaker and takes an idle connection of this thread
    /// that is young enough and not closed by the peer meanwhile, if there is one.
    fn begin(&self, peer: &PeerAddress, now: Instant) -> Result<Option<TcpStream>, ForwardError> {
        let mut peers = self.peers();
        if !peers.contains_key(peer) {
            if peers.len() >= PEERS_MAX {
                evict_one(&mut peers);
            }
            let state = Peer { idle: Vec::new(), health: Health::Answering, last_used: now };
            peers.insert(peer.clone(), state);
        }
        // Inserted just above when it was missing, under the same lock.
        let state = peers.get_mut(peer).expect("the peer is in the map");
        state.last_used = now;
        if state.health.admit(now) == Admission::Refuse {
            return Err(ForwardError::PeerFailing);
        }
        let thread = std::thread::current().id();
        let idle_max = Duration::from_millis(PEER_CONNECTION_IDLE_MS_MAX);
        state.idle.retain(|connection| now.duration_since(connection.since) < idle_max);
        // The most recently used first: the others age out.
        while let Some(position) = state.idle.iter().rposition(|connection| connection.thread == thread) {
            let connection = state.idle.swap_remove(position);
            if still_open(&connection.stream) {
                return Ok(Some(connection.stream));
            }
        }
        Ok(None)
    }

    fn keep(&self, peer: &PeerAddress, stream: TcpStream) {
        let mut peers = self.peers();
        let Some(state) = peers.get_mut(peer) else { return };
        if state.idle.len() < PEER_IDLE_CONNECTIONS_MAX {
            let thread = std::thread::current().id();
            state.idle.push(IdleConnection { stream, thread, since: Instant::now() });
        }
    }

    /// One request, one answer: on `idle` if given, and once more on a fresh connection if the
    /// peer had closed `idle` before reading the request (see `Exchange::Stale`).
    async fn exchange(
        &self,
        peer: &PeerAddress,
        request: &Outgoing<'_>,
        idle: Option<TcpStream>,
    ) -> Result<Answer, ForwardError> {
        let raw = encode(peer, request);
        if let Some(mut stream) = idle {
            match round_trip(&mut stream, &raw).await {
                Ok(Framed { answer, reusable }) => {
                    if reusable {
                        self.keep(peer, stream);
                    }
                    return Ok(answer);
                }
                Err(Exchange::Stale(error)) => {
                    tracing::debug!(%error, "a kept-alive connection was closed by the peer; retrying on a new one");
                }
                Err(Exchange::Failed(error)) => return Err(error),
            }
        }
        let mut stream = connect(peer).await?;
        match round_trip(&mut stream, &raw).await {
            Ok(Framed { answer, reusable }) => {
                if reusable {
                    self.keep(peer, stream);
                }
                Ok(answer)
            }
            Err(Exchange::Stale(error) | Exchange::Failed(error)) => Err(error),
        }
    }
}

/// Makes room for one more peer: the one unused the longest among those answering (their
/// breaker holds nothing worth keeping), else the one unused the longest.
fn evict_one(peers: &mut HashMap<PeerAddress, Peer>) {
    let oldest = |answering: bool| {
        peers
            .iter()
            .filter(|(_, state)| !answering || state.health == Health::Answering)
            .min_by_key(|(_, state)| state.last_used)
            .map(|(address, _)| address.clone())
    };
    if let Some(address) = oldest(true).or_else(|| oldest(false)) {
        peers.remove(&address);
    }
}

/// Whether an idle connection is still usable: the peer neither closed it nor sent anything
/// unasked (either would show as readable).
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

async fn connect(peer: &PeerAddress) -> Result<TcpStream, ForwardError> {
    let connect = TcpStream::connect((peer.host.as_str(), peer.port));
    let stream = tokio::time::timeout(Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS), connect)
        .await
        .map_err(|_| {
            ForwardError::Unreachable(format!("no connection within {FORWARD_CONNECT_TIMEOUT_MS} ms"))
        })?
        .map_err(|error| ForwardError::Unreachable(error.to_string()))?;
    // Requests are small and answered at once: Nagle's delay would only add latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn encode(peer: &PeerAddress, request: &Outgoing<'_>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(512 + request.body.len());
    raw.extend_from_slice(format!("{} {} HTTP/1.1\r\n", request.method, request.target).as_bytes());
    raw.extend_from_slice(format!("Host: {}:{}\r\n", peer.host, peer.port).as_bytes());
    for (name, value) in &request.headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", request.body.len()).as_bytes());
    raw.extend_from_slice(request.body);
    raw
}

/// How an exchange on a connection failed.
enum Exchange {
    /// The peer had closed the connection before it read the request: writing failed, or the
    /// connection ended (closed or reset) before a single byte of an answer. A request on a
    /// kept-alive connection is then sent once more on a fresh one. (Should the peer have read
    /// it all the same, a registration is idempotent by its key.)
    Stale(ForwardError),
    /// Anything else: the connection is dropped and the request not sent again.
    Failed(ForwardError),
}

/// An answer read whole from a connection, and whether the connection may carry another.
#[derive(Debug)]
struct Framed {
    answer: Answer,
    reusable: bool,
}

/// Sends `raw` and reads exactly one answer, up to `FORWARD_ANSWER_BYTES_MAX`.
async fn round_trip(stream: &mut TcpStream, raw: &[u8]) -> Result<Framed, Exchange> {
    let no_answer = |error: std::io::Error| ForwardError::NoAnswer(error.to_string());
    stream.write_all(raw).await.map_err(|error| Exchange::Stale(no_answer(error)))?;
    let mut received = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(read) => read,
            Err(error) if received.is_empty() && error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(Exchange::Stale(no_answer(error)));
            }
            Err(error) => return Err(Exchange::Failed(no_answer(error))),
        };
        if read == 0 {
            if received.is_empty() {
                return Err(Exchange::Stale(ForwardError::NoAnswer("closed before answering".into())));
            }
            return match frame(&received, true).map_err(Exchange::Failed)? {
                Some(framed) => Ok(framed),
                None => Err(Exchange::Failed(ForwardError::NoAnswer("closed in mid-answer".into()))),
            };
        }
        if received.len() + read > FORWARD_ANSWER_BYTES_MAX {
            return Err(Exchange::Failed(bad(&format!("an answer over {FORWARD_ANSWER_BYTES_MAX} bytes"))));
        }
        received.extend_from_slice(&chunk[..read]);
        if let Some(framed) = frame(&received, false).map_err(Exchange::Failed)? {
            return Ok(framed);
        }
    }
}

fn bad(reason: &str) -> ForwardError {
    ForwardError::BadAnswer(reason.to_owned())
}

/// The answer in `raw` if it is complete (`None` if more is to come); `closed` says the peer
/// closed the connection after `raw`, which ends an answer framed by the close.
fn frame(raw: &[u8], closed: bool) -> Result<Option<Framed>, ForwardError> {
    let Some(head_end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        return if closed { Err(bad("no end of head")) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("a head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let version_one_one = status_line.starts_with("HTTP/1.1 ");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        // No interim answers: nothing forwarded asks for `100 Continue`.
        .filter(|code| (200..=599).contains(code))
        .ok_or_else(|| bad("no final status line"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("a header line without a colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().as_bytes().to_vec()));
    }
    let header =
        |wanted: &str| headers.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.as_slice());
    let chunked = header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case(b"chunked"));
    let close_asked = header("connection").is_some_and(|value| value.eq_ignore_ascii_case(b"close"));
    let rest = &raw[head_end + 4..];
    let (body, consumed, framed_by_close) = if status == 204 || status == 304 {
        (Vec::new(), 0, false)
    } else if chunked {
        let Some((body, consumed)) = dechunk(rest)? else {
            return if closed { Err(bad("a cut chunked answer")) } else { Ok(None) };
        };
        (body, consumed, false)
    } else if let Some(length) = header("content-length") {
        let length: usize = std::str::from_utf8(length)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad("an invalid Content-Length"))?;
        match rest.get(..length) {
            Some(body) => (body.to_vec(), length, false),
            None if closed => return Err(bad("a body shorter than its Content-Length")),
            None => return Ok(None),
        }
    } else if closed {
        (rest.to_vec(), rest.len(), true)
    } else {
        return Ok(None);
    };
    // Bytes past the answer were never asked for: the connection is out of step, not reused.
    let reusable = version_one_one && !close_asked && !framed_by_close && !closed && consumed == rest.len();
    let answer = Answer { status, headers, body };
    Ok(Some(Framed { answer, reusable }))
}

/// A chunked body and the bytes it took, or `None` while it is not complete.
fn dechunk(raw: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ForwardError> {
    let mut body = Vec::with_capacity(raw.len());
    let mut position = 0;
    loop {
        let Some(line_end) = find_line_end(&raw[position..]) else { return Ok(None) };
        let size_text = std::str::from_utf8(&raw[position..position + line_end])
            .map_err(|_| bad("a chunk size that is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("an invalid chunk size"))?;
        position += line_end + 2;
        if size == 0 {
            // Trailer lines, if any, up to an empty line.
            loop {
                let Some(line_end) = find_line_end(&raw[position..]) else { return Ok(None) };
                position += line_end + 2;
                if line_end == 0 {
                    return Ok(Some((body, position)));
                }
            }
        }
        let Some(chunk) = raw.get(position..position + size) else { return Ok(None) };
        body.extend_from_slice(chunk);
        position += size;
        match raw.get(position..position + 2) {
            Some(b"\r\n") => position += 2,
            Some(_) => return Err(bad("a chunk without its line end")),
            None => return Ok(None),
        }
    }
}

fn find_line_end(raw: &[u8]) -> Option<usize> {
    raw.windows(2).position(|window| window == b"\r\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn whole(raw: &[u8]) -> Framed {
        frame(raw, false).unwrap().expect("a complete answer")
    }

    #[test]
    fn an_advertised_url_names_host_and_port() {
        let parsed = PeerAddress::parse("http://10.0.0.7:8080/").unwrap();
        assert_eq!(parsed, PeerAddress { host: "10.0.0.7".into(), port: 8080 });
        assert_eq!(PeerAddress::parse("http://[::1]:80").unwrap().host, "::1");
        assert!(PeerAddress::parse("https://10.0.0.7:8080").is_none());
        assert!(PeerAddress::parse("http://10.0.0.7").is_none());
        assert!(PeerAddress::parse("http://10.0.0.7:8080/base").is_none());
    }

    #[test]
    fn an_answer_with_a_length_or_in_chunks_is_read_whole_and_keeps_the_connection() {
        let sized = whole(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nEtag: \"x\"\r\n\r\n{}");
        assert_eq!((sized.answer.status, sized.answer.body.as_slice()), (201, b"{}".as_slice()));
        assert_eq!(sized.answer.header("etag"), Some(b"\"x\"".as_slice()));
        assert!(sized.reusable);
        let chunked =
            whole(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n");
        assert_eq!(chunked.answer.body, b"abcd");
        assert!(chunked.reusable);
        let not_modified = whole(b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n");
        assert!(not_modified.answer.body.is_empty() && not_modified.reusable);
    }

    #[test]
    fn an_answer_is_incomplete_until_its_last_byte() {
        let sized = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\r\n\r\n";
        for raw in [sized.as_slice(), chunked.as_slice()] {
            for cut in 0..raw.len() {
                assert!(frame(&raw[..cut], false).unwrap().is_none(), "cut at {cut}");
            }
            assert_eq!(whole(raw).answer.body, b"hello");
        }
    }

    #[test]
    fn a_connection_that_asked_to_close_or_said_too_much_is_not_kept() {
        assert!(!whole(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").reusable);
        assert!(!whole(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").reusable);
        assert!(!whole(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab").reusable);
        let until_closed = frame(b"HTTP/1.1 200 OK\r\n\r\nall of it", true).unwrap().unwrap();
        assert_eq!(
            (until_closed.answer.body.as_slice(), until_closed.reusable),
            (b"all of it".as_slice(), false)
        );
        assert!(frame(b"HTTP/1.1 200 OK\r\n\r\nmore to come", false).unwrap().is_none());
    }

    #[test]
    fn a_cut_or_garbled_answer_is_an_error() {
        assert!(frame(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", true).is_err());
        assert!(frame(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
        assert!(frame(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", false).is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabc", false).is_err());
    }

    #[test]
    fn a_failed_peer_is_refused_until_a_probe_after_the_cool_down_answers() {
        let start = Instant::now();
        let at = |milliseconds: u64| start + Duration::from_millis(milliseconds);
        let mut health = Health::Answering;
        assert_eq!(health.admit(at(0)), Admission::Send);
        health.failed(at(10));
        assert_eq!(health.admit(at(11)), Admission::Refuse);
        assert_eq!(health.admit(at(10 + PEER_COOL_DOWN_MS - 1)), Admission::Refuse);
        assert_eq!(health.admit(at(10 + PEER_COOL_DOWN_MS)), Admission::Send, "the probe");
        assert_eq!(health.admit(at(10 + PEER_COOL_DOWN_MS + 1)), Admission::Refuse, "one probe at a time");
        health.answered();
        assert_eq!(health.admit(at(10 + PEER_COOL_DOWN_MS + 2)), Admission::Send);
    }

    #[test]
    fn a_failed_probe_starts_another_cool_down_and_a_lost_one_expires() {
        let start = Instant::now();
        let at = |milliseconds: u64| start + Duration::from_millis(milliseconds);
        let mut health = Health::Answering;
        health.failed(at(0));
        assert_eq!(health.admit(at(PEER_COOL_DOWN_MS)), Admission::Send);
        health.failed(at(PEER_COOL_DOWN_MS + 100));
        assert_eq!(health.admit(at(2 * PEER_COOL_DOWN_MS + 99)), Admission::Refuse);
        assert_eq!(health.admit(at(2 * PEER_COOL_DOWN_MS + 100)), Admission::Send, "the next probe");
        // That probe never reports (its request was dropped): another is let through later.
        let lost_until = 2 * PEER_COOL_DOWN_MS + 100 + FORWARD_ANSWER_TIMEOUT_MS + PEER_COOL_DOWN_MS;
        assert_eq!(health.admit(at(lost_until - 1)), Admission::Refuse);
        assert_eq!(health.admit(at(lost_until)), Admission::Send);
    }

    /// A peer on a real socket: `serve` gets each accepted connection with its number.
    async fn fake_peer<F, Fut>(serve: F) -> (PeerAddress, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream, usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let number = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, number));
            }
        });
        (PeerAddress { host: "127.0.0.1".into(), port }, accepted)
    }

    /// Reads one request (head and `Content-Length` body); `None` when the connection ended.
    async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(head_end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse().unwrap());
                if pending.len() >= head_end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&pending[head_end + 4..head_end + 4 + length]).into_owned();
                    pending.drain(..head_end + 4 + length);
                    return Some(body);
                }
            }
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            pending.extend_from_slice(&chunk[..read]);
        }
    }

    /// Answers each request with its own body, echoed, for as long as the client keeps the
    /// connection, alternating `Content-Length` and chunks.
    async fn echo(mut stream: TcpStream, _number: usize) {
        let mut pending = Vec::new();
        let mut answered = 0;
        while let Some(body) = read_request(&mut stream, &mut pending).await {
            let answer = if answered % 2 == 0 {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
            };
            answered += 1;
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn post(body: &str) -> Outgoing<'_> {
        Outgoing { method: "POST", target: "/echo", headers: Vec::new(), body: body.as_bytes() }
    }

    #[tokio::test]
    async fn many_requests_to_a_peer_share_one_kept_alive_connection() {
        let (peer, accepted) = fake_peer(echo).await;
        let forwarder = Forwarder::new();
        for n in 0..50 {
            let body = format!("request {n}");
            let answer = forwarder.send(&peer, &post(&body)).await.unwrap();
            assert_eq!((answer.status, answer.body), (200, body.into_bytes()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_peer_closed_unread_is_sent_again_on_a_new_one() {
        // The first connection answers one request, then drops the next one unread, as a peer
        // closing an idle connection just as it is reused.
        let (peer, accepted) = fake_peer(|mut stream, number| async move {
            if number > 0 {
                return echo(stream, number).await;
            }
            let mut pending = Vec::new();
            let body = read_request(&mut stream, &mut pending).await.unwrap();
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            stream.write_all(answer.as_bytes()).await.unwrap();
            read_request(&mut stream, &mut pending).await;
        })
        .await;
        let forwarder = Forwarder::new();
        assert_eq!(forwarder.send(&peer, &post("one")).await.unwrap().body, b"one");
        assert_eq!(forwarder.send(&peer, &post("two")).await.unwrap().body, b"two");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_whose_answer_was_cut_is_not_sent_again() {
        let (peer, accepted) = fake_peer(|mut stream, _| async move {
            let mut pending = Vec::new();
            read_request(&mut stream, &mut pending).await;
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 10\r\n\r\n{\"id").await;
        })
        .await;
        let forwarder = Forwarder::new();
        let error = forwarder.send(&peer, &post("one")).await.unwrap_err();
        assert!(matches!(error, ForwardError::BadAnswer(_)), "{error}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    // Paused time: the 900 ms deadline passes as soon as nothing but it is left to happen. The
    // peer is a real loopback socket, whose connect and reads are ready at once, so the clock
    // only jumps once the request was sent and the peer holds it.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_accepts_but_never_answers_is_refused_at_once_after_its_first_timeout() {
        // Reads and holds, as a frozen process whose kernel still accepts.
        let (peer, accepted) = fake_peer(|mut stream, _| async move {
            let mut pending = Vec::new();
            read_request(&mut stream, &mut pending).await;
            std::future::pending::<()>().await;
        })
        .await;
        let forwarder = Forwarder::new();
        let started = Instant::now();
        let error = forwarder.send(&peer, &post("one")).await.unwrap_err();
        assert!(matches!(error, ForwardError::NoAnswer(_)), "{error}");
        let waited = started.elapsed();
        assert_eq!(waited, Duration::from_millis(FORWARD_ANSWER_TIMEOUT_MS), "refused at the deadline");
        let started = Instant::now();
        let error = forwarder.send(&peer, &post("two")).await.unwrap_err();
        assert!(matches!(error, ForwardError::PeerFailing), "{error}");
        assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "nothing more was sent to it");
    }

    #[test]
    fn the_peers_map_keeps_failing_peers_over_answering_ones_when_full() {
        let now = Instant::now();
        let mut peers = HashMap::new();
        for port in 0..3u16 {
            let health = if port == 0 { Health::Failing { retry_at: now } } else { Health::Answering };
            let last_used = now + Duration::from_millis(u64::from(port));
            peers
                .insert(PeerAddress { host: "h".into(), port }, Peer { idle: Vec::new(), health, last_used });
        }
        evict_one(&mut peers);
        let mut left: Vec<u16> = peers.keys().map(|address| address.port).collect();
        left.sort_unstable();
        assert_eq!(left, vec![0, 2], "the failing peer stays though used first");
    }
}
