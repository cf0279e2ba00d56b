//! The registration use case (`POST /v1/events/{event_id}/registrations`), the hot path of a
//! sale: a seat, a place on the waitlist, or a refusal, decided by the event's actor and
//! acknowledged once committed.
//!
//! `answer` is its one door (see `crate::use_cases`). The fast answers stay here: a sold-out
//! category is refused from the published counters with a problem document rendered once per
//! process, before the access token and the fingerprint are derived.

use std::sync::{LazyLock, OnceLock};

use ::metrics::Counter;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::Stream;
use kuota_engine::actor::EventHandle;
use kuota_engine::{CategoryCode, Decision, EventId, Outcome, RegistrationId, Timestamp};
use serde::Serialize;

use crate::error::{ApiError, FieldError, ProblemExtra};
use crate::http::{QUEUE_PASS, mark_replayed};
use crate::state::AppState;
use crate::tokens::AccessToken;
use crate::use_cases::Submission;
use crate::{admission, domain, metrics, time_format};

/// A registration request, typed: the submission and, for a queued event, the `Queue-Pass`.
#[derive(Debug)]
pub struct RegisterRequest<'a> {
    pub event_id: &'a EventId,
    pub submission: Submission,
    /// The `Queue-Pass` header as sent; read only for a queued event.
    pub queue_pass: Option<&'a [u8]>,
}

/// Answers `POST /v1/events/{event_id}/registrations` for `event_id`: the route's handler calls
/// it, and so does the owner-routing layer for an event it `located` running here (then the
/// event is not looked up again).
pub async fn answer<P>(
    state: &AppState,
    event_id: &EventId,
    located: Option<EventHandle>,
    request: &HttpRequest,
    payload: P,
) -> Result<HttpResponse, ApiError>
where
    P: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    let submission = Submission::read(state, request, payload).await?;
    let queue_pass = request.headers().get(&QUEUE_PASS).map(HeaderValue::as_bytes);
    register(state, RegisterRequest { event_id, submission, queue_pass }, located).await
}

/// The answer to a registration request that got (or waits for) a seat, as the API's schema
/// names it; `AdmissionBody` writes it (a test holds its bytes to `serde_json`'s for this).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Admission<'a> {
    #[schema(example = "city-race.17")]
    id: String,
    #[schema(example = "city-race")]
    event_id: &'a str,
    #[schema(example = "10K")]
    category: &'a str,
    #[schema(value_type = crate::responses::AdmissionStatus)]
    status: &'static str,
    /// With `waitlisted`: 1 for the head of the waitlist.
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<u32>,
    /// With `held`: when the hold lapses unless confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The registrant's bearer token for `GET` and `DELETE /v1/registrations/{registration_id}`.
    access_token: &'a str,
    #[schema(format = DateTime)]
    created_at: String,
}

/// `<event>.<number>`: ids are opaque to clients, but they name their event.
pub fn external_id(event: &EventId, registration: RegistrationId) -> String {
    let mut number = itoa::Buffer::new();
    let number = number.format(registration.0);
    let mut id = String::with_capacity(event.as_str().len() + 1 + number.len());
    id.push_str(event.as_str());
    id.push('.');
    id.push_str(number);
    id
}

/// An admission's answer as it is written: its parts typed, each of an alphabet that JSON never
/// escapes (an event id's and a category code's `[A-Za-z0-9_-]`, the registration's number,
/// the three status labels, an access token's hexadecimal digits, a time's digits and
/// separators), so that each text goes between quotes as it is, without a look at its bytes
/// for escapes. The bytes are those `serde_json` writes for `Admission` (field order,
/// `skip_serializing_if`): every admission answers one, and the serializer's machinery cost
/// more than the rest of the answer.
struct AdmissionBody<'a> {
    event: &'a EventId,
    registration: RegistrationId,
    category: &'a CategoryCode,
    status: AdmissionLabel,
    waitlist_position: Option<u32>,
    expires_at: Option<Timestamp>,
    access_token: &'a AccessToken,
    created_at: Timestamp,
}

