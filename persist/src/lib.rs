//! Kuota persistence: the stores behind the engine's traits (MySQL, embedded SQLite), the
//! write-behind writer with group commit, recovery, and Redis leases and sessions.
//!
//! # Layout
//! - `store`: the SQL store (MySQL/MariaDB and SQLite), migrations, recovery (`EventLoader`).
//! - `write_behind`: the writer that commits effect submissions in batches, one transaction each.
//! - `outbox`: the outbox delivery worker, and the purge of rows past their retention.
//! - `lease`: event ownership leases (Redis, or in-process for the embedded default).
//! - `ownership`: the engine's `Ownership` over leases, with the owner's address in each lease.
//! - `session`: admin sessions (Redis, or in memory for the embedded default).
//! - `redis_connection`: the shared Redis connection and the timeout on every command.
//! - `random`: random bytes and hex tokens from the operating system (lease tokens, session ids).

pub mod lease;
pub mod outbox;
pub mod ownership;
pub mod random;
pub mod redis_connection;
pub mod session;
pub mod store;
pub mod words;
pub mod write_behind;
