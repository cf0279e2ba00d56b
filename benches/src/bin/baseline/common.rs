//! What every baseline shares: the request as Kuota's API takes it, the answers, the schema, the
//! admin route that creates events, and the capacities read from the database.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::Shared;

/// The longest e-mail address, as in Kuota's API contract.
const EMAIL_LENGTH_MAX: usize = 254;
/// The longest full name, in characters.
const FULL_NAME_LENGTH_MAX: usize = 200;
/// The longest category code.
const CATEGORY_LENGTH_MAX: usize = 32;
/// The longest `Idempotency-Key`.
const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// The baselines' tables, created at startup the way a Laravel migration would. The unique index
/// on (event, e-mail) is what refuses a second registration of one registrant; the category
/// index serves the `COUNT(*)` of the lock-and-transaction design.
pub const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS events (
        id VARCHAR(64) NOT NULL PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        created_at BIGINT NOT NULL
    ) ENGINE = InnoDB",
    "CREATE TABLE IF NOT EXISTS categories (
        event_id VARCHAR(64) NOT NULL,
        code VARCHAR(32) NOT NULL,
        name VARCHAR(200) NOT NULL,
        capacity INT UNSIGNED NOT NULL,
        PRIMARY KEY (event_id, code)
    ) ENGINE = InnoDB",
    "CREATE TABLE IF NOT EXISTS registrations (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        event_id VARCHAR(64) NOT NULL,
        category VARCHAR(32) NOT NULL,
        email VARCHAR(254) NOT NULL,
        full_name VARCHAR(200) NOT NULL,
        phone VARCHAR(32) NULL,
        idempotency_key VARBINARY(255) NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE KEY registrations_registrant (event_id, email),
        KEY registrations_category (event_id, category)
    ) ENGINE = InnoDB",
];

/// A registration request body, as `POST /v1/events/{id}/registrations` takes it in Kuota.
/// `attributes` and `waitlist` are parsed so that a body costs what it costs Kuota, but the
/// baselines keep neither (they have no waitlist).
#[derive(Debug, Deserialize)]
#[expect(dead_code, reason = "parsed for the same parsing cost as Kuota; not used")]
pub struct RegistrationBody {
    pub category: String,
    pub email: String,
    pub full_name: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
    #[serde(default)]
    pub waitlist: Option<bool>,
}

/// A checked registration request: the e-mail normalized (trimmed, lower-cased) as Kuota does.
#[derive(Debug)]
pub struct Registrant {
    pub category: String,
    pub email: String,
    pub full_name: String,
    pub phone: Option<String>,
    pub idempotency_key: String,
}

/// What a design decided for one request.
#[derive(Debug)]
pub enum Decision {
    Confirmed(u64),
    SoldOut,
    AlreadyRegistered,
    UnknownCategory,
    /// The design could not decide in time (lock wait exceeded); the client should retry.
    Busy,
}

/// An answer that is not a 2xx, as a problem document with Kuota's `code`.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str) -> Problem {
        Problem { status, code }
    }

    pub fn response(&self) -> HttpResponse {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
        });
        HttpResponse::build(self.status).content_type("application/problem+json").body(body.to_string())
    }
}

#[derive(Serialize)]
struct Admission<'a> {
    id: String,
    event_id: &'a str,
    category: &'a str,
    status: &'static str,
    created_at: i64,
}

/// The answer to an admitted registration, shaped like Kuota's (without its access token).
pub fn confirmed(event: &str, category: &str, id: u64) -> HttpResponse {
    let body = Admission {
        id: format!("{event}.{id}"),
        event_id: event,
        category,
        status: "confirmed",
        created_at: now_ms(),
    };
    HttpResponse::Created().json(body)
}

/// The HTTP answer for a design's decision.
/// How a stateful design decides one parsed registration.
pub trait Design: 'static {
    fn decide(
        state: &Shared,
        event: &str,
        registrant: &Registrant,
    ) -> impl Future<Output = anyhow::Result<Decision>>;
}

/// `POST /v1/events/{event_id}/registrations` of a stateful design: the same parsing and answers
/// for every design, its own decision.
pub async fn register<D: Design>(
    state: web::Data<Shared>,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let registrant = match Registrant::parse(&request, &body) {
        Ok(registrant) => registrant,
        Err(problem) => return problem.response(),
    };
    let decision = D::decide(&state, &path, &registrant).await;
    answer(&path, &registrant.category, decision)
}

pub fn answer(event: &str, category: &str, decision: anyhow::Result<Decision>) -> HttpResponse {
    match decision {
        Ok(Decision::Confirmed(id)) => confirmed(event, category, id),
        Ok(Decision::SoldOut) => Problem::new(StatusCode::CONFLICT, "sold_out").response(),
        Ok(Decision::AlreadyRegistered) => {
            Problem::new(StatusCode::CONFLICT, "already_registered").response()
        }
        Ok(Decision::UnknownCategory) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").response()
        }
        Ok(Decision::Busy) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded").response(),
        Err(error) => {
            eprintln!("registration failed: {error:#}");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded").response()
        }
    }
}

