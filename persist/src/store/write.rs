//! One batch of effect submissions, one transaction: lock the batch's event rows, leave out the
//! submissions of a stale epoch (fenced), fold the rest into rows (`plan`), write them with
//! multi-row statements, advance each event's `last_seq` under its epoch, commit.

use std::collections::{BTreeMap, HashMap};

use kuota_engine::{Effect, EventId, Seq};
use tracing::Instrument;

use crate::store::SqlStore;
use crate::store::backend::{Dialect, RowAccess, Statement, Value};
use crate::store::error::{FailureKind, PersistError};
use crate::store::plan::{EventPlan, NewRegistration, signed, unsigned};
use crate::store::queue;

/// Parameters one statement may carry. SQLite allows 32,766 (`SQLITE_MAX_VARIABLE_NUMBER`
/// since 3.32), MySQL 65,535 per prepared statement; this stays below both.
const PARAMETERS_PER_STATEMENT_MAX: usize = 30_000;

/// Bytes of text values one multi-row statement carries, about (the row that crosses it is
/// the statement's last). A registration's details may hold kilobytes of attributes; this keeps
/// a statement, and on MySQL a round trip (see `text_protocol`), well below the server's
/// `max_allowed_packet` (16 MiB by default on MariaDB), where rows alone would not.
const VALUE_BYTES_PER_STATEMENT_MAX: usize = 1 << 20;

/// What a row adds to a multi-row statement besides its values: `, (` and `)`.
const ROW_FRAME_BYTES: usize = 4;

/// Registrations one `UPDATE … CASE` statement changes. The database scans a `CASE` list
/// linearly for every row it updates, so a statement's cost grows with its square.
const CHANGES_PER_STATEMENT_MAX: usize = 100;

/// One submission's part of a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    pub event: &'a EventId,
    pub epoch: u64,
    pub effects: &'a [Effect],
}

/// What a committed batch did for each (event, epoch) it carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Pairs whose epoch is not the stored one: another owner took the event. Nothing of
    /// theirs was written.
    pub fenced: Vec<(EventId, u64)>,
    /// Events that are not stored at all. Nothing of theirs was written.
    pub missing: Vec<EventId>,
    pub applied_effects: usize,
    /// Effects at or below an event's stored `last_seq`, committed by an earlier batch.
    pub skipped_effects: usize,
}

impl BatchReport {
    /// Whether the submissions of `event` under `epoch` were committed.
    pub fn committed(&self, event: &EventId, epoch: u64) -> bool {
        !self.missing.contains(event)
            && !self.fenced.iter().any(|(fenced, at)| fenced == event && *at == epoch)
    }
}

