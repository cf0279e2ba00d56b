//! A queued event's rows: its queue settings on the event row, and its tickets
//! (`queue_tickets`). The plan (`plan::TicketRows`) says what a batch changes; this module turns
//! that into statements, and reads settings and tickets back for recovery.

use std::collections::BTreeMap;

use kuota_engine::queue::{hex, parse_hex32};
use kuota_engine::quota::{IdempotencyRecord, QuotaBuilder};
use kuota_engine::{
    DrawSeed, Email, EventConfig, EventId, Fingerprint, PassTimes, QueueConfig, StoredTicketState, TicketId,
    TicketRecord,
};

use crate::store::backend::{Dialect, RowAccess, Runner, Statement};
use crate::store::error::PersistError;
use crate::store::plan::{EventPlan, fingerprint_bits, millis, unsigned};
use crate::store::recovery::parse_key;
use crate::store::write::multi_row_inserts;
use crate::store::{invalid, small, timestamp};

/// Tickets one `UPDATE … CASE` statement changes (see `write::CHANGES_PER_STATEMENT_MAX`).
const TICKET_CHANGES_PER_STATEMENT_MAX: usize = 100;

/// A ticket as a batch leaves it: new in the batch (`created_at` set) or changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TicketRow<'a> {
    pub number: i64,
    /// Set for a ticket this batch creates.
    pub new: Option<NewTicket<'a>>,
    pub state: StoredTicketState,
    pub registration: Option<i64>,
    /// When the ticket's pass was granted, kept once the pass is used or lapses (recovery
    /// rebuilds the admission rate from it, and takes the pass's end from `updated_at`); `None`
    /// when this batch did not admit the ticket, which leaves the stored value as it is.
    pub pass_granted_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewTicket<'a> {
    pub email: &'a str,
    pub lobby: bool,
    /// The seq of the `QueueJoined` effect: the creation is no audit_log row of its own (its
    /// detail, the ticket's number, is read back from the row; see `SqlStore::audit_page`).
    pub created_seq: i64,
    /// The keyed join's decision, kept in the ticket's row instead of an idempotency entry and
    /// a `decision_recorded` audit row (migration 0009).
    pub decision: Option<JoinDecision<'a>>,
    pub created_at: i64,
}

/// What a keyed join that made a ticket decided: replayed for retries of its key, and shown in
/// the audit as the `decision_recorded` entry of seq `seq`, at the ticket's `created_at` (one
/// command took both).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JoinDecision<'a> {
    pub key: &'a str,
    pub fingerprint: i64,
    pub decision_json: String,
    pub seq: i64,
}

/// The tickets a batch writes, by number.
pub(crate) type TicketRows<'a> = BTreeMap<u64, TicketRow<'a>>;

/// The queue settings bound in `create_event`'s `INSERT`, in the order of `QUEUE_COLUMNS`.
pub(crate) const QUEUE_COLUMNS: &str = "queue_lobby_opens_at, queue_pass_ttl_seconds, queue_overbook_permille, \
     queue_admit_per_kilosecond, queue_max, queue_draw_seed";

pub(crate) fn bind_queue_settings<'a>(
    statement: Statement<'a>,
    config: &EventConfig,
    seed_hex: &'a str,
) -> Statement<'a> {
    let queue = config.queue.as_ref();
    statement
        .bind(queue.map(|queue| millis(queue.lobby_opens_at)))
        .bind(queue.map(|queue| i64::from(queue.pass_ttl_seconds)))
        .bind(queue.map(|queue| i64::from(queue.overbook_permille)))
        .bind(
            queue
                .and_then(|queue| queue.admit_per_kilosecond)
                .map(|rate| i64::try_from(rate).unwrap_or(i64::MAX)),
        )
        .bind(queue.map(|queue| i64::from(queue.queue_max)))
        .bind(queue.map(|_| seed_hex))
}

/// The seed as stored.
pub(crate) fn seed_hex(config: &EventConfig) -> String {
    config.queue.as_ref().map(|queue| hex(&queue.draw_seed.0)).unwrap_or_default()
}

