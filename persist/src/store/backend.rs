//! The two databases behind one small interface. Everything above this module builds SQL text
//! and a list of `Value`s once, and this module binds and runs them on MySQL or SQLite. Keeping
//! the statement logic free of sqlx's per-database generics is what lets one implementation of
//! the writer and of recovery serve both dialects.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use sqlx::Row;
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool, MySqlRow};
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};

use crate::store::text_protocol;

/// Which SQL dialect a statement is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Mysql,
    Sqlite,
}

/// A value bound to one `?` of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    /// Text given as its UTF-8 bytes: an engine identifier's (`Email::as_bytes` and the like),
    /// whose `as_str` checks again that they are UTF-8 (about 150 instructions for a short
    /// text, callgrind). Written in as bytes, and the statement's text is checked once when it
    /// is sent (`text_protocol`); bound, it is copied into a `String` (lossless: it is UTF-8).
    Utf8(&'a [u8]),
    Null,
}

impl<'a> From<i64> for Value<'a> {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(value)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// SQL text with its `?` placeholders and the values bound to them, in order; or, built by
/// `Statement::writing` for MySQL, its text with the values written in as literals.
#[derive(Debug, Default)]
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub values: Vec<Value<'a>>,
    /// The statement's text with its values written in as literals (`text_protocol`), built by
    /// `push_sql` and `write_value`; `sql` and `values` stay empty. Sent as it is over MySQL's
    /// text protocol, as every statement inside a MySQL transaction is: the writer's rows go
    /// straight into the text they are sent in, with no `?` to look for and no list of values
    /// to walk again (`docs/benchmarks.md`, "Where an admission's instructions go").
    pub literal: Option<Vec<u8>>,
}

impl<'a> Statement<'a> {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), values: Vec::new(), literal: None }
    }

    /// A statement that starts with `sql` and is continued by `push_sql` and `write_value`: on
    /// MySQL with its values written in (see `literal`), for a transaction's statements only;
    /// on SQLite with `?`s and bound values.
    pub fn writing(dialect: Dialect, sql: &str) -> Self {
        match dialect {
            Dialect::Mysql => Statement { literal: Some(sql.as_bytes().to_vec()), ..Statement::default() },
            Dialect::Sqlite => Statement::new(sql),
        }
    }

    /// Appends SQL text (not a value: see `write_value`).
    pub fn push_sql(&mut self, sql: &str) {
        match &mut self.literal {
            Some(text) => text.extend_from_slice(sql.as_bytes()),
            None => self.sql.push_str(sql),
        }
    }

    /// Appends a value to the text: its literal, or a `?` bound to it.
    pub fn write_value(&mut self, value: impl Into<Value<'a>>) {
        match &mut self.literal {
            Some(text) => text_protocol::push_literal(text, value.into()),
            None => {
                self.sql.push('?');
                self.values.push(value.into());
            }
        }
    }

    /// Makes room for `bytes` more of a text with its values written in (`literal`); nothing
    /// for one with bound values, whose text is short.
    pub fn reserve_written(&mut self, bytes: usize) {
        if let Some(text) = &mut self.literal {
            text.reserve(bytes);
        }
    }

    /// Where the statement's values end now, for `value_bytes_since`.
    pub fn mark(&self) -> usize {
        match &self.literal {
            Some(text) => text.len(),
            None => self.values.len(),
        }
    }

    /// The bytes of the values written since `mark`: their literals with what is between them,
    /// or, bound, text as its length and a number or NULL as 8.
    pub fn value_bytes_since(&self, mark: usize) -> usize {
        match &self.literal {
            Some(text) => text.len().saturating_sub(mark),
            None => self.values[mark.min(self.values.len())..]
                .iter()
                .map(|value| match value {
                    Value::Text(text) => text.len(),
                    Value::Utf8(bytes) => bytes.len(),
                    Value::Int(_) | Value::Null => 8,
                })
                .sum(),
        }
    }

    pub fn bind(mut self, value: impl Into<Value<'a>>) -> Self {
        self.values.push(value.into());
        self
    }

    pub fn push_value(&mut self, value: impl Into<Value<'a>>) {
        self.values.push(value.into());
    }
}

/// Reads the columns of one result row by position, whichever database produced it.
pub(crate) trait RowAccess {
    fn int(&self, index: usize) -> Result<i64, sqlx::Error>;
    fn optional_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, index: usize) -> Result<&str, sqlx::Error>;
    fn optional_text(&self, index: usize) -> Result<Option<&str>, sqlx::Error>;
    /// Columns stored as VARBINARY on MySQL and TEXT on SQLite.
    fn bytes(&self, index: usize) -> Result<&[u8], sqlx::Error>;
    fn optional_bytes(&self, index: usize) -> Result<Option<&[u8]>, sqlx::Error>;
}

