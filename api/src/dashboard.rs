//! What the operators' page (`GET /admin`, see `routes::dashboard`) shows of this node: rates and
//! latencies over the last sampling interval, the write-behind, the store and Redis, the busy
//! flag, the events it runs, and the outbox.
//!
//! The counters are the process's Prometheus recorder, the very series `/metrics` exposes (one
//! node is one process), read back from its rendering: the recorder offers no other reading, and
//! reading it back keeps the request path free of a second set of counters. A view is computed
//! at most once per `DASHBOARD_SAMPLE_INTERVAL_MS` however many pages poll (each recomputation
//! renders the recorder and reads the outbox summary from the store), and its rates and p99s are
//! over the time since the previous one.

use std::time::{Duration, Instant};

use actix_web::web;
use kuota_persist::store::OutboxSummary;
use kuota_persist::write_behind::Histogram;
use serde::Serialize;

use crate::metrics;
use crate::state::AppState;

/// A node view is recomputed at most this often, in milliseconds; pages poll at this pace.
pub const DASHBOARD_SAMPLE_INTERVAL_MS: u64 = 1_000;
/// A previous sample older than this, in milliseconds, is not used for rates (no page asked for
/// a while): averaged over that long they would not be "now", so the view starts over.
pub const DASHBOARD_SAMPLE_STALE_MS: u64 = 10_000;
/// Outbox entries counted at most per status, so that a large backlog costs a bounded read.
pub const OUTBOX_COUNT_MAX: u64 = 100_000;

/// The route whose requests are long-lived streams: their "duration" is a connection's life,
/// so it stays out of the request p99.
const STREAM_ROUTE: &str = "/v1/events/{event_id}/stream";
/// `kuota_admissions_total` outcomes that took a seat or a waitlist place.
const ADMITTED_OUTCOMES: [&str; 3] = ["confirmed", "held", "waitlisted"];
/// `kuota_admissions_total` outcomes that found the category sold out.
const SOLD_OUT_OUTCOMES: [&str; 2] = ["sold_out", "sold_out_fast"];

/// The node as the page shows it: `GET /v1/admin/dashboard/node`.
///
/// Queued events' lengths and admission rates come with their figures in
/// `GET /v1/admin/dashboard/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    #[schema(example = "node-a")]
    pub node_id: String,
    /// When the view was computed, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The time the rates and p99s below cover, in seconds; 0 for a node's first view, and the
    /// first after no page asked for `DASHBOARD_SAMPLE_STALE_MS`: no rates or p99s yet.
    pub interval_seconds: f64,
    /// Registrations that took a seat or a waitlist place, per second.
    pub admissions_per_second: f64,
    /// Registrations refused, per second, by reason.
    pub refusals_per_second: RefusalRates,
    /// Registrations refused since the process started, by reason.
    pub refusals_total: RefusalCounts,
    /// Admitted since the process started.
    pub admissions_total: u64,
    /// The 99th percentile of request durations over the interval (all routes but streams), as
    /// the upper bound of its histogram bucket; `null` without requests.
    #[schema(required = true)]
    pub request_p99_seconds: Option<f64>,
    pub write_behind: WriteBehindView,
    /// `up` or `down`.
    #[schema(example = "up")]
    pub store: &'static str,
    /// `up`, `down`, or `not_configured`.
    #[schema(example = "up")]
    pub redis: &'static str,
    #[schema(value_type = crate::responses::Busy)]
    pub busy: crate::state::Busy,
    /// The events whose actor runs on this node.
    pub owned_events: Vec<String>,
    /// Open availability streams on this node, and their cap.
    pub stream_subscribers: usize,
    pub stream_subscribers_max: usize,
    /// `null` when the store did not answer.
    #[schema(required = true)]
    pub outbox: Option<OutboxView>,
    /// The webhook messages (one per outbox entry and endpoint that wants it): not yet
    /// delivered, the longest overdue, dead. `null` when the store did not answer.
    #[schema(required = true)]
    pub webhooks: Option<OutboxView>,
}

/// Registrations refused per second, by reason.
#[derive(Clone, Copy, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct RefusalRates {
    /// 409 `sold_out`.
    pub sold_out: f64,
    /// 429 `rate_limited`.
    pub rate_limited: f64,
    /// 503 `overloaded` (any shed request, registrations or not).
    pub overloaded: f64,
}