/// The `status` of an admission (`responses::AdmissionStatus`).
#[derive(Clone, Copy, Debug)]
enum AdmissionLabel {
    Confirmed,
    Held,
    Waitlisted,
}

impl AdmissionLabel {
    fn as_str(self) -> &'static str {
        match self {
            AdmissionLabel::Confirmed => "confirmed",
            AdmissionLabel::Held => "held",
            AdmissionLabel::Waitlisted => "waitlisted",
        }
    }
}

impl AdmissionBody<'_> {
    fn to_json(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(ADMISSION_BODY_BYTES);
        body.extend_from_slice(b"{\"id\":\"");
        body.extend_from_slice(self.event.as_str().as_bytes());
        body.push(b'.');
        body.extend_from_slice(itoa::Buffer::new().format(self.registration.0).as_bytes());
        body.extend_from_slice(b"\",\"event_id\":\"");
        body.extend_from_slice(self.event.as_str().as_bytes());
        body.extend_from_slice(b"\",\"category\":\"");
        body.extend_from_slice(self.category.as_bytes());
        body.extend_from_slice(b"\",\"status\":\"");
        body.extend_from_slice(self.status.as_str().as_bytes());
        body.push(b'"');
        if let Some(position) = self.waitlist_position {
            body.extend_from_slice(b",\"waitlist_position\":");
            body.extend_from_slice(itoa::Buffer::new().format(position).as_bytes());
        }
        if let Some(expires_at) = self.expires_at {
            body.extend_from_slice(b",\"expires_at\":\"");
            time_format::push(expires_at, &mut body);
            body.push(b'"');
        }
        body.extend_from_slice(b",\"access_token\":\"");
        body.extend_from_slice(self.access_token.as_bytes());
        body.extend_from_slice(b"\",\"created_at\":\"");
        time_format::push(self.created_at, &mut body);
        body.extend_from_slice(b"\"}");
        body
    }
}

/// Room for an admission's body with ids of common lengths (about 200 bytes), so that writing
/// it seldom grows the buffer.
const ADMISSION_BODY_BYTES: usize = 256;

fn admission_response(
    decision: &Decision,
    event: &EventId,
    category: &CategoryCode,
    access_token: &AccessToken,
    created_at: Timestamp,
    replayed: bool,
) -> Result<HttpResponse, ApiError> {
    let (status, registration, label, waitlist_position, expires_at) = match *decision {
        Decision::Confirmed { registration } => {
            (StatusCode::CREATED, registration, AdmissionLabel::Confirmed, None, None)
        }
        Decision::Held { registration, expires_at } => {
            (StatusCode::CREATED, registration, AdmissionLabel::Held, None, Some(expires_at))
        }
        Decision::Waitlisted { registration, position } => {
            (StatusCode::ACCEPTED, registration, AdmissionLabel::Waitlisted, Some(position), None)
        }
        _ => return Err(refusal(decision)),
    };
    let body = AdmissionBody {
        event,
        registration,
        category,
        status: label,
        waitlist_position,
        expires_at,
        access_token,
        created_at,
    };
    let mut response = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body.to_json());
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// The answer to a request refused as sold out from the published counters, the hottest answer
/// of a sale: the same status, headers and bytes as `refusal(&Decision::SoldOut)`, whose
/// problem document is serialized once per process instead of once per request.
fn sold_out_response() -> HttpResponse {
    static RENDERED: LazyLock<(StatusCode, HeaderValue, web::Bytes)> = LazyLock::new(|| {
        let response = refusal(&Decision::SoldOut).error_response();
        let status = response.status();
        // `ApiError::error_response` always sets the problem document's content type.
        let content_type =
            response.headers().get(header::CONTENT_TYPE).cloned().expect("a problem names its content type");
        // A problem document is one in-memory buffer, never a stream.
        let body = response.into_body().try_into_bytes().expect("a problem document is a single buffer");
        (status, content_type, body)
    });
    let (status, content_type, body) = &*RENDERED;
    // Made whole rather than through a builder, which moves the response (and boxes its body)
    // once more on the way: about 200 instructions of every sold-out answer (callgrind).
    let mut response = HttpResponse::with_body(*status, BoxBody::new(body.clone()));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    response
}

