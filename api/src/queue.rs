//! The queue's edge: the `queue` settings of `POST /v1/events`, the join body, and the secrets
//! a ticket hands out (its access token, its pass, its waitlist pass).
//!
//! Tokens and passes are HMAC-SHA-256 under the node group's secret (as registration tokens
//! are, see `tokens`) over the ticket's id: any node can check them without a store read, a
//! replay carries the same bytes, and a ticket's pass is the same string every time it is shown
//! (a ticket is admitted at most once). A pass names its ticket, so the owner finds the ticket
//! without an index; a pass that fails its check is handed to the engine as ticket 0, which no
//! ticket has, so that it is refused as `queue_pass_invalid` at the rule's place (after the
//! registration window) like any other unknown pass.

use actix_web::http::StatusCode;
use hmac::{Hmac, KeyInit, Mac};
use kuota_engine::limits::{
    OVERBOOK_PERMILLE_MAX, OVERBOOK_PERMILLE_MIN, PASS_TTL_SECONDS_MAX, PASS_TTL_SECONDS_MIN, QUEUE_MAX_LIMIT,
};
use kuota_engine::queue::hex;
use kuota_engine::{
    DrawSeed, EventId, QueueConfig, QueuePass, TicketId, TicketStatus, TicketView, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use sha2::Sha256;

use crate::domain::{Found, read_closed};
use crate::error::{ApiError, FieldError};
use crate::time_format;

/// Defaults of the `queue` settings (docs/design/API.md).
pub const PASS_TTL_SECONDS_DEFAULT: u32 = 600;
pub const OVERBOOK_PERMILLE_DEFAULT: u32 = 1_000;
pub const QUEUE_MAX_DEFAULT: u32 = 1_000_000;

/// `admit_per_second` at least (the engine paces in thousandths of a second's admissions) and
/// at most (so that those thousandths fit its arithmetic).
pub const ADMIT_PER_SECOND_MIN: f64 = 0.001;
pub const ADMIT_PER_SECOND_MAX: f64 = 1_000_000.0;

/// The `queue` object of a new event (`POST /v1/events`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "lobby_opens_at": "2026-11-24T09:30:00Z", "pass_ttl_seconds": 600, "overbook": 1.2 }))]
pub struct NewQueue {
    /// From here until `opens_at` joiners wait in the lobby; they are drawn at `opens_at`.
    /// Must be before the event's `opens_at`, which an event with a queue must have.
    #[serde(default)]
    #[schema(value_type = String, required = true, format = DateTime)]
    lobby_opens_at: Found<String>,
    /// How long an admitted ticket's pass is good for. A JSON integer.
    #[serde(default)]
    #[schema(value_type = Option<u32>, default = 600, minimum = 10, maximum = 86400)]
    pass_ttl_seconds: Found<Number>,
    /// Passes outstanding may reach ⌊overbook × seats available⌋.
    #[serde(default)]
    #[schema(value_type = Option<f64>, default = 1.0, minimum = 1.0, maximum = 10.0)]
    overbook: Found<Number>,
    /// Admissions per second at most (at least 0.001); none when absent.
    #[serde(default)]
    #[schema(value_type = Option<f64>, minimum = 0.001, maximum = 1000000.0)]
    admit_per_second: Found<Number>,
    /// Tickets the queue hands out at most. A JSON integer.
    #[serde(default)]
    #[schema(value_type = Option<u32>, default = 1000000, minimum = 1, maximum = 10000000)]
    queue_max: Found<Number>,
}

/// Parses the `queue` object of a new event. `None` without one; field errors name
/// `queue.<field>`.
pub(crate) fn settings(
    found: Found<Map<String, Value>>,
    opens_at: Option<Timestamp>,
    draw_seed: [u8; 32],
    errors: &mut Vec<FieldError>,
) -> Result<Option<QueueConfig>, ApiError> {
    let object = match found {
        Found::Absent => return Ok(None),
        Found::Present(object) => object,
        Found::Mistyped => {
            errors.push(FieldError::new("queue", "must be an object"));
            return Ok(None);
        }
    };
    let before = errors.len();
    let new: NewQueue = read_closed(object, "queue.", errors)?;
    let lobby_opens_at = match new.lobby_opens_at {
        Found::Present(text) => time_format::parse(&text).or_else(|| {
            errors.push(FieldError::new("queue.lobby_opens_at", "must be an RFC 3339 time"));
            None
        }),
        _ => {
            errors.push(FieldError::new("queue.lobby_opens_at", "is required and must be an RFC 3339 time"));
            None
        }
    };
    match (opens_at, lobby_opens_at) {
        (None, _) => errors.push(FieldError::new("opens_at", "is required for an event with a queue")),
        (Some(opens_at), Some(lobby)) if lobby >= opens_at => {
            errors.push(FieldError::new("queue.lobby_opens_at", "must be before opens_at"))
        }
        _ => {}
    }
    let pass_ttl_seconds =
        whole(new.pass_ttl_seconds, "pass_ttl_seconds", PASS_TTL_SECONDS_MIN, PASS_TTL_SECONDS_MAX, errors)
            .unwrap_or(PASS_TTL_SECONDS_DEFAULT);
    let queue_max =
        whole(new.queue_max, "queue_max", 1, QUEUE_MAX_LIMIT, errors).unwrap_or(QUEUE_MAX_DEFAULT);
    let overbook_permille = match new.overbook {
        Found::Absent => OVERBOOK_PERMILLE_DEFAULT,
        found => match found_f64(found) {
            Some(overbook)
                if (f64::from(OVERBOOK_PERMILLE_MIN) / 1_000.0
                    ..=f64::from(OVERBOOK_PERMILLE_MAX) / 1_000.0)
                    .contains(&overbook) =>
            {
                (overbook * 1_000.0).round() as u32
            }
            _ => {
                errors.push(FieldError::new("queue.overbook", "must be a number from 1.0 to 10.0"));
                OVERBOOK_PERMILLE_DEFAULT
            }
        },
    };
    let admit_per_kilosecond = match new.admit_per_second {
        Found::Absent => None,
        found => match found_f64(found) {
            // Thousandths: the smallest rate is one admission per 1,000 seconds.
            Some(rate) if (ADMIT_PER_SECOND_MIN..=ADMIT_PER_SECOND_MAX).contains(&rate) => {
                Some((rate * 1_000.0).round() as u64)
            }
            _ => {
                errors.push(FieldError::new(
                    "queue.admit_per_second",
                    format!("must be a number above 0 (at least {ADMIT_PER_SECOND_MIN}, at most {ADMIT_PER_SECOND_MAX})"),
                ));
                None
            }
        },
    };
    let Some(lobby_opens_at) = lobby_opens_at else { return Ok(None) };
    Ok((errors.len() == before).then_some(QueueConfig {
        lobby_opens_at,
        pass_ttl_seconds,
        overbook_permille,
        admit_per_kilosecond,
        queue_max,
        draw_seed: DrawSeed(draw_seed),
    }))
}

/// A number as a float; `None` for another JSON type.
fn found_f64(found: Found<Number>) -> Option<f64> {
    match found {
        Found::Present(number) => number.as_f64(),
        _ => None,
    }
}

/// A whole number field of `queue` within `min..=max`; `None` when absent or wrong.
fn whole(found: Found<Number>, field: &str, min: u32, max: u32, errors: &mut Vec<FieldError>) -> Option<u32> {
    let number = match found {
        Found::Absent => return None,
        Found::Present(number) => number.as_u64(),
        Found::Mistyped => None,
    };
    match number {
        Some(number) if (u64::from(min)..=u64::from(max)).contains(&number) => Some(number as u32),
        _ => {
            errors.push(FieldError::new(
                &format!("queue.{field}"),
                format!("must be a whole number from {min} to {max}"),
            ));
            None
        }
    }
}

fn mac(secret: &[u8], purpose: &str, ticket_text: &str) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(purpose.as_bytes());
    mac.update(b"\n");
    mac.update(ticket_text.as_bytes());
    hex(&mac.finalize().into_bytes()[..16])
}

