//! Every error the API answers with, as an RFC 9457 problem document with a stable `code`.
//! Unexpected failures keep their cause in the log and never in the response.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use kuota_engine::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::time_format;

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({ "field": "email", "message": "an e-mail address needs an '@'" }))]
pub struct FieldError {
    /// The field's name; nested fields as `categories[0].capacity` or `queue.overbook`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError { field: field.to_string(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    #[error("{0}")]
    IdempotencyKeyInvalid(String),
    #[error("{0}")]
    MalformedBody(String),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0} was not found")]
    NotFound(&'static str),
    #[error("a credential is required")]
    Unauthorized,
    #[error("the resource does not answer this method; see Allow")]
    MethodNotAllowed,
    /// A refusal decided by the event (sold out, already registered, ...), with extra members.
    #[error("{detail}")]
    Conflict { status: StatusCode, code: &'static str, detail: String, extra: ProblemExtra },
    #[error("the same Idempotency-Key is still being processed")]
    KeyInFlight,
    #[error("the Idempotency-Key was used with a different body")]
    KeyReused,
    #[error("too many requests")]
    RateLimited { retry_after_seconds: u64, policy: String, state: String },
    #[error("{reason}")]
    Overloaded { reason: &'static str, retry_after_seconds: u64 },
    #[error("the queue holds as many tickets as it may")]
    QueueFull { retry_after_seconds: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// How long a client should wait after the store did not answer, in seconds: the store is
/// probed every quarter second, and a stall is short or long, never worth a tight loop.
pub const STORE_UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 1;

/// A store that did not answer in time, or failed in a way that may pass (a lost connection, a
/// deadlock), is a 503 with `Retry-After`: the request may work shortly. Anything else is the
/// unexpected, a 500 whose cause stays in the log.
impl From<kuota_persist::store::PersistError> for ApiError {
    fn from(error: kuota_persist::store::PersistError) -> Self {
        use kuota_persist::store::FailureKind;
        // Timed-out calls and connection waits are transient (`PersistError::failure_kind`).
        if error.failure_kind() == FailureKind::Transient {
            tracing::warn!(error = %error.chain(), "the store did not answer");
            ::metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
            return ApiError::overloaded(
                "the store did not answer; retry",
                STORE_UNAVAILABLE_RETRY_AFTER_SECONDS,
            );
        }
        ApiError::Internal(anyhow::Error::new(error).context("the store failed"))
    }
}

/// How long a client should wait after the session store (Redis, or this node's memory) did not
/// answer or was full, in seconds.
pub const SESSION_STORE_RETRY_AFTER_SECONDS: u64 = 1;

/// The session store's boundary: unavailable or full is a 503 with `Retry-After` (logging in or
/// checking a session may work shortly); a session the API itself built wrong is the unexpected.
impl From<kuota_persist::session::SessionError> for ApiError {
    fn from(error: kuota_persist::session::SessionError) -> Self {
        use kuota_persist::session::SessionError;
        match error {
            SessionError::Unavailable(_) | SessionError::Full { .. } => {
                tracing::warn!(%error, "the session store refused");
                ApiError::overloaded(
                    "the session store is unavailable; retry",
                    SESSION_STORE_RETRY_AFTER_SECONDS,
                )
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("the session store failed")),
        }
    }
}

/// The members a problem document has besides the standard ones, for some codes.
#[derive(Debug, Default)]
pub struct ProblemExtra {
    /// With `not_open` from a registration: when registration opens.
    pub opens_at: Option<Timestamp>,
    /// With `not_open` from a queue join: when the lobby opens.
    pub lobby_opens_at: Option<Timestamp>,
    /// With `capacity_below_taken`: the seats confirmed or held.
    pub taken: Option<u32>,
}

impl ApiError {
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            status: StatusCode::CONFLICT,
            code,
            detail: detail.into(),
            extra: ProblemExtra::default(),
        }
    }

    pub fn overloaded(reason: &'static str, retry_after_seconds: u64) -> Self {
        ApiError::Overloaded { reason, retry_after_seconds }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::IdempotencyKeyMissing => "idempotency_key_missing",
            ApiError::IdempotencyKeyInvalid(_) => "idempotency_key_invalid",
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Validation(_) | ApiError::InvalidQuery(_) => "validation_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::KeyInFlight => "idempotency_key_in_flight",
            ApiError::KeyReused => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::IdempotencyKeyMissing | ApiError::IdempotencyKeyInvalid(_) => "Invalid Idempotency-Key",
            ApiError::MalformedBody(_) => "Malformed body",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::Validation(_) | ApiError::InvalidQuery(_) => "Validation failed",
            ApiError::NotFound(_) => "Not found",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Conflict { .. } | ApiError::KeyInFlight => "Conflict",
            ApiError::KeyReused => "Idempotency-Key reused",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::Overloaded { .. } => "Overloaded",
            ApiError::QueueFull { .. } => "Queue full",
            ApiError::Internal(_) => "Internal error",
        }
    }
}

/// An RFC 9457 problem document: every error answer of the API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://kuota.dev/problems/sold_out",
    "title": "Conflict",
    "status": 409,
    "detail": "the category is sold out",
    "code": "sold_out"
}))]
pub struct Problem<'a> {
    /// A URI naming the kind of problem; ends with `code`.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    kind: String,
    title: &'a str,
    /// The HTTP status, repeated.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// Stable snake_case name of the problem, for programs (`sold_out`, `validation_failed`, ...).
    code: &'a str,
    /// Every invalid field, with `validation_failed` from a request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    /// With `not_open` from a registration: when registration opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    opens_at: Option<String>,
    /// With `not_open` from a queue join: when the queue's lobby opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    lobby_opens_at: Option<String>,
    /// With `capacity_below_taken`: the seats confirmed or held.
    #[serde(skip_serializing_if = "Option::is_none")]
    taken: Option<u32>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::IdempotencyKeyMissing
            | ApiError::IdempotencyKeyInvalid(_)
            | ApiError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) | ApiError::InvalidQuery(_) | ApiError::KeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { status, .. } => *status,
            ApiError::KeyInFlight => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. } | ApiError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(error) = self {
            tracing::error!(error = ?error, "request failed unexpectedly");
        }
        let code = self.code();
        let errors = match self {
            ApiError::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let no_extra = ProblemExtra::default();
        let extra = match self {
            ApiError::Conflict { extra, .. } => extra,
            _ => &no_extra,
        };
        let detail = match self {
            ApiError::Internal(_) => "the server failed unexpectedly; it has been logged".to_string(),
            other => other.to_string(),
        };
        let document = Problem {
            kind: format!("https://kuota.dev/problems/{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail,
            code,
            errors,
            opens_at: extra.opens_at.map(time_format::format),
            lobby_opens_at: extra.lobby_opens_at.map(time_format::format),
            taken: extra.taken,
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json")));
        match self {
            ApiError::KeyInFlight => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Overloaded { retry_after_seconds, .. }
            | ApiError::QueueFull { retry_after_seconds } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            ApiError::RateLimited { retry_after_seconds, policy, state } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
                response.insert_header(("RateLimit-Policy", policy.as_str()));
                response.insert_header(("RateLimit", state.as_str()));
            }
            _ => {}
        }
        // Serializing plain strings and numbers cannot fail.
        response.body(serde_json::to_vec(&document).expect("problem documents serialize"))
    }
}
