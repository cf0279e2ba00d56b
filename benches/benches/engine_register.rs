//! `engine_register`: decisions per second of the pure core, on one hot event and spread over
//! 10,000 events. Every request has a distinct registrant and an idempotency key, as through
//! the API. Run: `cargo bench -p kuota-benches --bench engine_register`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kuota_benches::fixtures::{event, requests};
use kuota_engine::{Command, EventQuota, Timestamp};

const DECISIONS_PER_ITERATION: usize = 100_000;
const EVENTS: usize = 10_000;
const NOW: Timestamp = Timestamp::from_seconds(1_800_000_000);

fn one_hot_event(criterion: &mut Criterion) {
    let commands: Vec<Command> =
        requests(DECISIONS_PER_ITERATION).into_iter().map(Command::Register).collect();
    let mut group = criterion.benchmark_group("engine_register");
    group.throughput(Throughput::Elements(DECISIONS_PER_ITERATION as u64));
    group.measurement_time(Duration::from_secs(8));
    // Half the requests find a seat and half are sold out, as in a flash crowd.
    group.bench_function("one_hot_event", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let mut quota =
                    EventQuota::new(event("hot", (DECISIONS_PER_ITERATION / 2) as u32)).expect("valid event");
                let started = Instant::now();
                for command in &commands {
                    black_box(quota.apply(command, NOW));
                }
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.bench_function("ten_thousand_events", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let mut quotas: Vec<EventQuota> = (0..EVENTS)
                    .map(|n| EventQuota::new(event(&format!("e{n}"), 5)).expect("valid event"))
                    .collect();
                let started = Instant::now();
                for (n, command) in commands.iter().enumerate() {
                    black_box(quotas[n % EVENTS].apply(command, NOW));
                }
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, one_hot_event);
criterion_main!(benches);