impl SqlStore {
    /// Commits `items` in one transaction, in their order, or nothing of them. Submissions of a
    /// fenced or missing event are left out (see `BatchReport`); the rest commit.
    pub async fn commit_batch(&self, items: &[BatchItem<'_>]) -> Result<BatchReport, PersistError> {
        self.commit_batch_signalling(items, || {}).await
    }

    /// `commit_batch`, calling `written` once the batch's writes are done and it holds the row
    /// locks of its events, before its `COMMIT` (not at all if it fails before; again if a
    /// failed `COMMIT` sends it the step-by-step way). A later batch of the same events may be
    /// sent from then on (see `write_behind`): its writes wait for this batch's row locks, and it
    /// commits only on top of what this batch committed.
    ///
    /// The transaction's future is about 15 KB (sqlx's, for both dialects), and a future is
    /// copied whole each time it is moved: it is boxed here, before its span wraps it, so that
    /// what the caller wraps and spawns is small. Wrapped by `#[tracing::instrument]` and then
    /// boxed by the caller, it was copied twice per batch (about 4,000 instructions of `memcpy`
    /// per admission, callgrind); `Box::pin` of it here still built it on the stack and copied
    /// it into the box, while written into a box allocated first (`Box::write`) the compiler
    /// builds it in place: no copy at all. That is the optimizer's choice, not a guarantee; the
    /// meaning is the same either way.
    pub fn commit_batch_signalling<'s>(
        &'s self,
        items: &'s [BatchItem<'s>],
        written: impl FnMut() + 's,
    ) -> impl Future<Output = Result<BatchReport, PersistError>> + 's {
        let span = tracing::info_span!("commit_batch_signalling", submissions = items.len());
        let slot = Box::new_uninit();
        Box::into_pin(Box::write(slot, self.commit_batch_unboxed(items, written))).instrument(span)
    }

    /// `commit_batch_signalling`, inline.
    async fn commit_batch_unboxed(
        &self,
        items: &[BatchItem<'_>],
        mut written: impl FnMut(),
    ) -> Result<BatchReport, PersistError> {
        if self.pool.dialect() == Dialect::Mysql
            && let Some(assumed) = assumed_rows(items)
        {
            match self.commit_as_assumed(items, &assumed, &mut written).await {
                Ok(Some(report)) => return Ok(report),
                Ok(None) => {}
                // The store failed, not the assumption: the writer's retries deal with that.
                Err(error) if error.failure_kind() == FailureKind::Transient => return Err(error),
                // Possibly the writes of a wrong assumption (a registration number another
                // owner stored meanwhile): the locks and reads of the general way tell.
                Err(error) => {
                    tracing::debug!(error = %error.chain(), "a batch failed as assumed; committing it step by step");
                }
            }
        }
        self.commit_step_by_step(items, &mut written).await
    }

    /// The general way: lock the events' rows and read them, then plan and write what they
    /// allow, then commit: three round trips on MySQL.
    async fn commit_step_by_step(
        &self,
        items: &[BatchItem<'_>],
        written: &mut impl FnMut(),
    ) -> Result<BatchReport, PersistError> {
        let mut stored = HashMap::new();
        let (mut transaction, _) = self
            .pool
            .begin_locked(&lock_statements(self.pool.dialect(), items), store_row(&mut stored), &[])
            .await?;
        let mut report = BatchReport::default();
        let mut plans: BTreeMap<&EventId, EventPlan<'_>> = BTreeMap::new();
        for item in items {
            let Some(&(epoch, last_seq)) = stored.get(item.event) else {
                if !report.missing.contains(item.event) {
                    report.missing.push(item.event.clone());
                }
                continue;
            };
            if epoch != item.epoch {
                let pair = (item.event.clone(), item.epoch);
                if !report.fenced.contains(&pair) {
                    report.fenced.push(pair);
                }
                continue;
            }
            plans
                .entry(item.event)
                .or_insert_with(|| EventPlan::new(item.event, epoch, last_seq))
                .add(item.effects)?;
        }
        add_effects(&mut report, &plans);
        let (statements, expected) = plan_statements(self.pool.dialect(), &plans, None);
        let matched = transaction.execute_all(&statements).await?;
        check_all(&expected, &matched)?;
        written();
        transaction.commit().await?;
        Ok(report)
    }

    /// The common way on MySQL: the batch planned on the stored rows it assumes (`assumed_rows`),
    /// its writes sent with `START TRANSACTION` in one round trip, then `COMMIT`: two round trips
    /// instead of three. The writes end with each event's `last_seq` update, which matches only
    /// the assumed row (epoch and `last_seq`): a batch commits only directly on top of the one
    /// before it. `None` (after a rollback) when a row is not the assumed one: an earlier commit
    /// of these effects (a retry), another owner's epoch, a missing event, or a batch before
    /// this one that did not commit; `commit_step_by_step` sorts those out.
    ///
    /// The events' rows are locked first (`lock_statements`, in the same round trip), before any
    /// write: a batch waiting for the batch before it holds no row of the event meanwhile. Were
    /// the lock taken by the `last_seq` update at the end, a batch queued behind a frozen
    /// owner's batch would have inserted its registrations already, and when its lock wait
    /// timed out (`LOCK_WAIT_TIMEOUT_SECONDS`: the statement fails, the transaction stays open,
    /// and a frozen client never rolls it back) it would keep them locked without holding the
    /// event row. A take-over kills only what blocks the event row (`recovery::take_epoch`), so
    /// the new owner's batches would wait on those registrations (a retried registrant's e-mail
    /// address, say) until the frozen owner thawed. With the lock first, whatever a former
    /// owner's transaction holds of an event, it holds the event row too, or it holds nothing.
    /// `FOR UPDATE` rather than the update itself first: a locking read keeps the row locked
    /// at every isolation level, where an update that matches nothing (the assumed row gone
    /// with a killed batch) releases it under `READ COMMITTED`.
    async fn commit_as_assumed(
        &self,
        items: &[BatchItem<'_>],
        assumed: &HashMap<&EventId, (u64, Seq)>,
        written: &mut impl FnMut(),
    ) -> Result<Option<BatchReport>, PersistError> {
        let mut plans: BTreeMap<&EventId, EventPlan<'_>> = BTreeMap::new();
        for item in items {
            let (epoch, last_seq) = assumed[item.event];
            plans
                .entry(item.event)
                .or_insert_with(|| EventPlan::new(item.event, epoch, last_seq))
                .add(item.effects)?;
        }
        let (statements, expected) = plan_statements(Dialect::Mysql, &plans, Some(assumed));
        // The rows it reads are not needed: the `last_seq` updates check them.
        let locks = lock_statements(Dialect::Mysql, items);
        let (transaction, matched) =
            self.pool.begin_locked(&locks, |_| Ok::<(), PersistError>(()), &statements).await?;
        let as_assumed = expected
            .iter()
            .zip(&matched)
            .all(|(expect, matched)| !matches!(expect, Expect::Assumed(..)) || *matched == 1);
        if !as_assumed {
            transaction.rollback().await?;
            return Ok(None);
        }
        check_all(&expected, &matched)?;
        written();
        transaction.commit().await?;
        let mut report = BatchReport::default();
        add_effects(&mut report, &plans);
        Ok(Some(report))
    }
}

/// Counts the plans' applied and skipped effects into `report`.
fn add_effects(report: &mut BatchReport, plans: &BTreeMap<&EventId, EventPlan<'_>>) {
    for plan in plans.values() {
        report.applied_effects += plan.applied_effects;
        report.skipped_effects += plan.skipped_effects;
    }
}

/// The stored row (epoch, `last_seq`) of each event of a batch that the batch's own effects
/// imply: its submissions' epoch, and the seq just before its first effect. `None` when they
/// imply nothing (an event with submissions of two epochs, or a submission without effects).
fn assumed_rows<'a>(items: &[BatchItem<'a>]) -> Option<HashMap<&'a EventId, (u64, Seq)>> {
    let mut assumed = HashMap::new();
    for item in items {
        let first = item.effects.first()?;
        let (epoch, _) = *assumed.entry(item.event).or_insert((item.epoch, Seq(first.seq.0.checked_sub(1)?)));
        if epoch != item.epoch {
            return None;
        }
    }
    Some(assumed)
}

