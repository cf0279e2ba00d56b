//! A client that never panics: a refused connection, a reset or no answer in time is data here
//! (a node was killed or frozen on purpose), not a test failure.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::support::{Response, parse_response};

/// What one request got, and how long it took.
#[derive(Debug)]
pub struct Exchange {
    pub elapsed: Duration,
    /// The response, or why there is none (refused, reset, no answer within the patience).
    pub answer: Result<Response, String>,
}

/// One request on its own connection (`Connection: close`), given up after `patience`.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    patience: Duration,
) -> Exchange {
    let started = Instant::now();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.map_or(0, <[u8]>::len)).as_bytes());
    request.extend_from_slice(body.unwrap_or_default());
    let exchange = async {
        let mut stream =
            TcpStream::connect(("127.0.0.1", port)).await.map_err(|error| format!("connect: {error}"))?;
        stream.write_all(&request).await.map_err(|error| format!("send: {error}"))?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(|error| format!("read: {error}"))?;
        if !raw.windows(4).any(|window| window == b"\r\n\r\n") {
            return Err(format!("an incomplete response of {} bytes", raw.len()));
        }
        Ok(parse_response(&raw))
    };
    let answer = match tokio::time::timeout(patience, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} ms", patience.as_millis())),
    };
    Exchange { elapsed: started.elapsed(), answer }
}

/// `GET /readyz`: its status, the parts it names as failing, and how long it took.
#[derive(Debug)]
pub struct Readiness {
    pub elapsed: Duration,
    pub status: Option<u16>,
    pub failing: Vec<String>,
}

pub async fn readiness(port: u16) -> Readiness {
    let exchange = send(port, "GET", "/readyz", &[], None, Duration::from_secs(5)).await;
    let (status, failing) = match &exchange.answer {
        Ok(response) => {
            let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
            let failing = body["failing"]
                .as_array()
                .map(|parts| parts.iter().filter_map(|part| part.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            (Some(response.status), failing)
        }
        Err(_) => (None, Vec::new()),
    };
    Readiness { elapsed: exchange.elapsed, status, failing }
}

/// Polls `/readyz` every 20 ms until it answers 200; the instant it did, or None after `limit`.
pub async fn wait_until_ready(port: u16, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if readiness(port).await.status == Some(200) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