/// The ticket's bearer token for `GET /v1/queue/{ticket_id}`.
pub fn access_token(secret: &[u8], event: &EventId, ticket: TicketId) -> String {
    mac(secret, "queue-ticket", &ticket.text(event))
}

/// Prefixes of the two kinds of pass.
const PASS_PREFIX: &str = "p.";
const WAITLIST_PASS_PREFIX: &str = "w.";

/// The pass an admitted ticket shows (`waitlist: false`), or a sold-out ticket's waitlist pass.
pub fn pass(secret: &[u8], event: &EventId, ticket: TicketId, waitlist: bool) -> String {
    let text = ticket.text(event);
    let (prefix, purpose) =
        if waitlist { (WAITLIST_PASS_PREFIX, "queue-waitlist-pass") } else { (PASS_PREFIX, "queue-pass") };
    format!("{prefix}{text}.{}", mac(secret, purpose, &text))
}

/// Reads a `Queue-Pass` header for `event`. A pass that is not one of this event's, or whose
/// signature fails, names ticket 0 (see the module documentation).
pub fn parse_pass(secret: &[u8], event: &EventId, header: &[u8]) -> QueuePass {
    let invalid = QueuePass { ticket: TicketId(0), waitlist: false };
    let Ok(text) = std::str::from_utf8(header) else { return invalid };
    let (waitlist, rest) = match (text.strip_prefix(PASS_PREFIX), text.strip_prefix(WAITLIST_PASS_PREFIX)) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return invalid,
    };
    let Some((ticket_text, _)) = rest.rsplit_once('.') else { return invalid };
    let Ok((pass_event, ticket)) = TicketId::parse(ticket_text) else { return invalid };
    let expected = pass(secret, event, ticket, waitlist);
    if pass_event != *event || !crate::tokens::constant_time_eq(&expected, text) {
        return invalid;
    }
    QueuePass { ticket, waitlist }
}