macro_rules! row_access {
    ($row:ty) => {
        impl RowAccess for $row {
            fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
                self.try_get(index)
            }
            fn optional_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(index)
            }
            fn text(&self, index: usize) -> Result<&str, sqlx::Error> {
                self.try_get(index)
            }
            fn optional_text(&self, index: usize) -> Result<Option<&str>, sqlx::Error> {
                self.try_get(index)
            }
            fn bytes(&self, index: usize) -> Result<&[u8], sqlx::Error> {
                self.try_get(index)
            }
            fn optional_bytes(&self, index: usize) -> Result<Option<&[u8]>, sqlx::Error> {
                self.try_get(index)
            }
        }
    };
}

row_access!(MySqlRow);
row_access!(SqliteRow);

/// The next item of a stream, without a dependency on a stream combinator crate.
pub(crate) async fn next_item<S: Stream + ?Sized>(stream: &mut Pin<Box<S>>) -> Option<S::Item> {
    poll_fn(|context| stream.as_mut().poll_next(context)).await
}

/// The same functions for each database, generated from one body so that they cannot drift.
macro_rules! database_functions {
    ($module:ident, $database:ty) => {
        pub(crate) mod $module {
            use super::{RowAccess, Statement, Value, next_within, prepared};
            use sqlx::{AssertSqlSafe, Executor};

            fn query<'q>(
                statement: &Statement<'_>,
            ) -> sqlx::query::Query<'q, $database, <$database as sqlx::Database>::Arguments> {
                let mut query = sqlx::query::<$database>(AssertSqlSafe(statement.sql.as_str()));
                for value in &statement.values {
                    query = match *value {
                        Value::Int(number) => query.bind(number),
                        Value::Text(text) => query.bind(text),
                        // Lossless for the identifiers' bytes, which are UTF-8.
                        Value::Utf8(bytes) => query.bind(String::from_utf8_lossy(bytes).into_owned()),
                        Value::Null => query.bind(None::<i64>),
                    };
                }
                query
            }

            /// Runs a statement; returns the rows it matched (MySQL reports found rows, not
            /// changed ones, because sqlx connects with `CLIENT_FOUND_ROWS`).
            pub(crate) async fn execute<'c, E>(
                executor: E,
                statement: &Statement<'_>,
            ) -> Result<u64, sqlx::Error>
            where
                E: Executor<'c, Database = $database>,
            {
                prepared(statement)?;
                Ok(query(statement).execute(executor).await?.rows_affected())
            }

            /// Streams the rows of a query into `visit`, one at a time, never holding them all.
            /// Fails when no row (or the end) comes within `timeout`.
            pub(crate) async fn for_each_row<'c, E, Failure>(
                executor: E,
                statement: &Statement<'_>,
                timeout: std::time::Duration,
                mut visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
            ) -> Result<(), Failure>
            where
                E: Executor<'c, Database = $database>,
                Failure: From<sqlx::Error>,
            {
                prepared(statement)?;
                let query = query(statement);
                let mut rows = query.fetch(executor);
                while let Some(row) = next_within(&mut rows, timeout).await? {
                    visit(&row?)?;
                }
                Ok(())
            }
        }
    };
}

/// Fails for a statement with its values written in (`Statement::literal`): it is built for
/// MySQL's text protocol, inside a transaction, and never prepared.
fn prepared(statement: &Statement<'_>) -> Result<(), sqlx::Error> {
    match statement.literal {
        Some(_) => Err(sqlx::Error::InvalidArgument(
            "a statement with its values written in runs over the text protocol only".to_owned(),
        )),
        None => Ok(()),
    }
}

database_functions!(mysql, sqlx::mysql::MySql);
database_functions!(sqlite, sqlx::sqlite::Sqlite);

/// A connection pool to either database, and the deadline of every call through it. On MySQL,
/// also the connections the writer keeps between its batches (see `HeldConnections`).
///
/// Every call (a statement, a commit, a free connection) fails with a timed-out I/O error
/// (`timed_out`, a transient failure) when the database does not answer within
/// `call_timeout`: a frozen or unreachable database turns into a fast refusal, never into a
/// wait without end. A stream of rows fails only when no row comes for that long, so that a
/// long read that makes progress (recovering an event of a million rows) is not cut short.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    databases: Databases,
    call_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Databases {
    Mysql(MySqlPool, Arc<HeldConnections>),
    Sqlite(SqlitePool),
}

