//! Folding a batch of effects into the rows one transaction writes. Pure: no SQL here, so that
//! what each effect means for the stored rows can be read (and tested) on its own. It mirrors
//! `kuota_engine::memory`, the reference for what each effect means.

use std::collections::BTreeMap;

use kuota_engine::{
    ActiveStatus, CategoryCode, Effect, EffectKind, Email, EventId, IdempotencyKey, RegistrationDetails,
    RegistrationId, Seq, StoredTicketState, TicketId, Timestamp,
};

use crate::store::error::PersistError;
use crate::store::queue::{JoinDecision, NewTicket, TicketRow, TicketRows};
use crate::store::rows::RowStatus;

/// Milliseconds as the database stores them. Timestamps beyond `i64::MAX` ms (292 million
/// years) cannot come from a clock; saturating keeps the conversion total.
pub(crate) fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// A counter (registration number, seq, epoch) as the database stores it (signed BIGINT).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored BIGINT back to a counter; a negative one was never written by Kuota.
pub(crate) fn unsigned(value: i64, column: &str) -> Result<u64, PersistError> {
    u64::try_from(value).map_err(|_| PersistError::InvalidRow(format!("{column} is negative: {value}")))
}

/// A decision as stored for replays (`idempotency_entries.decision_json`, and
/// `registrations.decision_json` in rows stored before migration 0011).
fn decision_json(decision: &kuota_engine::Decision) -> String {
    // A `Decision` is plain data (enums, integers); serializing it cannot fail.
    serde_json::to_string(decision).expect("a Decision serializes to JSON")
}

/// What a registration was created as: the status it got, with the hold's expiry or the place
/// on the waitlist. Its row keeps it in two columns that never change after (migration 0011):
/// `waitlist_position` (the place it joined the waitlist at; NULL unless created waitlisted)
/// and `created_hold_expires_at` (NULL unless created held). With the row's number, category
/// and key, they give back the decision that created it (replays of its key), its creation's
/// audit detail and the status of its `registration_created` entry, byte for byte what the two
/// JSON columns of rows stored before 0011 (`decision_json`, `created_detail_json`) hold: the
/// row carries neither anymore (MariaDB's CPU per row, docs/benchmarks.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Creation {
    Confirmed,
    Held { expires_at: Timestamp },
    Waitlisted { position: u32 },
}

impl Creation {
    pub fn of(status: ActiveStatus, waitlist_position: Option<u32>) -> Creation {
        match status {
            ActiveStatus::Confirmed => Creation::Confirmed,
            ActiveStatus::Held { expires_at } => Creation::Held { expires_at },
            // The engine gives every waitlisted creation its place (`EventQuota::register`).
            ActiveStatus::Waitlisted => {
                Creation::Waitlisted { position: waitlist_position.unwrap_or_default() }
            }
        }
    }

    /// From the row's `waitlist_position` and `created_hold_expires_at`.
    pub fn from_columns(
        waitlist_position: Option<i64>,
        created_hold_expires_at: Option<i64>,
    ) -> Result<Creation, PersistError> {
        let invalid = |what: &str| PersistError::InvalidRow(format!("registrations: {what}"));
        match (waitlist_position, created_hold_expires_at) {
            (None, None) => Ok(Creation::Confirmed),
            (None, Some(expires_at)) => {
                let expires_at = u64::try_from(expires_at).map_err(|_| invalid("a negative hold expiry"))?;
                Ok(Creation::Held { expires_at: Timestamp::from_millis(expires_at) })
            }
            (Some(position), None) => {
                let position =
                    u32::try_from(position).map_err(|_| invalid("a waitlist place out of range"))?;
                Ok(Creation::Waitlisted { position })
            }
            (Some(_), Some(_)) => Err(invalid("created both waitlisted and held")),
        }
    }

    /// `waitlist_position` and `created_hold_expires_at`.
    pub fn columns(self) -> (Option<i64>, Option<i64>) {
        match self {
            Creation::Confirmed => (None, None),
            Creation::Held { expires_at } => (None, Some(millis(expires_at))),
            Creation::Waitlisted { position } => (Some(i64::from(position)), None),
        }
    }

    pub fn status(self) -> RowStatus {
        match self {
            Creation::Confirmed => RowStatus::Confirmed,
            Creation::Held { .. } => RowStatus::Held,
            Creation::Waitlisted { .. } => RowStatus::Waitlisted,
        }
    }

