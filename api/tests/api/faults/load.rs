//! A steady, seeded trickle of registrations from independent registrants (each request on its
//! own connection, none waiting for another), what each one saw, and the figures drawn from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::send;
use super::{CLIENT_PATIENCE_MS, Random};

/// What one registrant's request got.
#[derive(Clone, Debug)]
pub struct Sample {
    pub port: u16,
    pub key: String,
    pub email: String,
    pub started: Instant,
    pub elapsed: Duration,
    /// The response, or why there was none.
    pub answer: Result<Answered, String>,
    /// A second try with the same key, 100 ms after a 503.
    pub retry: bool,
}

#[derive(Clone, Debug)]
pub struct Answered {
    pub status: u16,
    /// The problem `code`, or "" for a success.
    pub code: String,
    /// The problem `detail`, or "" for a success: which of the refusals sharing a code it was.
    pub detail: String,
    pub retry_after: Option<String>,
    /// The registration id of a 201.
    pub id: Option<String>,
    /// `Kuota-Owner`: set when another node relayed the answer of the owner.
    pub owner: Option<String>,
}

impl Sample {
    pub fn status(&self) -> Option<u16> {
        self.answer.as_ref().ok().map(|answer| answer.status)
    }

    pub fn code(&self) -> &str {
        self.answer.as_ref().map_or("", |answer| answer.code.as_str())
    }

    /// A decision the registrant can act on: admitted, or refused for good.
    pub fn is_decided(&self) -> bool {
        match self.status() {
            Some(201) => true,
            Some(409) => matches!(self.code(), "already_registered" | "sold_out"),
            _ => false,
        }
    }

    /// An answer the liveness contract allows during a fault: a decision, a refusal to retry
    /// (503 with Retry-After), or the key still in flight from an earlier try.
    pub fn is_allowed_during_a_fault(&self) -> bool {
        match &self.answer {
            Ok(answer) if answer.status == 503 => answer.retry_after.is_some(),
            Ok(answer) if answer.status == 409 && answer.code == "idempotency_key_in_flight" => true,
            Ok(_) => self.is_decided(),
            Err(_) => false,
        }
    }

    pub fn finished(&self) -> Instant {
        self.started + self.elapsed
    }

    pub fn describe(&self) -> String {
        match &self.answer {
            Ok(answer) => format!(
                "{} {} {} ({}) after {} ms on port {}",
                self.key,
                answer.status,
                answer.code,
                answer.detail,
                self.elapsed.as_millis(),
                self.port
            ),
            Err(error) => {
                format!("{} {error} after {} ms on port {}", self.key, self.elapsed.as_millis(), self.port)
            }
        }
    }
}

pub fn registration_body(email: &str) -> Vec<u8> {
    serde_json::json!({ "category": "10K", "email": email, "full_name": "Ana Runner" })
        .to_string()
        .into_bytes()
}

/// One registration attempt.
pub async fn register(port: u16, event: &str, key: &str, email: &str, retry: bool) -> Sample {
    let started = Instant::now();
    let body = registration_body(email);
    let exchange = send(
        port,
        "POST",
        &format!("/v1/events/{event}/registrations"),
        &[("Content-Type", "application/json"), ("Idempotency-Key", key)],
        Some(&body),
        Duration::from_millis(CLIENT_PATIENCE_MS),
    )
    .await;
    let answer = exchange.answer.map(|response| {
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        Answered {
            status: response.status,
            code: json["code"].as_str().unwrap_or_default().to_string(),
            detail: json["detail"].as_str().unwrap_or_default().to_string(),
            retry_after: response.header("retry-after").map(str::to_string),
            id: if response.status == 201 { json["id"].as_str().map(str::to_string) } else { None },
            owner: response.header("kuota-owner").map(str::to_string),
        }
    });
    Sample {
        port,
        key: key.to_string(),
        email: email.to_string(),
        started,
        elapsed: exchange.elapsed,
        answer,
        retry,
    }
}

