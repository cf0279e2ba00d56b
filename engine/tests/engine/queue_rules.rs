//! One test per rule of the queue in front of a queued event's opening, named as the rule.

use hmac::{Hmac, KeyInit, Mac};
use kuota_engine::{
    ActiveStatus, Command, Decision, DrawSeed, EffectKind, Email, EventQuota, Fingerprint, Idempotency,
    IdempotencyKey, JoinQueue, Outcome, PassTimes, QueueConfig, QueuePass, QuotaBuilder, Register,
    RegistrationId, StoredTicketState, TicketId, TicketRecord, TicketStatus, TicketView, Timestamp,
};
use sha2::{Digest, Sha256};

use super::support::{START, code, event_config, keyed, register, registration_command, waitlisting};

/// The lobby opens at `START`; the event opens a minute later.
const OPENS: Timestamp = START.plus_seconds(60);

pub struct Settings {
    pub seats: u32,
    pub overbook_permille: u32,
    pub pass_ttl_seconds: u32,
    pub admit_per_kilosecond: Option<u64>,
    pub queue_max: u32,
    pub seed: [u8; 32],
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seats: 3,
            overbook_permille: 1_000,
            pass_ttl_seconds: 60,
            admit_per_kilosecond: None,
            queue_max: 1_000,
            seed: [7; 32],
        }
    }
}

pub fn queued_config(settings: &Settings) -> kuota_engine::EventConfig {
    let mut config = event_config(&[("10K", settings.seats)], 0);
    config.opens_at = Some(OPENS);
    config.queue = Some(QueueConfig {
        lobby_opens_at: START,
        pass_ttl_seconds: settings.pass_ttl_seconds,
        overbook_permille: settings.overbook_permille,
        admit_per_kilosecond: settings.admit_per_kilosecond,
        queue_max: settings.queue_max,
        draw_seed: DrawSeed(settings.seed),
    });
    config
}

fn queued(settings: &Settings) -> EventQuota {
    EventQuota::new(queued_config(settings)).unwrap()
}

pub fn join_command(email: &str) -> Command {
    Command::JoinQueue(JoinQueue { registrant: Email::parse(email).unwrap(), idempotency: None })
}

fn keyed_join(email: &str, key: &str) -> Command {
    let idempotency = Idempotency { key: IdempotencyKey::parse(key).unwrap(), fingerprint: Fingerprint(9) };
    Command::JoinQueue(JoinQueue { registrant: Email::parse(email).unwrap(), idempotency: Some(idempotency) })
}

/// Joins and returns the ticket's view from the answer.
fn join(quota: &mut EventQuota, email: &str, now: Timestamp) -> TicketView {
    match quota.apply(&join_command(email), now).0 {
        Outcome::Decided(Decision::QueueJoined { view, .. }) => view,
        other => panic!("join of {email} answered {other:?}"),
    }
}

fn view(quota: &EventQuota, ticket: TicketId, now: Timestamp) -> TicketView {
    quota.ticket_view(ticket, now).expect("a known ticket")
}

fn with_pass(request: Register, ticket: TicketId) -> Register {
    Register { queue_pass: Some(QueuePass { ticket, waitlist: false }), ..request }
}

fn with_waitlist_pass(request: Register, ticket: TicketId) -> Register {
    Register { queue_pass: Some(QueuePass { ticket, waitlist: true }), ..request }
}

fn decide(quota: &mut EventQuota, request: Register, now: Timestamp) -> Outcome {
    quota.apply(&registration_command(request), now).0
}

fn durable(quota: &mut EventQuota) {
    let last = quota.last_seq();
    quota.mark_durable(last);
}

/// The draw order, computed here independently of the engine: HMAC-SHA256 keyed with the
/// seed over the ticket id text, ascending as big-endian numbers.
fn expected_draw(seed: &[u8; 32], tickets: &[TicketId]) -> Vec<TicketId> {
    let event = kuota_engine::EventId::parse("race").unwrap();
    let mut keyed: Vec<(Vec<u8>, TicketId)> = tickets
        .iter()
        .map(|ticket| {
            let mut mac = Hmac::<Sha256>::new_from_slice(seed).unwrap();
            mac.update(ticket.text(&event).as_bytes());
            (mac.finalize().into_bytes().to_vec(), *ticket)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, ticket)| ticket).collect()
}