/// Reads a row of the lock statements into `stored`.
fn store_row(
    stored: &mut HashMap<EventId, (u64, Seq)>,
) -> impl FnMut(&dyn RowAccess) -> Result<(), PersistError> + '_ {
    |row| {
        let id = EventId::parse(row.text(0)?)
            .map_err(|error| PersistError::InvalidRow(format!("events.id: {error}")))?;
        let epoch = unsigned(row.int(1)?, "events.epoch")?;
        let last_seq = Seq(unsigned(row.int(2)?, "events.last_seq")?);
        stored.insert(id, (epoch, last_seq));
        Ok(())
    }
}

/// The statements that lock the rows of a batch's events (until commit) and read their epoch
/// and `last_seq`: one, unless the batch has more events than a statement takes parameters. On
/// MySQL `FOR UPDATE` takes the row locks, so that a concurrent `load` (which increments the
/// epoch) waits for this transaction or this one for it; SQLite's `BEGIN IMMEDIATE` already
/// holds the database's only write lock.
fn lock_statements<'a>(dialect: Dialect, items: &[BatchItem<'a>]) -> Vec<Statement<'a>> {
    let mut events: Vec<&EventId> = items.iter().map(|item| item.event).collect();
    events.sort_unstable();
    events.dedup();
    events
        .chunks(PARAMETERS_PER_STATEMENT_MAX)
        .map(|chunk| {
            let mut statement = Statement::new("SELECT id, epoch, last_seq FROM events WHERE id IN (");
            push_placeholders(&mut statement.sql, chunk.len());
            statement.sql.push(')');
            if dialect == Dialect::Mysql {
                statement.sql.push_str(" FOR UPDATE");
            }
            for event in chunk {
                statement.push_value(event.as_str());
            }
            statement
        })
        .collect()
}

