//! The persistence crate's integration tests, in one binary so that it links once. They run
//! against the real MariaDB and Redis named by `KUOTA_TEST_MYSQL_URL` and `KUOTA_TEST_REDIS_URL`.

mod lease;
mod outbox;
mod overview;
mod queue;
mod redis_support;
mod session;
mod sql_support;
mod store;
mod webhooks;
mod write_behind;
