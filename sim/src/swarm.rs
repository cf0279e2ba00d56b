//! The seed swarm: many runs of one scenario, each with a fault schedule drawn from its seed,
//! in parallel on the machine's cores, hunting for a seed that breaks an invariant (the
//! approach of FoundationDB's simulation and TigerBeetle's VOPR: the real decision logic,
//! simulated time, injected faults, invariants checked over many seeds).
//!
//! Seed number `i` of a swarm is derived from its meta-seed alone, and a seed's faults from the
//! seed alone, so `kuota-sim run SCENARIO --seed S --random-faults` replays any seed of any
//! swarm byte for byte. The first failing seed reported is the lowest-numbered one, whatever
//! the threads' timing: a worker takes no seed numbered above a failure already found.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::distribution::NormalDraw;
use crate::model::{RunOptions, simulate};
use crate::progress::Progress;
use crate::random::{Rng, SplitMix64, Stream};
use crate::scenario::{Fault, FaultKind, Scenario};

/// Seeds one swarm may run.
pub const SEEDS_MAX: u64 = 100_000_000;
/// Threads one swarm may use.
pub const THREADS_MAX: usize = 256;
/// Faults one seed's schedule has at most (at least one).
pub const FAULTS_PER_SEED_MAX: u64 = 3;
/// Shortest and longest random fault, in milliseconds: from a blip to several lease TTLs.
const FAULT_MS_MIN: u64 = 200;
const FAULT_MS_MAX: u64 = 12_000;
/// Largest latency a random `commit_latency` fault adds, in milliseconds: past the default
/// store timeout, so that some of them cut attempts short.
const EXTRA_LATENCY_MS_MAX: u64 = 3_000;
/// How often the progress bar is updated while the workers run.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Seed number `index` of the swarm with `meta_seed`: the index spread by the golden-ratio
/// increment SplitMix64 itself uses, then mixed, so that neighbouring indices give unrelated
/// seeds.
pub fn seed_of(meta_seed: u64, index: u64) -> u64 {
    SplitMix64::new(meta_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// The fault schedule of `seed`: one to `FAULTS_PER_SEED_MAX` faults of any kind, each starting
/// within the spike (the rush, where most registrants are there to be hurt and a race is
/// decided), or within the tail when the scenario has no spike.
pub fn random_faults(scenario: &Scenario, seed: u64) -> Vec<Fault> {
    let mut rng = Rng::new(seed, Stream::Faults);
    let arrivals = &scenario.arrivals;
    let window_seconds =
        if arrivals.spike_seconds > 0.0 { arrivals.spike_seconds } else { arrivals.tail_seconds };
    let window_ms = (window_seconds * 1_000.0) as u64;
    let count = 1 + rng.below(FAULTS_PER_SEED_MAX);
    (0..count)
        .map(|_| {
            let kind = FaultKind::ALL[rng.below(FaultKind::ALL.len() as u64) as usize];
            let start_ms = rng.below(window_ms.max(1));
            let duration_ms = FAULT_MS_MIN + rng.below(FAULT_MS_MAX - FAULT_MS_MIN);
            let extra_latency_ms =
                if kind == FaultKind::CommitLatency { 1 + rng.below(EXTRA_LATENCY_MS_MAX) } else { 0 };
            Fault {
                kind,
                start_seconds: start_ms as f64 / 1_000.0,
                duration_seconds: duration_ms as f64 / 1_000.0,
                extra_latency_ms: extra_latency_ms as f64,
                suite_probes: false,
            }
        })
        .collect()
}

/// `scenario` with its faults replaced by `seed`'s random schedule.
pub fn with_random_faults(scenario: &Scenario, seed: u64) -> Scenario {
    Scenario { faults: random_faults(scenario, seed), ..scenario.clone() }
}

/// A seed that broke an invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    pub index: u64,
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Each violated check with its count and first detail.
    pub violations: Vec<(String, u64, String)>,
}

/// What a swarm found.
#[derive(Debug)]
pub struct SwarmOutcome {
    /// Seeds run to the end (a failure stops the seeds numbered above it).
    pub seeds_run: u64,
    pub first_failure: Option<Failure>,
    pub elapsed: Duration,
}

/// Runs seeds `0..seeds` of `meta_seed` on `threads` threads; `options.progress` shows a bar
/// on stderr (each run's own bar is never shown).
pub fn run(
    scenario: &Scenario,
    meta_seed: u64,
    seeds: u64,
    threads: usize,
    options: RunOptions,
) -> SwarmOutcome {
    let progress = options.progress;
    // Each seed's own bar is never shown, and only its invariants are read.
    let options =
        RunOptions { progress: false, counts_only: true, normal_draw: NormalDraw::Ziggurat, ..options };
    let found = run_seeds(meta_seed, seeds, threads, progress, |index, seed| {
        let faulty = with_random_faults(scenario, seed);
        let result = simulate(&faulty, seed, options);
        (result.violations.total > 0).then(|| Failure {
            index,
            seed,
            faults: faulty.faults,
            violations: result
                .violations
                .summary()
                .into_iter()
                .map(|(check, count, detail)| (check.to_string(), count, detail))
                .collect(),
        })
    });
    SwarmOutcome { seeds_run: found.seeds_run, first_failure: found.first_failure, elapsed: found.elapsed }
}

/// What `run_seeds` found.
pub(crate) struct SeedsRun<F> {
    /// Seeds run to the end (a failure stops the seeds numbered above it).
    pub(crate) seeds_run: u64,
    /// The failure of the lowest-numbered failing seed.
    pub(crate) first_failure: Option<F>,
    pub(crate) elapsed: Duration,
}

/// Runs `check(index, seed)` for the seeds `0..seeds` of `meta_seed` on `threads` threads, the
/// seeds handed out in order; once a seed fails, no seed numbered above it is started, so the
/// first failure is the same whatever the threads. `progress` shows a bar on stderr.
pub(crate) fn run_seeds<F: Send>(
    meta_seed: u64,
    seeds: u64,
    threads: usize,
    progress: bool,
    check: impl Fn(u64, u64) -> Option<F> + Sync,
) -> SeedsRun<F> {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let workers_left = AtomicU64::new(threads.max(1) as u64);
    let lowest_failure = AtomicU64::new(u64::MAX);
    let failures: Mutex<Vec<(u64, F)>> = Mutex::new(Vec::new());
    let mut bar = Progress::new(progress, seeds, "seeds");
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= seeds || index > lowest_failure.load(Ordering::Relaxed) {
                        workers_left.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let failure = check(index, seed_of(meta_seed, index));
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Some(failure) = failure {
                        lowest_failure.fetch_min(index, Ordering::Relaxed);
                        failures
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((index, failure));
                    }
                }
            });
        }
        while workers_left.load(Ordering::Relaxed) > 0 {
            bar.update(done.load(Ordering::Relaxed));
            std::thread::sleep(PROGRESS_EVERY);
        }
    });
    bar.finish();
    let first_failure = failures
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .min_by_key(|(index, _)| *index)
        .map(|(_, failure)| failure);
    SeedsRun { seeds_run: done.into_inner(), first_failure, elapsed: started.elapsed() }
}
