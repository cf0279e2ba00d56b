//! `redis-counter`: the flash-sale pattern. A Lua script checks the category's counter against
//! its capacity and increments it in one atomic step; an admitted request then inserts its row
//! (one autocommit `INSERT`, its own disk flush). The unique index on (event, e-mail) refuses a
//! second registration of one registrant; when the insert fails the seat goes back (`DECR`).
//!
//! Sold out is answered from Redis alone, without the database.

use std::sync::LazyLock;

use actix_web::web;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::Shared;
use crate::common::{
    Decision, Design, Registrant, create_event, insert_registration, is_duplicate, register,
};

/// Takes a seat when fewer than `ARGV[1]` are taken: returns the new count, or -1 when sold out.
/// Checking before incrementing keeps the counter at or below capacity (no off-by-one, and no
/// overshoot for racing requests to undo).
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
if taken >= tonumber(ARGV[1]) then
    return -1
end
return redis.call('INCR', KEYS[1])",
    )
});

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/events", web::post().to(create_event))
        .route("/v1/events/{event_id}/registrations", web::post().to(register::<RedisCounter>));
}

/// The Redis key that counts the seats taken in a category; the e2e harness sets it when it
/// fills an event up (see `benches/src/bin/e2e/database.rs`).
pub fn counter_key(prefix: &str, event: &str, category: &str) -> String {
    format!("{prefix}taken:{event}:{category}")
}

/// The Redis-counter design.
pub struct RedisCounter;

impl Design for RedisCounter {
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
    let key = counter_key(&state.redis_prefix, event, &registrant.category);
    let mut connection = redis.clone();
    let mut invocation = TAKE_SCRIPT.prepare_invoke();
    invocation.key(&key).arg(capacity);
    let taken: i64 = invocation.invoke_async(&mut connection).await?;
    if taken < 0 {
        return Ok(Decision::SoldOut);
    }
    let inserted = insert_registration(pool, event, registrant).await;
    state.stats.count_transaction();
    match inserted {
        Ok(id) => Ok(Decision::Confirmed(id)),
        Err(error) => {
            give_back(&mut connection, &key).await?;
            if is_duplicate(&error) { Ok(Decision::AlreadyRegistered) } else { Err(error.into()) }
        }
    }
}

/// Returns a seat taken by a request whose row was not stored.
async fn give_back(connection: &mut ConnectionManager, key: &str) -> anyhow::Result<()> {
    let _remaining: i64 = redis::cmd("DECR").arg(key).query_async(connection).await?;
    Ok(())
}
