//! The swarm over queued scenarios: each seed draws its own queue settings (`overbook`,
//! `pass_ttl_seconds`, abandonment) and owner restarts, runs `model::queue`, and has its
//! queue invariants checked (admission within ⌊overbook × seats available⌋, no registration
//! without the registrant's pass, no registrant twice, never above capacity, admissions in the
//! committed seed's draw order, the rebuild after each restart). As in `swarm`, seed number `i`
//! comes from the meta-seed alone, a seed's draw from the seed alone, `kuota-sim run SCENARIO
//! --seed S --random-faults` replays it, and the lowest failing seed is the one reported.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::model::queue::{QueueRunOptions, panic_text, simulate_queue};
use crate::random::{Rng, Stream};
use crate::scenario::{QueueSection, Scenario};
use crate::swarm::run_seeds;

/// The check a seed fails when its run panics.
pub const CHECK_NO_PANIC: &str = "the run ends without a panic";

/// Owner restarts one seed has at most.
pub const RESTARTS_PER_SEED_MAX: u64 = 3;
/// The largest `overbook` a seed draws, in thousandths (the engine allows up to 10.0; above
/// 3.0 admissions are rarely bounded by anything but the crowd).
const OVERBOOK_PERMILLE_DRAWN_MAX: u64 = 3_000;
/// The `pass_ttl_seconds` a seed draws lie in this range (the engine's lower bound is 10 s).
const PASS_TTL_SECONDS_DRAWN: (u64, u64) = (10, 900);
/// `scenario` with its queue settings and restarts replaced by `seed`'s draw: overbook from
/// 1.0 to 3.0, a pass TTL from 10 to 900 s, up to half the crowd abandoning, and one to
/// `RESTARTS_PER_SEED_MAX` restarts of the owner from opening to the end of the arrivals.
pub fn with_random_queue_faults(scenario: &Scenario, seed: u64) -> Scenario {
    let queue = scenario.queue.as_ref().expect("a queued scenario");
    let mut rng = Rng::new(seed, Stream::Faults);
    let overbook_permille = 1_000 + rng.below(OVERBOOK_PERMILLE_DRAWN_MAX - 1_000 + 1);
    let (ttl_low, ttl_high) = PASS_TTL_SECONDS_DRAWN;
    let pass_ttl_seconds = (ttl_low + rng.below(ttl_high - ttl_low + 1)) as u32;
    let abandon_share = rng.unit() / 2.0;
    let window_ms =
        ((scenario.arrivals.spike_seconds + scenario.arrivals.tail_seconds) * 1_000.0).max(1_000.0) as u64;
    let count = 1 + rng.below(RESTARTS_PER_SEED_MAX);
    let restarts_seconds = (0..count).map(|_| rng.below(window_ms) as f64 / 1_000.0).collect();
    Scenario {
        queue: Some(QueueSection {
            overbook: overbook_permille as f64 / 1_000.0,
            pass_ttl_seconds,
            abandon_share,
            restarts_seconds,
            ..queue.clone()
        }),
        ..scenario.clone()
    }
}

/// A seed that broke a queue invariant.
#[derive(Clone, Debug)]
pub struct QueueFailure {
    pub index: u64,
    pub seed: u64,
    /// The seed's drawn settings and restarts, in one line.
    pub drawn: String,
    pub violations: Vec<(String, u64, String)>,
}

#[derive(Debug)]
pub struct QueueSwarmOutcome {
    pub seeds_run: u64,
    pub first_failure: Option<QueueFailure>,
    pub elapsed: Duration,
}

fn describe(queue: &QueueSection) -> String {
    let restarts: Vec<String> = queue.restarts_seconds.iter().map(|at| format!("{at} s")).collect();
    format!(
        "overbook {}, pass_ttl_seconds {}, abandon_share {:.3}, restarts at {}",
        queue.overbook,
        queue.pass_ttl_seconds,
        queue.abandon_share,
        restarts.join(", ")
    )
}

/// Runs seeds `0..seeds` of `meta_seed` on `threads` threads.
pub fn run(
    scenario: &Scenario,
    meta_seed: u64,
    seeds: u64,
    threads: usize,
    options: QueueRunOptions,
    progress: bool,
) -> QueueSwarmOutcome {
    let found = run_seeds(meta_seed, seeds, threads, progress, |index, seed| {
        let drawn = with_random_queue_faults(scenario, seed);
        // A panic (an engine assertion) is a failure of its seed, never a lost worker.
        let run = catch_unwind(AssertUnwindSafe(|| simulate_queue(&drawn, seed, options)));
        let violations: Vec<(String, u64, String)> = match run {
            Ok(result) => result
                .violations
                .summary()
                .into_iter()
                .map(|(check, count, detail)| (check.to_string(), count, detail))
                .collect(),
            Err(panic) => vec![(CHECK_NO_PANIC.to_string(), 1, panic_text(&panic))],
        };
        (!violations.is_empty()).then(|| {
            let queue = drawn.queue.as_ref().expect("a queued scenario");
            QueueFailure { index, seed, drawn: describe(queue), violations }
        })
    });
    QueueSwarmOutcome {
        seeds_run: found.seeds_run,
        first_failure: found.first_failure,
        elapsed: found.elapsed,
    }
}
