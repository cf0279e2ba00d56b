//! What the operators' page (`GET /admin`) and the event listing (`GET /v1/events`) read from the
//! store: the newest events, the events by id, and a summary of the outbox and of the webhook
//! messages. Both are small, indexed, bounded reads: the page polls them during a surge,
//! beside the write-behind's commits.

use kuota_engine::{EventId, Timestamp};

use crate::store::backend::Statement;
use crate::store::plan::{millis, signed, unsigned};
use crate::store::{PAGE_SIZE_MAX, PersistError, SqlStore, invalid, timestamp};

/// An event as the operators' page and the event listing list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEvent {
    pub id: EventId,
    pub name: String,
    pub created_at: Timestamp,
}

/// The outbox's backlog and dead entries. Counts stop at the `count_max` given to
/// `outbox_summary`, so that a large backlog costs a bounded read; `*_capped` says one stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Entries not yet delivered (due now or waiting for a retry).
    pub pending: u64,
    pub pending_capped: bool,
    /// How long the longest-waiting due entry has waited past its due time, in ms; 0 when
    /// nothing is overdue.
    pub oldest_due_age_ms: u64,
    /// Entries out of attempts, kept for an operator.
    pub dead: u64,
    pub dead_capped: bool,
}

impl SqlStore {
    /// Events by id after `after`, at most `limit` (≤ `PAGE_SIZE_MAX`): one page of a keyset
    /// listing, whose next page starts after the last id of this one.
    #[tracing::instrument(skip(self))]
    pub async fn events_page(
        &self,
        after: Option<&EventId>,
        limit: u32,
    ) -> Result<Vec<ListedEvent>, PersistError> {
        let limit = i64::from(limit.min(PAGE_SIZE_MAX));
        let statement = match after {
            Some(after) => {
                Statement::new("SELECT id, name, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?")
                    .bind(after.as_str())
                    .bind(limit)
            }
            None => Statement::new("SELECT id, name, created_at FROM events ORDER BY id LIMIT ?").bind(limit),
        };
        self.listed_events(&statement).await
    }

    /// The `limit` most recently created events, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<ListedEvent>, PersistError> {
        let statement =
            Statement::new("SELECT id, name, created_at FROM events ORDER BY created_at DESC, id LIMIT ?")
                .bind(i64::from(limit));
        self.listed_events(&statement).await
    }

    async fn listed_events(&self, statement: &Statement<'_>) -> Result<Vec<ListedEvent>, PersistError> {
        let mut events = Vec::new();
        self.pool
            .for_each_row(statement, |row| {
                events.push(ListedEvent {
                    id: EventId::parse(row.text(0)?).map_err(|error| invalid("events.id", error))?,
                    name: row.text(1)?.to_owned(),
                    created_at: timestamp(row.int(2)?, "events.created_at")?,
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(events)
    }

    /// The outbox's backlog, its longest overdue wait at `now`, and its dead entries, each
    /// count read through the `(status, available_at, id)` index and stopped at `count_max`.
    /// Creations past their events' cursors are pending entries too (they have no row, see
    /// `creations`), due since they were created.
    #[tracing::instrument(skip(self))]
    pub async fn outbox_summary(
        &self,
        now: Timestamp,
        count_max: u64,
    ) -> Result<OutboxSummary, PersistError> {
        let mut summary = self.backlog_summary(Backlog::Outbox, now, count_max).await?;
        let creations = self.creation_backlog().await?;
        summary.pending = summary.pending.saturating_add(creations.pending);
        if summary.pending >= count_max {
            (summary.pending, summary.pending_capped) = (count_max, true);
        }
        if let Some(created_at) = creations.oldest_created_at {
            let age_ms = u64::try_from(millis(now) - millis(created_at)).unwrap_or(0);
            summary.oldest_due_age_ms = summary.oldest_due_age_ms.max(age_ms);
        }
        Ok(summary)
    }

    /// The same for the webhook messages (one per outbox entry and endpoint), through their
    /// `(status, available_at, id)` index.
    #[tracing::instrument(skip(self))]
    pub async fn webhook_summary(
        &self,
        now: Timestamp,
        count_max: u64,
    ) -> Result<OutboxSummary, PersistError> {
        self.backlog_summary(Backlog::WebhookMessages, now, count_max).await
    }

    async fn backlog_summary(
        &self,
        backlog: Backlog,
        now: Timestamp,
        count_max: u64,
    ) -> Result<OutboxSummary, PersistError> {
        let table = backlog.table();
        let (pending, pending_capped) =
            self.backlog_count(table, super::maintenance::PENDING, count_max).await?;
        let (dead, dead_capped) = self.backlog_count(table, super::maintenance::DEAD, count_max).await?;
        let oldest = Statement::new(format!(
            "SELECT available_at FROM {table} WHERE status = ? ORDER BY status, available_at, id LIMIT 1"
        ))
        .bind(super::maintenance::PENDING);
        let mut oldest_due_at = None;
        self.pool
            .for_each_row(&oldest, |row| {
                oldest_due_at = Some(row.int(0)?);
                Ok::<(), PersistError>(())
            })
            .await?;
        let oldest_due_age_ms =
            oldest_due_at.map_or(0, |due_at| u64::try_from(millis(now) - due_at).unwrap_or(0));
        Ok(OutboxSummary { pending, pending_capped, oldest_due_age_ms, dead, dead_capped })
    }

    /// Rows of `table` in `status`, counted up to `count_max`, and whether the count stopped there.
    async fn backlog_count(
        &self,
        table: &str,
        status: &str,
        count_max: u64,
    ) -> Result<(u64, bool), PersistError> {
        let statement = Statement::new(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE status = ? LIMIT ?) AS capped"
        ))
        .bind(status)
        .bind(signed(count_max));
        let mut count = 0;
        self.pool
            .for_each_row(&statement, |row| {
                count = unsigned(row.int(0)?, "backlog count")?;
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok((count, count >= count_max))
    }
}

/// The tables whose backlog the page shows: both have `status` (`pending`, then delivered or
/// `dead`), `available_at` and an index on `(status, available_at, id)`.
#[derive(Clone, Copy, Debug)]
enum Backlog {
    Outbox,
    WebhookMessages,
}

impl Backlog {
    /// The table's name, from this closed list: never text from a request.
    fn table(self) -> &'static str {
        match self {
            Backlog::Outbox => "outbox",
            Backlog::WebhookMessages => "webhook_messages",
        }
    }
}