/// What a statement of the batch must have matched for the batch to commit. The failure's
/// message is written only when a check fails.
#[derive(Debug)]
enum Expect<'a> {
    Any,
    /// Exactly this many of the event's registrations to change.
    Changes(&'a EventId, u64),
    /// The event's category, once.
    Category(&'a EventId, &'a str),
    /// The event's row, under its epoch, once.
    Epoch(&'a EventId, u64),
    /// The event's row, under its epoch and at the `last_seq` assumed (`commit_as_assumed`).
    Assumed(&'a EventId, u64),
}

impl Expect<'_> {
    /// The failure if a statement matched `matched` rows.
    fn check(&self, matched: u64) -> Result<(), PersistError> {
        let (rows, what) = match self {
            Expect::Any => return Ok(()),
            Expect::Changes(event, rows) => {
                (*rows, format!("event {event}: registrations to change are not all stored"))
            }
            Expect::Category(event, code) => (1, format!("event {event} has no category {code}")),
            Expect::Epoch(event, epoch) => (1, format!("event {event} left epoch {epoch} during the batch")),
            Expect::Assumed(event, epoch) => {
                (1, format!("event {event} is not at the assumed seq of epoch {epoch}"))
            }
        };
        if matched == rows {
            return Ok(());
        }
        Err(PersistError::Mismatch(format!("{what} ({matched} of {rows} rows matched)")))
    }
}

/// The statements that write every plan (sent in one call: one round trip on MySQL unless the
/// batch is very large), with what each must match (`check_all`). Changes to stored
/// registrations go first: a registration that ends frees its registrant's slot in the unique
/// index, which a registration created in the same batch by the same registrant may need.
///
/// With `assumed` rows, each event's `last_seq` update matches only its assumed row
/// (`commit_as_assumed`); without, the rows are locked and read already, and it matches the
/// epoch.
fn plan_statements<'a>(
    dialect: Dialect,
    plans: &'a BTreeMap<&'a EventId, EventPlan<'_>>,
    assumed: Option<&HashMap<&EventId, (u64, Seq)>>,
) -> (Vec<Statement<'a>>, Vec<Expect<'a>>) {
    let mut statements = Vec::new();
    let mut expected = Vec::new();
    for plan in plans.values() {
        let changes: Vec<_> = plan.changes.values().collect();
        for chunk in changes.chunks(CHANGES_PER_STATEMENT_MAX) {
            statements.push(change_statement(plan.event, chunk));
            expected.push(Expect::Changes(plan.event, chunk.len() as u64));
        }
        for (statement, count) in queue::ticket_changes(plan) {
            statements.push(statement);
            expected.push(Expect::Changes(plan.event, count));
        }
    }
    let inserts = registration_inserts(dialect, plans)
        .into_iter()
        .chain(queue::ticket_inserts(dialect, plans))
        .chain(idempotency_upserts(dialect, plans))
        .chain(audit_inserts(dialect, plans))
        .chain(outbox_inserts(dialect, plans));
    for statement in inserts {
        statements.push(statement);
        expected.push(Expect::Any);
    }
    for plan in plans.values() {
        for (code, capacity) in &plan.capacities {
            statements.push(
                Statement::new("UPDATE categories SET capacity = ? WHERE event_id = ? AND code = ?")
                    .bind(*capacity)
                    .bind(plan.event.as_str())
                    .bind(*code),
            );
            expected.push(Expect::Category(plan.event, code));
        }
        // The epoch check of record. The rows are locked since `lock_events`, so this cannot
        // miss; it is checked again where it is written, as every invariant is.
        let update = Statement::new("UPDATE events SET last_seq = ? WHERE id = ? AND epoch = ?")
            .bind(signed(plan.last_seq.0))
            .bind(plan.event.as_str())
            .bind(signed(plan.epoch));
        match assumed.and_then(|assumed| assumed.get(plan.event)) {
            Some((_, stored_last_seq)) => {
                let mut update = update;
                update.sql.push_str(" AND last_seq = ?");
                statements.push(update.bind(signed(stored_last_seq.0)));
                expected.push(Expect::Assumed(plan.event, plan.epoch));
            }
            None => {
                statements.push(update);
                expected.push(Expect::Epoch(plan.event, plan.epoch));
            }
        }
    }
    (statements, expected)
}