/// Registrations refused since the process started, by reason (as `RefusalRates`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusalCounts {
    pub sold_out: u64,
    pub rate_limited: u64,
    pub overloaded: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WriteBehindView {
    /// Submissions queued or being committed.
    pub backlog: u64,
    /// The 99th percentile of commit durations over the interval (bucket upper bound); `null`
    /// without commits.
    #[schema(required = true)]
    pub commit_p99_seconds: Option<f64>,
    pub stalled: bool,
    pub breaker_open: bool,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    /// Entries not yet delivered; counted up to `count_max`. For the outbox, the creations its
    /// worker has not yet derived from the registration rows are among them.
    pub pending: u64,
    /// How long the longest-waiting due entry has waited past its due time, in seconds.
    pub oldest_due_age_seconds: f64,
    /// Entries out of attempts, kept for an operator; counted up to `count_max`.
    pub dead: u64,
    pub count_max: u64,
}

impl From<OutboxSummary> for OutboxView {
    fn from(summary: OutboxSummary) -> Self {
        OutboxView {
            pending: summary.pending,
            oldest_due_age_seconds: summary.oldest_due_age_ms as f64 / 1_000.0,
            dead: summary.dead,
            count_max: OUTBOX_COUNT_MAX,
        }
    }
}

/// The cumulative figures one view is computed from.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counters {
    admitted: u64,
    refused: RefusalCounts,
    /// Cumulative request counts per bucket upper bound (seconds), ascending, `+Inf` last.
    request_buckets: Vec<(f64, u64)>,
    commit_latency_micros: Option<Histogram>,
}

/// The latest view and what it was computed from.
#[derive(Debug)]
struct Sample {
    taken: Instant,
    counters: Counters,
    /// The view, serialized once for every page that asks within the interval.
    view: web::Bytes,
}

/// See the module documentation; one per app.
#[derive(Debug, Default)]
pub struct Sampler {
    /// An async lock: pages that poll at once wait for one computation instead of each running
    /// their own (it awaits the store).
    latest: tokio::sync::Mutex<Option<Sample>>,
}

impl Sampler {
    /// The node's view as JSON, recomputed when the latest is older than the sampling interval.
    pub async fn view(&self, state: &AppState) -> web::Bytes {
        let mut latest = self.latest.lock().await;
        let interval = Duration::from_millis(DASHBOARD_SAMPLE_INTERVAL_MS);
        if let Some(sample) = latest.as_ref()
            && sample.taken.elapsed() < interval
        {
            return sample.view.clone();
        }
        let taken = Instant::now();
        let mut counters = read_counters(&state.metrics.render());
        counters.commit_latency_micros = Some(state.shedding.write_behind.stats().commit_latency_micros);
        // A store that did not answer its latest probe is not asked: the pages would wait for
        // its timeout every second.
        let (outbox, webhooks) = if state.health.store_answers() {
            let now = state.clock.now();
            let read = |summary: Result<OutboxSummary, kuota_persist::store::PersistError>, what: &str| {
                match summary {
                    Ok(summary) => Some(OutboxView::from(summary)),
                    Err(error) => {
                        tracing::warn!(error = %error.chain(), "the {what} summary could not be read");
                        None
                    }
                }
            };
            (
                read(state.store.outbox_summary(now, OUTBOX_COUNT_MAX).await, "outbox"),
                read(state.store.webhook_summary(now, OUTBOX_COUNT_MAX).await, "webhook"),
            )
        } else {
            (None, None)
        };
        let stale = Duration::from_millis(DASHBOARD_SAMPLE_STALE_MS);
        let previous = latest
            .as_ref()
            .filter(|sample| taken.duration_since(sample.taken) < stale)
            .map(|sample| (sample.taken, &sample.counters));
        let view = node_view(state, previous, taken, &counters, Backlogs { outbox, webhooks });
        // The view holds strings, numbers and booleans (non-finite p99s are `None`), which
        // always serialize.
        let view = web::Bytes::from(serde_json::to_vec(&view).expect("the node view serializes"));
        *latest = Some(Sample { taken, counters, view: view.clone() });
        view
    }
}

/// What the store said of the outbox and the webhook messages (`None`: it did not answer).
struct Backlogs {
    outbox: Option<OutboxView>,
    webhooks: Option<OutboxView>,
}

fn node_view(
    state: &AppState,
    previous: Option<(Instant, &Counters)>,
    taken: Instant,
    counters: &Counters,
    backlogs: Backlogs,
) -> NodeView {
    // Without a previous sample there is no interval: no rates and no p99s yet.
    let Some((previous_at, before)) = previous else {
        return node_view_at(state, 0.0, counters, counters, backlogs);
    };
    node_view_at(state, taken.duration_since(previous_at).as_secs_f64(), before, counters, backlogs)
}

