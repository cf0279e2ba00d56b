//! Counters an event actor publishes after every decision, readable from any thread without a
//! message to the actor: the API answers "sold out" and `GET /v1/events/{id}` from these.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::clock::Timestamp;
use crate::effect::{Effect, EffectKind};
use crate::event::{CategoryIndex, EventConfig};
use crate::ids::{CategoryCode, IdempotencyKey};
use crate::outcome::CategoryAvailability;
use crate::queue::{Queue, StoredTicketState, TicketFacts, TicketId, TicketView};
use crate::quota::{EventQuota, QueueSummary};

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
    /// A Bloom filter of the idempotency keys the actor has seen. The sold-out fast path may
    /// only answer a request whose key was never decided: a retry of a request that got a
    /// seat must get its seat back (a replay), not "sold out". A false positive merely sends
    /// the request to the actor; there are no false negatives.
    keys_seen: Box<[AtomicU64]>,
    queue: PublishedQueue,
    tickets: PublishedTickets,
}

/// A queued event's figures (all zero without a queue).
#[derive(Debug, Default)]
struct PublishedQueue {
    drawn: AtomicBool,
    waiting: AtomicU64,
    admitted_outstanding: AtomicU64,
    /// `f64` bits of admissions per second; `NO_RATE` while none is known.
    admission_rate_bits: AtomicU64,
    tickets: AtomicU64,
}

/// Every ticket of a queued event as its actor last saw it, so that `GET /v1/queue/{ticket_id}`
/// (the crowd's polling) is answered without a message to the actor.
///
/// Tickets sit in chunks of `TICKETS_PER_CHUNK`, allocated by the actor as tickets are added;
/// the chunk table is sized once from `queue_max`, so that a reader never races a reallocation.
#[derive(Debug, Default)]
struct PublishedTickets {
    chunks: Box<[OnceLock<Box<[PublishedTicket]>>]>,
    /// `Queue::cursor` and the size of `Queue::left_early`: with nobody having left the line
    /// early (the common case), a ticket's `ahead` is its index less the cursor.
    cursor: AtomicU64,
    left_early: AtomicU64,
    /// Whether the tickets were published since the draw gave them their places.
    drawn: AtomicBool,
}

/// One ticket: `place << 8 | state code` (code 0 until published), and its pass's expiry in ms.
/// The expiry is stored before the state that makes it meaningful, and read after it.
#[derive(Debug, Default)]
struct PublishedTicket {
    place_state: AtomicU64,
    pass_expires_at_ms: AtomicU64,
}

/// Tickets per chunk of `PublishedTickets` (16 bytes each: 64 KiB a chunk).
const TICKETS_PER_CHUNK: usize = 4_096;

const TICKET_WAITING: u64 = 1;
const TICKET_ADMITTED: u64 = 2;
const TICKET_USED: u64 = 3;
const TICKET_EXPIRED: u64 = 4;

/// Which tickets a publication covers.
#[derive(Clone, Copy, Debug)]
pub enum TicketChanges<'a> {
    /// Every ticket: after the event was loaded or reloaded.
    All,
    /// The tickets these effects name (and every ticket, if the draw happened meanwhile).
    Effects(&'a [Effect]),
}

/// `admission_rate_bits` while no admission rate is known (a NaN no rate ever is).
const NO_RATE: u64 = u64::MAX;

/// Bits of the seen-keys filter per seat of the event (about 2% false positives at two keys
/// per seat), and its bounds in bits.
const KEYS_SEEN_BITS_PER_SEAT: u64 = 16;
const KEYS_SEEN_BITS_MIN: u64 = 1 << 12;
const KEYS_SEEN_BITS_MAX: u64 = 1 << 26;

