use crate::support::{SMALL_SCENARIO, kuota_sim, scenario_file, stdout};

#[test]
fn the_same_seed_gives_a_byte_identical_report() {
    let path = scenario_file("same_seed", SMALL_SCENARIO);
    let path = path.to_str().unwrap();
    let first = kuota_sim(&["run", path, "--seed", "12345"]);
    let second = kuota_sim(&["run", path, "--seed", "12345"]);
    assert!(first.status.success(), "{}", stdout(&first));
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn a_different_seed_gives_a_different_report() {
    let path = scenario_file("different_seed", SMALL_SCENARIO);
    let path = path.to_str().unwrap();
    let first = stdout(&kuota_sim(&["run", path, "--seed", "1"]));
    let second = stdout(&kuota_sim(&["run", path, "--seed", "2"]));
    assert_ne!(first, second);
    // Beyond the seed line itself: the simulated run differs too.
    assert_ne!(first.lines().skip(1).collect::<Vec<_>>(), second.lines().skip(1).collect::<Vec<_>>());
}

#[test]
fn the_seed_is_printed_first_and_the_flag_overrides_the_scenario() {
    let path = scenario_file("seed_first", SMALL_SCENARIO);
    let path = path.to_str().unwrap();
    assert!(stdout(&kuota_sim(&["run", path])).starts_with("seed=99\n"));
    assert!(stdout(&kuota_sim(&["run", path, "--seed", "7"])).starts_with("seed=7\n"));
}

#[test]
fn a_written_report_is_identical_for_the_same_seed_and_links_its_charts() {
    let path = scenario_file("written_report", SMALL_SCENARIO);
    let folder = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("written_report");
    std::fs::create_dir_all(&folder).unwrap();
    let report = folder.join("run.md");
    let run = || {
        let output = kuota_sim(&["run", path.to_str().unwrap(), "--report", report.to_str().unwrap()]);
        assert!(output.status.success());
        std::fs::read(&report).unwrap()
    };
    let first = run();
    assert_eq!(first, run());
    let text = String::from_utf8(first).unwrap();
    for chart in ["arrivals", "queues", "latency"] {
        assert!(text.contains(&format!("(run-{chart}.svg)")), "{chart} is not linked");
        let svg = std::fs::read_to_string(folder.join(format!("run-{chart}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("seconds after opening"));
    }
}
