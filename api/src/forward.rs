//! The small HTTP/1.1 client that forwards a request to the node owning its event: one
//! connection per request (`Connection: close`), every step under a named timeout, the answer
//! read whole up to a named size.
//!
//! *Decision:* not `awc`. With `default-features = false` it still brings h2, a second `http`
//! crate, actix-tls, rand and sha1 (see docs/operations.md, "Several nodes"), for a job that is
//! one request line, a few headers and a body, towards a peer we wrote ourselves and that always
//! answers with `Content-Length` or chunks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting to the owner may take, in ms: a live peer on the same network accepts
/// in well under a millisecond, so waiting longer only keeps the client waiting for a dead one.
pub const FORWARD_CONNECT_TIMEOUT_MS: u64 = 500;

/// How long the owner may take to answer once connected, in ms: its answer waits for a group
/// commit (milliseconds), or for a shed decision (immediate); past this the owner is stuck.
pub const FORWARD_ANSWER_TIMEOUT_MS: u64 = 10_000;

/// The largest answer relayed, head and body, in bytes. Kuota's answers are small JSON
/// documents; a larger one is a fault, not something to buffer.
pub const FORWARD_ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// Where a peer listens, from its advertised `http://host:port` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
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

/// Sends `request` to `peer` and reads its whole answer.
pub async fn send(peer: &PeerAddress, request: &Outgoing<'_>) -> Result<Answer, ForwardError> {
    let connect = TcpStream::connect((peer.host.as_str(), peer.port));
    let mut stream = tokio::time::timeout(Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS), connect)
        .await
        .map_err(|_| {
            ForwardError::Unreachable(format!("no connection within {FORWARD_CONNECT_TIMEOUT_MS} ms"))
        })?
        .map_err(|error| ForwardError::Unreachable(error.to_string()))?;
    // Requests are small and answered at once: Nagle's delay would only add latency.
    let _ = stream.set_nodelay(true);
    let raw = encode(peer, request);
    let exchange = async {
        stream.write_all(&raw).await?;
        read_bounded(&mut stream).await
    };
    let raw = tokio::time::timeout(Duration::from_millis(FORWARD_ANSWER_TIMEOUT_MS), exchange)
        .await
        .map_err(|_| ForwardError::NoAnswer(format!("no answer within {FORWARD_ANSWER_TIMEOUT_MS} ms")))?
        .map_err(|error| ForwardError::NoAnswer(error.to_string()))?;
    parse(&raw)
}

fn encode(peer: &PeerAddress, request: &Outgoing<'_>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(512 + request.body.len());
    raw.extend_from_slice(format!("{} {} HTTP/1.1\r\n", request.method, request.target).as_bytes());
    raw.extend_from_slice(format!("Host: {}:{}\r\nConnection: close\r\n", peer.host, peer.port).as_bytes());
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

/// Reads until the owner closes (it does after answering `Connection: close`), refusing more
/// than `FORWARD_ANSWER_BYTES_MAX`.
async fn read_bounded(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(raw);
        }
        if raw.len() + read > FORWARD_ANSWER_BYTES_MAX {
            return Err(std::io::Error::other(format!("an answer over {FORWARD_ANSWER_BYTES_MAX} bytes")));
        }
        raw.extend_from_slice(&chunk[..read]);
    }
}

fn bad(reason: &str) -> ForwardError {
    ForwardError::BadAnswer(reason.to_owned())
}

fn parse(raw: &[u8]) -> Result<Answer, ForwardError> {
    let head_end =
        raw.windows(4).position(|window| window == b"\r\n\r\n").ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("a head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..=599).contains(code))
        .ok_or_else(|| bad("no status line"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("a header line without a colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().as_bytes().to_vec()));
    }
    let rest = &raw[head_end + 4..];
    let header =
        |wanted: &str| headers.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.as_slice());
    let chunked = header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = std::str::from_utf8(length)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad("an invalid Content-Length"))?;
        rest.get(..length).ok_or_else(|| bad("a body shorter than its Content-Length"))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, headers, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, ForwardError> {
    let mut body = Vec::with_capacity(raw.len());
    loop {
        let line_end =
            raw.windows(2).position(|window| window == b"\r\n").ok_or_else(|| bad("a cut chunk"))?;
        let size_text =
            std::str::from_utf8(&raw[..line_end]).map_err(|_| bad("a chunk size that is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("an invalid chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        let start = line_end + 2;
        let chunk = raw.get(start..start + size).ok_or_else(|| bad("a chunk longer than the answer"))?;
        body.extend_from_slice(chunk);
        raw = raw.get(start + size + 2..).ok_or_else(|| bad("a chunk without its line end"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_answer_with_a_length_or_in_chunks_is_read_whole() {
        let sized = parse(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nEtag: \"x\"\r\n\r\n{}").unwrap();
        assert_eq!((sized.status, sized.body.as_slice()), (201, b"{}".as_slice()));
        assert!(sized.headers.contains(&("etag".into(), b"\"x\"".to_vec())));
        let chunked =
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(chunked.body, b"abcd");
    }

    #[test]
    fn a_cut_or_garbled_answer_is_an_error() {
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
