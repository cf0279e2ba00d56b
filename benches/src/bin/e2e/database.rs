//! MariaDB and Redis around each contender: a fresh database and a database user of its own
//! (so that MariaDB's per-user statistics count that contender's statements and rows alone,
//! whatever else uses the server), the checks afterwards, topping an event up, and cleaning up.

use anyhow::Context;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{AssertSqlSafe, MySqlPool};

use crate::http::CATEGORY;
use crate::servers::Contender;

/// Runs `work` in a fresh sandbox named `name` (database and user) with the Redis key prefix
/// `prefix`, then removes both whatever `work` did; `work`'s own error comes first.
pub async fn in_sandbox<T>(
    admin: &Admin,
    redis_url: &str,
    name: &str,
    prefix: &str,
    work: impl AsyncFnOnce(&Sandbox) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let sandbox = admin.create_sandbox(name).await?;
    let measured = work(&sandbox).await;
    let dropped = admin.drop_sandbox(&sandbox).await;
    let cleaned = delete_redis_keys(redis_url, prefix).await;
    let value = measured?;
    dropped.context("dropping the database")?;
    cleaned.context("deleting the Redis keys")?;
    Ok(value)
}

/// Rows one top-up `INSERT` carries.
const TOP_UP_ROWS_PER_STATEMENT: u64 = 1_000;
/// Keys one Redis `SCAN` step returns at most.
const SCAN_COUNT: u64 = 1_000;

/// An administrative connection to MariaDB (the `root` of the base URL).
#[derive(Debug)]
pub struct Admin {
    pool: MySqlPool,
    base_url: String,
    /// Contenders connect through this Unix socket instead of TCP, when set.
    socket: Option<String>,
    /// Per-user statistics (`userstat`) are on; otherwise counters are server-wide.
    per_user: bool,
    /// `userstat` was off before this run turned it on; it is turned off again at the end.
    restore_userstat: bool,
}

/// One contender's database, and the user it connects as.
#[derive(Debug)]
pub struct Sandbox {
    pub name: String,
    /// What the contender connects to: its own user and database.
    pub server_url: String,
}

/// Statements and rows written, as MariaDB counts them, and the CPU time MariaDB spent on the
/// contender's connections (per-user statistics only: `None` without them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub statements: u64,
    pub rows_written: u64,
    pub cpu_seconds: Option<f64>,
}

impl Counters {
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            statements: self.statements.saturating_sub(before.statements),
            rows_written: self.rows_written.saturating_sub(before.rows_written),
            cpu_seconds: self
                .cpu_seconds
                .zip(before.cpu_seconds)
                .map(|(after, before)| (after - before).max(0.0)),
        }
    }
}

/// The server's page flushing (server-wide, whoever writes): pages flushed so far, and the
/// checkpoint age against its limit. MariaDB flushes hard as the age nears the limit, and its
/// commits stall meanwhile (docs/benchmarks.md, "Where the open loop's stalls come from").
#[derive(Clone, Copy, Debug, Default)]
pub struct Flushing {
    pub pages_flushed: u64,
    pub checkpoint_age: u64,
    pub checkpoint_age_max: u64,
}

/// Active registrations of an event, as stored.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub rows: u64,
    pub distinct_registrants: u64,
}

impl Admin {
    pub async fn connect(base_url: &str, socket: Option<String>) -> anyhow::Result<Admin> {
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(base_url)
            .await
            .with_context(|| format!("connecting to MariaDB at {base_url}"))?;
        let (enabled,): (i64,) =
            sqlx::query_as("SELECT CAST(@@GLOBAL.userstat AS SIGNED)").fetch_one(&pool).await.unwrap_or((0,));
        let mut admin = Admin {
            pool,
            base_url: base_url.to_string(),
            socket,
            per_user: enabled == 1,
            restore_userstat: false,
        };
        if !admin.per_user && sqlx::query("SET GLOBAL userstat = 1").execute(&admin.pool).await.is_ok() {
            admin.per_user = true;
            admin.restore_userstat = true;
        }
        Ok(admin)
    }

    /// How contenders reach MariaDB, for the report.
    pub fn transport(&self) -> String {
        match &self.socket {
            Some(socket) => format!("Unix socket {socket}"),
            None => format!("TCP {}", host_part(&self.base_url)),
        }
    }

