//! Events and requests for benchmarks, built the same way in every bench.

use std::sync::Arc;

use kuota_engine::{
    CategoryCode, CategoryConfig, Email, EventConfig, EventId, Fingerprint, Idempotency, IdempotencyKey,
    QuotaLimits, Register, RegistrationDetails,
};

/// An event with one category, `10K`, of `capacity` seats, confirming at once.
pub fn event(id: &str, capacity: u32) -> EventConfig {
    event_with_categories(id, &[("10K", capacity)])
}

/// An event with these (code, capacity) categories, confirming at once.
pub fn event_with_categories(id: &str, categories: &[(&str, u32)]) -> EventConfig {
    EventConfig {
        id: EventId::parse(id).expect("bench event ids are valid"),
        name: "Bench Race".into(),
        opens_at: None,
        closes_at: None,
        hold_ttl_seconds: 0,
        categories: categories
            .iter()
            .map(|(code, capacity)| CategoryConfig {
                code: CategoryCode::parse(code).expect("bench codes are valid"),
                name: (*code).into(),
                capacity: *capacity,
            })
            .collect(),
        limits: QuotaLimits::default(),
        queue: None,
    }
}

/// `count` registration requests from distinct registrants, each with its own idempotency key
/// (as every API request has one).
pub fn requests(count: usize) -> Vec<Register> {
    let category = CategoryCode::parse("10K").expect("a valid code");
    let details = Arc::new(RegistrationDetails { full_name: "Bench Runner".into(), ..Default::default() });
    (0..count).map(|n| request(n, &category, &details)).collect()
}

/// Request number `n`: registrant `runner<n>@example.org` with a UUID-shaped key.
pub fn request(n: usize, category: &CategoryCode, details: &Arc<RegistrationDetails>) -> Register {
    Register {
        category: category.clone(),
        registrant: Email::parse(&format!("runner{n}@example.org")).expect("a valid e-mail"),
        idempotency: Some(Idempotency {
            key: IdempotencyKey::parse(&format!("0b6a5f1e-{n:08x}-4c1d-9a7e-3f2b8c9d1e0a"))
                .expect("a valid key"),
            fingerprint: Fingerprint(n as u64),
        }),
        waitlist: false,
        details: details.clone(),
        queue_pass: None,
    }
}