/// The problem document of a decision that refused a seat.
fn refusal(decision: &Decision) -> ApiError {
    match decision {
        Decision::SoldOut => ApiError::conflict("sold_out", "the category is sold out"),
        Decision::AlreadyRegistered => ApiError::conflict(
            "already_registered",
            "this registrant already has a registration for the event",
        ),
        Decision::NotOpen { opens_at } => ApiError::Conflict {
            status: StatusCode::CONFLICT,
            code: "not_open",
            detail: "registration has not opened yet".into(),
            extra: ProblemExtra { opens_at: Some(*opens_at), ..ProblemExtra::default() },
        },
        Decision::Closed => ApiError::conflict("closed", "registration has closed"),
        // Only refusals reach here; the admissions are answered by `admission_response`.
        other => ApiError::Internal(anyhow::anyhow!("{other:?} is not a refusal")),
    }
}

/// The `outcome` labels of `kuota_admissions_total` that a decided registration counts under,
/// indexed by `outcome_index`.
const OUTCOME_LABELS: [&str; 13] = [
    "confirmed",
    "held",
    "waitlisted",
    "sold_out",
    "already_registered",
    "not_open",
    "closed",
    "replayed",
    "queue_pass_required",
    "queue_pass_invalid",
    "key_in_flight",
    "key_reused",
    "other",
];

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Decided(Decision::Confirmed { .. }) => 0,
        Outcome::Decided(Decision::Held { .. }) => 1,
        Outcome::Decided(Decision::Waitlisted { .. }) => 2,
        Outcome::Decided(Decision::SoldOut) => 3,
        Outcome::Decided(Decision::AlreadyRegistered) => 4,
        Outcome::Decided(Decision::NotOpen { .. }) => 5,
        Outcome::Decided(Decision::Closed) => 6,
        Outcome::Replayed(_) => 7,
        Outcome::QueuePassRequired => 8,
        Outcome::QueuePassInvalid => 9,
        Outcome::KeyInFlight => 10,
        Outcome::KeyReused => 11,
        _ => 12,
    }
}

/// `kuota_admissions_total{outcome}` for `outcome`: each label's counter is registered on its
/// first use, as `counter!` registers it, and kept, as `metrics::sold_out_fast` keeps its own;
/// through `counter!` every registration built the key and hashed it in the recorder's registry.
fn admissions_counter(outcome: &Outcome) -> &'static Counter {
    static COUNTERS: [OnceLock<Counter>; OUTCOME_LABELS.len()] =
        [const { OnceLock::new() }; OUTCOME_LABELS.len()];
    let index = outcome_index(outcome);
    COUNTERS[index].get_or_init(|| {
        // A handle reports to the recorder installed when it was made (see `sold_out_fast`).
        metrics::recorder();
        ::metrics::counter!(metrics::ADMISSIONS, "outcome" => OUTCOME_LABELS[index])
    })
}