    /// True when counters are this contender's own; false when they are server-wide.
    pub fn counts_per_user(&self) -> bool {
        self.per_user
    }

    /// The server's version and the settings that decide what a commit costs, and whether it
    /// must flush pages during a long sale (a redo log smaller than the sale's redo: see
    /// docs/operations.md, "Sizing MariaDB for a sale").
    pub async fn describe(&self) -> anyhow::Result<String> {
        let (version, flush, sync_binlog, log_bin, redo, pool): (String, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT @@version, CAST(@@innodb_flush_log_at_trx_commit AS SIGNED), \
             CAST(@@sync_binlog AS SIGNED), CAST(@@log_bin AS SIGNED), CAST(@@innodb_log_file_size AS SIGNED), \
             CAST(@@innodb_buffer_pool_size AS SIGNED)",
        )
        .fetch_one(&self.pool)
        .await?;
        let mib = |bytes: i64| bytes / (1 << 20);
        Ok(format!(
            "MariaDB {version}, innodb_flush_log_at_trx_commit={flush}, log_bin={log_bin}, sync_binlog={sync_binlog}, \
             redo log {} MiB, buffer pool {} MiB",
            mib(redo),
            mib(pool)
        ))
    }

    /// A new database and a user that may use only it.
    pub async fn create_sandbox(&self, name: &str) -> anyhow::Result<Sandbox> {
        for statement in [
            format!("CREATE DATABASE {name}"),
            format!("CREATE USER '{name}'@'%'"),
            format!("GRANT ALL PRIVILEGES ON {name}.* TO '{name}'@'%'"),
        ] {
            // `name` is made by the harness from hex digits: nothing to escape.
            sqlx::query(AssertSqlSafe(statement)).execute(&self.pool).await?;
        }
        let server_url = match &self.socket {
            Some(socket) => format!("mysql://{name}@localhost/{name}?socket={socket}"),
            None => format!("mysql://{name}@{}/{name}", host_part(&self.base_url)),
        };
        Ok(Sandbox { name: name.to_string(), server_url })
    }

