//! More than one node: who owns which event, the forward token, and the client that forwards to
//! an owner. What to do with a request for an event owned elsewhere is `owner_routing`'s.
//!
//! A node runs an event's actor only while it holds the event's lease (`LeaseOwnership`, in
//! Redis when `KUOTA_REDIS_URL` is set, in this process otherwise). A request for an event that
//! another node owns is forwarded there once, marked with `Kuota-Forwarded-By` and proven to come
//! from a node of this deployment by `Kuota-Forward-Token` (derived from the secret every node
//! shares through the store).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::http::header::{HeaderMap, HeaderName};
use hmac::{Hmac, KeyInit, Mac};
use kuota_engine::actor::EventHandle;
use kuota_engine::ownership::Ownership;
use kuota_persist::lease::{InProcessLeases, Leases, RedisLeases};
use kuota_persist::ownership::{LeaseOwnership, NodeIdentity};
use sha2::Sha256;

use crate::configuration::Settings;
use crate::forward::{Forwarder, PeerAddress};
use crate::owner_cache::OwnerCache;
use crate::tokens::constant_time_eq;

/// Names the node that forwarded a request (set only by Kuota nodes).
pub const FORWARDED_BY: &str = "kuota-forwarded-by";
/// Proves that a forwarded request comes from a node of this deployment.
pub const FORWARD_TOKEN: &str = "kuota-forward-token";
/// On a relayed answer: the node that owns the event and decided.
pub const OWNER: &str = "kuota-owner";
/// On the 503 answering a forwarded request for an event the node does not own: its own id.
pub const NOT_OWNER: &str = "kuota-not-owner";

/// How long graceful shutdown waits for each lease release, in ms.
pub const LEASE_RELEASE_TIMEOUT_MS: u64 = 1_000;

/// This node's place in the deployment: its identity, its leases, and the forward token.
#[derive(Debug)]
pub struct Cluster {
    node: NodeIdentity,
    ownership: Arc<LeaseOwnership>,
    /// What the registry asks: `ownership`, with other nodes' events remembered a moment.
    owners: Arc<OwnerCache>,
    forwarder: Forwarder,
    forward_token: String,
}

/// A request a peer node forwarded: the client's address as the first node saw it.
#[derive(Clone, Copy, Debug)]
pub struct ForwardedClient(pub Option<IpAddr>);

/// The request's event, which the owner-routing layer found running on this node: handlers take
/// it (`AppState::event_of`) instead of looking the event up again.
#[derive(Clone, Debug)]
pub struct LocatedHere(pub EventHandle);

impl LocatedHere {
    /// The event the owner-routing layer located for `request`, if any.
    pub fn of(request: &impl HttpMessage) -> Option<EventHandle> {
        request.extensions().get::<LocatedHere>().map(|located| located.0.clone())
    }
}

impl Cluster {
    /// Leases in Redis when `redis` is given (shared by every node with the same prefix), in
    /// this process otherwise. `port` is the bound port: an advertised URL ending in `:0` (as the
    /// default does with `KUOTA_LISTEN=...:0`) takes it. Call from the runtime that lives until
    /// the process ends: lease renewals run on it.
    pub fn start(
        settings: &Settings,
        port: u16,
        redis: Option<redis::aio::ConnectionManager>,
        token_secret: &[u8],
    ) -> anyhow::Result<Cluster> {
        let url = match settings.advertise_url.strip_suffix(":0") {
            Some(base) => format!("{base}:{port}"),
            None => settings.advertise_url.clone(),
        };
        anyhow::ensure!(
            PeerAddress::parse(&url).is_some(),
            "advertise_url must be http://host:port, not {url}"
        );
        let node = NodeIdentity::new(&settings.node_id, &url)
            .ok_or_else(|| anyhow::anyhow!("node_id and advertise_url must be without spaces"))?;
        let leases: Arc<dyn Leases> = match redis {
            Some(connection) => Arc::new(
                RedisLeases::new(connection, settings.redis_prefix.clone())
                    .with_command_timeout(Duration::from_millis(settings.redis_timeout_ms)),
            ),
            None => Arc::new(InProcessLeases::new()),
        };
        let ttl = Duration::from_millis(settings.lease_ttl_ms);
        let ownership =
            Arc::new(LeaseOwnership::new(leases, node.clone(), ttl, tokio::runtime::Handle::current())?);
        let owners = Arc::new(OwnerCache::new(ownership.clone(), &node.node_id, ttl));
        Ok(Cluster {
            node,
            ownership,
            owners,
            forwarder: Forwarder::new(),
            forward_token: forward_token(token_secret),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    pub fn advertise_url(&self) -> &str {
        &self.node.url
    }

    /// What the registry asks before it starts an event's actor: the leases, behind the cache
    /// of other nodes' events.
    pub fn ownership(&self) -> Arc<dyn Ownership> {
        self.owners.clone()
    }

    /// Events whose lease this node holds.
    pub fn owned_events(&self) -> usize {
        self.ownership.owned_events()
    }

    /// Gives every lease back; graceful shutdown calls it once the write-behind drained.
    pub async fn release_all(&self) {
        self.ownership.release_all(Duration::from_millis(LEASE_RELEASE_TIMEOUT_MS)).await;
    }

    /// Other nodes' events, remembered a moment.
    pub fn owners(&self) -> &OwnerCache {
        &self.owners
    }

    /// The client that forwards requests to other nodes.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// What a forwarded request carries as `Kuota-Forward-Token`.
    pub fn forward_token(&self) -> &str {
        &self.forward_token
    }

    /// The forwarding node's id, when the request carries a valid forward token.
    pub fn forwarded_by<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        // Made once: a name looked up as a `&str` is parsed and copied on every request.
        static FORWARD_TOKEN_HEADER: HeaderName = HeaderName::from_static(FORWARD_TOKEN);
        static FORWARDED_BY_HEADER: HeaderName = HeaderName::from_static(FORWARDED_BY);
        let token = headers.get(&FORWARD_TOKEN_HEADER)?.to_str().ok()?;
        let node = headers.get(&FORWARDED_BY_HEADER)?.to_str().ok()?;
        constant_time_eq(token, &self.forward_token).then_some(node)
    }
}

/// A secret every node of a deployment derives alike from the store's shared token secret, and
/// no client can.
pub fn forward_token(secret: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(b"kuota node-to-node forwarding v1");
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_token_depends_on_the_shared_secret() {
        assert_eq!(forward_token(b"one"), forward_token(b"one"));
        assert_ne!(forward_token(b"one"), forward_token(b"two"));
    }
}