/// The view of the `seconds` between the readings `before` and `counters`.
fn node_view_at(
    state: &AppState,
    seconds: f64,
    before: &Counters,
    counters: &Counters,
    backlogs: Backlogs,
) -> NodeView {
    let rate =
        |now: u64, then: u64| if seconds > 0.0 { now.saturating_sub(then) as f64 / seconds } else { 0.0 };
    let commit_p99_seconds = counters.commit_latency_micros.as_ref().and_then(|now| {
        let micros =
            histogram_since(now, before.commit_latency_micros.as_ref()).quantile_upper_bound(0.99)?;
        // Beyond the last bound there is no upper bound to show.
        (micros != u64::MAX).then(|| micros as f64 / 1e6)
    });
    let mut owned_events: Vec<String> =
        state.events.registry.mailbox_depths().into_iter().map(|(event, _)| event.to_string()).collect();
    owned_events.sort_unstable();
    NodeView {
        node_id: state.cluster.node_id().to_string(),
        at_ms: state.now_ms(),
        interval_seconds: seconds,
        admissions_per_second: rate(counters.admitted, before.admitted),
        refusals_per_second: RefusalRates {
            sold_out: rate(counters.refused.sold_out, before.refused.sold_out),
            rate_limited: rate(counters.refused.rate_limited, before.refused.rate_limited),
            overloaded: rate(counters.refused.overloaded, before.refused.overloaded),
        },
        refusals_total: counters.refused,
        admissions_total: counters.admitted,
        request_p99_seconds: bucket_quantile(&counters.request_buckets, &before.request_buckets, 0.99),
        write_behind: WriteBehindView {
            backlog: state.shedding.write_behind.queue_depth() as u64,
            commit_p99_seconds,
            stalled: state.shedding.write_behind.stalled(),
            breaker_open: state.shedding.write_behind.breaker_open(),
        },
        store: if state.health.store_answers() { "up" } else { "down" },
        redis: match (&state.redis, state.health.redis_answers()) {
            (None, _) => "not_configured",
            (Some(_), true) => "up",
            (Some(_), false) => "down",
        },
        busy: state.shedding.busy(),
        owned_events,
        stream_subscribers: state.stream_subscribers.load(std::sync::atomic::Ordering::Relaxed),
        stream_subscribers_max: crate::routes::events::STREAM_SUBSCRIBERS_MAX,
        outbox: backlogs.outbox,
        webhooks: backlogs.webhooks,
    }
}

/// The observations of `now` made since `then` (the same writer's histogram, read earlier).
fn histogram_since(now: &Histogram, then: Option<&Histogram>) -> Histogram {
    let counts = match then {
        Some(then) if then.counts.len() == now.counts.len() => {
            now.counts.iter().zip(&then.counts).map(|(now, then)| now.saturating_sub(*then)).collect()
        }
        _ => now.counts.clone(),
    };
    Histogram {
        bounds: now.bounds.clone(),
        counts,
        sum: now.sum.saturating_sub(then.map_or(0, |then| then.sum)),
    }
}

/// The upper bound of the bucket holding the `quantile` of the observations made between two
/// readings of cumulative buckets; `None` without observations or beyond the last finite bound.
fn bucket_quantile(now: &[(f64, u64)], then: &[(f64, u64)], quantile: f64) -> Option<f64> {
    let before = |bound: f64| then.iter().find(|(other, _)| *other == bound).map_or(0, |(_, count)| *count);
    let window: Vec<(f64, u64)> =
        now.iter().map(|(bound, count)| (*bound, count.saturating_sub(before(*bound)))).collect();
    let total = window.last().map_or(0, |(_, count)| *count);
    if total == 0 {
        return None;
    }
    let rank = ((quantile * total as f64).ceil() as u64).max(1);
    window.iter().find(|(_, count)| *count >= rank).map(|(bound, _)| *bound).filter(|bound| bound.is_finite())
}

