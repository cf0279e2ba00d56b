//! The parts of the OpenAPI document that every resource shares: the problem document, the
//! status names, the busy banner, and the error answers that read alike on every route. Routes
//! use them in their `#[utoipa::path]` attributes; `openapi` lists them once as components.

use utoipa::{IntoResponses, ToResponse, ToSchema};

pub use crate::error::{FieldError, Problem};

/// Where an event stands: before its window, open, after its window, or with no seat left.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Scheduled,
    Open,
    Closed,
    SoldOut,
}

/// What a registration request got.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionStatus {
    Confirmed,
    Held,
    Waitlisted,
}

/// Where a registration stands.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    Held,
    Confirmed,
    Waitlisted,
    Cancelled,
    Expired,
}

/// What a front end shows as the "system busy" banner.
#[derive(Debug, ToSchema)]
pub struct Busy {
    pub busy: bool,
    /// Why, when busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "requests are being shed")]
    pub reason: Option<String>,
}

/// No admin credential (`unauthorized`): the admin token as a bearer token, or the admin
/// session cookie.
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unauthorized(pub Problem<'static>);

/// No such event (`not_found`): the event's routes share this answer.
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct EventNotFound(pub Problem<'static>);

/// No credential at all (`unauthorized`): a registrant's token, the admin token or an admin
/// session is needed; a credential that is not this resource's gets 404, never revealing it.
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NoCredential(pub Problem<'static>);

/// No such resource (`not_found`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem<'static>);

/// The body is larger than the configured limit, 16 KiB by default (`payload_too_large`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem<'static>);

/// The body is not `application/json` (`unsupported_media_type`).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem<'static>);

/// The client is over its rate limit (`rate_limited`).
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(
        ("Retry-After" = u64, description = "Seconds to wait before retrying."),
        ("RateLimit-Policy" = String, description = "The limit that applies."),
        ("RateLimit" = String, description = "What is left of it.")
    )
)]
pub struct RateLimited(pub Problem<'static>);

/// The server sheds load (`overloaded`): a mailbox or the write-behind backlog is full, or the
/// store is failing. Retry after the given seconds.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
)]
pub struct Overloaded(pub Problem<'static>);

/// What every route that reads a JSON body may answer before reading it: the body is too large
/// (413) or not JSON (415). Routes list it in `responses(...)` as one entry.
#[derive(Debug, IntoResponses)]
pub enum JsonBodyRefused {
    #[response(status = 413)]
    TooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    NotJson(#[ref_response] UnsupportedMediaType),
}
