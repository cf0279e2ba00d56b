//! `run --target-p99-ms X`: finds the smallest node count, and the batch settings with it,
//! whose run meets the target, and shows every configuration it tried.
//!
//! A configuration meets the target when the p99 latency of every answer to a registration
//! request (503s and 429s included) is at most X, and at most `shed_share_max` of all answers
//! are 503 or 429: shedding everything is fast, but it is not meeting a target.

use std::fmt::Write;

use crate::model::{RunOptions, RunResult, simulate};
use crate::plan::number;
use crate::progress::Progress;
use crate::report::milliseconds;
use crate::scenario::{NODES_MAX, Scenario};

/// Node counts tried, from one up to this.
pub const NODES_SEARCH_MAX: u32 = 16;

/// (batch size in effects, flush interval in ms) pairs tried at each node count, from small
/// and eager to large and patient.
pub const BATCH_SETTINGS: [(u32, f64); 4] = [(32, 1.0), (128, 2.0), (512, 5.0), (2_048, 10.0)];

#[derive(Clone, Debug)]
pub struct SearchRow {
    pub nodes: u32,
    pub batch_size_max: u32,
    pub flush_interval_ms: f64,
    pub p99_us: u64,
    pub refused_share: f64,
    pub invariants_hold: bool,
    pub meets: bool,
}

#[derive(Debug)]
pub struct Search {
    pub rows: Vec<SearchRow>,
    /// The chosen row and its run, when some configuration met the target.
    pub chosen: Option<(usize, RunResult, Scenario)>,
    /// A run of some configuration broke an invariant.
    pub any_violation: bool,
}

fn candidate(scenario: &Scenario, nodes: u32, (batch_size_max, flush_interval_ms): (u32, f64)) -> Scenario {
    let mut candidate = scenario.clone();
    candidate.system.nodes = nodes;
    candidate.system.batch_size_max = batch_size_max;
    candidate.system.flush_interval_ms = flush_interval_ms;
    candidate
}

fn judge(candidate: &Scenario, result: &RunResult, target_p99_ms: f64, refused_share_max: f64) -> SearchRow {
    let metrics = &result.metrics;
    let p99_us = metrics.registration_latency.value_at_quantile(0.99);
    let answers = metrics.answers_total().max(1);
    let refused: u64 = crate::metrics::AnswerClass::ALL
        .iter()
        .filter(|class| class.asks_to_retry())
        .map(|class| metrics.count(*class))
        .sum();
    let refused_share = refused as f64 / answers as f64;
    let invariants_hold = result.violations.total == 0;
    SearchRow {
        nodes: candidate.system.nodes,
        batch_size_max: candidate.system.batch_size_max,
        flush_interval_ms: candidate.system.flush_interval_ms,
        p99_us,
        refused_share,
        invariants_hold,
        meets: invariants_hold
            && p99_us as f64 <= target_p99_ms * 1_000.0
            && refused_share <= refused_share_max,
    }
}

/// Tries node counts upwards, every batch setting at each; stops at the first node count where
/// one meets the target and picks the lowest p99 there (the first on a tie).
pub fn search(
    scenario: &Scenario,
    seed: u64,
    target_p99_ms: f64,
    refused_share_max: f64,
    options: RunOptions,
) -> Search {
    let nodes_max = NODES_SEARCH_MAX.min(NODES_MAX);
    let total = u64::from(nodes_max) * BATCH_SETTINGS.len() as u64;
    let mut progress = Progress::new(options.progress, total, "configurations");
    let quiet = RunOptions { progress: false, ..options };
    let mut search = Search { rows: Vec::new(), chosen: None, any_violation: false };
    for nodes in 1..=nodes_max {
        for setting in BATCH_SETTINGS {
            let candidate = candidate(scenario, nodes, setting);
            let result = simulate(&candidate, seed, quiet);
            let row = judge(&candidate, &result, target_p99_ms, refused_share_max);
            search.any_violation |= !row.invariants_hold;
            let better =
                search.chosen.as_ref().is_none_or(|(index, _, _)| row.p99_us < search.rows[*index].p99_us);
            if row.meets && better {
                search.chosen = Some((search.rows.len(), result, candidate));
            }
            search.rows.push(row);
            progress.update(search.rows.len() as u64);
        }
        if search.chosen.is_some() {
            break;
        }
    }
    progress.finish();
    search
}

/// The table of every configuration tried, and the verdict.
pub fn render(search: &Search, target_p99_ms: f64, refused_share_max: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Recommendation for p99 <= {} ms\n", number(target_p99_ms));
    let _ = writeln!(
        out,
        "Meets: p99 of every answer to a registration request <= {} ms, at most {}% of answers 503/429, \
         every invariant holds.\n",
        number(target_p99_ms),
        number(refused_share_max * 100.0)
    );
    let _ = writeln!(
        out,
        "| nodes | batch size max | flush interval ms | p99 ms | 503+429 | invariants | meets |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|---|");
    for (index, row) in search.rows.iter().enumerate() {
        let chosen = search.chosen.as_ref().is_some_and(|(chosen, _, _)| *chosen == index);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2}% | {} | {}{} |",
            row.nodes,
            row.batch_size_max,
            number(row.flush_interval_ms),
            milliseconds(row.p99_us),
            row.refused_share * 100.0,
            if row.invariants_hold { "ok" } else { "VIOLATED" },
            if row.meets { "yes" } else { "no" },
            if chosen { " (chosen)" } else { "" }
        );
    }
    match &search.chosen {
        Some((index, _, _)) => {
            let row = &search.rows[*index];
            let _ = writeln!(
                out,
                "\nRecommended: {} node(s), batches of at most {} effects, flush interval {} ms. Its run follows.\n",
                row.nodes,
                row.batch_size_max,
                number(row.flush_interval_ms)
            );
        }
        None => {
            let _ = writeln!(out, "\nNo configuration tried meets the target.\n");
        }
    }
    out
}