/// Registers, and after a 503 tries once more with the same key 100 ms later, as a client
/// that honours the contract would (the retry must not register twice).
async fn register_with_one_retry(port: u16, event: String, key: String, email: String) -> Vec<Sample> {
    let first = register(port, &event, &key, &email, false).await;
    if first.status() != Some(503) {
        return vec![first];
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = register(port, &event, &key, &email, true).await;
    vec![first, second]
}

/// The trickle: `rate_per_second` registrations, spread with seeded jitter over the nodes in
/// `targets` in turn; one in ten reuses an earlier registrant's e-mail under a new key.
#[derive(Debug)]
pub struct Trickle {
    event: String,
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<u16>>>,
    /// Every request sent, the trickle's and the bursts', to be awaited at the end.
    requests: Requests,
    task: tokio::task::JoinHandle<()>,
}

type Requests = Arc<Mutex<Vec<tokio::task::JoinHandle<Vec<Sample>>>>>;

const NEVER_POISONED: &str = "the lock is never poisoned: nothing panics holding it";

impl Trickle {
    pub fn start(event: &str, targets: Vec<u16>, rate_per_second: u32, seed: u64) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let requests = Requests::default();
        let generator = Generator {
            event: event.to_string(),
            targets: Arc::clone(&targets),
            requests: Arc::clone(&requests),
            stop: Arc::clone(&stop),
        };
        let task = tokio::spawn(generator.run(rate_per_second, seed));
        Trickle { event: event.to_string(), stop, targets, requests, task }
    }

    /// Sends the next requests to these nodes only (those already sent go on).
    pub fn aim_at(&self, targets: Vec<u16>) {
        *self.targets.lock().expect(NEVER_POISONED) = targets;
    }

    /// Sends `count` registrations to `port` at once (keys `burst<n>`), so that its writer
    /// is in the middle of a commit for the next few tens of ms.
    pub fn burst(&self, port: u16, count: usize) {
        let mut requests = self.requests.lock().expect(NEVER_POISONED);
        let first = requests.len();
        for number in first..first + count {
            let (key, email) = (format!("burst{number}"), format!("burst{number}@example.org"));
            requests.push(tokio::spawn(register_with_one_retry(port, self.event.clone(), key, email)));
        }
    }

    /// Stops sending, waits for every request sent to be answered or given up, and returns
    /// what each registrant saw, in the order sent.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the trickle does not panic");
        let requests = std::mem::take(&mut *self.requests.lock().expect(NEVER_POISONED));
        let mut samples = Vec::new();
        for request in requests {
            samples.extend(request.await.expect("a registration task does not panic"));
        }
        samples
    }
}

/// The trickle's sending side, on its own task.
struct Generator {
    event: String,
    targets: Arc<Mutex<Vec<u16>>>,
    requests: Requests,
    stop: Arc<AtomicBool>,
}

impl Generator {
    async fn run(self, rate_per_second: u32, seed: u64) {
        let mut random = Random::new(seed);
        let interval_micros = 1_000_000 / u64::from(rate_per_second.max(1));
        let mut emails: Vec<String> = Vec::new();
        let mut next = Instant::now();
        let mut number = 0_usize;
        while !self.stop.load(Ordering::Relaxed) {
            let email = if !emails.is_empty() && random.below(10) == 0 {
                emails[random.below(emails.len() as u64) as usize].clone()
            } else {
                let email = format!("r{number}-{:x}@example.org", random.below(1 << 32));
                emails.push(email.clone());
                email
            };
            let port = {
                let targets = self.targets.lock().expect(NEVER_POISONED);
                targets[number % targets.len()]
            };
            let request =
                tokio::spawn(register_with_one_retry(port, self.event.clone(), format!("k{number}"), email));
            self.requests.lock().expect(NEVER_POISONED).push(request);
            number += 1;
            // Between half and one and a half intervals: steady on average, never in lockstep.
            next += Duration::from_micros(interval_micros / 2 + random.below(interval_micros.max(1)));
            tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        }
    }
}

