//! The store's side of webhooks, on MariaDB and on SQLite: a fan-out written twice adds
//! nothing (a creation's, without an outbox entry, too), messages of one registration are claimed in order, two claimers never hold one
//! message, an endpoint failing for five days is disabled and a replay enables it again, and a
//! sell-out is announced once however many nodes see it; a node frozen inside a transaction
//! holds its rows no longer than the store's idle bound.

use std::time::{Duration, Instant};

use kuota_engine::Timestamp;
use kuota_persist::store::{
    ClaimedMessage, DISABLED_FAILING, DISABLED_GONE, MessageSettlement, NewMessage, SOLD_OUT_KIND,
    SettledAttempt, SqlStore, WebhookEndpoint,
};

use crate::sql_support::{Backend, START, TestDatabase, event_id, on_both_databases};

on_both_databases!(
    a_fan_out_written_twice_adds_no_message,
    messages_of_one_registration_are_claimed_one_after_another,
    two_claimers_at_once_never_hold_one_message,
    an_endpoint_failing_for_five_days_is_disabled_and_a_replay_enables_it,
    a_410_kills_the_message_and_disables_the_endpoint,
    a_sell_out_is_announced_once_until_seats_come_back,
    attempts_settled_together_keep_each_claim_and_the_last_word_on_the_endpoint,
    a_round_of_messages_is_written_at_once_and_claimed_in_due_order,
);

const FIVE_DAYS_MS: u64 = 5 * 24 * 3_600 * 1_000;
const CLAIM_MS: u64 = 20_000;

fn endpoint(id: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        url: "https://hooks.example.com/kuota".into(),
        description: None,
        event_types: vec!["registration.created".into()],
        secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        created_at: START,
    }
}

fn message<'a>(endpoint_id: &'a str, ordering_key: &'a str, message_id: &'a str) -> NewMessage<'a> {
    NewMessage { endpoint_id, message_id, event_type: "registration.created", ordering_key, body: "{}" }
}

async fn claim_all(store: &SqlStore, now: Timestamp) -> (String, Timestamp, Vec<ClaimedMessage>) {
    let until = now.plus_millis(CLAIM_MS);
    let claim = store.claim_webhook_messages(now, until, 100, |_| true).await.unwrap();
    (claim.token, claim.until, claim.messages)
}

async fn settle(
    store: &SqlStore,
    claim: (&str, Timestamp),
    message: &ClaimedMessage,
    how: MessageSettlement,
    now: Timestamp,
) {
    let before = Timestamp::from_millis(now.as_millis().saturating_sub(FIVE_DAYS_MS));
    assert!(store.settle_webhook_message(claim, message, &how, now, before).await.unwrap());
}

async fn a_fan_out_written_twice_adds_no_message(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    store.create_webhook_endpoint(&endpoint("ep_a")).await.unwrap();
    store.create_webhook_endpoint(&endpoint("ep_b")).await.unwrap();
    let messages = [(7, message("ep_a", "race.1", "msg_1")), (7, message("ep_b", "race.1", "msg_1"))];
    store.insert_webhook_messages(&messages, START).await.unwrap();
    store.insert_webhook_messages(&[(7, message("ep_a", "race.1", "msg_2"))], START).await.unwrap();
    // Creations have no outbox entry (outbox id 0): their registration tells them apart.
    let creations = [(0, message("ep_a", "race.2", "msg_3")), (0, message("ep_a", "race.3", "msg_4"))];
    store.insert_webhook_messages(&creations, START).await.unwrap();
    store.insert_webhook_messages(&[(0, message("ep_a", "race.2", "msg_5"))], START).await.unwrap();
    let (_, _, claimed) = claim_all(&store, START).await;
    let ids: Vec<(&str, &str)> =
        claimed.iter().map(|message| (message.endpoint.id.as_str(), message.message_id.as_str())).collect();
    assert_eq!(ids, [("ep_a", "msg_1"), ("ep_b", "msg_1"), ("ep_a", "msg_3"), ("ep_a", "msg_4")]);
}

