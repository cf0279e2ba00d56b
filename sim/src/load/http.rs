//! A small HTTP/1.1 client with keep-alive over tokio's `TcpStream`: just what `load` needs
//! (one request at a time per connection, `Content-Length` or chunked answers), written here so
//! that the simulator does not pull a full HTTP stack into its build.
//!
//! Connections only ever go to a `Target`'s addresses, which `target` checked.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::target::Target;

/// Largest status line plus headers of an answer, in bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Largest answer body, in bytes (the API's answers are a few hundred bytes).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Headers one answer may have.
const HEADERS_MAX: usize = 100;
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A connection idle longer than this is closed rather than reused, in ms: servers close idle
/// keep-alive connections (actix-web after 5 s by default), and a request written into a
/// connection the server is closing fails through no fault of the server's.
const IDLE_REUSE_MAX_MS: u64 = 2_000;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("input/output error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection before a whole answer")]
    Closed,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("no answer within the timeout")]
    Timeout,
}

impl HttpError {
    /// A short name for the report's table.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "cannot connect",
            HttpError::Io(_) => "i/o error",
            HttpError::Closed => "connection closed",
            HttpError::Malformed(_) => "malformed answer",
            HttpError::Timeout => "timeout",
        }
    }
}

/// One request.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target, e.g. `/v1/events/race/registrations`.
    pub path: &'a str,
    /// Extra headers; `Host`, `Content-Length` and `Content-Type` are added.
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body, if any.
    pub body: Option<&'a [u8]>,
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `Retry-After` in seconds, when it is a number (the API never sends the date form).
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.header("retry-after").and_then(|value| value.trim().parse().ok())
    }

    fn keeps_alive(&self) -> bool {
        !self.header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    last_used: Instant,
}

impl Connection {
    /// Connects to the first of the target's addresses that answers.
    pub async fn open(target: &Target) -> Result<Connection, HttpError> {
        let mut last_error = None;
        for address in target.addresses() {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    // Requests are small and answered one at a time: Nagle's delay would only
                    // add latency.
                    stream.set_nodelay(true).map_err(HttpError::Connect)?;
                    return Ok(Connection { stream, buffer: Vec::new(), last_used: Instant::now() });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(HttpError::Connect(
            last_error.unwrap_or_else(|| std::io::Error::other("the target has no address")),
        ))
    }

    /// Sends `request` and reads its whole answer; also says whether the connection may be
    /// reused.
    pub async fn send(
        &mut self,
        target: &Target,
        request: &Request<'_>,
    ) -> Result<(Response, bool), HttpError> {
        let mut head =
            format!("{} {} HTTP/1.1\r\nHost: {}\r\n", request.method, request.path, target.authority());
        for (name, value) in request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = request.body.unwrap_or_default();
        if request.body.is_some() {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        let response = self.read_response(request.method == "HEAD").await?;
        self.last_used = Instant::now();
        let reusable = response.keeps_alive();
        Ok((response, reusable))
    }

    /// Reads more bytes into the buffer; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), HttpError> {
        let start = self.buffer.len();
        self.buffer.resize(start + READ_CHUNK_BYTES, 0);
        let read = self.stream.read(&mut self.buffer[start..]).await;
        let count = match read {
            Ok(count) => count,
            Err(error) => {
                self.buffer.truncate(start);
                return Err(error.into());
            }
        };
        self.buffer.truncate(start + count);
        if count == 0 { Err(HttpError::Closed) } else { Ok(()) }
    }

    async fn read_response(&mut self, no_body: bool) -> Result<Response, HttpError> {
        let head_end = loop {
            if let Some(position) = find(&self.buffer, b"\r\n\r\n") {
                break position;
            }
            if self.buffer.len() > HEADER_BYTES_MAX {
                return Err(HttpError::Malformed(format!("headers longer than {HEADER_BYTES_MAX} bytes")));
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let (status, headers) = parse_head(&head)?;
        let mut response = Response { status, headers, body: Vec::new() };
        if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = self.read_chunked().await?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed(format!("Content-Length {length:?}")))?;
            if length > BODY_BYTES_MAX {
                return Err(HttpError::Malformed(format!(
                    "a body of {length} bytes (at most {BODY_BYTES_MAX})"
                )));
            }
            while self.buffer.len() < length {
                self.fill().await?;
            }
            response.body = self.buffer.drain(..length).collect();
        } else {
            // No length: the body runs to the end of the connection, which cannot be reused.
            loop {
                match self.fill().await {
                    Ok(()) if self.buffer.len() > BODY_BYTES_MAX => {
                        return Err(HttpError::Malformed(format!("a body over {BODY_BYTES_MAX} bytes")));
                    }
                    Ok(()) => {}
                    Err(HttpError::Closed) => break,
                    Err(error) => return Err(error),
                }
            }
            response.body = std::mem::take(&mut self.buffer);
            response.headers.push(("connection".into(), "close".into()));
        }
        Ok(response)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(position) = find(&self.buffer, b"\r\n") {
                    break position;
                }
                if self.buffer.len() > HEADER_BYTES_MAX {
                    return Err(HttpError::Malformed("a chunk size line too long".into()));
                }
                self.fill().await?;
            };
            let line = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {size_text:?}")))?;
            if body.len() + size > BODY_BYTES_MAX {
                return Err(HttpError::Malformed(format!("a body over {BODY_BYTES_MAX} bytes")));
            }
            self.buffer.drain(..line_end + 2);
            // The chunk, then its CRLF; the last chunk (size 0) is followed by an empty trailer.
            while self.buffer.len() < size + 2 {
                self.fill().await?;
            }
            body.extend(self.buffer.drain(..size));
            self.buffer.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn parse_head(head: &str) -> Result<(u16, Vec<(String, String)>), HttpError> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..=599).contains(code))
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= HEADERS_MAX {
            return Err(HttpError::Malformed(format!("more than {HEADERS_MAX} headers")));
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((status, headers))
}

