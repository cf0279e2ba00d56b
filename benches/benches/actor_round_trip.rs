//! `actor_round_trip`: register messages per second through one event actor and back, sent
//! from 2 client threads, with the in-memory store as the writer (so a round trip includes the
//! writer's acknowledgement). Run: `cargo bench -p kuota-benches --bench actor_round_trip`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kuota_benches::fixtures::{event, requests};
use kuota_engine::actor::{EventHandle, Registry, RegistryConfig};
use kuota_engine::memory::MemoryStore;
use kuota_engine::store::submission_channel;
use kuota_engine::{EventId, SystemClock};

const CLIENT_THREADS: usize = 2;
const ROUND_TRIPS_PER_ITERATION: usize = 40_000;
const IN_FLIGHT_PER_THREAD: usize = 256;
const WRITER_QUEUE_CAPACITY: usize = 16_384;

/// Starts an actix system on its own thread with a registry and one event; returns its handle.
fn start_event(capacity: u32) -> EventHandle {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let store = MemoryStore::new();
            store.create_event(event("bench", capacity));
            let (submissions, queue) = submission_channel(WRITER_QUEUE_CAPACITY);
            actix_rt::spawn(store.clone().run_writer(queue));
            let config = RegistryConfig { arbiters: 1, ..RegistryConfig::default() };
            let registry = Registry::new(config, store, submissions, Arc::new(SystemClock));
            let handle = registry.event(&EventId::parse("bench").expect("valid id")).await;
            sender.send(handle.expect("loads").expect("stored")).expect("the bench waits for it");
            // Keep the registry (and its arbiter) alive for the rest of the process.
            std::future::pending::<()>().await;
        })
    });
    receiver.recv().expect("the actor system starts")
}

fn client_thread(event: EventHandle, requests: Vec<kuota_engine::Register>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async move {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let mut chunks = requests.into_iter().peekable();
                    let mut tasks = Vec::with_capacity(IN_FLIGHT_PER_THREAD);
                    for _ in 0..IN_FLIGHT_PER_THREAD {
                        let mine: Vec<_> = chunks
                            .by_ref()
                            .take(ROUND_TRIPS_PER_ITERATION / CLIENT_THREADS / IN_FLIGHT_PER_THREAD + 1)
                            .collect();
                        let event = event.clone();
                        tasks.push(tokio::task::spawn_local(async move {
                            for request in mine {
                                event.register(request).await.expect("no overload at this depth");
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.expect("client task");
                    }
                })
                .await
        })
    })
}

fn round_trips(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("actor_round_trip");
    group.throughput(Throughput::Elements(ROUND_TRIPS_PER_ITERATION as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("register_from_2_threads", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                // A fresh event each iteration, so every request is a full decision with effects.
                let event = start_event(ROUND_TRIPS_PER_ITERATION as u32);
                let all = requests(ROUND_TRIPS_PER_ITERATION);
                let per_thread = all.len() / CLIENT_THREADS;
                let mut parts = Vec::new();
                let mut rest = all;
                for _ in 1..CLIENT_THREADS {
                    let tail = rest.split_off(per_thread);
                    parts.push(rest);
                    rest = tail;
                }
                parts.push(rest);
                let started = Instant::now();
                let threads: Vec<_> =
                    parts.into_iter().map(|part| client_thread(event.clone(), part)).collect();
                for thread in threads {
                    thread.join().expect("client thread");
                }
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
