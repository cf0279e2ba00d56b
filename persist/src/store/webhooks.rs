//! The store's side of webhooks: the organizer's endpoints, and one message row per outbox
//! entry and endpoint that wants it.
//!
//! - The outbox worker fans an entry out (`insert_webhook_messages`) outside the registration's
//!   transaction: a registration still writes its one row, and an entry no endpoint wants
//!   writes nothing more. A creation is fanned out from the registration's row (see
//!   `creations`), before any later entry of its registration.
//! - Messages are claimed as outbox entries are (see `maintenance`): one `UPDATE` moves their
//!   `available_at` to the claim's end and stamps a token, so two nodes never send one attempt
//!   at once, and a dead node's claims run out. Settling checks the token and the claim's end.
//! - A message is claimed only when no earlier message with its ordering key (its
//!   registration) waits for the same endpoint: deliveries keep their registration's order.
//! - Endpoints that failed for too long, or answered 410, are disabled: their messages wait,
//!   unclaimed, until a replay enables the endpoint again.

use kuota_engine::{EventId, Timestamp};

use crate::store::backend::{Dialect, RowAccess, Statement};
use crate::store::plan::{millis, signed, unsigned};
use crate::store::write::multi_row_inserts;
use crate::store::{PAGE_SIZE_MAX, PersistError, SqlStore, invalid, timestamp};

/// Message states as stored.
const PENDING: &str = "pending";
const SUCCEEDED: &str = "succeeded";
const DEAD: &str = "dead";

/// Why an endpoint no longer receives messages, as stored.
pub const DISABLED_GONE: &str = "gone";
pub const DISABLED_FAILING: &str = "failing";

/// The outbox kind of an event's sold-out announcement (an event-wide entry: its
/// `registration_number` is 0).
pub const SOLD_OUT_KIND: &str = "event_sold_out";

/// Rows one purge statement deletes at most.
const PURGE_CHUNK_ROWS: u32 = 1_000;

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, secret, previous_secret, \
     previous_secret_expires_at, disabled_reason, failing_since, created_at";

/// An organizer's endpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// `whsec_` + base64 of the signing key.
    pub secret: String,
    /// The secret before the latest rotation, still signed with until its expiry.
    pub previous_secret: Option<(String, Timestamp)>,
    /// `gone`, `failing`, or `None` while enabled.
    pub disabled_reason: Option<String>,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    /// The secrets to sign with at `now`: the current one, and the previous one until it expires.
    pub fn secrets_at(&self, now: Timestamp) -> Vec<&str> {
        let previous = self.previous_secret.as_ref().filter(|(_, expires_at)| now < *expires_at);
        std::iter::once(self.secret.as_str()).chain(previous.map(|(secret, _)| secret.as_str())).collect()
    }
}

/// One message for one endpoint, as the fan-out writes it.
#[derive(Clone, Copy, Debug)]
pub struct NewMessage<'a> {
    pub endpoint_id: &'a str,
    pub message_id: &'a str,
    pub event_type: &'a str,
    pub ordering_key: &'a str,
    pub body: &'a str,
}

/// A claimed message with what sending it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedMessage {
    pub id: u64,
    pub endpoint: WebhookEndpoint,
    pub message_id: String,
    pub event_type: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: Timestamp,
}

/// Messages claimed in one round, until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageClaim {
    pub token: String,
    pub until: Timestamp,
    pub messages: Vec<ClaimedMessage>,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageSettlement {
    Succeeded,
    Retry {
        retry_at: Timestamp,
        error: String,
    },
    /// Out of retries: kept for a replay.
    Dead {
        error: String,
    },
    /// The receiver answered 410: the message is dead and the endpoint disabled (`gone`).
    Gone {
        error: String,
    },
}

/// One ended attempt of a claimed message, for `SqlStore::settle_webhook_messages`.
#[derive(Clone, Copy, Debug)]
pub struct SettledAttempt<'a> {
    /// The claim the attempt was made under: its token and end.
    pub token: &'a str,
    pub until: Timestamp,
    pub message: &'a ClaimedMessage,
    pub settlement: &'a MessageSettlement,
}

