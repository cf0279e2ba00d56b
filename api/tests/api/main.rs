//! The API's integration tests, in one binary: each starts the real server on port 0 over a
//! fresh MariaDB database (named by `KUOTA_TEST_MYSQL_URL`) or a fresh SQLite file.

mod admission;
mod bad_input;
mod browser;
mod cluster;
mod concurrency;
mod dashboard;
mod events;
mod fast_route;
mod faults;
mod lifecycle;
mod liveness;
mod openapi;
mod operations;
mod private_servers;
mod queue;
mod queue_stream;
mod registrations;
mod store_outage;
mod support;
mod webhooks;
