//! The simulator's own account of what the store holds, rebuilt from the effects it commits,
//! and the checks run on it: during the run after every committed effect, and at the end
//! against the engine (`availability()`, `check_invariants_fully()`) and the clients' view.
//!
//! The account is kept apart from the engine on purpose: an invariant is checked twice, where
//! data is written (the engine's own asserts) and where it is read back (here).

use std::panic::{AssertUnwindSafe, catch_unwind};

use kuota_engine::{
    ActiveStatus, Effect, EffectKind, Email, EventConfig, EventQuota, IdempotencyRecord, QuotaBuilder,
    RegistrationId, Seq, Timestamp,
};

pub const CHECK_CAPACITY: &str = "never above capacity (store view, after every committed effect)";
pub const CHECK_ONE_ACTIVE: &str = "at most one active registration per registrant (store view)";
pub const CHECK_SEQ_ORDER: &str = "effects committed once each, in seq order";
pub const CHECK_AGREES: &str = "store view equals EventQuota::availability() at the end";
pub const CHECK_ALL_DURABLE: &str = "every decision durable at the end (durable_seq = last_seq)";
pub const CHECK_CLIENT_CAPACITY: &str = "registrants holding a 'confirmed' answer per category <= capacity";
pub const CHECK_CLIENT_ONE_ID: &str = "no registrant told two different registration ids";
pub const CHECK_ANSWERED: &str = "every request answered exactly once";
pub const CHECK_ENGINE: &str = "EventQuota::check_invariants_fully()";
pub const CHECK_ACKNOWLEDGED: &str =
    "every acknowledged registration (a 201 or 202 heard) is in the store at the end, for its registrant";
pub const CHECK_RELOAD: &str = "the store reloads after a fault (QuotaBuilder::finish accepts it)";

/// Every check, in the order the report lists them.
pub const CHECKS: [&str; 11] = [
    CHECK_CAPACITY,
    CHECK_ONE_ACTIVE,
    CHECK_SEQ_ORDER,
    CHECK_AGREES,
    CHECK_ALL_DURABLE,
    CHECK_CLIENT_CAPACITY,
    CHECK_CLIENT_ONE_ID,
    CHECK_ANSWERED,
    CHECK_ENGINE,
    CHECK_ACKNOWLEDGED,
    CHECK_RELOAD,
];

/// The domain of the simulated registrants' e-mail addresses.
const EMAIL_DOMAIN: &str = "@sim.kuota.test";

/// The e-mail address of registrant `index`.
pub fn registrant_email(index: u32) -> String {
    format!("r{index}{EMAIL_DOMAIN}")
}

/// The registrant an address of `registrant_email` belongs to: the store knows registrants by
/// e-mail only, and so does the store view. It reads the address's bytes, not its text, whose
/// UTF-8 check cost more than the rest.
pub(crate) fn registrant_of_email(email: &Email) -> Option<u32> {
    let digits = email.as_bytes().strip_prefix(b"r")?.strip_suffix(EMAIL_DOMAIN.as_bytes())?;
    // What `digits.parse::<u32>().ok()` gives for the addresses `registrant_email` makes (plain
    // decimal digits), without its sign and radix handling: the store view reads one for every
    // registration it stores.
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |number, byte| {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit < 10)?;
        number.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

/// Details kept per check; beyond this only the check's count grows.
const DETAILS_PER_CHECK_MAX: usize = 5;

/// The violations of one check: how many, and the first few in full.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckViolations {
    pub count: u64,
    pub details: Vec<String>,
}

/// Violations found so far, by check.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    by_check: Vec<(&'static str, CheckViolations)>,
    pub total: u64,
}

impl Violations {
    pub fn add(&mut self, check: &'static str, detail: String) {
        self.total += 1;
        let position = self.by_check.iter().position(|(known, _)| *known == check);
        let index = position.unwrap_or_else(|| {
            self.by_check.push((check, CheckViolations::default()));
            self.by_check.len() - 1
        });
        let found = &mut self.by_check[index].1;
        found.count += 1;
        if found.details.len() < DETAILS_PER_CHECK_MAX {
            found.details.push(detail);
        }
    }