#[test]
fn a_join_before_the_lobby_opens_is_not_open_and_after_closing_is_closed() {
    let mut config = queued_config(&Settings::default());
    config.closes_at = Some(OPENS.plus_seconds(3_600));
    let mut quota = EventQuota::new(config).unwrap();
    let early = quota.apply(&join_command("a@x.org"), Timestamp::from_millis(START.as_millis() - 1)).0;
    assert_eq!(early, Outcome::Decided(Decision::NotOpen { opens_at: START }));
    let late = quota.apply(&join_command("a@x.org"), OPENS.plus_seconds(3_600)).0;
    assert_eq!(late, Outcome::Decided(Decision::Closed));
}

#[test]
fn an_event_without_a_queue_refuses_joins() {
    let mut quota = EventQuota::new(event_config(&[("10K", 3)], 0)).unwrap();
    assert_eq!(quota.apply(&join_command("a@x.org"), START).0, Outcome::NoQueue);
}

#[test]
fn one_ticket_per_registrant_and_the_same_email_gets_its_existing_ticket() {
    let mut quota = queued(&Settings::default());
    let (first, effects) = quota.apply(&keyed_join("Ana@X.org", "k1"), START);
    let Outcome::Decided(Decision::QueueJoined { new: true, view }) = first else { panic!("{first:?}") };
    assert!(matches!(effects[0].kind, EffectKind::QueueJoined { lobby: true, .. }));
    let (again, effects) = quota.apply(&keyed_join(" ana@x.org ", "k2"), START);
    assert_eq!(again, Outcome::Decided(Decision::QueueJoined { new: false, view: view.clone() }));
    assert!(effects.iter().all(|effect| matches!(effect.kind, EffectKind::DecisionRecorded { .. })));
    assert_eq!(quota.queue_summary(START).unwrap().tickets, 1);
}

#[test]
fn a_replayed_join_answers_its_first_decision_once_durable() {
    let mut quota = queued(&Settings::default());
    let first = quota.apply(&keyed_join("a@x.org", "k1"), START).0;
    assert_eq!(quota.apply(&keyed_join("a@x.org", "k1"), START).0, Outcome::KeyInFlight);
    durable(&mut quota);
    let Outcome::Decided(decision) = first else { panic!() };
    // Later, after the draw, the replay still answers what was decided then.
    assert_eq!(
        quota.apply(&keyed_join("a@x.org", "k1"), OPENS.plus_seconds(5)).0,
        Outcome::Replayed(decision)
    );
}

#[test]
fn lobby_tickets_have_no_position_until_the_draw_orders_them_by_the_seeds_hmac() {
    let settings = Settings { seats: 0, ..Settings::default() };
    let mut quota = queued(&settings);
    let tickets: Vec<TicketId> =
        (0..20).map(|n| join(&mut quota, &format!("r{n}@x.org"), START).ticket).collect();
    let lobby = view(&quota, tickets[0], START);
    assert_eq!((lobby.status, lobby.position, lobby.ahead), (TicketStatus::Lobby, None, None));
    assert_eq!(quota.drawn_lobby(), None);
    quota.apply(&Command::ExpireHolds, OPENS);
    let drawn = quota.drawn_lobby().unwrap();
    assert_eq!(drawn, expected_draw(&settings.seed, &tickets));
    for (index, ticket) in drawn.iter().enumerate() {
        let seen = view(&quota, *ticket, OPENS);
        assert_eq!(seen.position, Some(index as u32 + 1));
        assert_eq!(seen.ahead, Some(index as u32));
    }
}

#[test]
fn tickets_joining_after_the_draw_follow_the_lobby_in_the_order_they_were_decided() {
    let mut quota = queued(&Settings { seats: 0, ..Settings::default() });
    for n in 0..5 {
        join(&mut quota, &format!("lobby{n}@x.org"), START);
    }
    let later: Vec<TicketView> =
        (0..3).map(|n| join(&mut quota, &format!("late{n}@x.org"), OPENS.plus_seconds(n))).collect();
    for (n, seen) in later.iter().enumerate() {
        assert_eq!(seen.status, TicketStatus::SoldOut, "no seats at all: nothing can reach it");
        assert_eq!(seen.position, Some(6 + n as u32));
    }
    assert_eq!(quota.drawn_lobby().unwrap().len(), 5);
}

