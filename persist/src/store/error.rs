//! `PersistError`, the one error of the SQL store, and how the writer classifies it.

use std::error::Error as _;
use std::fmt::Write as _;
use std::path::PathBuf;

use kuota_engine::store::StoreError;
use kuota_engine::{EventConfigError, RestoreError};

/// MySQL/MariaDB error numbers after which the same transaction may well succeed.
const MYSQL_TRANSIENT_ERRORS: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock; InnoDB rolled the transaction back
    1290, // read-only (a failover in progress)
    1317, // query interrupted
    1927, // connection killed (MariaDB)
    4031, // disconnected for inactivity (MySQL 8)
];

/// SQLite primary result codes after which the same transaction may succeed: BUSY, LOCKED.
const SQLITE_TRANSIENT_CODES: &[i64] = &[5, 6];

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("the database URL {0:?} is neither mysql://… (or mariadb://…) nor sqlite://…")]
    UnsupportedUrl(String),
    #[error("could not create the folder {path:?} for the SQLite file")]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database failed")]
    Database(#[from] sqlx::Error),
    #[error("applying the schema migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the event configuration is invalid")]
    InvalidConfig(#[from] EventConfigError),
    #[error("a stored row cannot be read: {0}")]
    InvalidRow(String),
    #[error("the stored event breaks a rule of the engine")]
    Restore(#[from] RestoreError),
    /// A write found the stored rows other than the effects say they are (a registration to
    /// update that is not stored, an event row that vanished): engine and store disagree.
    #[error("the stored rows disagree with the effects: {0}")]
    Mismatch(String),
}

/// What a failed write says about the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The same transaction may succeed if tried again shortly (deadlock, lost connection).
    Transient,
    /// The data broke a rule (a unique index, a check); trying again cannot help, and the
    /// store itself is fine.
    Data,
    /// Anything else: the store is unusable (schema missing, pool closed, disk full).
    Store,
}

impl PersistError {
    /// A call that the database did not answer within `timeout`: transient.
    pub fn timed_out(timeout: std::time::Duration) -> PersistError {
        PersistError::Database(crate::store::backend::timed_out(timeout))
    }

    pub fn failure_kind(&self) -> FailureKind {
        match self {
            PersistError::Database(error) => classify(error),
            PersistError::InvalidRow(_)
            | PersistError::Restore(_)
            | PersistError::Mismatch(_)
            | PersistError::InvalidConfig(_) => FailureKind::Data,
            PersistError::UnsupportedUrl(_)
            | PersistError::CreateFolder { .. }
            | PersistError::Migrate(_) => FailureKind::Store,
        }
    }

    /// The error with every cause, on one line: what a log line or a 503's log entry needs.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            // Writing to a String cannot fail.
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        text
    }
}

fn classify(error: &sqlx::Error) -> FailureKind {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => FailureKind::Transient,
        sqlx::Error::Database(database) => {
            if let Some(mysql) = database.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                && MYSQL_TRANSIENT_ERRORS.contains(&mysql.number())
            {
                return FailureKind::Transient;
            }
            if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && let Some(code) = database.code().and_then(|code| code.parse::<i64>().ok())
                && SQLITE_TRANSIENT_CODES.contains(&(code & 0xff))
            {
                return FailureKind::Transient;
            }
            let kind = database.kind();
            if matches!(
                kind,
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::CheckViolation
                    | sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
            ) {
                FailureKind::Data
            } else {
                FailureKind::Store
            }
        }
        _ => FailureKind::Store,
    }
}

impl From<PersistError> for StoreError {
    fn from(error: PersistError) -> Self {
        match error {
            PersistError::Restore(restore) => StoreError::Corrupt(restore),
            other => StoreError::Unavailable(other.chain()),
        }
    }
}
