//! What survives a restart, and a graceful stop of the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::{Backend, TestApp, race, registration, spawn_app, spawn_app_on};

#[actix_rt::test]
async fn replays_survive_a_restart_and_the_restarted_node_owns_the_event() {
    let first = spawn_app(Backend::MariaDb).await;
    first.create_event(race("race", 2, 0)).await;
    let original = first.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(original.status, 201);
    // A new process over the same database: it loads the event, taking it over (new epoch).
    let restarted = spawn_app_on(&first.database_url, |_| {}).await;
    let replay = restarted.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!((replay.status, &replay.body), (original.status, &original.body));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let next = restarted.register("race", "k2", &registration("10K", "b@example.org")).await;
    assert_eq!(next.json()["id"], "race.2", "numbering continues after the restart");
    // The old node lost the event: its writes are fenced and it answers 503, never a 2xx.
    let stale = first.register("race", "k3", &registration("10K", "c@example.org")).await;
    assert_eq!(stale.status, 503, "{}", String::from_utf8_lossy(&stale.body));
    let full = restarted.register("race", "k4", &registration("10K", "d@example.org")).await;
    assert_eq!(full.code(), "sold_out");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[actix_rt::test]
async fn sigterm_drains_the_write_behind_and_exits_zero() {
    let directory = std::env::temp_dir().join(format!("kuota_t_{}", kuota_persist::random::token_hex(6)));
    std::fs::create_dir_all(&directory).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuota"))
        .current_dir(&directory)
        .env("KUOTA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUOTA_ADMIN_TOKEN", super::support::ADMIN_TOKEN)
        .env("KUOTA_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let app = TestApp::attach(port);
    let mut started = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "kuota did not start");
    app.create_event(race("race", 5, 0)).await;
    let created = app.register("race", "k1", &registration("10K", "a@example.org")).await;
    assert_eq!(created.status, 201);
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..300 {
        if let Some(exit) = child.try_wait().unwrap() {
            status = Some(exit);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("kuota did not stop within 15 s of SIGTERM")
    });
    assert!(status.success(), "exit status {status:?}");
    // The embedded database is under data/ of its working directory, with the registration.
    let restarted = spawn_app_on(&format!("sqlite://{}/data/kuota.db", directory.display()), |_| {}).await;
    let listing = restarted.admin("GET", "/v1/events/race/registrations", None).await.json();
    assert_eq!(listing["items"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(directory);
}
