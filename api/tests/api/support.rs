//! `spawn_app`: the real server on port 0 over a fresh database (MariaDB or SQLite), and a
//! small HTTP/1.1 client that can also send what real clients never would (invalid UTF-8,
//! lying headers).

use std::sync::Arc;
use std::time::Duration;

use kuota_api::configuration::Settings;
use kuota_api::startup::Application;
use kuota_engine::{Clock, SystemClock};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    MariaDb,
    Sqlite,
}

pub struct TestApp {
    pub port: u16,
    pub database_url: String,
    database: Option<(String, String)>,
    sqlite_directory: Option<std::path::PathBuf>,
}

fn random_suffix() -> String {
    kuota_persist::random::token_hex(6)
}

fn mysql_base_url() -> String {
    std::env::var("KUOTA_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.into(),
        redis_url: None,
        redis_prefix: format!("kuota_t_{}:", random_suffix()),
        admin_token: Some(ADMIN_TOKEN.into()),
        // Limits are off unless a test turns them on: many requests come from one address.
        rate_limit_ip_per_second: 0,
        rate_limit_ip_burst: 0,
        rate_limit_email_per_minute: 0,
        trusted_proxies: Vec::new(),
        node_id: "test".into(),
        // `:0` takes the bound port.
        advertise_url: "http://127.0.0.1:0".into(),
        lease_ttl_ms: 10_000,
        request_timeout_ms: 2_000,
        store_timeout_ms: 1_000,
        store_stall_ms: 1_000,
        redis_timeout_ms: 250,
        max_connections: 4_096,
        body_limit_bytes: 16 * 1024,
        flush_interval_ms: 0,
        batch_size_max: 1_000,
        write_queue_capacity_max: 16_384,
        mailbox_capacity_max: 4_096,
        actor_threads: 1,
        http_workers: 2,
        idempotency_retention_seconds: 86_400,
        log_format: "json".into(),
        outbox_delivery: "log".into(),
        webhook_allow_hosts: String::new(),
        webhook_retry_schedule: kuota_api::webhooks::retry::RETRY_SCHEDULE_DEFAULT.into(),
        webhook_timeout_ms: kuota_api::configuration::WEBHOOK_TIMEOUT_MS_DEFAULT,
    }
}