    /// The decision that created registration `registration`.
    pub fn decision(self, registration: RegistrationId) -> kuota_engine::Decision {
        use kuota_engine::Decision;
        match self {
            Creation::Confirmed => Decision::Confirmed { registration },
            Creation::Held { expires_at } => Decision::Held { registration, expires_at },
            Creation::Waitlisted { position } => Decision::Waitlisted { registration, position },
        }
    }

    /// The detail of the creation's audit entry, as the writer stored it in
    /// `created_detail_json` before migration 0011.
    pub fn detail_json(self, category: &str, idempotency_key: Option<&str>) -> String {
        let (waitlist_position, hold_expires_at) = self.columns();
        detail_json(&AuditDetail::Created {
            category,
            status: self.status().as_str(),
            hold_expires_at,
            waitlist_position,
            idempotency_key,
        })
    }
}

/// A registration that this batch creates, in the state the batch leaves it in.
#[derive(Debug)]
pub(crate) struct NewRegistration<'a> {
    pub number: i64,
    pub category: &'a CategoryCode,
    pub email: &'a Email,
    pub details: &'a RegistrationDetails,
    pub status: RowStatus,
    pub hold_expires_at: Option<i64>,
    /// What it was created as (`waitlist_position` and `created_hold_expires_at`): with the
    /// row's number, category and key, the decision that created it (for replays of its key: a
    /// key that created a registration is remembered in the registration's row instead of an
    /// idempotency entry of its own) and its creation's audit detail (a creation is no
    /// audit_log row of its own, see `SqlStore::audit_page`).
    pub creation: Creation,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub fingerprint: Option<i64>,
    /// The seq of the effect that created it.
    pub created_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A registration stored by an earlier batch whose state this batch changes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RegistrationChange {
    pub number: i64,
    pub status: RowStatus,
    pub hold_expires_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug)]
pub(crate) struct IdempotencyEntry<'a> {
    pub key: &'a str,
    pub fingerprint: i64,
    pub decision_json: String,
    pub decided_at: i64,
}

#[derive(Debug)]
pub(crate) struct AuditEntry {
    pub seq: i64,
    pub registration: Option<i64>,
    pub kind: &'static str,
    pub detail_json: String,
    pub at: i64,
}

#[derive(Debug)]
pub(crate) struct OutboxEntry {
    pub registration: i64,
    pub kind: &'static str,
    pub payload_json: String,
    pub at: i64,
}

/// Everything one batch writes for one event.
#[derive(Debug)]
pub(crate) struct EventPlan<'a> {
    pub event: &'a EventId,
    pub epoch: u64,
    /// The stored `last_seq` once this plan is committed.
    pub last_seq: Seq,
    /// Effects at or below the stored `last_seq`: committed before, skipped now.
    pub skipped_effects: usize,
    pub applied_effects: usize,
    pub new_registrations: BTreeMap<u64, NewRegistration<'a>>,
    pub changes: BTreeMap<u64, RegistrationChange>,
    /// By key: a key decided twice in one batch keeps its latest decision.
    pub idempotency: BTreeMap<&'a str, IdempotencyEntry<'a>>,
    pub audit: Vec<AuditEntry>,
    pub outbox: Vec<OutboxEntry>,
    /// Category code → capacity; the latest change wins.
    pub capacities: BTreeMap<&'a str, i64>,
    /// Queue tickets created or changed, in the state the batch leaves them in.
    pub tickets: TicketRows<'a>,
}

impl<'a> EventPlan<'a> {
    pub fn new(event: &'a EventId, epoch: u64, stored_last_seq: Seq) -> Self {
        EventPlan {
            event,
            epoch,
            last_seq: stored_last_seq,
            skipped_effects: 0,
            applied_effects: 0,
            new_registrations: BTreeMap::new(),
            changes: BTreeMap::new(),
            idempotency: BTreeMap::new(),
            audit: Vec::new(),
            outbox: Vec::new(),
            capacities: BTreeMap::new(),
            tickets: BTreeMap::new(),
        }
    }