/// Fails unless every statement matched what it must have.
fn check_all(expected: &[Expect<'_>], matched: &[u64]) -> Result<(), PersistError> {
    if expected.len() != matched.len() {
        return Err(PersistError::Mismatch(format!(
            "{} statements were run and {} answered",
            expected.len(),
            matched.len()
        )));
    }
    expected.iter().zip(matched).try_for_each(|(expect, matched)| expect.check(*matched))
}

/// Appends `?, ?, ?` (`count` of them).
fn push_placeholders(sql: &mut String, count: usize) {
    for index in 0..count {
        sql.push_str(if index == 0 { "?" } else { ", ?" });
    }
}

/// One row's values, written into a multi-row statement one after another (`multi_row_inserts`).
pub(crate) struct RowValues<'s, 'a> {
    statement: &'s mut Statement<'a>,
    written: usize,
}

impl<'a> RowValues<'_, 'a> {
    /// Appends the row's next value.
    pub fn push(&mut self, value: impl Into<Value<'a>>) {
        if self.written > 0 {
            self.statement.push_sql(", ");
        }
        self.statement.write_value(value);
        self.written += 1;
    }
}

/// Builds `INSERT INTO table (columns) VALUES (…), (…)` statements of at most
/// `PARAMETERS_PER_STATEMENT_MAX` parameters and about `VALUE_BYTES_PER_STATEMENT_MAX` bytes of
/// values, from rows of `columns` values each that `push_row` writes (`Statement::writing`: on
/// MySQL straight into the text, for a transaction's statements only).
pub(crate) fn multi_row_inserts<'a, Row>(
    dialect: Dialect,
    head: &str,
    columns: usize,
    tail: &str,
    rows: impl IntoIterator<Item = Row>,
    mut push_row: impl FnMut(&mut RowValues<'_, 'a>, Row),
) -> Vec<Statement<'a>> {
    let rows_per_statement = (PARAMETERS_PER_STATEMENT_MAX / columns).max(1);
    let mut statements = Vec::new();
    // The statement being built, its rows and the bytes of its values.
    let mut current: Option<(Statement<'a>, usize, usize)> = None;
    let mut rows = rows.into_iter();
    while let Some(row) = rows.next() {
        let (statement, count, bytes) =
            current.get_or_insert_with(|| (Statement::writing(dialect, head), 0, 0));
        statement.push_sql(if *count > 0 { ", (" } else { "(" });
        let mark = statement.mark();
        let mut values = RowValues { statement, written: 0 };
        push_row(&mut values, row);
        // A row of another width is a bug of its builder, which the database would refuse.
        assert_eq!(values.written, columns, "a row's values for the columns of {head:.80}");
        let row_bytes = statement.value_bytes_since(mark);
        *bytes += row_bytes;
        statement.push_sql(")");
        *count += 1;
        if *count == 1 {
            // Room for the statement's other rows at once, each taken as long as its first and
            // a quarter more: grown a row at a time, the text was copied into a larger buffer
            // each time it doubled. The rows still to come are the iterator's lower bound
            // (exact for one event's rows, nearly every batch; a bound that is short only
            // leaves the rest to grow as before).
            let rest = rows.size_hint().0.min(rows_per_statement - 1);
            let room = rest.saturating_mul(row_bytes + row_bytes / 4 + ROW_FRAME_BYTES);
            statement.reserve_written(room.min(VALUE_BYTES_PER_STATEMENT_MAX) + tail.len());
        }
        if (*count == rows_per_statement || *bytes >= VALUE_BYTES_PER_STATEMENT_MAX)
            && let Some((mut full, ..)) = current.take()
        {
            full.push_sql(tail);
            statements.push(full);
        }
    }
    if let Some((mut last, ..)) = current {
        last.push_sql(tail);
        statements.push(last);
    }
    statements
}

