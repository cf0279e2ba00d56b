//! One attempt: the request the spec describes, and what its answer means.

use std::time::{Duration, SystemTime};

use actix_web::http::header::HttpDate;
use kuota_engine::Timestamp;
use kuota_persist::store::ClaimedMessage;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::webhooks::destination::{AllowHosts, GuardedResolver, check_url};
use crate::webhooks::retry::RETRY_DELAY_SECONDS_MAX;
use crate::webhooks::signing;

/// Idle connections kept per endpoint host, for the next attempts.
const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 4;

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Delivered,
    /// A 410: the receiver wants no more.
    Gone,
    /// Anything else; `retry_after` when a 429, 502, 503 or 504 said how long to wait.
    Failed { error: String, retry_after: Option<Duration> },
}

/// The HTTP client of every delivery (see the workspace's `Cargo.toml` for why reqwest).
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    allow: AllowHosts,
}

impl Sender {
    /// A client that follows no redirect, uses no proxy, gives up after `timeout`, and
    /// connects only to addresses `GuardedResolver` lets through.
    pub fn new(allow: AllowHosts, timeout: Duration) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .user_agent(concat!("Kuota-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(GuardedResolver::shared(allow.clone()))
            .build()?;
        Ok(Sender { client, allow })
    }

    /// Sends `message` once, signed at `now` with its endpoint's secrets.
    pub async fn attempt(&self, message: &ClaimedMessage, now: Timestamp) -> Answer {
        // The endpoint was checked when it was created; the rules may have changed since, and
        // an address in the URL never goes through the resolver, so `check_url` checks it here.
        let url = match check_url(&message.endpoint.url, &self.allow) {
            Ok(url) => url,
            Err(reason) => return failed(format!("the endpoint URL {reason}")),
        };
        let timestamp_seconds = now.as_millis() / 1_000;
        let secrets = message.endpoint.secrets_at(now);
        let signature = signing::signature_header(
            &secrets,
            &message.message_id,
            timestamp_seconds,
            message.body.as_bytes(),
        );
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.message_id)
            .header("webhook-timestamp", timestamp_seconds.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone());
        match request.send().await {
            Ok(response) => judge(response.status(), response.headers()),
            Err(error) if error.is_timeout() => failed("no answer within the timeout".into()),
            // The error's sources say why (refused, reset, TLS, DNS guard).
            Err(error) => failed(format!("{:#}", anyhow::Error::from(error))),
        }
    }
}

fn failed(error: String) -> Answer {
    Answer::Failed { error, retry_after: None }
}

/// What a status means: 2xx delivered, 410 gone, anything else (3xx included: redirects are
/// not followed) failed.
pub fn judge(status: StatusCode, headers: &HeaderMap) -> Answer {
    if status.is_success() {
        return Answer::Delivered;
    }
    if status == StatusCode::GONE {
        return Answer::Gone;
    }
    let honours_retry_after = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    let retry_after =
        honours_retry_after.then(|| headers.get(RETRY_AFTER)?.to_str().ok().and_then(retry_after)).flatten();
    Answer::Failed { error: format!("answered {status}"), retry_after }
}

/// A `Retry-After` value: seconds or an HTTP date, capped at `RETRY_DELAY_SECONDS_MAX`.
fn retry_after(text: &str) -> Option<Duration> {
    let delay = match text.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = SystemTime::from(text.trim().parse::<HttpDate>().ok()?);
            at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(Duration::from_secs(RETRY_DELAY_SECONDS_MAX)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, LOCATION};

    use super::*;

    fn with(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_2xx_delivers_and_a_redirect_is_a_failure() {
        assert_eq!(judge(StatusCode::NO_CONTENT, &HeaderMap::new()), Answer::Delivered);
        let redirect = judge(StatusCode::MOVED_PERMANENTLY, &with(LOCATION, "https://elsewhere.example/"));
        assert!(matches!(redirect, Answer::Failed { retry_after: None, .. }));
        assert_eq!(judge(StatusCode::GONE, &HeaderMap::new()), Answer::Gone);
    }

    #[test]
    fn retry_after_is_honoured_for_429_and_the_gateway_errors_only() {
        let headers = with(RETRY_AFTER, "120");
        for status in [429, 502, 503, 504] {
            let answer = judge(StatusCode::from_u16(status).unwrap(), &headers);
            assert!(
                matches!(answer, Answer::Failed { retry_after: Some(delay), .. } if delay.as_secs() == 120),
                "{status}"
            );
        }
        let answer = judge(StatusCode::INTERNAL_SERVER_ERROR, &headers);
        assert!(matches!(answer, Answer::Failed { retry_after: None, .. }));
    }

    fn message_to(url: String) -> ClaimedMessage {
        ClaimedMessage {
            id: 1,
            endpoint: kuota_persist::store::WebhookEndpoint {
                id: "ep_1".into(),
                url,
                description: None,
                event_types: vec!["registration.created".into()],
                secret: signing::new_secret(),
                previous_secret: None,
                disabled_reason: None,
                failing_since: None,
                created_at: Timestamp::from_millis(0),
            },
            message_id: "msg_1".into(),
            event_type: "registration.created".into(),
            body: "{}".into(),
            attempts: 0,
            created_at: Timestamp::from_millis(0),
        }
    }

    #[tokio::test]
    async fn an_internal_address_is_refused_before_any_request() {
        let sender = Sender::new(AllowHosts::default(), Duration::from_secs(1)).unwrap();
        let answer =
            sender.attempt(&message_to("http://127.0.0.1:9/hooks".into()), Timestamp::from_millis(0)).await;
        assert!(matches!(answer, Answer::Failed { ref error, .. } if error.contains("https")), "{answer:?}");
        let answer =
            sender.attempt(&message_to("https://10.0.0.1/hooks".into()), Timestamp::from_millis(0)).await;
        assert!(
            matches!(answer, Answer::Failed { ref error, .. } if error.contains("private")),
            "{answer:?}"
        );
    }

    #[test]
    fn a_retry_after_date_or_a_huge_value_is_understood_and_capped() {
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(retry_after("99999999999"), Some(Duration::from_secs(RETRY_DELAY_SECONDS_MAX)));
        assert_eq!(retry_after("soon"), None);
    }
}