async fn messages_of_one_registration_are_claimed_one_after_another(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    store.create_webhook_endpoint(&endpoint("ep_a")).await.unwrap();
    for (outbox_id, key, id) in [(1, "race.1", "msg_1"), (2, "race.2", "msg_2"), (3, "race.1", "msg_3")] {
        store.insert_webhook_messages(&[(outbox_id, message("ep_a", key, id))], START).await.unwrap();
    }
    let (token, until, claimed) = claim_all(&store, START).await;
    let ids: Vec<&str> = claimed.iter().map(|message| message.message_id.as_str()).collect();
    assert_eq!(ids, ["msg_1", "msg_2"], "msg_3 waits for msg_1, its registration's earlier message");
    let now = START.plus_seconds(1);
    let retry_at = now.plus_seconds(60);
    settle(
        &store,
        (&token, until),
        &claimed[0],
        MessageSettlement::Retry { retry_at, error: "500".into() },
        now,
    )
    .await;
    settle(&store, (&token, until), &claimed[1], MessageSettlement::Succeeded, now).await;
    assert!(claim_all(&store, now).await.2.is_empty(), "msg_3 still waits while msg_1 is retried");
    let (token, until, claimed) = claim_all(&store, retry_at).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    settle(&store, (&token, until), &claimed[0], MessageSettlement::Succeeded, retry_at).await;
    let (_, _, claimed) = claim_all(&store, retry_at).await;
    assert_eq!(claimed.iter().map(|message| message.message_id.as_str()).collect::<Vec<_>>(), ["msg_3"]);
}

async fn two_claimers_at_once_never_hold_one_message(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    store.create_webhook_endpoint(&endpoint("ep_a")).await.unwrap();
    for outbox_id in 0..60_u64 {
        let (key, id) = (format!("race.{outbox_id}"), format!("msg_{outbox_id}"));
        store.insert_webhook_messages(&[(outbox_id, message("ep_a", &key, &id))], START).await.unwrap();
    }
    let other = database.store().await;
    let until = START.plus_millis(CLAIM_MS);
    let (first, second) = tokio::join!(
        store.claim_webhook_messages(START, until, 40, |_| true),
        other.claim_webhook_messages(START, until, 40, |_| true),
    );
    let mut ids: Vec<u64> = first
        .unwrap()
        .messages
        .iter()
        .chain(second.unwrap().messages.iter())
        .map(|message| message.id)
        .collect();
    let claimed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "a message was claimed twice");
    assert!(claimed >= 40);
}

async fn an_endpoint_failing_for_five_days_is_disabled_and_a_replay_enables_it(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    store.create_webhook_endpoint(&endpoint("ep_a")).await.unwrap();
    store.insert_webhook_messages(&[(1, message("ep_a", "race.1", "msg_1"))], START).await.unwrap();
    let mut now = START;
    for step in 0..3 {
        let (token, until, claimed) = claim_all(&store, now).await;
        assert_eq!(claimed.len(), 1, "step {step}: the endpoint is still enabled");
        let retry_at = now.plus_millis(FIVE_DAYS_MS / 2);
        settle(
            &store,
            (&token, until),
            &claimed[0],
            MessageSettlement::Retry { retry_at, error: "503".into() },
            now,
        )
        .await;
        now = retry_at;
    }
    let stored = store.webhook_endpoint("ep_a").await.unwrap().unwrap();
    assert_eq!(stored.disabled_reason.as_deref(), Some(DISABLED_FAILING));
    assert_eq!(stored.failing_since, Some(START));
    assert!(claim_all(&store, now).await.2.is_empty(), "a disabled endpoint gets nothing");
    assert_eq!(store.replay_webhook_messages("ep_a", now).await.unwrap(), 0, "nothing was dead");
    let (token, until, claimed) = claim_all(&store, now).await;
    assert_eq!(claimed.len(), 1, "the replay enabled the endpoint");
    settle(&store, (&token, until), &claimed[0], MessageSettlement::Succeeded, now).await;
    let stored = store.webhook_endpoint("ep_a").await.unwrap().unwrap();
    assert_eq!((stored.disabled_reason, stored.failing_since), (None, None));
    let counts = store.webhook_message_counts("ep_a").await.unwrap();
    assert_eq!((counts.succeeded, counts.pending, counts.dead, counts.failed_attempts), (1, 0, 0, 3));
}

async fn a_410_kills_the_message_and_disables_the_endpoint(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    store.create_webhook_endpoint(&endpoint("ep_a")).await.unwrap();
    store.insert_webhook_messages(&[(1, message("ep_a", "race.1", "msg_1"))], START).await.unwrap();
    store.insert_webhook_messages(&[(2, message("ep_a", "race.2", "msg_2"))], START).await.unwrap();
    let (token, until, claimed) = claim_all(&store, START).await;
    settle(&store, (&token, until), &claimed[0], MessageSettlement::Gone { error: "410".into() }, START)
        .await;
    // The other message's attempt was in flight: it settles, and then waits.
    settle(
        &store,
        (&token, until),
        &claimed[1],
        MessageSettlement::Retry { retry_at: START, error: "x".into() },
        START,
    )
    .await;
    let stored = store.webhook_endpoint("ep_a").await.unwrap().unwrap();
    assert_eq!(stored.disabled_reason.as_deref(), Some(DISABLED_GONE));
    let counts = store.webhook_message_counts("ep_a").await.unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 1));
    assert!(claim_all(&store, START.plus_seconds(1)).await.2.is_empty());
    assert_eq!(store.replay_webhook_messages("ep_a", START.plus_seconds(1)).await.unwrap(), 1);
    assert_eq!(claim_all(&store, START.plus_seconds(1)).await.2.len(), 2);
}