impl Registrant {
    /// Checks the headers and body the way Kuota's API does before anything reaches a design.
    pub fn parse(request: &HttpRequest, body: &[u8]) -> Result<Registrant, Problem> {
        let content_type =
            request.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
        }
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .ok_or(Problem::new(StatusCode::BAD_REQUEST, "idempotency_key_missing"))?;
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return Err(Problem::new(StatusCode::BAD_REQUEST, "idempotency_key_invalid"));
        }
        let body: RegistrationBody = serde_json::from_slice(body)
            .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "malformed_body"))?;
        let email = body.email.trim().to_lowercase();
        let name_length = body.full_name.chars().count();
        let valid = email.contains('@')
            && email.len() <= EMAIL_LENGTH_MAX
            && (1..=FULL_NAME_LENGTH_MAX).contains(&name_length)
            && (1..=CATEGORY_LENGTH_MAX).contains(&body.category.len());
        if !valid {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        }
        Ok(Registrant {
            category: body.category,
            email,
            full_name: body.full_name,
            phone: body.phone,
            idempotency_key: key.to_string(),
        })
    }
}

/// The event body of `POST /v1/events`, as Kuota takes it (the fields the baselines use).
#[derive(Debug, Deserialize)]
pub struct EventBody {
    pub id: String,
    pub name: String,
    pub categories: Vec<CategoryBody>,
}

#[derive(Debug, Deserialize)]
pub struct CategoryBody {
    pub code: String,
    pub name: String,
    pub capacity: u32,
}

/// True when the request carries the admin bearer token.
pub fn is_admin(request: &HttpRequest, token: &str) -> bool {
    let header = request.headers().get("authorization").and_then(|value| value.to_str().ok());
    header.and_then(|value| value.strip_prefix("Bearer ")) == Some(token)
}

/// `POST /v1/events` for the designs that store events: one transaction, event and categories.
pub async fn create_event(state: web::Data<Shared>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    if !is_admin(&request, &state.admin_token) {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized").response();
    }
    let Ok(event) = serde_json::from_slice::<EventBody>(&body) else {
        return Problem::new(StatusCode::BAD_REQUEST, "malformed_body").response();
    };
    let Some(pool) = &state.database else {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded").response();
    };
    match insert_event(pool, &event).await {
        Ok(()) => HttpResponse::Created().json(serde_json::json!({ "id": event.id, "name": event.name })),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            Problem::new(StatusCode::CONFLICT, "event_exists").response()
        }
        Err(error) => answer(&event.id, "", Err(error.into())),
    }
}

async fn insert_event(pool: &MySqlPool, event: &EventBody) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("INSERT INTO events (id, name, created_at) VALUES (?, ?, ?)")
        .bind(&event.id)
        .bind(&event.name)
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
    for category in &event.categories {
        sqlx::query("INSERT INTO categories (event_id, code, name, capacity) VALUES (?, ?, ?, ?)")
            .bind(&event.id)
            .bind(&category.code)
            .bind(&category.name)
            .bind(category.capacity)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await
}

/// Category capacities, read from the database once per category and then kept: capacities do
/// not change during a sale, and caching them spares every design a query per request (a
/// favour to the baselines, which a careful application would do too).
#[derive(Debug, Default)]
pub struct Capacities {
    known: RwLock<HashMap<(String, String), u32>>,
}

impl Capacities {
    pub async fn get(&self, pool: &MySqlPool, event: &str, category: &str) -> anyhow::Result<Option<u32>> {
        let key = (event.to_string(), category.to_string());
        // A poisoned lock means another request panicked mid-insert; the map is still sound.
        if let Some(capacity) = self.known.read().unwrap_or_else(|poison| poison.into_inner()).get(&key) {
            return Ok(Some(*capacity));
        }
        let row: Option<(u32,)> =
            sqlx::query_as("SELECT capacity FROM categories WHERE event_id = ? AND code = ?")
                .bind(event)
                .bind(category)
                .fetch_optional(pool)
                .await?;
        if let Some((capacity,)) = row {
            self.known.write().unwrap_or_else(|poison| poison.into_inner()).insert(key, capacity);
        }
        Ok(row.map(|(capacity,)| capacity))
    }
}

/// The registration row every design inserts: returns its id, or the database's error (a unique
/// violation means the registrant is already registered).
pub async fn insert_registration<'c>(
    executor: impl sqlx::MySqlExecutor<'c>,
    event: &str,
    registrant: &Registrant,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO registrations (event_id, category, email, full_name, phone, idempotency_key, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event)
    .bind(&registrant.category)
    .bind(&registrant.email)
    .bind(&registrant.full_name)
    .bind(&registrant.phone)
    .bind(registrant.idempotency_key.as_bytes())
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok(result.last_insert_id())
}

/// True when `error` is the unique index refusing a second registration of one registrant.
pub fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    // A clock before 1970 is a broken machine; 0 keeps the row valid.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}