/// Reads the queue settings from `row`, whose columns `first..first + 6` are `QUEUE_COLUMNS`.
pub(crate) fn read_queue_settings(
    row: &dyn RowAccess,
    first: usize,
) -> Result<Option<QueueConfig>, PersistError> {
    let Some(lobby_opens_at) = row.optional_int(first)? else { return Ok(None) };
    let required = |index: usize, column: &str| -> Result<i64, PersistError> {
        row.optional_int(first + index)?.ok_or_else(|| invalid(column, "missing for a queued event"))
    };
    let seed = row.optional_text(first + 5)?.ok_or_else(|| invalid("events.queue_draw_seed", "missing"))?;
    let seed = parse_hex32(seed).ok_or_else(|| invalid("events.queue_draw_seed", "not 64 hex characters"))?;
    Ok(Some(QueueConfig {
        lobby_opens_at: timestamp(lobby_opens_at, "events.queue_lobby_opens_at")?,
        pass_ttl_seconds: small(
            required(1, "events.queue_pass_ttl_seconds")?,
            "events.queue_pass_ttl_seconds",
        )?,
        overbook_permille: small(
            required(2, "events.queue_overbook_permille")?,
            "events.queue_overbook_permille",
        )?,
        admit_per_kilosecond: row
            .optional_int(first + 3)?
            .map(|rate| unsigned(rate, "events.queue_admit_per_kilosecond"))
            .transpose()?,
        queue_max: small(required(4, "events.queue_max")?, "events.queue_max")?,
        draw_seed: DrawSeed(seed),
    }))
}

/// How many tickets and idempotency entries `load_tickets` gave the builder.
#[derive(Debug, Default)]
pub(crate) struct LoadedTickets {
    pub tickets: u64,
    pub idempotency_entries: u64,
}

/// Streams the event's tickets into `builder`, with the decisions of the keyed joins that made
/// them when decided after `decided_after` (ms; older keys are past their retention, as purged
/// idempotency entries are), and their passes' times: granted as stored, ended (used or
/// lapsed) at the row's last update.
pub(crate) async fn load_tickets(
    runner: &mut Runner<'_>,
    event: &EventId,
    decided_after: i64,
    builder: &mut QuotaBuilder,
) -> Result<LoadedTickets, PersistError> {
    let tickets = Statement::new(
        "SELECT number, email, lobby, status, pass_expires_at, idempotency_key, body_fingerprint, decision_json, \
         created_at, pass_granted_at, updated_at FROM queue_tickets WHERE event_id = ?",
    )
    .bind(event.as_str());
    let mut loaded = LoadedTickets::default();
    runner
        .for_each_row(&tickets, |row| {
            let state = match row.text(3)? {
                "waiting" => StoredTicketState::Waiting,
                "used" => StoredTicketState::Used,
                "expired" => StoredTicketState::Expired,
                "admitted" => {
                    let at = row.optional_int(4)?.ok_or_else(|| {
                        invalid("queue_tickets.pass_expires_at", "an admitted ticket has no expiry")
                    })?;
                    StoredTicketState::Admitted {
                        pass_expires_at: timestamp(at, "queue_tickets.pass_expires_at")?,
                    }
                }
                other => return Err(invalid("queue_tickets.status", format!("unknown status {other:?}"))),
            };
            // NULL for a ticket never admitted, or admitted before migration 0010.
            let pass = match row.optional_int(9)? {
                Some(granted_at) => {
                    let granted_at = timestamp(granted_at, "queue_tickets.pass_granted_at")?;
                    let ended_at = match state {
                        StoredTicketState::Used | StoredTicketState::Expired => {
                            Some(timestamp(row.int(10)?, "queue_tickets.updated_at")?)
                        }
                        StoredTicketState::Waiting | StoredTicketState::Admitted { .. } => None,
                    };
                    Some(PassTimes { granted_at, ended_at })
                }
                None => None,
            };
            builder.add_ticket(TicketRecord {
                ticket: TicketId(unsigned(row.int(0)?, "queue_tickets.number")?),
                registrant: Email::parse(row.text(1)?)
                    .map_err(|error| invalid("queue_tickets.email", error))?,
                lobby: row.int(2)? != 0,
                state,
                pass,
            })?;
            loaded.tickets += 1;
            let created_at = row.int(8)?;
            if let Some(decision_json) = row.optional_text(7)?
                && created_at > decided_after
            {
                let fingerprint = row.optional_int(6)?.ok_or_else(|| {
                    invalid("queue_tickets.body_fingerprint", "a stored decision without its fingerprint")
                })?;
                builder.add_idempotency(IdempotencyRecord {
                    key: parse_key(row.bytes(5)?)?,
                    fingerprint: Fingerprint(fingerprint_bits(fingerprint)),
                    decision: serde_json::from_str(decision_json)
                        .map_err(|error| invalid("queue_tickets.decision_json", error))?,
                    decided_at: timestamp(created_at, "queue_tickets.created_at")?,
                });
                loaded.idempotency_entries += 1;
            }
            Ok::<(), PersistError>(())
        })
        .await?;
    Ok(loaded)
}

