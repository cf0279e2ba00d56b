//! What one registration costs the event actor's `EventQuota::apply`, by registrations stored:
//! run it in the build to be measured. `cargo run -p kuota-sim --example apply-cost` is the
//! test build (unoptimized, with debug assertions: a full recount after every apply while the
//! event is small, `quota.rs::DEBUG_FULL_CHECK_ENTRIES_MAX`), which the live fault suite runs;
//! the calibration scenarios' `actor_service` for it comes from here (docs/capacity-planning.md,
//! "Calibration"). Wall time of one thread: run it on a quiet machine, or read it as an upper
//! bound.

use std::sync::Arc;
use std::time::Instant;

use kuota_engine::{
    Command, Email, EventQuota, Fingerprint, Idempotency, IdempotencyKey, Register, RegistrationDetails,
    Timestamp,
};
use kuota_sim::scenario::Scenario;

/// Applies timed at each size.
const APPLIES: u64 = 200;

fn main() {
    let text = include_str!("../scenarios/calibration/faults-owner-crash.toml");
    let scenario = Scenario::parse(text, "faults-owner-crash").expect("the calibration scenario parses");
    let config = scenario.event_config();
    let category = config.categories[0].code.clone();
    let mut quota = EventQuota::new(config).expect("a valid event");
    let details = Arc::new(RegistrationDetails { full_name: "Ana Runner".into(), ..Default::default() });
    let now = Timestamp::from_seconds(1_800_000_000);
    let register = |quota: &mut EventQuota, n: u64| {
        let command = Command::Register(Register {
            category: category.clone(),
            registrant: Email::parse(&format!("r{n}@example.org")).expect("a valid address"),
            idempotency: Some(Idempotency {
                key: IdempotencyKey::parse(&format!("k{n}")).expect("a valid key"),
                fingerprint: Fingerprint(n),
            }),
            waitlist: false,
            details: details.clone(),
            queue_pass: None,
        });
        quota.apply(&command, now);
    };
    let mut stored = 0;
    for size in [0, 250, 500, 1_000, 2_000, 4_000] {
        while stored < size {
            register(&mut quota, stored);
            stored += 1;
        }
        let started = Instant::now();
        for _ in 0..APPLIES {
            register(&mut quota, stored);
            stored += 1;
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / APPLIES as f64;
        println!("{size} registrations stored: {micros:.0} us per apply");
    }
}