/// Reads the figures of `Counters` from the recorder's Prometheus text (see the module
/// documentation). Lines it does not know are skipped.
fn read_counters(text: &str) -> Counters {
    let mut counters = Counters::default();
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let value = value as u64;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| label_value(labels, key);
        match name {
            metrics::ADMISSIONS => {
                let outcome = label("outcome").unwrap_or_default();
                if ADMITTED_OUTCOMES.contains(&outcome) {
                    counters.admitted += value;
                } else if SOLD_OUT_OUTCOMES.contains(&outcome) {
                    counters.refused.sold_out += value;
                }
            }
            metrics::RATE_LIMITED => counters.refused.rate_limited += value,
            metrics::SHED => counters.refused.overloaded += value,
            _ if name == format!("{}_bucket", metrics::HTTP_REQUEST_DURATION) => {
                if label("route") == Some(STREAM_ROUTE) {
                    continue;
                }
                let bound = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(bound) => match bound.parse::<f64>() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match buckets.iter_mut().find(|(other, _)| *other == bound) {
                    Some((_, count)) => *count += value,
                    None => buckets.push((bound, value)),
                }
            }
            _ => {}
        }
    }
    buckets.sort_by(|(left, _), (right, _)| left.total_cmp(right));
    counters.request_buckets = buckets;
    counters
}

/// The value of `key` in a series' labels (`a="x",b="y"}`). Kuota's label values hold no
/// quotes or commas, so no unescaping is needed.
fn label_value<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.trim_end_matches('}').split(',').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| value.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE kuota_admissions_total counter
kuota_admissions_total{outcome=\"confirmed\"} 7
kuota_admissions_total{outcome=\"held\"} 2
kuota_admissions_total{outcome=\"sold_out\"} 3
kuota_admissions_total{outcome=\"sold_out_fast\"} 40
kuota_admissions_total{outcome=\"already_registered\"} 1
kuota_rate_limited_total 5
kuota_shed_total{reason=\"the event's queue is full\"} 4
kuota_shed_total{reason=\"too many stream subscribers\"} 1
kuota_http_request_duration_seconds_bucket{route=\"/v1/events\",method=\"POST\",status=\"201\",le=\"0.001\"} 1
kuota_http_request_duration_seconds_bucket{route=\"/v1/events\",method=\"POST\",status=\"201\",le=\"0.01\"} 2
kuota_http_request_duration_seconds_bucket{route=\"/v1/events\",method=\"POST\",status=\"201\",le=\"+Inf\"} 2
kuota_http_request_duration_seconds_bucket{route=\"/v1/events/{event_id}/stream\",method=\"GET\",status=\"200\",le=\"+Inf\"} 9
kuota_http_request_duration_seconds_bucket{route=\"/v1/events/{event_id}\",method=\"GET\",status=\"200\",le=\"0.001\"} 98
kuota_http_request_duration_seconds_bucket{route=\"/v1/events/{event_id}\",method=\"GET\",status=\"200\",le=\"0.01\"} 98
kuota_http_request_duration_seconds_bucket{route=\"/v1/events/{event_id}\",method=\"GET\",status=\"200\",le=\"+Inf\"} 98
";

    #[test]
    fn the_counters_are_read_from_the_recorders_text() {
        let counters = read_counters(TEXT);
        assert_eq!(counters.admitted, 9);
        assert_eq!(counters.refused.sold_out, 43);
        assert_eq!(counters.refused.rate_limited, 5);
        assert_eq!(counters.refused.overloaded, 5);
        // Streams are left out; the other routes' buckets are summed per bound.
        assert_eq!(counters.request_buckets, vec![(0.001, 99), (0.01, 100), (f64::INFINITY, 100)]);
    }

    #[test]
    fn the_p99_is_over_the_requests_between_two_readings() {
        let then = vec![(0.001, 99), (0.01, 100), (f64::INFINITY, 100)];
        let now = vec![(0.001, 99), (0.01, 105), (f64::INFINITY, 105)];
        // Since `then`, 5 requests, all between 1 and 10 ms; over all time the p99 would be 1 ms.
        assert_eq!(bucket_quantile(&now, &then, 0.99), Some(0.01));
        assert_eq!(bucket_quantile(&now, &[], 0.99), Some(0.01));
        assert_eq!(bucket_quantile(&then, &then, 0.99), None);
        let slow = vec![(0.001, 99), (0.01, 100), (f64::INFINITY, 200)];
        assert_eq!(bucket_quantile(&slow, &then, 0.99), None, "beyond the last finite bound");
    }

    #[test]
    fn a_histogram_since_an_earlier_reading_holds_only_the_new_observations() {
        let then = Histogram { bounds: vec![10, 100], counts: vec![5, 1, 0], sum: 100 };
        let now = Histogram { bounds: vec![10, 100], counts: vec![5, 4, 0], sum: 250 };
        let since = histogram_since(&now, Some(&then));
        assert_eq!(since.counts, vec![0, 3, 0]);
        assert_eq!(since.quantile_upper_bound(0.99), Some(100));
    }
}