    /// Folds the effects of one submission in. Effects must continue the event's sequence
    /// without a gap: a gap means an earlier submission never reached the store, and writing
    /// on top of it would store decisions taken on state the store does not have.
    pub fn add(&mut self, effects: &'a [Effect]) -> Result<(), PersistError> {
        for effect in effects {
            if effect.seq <= self.last_seq {
                self.skipped_effects += 1;
                continue;
            }
            if effect.seq.0 != self.last_seq.0 + 1 {
                return Err(PersistError::Mismatch(format!(
                    "event {} got effect seq {} after seq {}",
                    self.event, effect.seq.0, self.last_seq.0
                )));
            }
            self.last_seq = effect.seq;
            self.applied_effects += 1;
            self.apply(effect);
        }
        Ok(())
    }

    fn apply(&mut self, effect: &'a Effect) {
        let at = millis(effect.at);
        let seq = signed(effect.seq.0);
        let (registration, kind, detail) = match &effect.kind {
            EffectKind::Created {
                registration,
                category_code,
                registrant,
                status,
                waitlist_position,
                idempotency,
                details,
                ..
            } => {
                let creation = Creation::of(*status, *waitlist_position);
                // Replays answer what the engine answered: the decision the row gives back is the
                // one the effect stands for.
                assert_eq!(
                    Some(creation.decision(*registration)),
                    effect.kind.decision(),
                    "the row of registration {} keeps the decision that created it",
                    registration.0
                );
                self.new_registrations.insert(
                    registration.0,
                    NewRegistration {
                        number: signed(registration.0),
                        category: category_code,
                        email: registrant,
                        details,
                        status: creation.status(),
                        hold_expires_at: hold_expiry(*status),
                        creation,
                        idempotency_key: idempotency.as_ref().map(|idempotency| &idempotency.key),
                        fingerprint: idempotency
                            .as_ref()
                            .map(|idempotency| fingerprint(idempotency.fingerprint.0)),
                        created_seq: seq,
                        created_at: at,
                        updated_at: at,
                    },
                );
                // The creation's audit entry and its outbox entry are the registration's row: the
                // delivery worker derives the entry from it (see `creations`).
                return;
            }
            EffectKind::Confirmed { registration } => {
                let number = self.change(registration.0, RowStatus::Confirmed, None, at);
                self.announce(number, "registration_confirmed", RowStatus::Confirmed, at);
                (Some(number), "confirmed", AuditDetail::Empty {})
            }
            EffectKind::Promoted { registration, status } => {
                let row_status = RowStatus::of_active(*status);
                let hold_expires_at = hold_expiry(*status);
                let number = self.change(registration.0, row_status, hold_expires_at, at);
                self.announce(number, "registration_promoted", row_status, at);
                let detail = AuditDetail::Promoted { status: row_status.as_str(), hold_expires_at };
                (Some(number), "promoted", detail)
            }
            EffectKind::Cancelled { registration } => {
                let number = self.change(registration.0, RowStatus::Cancelled, None, at);
                self.announce(number, "registration_cancelled", RowStatus::Cancelled, at);
                (Some(number), "cancelled", AuditDetail::Empty {})
            }
            EffectKind::Expired { registration } => {
                let number = self.change(registration.0, RowStatus::Expired, None, at);
                self.announce(number, "registration_expired", RowStatus::Expired, at);
                (Some(number), "expired", AuditDetail::Empty {})
            }
            EffectKind::DecisionRecorded { idempotency, decision } => {
                if self.keep_in_ticket(idempotency, decision, seq, at) {
                    // Its audit entry is the ticket's row too.
                    return;
                }
                self.remember(idempotency.key.as_str(), idempotency.fingerprint.0, decision, at);
                let detail =
                    AuditDetail::DecisionRecorded { idempotency_key: idempotency.key.as_str(), decision };
                (None, "decision_recorded", detail)
            }
            EffectKind::CapacityChanged { category_code, capacity, .. } => {
                self.capacities.insert(category_code.as_str(), i64::from(*capacity));
                let detail =
                    AuditDetail::CapacityChanged { category: category_code.as_str(), capacity: *capacity };
                (None, "capacity_changed", detail)
            }
            EffectKind::QueueJoined { ticket, registrant, lobby } => {
                let new = NewTicket {
                    email: registrant.as_str(),
                    lobby: *lobby,
                    created_seq: seq,
                    decision: None,
                    created_at: at,
                };
                let row = TicketRow {
                    number: signed(ticket.0),
                    new: Some(new),
                    state: StoredTicketState::Waiting,
                    registration: None,
                    pass_granted_at: None,
                    updated_at: at,
                };
                self.tickets.insert(ticket.0, row);
                // The creation's audit entry is the ticket's row (`joined_detail_json`).
                return;
            }
            EffectKind::QueueAdmitted { ticket, pass_expires_at } => {
                self.change_ticket(
                    *ticket,
                    StoredTicketState::Admitted { pass_expires_at: *pass_expires_at },
                    None,
                    at,
                );
                self.announce_admission(*ticket, *pass_expires_at, at);
                let detail =
                    AuditDetail::Ticket { ticket: ticket.0, pass_expires_at: Some(millis(*pass_expires_at)) };
                (None, "queue_admitted", detail)
            }
            EffectKind::QueuePassExpired { ticket } => {
                self.change_ticket(*ticket, StoredTicketState::Expired, None, at);
                (None, "queue_pass_expired", AuditDetail::Ticket { ticket: ticket.0, pass_expires_at: None })
            }
            EffectKind::QueuePassUsed { ticket, registration } => {
                let number = signed(registration.0);
                self.change_ticket(*ticket, StoredTicketState::Used, Some(number), at);
                (
                    Some(number),
                    "queue_pass_used",
                    AuditDetail::Ticket { ticket: ticket.0, pass_expires_at: None },
                )
            }
        };
        let detail_json = detail_json(&detail);
        self.audit.push(AuditEntry { seq, registration, kind, detail_json, at });
    }

