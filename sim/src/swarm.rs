//! The seed swarm: many runs of one scenario, each with a fault schedule drawn from its seed,
//! in parallel on the machine's cores, hunting for a seed that breaks an invariant (the
//! approach of FoundationDB's simulation and TigerBeetle's VOPR: the real decision logic,
//! simulated time, injected faults, invariants checked over many seeds).
//!
//! Seed number `i` of a swarm is derived from its meta-seed alone, and a seed's faults from the
//! seed alone. The seeds share crowds: each `SEEDS_PER_CROWD` seeds in a row run on the crowd
//! of the first of them (its arrivals, behaviour and service times), each with its own faults,
//! which join the crowd's run when the first of them starts (`model::simulate_forked`). So
//! `kuota-sim run SCENARIO --seed C --random-faults --fault-seed S` replays any seed `S` of any
//! swarm byte for byte, `C` being its crowd's seed. The first failing seed reported is the
//! lowest-numbered one, whatever the threads' timing: a worker takes no crowd whose first seed
//! is numbered above a failure already found.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::distribution::NormalDraw;
use crate::model::{RunOptions, RunResult, SEEDS_PER_CROWD, simulate_forked};
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

/// The seed of the crowd that seed number `index` of the swarm with `meta_seed` runs on: the
/// seed of the first of its `SEEDS_PER_CROWD`.
pub fn crowd_seed_of(meta_seed: u64, index: u64) -> u64 {
    seed_of(meta_seed, index - index % SEEDS_PER_CROWD as u64)
}

/// The run of the seed whose faults are drawn from `fault_seed` on the crowd of `crowd_seed`,
/// alone: what the swarm ran for it, and what `kuota-sim run --random-faults` reports.
pub fn replay(scenario: &Scenario, crowd_seed: u64, fault_seed: u64, options: RunOptions) -> RunResult {
    let member = with_random_faults(scenario, fault_seed);
    let mut found = None;
    simulate_forked(&member, crowd_seed, std::slice::from_ref(&member), options, |_, result| {
        found = Some(result)
    });
    found.expect("simulate_forked runs every member")
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
    /// The seed its faults were drawn from.
    pub seed: u64,
    /// The seed of the crowd it ran on (`crowd_seed_of`).
    pub crowd_seed: u64,
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
    let found = run_groups(seeds, SEEDS_PER_CROWD as u64, threads, progress, |indices| {
        let crowd_seed = crowd_seed_of(meta_seed, indices.start);
        let seeds: Vec<u64> = indices.clone().map(|index| seed_of(meta_seed, index)).collect();
        let members: Vec<Scenario> = seeds.iter().map(|seed| with_random_faults(scenario, *seed)).collect();
        let mut failures = Vec::new();
        simulate_forked(scenario, crowd_seed, &members, options, |member, result| {
            if result.violations.total == 0 {
                return;
            }
            let index = indices.start + member as u64;
            failures.push((
                index,
                Failure {
                    index,
                    seed: seeds[member],
                    crowd_seed,
                    faults: members[member].faults.clone(),
                    violations: result
                        .violations
                        .summary()
                        .into_iter()
                        .map(|(check, count, detail)| (check.to_string(), count, detail))
                        .collect(),
                },
            ));
        });
        failures
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
    run_groups(seeds, 1, threads, progress, |indices| {
        check(indices.start, seed_of(meta_seed, indices.start))
            .map(|failure| (indices.start, failure))
            .into_iter()
            .collect()
    })
}

/// Runs `check(indices)` for the seed numbers `0..seeds` in groups of `group` in a row, handed
/// out in order to `threads` threads; `check` returns the failures of its group with their
/// numbers. Once a seed fails, no group that starts above it is started, so the first failure
/// is the same whatever the threads. `progress` shows a bar on stderr.
pub(crate) fn run_groups<F: Send>(
    seeds: u64,
    group: u64,
    threads: usize,
    progress: bool,
    check: impl Fn(Range<u64>) -> Vec<(u64, F)> + Sync,
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
                    let first = next.fetch_add(1, Ordering::Relaxed).saturating_mul(group);
                    if first >= seeds || first > lowest_failure.load(Ordering::Relaxed) {
                        workers_left.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let indices = first..seeds.min(first + group);
                    let count = indices.end - indices.start;
                    let found = check(indices);
                    done.fetch_add(count, Ordering::Relaxed);
                    if let Some(lowest) = found.iter().map(|(index, _)| *index).min() {
                        lowest_failure.fetch_min(lowest, Ordering::Relaxed);
                        failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(found);
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