    /// Each violated check with its count and first detail, in the order found.
    pub fn summary(&self) -> Vec<(&'static str, u64, String)> {
        self.by_check
            .iter()
            .map(|(check, found)| (*check, found.count, found.details.first().cloned().unwrap_or_default()))
            .collect()
    }

    /// The violations of `check`; `None` when it holds.
    pub fn of(&self, check: &str) -> Option<&CheckViolations> {
        self.by_check.iter().find(|(known, _)| *known == check).map(|(_, found)| found)
    }
}

/// A stored registration's status, including how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredStatus {
    Held,
    Confirmed,
    Waitlisted,
    Expired,
    Cancelled,
}

impl From<ActiveStatus> for StoredStatus {
    fn from(status: ActiveStatus) -> Self {
        match status {
            ActiveStatus::Held { .. } => StoredStatus::Held,
            ActiveStatus::Confirmed => StoredStatus::Confirmed,
            ActiveStatus::Waitlisted => StoredStatus::Waitlisted,
        }
    }
}

#[derive(Clone, Debug)]
struct Stored {
    registrant: u32,
    category: u16,
    status: StoredStatus,
    /// When a held registration's hold runs out.
    hold_expires_at: Option<Timestamp>,
    email: Email,
}

fn hold_expiry(status: ActiveStatus) -> Option<Timestamp> {
    match status {
        ActiveStatus::Held { expires_at } => Some(expires_at),
        _ => None,
    }
}

/// A registrant to tell that a waitlisted registration got a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub registrant: u32,
    pub registration: RegistrationId,
    pub status: StoredStatus,
}

/// Per-category figures: (confirmed, held, waitlisted).
pub type CategoryFigures = (u32, u32, u32);

/// What the store would hold after the effects committed so far.
#[derive(Debug)]
pub struct StoreView {
    codes: Vec<String>,
    /// The same codes parsed, for a reload's records (cloning one shares its text).
    parsed_codes: Vec<kuota_engine::CategoryCode>,
    capacity: Vec<u32>,
    figures: Vec<CategoryFigures>,
    /// Registrations by id (ids are dense from 1); `None` until their creation is committed.
    registrations: Vec<Option<Stored>>,
    /// Each registrant's active registration id, 0 for none.
    active_of: Vec<u64>,
    last_seq: Seq,
    /// Stored decisions of idempotency keys, for a reload; kept only when one may happen.
    decisions: Option<Vec<IdempotencyRecord>>,
    /// Debug only: counts every confirmation twice, so that tests can watch the checks fire.
    break_model: bool,
    pub violations: Violations,
}

/// What a finished view allocated, emptied, for the next view to grow into (a swarm runs
/// thousands of seeds on each thread; growing these again each time cost page faults).
#[derive(Debug, Default)]
pub struct StoreBuffers {
    registrations: Vec<Option<Stored>>,
    active_of: Vec<u64>,
    decisions: Vec<IdempotencyRecord>,
}

/// A forked run's clone (`model::simulate_forked`) keeps the room of the growing tables.
impl Clone for StoreView {
    fn clone(&self) -> Self {
        StoreView {
            codes: self.codes.clone(),
            parsed_codes: self.parsed_codes.clone(),
            capacity: self.capacity.clone(),
            figures: self.figures.clone(),
            registrations: crate::model::with_room(&self.registrations),
            active_of: self.active_of.clone(),
            last_seq: self.last_seq,
            decisions: self.decisions.as_ref().map(crate::model::with_room),
            break_model: self.break_model,
            violations: self.violations.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let StoreView {
            codes,
            parsed_codes,
            capacity,
            figures,
            registrations,
            active_of,
            last_seq,
            decisions,
            break_model,
            violations,
        } = source;
        self.codes.clone_from(codes);
        self.parsed_codes.clone_from(parsed_codes);
        self.capacity.clone_from(capacity);
        self.figures.clone_from(figures);
        self.registrations.clone_from(registrations);
        self.active_of.clone_from(active_of);
        self.last_seq = *last_seq;
        self.decisions.clone_from(decisions);
        self.break_model = *break_model;
        self.violations.clone_from(violations);
    }
}

impl StoreView {
    /// A view of an empty store for categories `(code, capacity)`.
    /// `keep_decisions`: keep what a reload needs (runs with faults).
    pub fn new(
        categories: Vec<(String, u32)>,
        registrants: usize,
        break_model: bool,
        keep_decisions: bool,
    ) -> Self {
        StoreView::with_buffers(categories, registrants, break_model, keep_decisions, StoreBuffers::default())
    }

