//! A queued event on MariaDB and on SQLite: its settings and seed stored with the event, its
//! tickets written through the real write-behind, and a load that gives every ticket its place,
//! pass and status back. Effects come from a local `EventQuota`.

use kuota_engine::store::EventLoader;
use kuota_engine::{
    Command, Decision, DrawSeed, Email, EventConfig, Fingerprint, Idempotency, IdempotencyKey, JoinQueue,
    Outcome, QueueConfig, QueuePass, TicketId, TicketStatus, Timestamp,
};
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};

use crate::sql_support::{
    Backend, START, TestDatabase, decide, event_config, on_both_databases, register, submit,
};

on_both_databases!(
    a_queued_event_is_stored_with_its_settings_and_seed,
    tickets_written_through_the_writer_are_recovered_with_their_places_and_passes,
);

const OPENS: Timestamp = START.plus_seconds(60);

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
    let store = database.store().await;
    let config = queued_config(2);
    let id = config.id.clone();
    assert!(store.create_event(&config, START).await.unwrap());
    let loaded = store.load(&id).await.unwrap().unwrap();
    let (mut quota, epoch) = (loaded.quota, loaded.epoch);
    let (sender, writer) = WriteBehind::start(store.clone(), WriteBehindConfig::default());
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
    for number in 1..=9 {
        let ticket = TicketId(number);
        let (mut before, after) =
            (quota.ticket_view(ticket, now).unwrap(), reloaded.ticket_view(ticket, now).unwrap());
        // The measured admission rate starts afresh after a load.
        before.eta_seconds = after.eta_seconds;
        before.refresh_after_seconds = after.refresh_after_seconds;
        assert_eq!(after, before, "ticket {number}");
    }
    let mut reloaded = reloaded;
    let (replay, _) = decide(&mut reloaded, join("r0@x.org", "k0"), now);
    assert!(matches!(replay, Outcome::Replayed(Decision::QueueJoined { new: true, .. })), "{replay:?}");
}
