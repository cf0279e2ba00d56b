//! `LeaseOwnership`: the engine's `Ownership` over event leases. A node owns an event while it
//! holds the lease `event:{id}`, acquired with its node id and advertised URL as the holder, so
//! that the other nodes can read where to forward the event's requests.
//!
//! Leases are kept renewed by `spawn_renewal` on the runtime given at construction (the one that
//! lives until the process ends, not an HTTP worker's), and released only by `release_all`,
//! which graceful shutdown calls after the write-behind drained: releasing earlier would let
//! another node load the event and fence the writes still draining.
//!
//! # A restart under the same node id
//! A node killed and restarted (same `node_id`, new process) finds its previous life's leases
//! still in Redis. Waiting them out would leave its events unserved for a TTL, so a claim that
//! finds a live lease under this node's id, and holds none for the event itself, takes it over
//! at once (`Leases::take_over_as`, atomic against a lease that changes hands meanwhile). The
//! previous life is gone, or if it is not, loading the event takes a new epoch, which fences
//! every write it still had in flight, and its renewals find the lease taken, so it steps down.
//! Two live processes under one node id are a misconfiguration: they would take events from each
//! other in turn (each time fenced by the epoch, so safe, but slow).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kuota_engine::EventId;
use kuota_engine::ownership::{Claim, Owner, Ownership, OwnershipError, Tenure};
use kuota_engine::store::BoxFuture;

use crate::lease::{Lease, LeaseError, LeaseKeeper, Leases, spawn_renewal};

/// Events one node owns at once; claims beyond it are refused (`Unavailable`).
pub const OWNED_EVENTS_MAX: usize = 100_000;

/// How long claims fail at once after one found the lease service unavailable, in
/// milliseconds. While Redis is frozen or gone, each claim would otherwise wait out a command
/// timeout or two before its 503; this short, a claim after Redis is back waits little for it.
pub const CLAIM_PAUSE_AFTER_UNAVAILABLE_MS: u64 = 250;

/// Rounds of "acquire, else read the holder" before a claim gives up: the holder can vanish
/// between the two commands (its lease expired or was released), and then acquiring again is
/// worth a try, but not for ever.
pub const CLAIM_ATTEMPTS_MAX: usize = 3;

/// How this node names itself in the leases it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Printable, without spaces.
    pub node_id: String,
    /// Printable, without spaces.
    pub url: String,
}

impl NodeIdentity {
    /// `None` when either part is empty or has a space or a control character (the holder
    /// description is `"{node_id} {url}"`, split at the first space).
    pub fn new(node_id: &str, url: &str) -> Option<NodeIdentity> {
        let valid =
            |text: &str| !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        (valid(node_id) && valid(url)).then(|| NodeIdentity { node_id: node_id.into(), url: url.into() })
    }

    fn holder(&self) -> String {
        format!("{} {}", self.node_id, self.url)
    }
}

/// Parses a holder description written by `NodeIdentity::holder`.
fn owner_of(holder: &str) -> Option<Owner> {
    let (node_id, url) = holder.split_once(' ')?;
    Some(Owner { node_id: node_id.to_owned(), url: url.to_owned() })
}

/// See the module documentation.
#[derive(Debug)]
pub struct LeaseOwnership {
    leases: Arc<dyn Leases>,
    node: NodeIdentity,
    ttl: Duration,
    runtime: tokio::runtime::Handle,
    keepers: Mutex<HashMap<EventId, LeaseKeeper>>,
    /// Claims fail at once until then: the lease service failed shortly before.
    paused_until: Mutex<Option<tokio::time::Instant>>,
}

