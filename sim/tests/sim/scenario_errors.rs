use kuota_sim::scenario::{Scenario, ScenarioError};

use crate::support::{SMALL_SCENARIO, kuota_sim, scenario_file, stderr};

/// The small scenario with `capacity` misspelt on its line 11 (the text starts with a newline).
fn misspelt() -> String {
    let text = SMALL_SCENARIO.replacen("capacity = 60", "capcity = 60", 1);
    let line = text.lines().position(|line| line.starts_with("capcity")).unwrap() + 1;
    assert_eq!(line, 11, "the test expects the typo on line 11");
    text
}

#[test]
fn a_parse_error_names_the_line_and_shows_it() {
    let Err(ScenarioError::Parse { message, .. }) = Scenario::parse(&misspelt(), "typo.toml") else {
        panic!("a misspelt key was accepted");
    };
    assert!(message.contains("line 11"), "{message}");
    assert!(message.contains("capcity = 60"), "{message}");
    assert!(message.contains("unknown field `capcity`"), "{message}");
}

#[test]
fn the_command_line_shows_the_parse_error_with_its_line_and_exits_2() {
    let path = scenario_file("parse_error", &misspelt());
    let output = kuota_sim(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("parse_error.toml"), "{message}");
    assert!(message.contains("line 11"), "{message}");
}

#[test]
fn broken_toml_syntax_names_its_line() {
    let text = SMALL_SCENARIO.replacen("seed = 99", "seed = = 99", 1);
    let message = Scenario::parse(&text, "syntax.toml").unwrap_err().to_string();
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn a_validation_error_names_the_field() {
    let cases = [
        ("spike_share = 0.8", "spike_share = 1.8", "arrivals.spike_share"),
        ("nodes = 2", "nodes = 0", "system.nodes"),
        ("code = \"21K\"", "code = \"21 K\"", "event.categories[1].code"),
        ("p99_ms = 12", "p99_ms = 1", "system.http_service"),
        ("patience_ms = 300", "patience_ms = 0", "behaviour.patience_ms"),
    ];
    for (from, to, field) in cases {
        let text = SMALL_SCENARIO.replacen(from, to, 1);
        match Scenario::parse(&text, "invalid.toml") {
            Err(ScenarioError::Invalid { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{to}: expected an error naming {field}, got {other:?}"),
        }
    }
}

#[test]
fn the_example_scenarios_are_valid() {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    for name in ["race-10k", "campus-login-storm", "million-day"] {
        let path = std::path::Path::new(folder).join(format!("{name}.toml"));
        let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(scenario.name, name);
    }
}

#[test]
fn the_calibration_scenarios_are_valid_and_named_after_their_files() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/calibration");
    let mut found = 0;
    for entry in std::fs::read_dir(&folder).expect("sim/scenarios/calibration exists") {
        let path = entry.expect("a readable folder entry").path();
        let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
        let stem = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or_default();
        assert_eq!(scenario.name, format!("calibration-{stem}"));
        found += 1;
    }
    assert!(found >= 5, "the calibration scenarios are missing");
}