async fn a_sell_out_is_announced_once_until_seats_come_back(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let race = event_id("race");
    let other_node = database.store().await;
    assert!(store.announce_sold_out(&race, r#"{"id":"race"}"#, START).await.unwrap());
    assert!(!other_node.announce_sold_out(&race, r#"{"id":"race"}"#, START).await.unwrap());
    store.clear_sold_out(&race).await.unwrap();
    assert!(other_node.announce_sold_out(&race, r#"{"id":"race"}"#, START).await.unwrap());
    let entries = store.outbox_page(10, None).await.unwrap();
    let kinds: Vec<(&str, u64)> =
        entries.iter().map(|entry| (entry.kind.as_str(), entry.registration.0)).collect();
    assert_eq!(kinds, [(SOLD_OUT_KIND, 0), (SOLD_OUT_KIND, 0)]);
}

async fn attempts_settled_together_keep_each_claim_and_the_last_word_on_the_endpoint(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    for id in ["ep_a", "ep_b"] {
        store.create_webhook_endpoint(&endpoint(id)).await.unwrap();
    }
    let messages: Vec<(u64, NewMessage<'_>)> = vec![
        (1, message("ep_a", "race.1", "msg_1")),
        (2, message("ep_a", "race.2", "msg_2")),
        (3, message("ep_b", "race.3", "msg_3")),
        (4, message("ep_b", "race.4", "msg_4")),
    ];
    store.insert_webhook_messages(&messages, START).await.unwrap();
    let (token, until, claimed) = claim_all(&store, START).await;
    assert_eq!(claimed.len(), 4);
    let now = START.plus_seconds(1);
    let failed = MessageSettlement::Retry { retry_at: now.plus_seconds(60), error: "503".into() };
    let (succeeded, gone) = (MessageSettlement::Succeeded, MessageSettlement::Gone { error: "410".into() });
    // ep_a: a failure, then a success (its streak ends); ep_b: a 410, then a success (still
    // disabled). msg_4's attempt is given under a claim that is not its own.
    let attempts = [
        SettledAttempt { token: &token, until, message: &claimed[0], settlement: &failed },
        SettledAttempt { token: &token, until, message: &claimed[2], settlement: &gone },
        SettledAttempt { token: &token, until, message: &claimed[1], settlement: &succeeded },
        SettledAttempt { token: "someone_else", until, message: &claimed[3], settlement: &succeeded },
    ];
    let before = Timestamp::from_millis(now.as_millis() - FIVE_DAYS_MS);
    let settled = store.settle_webhook_messages(&attempts, now, before).await.unwrap();
    assert_eq!(settled, [true, true, true, false], "one answer per attempt, in the order given");
    let (a, b) = (
        store.webhook_endpoint("ep_a").await.unwrap().unwrap(),
        store.webhook_endpoint("ep_b").await.unwrap().unwrap(),
    );
    assert_eq!((a.disabled_reason, a.failing_since), (None, None), "ep_a's last attempt succeeded");
    assert_eq!(b.disabled_reason.as_deref(), Some(DISABLED_GONE), "a 410 disables whatever follows");
    let counts = store.webhook_message_counts("ep_a").await.unwrap();
    assert_eq!((counts.succeeded, counts.pending, counts.failed_attempts), (1, 1, 1));
    let counts = store.webhook_message_counts("ep_b").await.unwrap();
    assert_eq!((counts.dead, counts.pending), (1, 1), "msg_4 stays claimed by its own claim");
}

async fn a_round_of_messages_is_written_at_once_and_claimed_in_due_order(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    for id in ["ep_a", "ep_off"] {
        store.create_webhook_endpoint(&endpoint(id)).await.unwrap();
    }
    // A disabled endpoint's messages come first in due order, and are passed over.
    let off: Vec<(String, String)> =
        (0..30).map(|number| (format!("race.off{number}"), format!("msg_off{number}"))).collect();
    let rows: Vec<(u64, NewMessage<'_>)> =
        off.iter().zip(1..).map(|((key, id), outbox_id)| (outbox_id, message("ep_off", key, id))).collect();
    store.insert_webhook_messages(&rows, START).await.unwrap();
    let until = START.plus_millis(CLAIM_MS);
    let claim = store.claim_webhook_messages(START, until, 1, |_| true).await.unwrap();
    let (token, claimed) = (claim.token, claim.messages);
    let gone = MessageSettlement::Gone { error: "410".into() };
    let before = Timestamp::from_millis(START.as_millis().saturating_sub(FIVE_DAYS_MS));
    let attempt = SettledAttempt { token: &token, until, message: &claimed[0], settlement: &gone };
    store.settle_webhook_messages(&[attempt], START, before).await.unwrap();
    // One round of 1,000 messages in one call: 20 registrations, 50 messages each.
    let keys: Vec<(String, String)> =
        (0..1_000).map(|number| (format!("race.{}", number % 20), format!("msg_{number}"))).collect();
    let rows: Vec<(u64, NewMessage<'_>)> =
        keys.iter().zip(100..).map(|((key, id), outbox_id)| (outbox_id, message("ep_a", key, id))).collect();
    let later = START.plus_seconds(1);
    store.insert_webhook_messages(&rows, later).await.unwrap();
    assert_eq!(store.webhook_message_counts("ep_a").await.unwrap().pending, 1_000);
    let (_, _, claimed) = claim_all(&store, later).await;
    let ids: Vec<&str> = claimed.iter().map(|message| message.message_id.as_str()).collect();
    let first_of_each: Vec<String> = (0..20).map(|number| format!("msg_{number}")).collect();
    assert_eq!(ids, first_of_each, "each registration's first message, none of the disabled endpoint's");
}

/// How long the other node keeps trying to announce the sell-out the frozen node holds: the
/// store's idle bound (2 s), the attempt under way when it runs out (each ends within the 1 s
/// call timeout), and a margin. Without the bound the frozen node's row stays locked for as
/// long as the test keeps it.
const ANNOUNCED_DESPITE_THE_FROZEN_NODE_WITHIN: Duration = Duration::from_secs(7);

/// The sell-out states of the event `race`, read by a session in `READ UNCOMMITTED` (an
/// uncommitted row counts: the frozen node's), or in `READ COMMITTED` right after
/// `ONLY_COMMITTED`.
const RACE_STATES: &str = "SELECT COUNT(*) FROM webhook_event_states WHERE event_id = 'race'";
const ONLY_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// A node frozen between two statements of a transaction (here a sell-out's announcement)
/// holds what it wrote no longer than the store's idle bound: MariaDB closes its connection
/// and rolls the transaction back, and another node announcing the same sell-out goes ahead.
/// Without the bound, each of the other node's attempts waited out its lock wait and failed
/// for as long as the first node stayed frozen (the take-over's kills reach only what blocks
/// an event's row). The frozen node, thawed, reports a failure, not the announcement.
#[tokio::test]
async fn a_node_frozen_inside_a_transaction_holds_its_rows_no_longer_than_the_idle_bound() {
    use sqlx::Connection;
    let database = TestDatabase::create(Backend::Mysql).await;
    let frozen_node = database.store().await;
    let other_node = database.store().await;
    let race = event_id("race");
    let mut observer = sqlx::MySqlConnection::connect(&database.url).await.expect("MariaDB answers");
    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .execute(&mut observer)
        .await
        .unwrap();

    // Polled once at a time, it gets at most one statement further per poll: it is stopped as
    // soon as its transaction has written the event's row, before its `COMMIT`.
    let announce = frozen_node.announce_sold_out(&race, r#"{"id":"race"}"#, START);
    tokio::pin!(announce);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let step =
            std::future::poll_fn(|context| std::task::Poll::Ready(announce.as_mut().poll(context))).await;
        assert!(step.is_pending(), "the announcement ended before it was seen holding a row: {step:?}");
        let written: i64 = sqlx::query_scalar(RACE_STATES).fetch_one(&mut observer).await.unwrap();
        if written > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the announcement was never seen holding a row");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let frozen_at = Instant::now();
    sqlx::raw_sql(ONLY_COMMITTED).execute(&mut observer).await.unwrap();
    let committed: i64 = sqlx::query_scalar(RACE_STATES).fetch_one(&mut observer).await.unwrap();
    assert_eq!(committed, 0, "the frozen node's row is written, not committed");

    let mut failures = Vec::new();
    let announced = loop {
        match other_node.announce_sold_out(&race, r#"{"id":"race"}"#, START).await {
            Ok(announced) => break announced,
            Err(error) => failures.push(error.to_string()),
        }
        assert!(
            frozen_at.elapsed() < ANNOUNCED_DESPITE_THE_FROZEN_NODE_WITHIN,
            "the frozen node's row still held the other node up after {:?}: {failures:?}",
            frozen_at.elapsed()
        );
    };
    assert!(announced, "the frozen node's announcement was rolled back: the other node's is the one");
    // Its call timed out meanwhile; whatever ends it, it must not report success.
    assert!(
        announce.await.is_err(),
        "the frozen node, thawed, must not report an announcement its server rolled back"
    );
    let entries = other_node.outbox_page(10, None).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|entry| entry.kind.as_str()).collect();
    assert_eq!(kinds, [SOLD_OUT_KIND], "announced once");
}