    /// Applies a status change to a registration created in this batch, or records it as a
    /// change to a stored one. What it was created as stays (`Creation`).
    fn change(&mut self, registration: u64, status: RowStatus, hold_expires_at: Option<i64>, at: i64) -> i64 {
        let number = signed(registration);
        if let Some(created) = self.new_registrations.get_mut(&registration) {
            created.status = status;
            created.hold_expires_at = hold_expires_at;
            created.updated_at = at;
        } else {
            self.changes
                .insert(registration, RegistrationChange { number, status, hold_expires_at, updated_at: at });
        }
        number
    }

    /// Applies a state change to a ticket created in this batch, or records it as a change to
    /// a stored one.
    fn change_ticket(
        &mut self,
        ticket: TicketId,
        state: StoredTicketState,
        registration: Option<i64>,
        at: i64,
    ) {
        let row = self.tickets.entry(ticket.0).or_insert(TicketRow {
            number: signed(ticket.0),
            new: None,
            state,
            registration: None,
            pass_granted_at: None,
            updated_at: at,
        });
        row.state = state;
        row.registration = registration.or(row.registration);
        if let StoredTicketState::Admitted { .. } = state {
            row.pass_granted_at = Some(at);
        }
        row.updated_at = at;
    }

    /// Keeps a keyed join's decision in the row of the ticket it made, when this batch creates
    /// that ticket (it does: one command emits both effects, and a submission carries all of a
    /// command's effects), instead of an idempotency entry and an audit row: the join is then
    /// one row. `false` for every other decision, which is recorded as before.
    fn keep_in_ticket(
        &mut self,
        idempotency: &'a kuota_engine::Idempotency,
        decision: &kuota_engine::Decision,
        seq: i64,
        at: i64,
    ) -> bool {
        let kuota_engine::Decision::QueueJoined { new: true, view } = decision else { return false };
        let Some(TicketRow { new: Some(new), .. }) = self.tickets.get_mut(&view.ticket.0) else {
            return false;
        };
        // The audit shows the decision at the creation's time: only a decision taken then fits.
        if new.decision.is_some() || new.created_at != at {
            return false;
        }
        let key = idempotency.key.as_str();
        new.decision = Some(JoinDecision {
            key,
            fingerprint: fingerprint(idempotency.fingerprint.0),
            decision_json: decision_json(decision),
            seq,
        });
        // A key decided twice in one batch keeps its latest decision, here as in `remember`.
        self.idempotency.remove(key);
        true
    }

    fn remember(&mut self, key: &'a str, fingerprint_bits: u64, decision: &kuota_engine::Decision, at: i64) {
        let entry = IdempotencyEntry {
            key,
            fingerprint: fingerprint(fingerprint_bits),
            decision_json: decision_json(decision),
            decided_at: at,
        };
        self.idempotency.insert(key, entry);
    }