/// Chi-square test of the draw's uniformity: 4 lobby tickets have 24 orders; over 4,800 seeds
/// each order should come up about 200 times. The seeds are SHA-256 of a counter, so the test
/// is deterministic. 23 degrees of freedom: the 0.1 % critical value is 49.73.
#[test]
fn the_draw_is_uniform_over_seeds_by_a_chi_square_test() {
    const SEEDS: u32 = 4_800;
    let mut counts = std::collections::HashMap::<Vec<u64>, u32>::new();
    for n in 0..SEEDS {
        let seed: [u8; 32] = Sha256::digest(n.to_be_bytes()).into();
        let mut quota = queued(&Settings { seed, ..Settings::default() });
        for person in 0..4 {
            join(&mut quota, &format!("p{person}@x.org"), START);
        }
        quota.apply(&Command::ExpireHolds, OPENS);
        let order: Vec<u64> = quota.drawn_lobby().unwrap().iter().map(|ticket| ticket.0).collect();
        *counts.entry(order).or_default() += 1;
    }
    assert_eq!(counts.len(), 24, "every order occurs");
    let expected = f64::from(SEEDS) / 24.0;
    let chi_square: f64 =
        counts.values().map(|count| (f64::from(*count) - expected).powi(2) / expected).sum();
    assert!(chi_square < 49.73, "chi-square {chi_square:.1} says the draw is not uniform");
}

#[test]
fn admission_keeps_passes_outstanding_within_overbook_times_the_seats_available() {
    for (overbook_permille, expected) in [(1_000, 3), (1_500, 4), (2_000, 6)] {
        let mut quota = queued(&Settings { overbook_permille, ..Settings::default() });
        let tickets: Vec<TicketId> =
            (0..10).map(|n| join(&mut quota, &format!("r{n}@x.org"), START).ticket).collect();
        let (_, effects) = quota.apply(&Command::ExpireHolds, OPENS);
        let admitted =
            effects.iter().filter(|effect| matches!(effect.kind, EffectKind::QueueAdmitted { .. })).count();
        assert_eq!(admitted, expected, "overbook {overbook_permille}‰");
        assert_eq!(quota.queue_summary(OPENS).unwrap().admitted_outstanding, expected as u64);
        let admitted_in_order: Vec<TicketId> = quota.drawn_lobby().unwrap()[..expected].to_vec();
        for ticket in &tickets {
            let admitted = view(&quota, *ticket, OPENS).status == TicketStatus::Admitted;
            assert_eq!(admitted, admitted_in_order.contains(ticket), "admission is strictly in order");
        }
    }
}

#[test]
fn admission_is_paced_by_admit_per_second() {
    let mut quota =
        queued(&Settings { seats: 100, admit_per_kilosecond: Some(2_000), ..Settings::default() });
    for n in 0..50 {
        join(&mut quota, &format!("r{n}@x.org"), START);
    }
    let mut admitted_by = Vec::new();
    for tenth in 0..=50 {
        let now = OPENS.plus_millis(tenth * 100);
        quota.apply(&Command::ExpireHolds, now);
        admitted_by.push(quota.queue_summary(now).unwrap().admitted_outstanding);
    }
    // Two per second: after five seconds, about ten (the first second may catch up at once).
    let after_five_seconds = admitted_by[50];
    assert!((10..=12).contains(&after_five_seconds), "{after_five_seconds} admitted in 5 s at 2/s");
    // A paced queue has no burst to leave out: the measured rate is the paced one from its
    // first admission, before any pass has ended.
    let rate = quota.queue_summary(OPENS.plus_seconds(5)).unwrap().admission_rate.unwrap();
    assert!((1.5..=2.5).contains(&rate), "measured rate {rate} before a pass ended");
    use_first_pass(&mut quota, OPENS.plus_seconds(5));
    for tenth in 51..=150 {
        quota.apply(&Command::ExpireHolds, OPENS.plus_millis(tenth * 100));
    }
    let rate = quota.queue_summary(OPENS.plus_seconds(15)).unwrap().admission_rate.unwrap();
    assert!((1.5..=2.5).contains(&rate), "measured rate {rate}");
}