impl PublishedCounters {
    pub fn new(config: &EventConfig) -> Self {
        PublishedCounters {
            codes: config.categories.iter().map(|category| category.code.clone()).collect(),
            categories: config.categories.iter().map(|_| PublishedCategory::default()).collect(),
            waitlist_length_max: config.limits.waitlist_length_max,
            version: AtomicU64::new(0),
            keys_seen: {
                let seats: u64 = config.categories.iter().map(|category| u64::from(category.capacity)).sum();
                let bits = (seats * KEYS_SEEN_BITS_PER_SEAT)
                    .clamp(KEYS_SEEN_BITS_MIN, KEYS_SEEN_BITS_MAX)
                    .next_power_of_two();
                (0..bits / 64).map(|_| AtomicU64::new(0)).collect()
            },
            queue: PublishedQueue { admission_rate_bits: AtomicU64::new(NO_RATE), ..Default::default() },
            tickets: PublishedTickets {
                chunks: config.queue.as_ref().map_or(Box::default(), |queue| {
                    (0..(queue.queue_max as usize).div_ceil(TICKETS_PER_CHUNK))
                        .map(|_| OnceLock::new())
                        .collect()
                }),
                ..Default::default()
            },
        }
    }

    /// The three filter positions of a key, as (word, bit mask) pairs.
    fn key_positions(&self, key: &IdempotencyKey) -> [(usize, u64); 3] {
        self.digest_positions(key.digest())
    }

    fn digest_positions(&self, [first, second]: [u64; 2]) -> [(usize, u64); 3] {
        let bits = self.keys_seen.len() as u64 * 64;
        // Double hashing: position i = first + i × second, modulo the (power of two) size.
        let position = |i: u64| {
            let bit = first.wrapping_add(i.wrapping_mul(second)) & (bits - 1);
            ((bit / 64) as usize, 1u64 << (bit % 64))
        };
        [position(0), position(1), position(2)]
    }

    /// Called by the actor before it decides a keyed request.
    pub fn note_idempotency_key(&self, key: &IdempotencyKey) {
        for (word, mask) in self.key_positions(key) {
            self.keys_seen[word].fetch_or(mask, Ordering::Release);
        }
    }

    /// Notes every key the quota holds a decision for (after a load).
    pub fn note_decided_keys(&self, quota: &EventQuota) {
        for digest in quota.idempotency_digests() {
            for (word, mask) in self.digest_positions(digest) {
                self.keys_seen[word].fetch_or(mask, Ordering::Release);
            }
        }
    }