/// An endpoint's messages by state, and its failed attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub succeeded: u64,
    pub pending: u64,
    pub dead: u64,
    pub failed_attempts: u64,
}

/// What the delivery metrics show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookBacklog {
    /// When the oldest message not yet delivered (or outbox entry not yet fanned out) was written.
    pub oldest_undelivered: Option<Timestamp>,
    pub dead: u64,
}

impl SqlStore {
    /// Stores a new endpoint.
    #[tracing::instrument(skip_all, fields(endpoint_id = %endpoint.id))]
    pub async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), PersistError> {
        let event_types = endpoint.event_types.join(",");
        let statement = Statement::new(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?)"
        ))
        .bind(endpoint.id.as_str())
        .bind(endpoint.url.as_str())
        .bind(endpoint.description.as_deref())
        .bind(event_types.as_str())
        .bind(endpoint.secret.as_str())
        .bind(millis(endpoint.created_at));
        self.pool.execute(&statement).await?;
        Ok(())
    }

    /// Endpoints by id after `after`, at most `limit` (≤ `PAGE_SIZE_MAX`).
    #[tracing::instrument(skip(self))]
    pub async fn webhook_endpoints_page(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, PersistError> {
        let statement = Statement::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit.min(PAGE_SIZE_MAX)));
        self.endpoints(&statement).await
    }

    /// Every endpoint, enabled or not: the fan-out writes a disabled endpoint's messages too,
    /// and they wait, unclaimed, until a replay enables it (see the module documentation).
    #[tracing::instrument(skip(self))]
    pub async fn all_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, PersistError> {
        let statement =
            Statement::new(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"));
        self.endpoints(&statement).await
    }

    /// How many endpoints exist.
    pub async fn webhook_endpoint_count(&self) -> Result<u64, PersistError> {
        let statement = Statement::new("SELECT COUNT(*) FROM webhook_endpoints");
        let mut count = 0;
        self.pool
            .for_each_row(&statement, |row| {
                count = unsigned(row.int(0)?, "COUNT(*)")?;
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(count)
    }

    #[tracing::instrument(skip(self))]
    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, PersistError> {
        let statement =
            Statement::new(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?")).bind(id);
        Ok(self.endpoints(&statement).await?.pop())
    }

    async fn endpoints(&self, statement: &Statement<'_>) -> Result<Vec<WebhookEndpoint>, PersistError> {
        let mut endpoints = Vec::new();
        self.pool
            .for_each_row(statement, |row| {
                endpoints.push(endpoint_row(row, 0)?);
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(endpoints)
    }

    /// Deletes an endpoint and its messages; `false` when there was none.
    #[tracing::instrument(skip(self))]
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, PersistError> {
        let mut transaction = self.pool.begin_write().await?;
        transaction
            .execute(&Statement::new("DELETE FROM webhook_messages WHERE endpoint_id = ?").bind(id))
            .await?;
        let deleted = transaction
            .execute(&Statement::new("DELETE FROM webhook_endpoints WHERE id = ?").bind(id))
            .await?;
        transaction.commit().await?;
        Ok(deleted > 0)
    }

    /// Makes `secret` the endpoint's secret; the one before stays valid until `previous_until`.
    /// `false` when there is no such endpoint.
    #[tracing::instrument(skip(self, secret))]
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret: &str,
        previous_until: Timestamp,
    ) -> Result<bool, PersistError> {
        let statement = Statement::new(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = ?, secret = ? \
             WHERE id = ?",
        )
        .bind(millis(previous_until))
        .bind(secret)
        .bind(id);
        Ok(self.pool.execute(&statement).await? > 0)
    }

    /// Makes the endpoint's dead messages due again at `now`, with a fresh retry schedule, and
    /// enables the endpoint. Returns how many messages were revived.
    #[tracing::instrument(skip(self))]
    pub async fn replay_webhook_messages(&self, id: &str, now: Timestamp) -> Result<u64, PersistError> {
        let mut transaction = self.pool.begin_write().await?;
        let revived = transaction
            .execute(
                &Statement::new(
                    "UPDATE webhook_messages SET status = ?, attempts = 0, available_at = ?, settled_at = NULL \
                     WHERE endpoint_id = ? AND status = ?",
                )
                .bind(PENDING)
                .bind(millis(now))
                .bind(id)
                .bind(DEAD),
            )
            .await?;
        transaction
            .execute(
                &Statement::new(
                    "UPDATE webhook_endpoints SET disabled_reason = NULL, failing_since = NULL WHERE id = ?",
                )
                .bind(id),
            )
            .await?;
        transaction.commit().await?;
        Ok(revived)
    }

    /// The endpoint's messages by state (succeeded ones until purged), and its failed attempts.
    #[tracing::instrument(skip(self))]
    pub async fn webhook_message_counts(&self, id: &str) -> Result<MessageCounts, PersistError> {
        let statement = Statement::new(
            "SELECT status, COUNT(*), CAST(SUM(attempts) AS SIGNED) FROM webhook_messages WHERE endpoint_id = ? GROUP BY status",
        )
        .bind(id);
        let mut counts = MessageCounts::default();
        self.pool
            .for_each_row(&statement, |row| {
                let messages = unsigned(row.int(1)?, "COUNT(*)")?;
                let attempts = unsigned(row.optional_int(2)?.unwrap_or(0), "SUM(attempts)")?;
                match row.text(0)? {
                    SUCCEEDED => {
                        counts.succeeded = messages;
                        // Every succeeded message's last attempt succeeded.
                        counts.failed_attempts += attempts.saturating_sub(messages);
                    }
                    PENDING => {
                        counts.pending = messages;
                        counts.failed_attempts += attempts;
                    }
                    DEAD => {
                        counts.dead = messages;
                        counts.failed_attempts += attempts;
                    }
                    other => return Err(invalid("webhook_messages.status", other)),
                }
                Ok(())
            })
            .await?;
        Ok(counts)
    }

    /// Writes `messages`, each with the id of the outbox entry it comes from (0 for a creation,
    /// which has no entry: its ordering key, the registration, tells it apart), due at once;
    /// messages an entry had already (an entry fanned out twice) are left as they are. A round
    /// of the fan-out writes all its entries' messages with one multi-row statement.
    #[tracing::instrument(skip(self, messages), fields(messages = messages.len()))]
    pub async fn insert_webhook_messages(
        &self,
        messages: &[(u64, NewMessage<'_>)],
        now: Timestamp,
    ) -> Result<(), PersistError> {
        let tail = match self.pool.dialect() {
            Dialect::Mysql => " ON DUPLICATE KEY UPDATE id = id",
            Dialect::Sqlite => " ON CONFLICT (endpoint_id, ordering_key, outbox_id) DO NOTHING",
        };
        let statements = multi_row_inserts(
            self.pool.dialect(),
            "INSERT INTO webhook_messages (endpoint_id, outbox_id, message_id, event_type, ordering_key, body, \
             status, attempts, available_at, created_at) VALUES ",
            10,
            tail,
            messages,
            |values, (outbox_id, message)| {
                values.push(message.endpoint_id);
                values.push(signed(*outbox_id));
                values.push(message.message_id);
                values.push(message.event_type);
                values.push(message.ordering_key);
                values.push(message.body);
                values.push(PENDING);
                values.push(0_i64);
                values.push(millis(now));
                values.push(millis(now));
            },
        );
        if statements.is_empty() {
            return Ok(());
        }
        // One transaction, one commit, however many statements the messages' bodies take.
        let mut transaction = self.pool.begin_write().await?;
        transaction.execute_all(&statements).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Claims due messages of enabled endpoints until `until`: at most `limit` looked at, of
    /// which `admit` keeps those this node has room for (it is called once per candidate, in
    /// due order, with its endpoint's id). A message waits while an earlier one with its
    /// ordering key is pending for its endpoint (see the module documentation).
    #[tracing::instrument(skip(self, admit))]
    pub async fn claim_webhook_messages(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
        mut admit: impl FnMut(&str) -> bool + Send,
    ) -> Result<MessageClaim, PersistError> {
        let token = crate::random::token_hex(16);
        // One table, read in due order straight from `webhook_messages_due` until `limit` are
        // found, each checked against its ordering key's earlier messages through
        // `webhook_messages_order`, disabled endpoints' messages left out through a materialized
        // list of those endpoints. A join to the endpoints made the planner buffer the join and
        // sort every due message before the limit applied: with a backlog of 3,000 messages
        // 55–65 ms on an idle MariaDB, against 5–15 ms for this (docs/webhooks.md).
        //
        // MariaDB, left to itself with a backlog, looked up each candidate's earlier messages
        // through `webhook_messages_fan_out` (the endpoint alone: every message of the endpoint,
        // about a thousand, for each of 200 candidates) instead of `webhook_messages_order`:
        // 0.28 s against 0.01 s with 1,600 pending (docs/webhooks.md), and the claim, not the
        // endpoint, set the pace of delivery. Hence the hint; SQLite's planner has only the one
        // index to choose.
        let earlier_index = match self.pool.dialect() {
            Dialect::Mysql => " FORCE INDEX (webhook_messages_order)",
            Dialect::Sqlite => "",
        };
        let candidates = Statement::new(format!(
            "SELECT m.id, m.endpoint_id FROM webhook_messages m WHERE m.status = ? AND m.available_at <= ? \
             AND m.endpoint_id NOT IN (SELECT d.id FROM webhook_endpoints d WHERE d.disabled_reason IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM webhook_messages earlier{earlier_index} \
             WHERE earlier.endpoint_id = m.endpoint_id \
             AND earlier.ordering_key = m.ordering_key AND earlier.status = ? AND earlier.id < m.id) \
             ORDER BY m.status, m.available_at, m.id LIMIT ?",
        ))
        .bind(PENDING)
        .bind(millis(now))
        .bind(PENDING)
        .bind(i64::from(limit.min(PAGE_SIZE_MAX)));
        let mut chosen = Vec::new();
        self.pool
            .for_each_row(&candidates, |row| {
                if admit(row.text(1)?) {
                    chosen.push(row.int(0)?);
                }
                Ok::<(), PersistError>(())
            })
            .await?;
        let mut messages = Vec::new();
        if chosen.is_empty() {
            return Ok(MessageClaim { token, until, messages });
        }
        // The conditions again: a message another node claimed meanwhile no longer meets them.
        let mut claim = Statement::new(
            "UPDATE webhook_messages SET claimed_by = ?, available_at = ? WHERE status = ? AND available_at <= ? \
             AND id IN (",
        )
        .bind(token.as_str())
        .bind(millis(until))
        .bind(PENDING)
        .bind(millis(now));
        for (index, id) in chosen.iter().enumerate() {
            claim.sql.push_str(if index == 0 { "?" } else { ", ?" });
            claim.push_value(*id);
        }
        claim.sql.push(')');
        if self.pool.execute_all_unprepared(&[claim]).await?.iter().sum::<u64>() == 0 {
            return Ok(MessageClaim { token, until, messages });
        }
        let claimed = Statement::new(format!(
            "SELECT m.id, m.message_id, m.event_type, m.body, m.attempts, m.created_at, {} \
             FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id \
             WHERE m.status = ? AND m.available_at = ? AND m.claimed_by = ? ORDER BY m.id",
            ENDPOINT_COLUMNS.split(", ").map(|column| format!("e.{column}")).collect::<Vec<_>>().join(", ")
        ))
        .bind(PENDING)
        .bind(millis(until))
        .bind(token.as_str());
        self.pool
            .for_each_row(&claimed, |row| {
                messages.push(ClaimedMessage {
                    id: unsigned(row.int(0)?, "webhook_messages.id")?,
                    message_id: row.text(1)?.to_owned(),
                    event_type: row.text(2)?.to_owned(),
                    body: row.text(3)?.to_owned(),
                    attempts: u32::try_from(row.int(4)?)
                        .map_err(|error| invalid("webhook_messages.attempts", error))?,
                    created_at: timestamp(row.int(5)?, "webhook_messages.created_at")?,
                    endpoint: endpoint_row(row, 6)?,
                });
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(MessageClaim { token, until, messages })
    }

    /// Records how an attempt ended, and what it says about its endpoint (see
    /// `settle_webhook_messages`). `false` when the claim had run out and another node owns the
    /// message now.
    pub async fn settle_webhook_message(
        &self,
        claim: (&str, Timestamp),
        message: &ClaimedMessage,
        settlement: &MessageSettlement,
        now: Timestamp,
        failing_disable_before: Timestamp,
    ) -> Result<bool, PersistError> {
        let (token, until) = claim;
        let attempt = SettledAttempt { token, until, message, settlement };
        let settled = self.settle_webhook_messages(&[attempt], now, failing_disable_before).await?;
        Ok(settled.first().copied().unwrap_or(false))
    }

    /// Records how attempts ended, in one transaction (one commit however many), and what
    /// they say about their endpoints: a success clears the endpoint's failing streak; a
    /// failure starts one, and disables the endpoint (`failing`) once the streak began at or
    /// before `failing_disable_before`; a 410 disables it (`gone`). Of an endpoint's attempts,
    /// the last one given says what its streak is, and any 410 disables it. Returns, for each
    /// attempt in the order given, whether it was settled: `false` when its claim had run out
    /// and another node owns the message now. What an attempt says about its endpoint holds
    /// either way. Rows are changed in id order (messages, then endpoints), so that two nodes'
    /// settlements never wait for each other in a cycle.
    #[tracing::instrument(skip_all, fields(attempts = attempts.len()))]
    pub async fn settle_webhook_messages(
        &self,
        attempts: &[SettledAttempt<'_>],
        now: Timestamp,
        failing_disable_before: Timestamp,
    ) -> Result<Vec<bool>, PersistError> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..attempts.len()).collect();
        order.sort_by_key(|index| attempts[*index].message.id);
        let mut statements = Vec::with_capacity(attempts.len() + 1);
        for index in &order {
            let SettledAttempt { token, until, message, settlement } = attempts[*index];
            let (status, available_at, error) = match settlement {
                MessageSettlement::Succeeded => (SUCCEEDED, until, None),
                MessageSettlement::Retry { retry_at, error } => (PENDING, *retry_at, Some(error.as_str())),
                MessageSettlement::Dead { error } | MessageSettlement::Gone { error } => {
                    (DEAD, until, Some(error.as_str()))
                }
            };
            let settled_at = (status != PENDING).then(|| millis(now));
            statements.push(
                Statement::new(
                    "UPDATE webhook_messages SET status = ?, attempts = attempts + 1, available_at = ?, \
                     last_error = ?, settled_at = ?, claimed_by = NULL \
                     WHERE id = ? AND status = ? AND available_at = ? AND claimed_by = ?",
                )
                .bind(status)
                .bind(millis(available_at))
                .bind(error)
                .bind(settled_at)
                .bind(signed(message.id))
                .bind(PENDING)
                .bind(millis(until))
                .bind(token),
            );
        }
        let mut endpoints: std::collections::BTreeMap<&str, &MessageSettlement> =
            std::collections::BTreeMap::new();
        for attempt in attempts {
            let said = endpoints.entry(attempt.message.endpoint.id.as_str()).or_insert(attempt.settlement);
            if !matches!(said, MessageSettlement::Gone { .. }) {
                *said = attempt.settlement;
            }
        }
        for (endpoint, settlement) in endpoints {
            statements.push(endpoint_change(endpoint, settlement, now, failing_disable_before));
        }
        let mut transaction = self.pool.begin_write().await?;
        let matched = transaction.execute_all(&statements).await?;
        transaction.commit().await?;
        let mut settled = vec![false; attempts.len()];
        for (position, index) in order.into_iter().enumerate() {
            settled[index] = matched.get(position).is_some_and(|matched| *matched > 0);
        }
        Ok(settled)
    }

    /// The age of the backlog and the dead messages, for the metrics.
    #[tracing::instrument(skip(self))]
    pub async fn webhook_backlog(&self) -> Result<WebhookBacklog, PersistError> {
        let mut backlog = WebhookBacklog::default();
        let queries = [
            // Through `webhook_messages_by_status`: the oldest pending message.
            Statement::new(
                "SELECT created_at FROM webhook_messages WHERE status = ? ORDER BY status, id LIMIT 1",
            )
            .bind(PENDING),
            // Through `outbox_due`: the entry next due, which is the oldest unless it failed before.
            Statement::new(
                "SELECT created_at FROM outbox WHERE status = ? ORDER BY status, available_at, id LIMIT 1",
            )
            .bind(PENDING),
        ];
        for query in &queries {
            self.pool
                .for_each_row(query, |row| {
                    let created_at = timestamp(row.int(0)?, "created_at")?;
                    backlog.oldest_undelivered =
                        Some(backlog.oldest_undelivered.map_or(created_at, |oldest| oldest.min(created_at)));
                    Ok::<(), PersistError>(())
                })
                .await?;
        }
        // Creations past their events' cursors are outbox entries not yet fanned out too.
        if let Some(created_at) = self.creation_backlog().await?.oldest_created_at {
            backlog.oldest_undelivered =
                Some(backlog.oldest_undelivered.map_or(created_at, |oldest| oldest.min(created_at)));
        }
        let dead = Statement::new("SELECT COUNT(*) FROM webhook_messages WHERE status = ?").bind(DEAD);
        self.pool
            .for_each_row(&dead, |row| {
                backlog.dead = unsigned(row.int(0)?, "COUNT(*)")?;
                Ok::<(), PersistError>(())
            })
            .await?;
        Ok(backlog)
    }

    /// Deletes succeeded messages settled before `settled_before`, a chunk of
    /// `PURGE_CHUNK_ROWS` at a time and at most `chunks_max` chunks. Returns how many.
    #[tracing::instrument(skip(self))]
    pub async fn purge_webhook_messages(
        &self,
        settled_before: Timestamp,
        chunks_max: u32,
    ) -> Result<u64, PersistError> {
        let mut purged = 0;
        for _ in 0..chunks_max {
            let page = Statement::new(
                "SELECT id, settled_at FROM webhook_messages WHERE status = ? ORDER BY status, id LIMIT ?",
            )
            .bind(SUCCEEDED)
            .bind(i64::from(PURGE_CHUNK_ROWS));
            let mut ids = Vec::new();
            let mut seen = 0;
            self.pool
                .for_each_row(&page, |row| {
                    seen += 1;
                    if row.optional_int(1)?.is_some_and(|settled_at| settled_at < millis(settled_before)) {
                        ids.push(row.int(0)?);
                    }
                    Ok::<(), PersistError>(())
                })
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut delete =
                Statement::new("DELETE FROM webhook_messages WHERE status = ? AND id IN (").bind(SUCCEEDED);
            for (index, id) in ids.iter().enumerate() {
                delete.sql.push_str(if index == 0 { "?" } else { ", ?" });
                delete.push_value(*id);
            }
            delete.sql.push(')');
            purged += self.pool.execute_all_unprepared(&[delete]).await?.iter().sum::<u64>();
            if seen < PURGE_CHUNK_ROWS {
                break;
            }
        }
        Ok(purged)
    }

    /// Records that `event` is sold out and, when it was not before, writes its announcement
    /// (an outbox entry of kind `SOLD_OUT_KIND` with `payload_json`) in the same transaction:
    /// whichever nodes see the change, it is announced once. Returns whether it was announced.
    #[tracing::instrument(skip(self, payload_json), fields(event_id = %event))]
    pub async fn announce_sold_out(
        &self,
        event: &EventId,
        payload_json: &str,
        now: Timestamp,
    ) -> Result<bool, PersistError> {
        let mut transaction = self.pool.begin_write().await?;
        let insert_state = Statement::new(match self.pool.dialect() {
            Dialect::Mysql => {
                "INSERT INTO webhook_event_states (event_id, sold_out) VALUES (?, 0) \
                 ON DUPLICATE KEY UPDATE event_id = event_id"
            }
            Dialect::Sqlite => {
                "INSERT INTO webhook_event_states (event_id, sold_out) VALUES (?, 0) ON CONFLICT (event_id) DO NOTHING"
            }
        })
        .bind(event.as_str());
        transaction.execute(&insert_state).await?;
        let changed = transaction
            .execute(
                &Statement::new(
                    "UPDATE webhook_event_states SET sold_out = 1 WHERE event_id = ? AND sold_out = 0",
                )
                .bind(event.as_str()),
            )
            .await?;
        if changed > 0 {
            let announce = Statement::new(
                "INSERT INTO outbox (event_id, registration_number, kind, payload_json, available_at, created_at) \
                 VALUES (?, 0, ?, ?, ?, ?)",
            )
            .bind(event.as_str())
            .bind(SOLD_OUT_KIND)
            .bind(payload_json)
            .bind(millis(now))
            .bind(millis(now));
            transaction.execute(&announce).await?;
        }
        transaction.commit().await?;
        Ok(changed > 0)
    }

    /// Records that `event` has seats again, so that its next sell-out is announced.
    #[tracing::instrument(skip(self), fields(event_id = %event))]
    pub async fn clear_sold_out(&self, event: &EventId) -> Result<(), PersistError> {
        let statement = Statement::new(
            "UPDATE webhook_event_states SET sold_out = 0 WHERE event_id = ? AND sold_out = 1",
        )
        .bind(event.as_str());
        self.pool.execute(&statement).await?;
        Ok(())
    }
}

/// What an attempt says about its endpoint; a success (the common case) changes no row while
/// the endpoint's streak is clear already.
fn endpoint_change<'a>(
    endpoint: &'a str,
    settlement: &MessageSettlement,
    now: Timestamp,
    failing_disable_before: Timestamp,
) -> Statement<'a> {
    match settlement {
        MessageSettlement::Succeeded => Statement::new(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL",
        )
        .bind(endpoint),
        MessageSettlement::Gone { .. } => Statement::new(
            "UPDATE webhook_endpoints SET disabled_reason = ? WHERE id = ? AND disabled_reason IS NULL",
        )
        .bind(DISABLED_GONE)
        .bind(endpoint),
        MessageSettlement::Retry { .. } | MessageSettlement::Dead { .. } => Statement::new(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?), \
             disabled_reason = CASE WHEN failing_since IS NOT NULL AND failing_since <= ? \
             AND disabled_reason IS NULL THEN ? ELSE disabled_reason END WHERE id = ?",
        )
        .bind(millis(now))
        .bind(millis(failing_disable_before))
        .bind(DISABLED_FAILING)
        .bind(endpoint),
    }
}

/// An endpoint from `ENDPOINT_COLUMNS`, starting at column `first`.
fn endpoint_row(row: &dyn RowAccess, first: usize) -> Result<WebhookEndpoint, PersistError> {
    let previous_secret = match (row.optional_text(first + 5)?, row.optional_int(first + 6)?) {
        (Some(secret), Some(expires_at)) => {
            Some((secret.to_owned(), timestamp(expires_at, "webhook_endpoints.previous_secret_expires_at")?))
        }
        _ => None,
    };
    Ok(WebhookEndpoint {
        id: row.text(first)?.to_owned(),
        url: row.text(first + 1)?.to_owned(),
        description: row.optional_text(first + 2)?.map(str::to_owned),
        event_types: row
            .text(first + 3)?
            .split(',')
            .filter(|kind| !kind.is_empty())
            .map(str::to_owned)
            .collect(),
        secret: row.text(first + 4)?.to_owned(),
        previous_secret,
        disabled_reason: row.optional_text(first + 7)?.map(str::to_owned),
        failing_since: row
            .optional_int(first + 8)?
            .map(|at| timestamp(at, "webhook_endpoints.failing_since"))
            .transpose()?,
        created_at: timestamp(row.int(first + 9)?, "webhook_endpoints.created_at")?,
    })
}