    fn announce(&mut self, registration: i64, kind: &'static str, status: RowStatus, at: i64) {
        let payload_json = registration_payload_json(self.event, registration, status.as_str());
        self.outbox.push(OutboxEntry { registration, kind, payload_json, at });
    }
}

impl EventPlan<'_> {
    /// An outbox entry for a ticket's admission (`queue.admitted` for webhooks). It belongs to
    /// no registration (number 0); its payload is what the webhook's `data` shows, the pass
    /// itself left out (it is the registrant's credential), its expiry in milliseconds (the
    /// fan-out writes it as RFC 3339).
    fn announce_admission(&mut self, ticket: kuota_engine::TicketId, pass_expires_at: Timestamp, at: i64) {
        let payload = AdmissionPayload {
            ticket_id: ticket.text(self.event),
            event_id: self.event.as_str(),
            status: "admitted",
            pass_expires_at: millis(pass_expires_at),
        };
        // A plain struct of strings and integers; serializing it cannot fail.
        let payload_json = serde_json::to_string(&payload).expect("an outbox payload serializes to JSON");
        self.outbox.push(OutboxEntry { registration: 0, kind: "queue_admitted", payload_json, at });
    }
}

#[derive(serde::Serialize)]
struct AdmissionPayload<'a> {
    ticket_id: String,
    event_id: &'a str,
    status: &'static str,
    pass_expires_at: i64,
}

/// The detail of a ticket's `queue_joined` audit entry, as `AuditDetail::Ticket` writes it:
/// the audit read rebuilds it from the ticket's row.
pub(crate) fn joined_detail_json(ticket: u64) -> String {
    format!("{{\"ticket\":{ticket}}}")
}

/// The detail of a `decision_recorded` audit entry, as `AuditDetail::DecisionRecorded` writes
/// it, from the key and the decision as stored (`decision_json`): the audit read rebuilds the
/// entry of a join from its ticket's row.
pub(crate) fn decision_detail_json(key: &str, decision_json: &str) -> String {
    // A string serializes to JSON whatever it holds.
    let key = serde_json::to_string(key).expect("a string serializes to JSON");
    format!("{{\"idempotency_key\":{key},\"decision\":{decision_json}}}")
}

fn detail_json(detail: &AuditDetail<'_>) -> String {
    // Plain structs of strings and integers; serializing them cannot fail.
    serde_json::to_string(detail).expect("an audit detail serializes to JSON")
}

/// What an audit entry says beyond its kind, as JSON. Serialized from plain structs rather
/// than built as `serde_json::Value`s: a batch writes one per effect, inside its transaction.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum AuditDetail<'a> {
    Created {
        category: &'a str,
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hold_expires_at: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        waitlist_position: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<&'a str>,
    },
    Promoted {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hold_expires_at: Option<i64>,
    },
    DecisionRecorded {
        idempotency_key: &'a str,
        decision: &'a kuota_engine::Decision,
    },
    CapacityChanged {
        category: &'a str,
        capacity: u32,
    },
    Ticket {
        ticket: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pass_expires_at: Option<i64>,
    },
    Empty {},
}

/// What the delivery worker needs to find the registration an outbox entry announces.
#[derive(serde::Serialize)]
struct OutboxPayload<'a> {
    event_id: &'a str,
    registration: i64,
    status: &'a str,
}

/// The payload of an entry about a registration: the one the write-behind stores for a change,
/// and the one the delivery worker derives for a creation (`creations`), alike. Written by
/// hand, byte for byte what serde_json writes for an `OutboxPayload`: an event id
/// (`[A-Za-z0-9_-]`) and a status word need no escaping, and serde_json's machinery was about
/// 1,200 instructions per payload, once per creation delivered (callgrind).
pub(crate) fn registration_payload_json(event: &EventId, registration: i64, status: &str) -> String {
    let plain = |text: &str| text.bytes().all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
    if !(plain(event.as_str()) && plain(status)) {
        let payload = OutboxPayload { event_id: event.as_str(), registration, status };
        // A plain struct of strings and integers; serializing it cannot fail.
        return serde_json::to_string(&payload).expect("an outbox payload serializes to JSON");
    }
    // Through `itoa`, as the statements' integers are (`text_protocol`); it writes the sign.
    let mut number = itoa::Buffer::new();
    let digits = number.format(registration);
    let mut json = String::with_capacity(48 + event.as_str().len() + digits.len() + status.len());
    json.push_str("{\"event_id\":\"");
    json.push_str(event.as_str());
    json.push_str("\",\"registration\":");
    json.push_str(digits);
    json.push_str(",\"status\":\"");
    json.push_str(status);
    json.push_str("\"}");
    json
}

