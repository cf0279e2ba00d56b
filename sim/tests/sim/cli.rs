use crate::support::{SMALL_SCENARIO, kuota_sim, scenario_file, stderr, stdout};

#[test]
fn the_recommendation_prints_the_table_it_searched_and_its_choice() {
    let path = scenario_file("recommendation", SMALL_SCENARIO);
    let output =
        kuota_sim(&["run", path.to_str().unwrap(), "--target-p99-ms", "60000", "--refused-share-max", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("seed=99\n"));
    assert!(text.contains("| nodes | batch size max | flush interval ms | p99 ms |"), "{text}");
    assert!(text.contains("(chosen)"), "{text}");
    assert!(text.contains("Recommended: 1 node(s)"), "{text}");
    assert!(text.contains("# kuota-sim run: small"), "the chosen run's report is missing");
}

#[test]
fn an_unreachable_target_is_reported_and_exits_1() {
    let mut scenario = SMALL_SCENARIO.to_string();
    // A round trip of a second makes any p99 under a millisecond impossible at every size.
    scenario = scenario.replacen("median_ms = 30, p99_ms = 120", "median_ms = 1000, p99_ms = 1000", 1);
    let path = scenario_file("unreachable", &scenario);
    let output = kuota_sim(&["run", path.to_str().unwrap(), "--target-p99-ms", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stdout(&output).contains("No configuration tried meets the target."));
}

#[test]
fn run_shows_its_options_in_its_usage_and_refuses_out_pointing_at_report() {
    let help = kuota_sim(&["run", "--help"]);
    let text = stdout(&help);
    assert!(text.contains("Usage: kuota-sim run SCENARIO.toml [--seed N] [--report FILE.md]"), "{text}");
    let path = scenario_file("out_flag", SMALL_SCENARIO);
    let output = kuota_sim(&["run", path.to_str().unwrap(), "--out", "x.md"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--report FILE.md"), "{}", stderr(&output));
}

#[test]
fn a_written_report_has_a_self_contained_html_page_beside_it() {
    let folder = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html_report");
    std::fs::create_dir_all(&folder).unwrap();
    let path = scenario_file("html_report", SMALL_SCENARIO);
    let report = folder.join("report.md");
    let output = kuota_sim(&["run", path.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 5, "every chart inline");
    assert!(!html.contains("src=") && !html.contains("href="), "an external asset");
    assert!(html.contains("<table>"));
    assert!(std::fs::read_to_string(report).unwrap().contains("report-opening.svg"));
}

#[test]
fn a_fault_seed_is_refused_without_random_faults_and_for_a_queued_scenario() {
    let path = scenario_file("fault_seed_alone", SMALL_SCENARIO);
    let output = kuota_sim(&["run", path.to_str().unwrap(), "--fault-seed", "5"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--random-faults"), "{}", stderr(&output));
    let queued = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/race-10k-queue.toml");
    let output = kuota_sim(&["run", queued, "--random-faults", "--fault-seed", "5", "--no-sweep"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--fault-seed"), "{}", stderr(&output));
}