#[test]
fn a_registration_of_a_queued_event_needs_a_pass_checked_before_every_rule_but_the_window() {
    let mut quota = queued(&Settings::default());
    let ana = join(&mut quota, "ana@x.org", START).ticket;
    let bo = join(&mut quota, "bo@x.org", START).ticket;
    // Before the opening: not open, pass or no pass.
    assert!(matches!(
        decide(&mut quota, register("10K", "ana@x.org"), START),
        Outcome::Decided(Decision::NotOpen { .. })
    ));
    quota.apply(&Command::ExpireHolds, OPENS);
    assert_eq!(decide(&mut quota, register("10K", "ana@x.org"), OPENS), Outcome::QueuePassRequired);
    // Bo's pass in Ana's registration is invalid.
    assert_eq!(
        decide(&mut quota, with_pass(register("10K", "ana@x.org"), bo), OPENS),
        Outcome::QueuePassInvalid
    );
    // An unknown ticket is invalid.
    let unknown = with_pass(register("10K", "ana@x.org"), TicketId(99));
    assert_eq!(decide(&mut quota, unknown, OPENS), Outcome::QueuePassInvalid);
    // A refusal is not stored with the key: the same key with a pass is decided afresh.
    let keyed_without = keyed(register("10K", "ana@x.org"), "k", 1);
    assert_eq!(decide(&mut quota, keyed_without, OPENS), Outcome::QueuePassRequired);
    let keyed_with = with_pass(keyed(register("10K", "ana@x.org"), "k", 1), ana);
    let (outcome, effects) = quota.apply(&registration_command(keyed_with.clone()), OPENS);
    assert_eq!(outcome, Outcome::Decided(Decision::Confirmed { registration: RegistrationId(1) }));
    assert!(
        effects.iter().any(|effect| effect.kind
            == EffectKind::QueuePassUsed { ticket: ana, registration: RegistrationId(1) })
    );
    assert_eq!(view(&quota, ana, OPENS).status, TicketStatus::Used);
    durable(&mut quota);
    // Replays still replay although the pass is used.
    assert!(matches!(decide(&mut quota, keyed_with, OPENS), Outcome::Replayed(Decision::Confirmed { .. })));
    // A used pass is refused before `already_registered`.
    let again = with_pass(keyed(register("10K", "ana@x.org"), "k2", 1), ana);
    assert_eq!(decide(&mut quota, again, OPENS), Outcome::QueuePassInvalid);
}

#[test]
fn an_unused_pass_expires_after_its_ttl_and_the_next_ticket_is_admitted() {
    let mut quota = queued(&Settings { seats: 1, pass_ttl_seconds: 30, ..Settings::default() });
    let first = join(&mut quota, "a@x.org", START).ticket;
    let second = join(&mut quota, "b@x.org", START).ticket;
    quota.apply(&Command::ExpireHolds, OPENS);
    let (front, back) = match quota.drawn_lobby().unwrap()[..] {
        [front, back] => (front, back),
        _ => unreachable!("two lobby tickets"),
    };
    assert!([first, second].contains(&front));
    let admitted = view(&quota, front, OPENS);
    assert_eq!(admitted.pass_expires_at, Some(OPENS.plus_seconds(30)));
    assert_eq!(view(&quota, back, OPENS).status, TicketStatus::Waiting);
    assert!(quota.queue_work_due(OPENS.plus_seconds(30)));
    let (_, effects) = quota.apply(&Command::ExpireHolds, OPENS.plus_seconds(30));
    let kinds: Vec<&EffectKind> = effects.iter().map(|effect| &effect.kind).collect();
    assert_eq!(
        kinds,
        [
            &EffectKind::QueuePassExpired { ticket: front },
            &EffectKind::QueueAdmitted { ticket: back, pass_expires_at: OPENS.plus_seconds(60) },
        ]
    );
    assert_eq!(view(&quota, front, OPENS.plus_seconds(30)).status, TicketStatus::Expired);
    let email = if front == first { "a@x.org" } else { "b@x.org" };
    let late = with_pass(register("10K", email), front);
    assert_eq!(decide(&mut quota, late, OPENS.plus_seconds(31)), Outcome::QueuePassInvalid);
}