fn hold_expiry(status: ActiveStatus) -> Option<i64> {
    match status {
        ActiveStatus::Held { expires_at } => Some(millis(expires_at)),
        ActiveStatus::Confirmed | ActiveStatus::Waitlisted => None,
    }
}

/// A body fingerprint uses all 64 bits; it is stored bit for bit in a signed BIGINT.
pub(crate) fn fingerprint(bits: u64) -> i64 {
    i64::from_ne_bytes(bits.to_ne_bytes())
}

/// The inverse of `fingerprint`.
pub(crate) fn fingerprint_bits(stored: i64) -> u64 {
    u64::from_ne_bytes(stored.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kuota_engine::{
        CategoryCode, Decision, Email, Fingerprint, Idempotency, IdempotencyKey, RegistrationId,
        TicketStatus, TicketView,
    };

    use super::*;

    #[test]
    fn a_payload_is_what_serde_json_writes() {
        let events = [EventId::parse("race").unwrap(), EventId::parse("A-z_09").unwrap()];
        for event in &events {
            for registration in [0, 7, 10, 999, 1_000_000, i64::MAX, -1, i64::MIN] {
                for status in
                    ["held", "confirmed", "waitlisted", "cancelled", "expired", "", "say \"hi\"\\\n"]
                {
                    let payload = OutboxPayload { event_id: event.as_str(), registration, status };
                    let expected = serde_json::to_string(&payload).unwrap();
                    assert_eq!(registration_payload_json(event, registration, status), expected);
                }
            }
        }
    }

    fn created(seq: u64, registration: u64, email: &str, status: ActiveStatus) -> Effect {
        Effect {
            seq: Seq(seq),
            at: Timestamp::from_millis(1_000 + seq),
            kind: EffectKind::Created {
                registration: RegistrationId(registration),
                category: 0,
                category_code: CategoryCode::parse("10K").unwrap(),
                registrant: Email::parse(email).unwrap(),
                status,
                waitlist_position: None,
                idempotency: None,
                details: Arc::new(RegistrationDetails::default()),
            },
        }
    }

    fn event() -> EventId {
        EventId::parse("race").unwrap()
    }

    #[test]
    fn a_registration_created_and_cancelled_in_one_batch_is_inserted_cancelled() {
        let effects = vec![
            created(1, 1, "a@x.org", ActiveStatus::Confirmed),
            Effect {
                seq: Seq(2),
                at: Timestamp::from_millis(2_000),
                kind: EffectKind::Cancelled { registration: RegistrationId(1) },
            },
        ];
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(0));
        plan.add(&effects).unwrap();
        let row = &plan.new_registrations[&1];
        assert_eq!((row.status, row.created_at, row.updated_at), (RowStatus::Cancelled, 1_001, 2_000));
        assert!(plan.changes.is_empty());
        // The creation's audit entry is in the row, with the status it was created in.
        assert_eq!((row.created_seq, row.creation), (1, Creation::Confirmed));
        assert_eq!(
            row.creation.detail_json(row.category.as_str(), None),
            r#"{"category":"10K","status":"confirmed"}"#
        );
        let kinds: Vec<_> = plan.audit.iter().map(|entry| (entry.seq, entry.kind)).collect();
        assert_eq!(kinds, [(2, "cancelled")]);
        // The creation has no outbox entry either: the delivery worker derives it from the row.
        let kinds: Vec<_> = plan.outbox.iter().map(|entry| entry.kind).collect();
        assert_eq!(kinds, ["registration_cancelled"]);
    }

    #[test]
    fn an_admitted_ticket_is_announced_without_its_pass() {
        let effects = vec![Effect {
            seq: Seq(1),
            at: Timestamp::from_millis(5_000),
            kind: EffectKind::QueueAdmitted {
                ticket: kuota_engine::TicketId(3),
                pass_expires_at: Timestamp::from_millis(605_000),
            },
        }];
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(0));
        plan.add(&effects).unwrap();
        let [entry] = plan.outbox.as_slice() else { panic!("one outbox entry: {:?}", plan.outbox) };
        assert_eq!((entry.kind, entry.registration, entry.at), ("queue_admitted", 0, 5_000));
        let payload: serde_json::Value = serde_json::from_str(&entry.payload_json).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "ticket_id": "race.q3",
                "event_id": "race",
                "status": "admitted",
                "pass_expires_at": 605_000,
            })
        );
    }

    #[test]
    fn effects_at_or_below_the_stored_seq_are_skipped() {
        let effects = vec![
            created(1, 1, "a@x.org", ActiveStatus::Confirmed),
            created(2, 2, "b@x.org", ActiveStatus::Confirmed),
        ];
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(1));
        plan.add(&effects).unwrap();
        assert_eq!((plan.skipped_effects, plan.applied_effects), (1, 1));
        assert_eq!(plan.new_registrations.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(plan.last_seq, Seq(2));
    }

    #[test]
    fn a_gap_in_the_sequence_is_refused() {
        let effects = vec![created(3, 1, "a@x.org", ActiveStatus::Confirmed)];
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(1));
        assert!(matches!(plan.add(&effects), Err(PersistError::Mismatch(_))));
    }

    #[test]
    fn a_promotion_of_a_stored_registration_becomes_a_change_with_its_hold() {
        let effects = vec![Effect {
            seq: Seq(8),
            at: Timestamp::from_millis(5_000),
            kind: EffectKind::Promoted {
                registration: RegistrationId(4),
                status: ActiveStatus::Held { expires_at: Timestamp::from_millis(65_000) },
            },
        }];
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(7));
        plan.add(&effects).unwrap();
        let expected = RegistrationChange {
            number: 4,
            status: RowStatus::Held,
            hold_expires_at: Some(65_000),
            updated_at: 5_000,
        };
        assert_eq!(plan.changes[&4], expected);
        assert_eq!(plan.outbox[0].kind, "registration_promoted");
    }

    /// The effects of a keyed join of ticket `ticket`, as the engine emits them: with the
    /// ticket's creation when it is `new`, the decision alone when the registrant had it.
    fn keyed_join(seq: u64, ticket: u64, key: &str, new: bool) -> Vec<Effect> {
        let at = Timestamp::from_millis(7_000);
        let view = TicketView {
            ticket: TicketId(ticket),
            status: TicketStatus::Lobby,
            position: None,
            ahead: None,
            eta_seconds: None,
            refresh_after_seconds: 30,
            pass_expires_at: None,
        };
        let idempotency =
            Idempotency { key: IdempotencyKey::parse(key).unwrap(), fingerprint: Fingerprint(u64::MAX) };
        let decided = Effect {
            seq: Seq(seq + 1),
            at,
            kind: EffectKind::DecisionRecorded { idempotency, decision: Decision::QueueJoined { new, view } },
        };
        let joined = Effect {
            seq: Seq(seq),
            at,
            kind: EffectKind::QueueJoined {
                ticket: TicketId(ticket),
                registrant: Email::parse(&format!("r{ticket}@x.org")).unwrap(),
                lobby: true,
            },
        };
        if new { vec![joined, decided] } else { vec![Effect { seq: Seq(seq), ..decided }] }
    }

    #[test]
    fn a_keyed_join_is_one_ticket_row_with_its_key_decision_and_audit() {
        let effects = keyed_join(1, 1, "k1", true);
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(0));
        plan.add(&effects).unwrap();
        assert!(plan.idempotency.is_empty(), "{:?}", plan.idempotency);
        assert!(plan.audit.is_empty(), "{:?}", plan.audit);
        let new = plan.tickets[&1].new.as_ref().unwrap();
        assert_eq!((new.created_seq, new.created_at), (1, 7_000));
        let decision = new.decision.as_ref().unwrap();
        assert_eq!((decision.key, decision.fingerprint, decision.seq), ("k1", -1, 2));
        let EffectKind::DecisionRecorded { decision: decided, .. } = &effects[1].kind else { unreachable!() };
        assert_eq!(serde_json::from_str::<Decision>(&decision.decision_json).unwrap(), *decided);
    }

    #[test]
    fn the_join_of_a_registrant_with_a_ticket_is_an_idempotency_entry_and_an_audit_row() {
        let effects = keyed_join(4, 1, "again", false);
        let event = event();
        let mut plan = EventPlan::new(&event, 1, Seq(3));
        plan.add(&effects).unwrap();
        assert_eq!(plan.idempotency.keys().copied().collect::<Vec<_>>(), ["again"]);
        let kinds: Vec<_> = plan.audit.iter().map(|entry| (entry.seq, entry.kind)).collect();
        assert_eq!(kinds, [(4, "decision_recorded")]);
        assert!(plan.tickets.is_empty());
    }

    #[test]
    fn the_details_rebuilt_from_a_ticket_row_are_those_an_audit_row_has() {
        for ticket in [1, 42, u64::MAX] {
            let written = detail_json(&AuditDetail::Ticket { ticket, pass_expires_at: None });
            assert_eq!(joined_detail_json(ticket), written);
        }
        for key in ["k1", r#"a "quoted" key \ </script> ~"#, " "] {
            let effects = keyed_join(1, 9, key, true);
            let EffectKind::DecisionRecorded { idempotency, decision } = &effects[1].kind else {
                unreachable!()
            };
            let written = detail_json(&AuditDetail::DecisionRecorded {
                idempotency_key: idempotency.key.as_str(),
                decision,
            });
            assert_eq!(decision_detail_json(key, &decision_json(decision)), written);
        }
    }

    /// What a creation's row gives back since migration 0011 is what the writer stored in the
    /// row's JSON columns before: the decision as `decision_json` held it and the audit detail as
    /// `created_detail_json` did (the texts the writer stored before 0011).
    #[test]
    fn a_creation_s_columns_give_back_the_decision_and_detail_its_json_columns_held() {
        let held = ActiveStatus::Held { expires_at: Timestamp::from_millis(1_800_000_060_000) };
        let mut waitlisted = created(1, 9, "c@x.org", ActiveStatus::Waitlisted);
        if let EffectKind::Created { waitlist_position, .. } = &mut waitlisted.kind {
            *waitlist_position = Some(3);
        }
        let cases = [
            (
                created(1, 7, "a@x.org", held),
                Some("k \"1\""),
                r#"{"decision":"held","registration":7,"expires_at":1800000060000}"#,
                r#"{"category":"10K","status":"held","hold_expires_at":1800000060000,"idempotency_key":"k \"1\""}"#,
            ),
            (
                created(1, 8, "b@x.org", ActiveStatus::Confirmed),
                None,
                r#"{"decision":"confirmed","registration":8}"#,
                r#"{"category":"10K","status":"confirmed"}"#,
            ),
            (
                waitlisted,
                Some("w"),
                r#"{"decision":"waitlisted","registration":9,"position":3}"#,
                r#"{"category":"10K","status":"waitlisted","waitlist_position":3,"idempotency_key":"w"}"#,
            ),
        ];
        for (effect, key, decision, detail) in cases {
            let effects = [effect];
            let event = event();
            let mut plan = EventPlan::new(&event, 1, Seq(0));
            plan.add(&effects).unwrap();
            let row = plan.new_registrations.values().next().unwrap();
            let (waitlist_position, created_hold_expires_at) = row.creation.columns();
            let read = Creation::from_columns(waitlist_position, created_hold_expires_at).unwrap();
            assert_eq!(read, row.creation);
            let number = RegistrationId(u64::try_from(row.number).unwrap());
            assert_eq!(decision_json(&read.decision(number)), decision);
            assert_eq!(read.detail_json(row.category.as_str(), key), detail);
        }
        assert!(Creation::from_columns(Some(1), Some(2)).is_err());
        assert!(Creation::from_columns(None, Some(-1)).is_err());
        assert!(Creation::from_columns(Some(i64::from(u32::MAX) + 1), None).is_err());
    }

    #[test]
    fn a_fingerprint_keeps_all_its_bits() {
        for bits in [0, 1, u64::MAX, 1 << 63, 0x0123_4567_89ab_cdef] {
            assert_eq!(fingerprint_bits(fingerprint(bits)), bits);
        }
    }
}
