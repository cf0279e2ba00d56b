//! Kuota's HTTP server (`kuota`).
//!
//! # Layout
//! - `admission`: the adaptive limit on registrations in flight, which refuses overload at once.
//! - `configuration`: settings in layers (defaults, TOML file, `KUOTA_*` env, flags).
//! - `startup`: `Application::build` wires store, write-behind, registry and server; binds.
//! - `cluster`: event ownership by lease, the forward token, the forwarding client.
//! - `owner_routing`: the middleware that sends a request to its event's owner, and answers the
//!   submitted writes of an event that runs here through their use case.
//! - `use_cases`: a registration and a queue join, each one door behind a typed request.
//! - `http`: reading JSON bodies and paging parameters, the replay mark.
//! - `forward`: the HTTP/1.1 client that forwards: kept-alive connections, deadlines, a breaker per peer.
//! - `owner_cache`: other nodes' events remembered a moment, so that forwarding skips the lease service.
//! - `telemetry`: structured logs.
//! - `health`: background probes of the store and Redis, read by `/readyz`.
//! - `state`: what handlers share: registry, store, limits, auth, shedding.
//! - `routes`: one file per resource.
//! - `domain`: request bodies parsed into domain types, with every field error listed.
//! - `error`: problem documents with stable codes.
//! - `openapi`: the OpenAPI 3.1 document generated from the handlers, and Swagger UI at `/docs`.
//! - `responses`: the schemas and error answers every resource's OpenAPI description shares.
//! - `rate_limit`: GCRA limits per client IP and per registrant e-mail.
//! - `queue`: a queued event's settings, join body, ticket tokens and passes, ticket answers.
//! - `tokens`: registrant access tokens, fingerprints, constant-time comparison.
//! - `time_format`: RFC 3339 times.
//! - `metrics`: the Prometheus recorder and metric names.
//! - `middleware`: the request span and request metrics, and resources that carry their route label.
//! - `dashboard`: this node's figures for the operators' page (`routes::dashboard`, `GET /admin`).
//! - `webhooks`: Standard Webhooks delivery of the outbox to the organizer's endpoints.

pub mod admission;
pub mod cluster;
pub mod configuration;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod forward;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod owner_cache;
pub mod owner_routing;
pub mod queue;
pub mod rate_limit;
pub mod responses;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod time_format;
pub mod tokens;
pub mod use_cases;
pub mod webhooks;