impl Pool {
    pub fn mysql(pool: MySqlPool, call_timeout: Duration) -> Pool {
        Pool { databases: Databases::Mysql(pool, Arc::new(HeldConnections::default())), call_timeout }
    }

    pub fn sqlite(pool: SqlitePool, call_timeout: Duration) -> Pool {
        Pool { databases: Databases::Sqlite(pool), call_timeout }
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The same pool (the same connections), with another deadline per call.
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Pool {
        self.call_timeout = call_timeout;
        self
    }
}

/// The error of a call the database did not answer within `timeout`. An I/O error, so that the
/// writer counts it as transient: the same transaction may well succeed once the database
/// answers again.
pub(crate) fn timed_out(timeout: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the database did not answer within {} ms", timeout.as_millis()),
    ))
}

/// `call`, or `timed_out` if it takes longer than `timeout`. A call cut short is dropped: a
/// held connection in the middle of it is closed with it (see `HeldTransaction`).
pub(crate) async fn within<T, Failure: From<sqlx::Error>>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(timed_out(timeout).into()),
    }
}

/// The next item of a stream, or `timed_out` when none comes within `timeout`.
pub(crate) async fn next_within<S: Stream + ?Sized>(
    stream: &mut Pin<Box<S>>,
    timeout: Duration,
) -> Result<Option<S::Item>, sqlx::Error> {
    tokio::time::timeout(timeout, next_item(stream)).await.map_err(|_elapsed| timed_out(timeout))
}

/// An open transaction on either database. Dropping it without `commit` rolls it back.
#[derive(Debug)]
pub(crate) struct Transaction {
    kind: TransactionKind,
    call_timeout: Duration,
}

#[derive(Debug)]
enum TransactionKind {
    Mysql(sqlx::Transaction<'static, MySql>),
    /// Begun by `Pool::begin_locked`, on a held connection.
    MysqlHeld(HeldTransaction),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// Connections the writer keeps between its batches instead of returning them to the pool:
/// at most `HELD_CONNECTIONS_MAX`, as many as batches commit at once.
///
/// Why not the pool. sqlx pings a pooled connection when it is handed out and again when it
/// comes back (`test_before_acquire`, and the release check), and `begin` is a round trip of
/// its own: three round trips per batch besides the batch's own work, each a wake-up of the
/// writer and of a MariaDB thread. Timed per phase during admissions (64 clients, batches of
/// about 32 registrations; docs/benchmarks.md): acquiring and `BEGIN` took 0.30 ms of a 1.47 ms
/// commit cycle. A held
/// connection is not pinged; `begin_locked` sends `START TRANSACTION` in one round trip with
/// the batch's first statement. A held connection that broke (the server restarted, or killed
/// it) fails its next batch with an I/O error, which is transient: the connection is dropped,
/// and the writer's retry takes a pinged one from the pool.
#[derive(Debug, Default)]
pub(crate) struct HeldConnections {
    idle: Mutex<Vec<MySqlConnection>>,
}

/// Held connections kept idle, at most: as many as the writer commits batches at once.
const HELD_CONNECTIONS_MAX: usize = super::WRITER_CONNECTIONS_MAX as usize;

impl HeldConnections {
    fn take(&self) -> Option<MySqlConnection> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    /// Keeps a connection whose transaction ended (committed or rolled back).
    fn give_back(&self, connection: MySqlConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < HELD_CONNECTIONS_MAX {
            idle.push(connection);
        }
    }

    async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for connection in idle {
            // Closing is a courtesy to the server; a failure leaves nothing open on our side.
            let _ = sqlx::Connection::close(connection).await;
        }
    }
}

/// A transaction on a held connection. Dropped before it committed or rolled back (an error
/// on the way, or the writer stopping), its connection is dropped too: the socket closes and
/// the server rolls the transaction back. A connection in an unknown state is never reused.
#[derive(Debug)]
pub(crate) struct HeldTransaction {
    connection: Option<MySqlConnection>,
    held: Arc<HeldConnections>,
}

impl HeldTransaction {
    fn connection(&mut self) -> Result<&mut MySqlConnection, sqlx::Error> {
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Sends `COMMIT` or `ROLLBACK`; only if it succeeds is the connection kept for the next
    /// batch.
    async fn end(mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        let connection = self.connection()?;
        sqlx::Executor::execute(&mut *connection, sqlx::raw_sql(statement)).await?;
        if let Some(connection) = self.connection.take() {
            self.held.give_back(connection);
        }
        Ok(())
    }
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self.databases {
            Databases::Mysql(..) => Dialect::Mysql,
            Databases::Sqlite(_) => Dialect::Sqlite,
        }
    }

