//! The PostgreSQL and Redis servers the cluster tests need. The URLs come from
//! `FOCALPOINT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `FOCALPOINT_TEST_REDIS` (default `redis://127.0.0.1:6379`). A missing server fails the
//! test with a message saying so: these tests are never skipped silently.
//!
//! Each test gets a fresh database (`fp_t<unix seconds>_<random>`), dropped when its
//! [`TestDatabase`] is dropped; databases left behind by killed runs are dropped by later
//! runs once they are two hours old. Each test gets its own Redis key prefix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

pub fn postgres_admin_url() -> String {
    std::env::var("FOCALPOINT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("FOCALPOINT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("fptest-{}", uuid::Uuid::new_v4().simple())
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("FOCALPOINT_TEST_POSTGRES is a postgres:// URL");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/{db}{query}")
}

async fn admin() -> PgConnection {
    let url = postgres_admin_url();
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL is required by this test but is not reachable at {url}: {e}. \
             Start it, or point FOCALPOINT_TEST_POSTGRES at a server where this user may CREATE DATABASE."
        ),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s (FOCALPOINT_TEST_POSTGRES)"),
    }
}

/// Fails the test with a clear message unless Redis answers PING.
pub async fn require_redis() -> String {
    let url = redis_url();
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(10), ping).await {
        Ok(Ok(_)) => url,
        Ok(Err(e)) => panic!(
            "Redis is required by this test but is not reachable at {url}: {e}. Start it or set FOCALPOINT_TEST_REDIS."
        ),
        Err(_) => panic!("Redis at {url} did not answer within 10 s (FOCALPOINT_TEST_REDIS)"),
    }
}

/// A database of its own for one test; dropped (best effort) with this value.
pub struct TestDatabase {
    pub url: String,
    pub name: String,
}

pub async fn fresh_database() -> TestDatabase {
    let mut conn = admin().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    drop_stale(&mut conn, now).await;
    let name = format!("fp_t{now}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", postgres_admin_url()));
    let _ = conn.close().await;
    TestDatabase { url: with_database(&postgres_admin_url(), &name), name }
}

/// Drops test databases older than two hours (left behind by killed runs).
async fn drop_stale(conn: &mut PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'fp\\_t%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for name in names {
        let born = name.trim_start_matches("fp_t").split('_').next().and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|b| b + 7200 < now) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut *conn)
                .await;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Own thread and runtime: drop may run inside or outside a Tokio runtime.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&postgres_admin_url())).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        });
        let _ = done.join();
    }
}
