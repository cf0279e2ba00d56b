//! A queued event on MariaDB and on SQLite: its settings and seed stored with the event, its
//! tickets written through the real write-behind, and a load that gives every ticket its place,
//! pass and status back; a keyed join written as one row, replayed from it after a restart, and
//! shown in the audit as the entries it always had. Effects come from a local `EventQuota`.

use std::sync::Arc;

use kuota_engine::store::EventLoader;
use kuota_engine::{
    Command, Decision, DrawSeed, Effect, EffectKind, Email, EventConfig, EventQuota, Fingerprint,
    Idempotency, IdempotencyKey, JoinQueue, ManualClock, Outcome, QueueConfig, QueuePass, RegistrationId,
    TicketId, TicketStatus, Timestamp,
};
use kuota_persist::store::{AuditRow, SqlStore};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};
use serde_json::{Value, json};

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_config, on_both_databases, register, submit,
};

on_both_databases!(
    a_queued_event_is_stored_with_its_settings_and_seed,
    tickets_written_through_the_writer_are_recovered_with_their_places_and_passes,
    a_keyed_join_is_one_row_and_its_key_replays_from_it_after_a_restart,
    the_audit_shows_one_entry_per_effect_of_a_queue_on_every_page_size,
);

const OPENS: Timestamp = START.plus_seconds(60);

/// A queued event with `seats`, stored and loaded: its store, config, quota and epoch.
async fn stored_queued_event(
    database: &TestDatabase,
    seats: u32,
) -> (SqlStore, EventConfig, EventQuota, u64) {
    let store = database.store().await;
    let config = queued_config(seats);
    assert!(store.create_event(&config, START).await.unwrap());
    let loaded = store.load(&config.id).await.unwrap().unwrap();
    (store, config, loaded.quota, loaded.epoch)
}

fn queued_config(seats: u32) -> EventConfig {
    let mut config = event_config("race", &[("10K", seats)], 0);
    config.opens_at = Some(OPENS);
    config.queue = Some(QueueConfig {
        lobby_opens_at: START,
        pass_ttl_seconds: 30,
        overbook_permille: 1_000,
        admit_per_kilosecond: Some(500_000),
        queue_max: 1_000,
        draw_seed: DrawSeed([0xab; 32]),
    });
    config
}

fn join(email: &str, key: &str) -> Command {
    let idempotency = Idempotency { key: IdempotencyKey::parse(key).unwrap(), fingerprint: Fingerprint(5) };
    Command::JoinQueue(JoinQueue { registrant: Email::parse(email).unwrap(), idempotency: Some(idempotency) })
}

async fn a_queued_event_is_stored_with_its_settings_and_seed(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let config = queued_config(3);
    assert!(store.create_event(&config, START).await.unwrap());
    assert_eq!(store.event_config(&config.id).await.unwrap(), Some(config));
}