#[test]
fn when_no_seat_can_reach_them_waiting_tickets_read_sold_out_and_move_again_when_seats_return() {
    let mut quota = queued(&Settings { seats: 2, ..Settings::default() });
    let emails: Vec<String> = (0..6).map(|n| format!("r{n}@x.org")).collect();
    let tickets: Vec<TicketId> = emails.iter().map(|email| join(&mut quota, email, START).ticket).collect();
    quota.apply(&Command::ExpireHolds, OPENS);
    let order = quota.drawn_lobby().unwrap();
    let email_of =
        |ticket: TicketId| emails[tickets.iter().position(|known| *known == ticket).unwrap()].clone();
    decide(&mut quota, with_pass(register("10K", &email_of(order[0])), order[0]), OPENS);
    assert_eq!(view(&quota, order[2], OPENS).status, TicketStatus::Waiting, "a pass is still out");
    decide(&mut quota, with_pass(register("10K", &email_of(order[1])), order[1]), OPENS);
    for ticket in &order[2..] {
        assert_eq!(view(&quota, *ticket, OPENS).status, TicketStatus::SoldOut);
    }
    // A sold-out ticket's waitlist pass joins the waitlist, and only the waitlist.
    let seat = with_waitlist_pass(register("10K", &email_of(order[3])), order[3]);
    assert_eq!(decide(&mut quota, seat, OPENS), Outcome::QueuePassInvalid);
    let waitlist = waitlisting(with_waitlist_pass(register("10K", &email_of(order[3])), order[3]));
    assert!(matches!(decide(&mut quota, waitlist, OPENS), Outcome::Decided(Decision::Waitlisted { .. })));
    assert_eq!(view(&quota, order[3], OPENS).status, TicketStatus::Used);
    assert_eq!(view(&quota, order[4], OPENS).ahead, Some(1), "the ticket that left no longer counts");
    // Raising the capacity by two: the waitlisted registrant is promoted first, then the queue
    // moves in the same order.
    let (_, effects) = quota.apply(&Command::SetCapacity { category: code("10K"), capacity: 4 }, OPENS);
    assert!(effects.iter().any(|effect| matches!(effect.kind, EffectKind::Promoted { .. })));
    assert_eq!(view(&quota, order[2], OPENS).status, TicketStatus::Admitted);
    assert_eq!(view(&quota, order[4], OPENS).status, TicketStatus::Waiting);
    assert_eq!(view(&quota, order[4], OPENS).ahead, Some(0));
}

#[test]
fn a_full_queue_refuses_new_tickets_without_storing_the_refusal() {
    let mut quota = queued(&Settings { queue_max: 2, ..Settings::default() });
    join(&mut quota, "a@x.org", START);
    join(&mut quota, "b@x.org", START);
    assert_eq!(quota.apply(&keyed_join("c@x.org", "k"), START).0, Outcome::QueueFull);
    durable(&mut quota);
    assert_eq!(quota.apply(&keyed_join("c@x.org", "k"), START).0, Outcome::QueueFull);
    // A registrant who has a ticket still gets it.
    assert!(matches!(
        quota.apply(&join_command("a@x.org"), START).0,
        Outcome::Decided(Decision::QueueJoined { new: false, .. })
    ));
}

/// The e-mail `join_all` gave ticket `ticket`.
fn email_of(ticket: TicketId) -> String {
    format!("r{}@x.org", ticket.0 - 1)
}

/// Joins `count` registrants in the lobby (`r0@x.org` gets ticket 1, and so on).
fn join_all(quota: &mut EventQuota, count: u32) {
    for n in 0..count {
        join(quota, &format!("r{n}@x.org"), START);
    }
}

/// Registers with the pass of the first drawn ticket at `now`; it must take a seat.
fn use_first_pass(quota: &mut EventQuota, now: Timestamp) {
    let ticket = quota.drawn_lobby().unwrap()[0];
    let outcome = decide(quota, with_pass(register("10K", &email_of(ticket)), ticket), now);
    assert!(matches!(outcome, Outcome::Decided(Decision::Confirmed { .. })), "{outcome:?}");
}

fn admitted_outstanding(quota: &EventQuota, now: Timestamp) -> u64 {
    quota.queue_summary(now).unwrap().admitted_outstanding
}