    /// False when the key has certainly never been decided by this event (since it loaded).
    pub fn may_have_seen_key(&self, key: &IdempotencyKey) -> bool {
        self.key_positions(key)
            .iter()
            .all(|(word, mask)| self.keys_seen[*word].load(Ordering::Acquire) & mask != 0)
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

    /// Copies the queue's figures as they read at `now`; bumps the version when any changed.
    pub fn publish_queue(&self, quota: &EventQuota, now: Timestamp) {
        let Some(summary) = quota.queue_summary(now) else { return };
        let queue = &self.queue;
        let rate = summary.admission_rate.map_or(NO_RATE, f64::to_bits);
        let mut changed = queue.drawn.swap(summary.drawn, Ordering::Release) != summary.drawn;
        for (cell, value) in [
            (&queue.waiting, summary.waiting),
            (&queue.admitted_outstanding, summary.admitted_outstanding),
            (&queue.admission_rate_bits, rate),
            (&queue.tickets, summary.tickets),
        ] {
            changed |= cell.swap(value, Ordering::Release) != value;
        }
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Copies the tickets `changes` covers, as the queue holds them now. The actor calls it after
    /// `publish_queue`.
    pub fn publish_tickets(&self, quota: &EventQuota, changes: TicketChanges<'_>) {
        let Some(queue) = quota.queue() else { return };
        let tickets = &self.tickets;
        if matches!(changes, TicketChanges::All) || tickets.drawn.load(Ordering::Acquire) != queue.drawn {
            for number in 1..=queue.tickets.len() as u64 {
                self.publish_ticket(queue, TicketId(number));
            }
            tickets.drawn.store(queue.drawn, Ordering::Release);
        } else if let TicketChanges::Effects(effects) = changes {
            for effect in effects {
                match &effect.kind {
                    EffectKind::QueueJoined { ticket, .. }
                    | EffectKind::QueueAdmitted { ticket, .. }
                    | EffectKind::QueuePassExpired { ticket }
                    | EffectKind::QueuePassUsed { ticket, .. } => self.publish_ticket(queue, *ticket),
                    _ => {}
                }
            }
        }
        tickets.cursor.store(queue.cursor as u64, Ordering::Release);
        tickets.left_early.store(queue.left_early.len() as u64, Ordering::Release);
    }

    fn publish_ticket(&self, queue: &Queue, id: TicketId) {
        let Some(ticket) = queue.ticket(id) else { return };
        let index = id.0 as usize - 1;
        // `queue_max` bounds the tickets, and the chunk table was sized from it.
        let chunk = self.tickets.chunks[index / TICKETS_PER_CHUNK]
            .get_or_init(|| (0..TICKETS_PER_CHUNK).map(|_| PublishedTicket::default()).collect());
        let published = &chunk[index % TICKETS_PER_CHUNK];
        let code = match ticket.state {
            StoredTicketState::Waiting => TICKET_WAITING,
            StoredTicketState::Admitted { pass_expires_at } => {
                published.pass_expires_at_ms.store(pass_expires_at.as_millis(), Ordering::Release);
                TICKET_ADMITTED
            }
            StoredTicketState::Used => TICKET_USED,
            StoredTicketState::Expired => TICKET_EXPIRED,
        };
        published.place_state.store(u64::from(ticket.place) << 8 | code, Ordering::Release);
    }

    /// A ticket as it reads at `now` from what the actor published; `None` when the actor must
    /// answer: an unknown or not yet published ticket, or a line someone left early (only the
    /// actor can count who still waits ahead then). A change a moment old may not show yet.
    pub fn ticket_view(&self, id: TicketId, opens_at: Timestamp, now: Timestamp) -> Option<TicketView> {
        let tickets = &self.tickets;
        if tickets.left_early.load(Ordering::Acquire) != 0 {
            return None;
        }
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        let published = &tickets.chunks.get(index / TICKETS_PER_CHUNK)?.get()?[index % TICKETS_PER_CHUNK];
        let place_state = published.place_state.load(Ordering::Acquire);
        let state = match place_state & 0xff {
            TICKET_WAITING => StoredTicketState::Waiting,
            TICKET_ADMITTED => StoredTicketState::Admitted {
                pass_expires_at: Timestamp::from_millis(published.pass_expires_at_ms.load(Ordering::Acquire)),
            },
            TICKET_USED => StoredTicketState::Used,
            TICKET_EXPIRED => StoredTicketState::Expired,
            _ => return None,
        };
        let place = (place_state >> 8) as u32;
        let cursor = tickets.cursor.load(Ordering::Acquire);
        let ahead = u64::from(place.saturating_sub(1)).saturating_sub(cursor) as u32;
        let queue = self.queue_snapshot();
        let facts = TicketFacts { place, state, ahead };
        Some(crate::queue::reading(id, facts, self.queue_exhausted(), queue.admission_rate, opens_at, now))
    }

    /// Whether no seat can reach a waiting ticket, as last published: nothing available,
    /// nothing held, no pass outstanding (`Queue::exhausted`). Reads atomics only.
    pub fn queue_exhausted(&self) -> bool {
        let seats_left = self.categories.iter().any(|category| {
            category.available.load(Ordering::Acquire) > 0 || category.held.load(Ordering::Acquire) > 0
        });
        !seats_left && self.queue.admitted_outstanding.load(Ordering::Acquire) == 0
    }

    /// The queue's figures as last published.
    pub fn queue_snapshot(&self) -> QueueSummary {
        let queue = &self.queue;
        let rate = queue.admission_rate_bits.load(Ordering::Acquire);
        QueueSummary {
            drawn: queue.drawn.load(Ordering::Acquire),
            waiting: queue.waiting.load(Ordering::Acquire),
            admitted_outstanding: queue.admitted_outstanding.load(Ordering::Acquire),
            admission_rate: (rate != NO_RATE).then(|| f64::from_bits(rate)),
            tickets: queue.tickets.load(Ordering::Acquire),
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
