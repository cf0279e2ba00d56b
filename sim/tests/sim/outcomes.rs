use kuota_sim::metrics::{AnswerClass, FinalState};
use kuota_sim::model::{RunOptions, simulate};
use kuota_sim::scenario::Scenario;

use crate::support::SMALL_SCENARIO;

fn small_run() -> (Scenario, kuota_sim::model::RunResult) {
    let scenario = Scenario::parse(SMALL_SCENARIO, "small").unwrap();
    let result = simulate(&scenario, 11, RunOptions::default());
    (scenario, result)
}

#[test]
fn every_request_gets_exactly_one_answer_and_the_answers_add_up_to_the_requests() {
    let (_, result) = small_run();
    let metrics = &result.metrics;
    let by_class: u64 = AnswerClass::ALL.iter().map(|class| metrics.count(*class)).sum();
    assert_eq!(by_class, metrics.requests_sent);
    assert!(metrics.requests_sent > 400, "retries and payments add requests to the 400 first presses");
}

#[test]
fn every_registrant_ends_in_exactly_one_final_state() {
    let (scenario, result) = small_run();
    let total: u64 = FinalState::ALL.iter().map(|state| result.final_count(*state)).sum();
    assert_eq!(total, u64::from(scenario.arrivals.registrants));
}

#[test]
fn confirmed_and_held_seats_never_exceed_capacity() {
    let (scenario, result) = small_run();
    for (category, config) in result.availability.iter().zip(&scenario.event.categories) {
        assert!(category.confirmed + category.held <= config.capacity, "{category:?}");
    }
    let confirmed: u32 = result.availability.iter().map(|category| category.confirmed).sum();
    assert_eq!(result.final_count(FinalState::Confirmed), u64::from(confirmed));
    assert!(confirmed <= 100);
}

#[test]
fn the_small_scenario_exercises_shedding_retries_holds_and_the_waitlist() {
    let (_, result) = small_run();
    let metrics = &result.metrics;
    let shed: u64 =
        AnswerClass::ALL.iter().filter(|class| class.is_shed()).map(|class| metrics.count(*class)).sum();
    assert!(shed > 0, "nothing was shed");
    assert!(metrics.count(AnswerClass::Held) > 0);
    assert!(metrics.count(AnswerClass::Waitlisted) > 0);
    assert!(metrics.count(AnswerClass::SoldOutFastPath) > 0);
    assert!(metrics.count(AnswerClass::PaymentConfirmed) > 0);
    assert!(metrics.effects.expired > 0, "no hold expired");
    assert!(metrics.effects.promoted > 0, "nobody was promoted from a waitlist");
    assert!(metrics.sold_out_at.is_some());
}