#[test]
fn the_eta_divides_the_tickets_ahead_by_the_measured_admission_rate() {
    let mut quota =
        queued(&Settings { seats: 1_000, admit_per_kilosecond: Some(10_000), ..Settings::default() });
    join_all(&mut quota, 200);
    // Paced, so there is no opening burst to leave out: the rate counts from the first
    // admission, before any pass has ended (the unpaced rule has its own tests below).
    for second in 0..=10 {
        quota.apply(&Command::ExpireHolds, OPENS.plus_seconds(second));
    }
    let last = *quota.drawn_lobby().unwrap().last().unwrap();
    let now = OPENS.plus_seconds(10);
    let admitted = admitted_outstanding(&quota, now);
    let rate = quota.queue_summary(now).unwrap().admission_rate.unwrap();
    // Seconds 0 to 10 of the opening: eleven.
    assert_eq!(rate, admitted as f64 / 11.0);
    let seen = view(&quota, last, now);
    let ahead = seen.ahead.unwrap();
    assert_eq!(seen.eta_seconds, Some((f64::from(ahead) / rate).ceil() as u64));
    assert!((2..=60).contains(&seen.refresh_after_seconds));
    let front = quota.drawn_lobby().unwrap()[admitted_outstanding(&quota, now) as usize + 1];
    assert!(
        view(&quota, front, now).refresh_after_seconds <= seen.refresh_after_seconds,
        "shorter near the front"
    );
}

#[test]
fn the_opening_burst_of_passes_is_not_counted_in_the_admission_rate() {
    let mut quota = queued(&Settings { seats: 10, pass_ttl_seconds: 60, ..Settings::default() });
    join_all(&mut quota, 30);
    quota.apply(&Command::ExpireHolds, OPENS);
    assert_eq!(admitted_outstanding(&quota, OPENS), 10, "the seats' worth of passes at once");
    let last = *quota.drawn_lobby().unwrap().last().unwrap();
    // Ten admissions in the last five seconds, yet no rate: they were the opening's burst.
    let now = OPENS.plus_seconds(5);
    quota.apply(&Command::ExpireHolds, now);
    assert_eq!(quota.queue_summary(now).unwrap().admission_rate, None);
    assert_eq!(view(&quota, last, now).eta_seconds, None);
    // The first pass ends 10 s after the opening; the nine others lapse at 60 s and nine
    // tickets are admitted in their place: nine admissions over the 51 s since then.
    use_first_pass(&mut quota, OPENS.plus_seconds(10));
    assert_eq!(quota.queue_summary(OPENS.plus_seconds(10)).unwrap().admission_rate, None);
    let now = OPENS.plus_seconds(60);
    quota.apply(&Command::ExpireHolds, now);
    assert_eq!(admitted_outstanding(&quota, now), 9);
    let rate = quota.queue_summary(now).unwrap().admission_rate.unwrap();
    assert_eq!(rate, 9.0 / 51.0);
    let seen = view(&quota, last, now);
    assert_eq!(seen.eta_seconds, Some((f64::from(seen.ahead.unwrap()) / rate).ceil() as u64));
}

#[test]
fn the_admission_rate_is_measured_over_a_pass_lifetime() {
    let mut quota = queued(&Settings { seats: 10, pass_ttl_seconds: 300, ..Settings::default() });
    join_all(&mut quota, 30);
    quota.apply(&Command::ExpireHolds, OPENS);
    use_first_pass(&mut quota, OPENS.plus_seconds(1));
    // The nine other passes lapse at 300 s; nine tickets take their place at once.
    quota.apply(&Command::ExpireHolds, OPENS.plus_seconds(300));
    assert_eq!(admitted_outstanding(&quota, OPENS.plus_seconds(300)), 9);
    // Two minutes after that burst (beyond a one-minute window) it still counts, spread over
    // the pass lifetime it came back after, not over the seconds since it happened.
    for now in [OPENS.plus_seconds(300), OPENS.plus_seconds(420), OPENS.plus_seconds(599)] {
        let rate = quota.queue_summary(now).unwrap().admission_rate;
        assert_eq!(rate, Some(9.0 / 300.0), "at {now:?}");
    }
    // A pass lifetime later the window has let it go.
    assert_eq!(quota.queue_summary(OPENS.plus_seconds(600)).unwrap().admission_rate, None);
}