async fn tickets_written_through_the_writer_are_recovered_with_their_places_and_passes(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, config, mut quota, epoch) = stored_queued_event(&database, 2).await;
    let id = config.id.clone();
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let emails: Vec<String> = (0..8).map(|n| format!("r{n}@x.org")).collect();
    for (n, email) in emails.iter().enumerate() {
        let (_, effects) = decide(&mut quota, join(email, &format!("k{n}")), START.plus_millis(n as u64));
        submit(&sender, &id, epoch, effects).await.unwrap();
    }
    // The draw and the first admissions; then one pass used, one left to expire; a late join.
    let (_, effects) = decide(&mut quota, Command::ExpireHolds, OPENS);
    submit(&sender, &id, epoch, effects).await.unwrap();
    let order = quota.drawn_lobby().unwrap();
    let email_of = |ticket: TicketId| emails[ticket.0 as usize - 1].clone();
    let mut request = register("10K", &email_of(order[0]));
    request.queue_pass = Some(QueuePass { ticket: order[0], waitlist: false });
    let (outcome, effects) = decide(&mut quota, Command::Register(request), OPENS.plus_seconds(1));
    assert!(matches!(outcome, Outcome::Decided(Decision::Confirmed { .. })), "{outcome:?}");
    submit(&sender, &id, epoch, effects).await.unwrap();
    let (_, effects) = decide(&mut quota, Command::ExpireHolds, OPENS.plus_seconds(30));
    submit(&sender, &id, epoch, effects).await.unwrap();
    let (_, effects) = decide(&mut quota, join("late@x.org", "late"), OPENS.plus_seconds(31));
    submit(&sender, &id, epoch, effects).await.unwrap();
    let now = OPENS.plus_seconds(31);
    let statuses: Vec<TicketStatus> =
        order.iter().map(|ticket| quota.ticket_view(*ticket, now).unwrap().status).collect();
    assert_eq!(&statuses[..3], [TicketStatus::Used, TicketStatus::Expired, TicketStatus::Admitted]);

    drop(sender);
    writer.closed().await;
    let reloaded = store.load(&id).await.unwrap().unwrap().quota;
    reloaded.check_invariants_fully();
    assert_eq!(reloaded.drawn_lobby(), quota.drawn_lobby());
    // The admission rate is rebuilt from the passes' stored times (granted, used or lapsed), so
    // every ticket reads as before, its ETA included.
    let rate = quota.queue_summary(now).unwrap().admission_rate;
    assert!(rate.is_some(), "a pass ended and a ticket was admitted after it");
    assert_eq!(reloaded.queue_summary(now).unwrap().admission_rate, rate);
    for number in 1..=9 {
        let ticket = TicketId(number);
        let (before, after) =
            (quota.ticket_view(ticket, now).unwrap(), reloaded.ticket_view(ticket, now).unwrap());
        assert_eq!(after, before, "ticket {number}");
    }
    let mut reloaded = reloaded;
    let (replay, _) = decide(&mut reloaded, join("r0@x.org", "k0"), now);
    assert!(matches!(replay, Outcome::Replayed(Decision::QueueJoined { new: true, .. })), "{replay:?}");
}

/// A keyed join in the lobby writes its ticket's row and nothing else: the key, the decision
/// and the audit are in it. A restart replays the key from that row, the decision as it was
/// made (its position, ETA and all), until the key's retention ends.
async fn a_keyed_join_is_one_row_and_its_key_replays_from_it_after_a_restart(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, config, mut quota, epoch) = stored_queued_event(&database, 2).await;
    let id = config.id.clone();
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let mut decided = Vec::new();
    for n in 0..3 {
        let command = join(&format!("r{n}@x.org"), &format!("k{n}"));
        let (outcome, effects) = decide(&mut quota, command.clone(), START.plus_millis(n));
        let Outcome::Decided(decision @ Decision::QueueJoined { new: true, .. }) = outcome else {
            panic!("a new ticket: {outcome:?}")
        };
        submit(&sender, &id, epoch, effects).await.unwrap();
        decided.push((command, decision));
    }
    drop(sender);
    writer.closed().await;
    let rows = [
        database.rows_in("queue_tickets").await,
        database.rows_in("idempotency_entries").await,
        database.rows_in("audit_log").await,
    ];
    assert_eq!(rows, [3, 0, 0], "tickets, idempotency entries, audit rows");

    let mut reloaded = store.load(&id).await.unwrap().unwrap().quota;
    assert_eq!(reloaded.idempotency_entries(), 3);
    let later = START.plus_seconds(10);
    for (command, decision) in &decided {
        let (outcome, effects) = decide(&mut reloaded, command.clone(), later);
        assert_eq!(outcome, Outcome::Replayed(decision.clone()));
        assert!(effects.is_empty());
    }
    let Command::JoinQueue(mut other_body) = decided[0].0.clone() else { unreachable!() };
    other_body.registrant = Email::parse("someone-else@x.org").unwrap();
    other_body.idempotency.as_mut().unwrap().fingerprint = Fingerprint(6);
    let (outcome, _) = decide(&mut reloaded, Command::JoinQueue(other_body), later);
    assert_eq!(outcome, Outcome::KeyReused);

    // Past the retention, a restart no longer knows the keys: the join is decided afresh and
    // finds the registrant's ticket.
    let retention = u64::from(config.limits.idempotency_retention_seconds);
    let clock = ManualClock::new(START.plus_seconds(retention + 1));
    let forgetful = store.clone().with_clock(Arc::new(clock));
    let mut expired = forgetful.load(&id).await.unwrap().unwrap().quota;
    assert_eq!(expired.idempotency_entries(), 0);
    let (outcome, _) = decide(&mut expired, decided[0].0.clone(), START.plus_seconds(retention + 1));
    assert!(matches!(outcome, Outcome::Decided(Decision::QueueJoined { new: false, .. })), "{outcome:?}");
}