    /// `new`, growing into `buffers`.
    pub fn with_buffers(
        categories: Vec<(String, u32)>,
        registrants: usize,
        break_model: bool,
        keep_decisions: bool,
        buffers: StoreBuffers,
    ) -> Self {
        let StoreBuffers { mut registrations, mut active_of, mut decisions } = buffers;
        registrations.clear();
        active_of.clear();
        active_of.resize(registrants, 0);
        decisions.clear();
        let (codes, capacity): (Vec<String>, Vec<u32>) = categories.into_iter().unzip();
        let parsed_codes = codes
            .iter()
            .map(|code| {
                kuota_engine::CategoryCode::parse(code).expect("the codes came from a validated event")
            })
            .collect();
        StoreView {
            codes,
            parsed_codes,
            figures: vec![(0, 0, 0); capacity.len()],
            capacity,
            registrations,
            active_of,
            last_seq: Seq(0),
            decisions: keep_decisions.then_some(decisions),
            break_model,
            violations: Violations::default(),
        }
    }

    /// The buffers, for another view.
    pub fn into_buffers(self) -> StoreBuffers {
        StoreBuffers {
            registrations: self.registrations,
            active_of: self.active_of,
            decisions: self.decisions.unwrap_or_default(),
        }
    }

    /// The registrant of a stored registration.
    pub fn registrant_of(&self, registration: RegistrationId) -> Option<u32> {
        self.registrations.get(registration.0 as usize)?.as_ref().map(|stored| stored.registrant)
    }

    /// What recovery would load: the event rebuilt from the stored rows with `QuotaBuilder`,
    /// as `SqlStore::load_event` does (active registrations, decided keys, the highest number
    /// and seq stored). An `Err` is what `QuotaBuilder` refused, or the panic of its check.
    /// `spare`: a quota done with, whose tables the rebuilt one grows into.
    pub fn rebuild(&self, config: EventConfig, spare: Option<EventQuota>) -> Result<EventQuota, String> {
        let builder = match spare {
            Some(spare) => QuotaBuilder::new_reusing(config, spare),
            None => QuotaBuilder::new(config),
        };
        let mut builder = builder.map_err(|error| error.to_string())?;
        builder.reserve_idempotency(self.decisions.as_ref().map_or(0, Vec::len));
        for (number, stored) in self.registrations.iter().enumerate() {
            let Some(stored) = stored else { continue };
            let status = match stored.status {
                StoredStatus::Confirmed => ActiveStatus::Confirmed,
                StoredStatus::Waitlisted => ActiveStatus::Waitlisted,
                StoredStatus::Held => ActiveStatus::Held {
                    expires_at: stored
                        .hold_expires_at
                        .expect("a held registration is stored with its expiry"),
                },
                StoredStatus::Expired | StoredStatus::Cancelled => continue,
            };
            // Borrowed, not cloned: a clone would touch each e-mail's shared text, a cache miss
            // per registration.
            let category = &self.parsed_codes[usize::from(stored.category)];
            builder
                .add_registration_of(RegistrationId(number as u64), category, &stored.email, status)
                .map_err(|error| error.to_string())?;
        }
        for record in self.decisions.iter().flatten() {
            builder.add_idempotency_of(record);
        }
        let next_registration = self.registrations.len().max(1) as u64;
        // `finish` checks every invariant and panics on a broken one; report it instead.
        catch_unwind(AssertUnwindSafe(|| builder.finish(next_registration, self.last_seq)))
            .map_err(panic_message)?
            .map_err(|error| error.to_string())
    }

    pub fn figures(&self) -> &[CategoryFigures] {
        &self.figures
    }

    pub fn status_of(&self, registration: RegistrationId) -> Option<StoredStatus> {
        self.registrations.get(registration.0 as usize)?.as_ref().map(|stored| stored.status)
    }