#[test]
fn the_admission_rate_window_is_capped_for_long_pass_lifetimes() {
    use kuota_engine::limits::ADMISSION_RATE_WINDOW_SECONDS_MAX as WINDOW;
    let pass_ttl_seconds = 7_200;
    assert!(u64::from(pass_ttl_seconds) > WINDOW, "the pass outlives the window");
    let mut quota = queued(&Settings { seats: 10, pass_ttl_seconds, ..Settings::default() });
    join_all(&mut quota, 30);
    quota.apply(&Command::ExpireHolds, OPENS);
    use_first_pass(&mut quota, OPENS.plus_seconds(1));
    let lapse = OPENS.plus_seconds(u64::from(pass_ttl_seconds));
    quota.apply(&Command::ExpireHolds, lapse);
    assert_eq!(admitted_outstanding(&quota, lapse), 9);
    for now in [lapse, lapse.plus_seconds(WINDOW - 1)] {
        let rate = quota.queue_summary(now).unwrap().admission_rate;
        assert_eq!(rate, Some(9.0 / WINDOW as f64), "at {now:?}");
    }
    assert_eq!(quota.queue_summary(lapse.plus_seconds(WINDOW)).unwrap().admission_rate, None);
}

#[test]
fn a_queue_rebuilt_from_its_stored_tickets_gives_every_ticket_its_place_back() {
    let settings = Settings { seats: 2, ..Settings::default() };
    let mut quota = queued(&settings);
    let mut records = Vec::new();
    for n in 0..8 {
        let email = format!("r{n}@x.org");
        let ticket = join(&mut quota, &email, START).ticket;
        records.push((ticket, email, true));
    }
    quota.apply(&Command::ExpireHolds, OPENS);
    for n in 0..3 {
        let email = format!("late{n}@x.org");
        let ticket = join(&mut quota, &email, OPENS.plus_seconds(1)).ticket;
        records.push((ticket, email, false));
    }
    let now = OPENS.plus_seconds(2);
    let mut builder = QuotaBuilder::new(queued_config(&settings)).unwrap();
    for (ticket, email, lobby) in &records {
        let state = match view(&quota, *ticket, now).pass_expires_at {
            Some(pass_expires_at) => StoredTicketState::Admitted { pass_expires_at },
            None => StoredTicketState::Waiting,
        };
        builder
            .add_ticket(TicketRecord {
                ticket: *ticket,
                registrant: Email::parse(email).unwrap(),
                lobby: *lobby,
                state,
                pass: None,
            })
            .unwrap();
    }
    let rebuilt = builder.finish(1, quota.last_seq()).unwrap();
    for (ticket, ..) in &records {
        assert_eq!(
            rebuilt.ticket_view(*ticket, now),
            quota.ticket_view(*ticket, now).map(|mut view| {
                // Stored without pass times, the rebuilt queue measures the rate afresh (see
                // the test on stored pass times below).
                view.eta_seconds = rebuilt.ticket_view(*ticket, now).unwrap().eta_seconds;
                view.refresh_after_seconds = rebuilt.ticket_view(*ticket, now).unwrap().refresh_after_seconds;
                view
            })
        );
    }
    assert_eq!(rebuilt.drawn_lobby(), quota.drawn_lobby());
    rebuilt.check_invariants_fully();
}

/// Applies `command` and notes, as a store would, the pass times its effects record.
fn apply_noting_passes(
    quota: &mut EventQuota,
    passes: &mut std::collections::BTreeMap<TicketId, PassTimes>,
    command: &Command,
    now: Timestamp,
) -> Outcome {
    let (outcome, effects) = quota.apply(command, now);
    for effect in effects {
        match effect.kind {
            EffectKind::QueueAdmitted { ticket, .. } => {
                passes.insert(ticket, PassTimes { granted_at: effect.at, ended_at: None });
            }
            EffectKind::QueuePassUsed { ticket, .. } | EffectKind::QueuePassExpired { ticket } => {
                passes.get_mut(&ticket).expect("an ended pass was granted").ended_at = Some(effect.at);
            }
            _ => {}
        }
    }
    outcome
}