/// Connections shared by every request of a run: at most `connections_max` at once, idle
/// ones reused last-in first-out (the freshest first).
#[derive(Debug)]
pub struct Pool {
    target: Target,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
    opened: std::sync::atomic::AtomicU64,
    waited: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub fn new(target: Target, connections_max: usize, timeout: Duration) -> Self {
        Pool {
            target,
            permits: Semaphore::new(connections_max),
            idle: Mutex::new(Vec::new()),
            timeout,
            opened: std::sync::atomic::AtomicU64::new(0),
            waited: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests that found every connection busy and waited for one: a client-side queue
    /// that real registrants, each with a browser of their own, do not have.
    pub fn waited(&self) -> u64 {
        self.waited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `request` on an idle connection or a new one, within the timeout (which starts once
    /// a connection slot is free: the wait for a slot is the caller's to count).
    pub async fn send(&self, request: &Request<'_>) -> Result<Response, HttpError> {
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.waited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The semaphore is never closed, so acquiring can only wait, not fail.
                self.permits.acquire().await.expect("the pool's semaphore is never closed")
            }
        };
        let reused = self.take_idle();
        let attempt = async {
            let mut connection = match reused {
                Some(connection) => connection,
                None => {
                    let connection = Connection::open(&self.target).await?;
                    self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    connection
                }
            };
            let (response, reusable) = connection.send(&self.target, request).await?;
            Ok::<_, HttpError>((response, reusable.then_some(connection)))
        };
        let (response, connection) =
            tokio::time::timeout(self.timeout, attempt).await.map_err(|_| HttpError::Timeout)??;
        if let Some(connection) = connection {
            self.lock_idle().push(connection);
        }
        Ok(response)
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.lock_idle();
        while let Some(connection) = idle.pop() {
            if connection.last_used.elapsed() < Duration::from_millis(IDLE_REUSE_MAX_MS) {
                return Some(connection);
            }
        }
        None
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock can only come from a bug elsewhere; the list of idle
        // connections is still valid then, so keep using it.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_and_headers_are_parsed() {
        let (status, headers) =
            parse_head("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0").unwrap();
        assert_eq!(status, 503);
        let response = Response { status, headers, body: Vec::new() };
        assert_eq!(response.retry_after_seconds(), Some(2));
        assert!(response.keeps_alive());
    }

    #[test]
    fn a_garbled_status_line_is_malformed() {
        assert!(matches!(parse_head("SMTP ready"), Err(HttpError::Malformed(_))));
        assert!(matches!(parse_head("HTTP/1.1 abc"), Err(HttpError::Malformed(_))));
    }
}
