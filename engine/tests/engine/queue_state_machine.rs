//! A state-machine test of the queue: random sequences of joins, registrations with and without
//! passes, cancellations, capacity changes and time passing run against a queued event, and the
//! queue's rules are checked after every step against what the test observes from outside
//! (outcomes, effects, ticket views), while the engine's full invariant check holds.
//!
//! The registration rules themselves are `state_machine`'s reference model's business; this test
//! keeps its own small record of the queue (each ticket's registrant, admissions in the order
//! they happened, passes used) and checks the queue's rules from it:
//! - one ticket per registrant; joins are refused only by `queue_max`;
//! - admission strictly in queue order, and never while the passes outstanding would exceed
//!   ⌊overbook × seats available⌋;
//! - a registration is created only with a pass, and a pass makes at most one registration;
//! - a waiting ticket reads `sold_out` exactly when nothing is available, held or passed out;
//! - every ticket reads from the figures the actor publishes (`PublishedCounters::ticket_view`,
//!   which answers the crowd's polling) exactly as the queue itself reads it, or not at all.

use std::collections::{BTreeMap, BTreeSet};

use kuota_engine::counters::{PublishedCounters, TicketChanges};
use kuota_engine::{
    Command, Decision, EffectKind, EventQuota, Outcome, QueuePass, RegistrationId, TicketId, TicketStatus,
    Timestamp,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::queue_rules::{Settings, join_command, queued_config};
use super::support;

const EMAILS: [&str; 8] =
    ["a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org", "f@x.org", "g@x.org", " A@x.org"];

/// The registrant an address stands for (the last one normalizes to the first).
fn person(email: usize) -> usize {
    if email == EMAILS.len() - 1 { 0 } else { email }
}

#[derive(Clone, Debug)]
struct Setup {
    seats: u32,
    hold_ttl_seconds: u32,
    overbook_permille: u32,
    pass_ttl_seconds: u32,
    admit_per_kilosecond: Option<u64>,
    queue_max: u32,
}

#[derive(Clone, Debug)]
enum Step {
    Join(usize),
    /// Register `email` presenting the pass of the ticket of `pass_of` (or none), perhaps as
    /// a waitlist pass, perhaps asking for the waitlist.
    Register {
        email: usize,
        pass_of: Option<usize>,
        waitlist_pass: bool,
        waitlist: bool,
    },
    Cancel(u64),
    SetCapacity(u32),
    Advance {
        seconds: u64,
    },
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        0u32..4,
        prop_oneof![Just(0u32), Just(20)],
        1_000u32..=3_000,
        10u32..=40,
        proptest::option::weighted(0.3, 500u64..=3_000),
        2u32..=8,
    )
        .prop_map(
            |(
                seats,
                hold_ttl_seconds,
                overbook_permille,
                pass_ttl_seconds,
                admit_per_kilosecond,
                queue_max,
            )| Setup {
                seats,
                hold_ttl_seconds,
                overbook_permille,
                pass_ttl_seconds,
                admit_per_kilosecond,
                queue_max,
            },
        )
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..EMAILS.len()).prop_map(Step::Join),
        5 => (0..EMAILS.len(), proptest::option::weighted(0.85, 0..EMAILS.len()), any::<bool>(), any::<bool>())
            .prop_map(|(email, pass_of, waitlist_pass, waitlist)| Step::Register { email, pass_of, waitlist_pass, waitlist }),
        1 => (1u64..=8).prop_map(Step::Cancel),
        1 => (0u32..=5).prop_map(Step::SetCapacity),
        3 => (0u64..=25).prop_map(|seconds| Step::Advance { seconds }),
    ]
}

/// What the test remembers of the queue.
#[derive(Default)]
struct Record {
    /// Each person's ticket.
    tickets: BTreeMap<usize, TicketId>,
    /// Tickets in the order they were admitted.
    admitted: Vec<TicketId>,
    used: BTreeSet<TicketId>,
    /// A waiting ticket left the line with a waitlist pass.
    waitlist_pass_used: bool,
}

/// What happened in a run, for the coverage test.
#[derive(Default)]
struct Seen {
    labels: BTreeSet<&'static str>,
}

