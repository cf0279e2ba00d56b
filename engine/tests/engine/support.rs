//! Builders shared by the engine's tests.

use std::sync::Arc;

use kuota_engine::{
    CategoryCode, CategoryConfig, Command, Email, EventConfig, EventId, EventQuota, Fingerprint, Idempotency,
    IdempotencyKey, QuotaLimits, Register, RegistrationDetails, Timestamp,
};

/// A fixed "now" far from zero, so that opening and closing times can lie on both sides.
pub const START: Timestamp = Timestamp::from_seconds(1_800_000_000);

pub fn event_config(categories: &[(&str, u32)], hold_ttl_seconds: u32) -> EventConfig {
    EventConfig {
        id: EventId::parse("race").unwrap(),
        name: "City Race".into(),
        opens_at: None,
        closes_at: None,
        hold_ttl_seconds,
        categories: categories
            .iter()
            .map(|(code, capacity)| CategoryConfig {
                code: CategoryCode::parse(code).unwrap(),
                name: format!("{code} run"),
                capacity: *capacity,
            })
            .collect(),
        limits: QuotaLimits::default(),
        queue: None,
    }
}

pub fn quota(categories: &[(&str, u32)], hold_ttl_seconds: u32) -> EventQuota {
    EventQuota::new(event_config(categories, hold_ttl_seconds)).unwrap()
}

pub fn register(category: &str, email: &str) -> Register {
    Register {
        category: CategoryCode::parse(category).unwrap(),
        registrant: Email::parse(email).unwrap(),
        idempotency: None,
        waitlist: false,
        details: Arc::new(RegistrationDetails { full_name: "Ana Runner".into(), ..Default::default() }),
        queue_pass: None,
    }
}

pub fn keyed(mut request: Register, key: &str, fingerprint: u64) -> Register {
    request.idempotency =
        Some(Idempotency { key: IdempotencyKey::parse(key).unwrap(), fingerprint: Fingerprint(fingerprint) });
    request
}

pub fn waitlisting(mut request: Register) -> Register {
    request.waitlist = true;
    request
}

pub fn registration_command(request: Register) -> Command {
    Command::Register(request)
}

pub fn code(text: &str) -> CategoryCode {
    CategoryCode::parse(text).unwrap()
}