/// The samples started in `from..to`.
pub fn started_within(samples: &[Sample], from: Instant, to: Instant) -> Vec<&Sample> {
    samples.iter().filter(|sample| sample.started >= from && sample.started < to).collect()
}

/// "201×12 409×3 503×40 none×0": what the registrants got.
pub fn answer_mix(samples: &[&Sample]) -> String {
    let count = |wanted: &dyn Fn(&Sample) -> bool| samples.iter().filter(|sample| wanted(sample)).count();
    let in_flight = count(&|sample| sample.code() == "idempotency_key_in_flight");
    let other = count(&|sample| !matches!(sample.status(), Some(201) | Some(409) | Some(503) | None));
    format!(
        "{} requests ({} of them retries 100 ms after a 503): 201×{} 409×{} (in flight {}) 503×{} (without Retry-After {}) other×{} unanswered×{}",
        samples.len(),
        count(&|sample| sample.retry),
        count(&|sample| sample.status() == Some(201)),
        count(&|sample| sample.status() == Some(409)),
        in_flight,
        count(&|sample| sample.status() == Some(503)),
        count(&|sample| {
            sample.status() == Some(503)
                && sample.answer.as_ref().is_ok_and(|answer| answer.retry_after.is_none())
        }),
        other,
        count(&|sample| sample.answer.is_err()),
    )
}

/// The `percent` percentile of the samples' latencies, in ms (0 without samples).
pub fn latency_percentile_ms(samples: &[&Sample], percent: f64) -> u128 {
    let mut latencies: Vec<u128> = samples.iter().map(|sample| sample.elapsed.as_millis()).collect();
    if latencies.is_empty() {
        return 0;
    }
    latencies.sort_unstable();
    let rank = ((percent / 100.0) * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

/// Registers through each of `ports` every 50 ms until each has given a decision, or `limit`
/// passed: how long after `since` the last of them did (None: not within the limit), and the
/// registrations sent.
pub async fn served_again(
    event: &str,
    ports: &[u16],
    since: Instant,
    limit: Duration,
) -> (Option<u128>, Vec<Sample>) {
    let deadline = Instant::now() + limit;
    let mut probes: Vec<Sample> = Vec::new();
    let mut waiting: Vec<u16> = ports.to_vec();
    let mut last_served = since;
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still_waiting = Vec::new();
        for port in waiting {
            let (key, email) =
                (format!("probe{}", probes.len()), format!("probe{}@example.org", probes.len()));
            let probe = register(port, event, &key, &email, false).await;
            if probe.is_decided() {
                last_served = last_served.max(probe.finished());
            } else {
                still_waiting.push(port);
            }
            probes.push(probe);
        }
        waiting = still_waiting;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let served = waiting.is_empty().then(|| last_served.saturating_duration_since(since).as_millis());
    (served, probes)
}

/// The compact line a scenario prints for docs/operations.md: what registrants got while the
/// fault lasted, and how long after `since_what` (the part returned) every node served again.
pub fn figures_line(
    scenario: &str,
    seed: u64,
    profile: &str,
    during: &[&Sample],
    (recovered, since_what): (Option<u128>, &str),
    extra: &str,
) -> String {
    format!(
        "fault-figures | {scenario} | {profile}, seed {seed} | during the fault: {} | p50 {} ms, p99 {} ms, max {} ms | recovered {} | {extra}",
        answer_mix(during),
        latency_percentile_ms(during, 50.0),
        latency_percentile_ms(during, 99.0),
        latency_percentile_ms(during, 100.0),
        recovered.map_or(format!("not within the test after {since_what}"), |ms| format!(
            "{ms} ms after {since_what}"
        )),
    )
}
