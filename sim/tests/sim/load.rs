//! `kuota-sim load` against the fake server: the honest one passes every check, each kind of
//! misbehaviour trips its check, the bounds hold, and a URL off this machine is refused.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fake_server::{Behaviour, start};
use crate::support::{kuota_sim, stderr, stdout};

/// Exit code of a run whose client-side checks were violated (see `kuota_sim::cli`).
const EXIT_CHECK_VIOLATED: i32 = 3;
/// Exit code of bad input, a refused URL included.
const EXIT_BAD_INPUT: i32 = 2;
/// Exit code of a run that could not be made.
const EXIT_LOAD_FAILED: i32 = 1;

/// Runs `load` against `url` with a created event, a fixed seed and `extra` flags.
fn load(url: &str, extra: &[&str]) -> std::process::Output {
    let mut arguments = vec!["load", "--url", url, "--admin-token", "test-token", "--seed", "11"];
    arguments.extend_from_slice(extra);
    kuota_sim(&arguments)
}

#[test]
fn an_honest_server_sells_every_seat_once_and_every_check_holds() {
    let server = start(Behaviour::Honest, 30);
    let output = load(
        &server.url,
        &[
            "--users",
            "4",
            "--requests-max",
            "150",
            "--retry-share",
            "0.3",
            "--repeat-registrant-share",
            "0.2",
        ],
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert!(report.starts_with("seed=11\n"), "{report}");
    assert!(report.contains("requests sent: 150; answered: 150"), "{report}");
    assert!(report.contains("| C1 | 30 | 30 | 30 |"), "every seat is sold, once: {report}");
    assert!(report.contains("| 409 sold_out |"), "{report}");
    assert!(report.contains("| 409 already_registered |"), "{report}");
    assert!(!report.contains("VIOLATED"), "{report}");
    assert!(report.contains("- ok: replays identical (status and body)"), "{report}");
    assert!(
        report.contains("- ok: every acknowledged admission counted by the server at the end"),
        "{report}"
    );
}

#[test]
fn the_open_loop_sends_at_its_rate_and_stops_at_the_end_of_its_seconds() {
    let server = start(Behaviour::Honest, 1_000);
    let started = Instant::now();
    let output = load(&server.url, &["--rate", "200", "--arrivals", "even", "--seconds", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Evenly spaced at 200/s, requests are due at 1/200 s, 2/200 s, ... up to (not at) 1 s.
    assert!(stdout(&output).contains("requests sent: 199; answered: 199"), "{}", stdout(&output));
    assert!(started.elapsed() < Duration::from_secs(5), "the run outlived its bound");
}

#[test]
fn requests_max_ends_the_run_before_its_seconds() {
    let server = start(Behaviour::Honest, 1_000);
    let started = Instant::now();
    let output = load(&server.url, &["--rate", "1000", "--seconds", "30", "--requests-max", "50"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("requests sent: 50; answered: 50"), "{}", stdout(&output));
    assert!(started.elapsed() < Duration::from_secs(10), "the request bound did not end the run");
    // Creating the event, reading it before and after, and the 50 registrations.
    assert_eq!(server.requests.load(Ordering::Relaxed), 53);
}

#[test]
fn a_non_loopback_url_is_refused_without_sending_anything() {
    for url in ["http://10.255.255.1:8080", "http://example.com", "http://127.0.0.1@10.255.255.1:8080"] {
        let started = Instant::now();
        let output = load(url, &["--users", "1", "--seconds", "1"]);
        assert_eq!(output.status.code(), Some(EXIT_BAD_INPUT), "{url}: {}", stderr(&output));
        assert!(stdout(&output).is_empty(), "{url}: nothing may start: {}", stdout(&output));
        assert!(started.elapsed() < Duration::from_secs(5), "{url}: the refusal waited on something");
    }
    let refused = load("http://10.255.255.1:8080", &["--users", "1"]);
    let message = stderr(&refused);
    assert!(message.contains("not a loopback address") && message.contains("--allow-remote"), "{message}");
}

#[test]
fn the_seat_check_fires_when_the_server_sells_more_than_it_has() {
    let server = start(Behaviour::Oversells, 10);
    let output = load(&server.url, &["--users", "2", "--requests-max", "40"]);
    assert_eq!(output.status.code(), Some(EXIT_CHECK_VIOLATED), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("VIOLATED (30 times): no more admissions (201) than seats"), "{report}");
    assert!(report.contains("admission number 11"), "the details say which: {report}");
    assert!(stderr(&output).contains("client-side check was violated"));
}

#[test]
fn the_registrant_check_fires_when_the_server_registers_an_email_twice() {
    let server = start(Behaviour::RegistersTwice, 1_000);
    let output =
        load(&server.url, &["--users", "2", "--requests-max", "60", "--repeat-registrant-share", "0.5"]);
    assert_eq!(output.status.code(), Some(EXIT_CHECK_VIOLATED), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("): no registrant told two different registration ids"), "{report}");
    assert!(report.contains("- ok: no more admissions (201) than seats"), "{report}");
}

#[test]
fn the_replay_check_fires_when_a_retry_gets_another_body() {
    let server = start(Behaviour::ChangesReplays, 1_000);
    let output = load(&server.url, &["--users", "2", "--requests-max", "40", "--retry-share", "1"]);
    assert_eq!(output.status.code(), Some(EXIT_CHECK_VIOLATED), "{}", stderr(&output));
    assert!(stdout(&output).contains("): replays identical (status and body)"), "{}", stdout(&output));
}

#[test]
fn retry_after_is_honoured_only_when_asked() {
    let shed = start(Behaviour::ShedsFirstAttempts, 20);
    // One user, so that every registration takes exactly two requests: the 503 and the 201.
    let honoured = load(
        &shed.url,
        &["--users", "1", "--requests-max", "40", "--honour-retry-after", "--retry-jitter-ms", "0"],
    );
    assert!(honoured.status.success(), "{}", stderr(&honoured));
    let report = stdout(&honoured);
    assert!(report.contains("Retry-After waits: 20; refusals not sent again: 0"), "{report}");
    assert!(report.contains("| C1 | 20 | 20 | 20 |"), "{report}");

    let shed = start(Behaviour::ShedsFirstAttempts, 20);
    let ignored = load(&shed.url, &["--users", "1", "--requests-max", "40"]);
    assert!(ignored.status.success(), "{}", stderr(&ignored));
    let report = stdout(&ignored);
    assert!(report.contains("Retry-After waits: 0; refusals not sent again: 40"), "{report}");
    assert!(report.contains("| 503 overloaded | 40 |"), "{report}");
}

#[test]
fn without_an_event_or_an_admin_token_load_says_what_it_needs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kuota-sim"))
        .args(["load", "--url", "http://127.0.0.1:9", "--users", "1"])
        .env_remove("KUOTA_ADMIN_TOKEN")
        .output()
        .expect("cargo built the kuota-sim binary for the tests");
    assert_eq!(output.status.code(), Some(EXIT_BAD_INPUT));
    assert!(stderr(&output).contains("--admin-token"), "{}", stderr(&output));
}

#[test]
fn a_server_that_is_not_there_makes_load_exit_1() {
    // A port that was just free: bind it, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = load(&format!("http://127.0.0.1:{port}"), &["--users", "1", "--seconds", "1"]);
    assert_eq!(output.status.code(), Some(EXIT_LOAD_FAILED), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot create the event"), "{}", stderr(&output));
}
