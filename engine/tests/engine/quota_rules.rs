//! One test per rule of `EventQuota`, named as the rule.

use kuota_engine::{
    ActiveStatus, CategoryCode, Command, Decision, EffectKind, EndedStatus, EventQuota, Outcome,
    QuotaBuilder, RegistrationId, RegistrationRecord, Seq, Timestamp,
};

use super::support::{START, code, event_config, keyed, quota, register, registration_command, waitlisting};

fn decide(quota: &mut EventQuota, request: kuota_engine::Register, now: Timestamp) -> Outcome {
    quota.apply(&registration_command(request), now).0
}

fn durable(quota: &mut EventQuota) {
    let last = quota.last_seq();
    quota.mark_durable(last);
}

#[test]
fn a_registration_takes_a_seat_and_is_confirmed_at_once_without_holds() {
    let mut quota = quota(&[("10K", 2)], 0);
    let (outcome, effects) = quota.apply(&registration_command(register("10K", "a@x.org")), START);
    assert_eq!(outcome, Outcome::Decided(Decision::Confirmed { registration: RegistrationId(1) }));
    assert_eq!(effects.len(), 1);
    assert!(matches!(effects[0].kind, EffectKind::Created { status: ActiveStatus::Confirmed, .. }));
    let figures = &quota.availability()[0];
    assert_eq!((figures.confirmed, figures.held, figures.available), (1, 0, 1));
}