/// A fresh database URL for `backend`, and what to drop afterwards.
pub async fn fresh_database(
    backend: Backend,
) -> (String, Option<(String, String)>, Option<std::path::PathBuf>) {
    match backend {
        Backend::MariaDb => {
            let name = format!("kuota_t_{}", random_suffix());
            let base = mysql_base_url();
            let mut connection =
                <sqlx::MySqlConnection as sqlx::Connection>::connect(&base).await.expect("MariaDB answers");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut connection)
                .await
                .expect("create database");
            (format!("{base}/{name}"), Some((base, name)), None)
        }
        Backend::Sqlite => {
            let directory = std::env::temp_dir().join(format!("kuota_t_{}", random_suffix()));
            (format!("sqlite://{}/kuota.db", directory.display()), None, Some(directory))
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (database_url, database, sqlite_directory) = fresh_database(backend).await;
    let mut app = spawn_app_on(&database_url, adjust).await;
    (app.database, app.sqlite_directory) = (database, sqlite_directory);
    app
}

/// A server whose engine reads `clock` (a `ManualClock`, to step over a hold or a window instead
/// of sleeping through it).
pub async fn spawn_app_with_clock(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let (database_url, database, sqlite_directory) = fresh_database(backend).await;
    let mut app = spawn_app_on_with_clock(&database_url, adjust, clock).await;
    (app.database, app.sqlite_directory) = (database, sqlite_directory);
    app
}

/// Another server over an existing database (a restart, or a second node); it cleans nothing up.
pub async fn spawn_app_on(database_url: &str, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_with_clock(database_url, adjust, Arc::new(SystemClock)).await
}

async fn spawn_app_on_with_clock(
    database_url: &str,
    adjust: impl FnOnce(&mut Settings),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let database_url = database_url.to_string();
    let mut settings = settings(&database_url);
    adjust(&mut settings);
    if std::env::var_os("KUOTA_TEST_LOG").is_some() {
        kuota_api::telemetry::init("pretty");
    }
    let application = Application::build_with_clock(settings, clock).await.expect("the application builds");
    let port = application.port();
    actix_rt::spawn(application.run_until_stopped());
    TestApp { port, database_url, database: None, sqlite_directory: None }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((base, name)) = self.database.take() {
            // Drop runs outside async; a thread with its own runtime drops the database.
            let dropped = std::thread::spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async move {
                    if let Ok(mut connection) =
                        <sqlx::MySqlConnection as sqlx::Connection>::connect(&base).await
                    {
                        // The test's server stops with the test's runtime; a task of it that was
                        // inside a transaction then (a sold-out announcement, a webhook round)
                        // never hands its connection back, and `DROP DATABASE` would wait for
                        // that transaction forever. Whatever still uses the database is the
                        // dead server's.
                        let leftovers: Vec<(i64,)> = sqlx::query_as(
                            "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                        )
                        .bind(&name)
                        .fetch_all(&mut connection)
                        .await
                        .unwrap_or_default();
                        for (id,) in leftovers {
                            // It may have ended on its own meanwhile.
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                                .execute(&mut connection)
                                .await;
                        }
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                            .execute(&mut connection)
                            .await;
                    }
                });
            });
            let _ = dropped.join();
        }
        if let Some(directory) = self.sqlite_directory.take() {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("body is not JSON ({error}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The `code` of a problem document, or "" for any other body.
    pub fn code_if_problem(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|body| body["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The `code` of a problem document.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|window| window == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        body.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    body
}

impl TestApp {
    /// A client for a server started by hand (nothing to clean up).
    pub fn attach(port: u16) -> TestApp {
        TestApp { port, database_url: String::new(), database: None, sqlite_directory: None }
    }

    /// Sends raw bytes and reads the whole response (the request must ask to close).
    pub async fn send_raw(&self, request: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.expect("the server accepts");
        stream.write_all(request).await.expect("the request is sent");
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
        read.expect("the response comes within 30 s").expect("the response is read");
        parse_response(&raw)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some(body) = body {
            request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            request.extend_from_slice(body);
        } else {
            request.extend_from_slice(b"\r\n");
        }
        self.send_raw(&request).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, None).await
    }

    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, Some(body.to_string().as_bytes())).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let authorization = format!("Bearer {ADMIN_TOKEN}");
        let text = body.map(Value::to_string);
        let mut headers = vec![("Authorization", authorization.as_str())];
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &headers, text.as_deref().map(str::as_bytes)).await
    }

    /// Creates an event through the API; panics unless 201.
    pub async fn create_event(&self, body: Value) -> Value {
        let response = self.admin("POST", "/v1/events", Some(&body)).await;
        assert_eq!(response.status, 201, "{}", String::from_utf8_lossy(&response.body));
        response.json()
    }

    /// Registers `email` for `category` with `key`.
    pub async fn register(&self, event: &str, key: &str, body: &Value) -> Response {
        self.post_json(&format!("/v1/events/{event}/registrations"), &[("Idempotency-Key", key)], body).await
    }
}

pub fn registration(category: &str, email: &str) -> Value {
    serde_json::json!({ "category": category, "email": email, "full_name": "Ana Runner" })
}

pub fn race(id: &str, capacity: u32, hold_ttl_seconds: u32) -> Value {
    serde_json::json!({
        "id": id,
        "name": "City Race",
        "hold_ttl_seconds": hold_ttl_seconds,
        "categories": [{ "code": "10K", "name": "10 km", "capacity": capacity }]
    })
}

pub fn redis_url() -> String {
    std::env::var("KUOTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One Redis prefix per test, shared by its nodes; its keys are deleted when the test ends.
pub struct SharedRedis {
    pub prefix: String,
}

impl SharedRedis {
    pub fn new() -> SharedRedis {
        SharedRedis { prefix: format!("kuota_t_{}:", kuota_persist::random::token_hex(6)) }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(redis_url()).unwrap().get_connection().expect("the test Redis answers")
    }

    /// Makes `settings` a node `node_id` of this deployment: this Redis and prefix.
    pub fn join(&self, settings: &mut kuota_api::configuration::Settings, node_id: &str) {
        settings.redis_url = Some(redis_url());
        settings.redis_prefix = self.prefix.clone();
        settings.node_id = node_id.into();
    }
}

impl Drop for SharedRedis {
    fn drop(&mut self) {
        let mut connection = self.connection();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query(&mut connection).unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}
