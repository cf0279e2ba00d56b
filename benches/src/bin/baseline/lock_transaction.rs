//! `lock-and-transaction`: the design the Laravel notes recommend (`Cache::lock` on Redis around
//! a database transaction), written carefully: a connection pool, prepared statements (sqlx
//! caches them per connection), the capacity cached, duplicates refused by a unique index.
//!
//! Per registration: `SET lock NX PX` (retried after a short sleep while another request holds
//! it), `BEGIN`, `SELECT COUNT(*) … FOR UPDATE` for the category, `INSERT` when below capacity,
//! `COMMIT`, then the lock is released by a compare-and-delete script. One registration at a
//! time per event, each waiting for its own commit to reach the disk.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::web;
use redis::Script;
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

use crate::Shared;
use crate::common::{
    Decision, Design, Registrant, create_event, insert_registration, is_duplicate, register,
};

/// How long a lock lives if its holder dies without releasing it, in ms (Laravel's
/// `Cache::lock($name, 10)`).
const LOCK_TTL_MS: u64 = 10_000;
/// How long a request waits for the lock before it gives up with a 503, in ms (Laravel's
/// `->block(10)`).
const LOCK_WAIT_MAX_MS: u64 = 10_000;

/// Deletes the lock only while it still holds this request's token (Laravel's `release()`).
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// Makes every lock token unique within this process; the process id makes it unique across.
static LOCK_SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/events", web::post().to(create_event))
        .route("/v1/events/{event_id}/registrations", web::post().to(register::<LockAndTransaction>));
}

/// The lock-and-transaction design.
pub struct LockAndTransaction;

impl Design for LockAndTransaction {
    fn decide(
        state: &Shared,
        event: &str,
        registrant: &Registrant,
    ) -> impl Future<Output = anyhow::Result<Decision>> {
        decide(state, event, registrant)
    }
}

async fn decide(state: &Shared, event: &str, registrant: &Registrant) -> anyhow::Result<Decision> {
    let pool = state.database.as_ref().ok_or_else(|| anyhow::anyhow!("no database configured"))?;
    let redis = state.redis.as_ref().ok_or_else(|| anyhow::anyhow!("no Redis configured"))?;
    let Some(capacity) = state.capacities.get(pool, event, &registrant.category).await? else {
        return Ok(Decision::UnknownCategory);
    };
    let key = format!("{}lock:{event}", state.redis_prefix);
    let token = format!("{}-{}", std::process::id(), LOCK_SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let mut connection = redis.clone();
    if !acquire(state, &mut connection, &key, &token).await? {
        return Ok(Decision::Busy);
    }
    let decision = admit(pool, event, registrant, capacity).await;
    state.stats.count_transaction();
    // Released whatever the transaction did: a lock left behind would stall the event for
    // `LOCK_TTL_MS`.
    let mut invocation = RELEASE_SCRIPT.prepare_invoke();
    invocation.key(&key).arg(&token);
    let _released: i64 = invocation.invoke_async(&mut connection).await?;
    decision
}

/// Takes the event's lock, retrying after a short sleep until `LOCK_WAIT_MAX_MS`; false when it
/// could not.
async fn acquire(
    state: &Shared,
    connection: &mut ConnectionManager,
    key: &str,
    token: &str,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    loop {
        state.stats.lock_attempts.fetch_add(1, Ordering::Relaxed);
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL_MS)
            .query_async(connection)
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        if started.elapsed() >= Duration::from_millis(LOCK_WAIT_MAX_MS) {
            return Ok(false);
        }
        tokio::time::sleep(state.lock_retry).await;
    }
}

/// The transaction: count the category's registrations under a row lock, insert when below
/// capacity.
async fn admit(
    pool: &MySqlPool,
    event: &str,
    registrant: &Registrant,
    capacity: u32,
) -> anyhow::Result<Decision> {
    let mut transaction = pool.begin().await?;
    let (taken,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM registrations WHERE event_id = ? AND category = ? FOR UPDATE")
            .bind(event)
            .bind(&registrant.category)
            .fetch_one(&mut *transaction)
            .await?;
    if taken >= i64::from(capacity) {
        transaction.rollback().await?;
        return Ok(Decision::SoldOut);
    }
    match insert_registration(&mut *transaction, event, registrant).await {
        Ok(id) => {
            transaction.commit().await?;
            Ok(Decision::Confirmed(id))
        }
        Err(error) if is_duplicate(&error) => {
            transaction.rollback().await?;
            Ok(Decision::AlreadyRegistered)
        }
        Err(error) => Err(error.into()),
    }
}