#[test]
fn every_seat_is_sold_and_never_one_more() {
    let mut quota = quota(&[("10K", 3)], 0);
    let mut confirmed = 0;
    for n in 0..10 {
        match decide(&mut quota, register("10K", &format!("r{n}@x.org")), START) {
            Outcome::Decided(Decision::Confirmed { .. }) => confirmed += 1,
            Outcome::Decided(Decision::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(confirmed, 3);
    assert_eq!(quota.availability()[0].available, 0);
}

#[test]
fn a_second_registration_with_the_same_email_is_rejected_even_in_another_category() {
    let mut quota = quota(&[("5K", 5), ("10K", 5)], 0);
    decide(&mut quota, register("5K", "Ana@X.org"), START);
    let outcome = decide(&mut quota, register("10K", " ana@x.org "), START);
    assert_eq!(outcome, Outcome::Decided(Decision::AlreadyRegistered));
}

#[test]
fn an_unknown_category_is_refused() {
    let mut quota = quota(&[("5K", 5)], 0);
    assert_eq!(decide(&mut quota, register("42K", "a@x.org"), START), Outcome::UnknownCategory);
}

#[test]
fn registration_before_opening_is_not_open_and_after_closing_is_closed() {
    let mut config = event_config(&[("5K", 5)], 0);
    config.opens_at = Some(START.plus_seconds(60));
    config.closes_at = Some(START.plus_seconds(120));
    let mut quota = EventQuota::new(config).unwrap();
    let opens_at = START.plus_seconds(60);
    assert_eq!(
        decide(&mut quota, register("5K", "a@x.org"), START),
        Outcome::Decided(Decision::NotOpen { opens_at })
    );
    assert!(matches!(
        decide(&mut quota, register("5K", "a@x.org"), START.plus_seconds(60)),
        Outcome::Decided(Decision::Confirmed { .. })
    ));
    let late = decide(&mut quota, register("5K", "b@x.org"), START.plus_seconds(120));
    assert_eq!(late, Outcome::Decided(Decision::Closed));
}

#[test]
fn with_holds_a_registration_is_held_until_its_expiry() {
    let mut quota = quota(&[("5K", 1)], 30);
    let outcome = decide(&mut quota, register("5K", "a@x.org"), START);
    let expires_at = START.plus_seconds(30);
    assert_eq!(outcome, Outcome::Decided(Decision::Held { registration: RegistrationId(1), expires_at }));
    assert_eq!(quota.next_hold_expiry(), Some(expires_at));
    assert_eq!(quota.availability()[0].held, 1);
}

#[test]
fn a_held_registration_is_confirmed_once_and_confirming_again_is_idempotent() {
    let mut quota = quota(&[("5K", 1)], 30);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let confirm = Command::Confirm { registration: RegistrationId(1) };
    let (first, effects) = quota.apply(&confirm, START.plus_seconds(1));
    assert_eq!(first, Outcome::RegistrationConfirmed { registration: RegistrationId(1), already: false });
    assert!(matches!(effects[0].kind, EffectKind::Confirmed { .. }));
    let (second, effects) = quota.apply(&confirm, START.plus_seconds(2));
    assert_eq!(second, Outcome::RegistrationConfirmed { registration: RegistrationId(1), already: true });
    assert!(effects.is_empty());
    assert_eq!(quota.next_hold_expiry(), None);
}

#[test]
fn a_hold_that_expires_returns_its_seat_and_a_late_confirm_is_hold_expired() {
    let mut quota = quota(&[("5K", 1)], 30);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let (outcome, effects) = quota.apply(&Command::ExpireHolds, START.plus_seconds(30));
    assert_eq!(outcome, Outcome::HoldsExpired { count: 1 });
    assert!(matches!(effects[0].kind, EffectKind::Expired { registration: RegistrationId(1) }));
    assert_eq!(quota.availability()[0].available, 1);
    let (late, _) =
        quota.apply(&Command::Confirm { registration: RegistrationId(1) }, START.plus_seconds(31));
    assert_eq!(late, Outcome::HoldExpired { registration: RegistrationId(1) });
}

#[test]
fn any_command_expires_due_holds_first() {
    let mut quota = quota(&[("5K", 1)], 10);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let outcome = decide(&mut quota, register("5K", "b@x.org"), START.plus_seconds(10));
    assert!(matches!(outcome, Outcome::Decided(Decision::Held { registration: RegistrationId(2), .. })));
}

#[test]
fn after_an_expiry_the_registrant_may_register_again() {
    let mut quota = quota(&[("5K", 1)], 10);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let again = decide(&mut quota, register("5K", "a@x.org"), START.plus_seconds(11));
    assert!(matches!(again, Outcome::Decided(Decision::Held { .. })));
}

#[test]
fn sold_out_with_waitlist_wanted_joins_the_waitlist_in_arrival_order() {
    let mut quota = quota(&[("5K", 1)], 0);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let second = decide(&mut quota, waitlisting(register("5K", "b@x.org")), START);
    let third = decide(&mut quota, waitlisting(register("5K", "c@x.org")), START);
    assert_eq!(
        second,
        Outcome::Decided(Decision::Waitlisted { registration: RegistrationId(2), position: 1 })
    );
    assert_eq!(
        third,
        Outcome::Decided(Decision::Waitlisted { registration: RegistrationId(3), position: 2 })
    );
    assert_eq!(quota.status_of(RegistrationId(3)), Some((ActiveStatus::Waitlisted, Some(2))));
    assert_eq!(quota.availability()[0].waitlisted, 2);
}

#[test]
fn a_full_waitlist_answers_sold_out() {
    let mut config = event_config(&[("5K", 0)], 0);
    config.limits.waitlist_length_max = 1;
    let mut quota = EventQuota::new(config).unwrap();
    assert!(matches!(
        decide(&mut quota, waitlisting(register("5K", "a@x.org")), START),
        Outcome::Decided(Decision::Waitlisted { .. })
    ));
    let outcome = decide(&mut quota, waitlisting(register("5K", "b@x.org")), START);
    assert_eq!(outcome, Outcome::Decided(Decision::SoldOut));
}

#[test]
fn a_cancelled_seat_goes_to_the_head_of_the_waitlist() {
    let mut quota = quota(&[("5K", 1)], 0);
    decide(&mut quota, register("5K", "a@x.org"), START);
    decide(&mut quota, waitlisting(register("5K", "b@x.org")), START);
    decide(&mut quota, waitlisting(register("5K", "c@x.org")), START);
    let (outcome, effects) = quota.apply(&Command::Cancel { registration: RegistrationId(1) }, START);
    assert_eq!(outcome, Outcome::RegistrationCancelled { registration: RegistrationId(1), already: false });
    assert!(matches!(effects[0].kind, EffectKind::Cancelled { .. }));
    assert_eq!(
        effects[1].kind,
        EffectKind::Promoted { registration: RegistrationId(2), status: ActiveStatus::Confirmed }
    );
    assert_eq!(quota.status_of(RegistrationId(3)), Some((ActiveStatus::Waitlisted, Some(1))));
}

#[test]
fn an_expired_hold_goes_to_the_head_of_the_waitlist_as_a_new_hold() {
    let mut quota = quota(&[("5K", 1)], 10);
    decide(&mut quota, register("5K", "a@x.org"), START);
    decide(&mut quota, waitlisting(register("5K", "b@x.org")), START);
    let (_, effects) = quota.apply(&Command::ExpireHolds, START.plus_seconds(10));
    let expires_at = START.plus_seconds(20);
    assert_eq!(
        effects[1].kind,
        EffectKind::Promoted { registration: RegistrationId(2), status: ActiveStatus::Held { expires_at } }
    );
}

#[test]
fn apply_into_appends_the_effects_apply_returns_after_those_already_there() {
    let commands = [
        registration_command(register("5K", "a@x.org")),
        registration_command(waitlisting(register("5K", "b@x.org"))),
        // Expires a's hold and promotes b: two effects, then c's own.
        registration_command(waitlisting(register("5K", "c@x.org"))),
    ];
    let times = [START, START, START.plus_seconds(10)];
    let (mut returning, mut appending) = (quota(&[("5K", 1)], 10), quota(&[("5K", 1)], 10));
    let (mut returned, mut appended) = (Vec::new(), Vec::new());
    for (command, now) in commands.iter().zip(times) {
        let (outcome, effects) = returning.apply(command, now);
        returned.extend(effects);
        assert_eq!(appending.apply_into(command, now, &mut appended), outcome);
        assert_eq!(appended, returned);
    }
    assert_eq!(appended.len(), 5);
    assert_eq!(appending, returning);
}

#[test]
fn cancelling_twice_is_cancelled_both_times_and_changes_nothing_the_second_time() {
    let mut quota = quota(&[("5K", 1)], 0);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let cancel = Command::Cancel { registration: RegistrationId(1) };
    quota.apply(&cancel, START);
    let (again, effects) = quota.apply(&cancel, START);
    assert_eq!(again, Outcome::RegistrationCancelled { registration: RegistrationId(1), already: true });
    assert!(effects.is_empty());
}

#[test]
fn cancelling_after_an_expiry_reports_the_expiry_and_unknown_ids_are_unknown() {
    let mut quota = quota(&[("5K", 1)], 5);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let (outcome, _) =
        quota.apply(&Command::Cancel { registration: RegistrationId(1) }, START.plus_seconds(5));
    assert_eq!(
        outcome,
        Outcome::AlreadyEnded { registration: RegistrationId(1), status: EndedStatus::Expired }
    );
    let (unknown, _) =
        quota.apply(&Command::Cancel { registration: RegistrationId(9) }, START.plus_seconds(5));
    assert_eq!(unknown, Outcome::UnknownRegistration);
}

#[test]
fn a_waitlisted_registration_cannot_be_confirmed() {
    let mut quota = quota(&[("5K", 0)], 10);
    decide(&mut quota, waitlisting(register("5K", "a@x.org")), START);
    let (outcome, _) = quota.apply(&Command::Confirm { registration: RegistrationId(1) }, START);
    assert_eq!(outcome, Outcome::NotHeld { registration: RegistrationId(1) });
}

#[test]
fn raising_capacity_promotes_the_waitlist() {
    let mut quota = quota(&[("5K", 0)], 0);
    decide(&mut quota, waitlisting(register("5K", "a@x.org")), START);
    decide(&mut quota, waitlisting(register("5K", "b@x.org")), START);
    let (outcome, effects) = quota.apply(&Command::SetCapacity { category: code("5K"), capacity: 1 }, START);
    assert_eq!(outcome, Outcome::CapacityChanged { category: code("5K"), capacity: 1, promoted: 1 });
    assert!(matches!(effects[0].kind, EffectKind::CapacityChanged { capacity: 1, .. }));
    assert!(matches!(effects[1].kind, EffectKind::Promoted { registration: RegistrationId(1), .. }));
    assert_eq!(quota.config().categories[0].capacity, 1);
}

#[test]
fn capacity_below_the_seats_taken_is_refused_and_changes_nothing() {
    let mut quota = quota(&[("5K", 3)], 0);
    decide(&mut quota, register("5K", "a@x.org"), START);
    decide(&mut quota, register("5K", "b@x.org"), START);
    let (outcome, effects) = quota.apply(&Command::SetCapacity { category: code("5K"), capacity: 1 }, START);
    assert_eq!(outcome, Outcome::CapacityBelowTaken { category: code("5K"), taken: 2 });
    assert!(effects.is_empty());
    assert_eq!(quota.availability()[0].capacity, 3);
}

#[test]
fn a_retry_with_the_same_key_and_body_replays_the_first_decision_once_durable() {
    let mut quota = quota(&[("5K", 1)], 0);
    let first = decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    assert_eq!(first, Outcome::Decided(Decision::Confirmed { registration: RegistrationId(1) }));
    let in_flight = decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    assert_eq!(in_flight, Outcome::KeyInFlight);
    durable(&mut quota);
    let replay = decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    assert_eq!(replay, Outcome::Replayed(Decision::Confirmed { registration: RegistrationId(1) }));
    assert_eq!(quota.availability()[0].confirmed, 1);
}

#[test]
fn the_same_key_with_another_body_is_key_reused() {
    let mut quota = quota(&[("5K", 1)], 0);
    decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    let reused = decide(&mut quota, keyed(register("5K", "b@x.org"), "k1", 8), START);
    assert_eq!(reused, Outcome::KeyReused);
}

#[test]
fn a_keyed_sold_out_is_recorded_and_replayed_even_after_a_seat_frees() {
    let mut quota = quota(&[("5K", 1)], 0);
    decide(&mut quota, register("5K", "a@x.org"), START);
    let (outcome, effects) =
        quota.apply(&registration_command(keyed(register("5K", "b@x.org"), "k2", 1)), START);
    assert_eq!(outcome, Outcome::Decided(Decision::SoldOut));
    assert!(matches!(effects[0].kind, EffectKind::DecisionRecorded { decision: Decision::SoldOut, .. }));
    quota.apply(&Command::Cancel { registration: RegistrationId(1) }, START);
    durable(&mut quota);
    let replay = decide(&mut quota, keyed(register("5K", "b@x.org"), "k2", 1), START);
    assert_eq!(replay, Outcome::Replayed(Decision::SoldOut));
}

#[test]
fn idempotency_entries_are_forgotten_after_their_retention() {
    let mut config = event_config(&[("5K", 5)], 0);
    config.limits.idempotency_retention_seconds = 60;
    let mut quota = EventQuota::new(config).unwrap();
    decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    durable(&mut quota);
    assert_eq!(quota.idempotency_entries(), 1);
    let later = decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START.plus_seconds(60));
    assert_eq!(later, Outcome::Decided(Decision::AlreadyRegistered));
}

#[test]
fn a_full_idempotency_table_refuses_new_keys_but_still_replays_known_ones() {
    let mut config = event_config(&[("5K", 5)], 0);
    config.limits.idempotency_entries_max = 1;
    let mut quota = EventQuota::new(config).unwrap();
    decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START);
    durable(&mut quota);
    assert_eq!(
        decide(&mut quota, keyed(register("5K", "b@x.org"), "k2", 7), START),
        Outcome::IdempotencyFull
    );
    assert!(matches!(
        decide(&mut quota, keyed(register("5K", "a@x.org"), "k1", 7), START),
        Outcome::Replayed(_)
    ));
}

#[test]
fn effects_carry_consecutive_sequence_numbers() {
    let mut quota = quota(&[("5K", 1)], 0);
    let mut seqs = Vec::new();
    for (n, request) in
        [register("5K", "a@x.org"), waitlisting(register("5K", "b@x.org"))].into_iter().enumerate()
    {
        let (_, effects) = quota.apply(&registration_command(request), START.plus_seconds(n as u64));
        seqs.extend(effects.iter().map(|effect| effect.seq));
    }
    let (_, effects) = quota.apply(&Command::Cancel { registration: RegistrationId(1) }, START);
    seqs.extend(effects.iter().map(|effect| effect.seq));
    assert_eq!(seqs, vec![Seq(1), Seq(2), Seq(3), Seq(4)]);
}

#[test]
fn time_never_runs_backwards_inside_the_core() {
    let mut quota = quota(&[("5K", 1)], 10);
    decide(&mut quota, register("5K", "a@x.org"), START.plus_seconds(100));
    // An earlier `now` is read as the latest one seen, so the hold still expires at 110 s.
    let outcome = decide(&mut quota, register("5K", "b@x.org"), START);
    assert_eq!(outcome, Outcome::Decided(Decision::SoldOut));
    assert_eq!(quota.next_hold_expiry(), Some(START.plus_seconds(110)));
}

#[test]
fn a_rebuilt_quota_equals_the_counters_and_continues_the_numbering() {
    let mut builder = QuotaBuilder::new(event_config(&[("5K", 2)], 0)).unwrap();
    builder
        .add_registration(RegistrationRecord {
            registration: RegistrationId(4),
            category: CategoryCode::parse("5K").unwrap(),
            registrant: kuota_engine::Email::parse("a@x.org").unwrap(),
            status: ActiveStatus::Confirmed,
        })
        .unwrap();
    let mut quota = builder.finish(7, Seq(12)).unwrap();
    assert_eq!(quota.availability()[0].confirmed, 1);
    let outcome = decide(&mut quota, register("5K", "b@x.org"), START);
    assert_eq!(outcome, Outcome::Decided(Decision::Confirmed { registration: RegistrationId(7) }));
    assert_eq!(quota.last_seq(), Seq(13));
}

#[test]
fn a_rebuild_refuses_more_registrations_than_seats() {
    let mut builder = QuotaBuilder::new(event_config(&[("5K", 1)], 0)).unwrap();
    let record = |id, email: &str| RegistrationRecord {
        registration: RegistrationId(id),
        category: CategoryCode::parse("5K").unwrap(),
        registrant: kuota_engine::Email::parse(email).unwrap(),
        status: ActiveStatus::Confirmed,
    };
    builder.add_registration(record(1, "a@x.org")).unwrap();
    assert!(builder.add_registration(record(2, "b@x.org")).is_err());
}

#[test]
fn an_event_without_categories_or_with_duplicate_codes_is_refused() {
    assert!(EventQuota::new(event_config(&[], 0)).is_err());
    assert!(EventQuota::new(event_config(&[("5K", 1), ("5K", 2)], 0)).is_err());
}

#[test]
fn an_event_made_in_a_used_events_tables_is_a_new_event() {
    // `new_reusing` keeps a used quota's tables, not its state: the event it makes equals a new
    // one, and decides the same from there on; so does a builder made from a used quota.
    let config = event_config(&[("5K", 2), ("10K", 3)], 60);
    let mut used = EventQuota::new(event_config(&[("5K", 4)], 0)).unwrap();
    for n in 0..6 {
        decide(
            &mut used,
            keyed(waitlisting(register("5K", &format!("r{n}@x.org"))), &format!("k{n}"), n),
            START,
        );
    }
    durable(&mut used);
    let mut reused = EventQuota::new_reusing(config.clone(), used.clone()).unwrap();
    let mut fresh = EventQuota::new(config.clone()).unwrap();
    assert!(reused == fresh, "a reused event differs from a new one");
    for n in 0..8 {
        let request = keyed(
            register(if n % 2 == 0 { "5K" } else { "10K" }, &format!("r{n}@x.org")),
            &format!("k{n}"),
            n,
        );
        let now = START.plus_seconds(n);
        assert_eq!(
            reused.apply(&registration_command(request.clone()), now),
            fresh.apply(&registration_command(request), now)
        );
    }
    assert!(reused == fresh, "a reused event decided differently");
    let rebuilt = QuotaBuilder::new_reusing(config.clone(), used).unwrap().finish(1, Seq(0)).unwrap();
    assert!(rebuilt == QuotaBuilder::new(config).unwrap().finish(1, Seq(0)).unwrap());
}

#[test]
fn a_quota_cloned_into_another_is_the_source_and_decides_as_the_source_does() {
    // `clone_from` copies into the tables the target already has (the simulator's forked runs):
    // whatever the target held before, event, registrations and keys, it must be the source's
    // state after, and decide the next requests as the source does.
    let mut source = quota(&[("5K", 3), ("10K", 2)], 30);
    decide(&mut source, keyed(register("5K", "a@x.org"), "key-a", 1), START);
    decide(&mut source, register("10K", "b@x.org"), START);
    durable(&mut source);
    let mut target = quota(&[("42K", 50)], 0);
    for n in 0..40 {
        decide(&mut target, keyed(register("42K", &format!("t{n}@x.org")), &format!("t-{n}"), n), START);
    }
    target.clone_from(&source);
    assert!(target == source, "{target:?} is not {source:?}");
    target.check_invariants_fully();
    let later = START.plus_seconds(1);
    for request in [
        keyed(register("5K", "a@x.org"), "key-a", 1),
        register("10K", "b@x.org"),
        register("10K", "c@x.org"),
        register("10K", "d@x.org"),
        register("42K", "t1@x.org"),
    ] {
        assert_eq!(decide(&mut target, request.clone(), later), decide(&mut source, request, later));
    }
    assert!(target == source);
}