fn run(setup: &Setup, steps: &[Step], seen: &mut Seen) -> Result<(), TestCaseError> {
    let settings = Settings {
        seats: setup.seats,
        overbook_permille: setup.overbook_permille,
        pass_ttl_seconds: setup.pass_ttl_seconds,
        admit_per_kilosecond: setup.admit_per_kilosecond,
        queue_max: setup.queue_max,
        seed: [3; 32],
    };
    let mut config = queued_config(&settings);
    config.hold_ttl_seconds = setup.hold_ttl_seconds;
    let opens_at = config.opens_at.unwrap();
    let mut quota = EventQuota::new(config).unwrap();
    let published = PublishedCounters::new(quota.config());
    let mut record = Record::default();
    let mut now = support::START;
    for (index, step) in steps.iter().enumerate() {
        let command = match *step {
            Step::Advance { seconds } => {
                now = now.plus_seconds(seconds);
                Command::ExpireHolds
            }
            Step::Join(email) => join_command(EMAILS[email]),
            Step::Register { email, pass_of, waitlist_pass, waitlist } => {
                let mut request = support::register("10K", EMAILS[email]);
                request.waitlist = waitlist;
                request.queue_pass = pass_of.map(|owner| QueuePass {
                    ticket: record.tickets.get(&person(owner)).copied().unwrap_or(TicketId(99)),
                    waitlist: waitlist_pass,
                });
                Command::Register(request)
            }
            Step::Cancel(id) => Command::Cancel { registration: RegistrationId(id) },
            Step::SetCapacity(capacity) => Command::SetCapacity { category: support::code("10K"), capacity },
        };
        let (outcome, effects) = quota.apply(&command, now);
        quota.mark_durable(quota.last_seq());
        // As the actor publishes after every decision.
        published.publish(&quota);
        published.publish_queue(&quota, now);
        published.publish_tickets(&quota, TicketChanges::Effects(&effects));
        note(seen, &quota, &outcome, &effects, now);
        check_step(&quota, &mut record, step, &outcome, &effects, now, opens_at)
            .map_err(|error| TestCaseError::fail(format!("step {index} ({step:?}): {error}")))?;
        check_published_tickets(&published, &quota, &record, now, opens_at, seen)
            .map_err(|error| TestCaseError::fail(format!("step {index} ({step:?}): {error}")))?;
        quota.check_invariants_fully();
    }
    Ok(())
}

fn check_step(
    quota: &EventQuota,
    record: &mut Record,
    step: &Step,
    outcome: &Outcome,
    effects: &[kuota_engine::Effect],
    now: Timestamp,
    opens_at: Timestamp,
) -> Result<(), String> {
    if let (Step::Join(email), Outcome::Decided(Decision::QueueJoined { new, view })) = (step, outcome) {
        let known = record.tickets.insert(person(*email), view.ticket);
        if *new != known.is_none() || known.is_some_and(|ticket| ticket != view.ticket) {
            return Err(format!("one ticket per registrant broken: {known:?} then {view:?}"));
        }
    }
    if let (Step::Join(email), Outcome::QueueFull) = (step, outcome)
        && record.tickets.contains_key(&person(*email))
    {
        return Err("a registrant with a ticket was refused as full".into());
    }
    let mut created = Vec::new();
    let mut used = Vec::new();
    for effect in effects {
        match &effect.kind {
            EffectKind::QueueAdmitted { ticket, .. } => record.admitted.push(*ticket),
            EffectKind::Created { registration, .. } => created.push(*registration),
            EffectKind::QueuePassUsed { ticket, registration } => {
                record.waitlist_pass_used |= !record.admitted.contains(ticket);
                if !record.used.insert(*ticket) {
                    return Err(format!("the pass of {ticket:?} made a second registration"));
                }
                used.push(*registration);
            }
            _ => {}
        }
    }
    if created != used {
        return Err(format!("registrations {created:?} made with passes {used:?}"));
    }
    let seats: Vec<_> = quota.availability();
    let available: u64 = seats.iter().map(|category| u64::from(category.available)).sum();
    let held: u64 = seats.iter().map(|category| u64::from(category.held)).sum();
    let summary = quota.queue_summary(now).unwrap();
    let budget = available * u64::from(quota.config().queue.as_ref().unwrap().overbook_permille) / 1_000;
    if effects.iter().any(|effect| matches!(effect.kind, EffectKind::QueueAdmitted { .. }))
        && summary.admitted_outstanding > budget
    {
        return Err(format!(
            "admitted up to {} outstanding with a budget of {budget}",
            summary.admitted_outstanding
        ));
    }
    if let Some(lobby) = quota.drawn_lobby() {
        // The whole order: the drawn lobby, then later joins by number.
        let mut order = lobby.clone();
        let mut later: Vec<TicketId> =
            record.tickets.values().copied().filter(|ticket| !lobby.contains(ticket)).collect();
        later.sort();
        order.extend(later);
        let expected: Vec<TicketId> =
            order.iter().copied().filter(|ticket| record.admitted.contains(ticket)).collect();
        if record.admitted != expected {
            return Err(format!("admitted {:?}, queue order {order:?}", record.admitted));
        }
        let exhausted = available == 0 && held == 0 && summary.admitted_outstanding == 0;
        for ticket in &order {
            let view = quota.ticket_view(*ticket, now).unwrap();
            match view.status {
                TicketStatus::Waiting if exhausted => {
                    return Err(format!("{ticket:?} waits though nothing can reach it"));
                }
                TicketStatus::SoldOut if !exhausted => {
                    return Err(format!("{ticket:?} reads sold out with seats in reach"));
                }
                TicketStatus::Lobby => return Err(format!("{ticket:?} in the lobby after the draw")),
                _ => {}
            }
        }
    } else if now >= opens_at {
        return Err("no draw at or after opens_at".into());
    }
    Ok(())
}