/// Decides a registration: the limits, the event, the body against the event's categories, then
/// the actor. `located` is the event when the caller found it running here.
#[tracing::instrument(name = "register", skip_all, fields(event_id = %request.event_id))]
pub async fn register(
    state: &AppState,
    request: RegisterRequest<'_>,
    located: Option<EventHandle>,
) -> Result<HttpResponse, ApiError> {
    let RegisterRequest { event_id, submission: Submission { key, body, client }, queue_pass } = request;
    state.limits.limit_client(client)?;
    let event = state.events.located_event(event_id, located).await?;
    let parsed = domain::registration(&body, event.config())?;
    state.limits.limit_registrant(&parsed.registrant).await?;
    // Sold out is answered from the published counters, unless this key may have been decided
    // before (then its decision must be replayed, which only the actor knows). This comes before
    // the access token and the fingerprint are derived: a sold-out answer needs neither. Not for
    // a queued event: its pass is checked before `sold_out`, and only the actor can.
    let queued = event.config().queue.is_some();
    let sold_out = !queued && event.counters().is_sold_out(&parsed.category, parsed.waitlist) == Some(true);
    if sold_out && !event.counters().may_have_seen_key(&key) {
        metrics::sold_out_fast().increment(1);
        return Ok(sold_out_response());
    }
    state.shedding.refuse_if_stalled()?;
    let category = parsed.category.clone();
    let (mut register, access_token) = parsed.into_register(event_id, key.clone(), &state.token_key);
    if queued && let Some(pass) = queue_pass {
        register.queue_pass = Some(crate::queue::parse_pass(&state.token_secret, event_id, pass));
    }
    // Past the adaptive limit on registrations in flight, refused at once (see `admission`).
    let _permit = state
        .shedding
        .admission
        .try_acquire()
        .ok_or_else(|| state.shedding.shed(admission::REFUSAL_REASON))?;
    let (outcome, decided_at) =
        event.register_timed(register).await.map_err(|error| state.shedding.actor_error(error))?;
    admissions_counter(&outcome).increment(1);
    match outcome {
        Outcome::Decided(decision) => {
            admission_response(&decision, event_id, &category, &access_token, decided_at, false)
        }
        // Boxed (see `owner_routing::route_to_owner`): a store query's state is large, and replays rare.
        Outcome::Replayed(decision) => Box::pin(replay(state, event_id, &access_token, &decision)).await,
        Outcome::KeyInFlight => Err(ApiError::KeyInFlight),
        Outcome::KeyReused => Err(ApiError::KeyReused),
        Outcome::IdempotencyFull => Err(state.shedding.shed("the event keeps too many idempotency keys")),
        Outcome::QueuePassRequired => Err(ApiError::Conflict {
            status: StatusCode::FORBIDDEN,
            code: "queue_pass_required",
            detail: "this event admits registrations through its queue: send the ticket's pass in Queue-Pass"
                .into(),
            extra: ProblemExtra::default(),
        }),
        Outcome::QueuePassInvalid => Err(ApiError::Conflict {
            status: StatusCode::FORBIDDEN,
            code: "queue_pass_invalid",
            detail: "the Queue-Pass is unknown, expired, used, another registrant's, or a waitlist pass \
                used for a seat"
                .into(),
            extra: ProblemExtra::default(),
        }),
        Outcome::UnknownCategory => {
            Err(ApiError::Validation(vec![FieldError::new("category", "is not a category of this event")]))
        }
        other => Err(ApiError::Internal(anyhow::anyhow!("unexpected outcome {other:?} for a registration"))),
    }
}

