//! Kuota persistence: the stores behind the engine's traits (MySQL, embedded SQLite), the
//! write-behind writer with group commit, recovery, and Redis leases and sessions.
//!
//! Nothing is here yet beyond the crate itself; see the persistence issue.
