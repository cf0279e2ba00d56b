//! The two databases behind one small interface. Everything above this module builds SQL text
//! and a list of `Value`s once, and this module binds and runs them on MySQL or SQLite. Keeping
//! the statement logic free of sqlx's per-database generics is what lets one implementation of
//! the writer and of recovery serve both dialects.

use std::future::poll_fn;
use std::pin::Pin;

use futures_core::Stream;
use sqlx::Row;
use sqlx::mysql::{MySql, MySqlPool, MySqlRow};
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

/// SQL text with its `?` placeholders and the values bound to them, in order.
#[derive(Debug, Default)]
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), values: Vec::new() }
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
            use super::{RowAccess, Statement, Value, next_item};
            use sqlx::{AssertSqlSafe, Executor};

            fn query<'q>(
                statement: &Statement<'_>,
            ) -> sqlx::query::Query<'q, $database, <$database as sqlx::Database>::Arguments> {
                let mut query = sqlx::query::<$database>(AssertSqlSafe(statement.sql.as_str()));
                for value in &statement.values {
                    query = match *value {
                        Value::Int(number) => query.bind(number),
                        Value::Text(text) => query.bind(text),
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
                Ok(query(statement).execute(executor).await?.rows_affected())
            }

            /// Streams the rows of a query into `visit`, one at a time, never holding them all.
            pub(crate) async fn for_each_row<'c, E, Failure>(
                executor: E,
                statement: &Statement<'_>,
                mut visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
            ) -> Result<(), Failure>
            where
                E: Executor<'c, Database = $database>,
                Failure: From<sqlx::Error>,
            {
                let query = query(statement);
                let mut rows = query.fetch(executor);
                while let Some(row) = next_item(&mut rows).await {
                    visit(&row?)?;
                }
                Ok(())
            }
        }
    };
}

database_functions!(mysql, sqlx::mysql::MySql);
database_functions!(sqlite, sqlx::sqlite::Sqlite);

/// A connection pool to either database.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

/// An open transaction on either database. Dropping it without `commit` rolls it back.
#[derive(Debug)]
pub(crate) enum Transaction {
    Mysql(sqlx::Transaction<'static, MySql>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Mysql(_) => Dialect::Mysql,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Starts a transaction that writes. SQLite takes its write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and writes later fails with
    /// `SQLITE_BUSY` when another connection wrote in between, and no busy timeout helps then.
    pub async fn begin_write(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            Pool::Mysql(pool) => Transaction::Mysql(pool.begin().await?),
            Pool::Sqlite(pool) => Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub async fn execute(&self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        match self {
            Pool::Mysql(pool) => mysql::execute(pool, statement).await,
            Pool::Sqlite(pool) => sqlite::execute(pool, statement).await,
        }
    }

    /// Runs `statements` in order on one connection, each committing on its own, and returns
    /// the rows each matched. On MySQL they go unprepared over the text protocol, several per
    /// round trip: for statements whose text changes from call to call (see `text_protocol`).
    pub async fn execute_all_unprepared(
        &self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<u64>, sqlx::Error> {
        match self {
            Pool::Mysql(pool) => {
                let mut connection = pool.acquire().await?;
                text_protocol::execute_all(&mut connection, statements).await
            }
            Pool::Sqlite(pool) => {
                let mut matched = Vec::with_capacity(statements.len());
                for statement in statements {
                    matched.push(sqlite::execute(pool, statement).await?);
                }
                Ok(matched)
            }
        }
    }

    pub async fn for_each_row<Failure: From<sqlx::Error>>(
        &self,
        statement: &Statement<'_>,
        visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match self {
            Pool::Mysql(pool) => mysql::for_each_row(pool, statement, visit).await,
            Pool::Sqlite(pool) => sqlite::for_each_row(pool, statement, visit).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Mysql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Statements inside a transaction go over MySQL's text protocol (see `text_protocol` for why);
/// SQLite runs each as a prepared statement, which costs no round trip.
impl Transaction {
    pub async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        let matched = self.execute_all(std::slice::from_ref(statement)).await?;
        Ok(matched.first().copied().unwrap_or(0))
    }

    /// Runs `statements` in order and returns the rows each matched; on MySQL several
    /// statements share a round trip.
    pub async fn execute_all(&mut self, statements: &[Statement<'_>]) -> Result<Vec<u64>, sqlx::Error> {
        match self {
            Transaction::Mysql(transaction) => text_protocol::execute_all(transaction, statements).await,
            Transaction::Sqlite(transaction) => {
                let mut matched = Vec::with_capacity(statements.len());
                for statement in statements {
                    matched.push(sqlite::execute(&mut **transaction, statement).await?);
                }
                Ok(matched)
            }
        }
    }

    pub async fn for_each_row<Failure: From<sqlx::Error>>(
        &mut self,
        statement: &Statement<'_>,
        visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match self {
            Transaction::Mysql(transaction) => {
                text_protocol::for_each_row(transaction, statement, visit).await
            }
            Transaction::Sqlite(transaction) => {
                sqlite::for_each_row(&mut **transaction, statement, visit).await
            }
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Mysql(transaction) => transaction.commit().await,
            Transaction::Sqlite(transaction) => transaction.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Mysql(transaction) => transaction.rollback().await,
            Transaction::Sqlite(transaction) => transaction.rollback().await,
        }
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
