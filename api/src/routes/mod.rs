//! One file per resource, each with `configure`; shared request helpers here.

pub mod admin;
pub mod events;
pub mod operations;
pub mod registrations;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use crate::error::ApiError;

pub fn configure(config: &mut web::ServiceConfig) {
    events::configure(config);
    registrations::configure(config);
    admin::configure(config);
    operations::configure(config);
    crate::openapi::configure(config);
}

/// Reads a JSON request body: 415 unless the content type is JSON, 413 past `limit_bytes`
/// (checked against `Content-Length` first, then while reading, so a lying header changes
/// nothing).
pub async fn json_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media_type != "application/json"
        && !(media_type.starts_with("application/") && media_type.ends_with("+json"))
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit_bytes) {
        return Err(ApiError::PayloadTooLarge { limit_bytes });
    }
    read_bounded(&mut payload, declared.unwrap_or(0), limit_bytes).await
}

/// Reads a request body of at most `limit_bytes` (413 beyond it), however it arrives in chunks;
/// `expected_bytes` only sizes the buffer.
pub async fn read_bounded<S>(
    payload: &mut S,
    expected_bytes: usize,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin,
{
    let mut body = web::BytesMut::with_capacity(expected_bytes.min(limit_bytes));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|error| ApiError::MalformedBody(format!("the body could not be read: {error}")))?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(ApiError::PayloadTooLarge { limit_bytes });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