    /// Registrations held, confirmed or waitlisted: what a load reads.
    pub fn active_registrations(&self) -> u64 {
        self.figures
            .iter()
            .map(|(confirmed, held, waitlisted)| u64::from(confirmed + held + waitlisted))
            .sum()
    }

    /// Applies one committed effect; returns a promotion to announce, if it was one.
    pub fn apply(&mut self, effect: &Effect) -> Option<Promotion> {
        if effect.seq <= self.last_seq {
            let detail = format!("effect {:?} committed after {:?}", effect.seq, self.last_seq);
            self.violations.add(CHECK_SEQ_ORDER, detail);
        }
        self.last_seq = self.last_seq.max(effect.seq);
        if let Some(decisions) = &mut self.decisions {
            let decided = match &effect.kind {
                EffectKind::Created { idempotency: Some(idempotency), .. } => {
                    effect.kind.decision().map(|decision| (idempotency, decision))
                }
                EffectKind::DecisionRecorded { idempotency, decision } => {
                    Some((idempotency, decision.clone()))
                }
                _ => None,
            };
            if let Some((idempotency, decision)) = decided {
                decisions.push(IdempotencyRecord {
                    key: idempotency.key.clone(),
                    fingerprint: idempotency.fingerprint,
                    decision,
                    decided_at: effect.at,
                });
            }
        }
        match &effect.kind {
            EffectKind::Created { registration, category, status, registrant, .. } => {
                let new = Stored {
                    registrant: registrant_of_email(registrant).unwrap_or(u32::MAX),
                    category: *category,
                    status: StoredStatus::from(*status),
                    hold_expires_at: hold_expiry(*status),
                    email: registrant.clone(),
                };
                self.create(*registration, new, effect.seq);
                None
            }
            EffectKind::Confirmed { registration } => {
                self.change(*registration, StoredStatus::Confirmed, effect.seq);
                None
            }
            EffectKind::Cancelled { registration } => {
                self.change(*registration, StoredStatus::Cancelled, effect.seq);
                None
            }
            EffectKind::Expired { registration } => {
                self.change(*registration, StoredStatus::Expired, effect.seq);
                None
            }
            EffectKind::Promoted { registration, status } => {
                if let Some(Some(stored)) = self.registrations.get_mut(registration.0 as usize) {
                    stored.hold_expires_at = hold_expiry(*status);
                }
                let status = StoredStatus::from(*status);
                let registrant = self.change(*registration, status, effect.seq)?;
                Some(Promotion { registrant, registration: *registration, status })
            }
            EffectKind::DecisionRecorded { .. } | EffectKind::CapacityChanged { .. } => None,
            // Simulated events have no queue (yet): these effects never come.
            EffectKind::QueueJoined { .. }
            | EffectKind::QueueAdmitted { .. }
            | EffectKind::QueuePassExpired { .. }
            | EffectKind::QueuePassUsed { .. } => None,
        }
    }

    fn create(&mut self, registration: RegistrationId, stored: Stored, seq: Seq) {
        let index = registration.0 as usize;
        let (registrant, category, status) = (stored.registrant, stored.category, stored.status);
        if self.registrations.get(index).is_some_and(Option::is_some) {
            let detail = format!("registration {registration} is created a second time at {seq:?}");
            self.violations.add(CHECK_SEQ_ORDER, detail);
        }
        let Some(active) = self.active_of.get_mut(registrant as usize) else {
            let detail = format!("registration {registration} was created for an unknown registrant");
            return self.violations.add(CHECK_ONE_ACTIVE, detail);
        };
        if *active != 0 {
            let detail = format!(
                "registrant {registrant} got registration {registration} at {seq:?} while {} is active",
                *active
            );
            self.violations.add(CHECK_ONE_ACTIVE, detail);
        }
        *active = registration.0;
        if index == self.registrations.len() {
            // Registrations are numbered densely: the next one is the usual case.
            self.registrations.push(None);
        } else if index > self.registrations.len() {
            self.registrations.resize(index + 1, None);
        }
        self.registrations[index] = Some(stored);
        self.count(category, status, 1);
        self.check_capacity(category, seq);
    }