/// A ticket read from the published figures reads as the queue reads it. Only a line someone
/// left early (a waitlist pass used) may send a reader to the actor instead.
fn check_published_tickets(
    published: &PublishedCounters,
    quota: &EventQuota,
    record: &Record,
    now: Timestamp,
    opens_at: Timestamp,
    seen: &mut Seen,
) -> Result<(), String> {
    for ticket in record.tickets.values() {
        let expected = quota.ticket_view(*ticket, now);
        match published.ticket_view(*ticket, opens_at, now) {
            Some(view) if Some(&view) == expected.as_ref() => {
                seen.labels.insert("ticket read from the published figures");
            }
            Some(view) => return Err(format!("published {view:?}, the queue reads {expected:?}")),
            None if record.waitlist_pass_used => {}
            None => return Err(format!("{ticket:?} was not published")),
        }
    }
    Ok(())
}

fn note(
    seen: &mut Seen,
    quota: &EventQuota,
    outcome: &Outcome,
    effects: &[kuota_engine::Effect],
    now: Timestamp,
) {
    let labels = &mut seen.labels;
    match outcome {
        Outcome::QueuePassRequired => labels.insert("pass required"),
        Outcome::QueuePassInvalid => labels.insert("pass invalid"),
        Outcome::QueueFull => labels.insert("queue full"),
        Outcome::Decided(Decision::Waitlisted { .. }) => labels.insert("waitlisted with a waitlist pass"),
        Outcome::Decided(Decision::Confirmed { .. } | Decision::Held { .. }) => {
            labels.insert("seat with a pass")
        }
        _ => false,
    };
    for effect in effects {
        match effect.kind {
            EffectKind::QueueAdmitted { .. } => labels.insert("admitted"),
            EffectKind::QueuePassExpired { .. } => labels.insert("pass expired"),
            _ => false,
        };
    }
    let sold_out = quota.drawn_lobby().is_some()
        && (1..=8).any(|n| {
            quota.ticket_view(TicketId(n), now).is_some_and(|view| view.status == TicketStatus::SoldOut)
        });
    if sold_out {
        labels.insert("sold out");
    }
}

/// The generators must reach every rule, or the property says little.
#[test]
fn the_generated_queue_sequences_reach_every_rule() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (setup_strategy(), vec(step_strategy(), 1..60));
    let mut seen = Seen::default();
    for _ in 0..500 {
        let (setup, steps) = strategy.new_tree(&mut runner).unwrap().current();
        run(&setup, &steps, &mut seen).unwrap();
    }
    let every = [
        "pass required",
        "pass invalid",
        "queue full",
        "waitlisted with a waitlist pass",
        "seat with a pass",
        "admitted",
        "pass expired",
        "sold out",
        "ticket read from the published figures",
    ];
    let missing: Vec<&str> = every.iter().copied().filter(|label| !seen.labels.contains(label)).collect();
    assert!(missing.is_empty(), "the generators never reached {missing:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(3_000) })]

    #[test]
    fn random_queue_sequences_keep_the_queue_rules(setup in setup_strategy(), steps in vec(step_strategy(), 1..60)) {
        run(&setup, &steps, &mut Seen::default())?;
    }
}