impl LeaseOwnership {
    /// Leases of `ttl` from `leases`, renewed on `runtime`. Fails when the TTL is outside
    /// `LEASE_TTL_MIN_MS..=LEASE_TTL_MAX_MS` (checked here, not at the first claim).
    pub fn new(
        leases: Arc<dyn Leases>,
        node: NodeIdentity,
        ttl: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Result<LeaseOwnership, LeaseError> {
        let ttl_ms = ttl.as_millis();
        if !(u128::from(crate::lease::LEASE_TTL_MIN_MS)..=u128::from(crate::lease::LEASE_TTL_MAX_MS))
            .contains(&ttl_ms)
        {
            return Err(LeaseError::InvalidTtl { ttl_ms });
        }
        Ok(LeaseOwnership {
            leases,
            node,
            ttl,
            runtime,
            keepers: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(None),
        })
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    fn keepers(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, LeaseKeeper>> {
        // Every critical section is one lookup, insert or removal; none can panic half-way.
        self.keepers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Events whose lease this node holds now.
    pub fn owned_events(&self) -> usize {
        let now = Instant::now();
        self.keepers().values().filter(|keeper| keeper.is_held(now)).count()
    }

    /// The lease this node believes it holds, forgetting one it knows it lost.
    fn current_lease(&self, event: &EventId) -> Option<Lease> {
        let mut keepers = self.keepers();
        let keeper = keepers.get(event)?;
        match keeper.lease().filter(|lease| lease.is_valid(Instant::now())) {
            Some(lease) => Some(lease),
            None => {
                keepers.remove(event);
                None
            }
        }
    }

    /// The tenure of a lease this node still holds, checked with the lease service: the actor
    /// is being (re)started, and loading takes a new epoch, so a lease lost since the last
    /// renewal must not be believed (two nodes would fence each other in turn).
    async fn confirmed_tenure(&self, event: &EventId) -> Result<Option<Tenure>, OwnershipError> {
        let Some(lease) = self.current_lease(event) else { return Ok(None) };
        if self.leases.renew(&lease).await.map_err(|error| self.unavailable(error))?.is_none() {
            self.keepers().remove(event);
            return Ok(None);
        }
        Ok(self.keepers().get(event).map(tenure_of))
    }

    async fn claim_event(&self, event: &EventId) -> Result<Claim, OwnershipError> {
        self.check_not_paused()?;
        if let Some(tenure) = self.confirmed_tenure(event).await? {
            return Ok(Claim::Owned(tenure));
        }
        if self.keepers().len() >= OWNED_EVENTS_MAX {
            return Err(OwnershipError::Unavailable(format!("this node owns {OWNED_EVENTS_MAX} events")));
        }
        let key = lease_key(event);
        let holder = self.node.holder();
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            let acquired = self.leases.acquire_as(&key, &holder, self.ttl).await;
            if let Some(lease) = acquired.map_err(|error| self.unavailable(error))? {
                tracing::info!(event_id = %event, node_id = %self.node.node_id, "event lease acquired");
                return Ok(Claim::Owned(self.keep(event, lease)));
            }
            let Some(current) = self.leases.holder(&key).await.map_err(|error| self.unavailable(error))?
            else {
                // Released or expired between the two commands: try to take it.
                continue;
            };
            let owner = owner_of(&current).ok_or_else(|| {
                OwnershipError::Unavailable(format!("the lease of {event} has no owner address"))
            })?;
            if owner.node_id != self.node.node_id {
                return Ok(Claim::Elsewhere(owner));
            }
            // Held under this node's id, and not by this process (it holds no lease of the event,
            // `current_lease` made sure): a previous life's (see the module documentation).
            let taken = self.leases.take_over_as(&key, &current, &holder, self.ttl).await;
            if let Some(lease) = taken.map_err(|error| self.unavailable(error))? {
                tracing::warn!(
                    event_id = %event,
                    node_id = %self.node.node_id,
                    previous_url = %owner.url,
                    "took over the event lease of this node id's previous life"
                );
                return Ok(Claim::Owned(self.keep(event, lease)));
            }
            // It changed hands meanwhile: look again.
        }
        Err(OwnershipError::Unavailable(format!("the lease of {event} kept changing hands")))
    }

    /// Keeps `lease` of `event` renewed from now on, and returns the tenure the actor runs under.
    fn keep(&self, event: &EventId, lease: Lease) -> Tenure {
        let every = lease.renewal_interval();
        // The renewal task must outlive the HTTP worker that happened to claim.
        let keeper = {
            let _runtime = self.runtime.enter();
            spawn_renewal(Arc::clone(&self.leases), lease, every)
        };
        let tenure = tenure_of(&keeper);
        self.keepers().insert(event.clone(), keeper);
        tenure
    }

    /// Gives every lease back (graceful shutdown, once the write-behind drained). Each release
    /// is bounded by `timeout`; a lease not released runs out on its own.
    pub async fn release_all(&self, timeout: Duration) {
        let keepers: Vec<(EventId, LeaseKeeper)> = self.keepers().drain().collect();
        for (event, keeper) in keepers {
            match tokio::time::timeout(timeout, keeper.release()).await {
                Ok(Ok(_)) => tracing::info!(event_id = %event, "event lease released"),
                Ok(Err(error)) => {
                    tracing::warn!(event_id = %event, %error, "releasing an event lease failed")
                }
                Err(_) => tracing::warn!(event_id = %event, "releasing an event lease timed out"),
            }
        }
    }
}

fn lease_key(event: &EventId) -> String {
    format!("event:{event}")
}

impl LeaseOwnership {
    /// The claim's error for a failed lease call; one that may be Redis's absence pauses
    /// claims for `CLAIM_PAUSE_AFTER_UNAVAILABLE_MS`.
    fn unavailable(&self, error: LeaseError) -> OwnershipError {
        if matches!(error, LeaseError::Unavailable(_)) {
            let until = tokio::time::Instant::now() + Duration::from_millis(CLAIM_PAUSE_AFTER_UNAVAILABLE_MS);
            *self.paused_until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
        }
        OwnershipError::Unavailable(error.to_string())
    }

    /// Fails when claims are paused (see `CLAIM_PAUSE_AFTER_UNAVAILABLE_MS`).
    fn check_not_paused(&self) -> Result<(), OwnershipError> {
        let paused_until = *self.paused_until.lock().unwrap_or_else(PoisonError::into_inner);
        match paused_until {
            Some(until) if tokio::time::Instant::now() < until => Err(OwnershipError::Unavailable(format!(
                "the lease service failed less than {CLAIM_PAUSE_AFTER_UNAVAILABLE_MS} ms ago"
            ))),
            _ => Ok(()),
        }
    }
}

/// What the actor needs of a keeper: the clock-checked validity, and the loss as a future (which
/// also resolves when the keeper is released or dropped, since its channel closes then).
fn tenure_of(keeper: &LeaseKeeper) -> Tenure {
    let current = keeper.subscribe();
    let held =
        Arc::new(move || current.borrow().as_ref().is_some_and(|lease| lease.is_valid(Instant::now())));
    let mut watched = keeper.subscribe();
    let lost = Box::pin(async move {
        let _ = watched.wait_for(Option::is_none).await;
    });
    Tenure::new(held, lost)
}

impl Ownership for LeaseOwnership {
    fn claim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, Result<Claim, OwnershipError>> {
        Box::pin(self.claim_event(event))
    }

    fn disclaim<'a>(&'a self, event: &'a EventId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let keeper = self.keepers().remove(event);
            if let Some(keeper) = keeper
                && let Err(error) = keeper.release().await
            {
                tracing::warn!(event_id = %event, %error, "releasing an event lease failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_description_names_the_node_and_its_address() {
        let node = NodeIdentity::new("node-a", "http://10.0.0.7:8080").unwrap();
        let owner = owner_of(&node.holder()).unwrap();
        assert_eq!(owner, Owner { node_id: "node-a".into(), url: "http://10.0.0.7:8080".into() });
    }

    #[test]
    fn a_node_id_or_address_with_a_space_is_refused() {
        assert!(NodeIdentity::new("node a", "http://x").is_none());
        assert!(NodeIdentity::new("node-a", "").is_none());
    }
}
