//! `OwnerCache`: the `Ownership` a node's registry asks, remembering for a moment which node
//! owns an event that this node does not, so that a forwarded request costs no Redis round trip
//! (asking the lease ownership is a `SET NX` and then a `GET` of the holder).
//!
//! - Only `Claim::Elsewhere` answers are remembered, and only for `OWNER_CACHE_ENTRY_MS_MAX`
//!   (less for short leases). `Claim::Owned` is never remembered here: the lease ownership
//!   keeps its own leases, renewed and checked against the clock.
//! - An answer naming this node itself (an earlier run's lease) is not remembered either: the
//!   next claim must find out at once when that lease is gone.
//! - The forwarder forgets an entry when forwarding to its owner fails or the owner answers that
//!   it is not the owner (`forget`).
//! - At most `OWNER_CACHE_ENTRIES_MAX` entries; when full, expired ones are dropped, and if none
//!   has expired the new answer is simply not remembered.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kuota_engine::EventId;
use kuota_engine::ownership::{Claim, Owner, Ownership, OwnershipError};
use kuota_engine::store::BoxFuture;

/// The longest an owner is remembered, in ms.
///
/// *Why 500:* the entry's age is how late this node notices that the owner's lease ran out and
/// claims the event itself, so failover takes up to the lease TTL plus this, within the TTL
/// plus 1 s that API.md promises; and at any rate of forwarded requests the lease service sees
/// at most two claims a second per event from this node. A stale entry costs little otherwise:
/// a former owner answers a forwarded request with a 503 marked `Kuota-Not-Owner`, a dead one
/// does not answer, and either way the entry is forgotten at once.
pub const OWNER_CACHE_ENTRY_MS_MAX: u64 = 500;

/// How long an entry naming an owner that fails to answer is trusted, in ms (the forwarder
/// asks `forget_older_than` while that owner's breaker is open).
///
/// *Why 50:* a frozen owner's lease runs out within its TTL, and the event should be taken over
/// then, not up to `OWNER_CACHE_ENTRY_MS_MAX` later, nor should the forwarder's probe wait for a
/// node whose lease is already gone. Reading the lease every 50 ms costs the lease service at
/// most 20 claims a second per event from this node, and only until that lease runs out.
pub const FAILING_OWNER_ENTRY_MS_MAX: u64 = 50;

/// Leases shorter than this many entry lifetimes shorten the entry lifetime in proportion, so
/// that an entry never outlives a quarter of a lease.
pub const LEASE_TTL_ENTRY_LIFETIMES_MIN: u32 = 4;

/// Events whose owner is remembered at once: far more than the events a deployment runs, so
/// that the bound only matters against a flood of requests for made-up event ids (which the
/// lease ownership answers `Elsewhere` only for events that someone owns anyway).
pub const OWNER_CACHE_ENTRIES_MAX: usize = 10_000;

/// Reads the monotonic clock; tests pass a controlled one.
pub type MonotonicClock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Entry {
    owner: Owner,
    since: Instant,
    until: Instant,
}

/// See the module documentation.
pub struct OwnerCache {
    inner: Arc<dyn Ownership>,
    node_id: String,
    entry_lifetime: Duration,
    clock: MonotonicClock,
    entries: Mutex<HashMap<EventId, Entry>>,
}

impl fmt::Debug for OwnerCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OwnerCache")
            .field("inner", &self.inner)
            .field("node_id", &self.node_id)
            .field("entry_lifetime", &self.entry_lifetime)
            .finish_non_exhaustive()
    }
}

impl OwnerCache {
    /// Remembers the owners `inner` names for this node (`node_id`), whose leases last
    /// `lease_ttl`.
    pub fn new(inner: Arc<dyn Ownership>, node_id: &str, lease_ttl: Duration) -> OwnerCache {
        OwnerCache::with_clock(inner, node_id, lease_ttl, Arc::new(Instant::now))
    }

    pub fn with_clock(
        inner: Arc<dyn Ownership>,
        node_id: &str,
        lease_ttl: Duration,
        clock: MonotonicClock,
    ) -> OwnerCache {
        let entry_lifetime =
            Duration::from_millis(OWNER_CACHE_ENTRY_MS_MAX).min(lease_ttl / LEASE_TTL_ENTRY_LIFETIMES_MIN);
        OwnerCache { inner, node_id: node_id.to_owned(), entry_lifetime, clock, entries: Mutex::default() }
    }