    /// Moves a registration to `status`; returns its registrant.
    fn change(&mut self, registration: RegistrationId, status: StoredStatus, seq: Seq) -> Option<u32> {
        let slot = self.registrations.get_mut(registration.0 as usize).and_then(Option::as_mut);
        let Some(stored) = slot else {
            let detail =
                format!("{seq:?} changes registration {registration}, which the store does not have");
            self.violations.add(CHECK_SEQ_ORDER, detail);
            return None;
        };
        let (category, previous, registrant) = (stored.category, stored.status, stored.registrant);
        if matches!(previous, StoredStatus::Expired | StoredStatus::Cancelled) {
            let detail = format!("{seq:?} changes registration {registration}, which had ended");
            self.violations.add(CHECK_SEQ_ORDER, detail);
            return None;
        }
        stored.status = status;
        self.count(category, previous, -1);
        self.count(category, status, 1);
        if matches!(status, StoredStatus::Expired | StoredStatus::Cancelled) {
            self.active_of[registrant as usize] = 0;
        }
        self.check_capacity(category, seq);
        Some(registrant)
    }

    fn count(&mut self, category: u16, status: StoredStatus, delta: i64) {
        let figures = &mut self.figures[usize::from(category)];
        let cell = match status {
            StoredStatus::Confirmed => &mut figures.0,
            StoredStatus::Held => &mut figures.1,
            StoredStatus::Waitlisted => &mut figures.2,
            StoredStatus::Expired | StoredStatus::Cancelled => return,
        };
        // The deliberately broken model counts a confirmation twice (see `break_model`).
        let delta =
            if self.break_model && status == StoredStatus::Confirmed && delta > 0 { 2 } else { delta };
        *cell = (i64::from(*cell) + delta).max(0) as u32;
    }

    fn check_capacity(&mut self, category: u16, seq: Seq) {
        let (confirmed, held, _) = self.figures[usize::from(category)];
        let capacity = self.capacity[usize::from(category)];
        if confirmed + held > capacity {
            let detail = format!(
                "category {} takes {} seats ({confirmed} confirmed + {held} held) of {capacity} after {seq:?}",
                self.codes[usize::from(category)],
                confirmed + held
            );
            self.violations.add(CHECK_CAPACITY, detail);
        }
    }

    /// Compares with the engine's figures and runs its full recount; adds what disagrees.
    pub fn check_against_engine(&mut self, quota: &EventQuota) {
        for (index, availability) in quota.availability().iter().enumerate() {
            let engine = (availability.confirmed, availability.held, availability.waitlisted);
            if self.figures[index] != engine {
                let detail = format!(
                    "category {}: store view (confirmed, held, waitlisted) = {:?}, engine = {engine:?}",
                    availability.code, self.figures[index]
                );
                self.violations.add(CHECK_AGREES, detail);
            }
        }
        if quota.durable_seq() != quota.last_seq() {
            let detail = format!("durable {:?}, last {:?}", quota.durable_seq(), quota.last_seq());
            self.violations.add(CHECK_ALL_DURABLE, detail);
        }
        if let Err(reason) = full_engine_check(quota) {
            self.violations.add(CHECK_ENGINE, reason);
        }
    }
}

/// Runs `check_invariants_fully`, which panics on a broken invariant, and returns the panic's
/// message instead (the default hook has also printed it to stderr).
fn full_engine_check(quota: &EventQuota) -> Result<(), String> {
    // The quota is only read, so nothing half-changed can be observed after a panic.
    catch_unwind(AssertUnwindSafe(|| quota.check_invariants_fully())).map_err(panic_message)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "the engine's invariant check panicked".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registrants_number_is_read_back_from_their_address() {
        for index in [0, 7, 10, 12_345, u32::MAX] {
            assert_eq!(registrant_of_email(&Email::parse(&registrant_email(index)).unwrap()), Some(index));
        }
        for other in [
            "r@sim.kuota.test",
            "rx1@sim.kuota.test",
            "r4294967296@sim.kuota.test",
            "r1@other.test",
            "q1@sim.kuota.test",
        ] {
            assert_eq!(registrant_of_email(&Email::parse(other).unwrap()), None, "{other}");
        }
    }
}
