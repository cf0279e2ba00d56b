//! Counters an event actor publishes after every decision, readable from any thread without a
//! message to the actor: the API answers "sold out" and `GET /v1/events/{id}` from these.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::event::{CategoryIndex, EventConfig};
use crate::ids::CategoryCode;
use crate::outcome::CategoryAvailability;
use crate::quota::EventQuota;

#[derive(Debug, Default)]
struct PublishedCategory {
    capacity: AtomicU32,
    confirmed: AtomicU32,
    held: AtomicU32,
    /// Stored on its own (not derived from the others) so that the sold-out fast path reads
    /// one atomic and never sees a torn combination of two.
    available: AtomicU32,
    waitlisted: AtomicU32,
}

/// One event's live figures. Written only by its actor; read by anyone.
#[derive(Debug)]
pub struct PublishedCounters {
    codes: Box<[CategoryCode]>,
    categories: Box<[PublishedCategory]>,
    waitlist_length_max: u32,
    /// Grows whenever a figure changes: an `ETag` and a change signal for streams.
    version: AtomicU64,
}

impl PublishedCounters {
    pub fn new(config: &EventConfig) -> Self {
        PublishedCounters {
            codes: config.categories.iter().map(|category| category.code.clone()).collect(),
            categories: config.categories.iter().map(|_| PublishedCategory::default()).collect(),
            waitlist_length_max: config.limits.waitlist_length_max,
            version: AtomicU64::new(0),
        }
    }

    /// Copies the quota's figures; bumps the version when any changed.
    pub fn publish(&self, quota: &EventQuota) {
        let mut changed = false;
        for (index, published) in self.categories.iter().enumerate() {
            let (capacity, confirmed, held, waitlisted) = quota.category_counts(index as CategoryIndex);
            let available = capacity.saturating_sub(confirmed + held);
            for (cell, value) in [
                (&published.capacity, capacity),
                (&published.confirmed, confirmed),
                (&published.held, held),
                (&published.available, available),
                (&published.waitlisted, waitlisted),
            ] {
                if cell.swap(value, Ordering::Release) != value {
                    changed = true;
                }
            }
        }
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn category(&self, code: &CategoryCode) -> Option<&PublishedCategory> {
        let index = self.codes.iter().position(|known| known == code)?;
        Some(&self.categories[index])
    }

    /// True when a registration for `code` would certainly be refused as sold out: no seat is
    /// free and (when the registrant would wait) the waitlist is full. `None` for an unknown
    /// category. A seat freed a moment ago may not show yet; then the actor decides.
    pub fn is_sold_out(&self, code: &CategoryCode, waitlist_wanted: bool) -> Option<bool> {
        let category = self.category(code)?;
        let no_seat = category.available.load(Ordering::Acquire) == 0;
        let waitlist_full = category.waitlisted.load(Ordering::Acquire) >= self.waitlist_length_max;
        Some(no_seat && (!waitlist_wanted || waitlist_full))
    }

    /// The figures of every category, in configuration order.
    pub fn snapshot(&self) -> Vec<CategoryAvailability> {
        self.codes
            .iter()
            .zip(self.categories.iter())
            .map(|(code, category)| CategoryAvailability {
                code: code.clone(),
                capacity: category.capacity.load(Ordering::Acquire),
                confirmed: category.confirmed.load(Ordering::Acquire),
                held: category.held.load(Ordering::Acquire),
                available: category.available.load(Ordering::Acquire),
                waitlisted: category.waitlisted.load(Ordering::Acquire),
            })
            .collect()
    }
}
