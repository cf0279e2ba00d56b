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

/// How long a private Redis may take to start answering, in milliseconds.
const PRIVATE_REDIS_START_TIMEOUT_MS: u64 = 10_000;

/// A redis-server of the test's own, on a free loopback port in a temp folder, that the test may
/// freeze (SIGSTOP) and thaw: never the shared one. Dropping it kills the process and deletes
/// the folder.
pub struct PrivateRedis {
    pub url: String,
    process: std::process::Child,
    folder: std::path::PathBuf,
}

impl PrivateRedis {
    /// Starts `redis-server` (from `PATH`, or `KUOTA_TEST_REDIS_SERVER`) and waits until it
    /// answers PING.
    pub async fn start() -> PrivateRedis {
        PrivateRedis::start_on(free_port()).await
    }

    /// Like `start`, on `port`.
    pub async fn start_on(port: u16) -> PrivateRedis {
        let server = std::env::var("KUOTA_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let folder = std::env::temp_dir().join(format!("kuota_t_redis_{}", random::token_hex(8)));
        std::fs::create_dir_all(&folder).expect("the temp folder is writable");
        let process = std::process::Command::new(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&folder)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {server} for a private Redis: {error}"));
        let redis = PrivateRedis { url: format!("redis://127.0.0.1:{port}"), process, folder };
        let started = std::time::Instant::now();
        let client = redis::Client::open(redis.url.as_str()).expect("the URL is valid");
        loop {
            let answered = match client.get_multiplexed_async_connection().await {
                Ok(mut connection) => redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok(),
                Err(_) => false,
            };
            if answered {
                return redis;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_millis(PRIVATE_REDIS_START_TIMEOUT_MS),
                "the private Redis did not answer within {PRIVATE_REDIS_START_TIMEOUT_MS} ms"
            );
            // Polling a process that is starting: there is nothing to await instead.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).expect("the URL is valid")
    }

    /// Stops the process (SIGSTOP): connections stay open and commands go unanswered, as with a
    /// frozen VM.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT); it answers what was sent meanwhile, in order.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(self.process.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} of the private Redis failed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // A frozen process still dies of SIGKILL; this one is ours, started above.
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port is free")
        .port()
}
