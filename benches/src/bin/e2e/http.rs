//! A minimal HTTP/1.1 keep-alive client over one tokio `TcpStream`: it writes a request, reads
//! one response (status, `Content-Length` body) and keeps the connection for the next. Small on
//! purpose: the load generator shares the machine with the server, so every microsecond it
//! spends is one the server does not get.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head the client accepts, in bytes.
const HEAD_LENGTH_MAX: usize = 16 * 1024;
/// The longest response body the client accepts, in bytes.
const BODY_LENGTH_MAX: usize = 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// One response: its status and its body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Retry-After` header, in seconds, when there is one.
    pub retry_after_seconds: Option<u64>,
}

impl Response {
    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A kept-alive connection to a server on loopback.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        // Requests are written whole; Nagle's delay would only add latency.
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buffer: Vec::with_capacity(READ_CHUNK_BYTES) })
    }

    /// Sends `request` (complete bytes) and reads its response.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        let (head_length, Head { status, body_length, retry_after_seconds }) = self.read_head().await?;
        let total = head_length + body_length;
        while self.buffer.len() < total {
            self.fill().await?;
        }
        let body = self.buffer[head_length..total].to_vec();
        self.buffer.drain(..total);
        Ok(Response { status, body, retry_after_seconds })
    }

    /// Reads until the head is complete: its length, and what it says.
    async fn read_head(&mut self) -> io::Result<(usize, Head)> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = parse_head(&self.buffer[..end])?;
                return Ok((end + 4, head));
            }
            if self.buffer.len() > HEAD_LENGTH_MAX {
                return Err(invalid("the response head is too long"));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let start = self.buffer.len();
        self.buffer.resize(start + READ_CHUNK_BYTES, 0);
        let read = self.stream.read(&mut self.buffer[start..]).await;
        let count = *read.as_ref().unwrap_or(&0);
        self.buffer.truncate(start + count);
        match read {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")),
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// What the client reads from a response head.
struct Head {
    status: u16,
    body_length: usize,
    retry_after_seconds: Option<u64>,
}

/// The status, `Content-Length` and `Retry-After` of a response head. Servers here answer with
/// sized bodies; a chunked answer is refused rather than misread.
fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("the response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let mut body_length = 0;
    let mut retry_after_seconds = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            body_length = value.trim().parse().map_err(|_| invalid("a bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after_seconds = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked responses are not supported"));
        }
    }
    if body_length > BODY_LENGTH_MAX {
        return Err(invalid("the response body is too long"));
    }
    Ok(Head { status, body_length, retry_after_seconds })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// A complete request with a JSON body.
pub fn post_json(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    request.into_bytes()
}

/// A complete `GET` request.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// Registrant number `registrant`'s request, sent as request number `sequence` (its key). The
/// e-mail is what makes registrants distinct; the key is new for every request.
pub fn registration(event: &str, sequence: u64, registrant: u64) -> Vec<u8> {
    let key = format!("e2e-{sequence:016x}");
    let body = format!(
        r#"{{"category":"{CATEGORY}","email":"runner{registrant}@example.org","full_name":"Bench Runner"}}"#
    );
    post_json(&format!("/v1/events/{event}/registrations"), &[("Idempotency-Key", &key)], &body)
}

/// Registrant number `registrant` joining the queue of `event`, as request number `sequence`.
pub fn queue_join(event: &str, sequence: u64, registrant: u64) -> Vec<u8> {
    let key = format!("e2e-join-{sequence:016x}");
    let body = format!(r#"{{"email":"runner{registrant}@example.org"}}"#);
    post_json(&format!("/v1/events/{event}/queue"), &[("Idempotency-Key", &key)], &body)
}

/// `GET /v1/queue/{ticket}` with the ticket's access token.
pub fn ticket_read(ticket: &str, access_token: &str) -> Vec<u8> {
    format!(
        "GET /v1/queue/{ticket} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {access_token}\r\n\r\n"
    )
    .into_bytes()
}

/// The one category of every benchmark event.
pub const CATEGORY: &str = "10K";

/// `POST /v1/events` of an event with one category of `capacity` seats and a queue whose lobby
/// opens at `lobby_opens_at` and whose draw is at `opens_at` (RFC 3339).
pub fn create_queued_event(
    admin_token: &str,
    event: &str,
    capacity: u64,
    lobby_opens_at: &str,
    opens_at: &str,
    queue_max: u64,
) -> Vec<u8> {
    let body = serde_json::json!({
        "id": event,
        "name": "Bench Race with a queue",
        "opens_at": opens_at,
        "categories": [{ "code": CATEGORY, "name": "10 km", "capacity": capacity }],
        "queue": { "lobby_opens_at": lobby_opens_at, "queue_max": queue_max },
    });
    let authorization = format!("Bearer {admin_token}");
    post_json("/v1/events", &[("Authorization", &authorization)], &body.to_string())
}

/// `POST /v1/events` of an event with one category of `capacity` seats.
pub fn create_event(admin_token: &str, event: &str, capacity: u64) -> Vec<u8> {
    let body = serde_json::json!({
        "id": event,
        "name": "Bench Race",
        "categories": [{ "code": CATEGORY, "name": "10 km", "capacity": capacity }],
    });
    let authorization = format!("Bearer {admin_token}");
    post_json("/v1/events", &[("Authorization", &authorization)], &body.to_string())
}