    pub async fn drop_sandbox(&self, sandbox: &Sandbox) -> anyhow::Result<()> {
        let name = &sandbox.name;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&self.pool).await?;
        sqlx::query(AssertSqlSafe(format!("DROP USER IF EXISTS '{name}'@'%'"))).execute(&self.pool).await?;
        Ok(())
    }

    /// The sandbox user's statements and rows written so far (or the server's, without
    /// `userstat`). `BEGIN` and `COMMIT` count as statements.
    pub async fn counters(&self, sandbox: &Sandbox) -> anyhow::Result<Counters> {
        if self.per_user {
            let row: Option<(i64, i64, f64)> = sqlx::query_as(
                "SELECT CAST(SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS AS SIGNED), \
                 CAST(ROWS_INSERTED + ROWS_UPDATED + ROWS_DELETED AS SIGNED), CAST(CPU_TIME AS DOUBLE) \
                 FROM information_schema.USER_STATISTICS WHERE USER = ?",
            )
            .bind(&sandbox.name)
            .fetch_optional(&self.pool)
            .await?;
            let (statements, rows_written, cpu_seconds) = row.unwrap_or_default();
            return Ok(Counters {
                statements: statements as u64,
                rows_written: rows_written as u64,
                cpu_seconds: Some(cpu_seconds),
            });
        }
        let status =
            self.global_status("'QUESTIONS', 'HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE'").await?;
        let value = |wanted: &str| status(wanted).unwrap_or(0);
        Ok(Counters {
            statements: value("QUESTIONS"),
            rows_written: value("HANDLER_WRITE") + value("HANDLER_UPDATE") + value("HANDLER_DELETE"),
            cpu_seconds: None,
        })
    }

    /// The server's flushing now; `None` where the server does not say (MySQL has no checkpoint
    /// age among its status variables).
    pub async fn flushing(&self) -> anyhow::Result<Option<Flushing>> {
        let value = self
            .global_status(
                "'INNODB_BUFFER_POOL_PAGES_FLUSHED', 'INNODB_CHECKPOINT_AGE', 'INNODB_CHECKPOINT_MAX_AGE'",
            )
            .await?;
        let flushing = || {
            Some(Flushing {
                pages_flushed: value("INNODB_BUFFER_POOL_PAGES_FLUSHED")?,
                checkpoint_age: value("INNODB_CHECKPOINT_AGE")?,
                checkpoint_age_max: value("INNODB_CHECKPOINT_MAX_AGE")?,
            })
        };
        Ok(flushing())
    }

    /// The server-wide status variables `names` (quoted, comma-separated), read at once; the
    /// lookup gives `None` for a variable the server does not have.
    async fn global_status(&self, names: &str) -> anyhow::Result<impl Fn(&str) -> Option<u64> + use<>> {
        let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ({names})"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(move |wanted: &str| {
            let found = rows.iter().find(|(name, _)| name.eq_ignore_ascii_case(wanted));
            found.and_then(|(_, value)| value.parse().ok())
        })
    }

    /// The active registrations of `event` in the contender's tables.
    pub async fn stored(
        &self,
        sandbox: &Sandbox,
        contender: Contender,
        event: &str,
    ) -> anyhow::Result<Stored> {
        // Kuota keeps ended registrations (cancelled, expired) as rows; the baselines delete.
        let active = match contender {
            Contender::Kuota => " AND status IN ('held', 'confirmed', 'waitlisted')",
            _ => "",
        };
        let statement = format!(
            "SELECT COUNT(*), COUNT(DISTINCT email) FROM {}.registrations WHERE event_id = ?{active}",
            sandbox.name
        );
        let (rows, distinct): (i64, i64) =
            sqlx::query_as(AssertSqlSafe(statement)).bind(event).fetch_one(&self.pool).await?;
        Ok(Stored { rows: rows as u64, distinct_registrants: distinct as u64 })
    }

    /// Fills a baseline's event up with `count` registrations of made-up registrants, straight
    /// into its table (and its Redis counter, for the redis-counter design), so that its sold-out
    /// phase runs against a full event even when its admission phase could not fill it.
    pub async fn top_up(&self, sandbox: &Sandbox, event: &str, count: u64) -> anyhow::Result<()> {
        let mut inserted = 0;
        while inserted < count {
            let rows = TOP_UP_ROWS_PER_STATEMENT.min(count - inserted);
            let values = vec!["(?, ?, ?, 'Filler', ?, 0)"; rows as usize].join(", ");
            let statement = format!(
                "INSERT INTO {}.registrations (event_id, category, email, full_name, idempotency_key, created_at) \
                 VALUES {values}",
                sandbox.name
            );
            let mut query = sqlx::query(AssertSqlSafe(statement));
            for number in inserted..inserted + rows {
                query = query
                    .bind(event)
                    .bind(CATEGORY)
                    .bind(format!("filler{number}@example.org"))
                    .bind(format!("filler-{number}").into_bytes());
            }
            query.execute(&self.pool).await?;
            inserted += rows;
        }
        Ok(())
    }

    /// Turns `userstat` off again when this run turned it on.
    pub async fn close(self) {
        if self.restore_userstat {
            let _ = sqlx::query("SET GLOBAL userstat = 0").execute(&self.pool).await;
        }
        self.pool.close().await;
    }
}

/// `host:port` of `mysql://user@host:port[/database]`.
fn host_part(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest)
}

/// Sets the redis-counter baseline's seat counter (its key format is the one in
/// `benches/src/bin/baseline/redis_counter.rs`).
pub async fn set_seat_counter(redis_url: &str, prefix: &str, event: &str, taken: u64) -> anyhow::Result<()> {
    let mut connection = redis_connection(redis_url).await?;
    let key = format!("{prefix}taken:{event}:{CATEGORY}");
    let () = redis::cmd("SET").arg(key).arg(taken).query_async(&mut connection).await?;
    Ok(())
}

/// Deletes every key under `prefix`.
pub async fn delete_redis_keys(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut connection = redis_connection(redis_url).await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let _deleted: u64 = redis::cmd("DEL").arg(keys).query_async(&mut connection).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

async fn redis_connection(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("parsing the Redis URL {url}"))?;
    client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to Redis at {url}"))
}

#[cfg(test)]
mod tests {
    use super::host_part;

    #[test]
    fn the_host_is_what_lies_between_the_credentials_and_the_database() {
        assert_eq!(host_part("mysql://root@127.0.0.1:3306"), "127.0.0.1:3306");
        assert_eq!(host_part("mysql://root:secret@db:3306/kuota"), "db:3306");
        assert_eq!(host_part("mysql://127.0.0.1:3306"), "127.0.0.1:3306");
    }
}