/// The audit of a queue reads as it did when every effect had an audit row of its own: one
/// entry per effect, in seq order, with the same kind, detail and time, on every page size
/// (a page may end between a ticket's creation and its join's decision, with an admission
/// between them). Keyed and unkeyed joins, a join admitted at once, a join refused before the
/// lobby and the join of a registrant who has a ticket are all in it.
async fn the_audit_shows_one_entry_per_effect_of_a_queue_on_every_page_size(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (store, config, mut quota, epoch) = stored_queued_event(&database, 4).await;
    let id = config.id.clone();
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default(), None);
    let unkeyed = |email: &str| {
        Command::JoinQueue(JoinQueue { registrant: Email::parse(email).unwrap(), idempotency: None })
    };
    // Each inner list is one submission (one batch or more).
    let steps: Vec<Vec<(Command, Timestamp)>> = vec![
        vec![(join("early@x.org", "early"), Timestamp::from_millis(START.as_millis() - 1))],
        vec![
            (join("r0@x.org", "k0"), START),
            (unkeyed("r1@x.org"), START.plus_millis(1)),
            (join("r2@x.org", "k2"), START.plus_millis(2)),
        ],
        vec![(join("r0@x.org", "k0-again"), START.plus_millis(3))],
        // The draw; admissions, paced, in the next join, which takes the fourth seat at once.
        vec![(Command::ExpireHolds, OPENS)],
        vec![(join("late@x.org", "late"), OPENS.plus_seconds(1))],
        vec![(join("later@x.org", "later"), OPENS.plus_seconds(2))],
    ];
    let mut effects_written = Vec::new();
    for step in steps {
        let mut effects = Vec::new();
        for (command, now) in step {
            effects.extend(decide(&mut quota, command, now).1);
        }
        submit(&sender, &id, epoch, effects.clone()).await.unwrap();
        effects_written.extend(effects);
    }
    drop(sender);
    writer.closed().await;
    // Admissions between a join's ticket and its decision (paced: the draw admits one, the
    // next join the rest and itself).
    let admitted_in_a_join = effects_written.windows(2).any(|two| {
        matches!(
            [&two[0].kind, &two[1].kind],
            [EffectKind::QueueJoined { .. }, EffectKind::QueueAdmitted { .. }]
        )
    });
    assert!(admitted_in_a_join, "admissions inside a join: {effects_written:?}");

    let expected: Vec<Value> = effects_written.iter().map(entry_of_effect).collect();
    for page_size in [1, 2, 3, 500] {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = store.audit_page(&id, page_size, after).await.unwrap();
            assert!(page.len() <= page_size as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            entries.extend(page.iter().map(shown));
        }
        assert_eq!(entries, expected, "pages of {page_size}");
    }
}

/// An audit entry as the API shows it.
fn shown(row: &AuditRow) -> Value {
    json!({
        "id": row.id,
        "registration": row.registration.map(|registration| registration.0),
        "seq": row.seq.0,
        "kind": row.kind,
        "detail": serde_json::from_str::<Value>(&row.detail_json).unwrap(),
        "at": row.at.as_millis(),
    })
}

/// The audit entry of one effect, written out by hand for the kinds a queue's test makes.
fn entry_of_effect(effect: &Effect) -> Value {
    let (registration, kind, detail): (Option<RegistrationId>, &str, Value) = match &effect.kind {
        EffectKind::QueueJoined { ticket, .. } => (None, "queue_joined", json!({ "ticket": ticket.0 })),
        EffectKind::QueueAdmitted { ticket, pass_expires_at } => (
            None,
            "queue_admitted",
            json!({ "ticket": ticket.0, "pass_expires_at": pass_expires_at.as_millis() }),
        ),
        EffectKind::DecisionRecorded { idempotency, decision } => (
            None,
            "decision_recorded",
            json!({ "idempotency_key": idempotency.key.as_str(), "decision": decision }),
        ),
        other => panic!("no audit entry written out for {other:?}"),
    };
    json!({
        "id": effect.seq.0,
        "registration": registration.map(|registration| registration.0),
        "seq": effect.seq.0,
        "kind": kind,
        "detail": detail,
        "at": effect.at.as_millis(),
    })
}