/// A ticket as the API shows it (`POST /v1/events/{event_id}/queue`, `GET /v1/queue/{ticket_id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QueueTicket)]
pub struct TicketBody {
    #[schema(example = "city-race.q17")]
    ticket_id: String,
    #[schema(example = "city-race")]
    event_id: String,
    /// The bearer token for `GET /v1/queue/{ticket_id}`: only in the answer that created the
    /// ticket, and in that answer's replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[schema(value_type = TicketStatusSchema)]
    status: &'static str,
    /// 1-based place in the whole queue order; `null` before the draw.
    #[schema(required = true)]
    position: Option<u32>,
    /// Tickets before this one that still wait; `null` before the draw.
    #[schema(required = true)]
    ahead: Option<u32>,
    /// `ahead` ÷ the admission rate over the last `pass_ttl_seconds` (at least 60 s, at most an
    /// hour), counting only admissions after the first pass ended (used or lapsed): the opening's
    /// burst of passes says nothing of how fast the line moves. A queue paced by
    /// `admit_per_second` has no burst and counts from its first admission. `null` while no rate
    /// is known (during the first pass lifetime, or when nobody was admitted in the window).
    #[schema(required = true)]
    eta_seconds: Option<u64>,
    /// When to ask again (2–60 s; shorter near the front); also sent as `Retry-After`.
    refresh_after_seconds: u32,
    /// With `admitted`: the `Queue-Pass` for one registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pass_expires_at: Option<String>,
    /// With `sold_out`: a `Queue-Pass` good only for a `waitlist: true` registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_pass: Option<String>,
}

impl TicketBody {
    pub fn new(secret: &[u8], event: &EventId, view: &TicketView, with_token: bool) -> Self {
        TicketBody {
            ticket_id: view.ticket.text(event),
            event_id: event.to_string(),
            access_token: with_token.then(|| access_token(secret, event, view.ticket)),
            status: view.status.as_str(),
            position: view.position,
            ahead: view.ahead,
            eta_seconds: view.eta_seconds,
            refresh_after_seconds: view.refresh_after_seconds,
            pass: (view.status == TicketStatus::Admitted).then(|| pass(secret, event, view.ticket, false)),
            pass_expires_at: view.pass_expires_at.map(time_format::format),
            waitlist_pass: (view.status == TicketStatus::SoldOut)
                .then(|| pass(secret, event, view.ticket, true)),
        }
    }
}

/// Where a ticket stands.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatusSchema {
    Lobby,
    Waiting,
    Admitted,
    Used,
    Expired,
    SoldOut,
}

/// 404 `no_queue`: the event has no queue.
pub fn no_queue() -> ApiError {
    ApiError::Conflict {
        status: StatusCode::NOT_FOUND,
        code: "no_queue",
        detail: "the event has no queue".into(),
        extra: crate::error::ProblemExtra::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventId {
        EventId::parse("race").unwrap()
    }

    #[test]
    fn a_pass_reads_back_as_its_ticket_and_kind() {
        let pass_text = pass(b"secret", &event(), TicketId(42), false);
        assert_eq!(
            parse_pass(b"secret", &event(), pass_text.as_bytes()),
            QueuePass { ticket: TicketId(42), waitlist: false }
        );
        let waitlist_text = pass(b"secret", &event(), TicketId(42), true);
        assert_eq!(
            parse_pass(b"secret", &event(), waitlist_text.as_bytes()),
            QueuePass { ticket: TicketId(42), waitlist: true }
        );
    }

    #[test]
    fn a_forged_or_foreign_pass_names_no_ticket() {
        let invalid = QueuePass { ticket: TicketId(0), waitlist: false };
        let other_secret = pass(b"other", &event(), TicketId(42), false);
        let other_event = pass(b"secret", &EventId::parse("other").unwrap(), TicketId(42), false);
        for bad in [other_secret.as_str(), other_event.as_str(), "p.race.q42.00", "x", "", "p.race.q0.ab"] {
            assert_eq!(parse_pass(b"secret", &event(), bad.as_bytes()), invalid, "{bad:?}");
        }
    }
}