fn pass_expires_at(state: StoredTicketState) -> Option<i64> {
    match state {
        StoredTicketState::Admitted { pass_expires_at } => Some(millis(pass_expires_at)),
        _ => None,
    }
}

/// `INSERT`s of the tickets the batch creates, in the state the batch leaves them in.
pub(crate) fn ticket_inserts<'a>(
    dialect: Dialect,
    plans: &'a BTreeMap<&EventId, EventPlan<'_>>,
) -> Vec<Statement<'a>> {
    let rows = plans.values().flat_map(|plan| {
        plan.tickets.values().filter_map(move |row| row.new.as_ref().map(|new| (plan.event, row, new)))
    });
    multi_row_inserts(
        dialect,
        "INSERT INTO queue_tickets (event_id, number, email, lobby, status, pass_expires_at, pass_granted_at, \
         registration_number, idempotency_key, body_fingerprint, decision_json, decision_seq, created_seq, \
         created_at, updated_at) VALUES ",
        15,
        "",
        rows,
        |values, (event, row, new)| {
            let decision = new.decision.as_ref();
            values.push(event.as_str());
            values.push(row.number);
            values.push(new.email);
            values.push(i64::from(new.lobby));
            values.push(row.state.as_str());
            values.push(pass_expires_at(row.state));
            values.push(row.pass_granted_at);
            values.push(row.registration);
            values.push(decision.map(|decision| decision.key));
            values.push(decision.map(|decision| decision.fingerprint));
            values.push(decision.map(|decision| decision.decision_json.as_str()));
            values.push(decision.map(|decision| decision.seq));
            values.push(new.created_seq);
            values.push(new.created_at);
            values.push(row.updated_at);
        },
    )
}

/// `UPDATE`s of stored tickets, up to `TICKET_CHANGES_PER_STATEMENT_MAX` each, with the number
/// of rows each must match.
pub(crate) fn ticket_changes<'a>(plan: &'a EventPlan<'_>) -> Vec<(Statement<'a>, u64)> {
    let changed: Vec<&TicketRow<'_>> = plan.tickets.values().filter(|row| row.new.is_none()).collect();
    changed
        .chunks(TICKET_CHANGES_PER_STATEMENT_MAX)
        .map(|chunk| (ticket_change_statement(plan.event, chunk), chunk.len() as u64))
        .collect()
}

/// Every value is explicit per row, as in `write::change_statement`.
fn ticket_change_statement<'a>(event: &'a EventId, rows: &[&TicketRow<'_>]) -> Statement<'a> {
    let mut statement = Statement::new("UPDATE queue_tickets SET status = CASE number");
    for row in rows {
        statement.sql.push_str(" WHEN ? THEN ?");
        statement.push_value(row.number);
        statement.push_value(row.state.as_str());
    }
    // A pass's grant stays once the pass ends (`TicketRow::pass_granted_at`).
    for (column, then, value) in [
        (
            "pass_expires_at",
            " WHEN ? THEN ?",
            (|row: &TicketRow<'_>| pass_expires_at(row.state)) as fn(&TicketRow<'_>) -> Option<i64>,
        ),
        ("pass_granted_at", " WHEN ? THEN COALESCE(?, pass_granted_at)", |row| row.pass_granted_at),
        ("registration_number", " WHEN ? THEN ?", |row| row.registration),
        ("updated_at", " WHEN ? THEN ?", |row| Some(row.updated_at)),
    ] {
        statement.sql.push_str(" END, ");
        statement.sql.push_str(column);
        statement.sql.push_str(" = CASE number");
        for row in rows {
            statement.sql.push_str(then);
            statement.push_value(row.number);
            statement.push_value(value(row));
        }
    }
    statement.sql.push_str(" END WHERE event_id = ? AND number IN (");
    statement.push_value(event.as_str());
    for (index, row) in rows.iter().enumerate() {
        statement.sql.push_str(if index == 0 { "?" } else { ", ?" });
        statement.push_value(row.number);
    }
    statement.sql.push(')');
    statement
}