/// The columns of a new registration that may be NULL, each with its value in a row. A column
/// NULL in every new row of a batch is left out of the batch's `INSERT`s (it defaults to NULL):
/// MariaDB parses and stores every value it is sent, and a flash crowd's confirmed
/// registrations leave five of these NULL (`benches/mariadb_row_cost.py`, `kuota-bare-omitted`;
/// docs/benchmarks.md).
const NULLABLE_REGISTRATION_COLUMNS: [(&str, NullableValue); 7] = [
    ("phone", |row| row.details.phone.as_deref().into()),
    ("attributes_json", |row| row.details.attributes_json.as_deref().into()),
    ("hold_expires_at", |row| row.hold_expires_at.into()),
    ("waitlist_position", |row| row.creation.columns().0.into()),
    ("created_hold_expires_at", |row| row.creation.columns().1.into()),
    // The key's bytes, not its text (`Value::Utf8`).
    ("idempotency_key", |row| row.idempotency_key.map_or(Value::Null, |key| Value::Utf8(key.as_bytes()))),
    ("body_fingerprint", |row| row.fingerprint.into()),
];

/// A new registration's value for a column of `NULLABLE_REGISTRATION_COLUMNS`.
type NullableValue = for<'r> fn(&'r NewRegistration<'_>) -> Value<'r>;

fn registration_inserts<'a>(
    dialect: Dialect,
    plans: &'a BTreeMap<&EventId, EventPlan<'_>>,
) -> Vec<Statement<'a>> {
    let rows =
        || plans.values().flat_map(|plan| plan.new_registrations.values().map(move |row| (plan.event, row)));
    let mut sent = [false; NULLABLE_REGISTRATION_COLUMNS.len()];
    for (_, row) in rows() {
        for (sent, (_, value)) in sent.iter_mut().zip(NULLABLE_REGISTRATION_COLUMNS) {
            *sent |= !matches!(value(row), Value::Null);
        }
    }
    let mut head = String::from(
        "INSERT INTO registrations (event_id, number, category_code, email, active_email, full_name, status, \
         access_token_hash, created_seq, created_at, updated_at",
    );
    for ((name, _), _) in NULLABLE_REGISTRATION_COLUMNS.iter().zip(sent).filter(|(_, sent)| *sent) {
        head.push_str(", ");
        head.push_str(name);
    }
    head.push_str(") VALUES ");
    let columns = 11 + sent.iter().filter(|sent| **sent).count();
    multi_row_inserts(dialect, &head, columns, "", rows(), |values, (event, row)| {
        let details = row.details;
        values.push(event.as_str());
        values.push(row.number);
        // The identifiers' bytes, not their texts (`Value::Utf8`).
        let email = Value::Utf8(row.email.as_bytes());
        values.push(Value::Utf8(row.category.as_bytes()));
        values.push(email);
        values.push(if row.status.is_active() { email } else { Value::Null });
        values.push(Value::Utf8(details.full_name.as_bytes()));
        values.push(row.status.as_str());
        values.push(Value::Utf8(details.access_token_hash.as_bytes()));
        values.push(row.created_seq);
        values.push(row.created_at);
        values.push(row.updated_at);
        for ((_, value), _) in NULLABLE_REGISTRATION_COLUMNS.iter().zip(sent).filter(|(_, sent)| *sent) {
            values.push(value(row));
        }
    })
}

