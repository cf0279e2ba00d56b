//! What routes and use cases share for HTTP: reading a JSON body within its limit, the paging
//! parameters of listings, and the `Idempotent-Replayed` mark of a replay.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use crate::error::{ApiError, FieldError};

/// Items one listing page may hold: what the store reads at most per page.
pub const PAGE_LIMIT_MAX: u32 = kuota_persist::store::PAGE_SIZE_MAX;
/// Items a listing page holds when `limit` is absent.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;

/// The request headers every submitted write reads, as names made once: looking a header up by
/// a `&str` parses the name and, for a name that HTTP does not define, copies it into a new
/// allocation, on every request.
pub static IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");
/// See `IDEMPOTENCY_KEY`.
pub static QUEUE_PASS: header::HeaderName = header::HeaderName::from_static("queue-pass");

/// Marks `response` as the replay of an `Idempotency-Key` decided before (registrations and
/// queue joins alike): the header `Idempotent-Replayed: true`.
pub fn mark_replayed(response: &mut actix_web::HttpResponse) {
    response.headers_mut().insert(
        header::HeaderName::from_static("idempotent-replayed"),
        header::HeaderValue::from_static("true"),
    );
}

/// Parses `limit` (1–`PAGE_LIMIT_MAX`, default `PAGE_LIMIT_DEFAULT`) and a numeric `cursor` (the
/// last key of the previous page) of a keyset-paginated listing.
pub fn page_bounds(limit: Option<&str>, cursor: Option<&str>) -> Result<(u32, Option<u64>), ApiError> {
    let limit = match limit {
        None => PAGE_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=PAGE_LIMIT_MAX).contains(limit))
            .ok_or_else(|| ApiError::Validation(vec![FieldError::new("limit", "must be 1 to 500")]))?,
    };
    let cursor = match cursor.filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::Validation(vec![FieldError::new("cursor", "is not a cursor from a previous page")])
        })?),
    };
    Ok((limit, cursor))
}

/// Reads a JSON request body: 415 unless the content type is JSON, 413 past `limit_bytes`
/// (checked against `Content-Length` first, then while reading, so a lying header changes
/// nothing). Takes any payload stream: the handlers' `web::Payload`, and the registration fast
/// route's `dev::Payload`.
pub async fn json_body<S>(
    request: &HttpRequest,
    mut payload: S,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin,
{
    if !names_json(request.headers().get(header::CONTENT_TYPE)) {
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

/// Whether a request's `Content-Type` names JSON (`is_json`); a missing one, or one that is not
/// visible ASCII, names nothing.
fn names_json(content_type: Option<&header::HeaderValue>) -> bool {
    // What nearly every client sends, compared as bytes: `to_str` first checks every byte to be
    // visible ASCII, about 140 instructions per registration (callgrind).
    content_type.is_some_and(|value| value.as_bytes() == b"application/json")
        || is_json(content_type.and_then(|value| value.to_str().ok()).unwrap_or(""))
}

/// Whether a `Content-Type` names JSON: `application/json` or `application/*+json`, in any
/// case, with any parameters. Compared in place, without a lower-cased copy: every registration
/// asks.
fn is_json(content_type: &str) -> bool {
    // What nearly every client sends, as one comparison: splitting, trimming and comparing
    // without case was about 300 instructions per registration (callgrind).
    if content_type == "application/json" {
        return true;
    }
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let starts_with =
        |prefix: &str| media_type.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix));
    let ends_with = |suffix: &str| {
        let start = media_type.len().checked_sub(suffix.len());
        start.and_then(|start| media_type.get(start..)).is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    };
    media_type.eq_ignore_ascii_case("application/json") || (starts_with("application/") && ends_with("+json"))
}

/// Reads a request body of at most `limit_bytes` (413 beyond it), however it arrives in chunks;
/// `expected_bytes` only sizes the buffer. A body that arrives in one chunk (a registration's,
/// nearly always) is that chunk as it came, without a copy.
pub async fn read_bounded<S>(
    payload: &mut S,
    expected_bytes: usize,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin,
{
    let Some(first) = payload.next().await else {
        return Ok(web::Bytes::new());
    };
    let first = first.map_err(unreadable)?;
    if first.len() > limit_bytes {
        return Err(ApiError::PayloadTooLarge { limit_bytes });
    }
    let Some(mut next) = payload.next().await else {
        return Ok(first);
    };
    let mut body = web::BytesMut::with_capacity(expected_bytes.min(limit_bytes).max(first.len()));
    body.extend_from_slice(&first);
    loop {
        let chunk = next.map_err(unreadable)?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(ApiError::PayloadTooLarge { limit_bytes });
        }
        body.extend_from_slice(&chunk);
        match payload.next().await {
            Some(chunk) => next = chunk,
            None => return Ok(body.freeze()),
        }
    }
}

/// The body of the request that actix's HTTP/1 dispatcher is serving, read without handing it
/// the task's waker: for a future that the dispatcher itself polls (the request's service call),
/// and only there.
///
/// The dispatcher feeds the body in, and after every feed (a chunk, its end, an error) it polls
/// its service call again in the same pass; a waker kept by the body would only wake the task once
/// more. And it would: the dispatcher polls a request as soon as it has read its head, before it
/// feeds the body that came with it, so a registration's first poll always finds the body
/// missing. Woken by that feed, the connection's task, its request answered in the same pass,
/// ran once more for nothing (a read that found nothing, the keep-alive timer set again: about
/// 2,000 instructions per sold-out answer, callgrind). Every other wait of the service call
/// (the event's actor, the store, the deadline's timer) keeps the task's waker.
pub struct DispatcherFedBody(pub actix_web::dev::Payload);

impl std::fmt::Debug for DispatcherFedBody {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("DispatcherFedBody").finish_non_exhaustive()
    }
}

