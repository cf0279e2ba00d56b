use kuota_sim::invariants::{CHECK_AGREES, CHECK_CAPACITY};
use kuota_sim::model::{RunOptions, simulate};
use kuota_sim::scenario::Scenario;

use crate::support::{SMALL_SCENARIO, kuota_sim, scenario_file, stderr, stdout};

/// Exit code of a run whose invariants were violated (see `kuota_sim::cli`).
const EXIT_INVARIANT_VIOLATED: i32 = 3;

#[test]
fn the_invariant_checks_fire_on_a_deliberately_broken_model() {
    let scenario = Scenario::parse(SMALL_SCENARIO, "small").unwrap();
    let result = simulate(&scenario, 5, RunOptions { break_model: true, ..RunOptions::default() });
    assert!(result.violations.of(CHECK_CAPACITY).is_some(), "the capacity check did not fire");
    assert!(result.violations.of(CHECK_AGREES).is_some(), "the end-of-run comparison did not fire");
}

#[test]
fn a_broken_model_prints_why_and_exits_non_zero() {
    let path = scenario_file("broken_model", SMALL_SCENARIO);
    let output = kuota_sim(&["run", path.to_str().unwrap(), "--break-model"]);
    assert_eq!(output.status.code(), Some(EXIT_INVARIANT_VIOLATED), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("- VIOLATED"), "{report}");
    assert!(report.contains("confirmed +"), "the violation does not say why: {report}");
    assert!(stderr(&output).contains("invariant was violated"));
}

#[test]
fn the_plain_model_keeps_every_invariant() {
    let scenario = Scenario::parse(SMALL_SCENARIO, "small").unwrap();
    for seed in 1..=3 {
        let result = simulate(&scenario, seed, RunOptions::default());
        assert_eq!(result.violations.total, 0, "seed {seed}: {:?}", result.violations);
    }
}
