//! A tiny HTTP/1.1 server that mimics the parts of Kuota's contract `load` uses: create an
//! event, read it, register with an `Idempotency-Key`. The simulator may not depend on the API
//! crate, so `load` is tested against this, which can also misbehave on purpose so that the
//! client-side checks have something to find.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The event the fake knows.
const EVENT_ID: &str = "fake";
/// Largest request head or body the fake reads, in bytes.
const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// How the fake answers registrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 201 for the first `capacity` registrants (distinct e-mails), 409 `sold_out` after, 409
    /// `already_registered` for a known e-mail under a new key; replays by key.
    Honest,
    /// As honest, but never sold out: a 201 for every new registrant.
    Oversells,
    /// As honest, but a known e-mail under a new key gets a new registration.
    RegistersTwice,
    /// As honest, but a replay's body differs from the first answer.
    ChangesReplays,
    /// As honest, but the first request for every key is a 503 with `Retry-After: 0`.
    ShedsFirstAttempts,
}

#[derive(Debug, Default)]
struct State {
    answers_by_key: HashMap<String, (u16, String)>,
    ids_by_email: HashMap<String, String>,
    shed_keys: HashMap<String, ()>,
    admitted: u64,
    next_id: u64,
}

/// A running fake; it serves until the test process ends.
#[derive(Debug)]
pub struct FakeServer {
    pub url: String,
    /// Requests it has received, of any kind.
    pub requests: Arc<AtomicU64>,
}

/// Starts a fake with one category `C1` of `capacity` seats, on a loopback port of its own.
pub fn start(behaviour: Behaviour, capacity: u64) -> FakeServer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test machine can start a tokio runtime");
    let listener =
        runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("a test machine can bind a loopback port");
    let port = listener.local_addr().expect("a bound listener has an address").port();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let state = Arc::new(Mutex::new(State::default()));
    std::thread::spawn(move || {
        runtime.block_on(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, behaviour, capacity, state.clone(), counted.clone()));
            }
        })
    });
    FakeServer { url: format!("http://127.0.0.1:{port}"), requests }
}

/// One parsed request.
struct Incoming {
    method: String,
    path: String,
    key: Option<String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Incoming> {
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > REQUEST_BYTES_MAX {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let count = stream.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut length = 0;
    let mut key = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "idempotency-key" => key = Some(value.trim().to_string()),
            _ => {}
        }
    }
    if length > REQUEST_BYTES_MAX {
        return None;
    }
    while buffer.len() < length {
        let mut chunk = [0u8; 4096];
        let count = stream.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    }
    let body = buffer.drain(..length).collect();
    Some(Incoming { method, path, key, body })
}

async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    capacity: u64,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicU64>,
) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        requests.fetch_add(1, Ordering::Relaxed);
        let (status, extra_headers, body) = {
            let mut state = state.lock().expect("no test thread panics while holding the fake's lock");
            answer(&request, behaviour, capacity, &mut state)
        };
        let reason = match status {
            200 => "OK",
            201 => "Created",
            409 => "Conflict",
            503 => "Service Unavailable",
            _ => "Other",
        };
        let text = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        );
        if stream.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(
    request: &Incoming,
    behaviour: Behaviour,
    capacity: u64,
    state: &mut State,
) -> (u16, String, String) {
    let registrations = format!("/v1/events/{EVENT_ID}/registrations");
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/events") => (201, String::new(), event_json(capacity, state.admitted)),
        ("GET", path) if path == format!("/v1/events/{EVENT_ID}") => {
            (200, String::new(), event_json(capacity, state.admitted))
        }
        ("POST", path) if path == registrations => register(request, behaviour, capacity, state),
        _ => (404, String::new(), r#"{"code":"not_found"}"#.into()),
    }
}

fn event_json(capacity: u64, admitted: u64) -> String {
    serde_json::json!({
        "id": EVENT_ID,
        "categories": [{
            "code": "C1",
            "capacity": capacity,
            "confirmed": admitted,
            "held": 0,
            "available": capacity.saturating_sub(admitted),
            "waitlisted": 0,
        }],
    })
    .to_string()
}

fn register(
    request: &Incoming,
    behaviour: Behaviour,
    capacity: u64,
    state: &mut State,
) -> (u16, String, String) {
    let Some(key) = request.key.clone() else {
        return (400, String::new(), r#"{"code":"idempotency_key_missing"}"#.into());
    };
    if let Some((status, body)) = state.answers_by_key.get(&key) {
        let body = match behaviour {
            Behaviour::ChangesReplays => body.replace('}', r#","replayed_at":"later"}"#),
            _ => body.clone(),
        };
        return (*status, "idempotent-replayed: true\r\n".into(), body);
    }
    if behaviour == Behaviour::ShedsFirstAttempts && state.shed_keys.insert(key.clone(), ()).is_none() {
        return (503, "retry-after: 0\r\n".into(), r#"{"code":"overloaded"}"#.into());
    }
    let parsed: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let email = parsed.get("email").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let known = state.ids_by_email.contains_key(&email) && behaviour != Behaviour::RegistersTwice;
    let sold_out = state.admitted >= capacity && behaviour != Behaviour::Oversells;
    let (status, body) = if known {
        (409, r#"{"code":"already_registered"}"#.to_string())
    } else if sold_out {
        (409, r#"{"code":"sold_out"}"#.to_string())
    } else {
        state.admitted += 1;
        state.next_id += 1;
        let id = format!("{EVENT_ID}.{}", state.next_id);
        state.ids_by_email.insert(email, id.clone());
        (201, serde_json::json!({ "id": id, "category": "C1", "status": "confirmed" }).to_string())
    };
    state.answers_by_key.insert(key, (status, body.clone()));
    (status, String::new(), body)
}