impl futures_util::Stream for DispatcherFedBody {
    type Item = Result<web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // Any other stream than the dispatcher's is polled as it asks.
        let fed_by_dispatcher = matches!(self.0, actix_web::dev::Payload::H1 { .. });
        let payload = std::pin::Pin::new(&mut self.0);
        if fed_by_dispatcher {
            payload.poll_next(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        } else {
            payload.poll_next(context)
        }
    }
}

fn unreadable(error: actix_web::error::PayloadError) -> ApiError {
    ApiError::MalformedBody(format!("the body could not be read: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body in chunks: each chunk as the payload yields it.
    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin {
        futures_util::stream::iter(
            parts.iter().map(|part| Ok(web::Bytes::from_static(part))).collect::<Vec<_>>(),
        )
    }

    #[actix_rt::test]
    async fn a_body_in_one_chunk_is_that_chunk_and_one_in_several_is_their_concatenation() {
        let whole: &'static [u8] = b"{\"category\":\"10K\"}";
        let body = read_bounded(&mut chunks(&[whole]), whole.len(), 64).await.unwrap();
        assert_eq!(body, whole);
        // The same bytes, not a copy of them.
        assert_eq!(body.as_ptr(), whole.as_ptr());
        let body = read_bounded(&mut chunks(&[b"{\"category\"", b":", b"\"10K\"}"]), 0, 64).await.unwrap();
        assert_eq!(body, whole);
        assert_eq!(read_bounded(&mut chunks(&[]), 0, 64).await.unwrap(), web::Bytes::new());
        assert_eq!(read_bounded(&mut chunks(&[b""]), 0, 64).await.unwrap(), web::Bytes::new());
        // The limit holds for a body in one chunk and one in several; at the limit, it is read.
        assert_eq!(read_bounded(&mut chunks(&[whole]), 0, whole.len()).await.unwrap(), whole);
        assert_eq!(
            read_bounded(&mut chunks(&[&whole[..5], &whole[5..]]), 0, whole.len()).await.unwrap(),
            whole
        );
        for parts in [&[whole][..], &[&whole[..5], &whole[5..]]] {
            let refused = read_bounded(&mut chunks(parts), 0, whole.len() - 1).await;
            assert!(
                matches!(refused, Err(ApiError::PayloadTooLarge { limit_bytes }) if limit_bytes == whole.len() - 1)
            );
        }
    }

    #[actix_rt::test]
    async fn a_body_that_cannot_be_read_is_malformed_in_any_chunk() {
        for failing_chunk in 0..3 {
            let parts = (0..3).map(|index| {
                if index == failing_chunk {
                    Err(actix_web::error::PayloadError::Incomplete(None))
                } else {
                    Ok(web::Bytes::from_static(b"{}"))
                }
            });
            let mut payload = futures_util::stream::iter(parts.collect::<Vec<_>>());
            let read = read_bounded(&mut payload, 0, 64).await;
            assert!(matches!(read, Err(ApiError::MalformedBody(_))), "chunk {failing_chunk}: {read:?}");
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The dispatcher's body is read without the reader's waker, any other stream with it (the
    /// dispatcher's waking nobody is held by a server test, `fast_route`).
    #[test]
    fn only_a_body_the_dispatcher_feeds_is_read_without_the_task_waker() {
        use futures_util::Stream;
        use std::task::{Context, Poll, Waker};
        let counting = std::sync::Arc::new(Counting::default());
        let waker = Waker::from(counting.clone());
        let mut context = Context::from_waker(&waker);
        let whole = actix_web::dev::Payload::from(web::Bytes::from_static(b"{}"));
        let mut fed = DispatcherFedBody(whole);
        let read = std::pin::Pin::new(&mut fed).poll_next(&mut context);
        assert!(matches!(read, Poll::Ready(Some(Ok(bytes))) if bytes == "{}"));
        assert!(matches!(std::pin::Pin::new(&mut fed).poll_next(&mut context), Poll::Ready(None)));
        let waking = futures_util::stream::poll_fn(|context: &mut Context<'_>| {
            context.waker().wake_by_ref();
            Poll::<Option<Result<web::Bytes, actix_web::error::PayloadError>>>::Ready(None)
        });
        let mut other = DispatcherFedBody(actix_web::dev::Payload::Stream { payload: Box::pin(waking) });
        assert!(matches!(std::pin::Pin::new(&mut other).poll_next(&mut context), Poll::Ready(None)));
        assert_eq!(
            counting.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the stream had the task's waker"
        );
    }

    /// A header names JSON as its text does (none when it is not visible ASCII, or missing).
    #[test]
    fn a_content_type_header_names_json_as_its_text_does() {
        let values: [&[u8]; 9] = [
            b"application/json",
            b"application/jsoN",
            b"application/json ",
            b"application/json\t",
            b"application/problem+json",
            b"application/json; charset=utf-8",
            b"application/json\xc3\xa9",
            b"\xffapplication/json",
            b"",
        ];
        for bytes in values {
            let value = header::HeaderValue::from_bytes(bytes).unwrap();
            let by_text = is_json(value.to_str().unwrap_or(""));
            assert_eq!(names_json(Some(&value)), by_text, "{bytes:?}");
        }
        assert!(names_json(Some(&header::HeaderValue::from_static("application/json"))));
        assert_eq!(names_json(None), is_json(""));
    }

    #[test]
    fn json_media_types_are_recognized_in_any_case_as_the_lower_cased_comparison_did() {
        let lower_cased = |content_type: &str| {
            let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            media_type == "application/json"
                || (media_type.starts_with("application/") && media_type.ends_with("+json"))
        };
        let content_types = [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=y",
            "application/problem+json",
            "APPLICATION/VND.KUOTA+JSON",
            "application/+json",
            "application/json5",
            "application/jsonx+jso",
            "text/json",
            "text/plain",
            "+json",
            "application/",
            "",
            ";application/json",
            "application/jsoN",
            "application/json;",
            "application/json ",
            "application/jso",
            "application/json+json",
        ];
        for content_type in content_types {
            assert_eq!(is_json(content_type), lower_cased(content_type), "{content_type:?}");
        }
    }
}