    pub fn entry_lifetime(&self) -> Duration {
        self.entry_lifetime
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Entry>> {
        // Every critical section is one lookup, insertion, removal or sweep; none can panic.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remembered owner of `event`, if its entry is still fresh.
    pub fn cached(&self, event: &EventId) -> Option<Owner> {
        let now = (self.clock)();
        let mut entries = self.entries();
        match entries.get(event) {
            Some(entry) if now < entry.until => Some(entry.owner.clone()),
            Some(_) => {
                entries.remove(event);
                None
            }
            None => None,
        }
    }

    /// Forgets that `owner_node_id` owns `event`: forwarding there failed, or it said it is not
    /// the owner. Returns whether such an entry was remembered (an entry naming another owner,
    /// remembered since, is kept).
    pub fn forget(&self, event: &EventId, owner_node_id: &str) -> bool {
        let mut entries = self.entries();
        let named = entries.get(event).is_some_and(|entry| entry.owner.node_id == owner_node_id);
        if named {
            entries.remove(event);
        }
        named
    }

    /// Forgets that `owner_node_id` owns `event` if that was remembered more than `age` ago;
    /// returns whether it did.
    pub fn forget_older_than(&self, event: &EventId, owner_node_id: &str, age: Duration) -> bool {
        let now = (self.clock)();
        let mut entries = self.entries();
        let old = entries.get(event).is_some_and(|entry| {
            entry.owner.node_id == owner_node_id && now.saturating_duration_since(entry.since) > age
        });
        if old {
            entries.remove(event);
        }
        old
    }

    fn remember(&self, event: &EventId, owner: &Owner) {
        if owner.node_id == self.node_id {
            return;
        }
        let now = (self.clock)();
        let mut entries = self.entries();
        if entries.len() >= OWNER_CACHE_ENTRIES_MAX && !entries.contains_key(event) {
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= OWNER_CACHE_ENTRIES_MAX {
                return;
            }
        }
        let entry = Entry { owner: owner.clone(), since: now, until: now + self.entry_lifetime };
        entries.insert(event.clone(), entry);
    }

    async fn claim_event(&self, event: &EventId) -> Result<Claim, OwnershipError> {
        if let Some(owner) = self.cached(event) {
            return Ok(Claim::Elsewhere(owner));
        }
        let claim = self.inner.claim(event).await?;
        match &claim {
            Claim::Elsewhere(owner) => self.remember(event, owner),
            Claim::Owned(_) => {
                self.entries().remove(event);
            }
        }
        Ok(claim)
    }
}

impl Ownership for OwnerCache {
    fn claim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>> {
        Box::pin(self.claim_event(event))
    }

    fn disclaim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, ()> {
        self.entries().remove(event);
        self.inner.disclaim(event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kuota_persist::lease::{InProcessLeases, Leases};
    use kuota_persist::ownership::{LeaseOwnership, NodeIdentity};

    use super::*;

    const LEASE_TTL: Duration = Duration::from_secs(10);

    /// Counts the claims that reach the real lease ownership (each one lease service round trip
    /// or more).
    #[derive(Debug)]
    struct Counting {
        inner: LeaseOwnership,
        claims: AtomicUsize,
    }

    impl Ownership for Counting {
        fn claim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>> {
            self.claims.fetch_add(1, Ordering::SeqCst);
            self.inner.claim(event)
        }

        fn disclaim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, ()> {
            self.inner.disclaim(event)
        }
    }

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct Hand(Arc<Mutex<Instant>>);

    impl Hand {
        fn new() -> Hand {
            Hand(Arc::new(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }

        fn clock(&self) -> MonotonicClock {
            let hand = self.0.clone();
            Arc::new(move || *hand.lock().unwrap())
        }
    }

    fn node(leases: &Arc<dyn Leases>, id: &str) -> LeaseOwnership {
        let identity = NodeIdentity::new(id, &format!("http://{id}:8080")).unwrap();
        LeaseOwnership::new(leases.clone(), identity, LEASE_TTL, tokio::runtime::Handle::current()).unwrap()
    }

    fn event(id: &str) -> EventId {
        EventId::parse(id).unwrap()
    }

    fn owner_named(claim: Claim) -> String {
        match claim {
            Claim::Elsewhere(owner) => owner.node_id,
            Claim::Owned(_) => "this node".into(),
        }
    }

    /// Node a owns `race`; node b's cache over a counting lease ownership, on a hand clock.
    async fn owned_by_a() -> (LeaseOwnership, Arc<Counting>, OwnerCache, Hand) {
        let leases: Arc<dyn Leases> = Arc::new(InProcessLeases::new());
        let a = node(&leases, "node-a");
        assert!(matches!(a.claim(&event("race")).await, Ok(Claim::Owned(_))));
        let counting = Arc::new(Counting { inner: node(&leases, "node-b"), claims: AtomicUsize::new(0) });
        let hand = Hand::new();
        let cache = OwnerCache::with_clock(counting.clone(), "node-b", LEASE_TTL, hand.clock());
        (a, counting, cache, hand)
    }

    #[tokio::test]
    async fn an_owner_elsewhere_is_asked_for_once_while_its_entry_is_fresh() {
        let (_a, counting, cache, hand) = owned_by_a().await;
        for _ in 0..100 {
            assert_eq!(owner_named(cache.claim(&event("race")).await.unwrap()), "node-a");
        }
        assert_eq!(counting.claims.load(Ordering::SeqCst), 1, "one lease service lookup for 100 claims");
        hand.advance(cache.entry_lifetime() - Duration::from_millis(1));
        cache.claim(&event("race")).await.unwrap();
        assert_eq!(counting.claims.load(Ordering::SeqCst), 1);
        hand.advance(Duration::from_millis(1));
        cache.claim(&event("race")).await.unwrap();
        assert_eq!(counting.claims.load(Ordering::SeqCst), 2, "an expired entry is asked for again");
    }

    #[tokio::test]
    async fn a_forgotten_owner_is_asked_for_again_and_another_owners_entry_is_kept() {
        let (_a, counting, cache, _hand) = owned_by_a().await;
        cache.claim(&event("race")).await.unwrap();
        assert!(!cache.forget(&event("race"), "node-c"), "the entry names node a");
        assert!(cache.cached(&event("race")).is_some());
        assert!(cache.forget(&event("race"), "node-a"));
        assert!(cache.cached(&event("race")).is_none());
        cache.claim(&event("race")).await.unwrap();
        assert_eq!(counting.claims.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_entry_older_than_asked_is_forgotten_and_a_younger_one_kept() {
        let (_a, counting, cache, hand) = owned_by_a().await;
        cache.claim(&event("race")).await.unwrap();
        let age = Duration::from_millis(FAILING_OWNER_ENTRY_MS_MAX);
        hand.advance(age);
        assert!(!cache.forget_older_than(&event("race"), "node-a", age), "not older yet");
        hand.advance(Duration::from_millis(1));
        assert!(!cache.forget_older_than(&event("race"), "node-c", age), "it names node a");
        assert!(cache.forget_older_than(&event("race"), "node-a", age));
        cache.claim(&event("race")).await.unwrap();
        assert_eq!(counting.claims.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_owned_event_is_never_remembered_here() {
        let (a, counting, cache, _hand) = owned_by_a().await;
        a.release_all(Duration::from_secs(1)).await;
        // The released lease is free: node b takes it, and every later claim asks its leases.
        assert!(matches!(cache.claim(&event("race")).await, Ok(Claim::Owned(_))));
        assert!(matches!(cache.claim(&event("other")).await, Ok(Claim::Owned(_))));
        assert!(matches!(cache.claim(&event("race")).await, Ok(Claim::Owned(_))));
        assert!(cache.cached(&event("race")).is_none() && cache.cached(&event("other")).is_none());
        assert_eq!(counting.claims.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_earlier_run_of_this_node_is_not_remembered() {
        let leases: Arc<dyn Leases> = Arc::new(InProcessLeases::new());
        let earlier = node(&leases, "node-b");
        assert!(matches!(earlier.claim(&event("race")).await, Ok(Claim::Owned(_))));
        let cache = OwnerCache::new(Arc::new(node(&leases, "node-b")), "node-b", LEASE_TTL);
        // Whether the lease ownership adopts the earlier run's lease or names it, nothing of it
        // is remembered.
        cache.claim(&event("race")).await.unwrap();
        assert!(cache.cached(&event("race")).is_none());
    }

    #[tokio::test]
    async fn the_entry_lifetime_stays_a_quarter_of_a_short_lease() {
        let leases: Arc<dyn Leases> = Arc::new(InProcessLeases::new());
        let short = Duration::from_millis(1_000);
        let cache = OwnerCache::new(Arc::new(node(&leases, "node-b")), "node-b", short);
        assert_eq!(cache.entry_lifetime(), Duration::from_millis(250));
        let cache = OwnerCache::new(Arc::new(node(&leases, "node-b")), "node-b", LEASE_TTL);
        assert_eq!(cache.entry_lifetime(), Duration::from_millis(OWNER_CACHE_ENTRY_MS_MAX));
    }
}
