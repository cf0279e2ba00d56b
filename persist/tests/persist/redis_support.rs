//! A Redis connection for tests under a random key prefix, shared by the lease and session
//! tests.

use kuota_persist::random;
use redis::aio::ConnectionManager;

const TEST_REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379";

/// A Redis connection under a random key prefix; dropping it deletes every key under the prefix,
/// also when the test panicked.
pub struct TestRedis {
    pub client: redis::Client,
    pub connection: ConnectionManager,
    pub prefix: String,
}

impl TestRedis {
    pub async fn connect() -> TestRedis {
        let url = std::env::var("KUOTA_TEST_REDIS_URL").unwrap_or_else(|_| TEST_REDIS_URL_DEFAULT.to_owned());
        let client = redis::Client::open(url).expect("KUOTA_TEST_REDIS_URL must be a valid Redis URL");
        let connection = ConnectionManager::new(client.clone())
            .await
            .expect("the test Redis (KUOTA_TEST_REDIS_URL) must be running for these tests");
        TestRedis { client, connection, prefix: format!("kuota_t_{}:", random::token_hex(8)) }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // A synchronous connection, because cleanup must also run while a failed test unwinds.
        let Ok(mut connection) = self.client.get_connection() else {
            return;
        };
        let keys: Vec<String> =
            match redis::Commands::scan_match(&mut connection, format!("{}*", self.prefix)) {
                Ok(iterator) => iterator.filter_map(Result::ok).collect(),
                Err(_) => return,
            };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}
