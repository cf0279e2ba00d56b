//! Bytes per active registration held in the core: registers 1,000,000 registrants (each with
//! an idempotency key, as through the API) into one `EventQuota` and reads the resident set
//! before and after. Run: `cargo run --release -p kuota-benches --bin engine_memory`.

use std::sync::Arc;

use kuota_benches::fixtures::{event, request};
use kuota_benches::process::resident_bytes;
use kuota_engine::{CategoryCode, Command, EventQuota, RegistrationDetails, Timestamp};

const REGISTRATIONS: usize = 1_000_000;

fn main() {
    let now = Timestamp::from_seconds(1_800_000_000);
    let category = CategoryCode::parse("10K").expect("a valid code");
    let details = Arc::new(RegistrationDetails { full_name: "Bench Runner".into(), ..Default::default() });
    let before = resident_bytes().expect("Linux /proc is available");
    let mut quota = EventQuota::new(event("memory", REGISTRATIONS as u32)).expect("valid event");
    // Each request is built and dropped in turn, so what stays resident is what the core keeps.
    for n in 0..REGISTRATIONS {
        let command = Command::Register(request(n, &category, &details));
        let (_outcome, effects) = quota.apply(&command, now);
        drop(effects);
    }
    let last = quota.last_seq();
    quota.mark_durable(last);
    let after = resident_bytes().expect("Linux /proc is available");
    quota.check_invariants_fully();
    let per_registration = after.saturating_sub(before) as f64 / REGISTRATIONS as f64;
    println!("active registrations: {}", quota.active_registrations());
    println!("idempotency entries:  {}", quota.idempotency_entries());
    println!("resident growth:      {:.1} MiB", after.saturating_sub(before) as f64 / 1_048_576.0);
    println!("bytes per active registration (incl. its idempotency entry): {per_registration:.0}");
}