/// Answers a retry with the first decision's status and body, byte for byte: the body is
/// rebuilt from the stored registration (its category and creation time), and the token, being
/// derived from the event and the key, is the one the first answer carried.
async fn replay(
    state: &AppState,
    event: &EventId,
    access_token: &AccessToken,
    decision: &Decision,
) -> Result<HttpResponse, ApiError> {
    let Some(registration) = decision.registration() else {
        let mut response = actix_web::ResponseError::error_response(&refusal(decision));
        mark_replayed(&mut response);
        return Ok(response);
    };
    let row = state.store.registration(event, registration).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("replayed registration {registration} is not stored"))
    })?;
    admission_response(decision, event, &row.category, access_token, row.created_at, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Admission`, the schema, for an admission's typed parts: what `serde_json` writes for it
    /// is what `AdmissionBody::to_json` must write.
    fn schema<'a>(body: &'a AdmissionBody<'a>) -> Admission<'a> {
        Admission {
            id: external_id(body.event, body.registration),
            event_id: body.event.as_str(),
            category: body.category.as_str(),
            status: body.status.as_str(),
            waitlist_position: body.waitlist_position,
            expires_at: body.expires_at.map(time_format::format),
            access_token: body.access_token.as_str(),
            created_at: time_format::format(body.created_at),
        }
    }

    #[test]
    fn an_admission_is_written_as_serde_json_writes_it() {
        let token = crate::tokens::access_token(
            b"secret",
            &EventId::parse("race").unwrap(),
            &"k1".try_into().unwrap(),
        );
        // Every character of the code alphabet, the longest ids and codes, the largest numbers,
        // and times on both sides of year 9999 (whose writer takes another way).
        let events = ["city-race", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", "x"];
        let categories = ["10K", "half_marathon", "Zz09_-", &"c".repeat(32)];
        let times = [0, 1_795_521_600_123, 253_402_300_799_999, 253_402_300_800_000, u64::MAX / 2];
        let mut written = 0;
        for (index, event) in events.iter().enumerate() {
            let event = EventId::parse(event).unwrap();
            for category in categories {
                let category = CategoryCode::parse(category).unwrap();
                for (label, waitlist_position, expires_at) in [
                    (AdmissionLabel::Confirmed, None, None),
                    (AdmissionLabel::Held, None, Some(Timestamp::from_millis(times[index + 1]))),
                    (AdmissionLabel::Waitlisted, Some(1), None),
                    (AdmissionLabel::Waitlisted, Some(u32::MAX), None),
                ] {
                    for (registration, created_at) in
                        [(1, times[0]), (17, times[index + 2]), (u64::MAX, times[4])]
                    {
                        let body = AdmissionBody {
                            event: &event,
                            registration: RegistrationId(registration),
                            category: &category,
                            status: label,
                            waitlist_position,
                            expires_at,
                            access_token: &token,
                            created_at: Timestamp::from_millis(created_at),
                        };
                        let expected = serde_json::to_string(&schema(&body)).unwrap();
                        assert_eq!(String::from_utf8(body.to_json()).unwrap(), expected);
                        written += 1;
                    }
                }
            }
        }
        assert_eq!(written, 3 * 4 * 4 * 3);
    }

    /// What lets `AdmissionBody::to_json` write its texts as they are: every character that an
    /// event id or a category code may hold is one `serde_json` writes as it is. The characters
    /// it escapes (quotes, backslashes, control characters) and those beyond ASCII are refused
    /// by both parsers.
    #[test]
    fn every_character_of_an_event_id_or_a_code_is_one_json_writes_as_it_is() {
        let mut accepted = 0;
        let others = ['\u{7f}', '\u{80}', '\u{a0}', 'é', '\u{2028}', '\u{2029}', '\u{feff}', '😀'];
        for character in (0u8..=0x7f).map(char::from).chain(others) {
            let text = format!("a{character}b");
            let as_id = EventId::parse(&text).is_ok();
            assert_eq!(as_id, CategoryCode::parse(&text).is_ok(), "{text:?}");
            if as_id {
                assert_eq!(serde_json::to_string(&text).unwrap(), format!("\"{text}\""));
                accepted += 1;
            }
        }
        // A-Z, a-z, 0-9, '_' and '-'.
        assert_eq!(accepted, 26 + 26 + 10 + 2);
    }

    #[test]
    fn an_external_id_is_the_event_and_the_number() {
        let event = EventId::parse("city-race").unwrap();
        assert_eq!(external_id(&event, RegistrationId(17)), "city-race.17");
        assert_eq!(external_id(&event, RegistrationId(u64::MAX)), format!("city-race.{}", u64::MAX));
    }

    #[test]
    fn the_prerendered_sold_out_answer_is_the_refusal_byte_for_byte() {
        let expected = refusal(&Decision::SoldOut).error_response();
        let prerendered = sold_out_response();
        assert_eq!(prerendered.status(), expected.status());
        let headers = |response: &HttpResponse| {
            let mut headers: Vec<_> =
                response.headers().iter().map(|(name, value)| (name.clone(), value.clone())).collect();
            headers.sort_by(|left, right| left.0.as_str().cmp(right.0.as_str()));
            headers
        };
        assert_eq!(headers(&prerendered), headers(&expected));
        let body = |response: HttpResponse| response.into_body().try_into_bytes().ok().unwrap();
        assert_eq!(body(prerendered), body(expected));
    }
}
