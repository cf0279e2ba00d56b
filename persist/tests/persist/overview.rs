//! What the operators' page reads from the store, on MariaDB and on SQLite: the newest events,
//! and the outbox's backlog, oldest overdue wait and dead entries, with counts that stop at
//! their bound.

use std::future::Future;
use std::pin::Pin;

use kuota_engine::Command;
use kuota_persist::outbox::{Deliver, DeliveryResult, OutboxConfig, deliver_due};
use kuota_persist::store::{CREATED_KIND, NewMessage, OutboxRow, OutboxSummary, SqlStore, WebhookEndpoint};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_config, event_id, keyed, on_both_databases, register,
    stored_event, submit,
};

on_both_databases!(
    the_outbox_summary_counts_the_backlog_its_oldest_overdue_wait_and_the_dead,
    outbox_counts_stop_at_their_bound,
    recent_events_are_the_newest_first_and_bounded,
    the_webhook_summary_counts_messages_waiting_and_their_oldest_overdue_wait,
);

/// Delivers creations and fails every other entry: with one attempt allowed, each entry
/// delivered is dead at once.
#[derive(Debug)]
struct Refusing;

impl Deliver for Refusing {
    fn deliver<'a>(
        &'a self,
        entry: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>> {
        let result =
            if entry.kind == CREATED_KIND { Ok(()) } else { Err("the mail server refused".to_string()) };
        Box::pin(std::future::ready(result))
    }
}

/// An event with `registrations` confirmed registrations decided at `START`, the first
/// `cancelled` of them cancelled then: their creations (derived from the registration rows)
/// and the cancellations' outbox entries are due at `START`.
async fn event_with_entries(database: &TestDatabase, registrations: usize, cancelled: u64) -> SqlStore {
    let (store, mut quota, epoch) = stored_event(database, "race", &[("10K", 100)], 0).await;
    let id = event_id("race");
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    for n in 0..registrations {
        let request = keyed(register("10K", &format!("r{n}@x.org")), &format!("key-{n}"), n as u64);
        let (_, effects) = decide(&mut quota, Command::Register(request), START);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    for registration in 1..=cancelled {
        let command = Command::Cancel { registration: kuota_engine::RegistrationId(registration) };
        let (_, effects) = decide(&mut quota, command, START);
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    drop(sender);
    writer.closed().await;
    store
}

async fn the_outbox_summary_counts_the_backlog_its_oldest_overdue_wait_and_the_dead(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let empty = database.store().await;
    let nothing = OutboxSummary {
        pending: 0,
        pending_capped: false,
        oldest_due_age_ms: 0,
        dead: 0,
        dead_capped: false,
    };
    assert_eq!(empty.outbox_summary(START, 100).await.unwrap(), nothing);

    // Three creations and two cancellations.
    let store = event_with_entries(&database, 3, 2).await;
    let later = START.plus_millis(4_500);
    let summary = store.outbox_summary(later, 100).await.unwrap();
    assert_eq!((summary.pending, summary.oldest_due_age_ms, summary.dead), (5, 4_500, 0));
    // Before the entries are due, nothing is overdue.
    assert_eq!(store.outbox_summary(START, 100).await.unwrap().oldest_due_age_ms, 0);

    // Two creations are delivered, and the two cancellations fail with no attempt left: dead,
    // out of the backlog. The third creation waits.
    let config = OutboxConfig { batch_max: 2, attempts_max: 1, ..OutboxConfig::default() };
    assert_eq!(deliver_due(&store, &Refusing, later, &config, None).await.unwrap(), 4);
    let summary = store.outbox_summary(later, 100).await.unwrap();
    assert_eq!((summary.pending, summary.oldest_due_age_ms, summary.dead), (1, 4_500, 2));
    assert!(!summary.pending_capped && !summary.dead_capped);
}

async fn outbox_counts_stop_at_their_bound(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = event_with_entries(&database, 5, 0).await;
    let summary = store.outbox_summary(START, 3).await.unwrap();
    assert_eq!((summary.pending, summary.pending_capped), (3, true));
    assert_eq!((summary.dead, summary.dead_capped), (0, false));
}

async fn recent_events_are_the_newest_first_and_bounded(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    for (n, id) in ["first", "second", "third"].into_iter().enumerate() {
        let created_at = START.plus_seconds(n as u64);
        assert!(store.create_event(&event_config(id, &[("10K", 10)], 0), created_at).await.unwrap());
    }
    let listed = store.recent_events(2).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, ["third", "second"]);
    assert_eq!(listed[0].created_at, START.plus_seconds(2));
    assert_eq!(store.recent_events(10).await.unwrap().len(), 3);
}

async fn the_webhook_summary_counts_messages_waiting_and_their_oldest_overdue_wait(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let nothing = OutboxSummary {
        pending: 0,
        pending_capped: false,
        oldest_due_age_ms: 0,
        dead: 0,
        dead_capped: false,
    };
    assert_eq!(store.webhook_summary(START, 100).await.unwrap(), nothing);
    let endpoint = WebhookEndpoint {
        id: "ep_page".into(),
        url: "https://hooks.example.com/kuota".into(),
        description: None,
        event_types: vec!["registration.created".into()],
        secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        created_at: START,
    };
    store.create_webhook_endpoint(&endpoint).await.unwrap();
    for (outbox_id, key) in [(1, "race.1"), (2, "race.2"), (3, "race.3")] {
        let message_id = format!("msg_{outbox_id}");
        let message = NewMessage {
            endpoint_id: "ep_page",
            message_id: &message_id,
            event_type: "registration.created",
            ordering_key: key,
            body: "{}",
        };
        store.insert_webhook_messages(&[(outbox_id, message)], START).await.unwrap();
    }
    let summary = store.webhook_summary(START.plus_millis(2_000), 100).await.unwrap();
    assert_eq!((summary.pending, summary.oldest_due_age_ms, summary.dead), (3, 2_000, 0));
    let capped = store.webhook_summary(START, 2).await.unwrap();
    assert_eq!((capped.pending, capped.pending_capped), (2, true));
    // The outbox's own backlog is another table.
    assert_eq!(store.outbox_summary(START, 100).await.unwrap(), nothing);
}
