//! Every bound of the HTTP node in one place, and how they relate, checked when the crate
//! compiles.
//!
//! Each bound is defined beside the code it bounds, with the reason for its value; this module
//! gathers them so that a reader (or an operator sizing a node) finds them all, and so that the
//! relations between bounds of different modules are stated once, as `const` assertions, instead
//! of being true by accident. The engine's bounds are in `kuota_engine::limits`, the store's and
//! the writer's beside `kuota_persist::store` (with their own assertions).

// Request bodies and listings.
pub use crate::domain::{
    ATTRIBUTES_SERIALIZED_BYTES_MAX, EVENT_NAME_LENGTH_MAX, FULL_NAME_LENGTH_MAX, HOLD_TTL_SECONDS_MAX,
    PHONE_LENGTH_MAX,
};
pub use crate::http::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
pub use crate::queue::{ADMIT_PER_SECOND_MAX, QUEUE_MAX_DEFAULT};
pub use crate::routes::dashboard::DASHBOARD_EVENTS_MAX;
pub use crate::routes::webhooks::{DESCRIPTION_LENGTH_MAX_CHARACTERS, WEBHOOK_ENDPOINTS_MAX};
pub use crate::webhooks::destination::URL_LENGTH_MAX_BYTES;

// Connections and time.
pub use crate::configuration::REQUEST_TIMEOUT_MS_DEFAULT;
pub use crate::startup::{CLIENT_REQUEST_TIMEOUT_MS, KEEP_ALIVE_SECONDS};

// Load: admission control, rate limits, streams.
pub use crate::admission::{LIMIT_INITIAL, LIMIT_MAX, LIMIT_MIN};
pub use crate::rate_limit::RATE_LIMIT_KEYS_MAX;
pub use crate::routes::events::STREAM_SUBSCRIBERS_MAX;

// Metrics: histogram samples kept between two upkeeps.
pub use crate::metrics::METRICS_UPKEEP_INTERVAL_MS;

// Other nodes: the owner cache and the forwarder.
pub use crate::forward::{
    FORWARD_ANSWER_BYTES_MAX, FORWARD_ANSWER_TIMEOUT_MS, PEER_CONNECTION_IDLE_MS_MAX,
    PEER_IDLE_CONNECTIONS_MAX, PEERS_MAX,
};
pub use crate::owner_cache::{FAILING_OWNER_ENTRY_MS_MAX, OWNER_CACHE_ENTRIES_MAX, OWNER_CACHE_ENTRY_MS_MAX};

// Webhooks and the outbox.
pub use crate::dashboard::OUTBOX_COUNT_MAX;
pub use crate::startup::OUTBOX_ROUND_ENTRIES_MAX;
pub use crate::webhooks::dispatcher::{
    ENDPOINT_HELD_PER_SLOT, ENDPOINT_IN_FLIGHT_MAX, IN_FLIGHT_MAX, ROUND_MESSAGES_MAX, SETTLE_BATCH_MAX,
};
pub use crate::webhooks::retry::{RETRY_DELAY_SECONDS_MAX, RETRY_SCHEDULE_STEPS_MAX};

// A listing page is what the store reads at most per page.
const _: () = assert!(PAGE_LIMIT_DEFAULT >= 1 && PAGE_LIMIT_DEFAULT <= PAGE_LIMIT_MAX);
const _: () = assert!(PAGE_LIMIT_MAX == kuota_persist::store::PAGE_SIZE_MAX);

// Registrations in flight include those in an event's mailbox; a limit past the mailbox would
// only be refused later, by the actor.
const _: () = assert!(LIMIT_MIN <= LIMIT_INITIAL && LIMIT_INITIAL <= LIMIT_MAX);
const _: () = assert!(LIMIT_MAX <= kuota_engine::limits::MAILBOX_CAPACITY_MAX);

// A forwarded request is answered within the caller's own deadline, so that the caller's 503
// is never the only thing a client learns of a forward that went through.
const _: () = assert!(FORWARD_ANSWER_TIMEOUT_MS < REQUEST_TIMEOUT_MS_DEFAULT);
// The deadline covers a request, read within actix's own limit on reading one.
const _: () = assert!(REQUEST_TIMEOUT_MS_DEFAULT < CLIENT_REQUEST_TIMEOUT_MS);
// An idle connection to a peer is dropped before the peer's keep-alive closes it under us.
const _: () = assert!(PEER_CONNECTION_IDLE_MS_MAX < KEEP_ALIVE_SECONDS * 1_000);
// An owner that fails to answer is looked up again sooner than a healthy one.
const _: () = assert!(FAILING_OWNER_ENTRY_MS_MAX < OWNER_CACHE_ENTRY_MS_MAX);

// What one node holds for one endpoint fits in what it holds for all, and settling never
// waits for more attempts than can be in flight.
const _: () = assert!(ENDPOINT_IN_FLIGHT_MAX * ENDPOINT_HELD_PER_SLOT <= IN_FLIGHT_MAX);
const _: () = assert!(SETTLE_BATCH_MAX <= IN_FLIGHT_MAX);
// A claim looks at no more messages than the dispatcher may hold.
const _: () = assert!(ROUND_MESSAGES_MAX as usize <= IN_FLIGHT_MAX);