/// The queue rebuilt at `now` from its tickets as a store keeps them: state and pass times.
fn rebuilt_with_pass_times(
    quota: &EventQuota,
    settings: &Settings,
    passes: &std::collections::BTreeMap<TicketId, PassTimes>,
    tickets: u32,
    now: Timestamp,
) -> EventQuota {
    let mut builder = QuotaBuilder::new(queued_config(settings)).unwrap();
    for number in 1..=u64::from(tickets) {
        let ticket = TicketId(number);
        let seen = view(quota, ticket, now);
        let state = match seen.status {
            TicketStatus::Admitted => {
                StoredTicketState::Admitted { pass_expires_at: seen.pass_expires_at.unwrap() }
            }
            TicketStatus::Used => StoredTicketState::Used,
            TicketStatus::Expired => StoredTicketState::Expired,
            _ => StoredTicketState::Waiting,
        };
        let record = TicketRecord {
            ticket,
            registrant: Email::parse(&email_of(ticket)).unwrap(),
            lobby: true,
            state,
            pass: passes.get(&ticket).copied(),
        };
        builder.add_ticket(record).unwrap();
    }
    let rebuilt = builder.finish(1, quota.last_seq()).unwrap();
    rebuilt.check_invariants_fully();
    rebuilt
}

/// A restarted queue measures the admission rate it measured before (from the opening's first
/// ended pass, or a paced queue's first admission, over the same window), so every waiting
/// ticket reads the same ETA at once, not null until the next pass ends.
#[test]
fn a_queue_rebuilt_from_its_stored_pass_times_measures_the_same_admission_rate() {
    let paced = Settings { seats: 10, admit_per_kilosecond: Some(500), ..Settings::default() };
    let unpaced = Settings { seats: 10, pass_ttl_seconds: 60, ..Settings::default() };
    for settings in [unpaced, paced] {
        let mut quota = queued(&settings);
        let mut passes = std::collections::BTreeMap::new();
        join_all(&mut quota, 40);
        for second in [0, 10] {
            apply_noting_passes(&mut quota, &mut passes, &Command::ExpireHolds, OPENS.plus_seconds(second));
        }
        let first = quota.drawn_lobby().unwrap()[0];
        let register_first = registration_command(with_pass(register("10K", &email_of(first)), first));
        let outcome = apply_noting_passes(&mut quota, &mut passes, &register_first, OPENS.plus_seconds(12));
        assert!(matches!(outcome, Outcome::Decided(Decision::Confirmed { .. })), "{outcome:?}");
        // Unused passes lapse, and others are admitted in their place.
        for second in [60, 61, 75, 100] {
            apply_noting_passes(&mut quota, &mut passes, &Command::ExpireHolds, OPENS.plus_seconds(second));
        }
        let restarted = OPENS.plus_seconds(100);
        let rate = quota.queue_summary(restarted).unwrap().admission_rate;
        assert!(rate.is_some(), "the scenario measures a rate");
        let rebuilt = rebuilt_with_pass_times(&quota, &settings, &passes, 40, restarted);
        for now in [restarted, OPENS.plus_seconds(130)] {
            assert_eq!(
                rebuilt.queue_summary(now).unwrap().admission_rate,
                quota.queue_summary(now).unwrap().admission_rate,
                "at {now:?}"
            );
            for number in 1..=40 {
                let ticket = TicketId(number);
                assert_eq!(
                    view(&rebuilt, ticket, now).eta_seconds,
                    view(&quota, ticket, now).eta_seconds,
                    "{ticket:?} at {now:?}"
                );
            }
        }
    }
}

#[test]
fn a_held_seat_keeps_waiting_tickets_from_sold_out_until_it_expires() {
    let mut config = queued_config(&Settings { seats: 1, ..Settings::default() });
    config.hold_ttl_seconds = 30;
    let mut quota = EventQuota::new(config).unwrap();
    let a = join(&mut quota, "a@x.org", START).ticket;
    let b = join(&mut quota, "b@x.org", START).ticket;
    quota.apply(&Command::ExpireHolds, OPENS);
    let order = quota.drawn_lobby().unwrap();
    let email = |ticket: TicketId| if ticket == a { "a@x.org" } else { "b@x.org" };
    let held = decide(&mut quota, with_pass(register("10K", email(order[0])), order[0]), OPENS);
    assert!(matches!(held, Outcome::Decided(Decision::Held { .. })));
    assert_eq!(view(&quota, order[1], OPENS).status, TicketStatus::Waiting, "the hold may lapse");
    quota.apply(&Command::ExpireHolds, OPENS.plus_seconds(30));
    assert_eq!(view(&quota, order[1], OPENS.plus_seconds(30)).status, TicketStatus::Admitted);
    assert!(matches!(quota.status_of(RegistrationId(1)), None | Some((ActiveStatus::Held { .. }, _))));
    let _ = b;
}
