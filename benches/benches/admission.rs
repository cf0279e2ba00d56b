//! `admission`: what the adaptive admission limit costs a registration: one permit taken and
//! released (with the system clock, the metrics handles and the window's mutex), from one
//! thread and from 2 threads at once (the HTTP workers). Run:
//! `cargo bench -p kuota-benches --bench admission`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kuota_api::admission::{AdmissionBounds, AdmissionLimiter};

const PERMITS_PER_ITERATION: u64 = 10_000;
const THREADS: usize = 2;

fn limiter() -> AdmissionLimiter {
    AdmissionLimiter::with_system_clock(AdmissionBounds::within_mailbox(
        kuota_engine::limits::MAILBOX_CAPACITY_MAX,
    ))
}

fn take_and_release(limiter: &AdmissionLimiter, count: u64) {
    for _ in 0..count {
        let _ = black_box(limiter.try_acquire().expect("one in flight at a time is below any limit"));
    }
}

fn benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("admission");
    group.throughput(Throughput::Elements(PERMITS_PER_ITERATION));
    let single = limiter();
    group.bench_function("permit, one thread", |bencher| {
        bencher.iter(|| take_and_release(&single, PERMITS_PER_ITERATION));
    });
    let shared = limiter();
    group.bench_function("permit, 2 threads at once", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..THREADS {
                        scope.spawn(|| take_and_release(&shared, PERMITS_PER_ITERATION / THREADS as u64));
                    }
                });
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(admission, benches);
criterion_main!(admission);
