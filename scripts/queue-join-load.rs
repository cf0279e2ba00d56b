//! A closed-loop load of queue joins against a running `kuota`, for the joins/s figure in
//! docs/queue.md: N kept-alive HTTP/1.1 connections on loopback, each sending its next join (a
//! new e-mail and `Idempotency-Key`) as soon as the last is answered, for S seconds; prints the
//! answers by status and per second. std only, so it builds without the workspace:
//!
//! ```sh
//! rustc -O --edition 2021 scripts/queue-join-load.rs -o /tmp/queue-join-load
//! /tmp/queue-join-load <port> <event_id> <connections> <seconds>
//! ```
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<u16> {
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).ok()?.to_ascii_lowercase();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            return Some(status);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (port, event, connections, seconds): (u16, String, usize, u64) =
        (args[1].parse().unwrap(), args[2].clone(), args[3].parse().unwrap(), args[4].parse().unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..600).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let threads: Vec<_> = (0..connections).map(|_| {
        let (next, stop, counts, event) = (next.clone(), stop.clone(), counts.clone(), event.clone());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buffer = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = format!("{{\"email\":\"runner{n}@example.org\"}}");
                let request = format!("POST /v1/events/{event}/queue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nIdempotency-Key: load-{n}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if stream.write_all(request.as_bytes()).is_err() { break; }
                match read_response(&mut stream, &mut buffer) {
                    Some(status) => { counts[status as usize].fetch_add(1, Ordering::Relaxed); }
                    None => break,
                }
            }
        })
    }).collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (status, count) in counts.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        if count > 0 {
            println!("{status}: {count} ({:.0}/s)", count as f64 / elapsed);
        }
    }
}
