//! Prometheus metrics: the recorder, the names, and the request middleware's measurements.

use std::sync::{LazyLock, OnceLock};

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "kuota_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "kuota_http_request_duration_seconds";
pub const ADMISSIONS: &str = "kuota_admissions_total";
pub const SHED: &str = "kuota_shed_total";
pub const RATE_LIMITED: &str = "kuota_rate_limited_total";
pub const STORE_ERRORS: &str = "kuota_store_errors_total";
pub const WRITE_QUEUE_DEPTH: &str = "kuota_write_behind_queue_depth";
pub const WRITE_BATCHES: &str = "kuota_write_behind_batches_total";
pub const WRITE_EFFECTS: &str = "kuota_write_behind_effects_total";
pub const WRITE_BATCHES_FAILED: &str = "kuota_write_behind_batches_failed_total";
pub const WRITE_FENCED: &str = "kuota_write_behind_fenced_total";
pub const WRITE_BREAKER_OPEN: &str = "kuota_write_behind_breaker_open";
pub const WRITE_BATCH_SIZE: &str = "kuota_write_behind_batch_size";
pub const WRITE_COMMIT_DURATION: &str = "kuota_write_behind_commit_duration_seconds";
pub const OWNED_EVENTS: &str = "kuota_owned_events";
pub const MAILBOX_DEPTH: &str = "kuota_mailbox_depth";
/// Requests forwarded to the owner of their event: time to its relayed answer.
pub const FORWARD_DURATION: &str = "kuota_forward_duration_seconds";
/// The adaptive limit on registrations in flight on this node (`admission`).
pub const ADMISSION_LIMIT: &str = "kuota_admission_limit";
/// Registrations in flight on this node: admitted and not yet answered.
pub const ADMISSION_IN_FLIGHT: &str = "kuota_admission_in_flight";
/// Registrations refused at once because the limit was reached (also counted in
/// `kuota_shed_total`).
pub const ADMISSION_REFUSED: &str = "kuota_admission_refused_total";

/// Webhook attempts by outcome: `succeeded`, `retried`, `dead`, `gone`, `claim_lost`, `unsent`.
pub const WEBHOOK_DELIVERIES: &str = "kuota_webhook_deliveries_total";
/// One webhook attempt, from its request to its answer (or timeout).
pub const WEBHOOK_ATTEMPT_DURATION: &str = "kuota_webhook_attempt_duration_seconds";
/// Age of the oldest webhook message (or outbox entry, or creation past its event's cursor) not yet
/// delivered.
pub const WEBHOOK_OLDEST_UNDELIVERED: &str = "kuota_webhook_oldest_undelivered_seconds";
/// Webhook messages dead (out of retries, or their endpoint answered 410), until replayed.
pub const WEBHOOK_DEAD: &str = "kuota_webhook_dead_messages";

/// Latency buckets, in seconds: from 100 µs to 10 s.
const DURATION_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often the recorder folds the histograms' samples into their buckets, in milliseconds.
/// Until then each sample is kept (about 24 bytes): at 50,000 requests/s a node holds at most
/// about 6 MB of them, scraped or not (worked out from the crate's sample size, not measured). A scrape (`/metrics`, the operators' page) folds them too.
pub const METRICS_UPKEEP_INTERVAL_MS: u64 = 5_000;

/// The process-wide recorder (metrics has one global recorder; tests start many apps). Its
/// upkeep runs on a thread of its own every `METRICS_UPKEEP_INTERVAL_MS`: built without an
/// exporter, the recorder has no upkeep task, and without a scraper its histograms' samples
/// would grow without end.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(DURATION_BUCKETS_SECONDS)
                // The buckets are valid (non-empty, increasing); this cannot fail.
                .expect("histogram buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist only if a library installed one; then ours is unused
            // by the macros but still renders, which a test would notice at once.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("kuota-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(METRICS_UPKEEP_INTERVAL_MS));
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread for the metrics' upkeep");
            handle
        })
        .clone()
}

/// `kuota_admissions_total{outcome="sold_out_fast"}`: the counter of the hottest answer of a
/// sale, registered once per process. Through `counter!` every answer would build the key and
/// hash it in the recorder's registry; the handle is the registered atomic itself.
///
/// A handle reports to the recorder installed when it was made (a no-op one before), so this
/// installs the process's recorder first. That recorder is installed once and serves every app
/// the process starts (tests start many), so the one handle serves them all, as `counter!`
/// would.
pub fn sold_out_fast() -> &'static Counter {
    static COUNTER: LazyLock<Counter> = LazyLock::new(|| {
        recorder();
        ::metrics::counter!(ADMISSIONS, "outcome" => "sold_out_fast")
    });
    &COUNTER
}

/// `kuota_admission_limit`, `kuota_admission_in_flight` and `kuota_admission_refused_total`:
/// registered once per process, as `sold_out_fast`, because every registration updates them.
pub fn admission_limit() -> &'static Gauge {
    static GAUGE: LazyLock<Gauge> = LazyLock::new(|| {
        recorder();
        ::metrics::gauge!(ADMISSION_LIMIT)
    });
    &GAUGE
}

/// See `admission_limit`.
pub fn admission_in_flight() -> &'static Gauge {
    static GAUGE: LazyLock<Gauge> = LazyLock::new(|| {
        recorder();
        ::metrics::gauge!(ADMISSION_IN_FLIGHT)
    });
    &GAUGE
}

/// See `admission_limit`.
pub fn admission_refused() -> &'static Counter {
    static COUNTER: LazyLock<Counter> = LazyLock::new(|| {
        recorder();
        ::metrics::counter!(ADMISSION_REFUSED)
    });
    &COUNTER
}
