//! Adaptive admission through the real server: a burst past the limit on registrations in
//! flight is refused at once with 503 and `Retry-After`, never with a 500, and what was
//! admitted is decided as usual.

use std::sync::Arc;

use kuota_api::admission::REFUSAL_REASON;
use tokio::sync::Barrier;

use super::support::{Backend, race, registration, spawn_app_with};

/// Registrations sent at the same moment.
const BURST_REQUESTS: usize = 96;
/// The mailbox capacity the server gets, which bounds its admission limit (see
/// `AdmissionBounds::within_mailbox`): far below the burst.
const MAILBOX_CAPACITY: usize = 4;

#[actix_rt::test]
async fn a_burst_beyond_the_limit_gets_immediate_503s_with_retry_after_and_no_500s() {
    let app = Arc::new(
        spawn_app_with(Backend::MariaDb, |settings| settings.mailbox_capacity_max = MAILBOX_CAPACITY).await,
    );
    app.create_event(race("race", 10_000, 0)).await;
    let start = Arc::new(Barrier::new(BURST_REQUESTS));
    let requests: Vec<_> = (0..BURST_REQUESTS)
        .map(|n| {
            let (app, start) = (app.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let response = app
                    .register("race", &format!("key-{n}"), &registration("10K", &format!("r{n}@example.org")))
                    .await;
                (n, response)
            })
        })
        .collect();
    let (mut created, mut refused, mut other) = (0, Vec::new(), Vec::new());
    for request in requests {
        let (n, response) = request.await.expect("the request task finishes");
        match response.status {
            201 => created += 1,
            503 => {
                assert_eq!(response.code(), "overloaded");
                assert_eq!(response.json()["detail"], REFUSAL_REASON);
                let retry_after = response.header("retry-after").expect("a refusal says when to retry");
                assert!(retry_after.parse::<u64>().is_ok_and(|seconds| seconds >= 1), "{retry_after}");
                refused.push(n);
            }
            status => other.push((status, response.code_if_problem())),
        }
    }
    assert!(other.is_empty(), "only 201 and 503 are expected: {other:?}");
    assert!(
        !refused.is_empty(),
        "a burst of {BURST_REQUESTS} past a limit of {MAILBOX_CAPACITY} is refused in part"
    );
    assert!(created >= MAILBOX_CAPACITY, "the limit admits what it holds: {created} created");
    // What was refused was not decided: a retry with the same key is decided afresh.
    let n = refused[0];
    let retried =
        app.register("race", &format!("key-{n}"), &registration("10K", &format!("r{n}@example.org"))).await;
    assert_eq!(retried.status, 201);
}