    fn transaction(&self, kind: TransactionKind) -> Transaction {
        Transaction { kind, call_timeout: self.call_timeout }
    }

    /// Starts a transaction that writes. SQLite takes its write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and writes later fails with
    /// `SQLITE_BUSY` when another connection wrote in between, and no busy timeout helps then.
    pub async fn begin_write(&self) -> Result<Transaction, sqlx::Error> {
        let kind = within(self.call_timeout, async {
            Ok::<_, sqlx::Error>(match &self.databases {
                Databases::Mysql(pool, _) => TransactionKind::Mysql(pool.begin().await?),
                Databases::Sqlite(pool) => TransactionKind::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            })
        })
        .await?;
        Ok(self.transaction(kind))
    }

    /// Starts the writer's transaction, runs the queries `locks` (their rows go to `visit`) and
    /// then the statements `then`, and returns the rows each of `then` matched. On MySQL on a
    /// held connection, and `START TRANSACTION`, the first lock (if any) and as much of `then` as
    /// `text_protocol::ROUND_TRIP_BYTES_MAX` allows go in one round trip (see `HeldConnections`);
    /// on SQLite as `begin_write` does.
    pub async fn begin_locked<Failure: From<sqlx::Error>>(
        &self,
        locks: &[Statement<'_>],
        mut visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
        then: &[Statement<'_>],
    ) -> Result<(Transaction, Vec<u64>), Failure> {
        // The locks not sent yet.
        let (mut transaction, locks, mut matched) = match &self.databases {
            Databases::Mysql(pool, held) => {
                let connection = match held.take() {
                    Some(connection) => connection,
                    None => within(self.call_timeout, pool.acquire()).await?.detach(),
                };
                let mut transaction = HeldTransaction { connection: Some(connection), held: held.clone() };
                let (first, rest) = match locks.split_first() {
                    Some((first, rest)) => (Some(first), rest),
                    None => (None, locks),
                };
                // `then` follows the locks: in the same round trip only if no lock is left.
                let now = if rest.is_empty() { then } else { &[] };
                let connection = transaction.connection()?;
                let matched =
                    within(self.call_timeout, text_protocol::begin_with(connection, first, &mut visit, now))
                        .await?;
                (self.transaction(TransactionKind::MysqlHeld(transaction)), rest, matched)
            }
            Databases::Sqlite(_) => (self.begin_write().await?, locks, Vec::new()),
        };
        for lock in locks {
            transaction.for_each_row(lock, &mut visit).await?;
        }
        if matched.len() < then.len() {
            let rest = &then[matched.len()..];
            matched.extend(transaction.execute_all(rest).await?);
        }
        Ok((transaction, matched))
    }

    pub async fn execute(&self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        within(self.call_timeout, async {
            match &self.databases {
                Databases::Mysql(pool, _) => mysql::execute(pool, statement).await,
                Databases::Sqlite(pool) => sqlite::execute(pool, statement).await,
            }
        })
        .await
    }

    /// Runs `statements` in order on one connection, each committing on its own, and returns
    /// the rows each matched. On MySQL they go unprepared over the text protocol, several per
    /// round trip: for statements whose text changes from call to call (see `text_protocol`).
    pub async fn execute_all_unprepared(
        &self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<u64>, sqlx::Error> {
        within(self.call_timeout, async {
            match &self.databases {
                Databases::Mysql(pool, _) => {
                    let mut connection = pool.acquire().await?;
                    text_protocol::execute_all(&mut connection, statements).await
                }
                Databases::Sqlite(pool) => {
                    let mut matched = Vec::with_capacity(statements.len());
                    for statement in statements {
                        matched.push(sqlite::execute(pool, statement).await?);
                    }
                    Ok(matched)
                }
            }
        })
        .await
    }

    /// Streams the rows of a query into `visit`; fails when no row (or the end) comes within
    /// the call timeout.
    pub async fn for_each_row<Failure: From<sqlx::Error>>(
        &self,
        statement: &Statement<'_>,
        visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let timeout = self.call_timeout;
        match &self.databases {
            Databases::Mysql(pool, _) => mysql::for_each_row(pool, statement, timeout, visit).await,
            Databases::Sqlite(pool) => sqlite::for_each_row(pool, statement, timeout, visit).await,
        }
    }

    pub async fn close(&self) {
        match &self.databases {
            Databases::Mysql(pool, held) => {
                held.close().await;
                pool.close().await;
            }
            Databases::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Statements inside a transaction go over MySQL's text protocol (see `text_protocol` for why);
/// SQLite runs each as a prepared statement, which costs no round trip. Each call has the pool's
/// deadline; a transaction whose call timed out is dropped by its caller, which rolls it back (or
/// closes its held connection).
impl Transaction {
    pub async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        let matched = self.execute_all(std::slice::from_ref(statement)).await?;
        Ok(matched.first().copied().unwrap_or(0))
    }

    /// Runs `statements` in order and returns the rows each matched; on MySQL several
    /// statements share a round trip.
    pub async fn execute_all(&mut self, statements: &[Statement<'_>]) -> Result<Vec<u64>, sqlx::Error> {
        within(self.call_timeout, async {
            match &mut self.kind {
                TransactionKind::Mysql(transaction) => {
                    text_protocol::execute_all(transaction, statements).await
                }
                TransactionKind::MysqlHeld(transaction) => {
                    text_protocol::execute_all(transaction.connection()?, statements).await
                }
                TransactionKind::Sqlite(transaction) => {
                    let mut matched = Vec::with_capacity(statements.len());
                    for statement in statements {
                        matched.push(sqlite::execute(&mut **transaction, statement).await?);
                    }
                    Ok(matched)
                }
            }
        })
        .await
    }

    pub async fn for_each_row<Failure: From<sqlx::Error>>(
        &mut self,
        statement: &Statement<'_>,
        visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let timeout = self.call_timeout;
        match &mut self.kind {
            TransactionKind::Mysql(transaction) => {
                text_protocol::for_each_row(transaction, statement, timeout, visit).await
            }
            TransactionKind::MysqlHeld(transaction) => {
                text_protocol::for_each_row(transaction.connection()?, statement, timeout, visit).await
            }
            TransactionKind::Sqlite(transaction) => {
                sqlite::for_each_row(&mut **transaction, statement, timeout, visit).await
            }
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        within(self.call_timeout, async {
            match self.kind {
                TransactionKind::Mysql(transaction) => transaction.commit().await,
                TransactionKind::MysqlHeld(transaction) => transaction.end("COMMIT").await,
                TransactionKind::Sqlite(transaction) => transaction.commit().await,
            }
        })
        .await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        within(self.call_timeout, async {
            match self.kind {
                TransactionKind::Mysql(transaction) => transaction.rollback().await,
                TransactionKind::MysqlHeld(transaction) => transaction.end("ROLLBACK").await,
                TransactionKind::Sqlite(transaction) => transaction.rollback().await,
            }
        })
        .await
    }
}

/// Where a read runs: on any pooled connection, or inside an open transaction.
#[derive(Debug)]
pub(crate) enum Runner<'a> {
    Pool(&'a Pool),
    Transaction(&'a mut Transaction),
}

impl Runner<'_> {
    pub async fn for_each_row<Failure: From<sqlx::Error>>(
        &mut self,
        statement: &Statement<'_>,
        visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match self {
            Runner::Pool(pool) => pool.for_each_row(statement, visit).await,
            Runner::Transaction(transaction) => transaction.for_each_row(statement, visit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::store::{FailureKind, PersistError};

    const TIMEOUT: Duration = Duration::from_millis(1_000);

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends_at_its_deadline_as_a_transient_failure() {
        let started = Instant::now();
        let result: Result<(), PersistError> = within(TIMEOUT, std::future::pending()).await;
        assert_eq!(started.elapsed(), TIMEOUT);
        let failure = result.unwrap_err();
        assert_eq!(failure.failure_kind(), FailureKind::Transient, "{failure}");
        assert!(failure.chain().contains("did not answer within 1000 ms"), "{}", failure.chain());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_answers_before_its_deadline_keeps_its_answer() {
        let slow = async {
            tokio::time::sleep(TIMEOUT - Duration::from_millis(1)).await;
            Ok::<_, PersistError>(7)
        };
        assert_eq!(within(TIMEOUT, slow).await.unwrap(), 7);
        let refused = async { Err::<(), _>(PersistError::Database(sqlx::Error::RowNotFound)) };
        assert!(matches!(
            within(TIMEOUT, refused).await,
            Err(PersistError::Database(sqlx::Error::RowNotFound))
        ));
    }
}
