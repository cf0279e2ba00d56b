//! `kuota-sim load --queue` against the real server on port 0, over a fresh MariaDB database:
//! a crowd three times the seats joins the lobby, is drawn, polls as told and registers with its
//! passes; every seat is sold once and every check holds.

use std::sync::mpsc;
use std::time::Duration;

use kuota_api::configuration::{Cli, Settings};
use kuota_api::startup::Application;

use crate::support::{kuota_sim, stderr, stdout};

const ADMIN_TOKEN: &str = "sim-queue-admin-token-0123456789";
/// How long the server may take to start (migrations on a fresh database included).
const SERVER_START_SECONDS_MAX: u64 = 120;

fn mysql_base_url() -> String {
    std::env::var("KUOTA_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A fresh database, dropped when the value is.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Database {
        let name = format!("kuota_t_{}", kuota_persist::random::token_hex(6));
        server_sql(format!("CREATE DATABASE {name}"));
        Database { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", mysql_base_url(), self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        server_sql(format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

fn server_sql(sql: String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(&mysql_base_url())
            .await
            .expect("MariaDB answers");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut connection).await.expect("the statement runs");
    });
}

/// Starts the real server on port 0 over `database_url` in a thread of its own (it lives as
/// long as the test binary); returns its port.
fn start_server(database_url: String) -> u16 {
    let mut settings = Settings::load(Cli::default()).expect("the defaults load");
    settings.listen = "127.0.0.1:0".into();
    settings.advertise_url = "http://127.0.0.1:0".into();
    settings.database_url = database_url;
    settings.admin_token = Some(ADMIN_TOKEN.into());
    settings.redis_prefix = format!("kuota_t_{}:", kuota_persist::random::token_hex(6));
    settings.node_id = "sim-queue-test".into();
    settings.http_workers = 2;
    // One client address sends the whole crowd: the per-address and per-e-mail limits are off.
    settings.rate_limit_ip_per_second = 0;
    settings.rate_limit_ip_burst = 0;
    settings.rate_limit_email_per_minute = 0;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let application = Application::build(settings).await.expect("the application builds");
            sender.send(application.port()).expect("the test waits for the port");
            application.run_until_stopped().await
        })
    });
    receiver.recv_timeout(Duration::from_secs(SERVER_START_SECONDS_MAX)).expect("the server started in time")
}

#[test]
fn a_queued_opening_against_the_real_server_sells_every_seat_once_through_passes() {
    let database = Database::create();
    let port = start_server(database.url());
    let url = format!("http://127.0.0.1:{port}");
    let output = kuota_sim(&[
        "load",
        "--queue",
        "--url",
        &url,
        "--admin-token",
        ADMIN_TOKEN,
        "--capacity",
        "20",
        "--registrants",
        "60",
        "--lobby-seconds",
        "2",
        "--seconds",
        "60",
        "--seed",
        "3",
    ]);
    let report = stdout(&output);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert!(report.starts_with("seed=3\n"), "{report}");
    assert!(report.contains("| registered with the pass | 20 |"), "{report}");
    assert!(report.contains("| read sold_out while waiting | 40 |"), "{report}");
    assert!(
        report.contains("Seats taken on the server at the end: 20 of 20; registrations acknowledged: 20"),
        "{report}"
    );
    assert!(report.contains("| register without a pass 403 queue_pass_required | 60 |"), "{report}");
    assert!(report.contains("| register 403 queue_pass_invalid | 20 |"), "the used passes again: {report}");
    assert!(!report.contains("VIOLATED"), "{report}");
    for check in kuota_sim::load::queue::QUEUE_LOAD_CHECKS {
        assert!(report.contains(&format!("- ok: {check}")), "{check}: {report}");
    }
}

#[test]
fn load_queue_needs_an_admin_token_and_sane_settings() {
    let output = kuota_sim(&["load", "--queue", "--url", "http://127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--admin-token"), "{}", stderr(&output));
    let output = kuota_sim(&[
        "load",
        "--queue",
        "--url",
        "http://127.0.0.1:9",
        "--admin-token",
        "x",
        "--overbook",
        "0.5",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--overbook"), "{}", stderr(&output));
    let output = kuota_sim(&["load", "--queue", "--url", "http://10.255.255.1:8080", "--admin-token", "x"]);
    assert_eq!(output.status.code(), Some(2), "a URL off this machine is refused: {}", stderr(&output));
}