/// Idempotency entries replace older ones of the same key: a key whose retention has passed
/// may be decided afresh, and its old row may not have been purged yet.
fn idempotency_upserts<'a>(
    dialect: Dialect,
    plans: &'a BTreeMap<&EventId, EventPlan<'_>>,
) -> Vec<Statement<'a>> {
    let tail = match dialect {
        Dialect::Mysql => {
            " ON DUPLICATE KEY UPDATE fingerprint = VALUES(fingerprint), decision_json = VALUES(decision_json), \
             decided_at = VALUES(decided_at)"
        }
        Dialect::Sqlite => {
            " ON CONFLICT (event_id, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             decision_json = excluded.decision_json, decided_at = excluded.decided_at"
        }
    };
    let rows =
        plans.values().flat_map(|plan| plan.idempotency.values().map(move |entry| (plan.event, entry)));
    multi_row_inserts(
        dialect,
        "INSERT INTO idempotency_entries (event_id, idempotency_key, fingerprint, decision_json, decided_at) VALUES ",
        5,
        tail,
        rows,
        |values, (event, entry)| {
            values.push(event.as_str());
            values.push(entry.key);
            values.push(entry.fingerprint);
            values.push(entry.decision_json.as_str());
            values.push(entry.decided_at);
        },
    )
}

fn audit_inserts<'a>(dialect: Dialect, plans: &'a BTreeMap<&EventId, EventPlan<'_>>) -> Vec<Statement<'a>> {
    let rows = plans.values().flat_map(|plan| plan.audit.iter().map(move |entry| (plan.event, entry)));
    multi_row_inserts(
        dialect,
        "INSERT INTO audit_log (event_id, seq, registration_number, kind, detail_json, at) VALUES ",
        6,
        "",
        rows,
        |values, (event, entry)| {
            values.push(event.as_str());
            values.push(entry.seq);
            values.push(entry.registration);
            values.push(entry.kind);
            values.push(entry.detail_json.as_str());
            values.push(entry.at);
        },
    )
}

fn outbox_inserts<'a>(dialect: Dialect, plans: &'a BTreeMap<&EventId, EventPlan<'_>>) -> Vec<Statement<'a>> {
    let rows = plans.values().flat_map(|plan| plan.outbox.iter().map(move |entry| (plan.event, entry)));
    multi_row_inserts(
        dialect,
        "INSERT INTO outbox (event_id, registration_number, kind, payload_json, available_at, created_at) VALUES ",
        6,
        "",
        rows,
        |values, (event, entry)| {
            values.push(event.as_str());
            values.push(entry.registration);
            values.push(entry.kind);
            values.push(entry.payload_json.as_str());
            values.push(entry.at);
            values.push(entry.at);
        },
    )
}

/// One `UPDATE` for up to `CHANGES_PER_STATEMENT_MAX` stored registrations of one event, each
/// to its own status, hold expiry and time. Every value is explicit per row, so the statement
/// means the same on MySQL (which lets later assignments see earlier ones) and on SQLite.
/// `waitlist_position` stays: it is what the registration was created as (`plan::Creation`).
fn change_statement<'a>(
    event: &'a EventId,
    changes: &[&crate::store::plan::RegistrationChange],
) -> Statement<'a> {
    let mut statement = Statement::new("UPDATE registrations SET status = CASE number");
    for change in changes {
        statement.sql.push_str(" WHEN ? THEN ?");
        statement.push_value(change.number);
        statement.push_value(change.status.as_str());
    }
    statement.sql.push_str(" END, hold_expires_at = CASE number");
    for change in changes {
        statement.sql.push_str(" WHEN ? THEN ?");
        statement.push_value(change.number);
        statement.push_value(change.hold_expires_at);
    }
    statement.sql.push_str(" END, updated_at = CASE number");
    for change in changes {
        statement.sql.push_str(" WHEN ? THEN ?");
        statement.push_value(change.number);
        statement.push_value(change.updated_at);
    }
    statement.sql.push_str(" END");
    let ended: Vec<i64> =
        changes.iter().filter(|change| !change.status.is_active()).map(|change| change.number).collect();
    if !ended.is_empty() {
        statement.sql.push_str(", active_email = CASE WHEN number IN (");
        push_placeholders(&mut statement.sql, ended.len());
        statement.sql.push_str(") THEN NULL ELSE active_email END");
        for number in ended {
            statement.push_value(number);
        }
    }
    statement.sql.push_str(" WHERE event_id = ? AND number IN (");
    statement.push_value(event.as_str());
    push_placeholders(&mut statement.sql, changes.len());
    statement.sql.push(')');
    for change in changes {
        statement.push_value(change.number);
    }
    statement
}
