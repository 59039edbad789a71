//! The PostgreSQL backend, for several hub replicas on one database.
//!
//! Every replica writes, so what SQLite gets from having one writer is made explicit:
//!
//! - every transaction that may append events first takes one transaction-scoped
//!   advisory lock ([`LOG_LOCK`]), before any other statement. Appends are serialised
//!   cluster-wide: the head read under the lock is the committed head, `seq` is head + 1,
//!   contiguous, and commit order equals seq order — PostgreSQL makes a commit visible
//!   before it releases the transaction's locks, and READ COMMITTED takes a snapshot per
//!   statement, after the lock. A reader that has seen seq N has therefore seen every seq
//!   below N (with `nextval` instead, seq 8 could commit before seq 7 and a feed that
//!   moved past 8 would never deliver 7: DESIGN §5, the trap). The same lock makes "look
//!   for a dedup key or Idempotency-Key, then insert" atomic across replicas. The lock is
//!   taken first in every appending transaction, so no lock-order deadlock involves it;
//!   timer and page claims do not append and do not take it.
//! - claims use `FOR UPDATE SKIP LOCKED` plus a lease ([`super::sql::Dialect::skip_locked`]);
//! - migrations run under their own advisory lock (`sql/schema.rs`).
//!
//! Because appends are serial anyway, each replica hands its appending units of work to
//! one task that runs whatever is queued in one transaction ([`super::sql::batch`]): one
//! lock and one WAL flush for a batch of concurrent raises, acks or page results, where
//! one each capped the cluster at the disk's flushes per second. Writes that do not
//! append run in transactions of their own, in parallel.

use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, PgConnection, Postgres, Row as _, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::CommitHook;
use super::Result;
use super::sql::batch::{self, Pending};
use super::sql::store::SqlStore;
use super::sql::{Appends, Backend, Conn, Dialect, HookCell, Job, Row, Value, Write, schema};
use crate::domain::event::Event;

/// Advisory lock key serialising appends ("fpevents" in ASCII).
pub const LOG_LOCK: i64 = 0x6670_6576_656e_7473;

/// Connections per replica: enough for concurrent requests, the feed, the engine and the
/// dispatcher, while a few replicas stay well under PostgreSQL's default 100.
const POOL_SIZE: u32 = 10;

pub type PostgresStore = SqlStore<PostgresBackend>;

/// Connects to `url` (`postgres://user@host/db`) and applies pending migrations.
pub async fn open(url: &str) -> Result<PostgresStore> {
    let options: PgConnectOptions = url.parse().with_context(|| "store url is not a PostgreSQL URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    let hook = Arc::new(HookCell::default());
    let (appends, queue) = mpsc::channel(4 * batch::MAX_BATCH);
    tokio::spawn(append_loop(pool.clone(), queue, hook.clone()));
    let backend = PostgresBackend { pool, appends, hook };
    backend.write(Write::Plain, super::sql::job(|c| Box::pin(schema::migrate(c)))).await?;
    Ok(SqlStore::new(backend))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if rest.contains(':') && at > scheme.len() + 3 => {
            let user = rest.split([':', '@']).next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &url[at..])
        }
        _ => url.to_string(),
    }
}

pub struct PostgresBackend {
    pool: PgPool,
    /// Appending units of work, for [`append_loop`]; it ends when this is dropped.
    appends: mpsc::Sender<Box<dyn Pending>>,
    hook: Arc<HookCell>,
}

/// Runs queued appending units in batches, one transaction under the log lock each.
async fn append_loop(pool: PgPool, mut queue: mpsc::Receiver<Box<dyn Pending>>, hook: Arc<HookCell>) {
    while let Some(first) = queue.recv().await {
        let mut batch = batch::gather(first, &mut queue);
        let commit = append_batch(&pool, &mut batch).await;
        batch::settle(batch, commit, &hook, "PostgreSQL");
    }
}

/// One batch in one transaction; returns the head appended, if any.
async fn append_batch(pool: &PgPool, batch: &mut [Box<dyn Pending>]) -> Result<Option<i64>> {
    let mut tx = PgConn::new(pool.begin().await?);
    // A unit alone needs no savepoint: if it fails, the whole transaction rolls back.
    let alone = batch.len() == 1;
    // Every statement here is a round trip under the log lock, which the whole cluster
    // waits on: the savepoint rides with the lock, and one statement ends a unit and
    // opens the next (a savepoint rolled back to stays, ready for the next unit).
    let lock = format!("SELECT pg_advisory_xact_lock({LOG_LOCK}){}", if alone { "" } else { "; SAVEPOINT unit" });
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock)).execute(&mut *tx.conn).await?;
    let (mut head, mut kept) = (None, 0);
    let last = batch.len().saturating_sub(1);
    for (i, item) in batch.iter_mut().enumerate() {
        tx.appends.head = None;
        let tail = tx.appends.tail;
        let ok = item.run(&mut tx).await;
        if !ok {
            tx.appends.tail = tail;
        }
        if !alone {
            let next = match (ok, i == last) {
                (true, false) => Some("RELEASE unit; SAVEPOINT unit"),
                (true, true) => None, // COMMIT releases it
                (false, _) => Some("ROLLBACK TO unit"),
            };
            if let Some(sql) = next {
                sqlx::raw_sql(sql).execute(&mut *tx.conn).await?;
            }
        }
        if ok {
            kept += 1;
            head = head.max(tx.appends.head);
        }
    }
    if kept == 0 {
        tx.conn.rollback().await?;
        return Ok(None);
    }
    tx.conn.commit().await?;
    Ok(head)
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn write<R: Send + 'static>(&self, kind: Write, job: Job<R>) -> Result<R> {
        if kind == Write::Appends {
            let (item, answer) = batch::pending(job);
            self.appends.send(item).await.map_err(|_| anyhow::anyhow!("the PostgreSQL appender has stopped"))?;
            return batch::answer(answer).await;
        }
        let mut tx = PgConn::new(self.pool.begin().await?);
        let mut outcome = job(&mut tx).await;
        if outcome.is_ok()
            && let Err(e) = tx.flush().await
        {
            outcome = Err(e);
        }
        match outcome {
            Ok(value) => {
                let head = tx.appends.head;
                tx.conn.commit().await?;
                if let Some(head) = head {
                    self.hook.announce(head);
                }
                Ok(value)
            }
            Err(e) => {
                let _ = tx.conn.rollback().await;
                Err(e)
            }
        }
    }

    async fn read<R: Send + 'static>(&self, job: Job<R>) -> Result<R> {
        let mut conn = PgConn::new(self.pool.acquire().await?);
        job(&mut conn).await
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        self.hook.set(hook);
    }

    fn recent_after(&self, _after: i64, _limit: u32) -> Option<Vec<crate::store::FeedEvent>> {
        None
    }
}

struct PgConn<C> {
    conn: C,
    /// Statements held by [`Conn::defer`], sent as one before the next statement.
    deferred: Vec<(String, Vec<Value>)>,
    /// What the current unit and transaction appended.
    appends: Appends,
}

impl<C> PgConn<C> {
    fn new(conn: C) -> Self {
        PgConn { conn, deferred: Vec::new(), appends: Appends::default() }
    }
}

/// Most parameters held deferred statements carry before they are sent: PostgreSQL takes
/// at most 65,535 in one statement.
const DEFERRED_PARAMS: usize = 30_000;

/// Held statements as one: every one but the last a data-modifying CTE of the last, their
/// placeholders numbered on. Each still runs exactly once, on one snapshot.
fn combine(mut held: Vec<(String, Vec<Value>)>) -> (String, Vec<Value>) {
    if held.len() == 1 {
        return held.remove(0);
    }
    let mut sql = String::new();
    let mut params = Vec::new();
    let last = held.len().saturating_sub(1);
    for (i, (statement, values)) in held.into_iter().enumerate() {
        match i {
            0 if last > 0 => sql.push_str("WITH "),
            _ if i == last => sql.push(' '),
            _ => sql.push_str(", "),
        }
        if i < last {
            sql.push_str(&format!("held{i} AS ("));
        }
        renumber(&mut sql, &statement, params.len());
        if i < last {
            sql.push(')');
        }
        params.extend(values);
    }
    (sql, params)
}

/// Appends `statement` to `out` with each `$n` placeholder moved up by `offset`. The
/// store's statements are its own constants, with no `$` in a literal.
fn renumber(out: &mut String, statement: &str, offset: usize) {
    let mut rest = statement;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    params: &[Value],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for p in params {
        q = match p {
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.clone()),
            Value::Blob(v) => q.bind(v.clone()),
        };
    }
    q
}

fn row_of(row: &PgRow, names: &std::sync::Arc<[String]>) -> Result<Row> {
    let mut values = Vec::with_capacity(names.len());
    for (i, column) in row.columns().iter().enumerate() {
        let null = row.try_get_raw(i)?.is_null();
        let value = match column.type_info().name() {
            "INT8" => Value::Int(row.try_get::<Option<i64>, _>(i)?),
            "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(row.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Int(row.try_get::<Option<bool>, _>(i)?.map(i64::from)),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get::<Option<String>, _>(i)?),
            "BYTEA" => Value::Blob(row.try_get::<Option<Vec<u8>>, _>(i)?),
            _ if null => Value::Int(None),
            other => anyhow::bail!("unexpected column type {other} for {:?}", column.name()),
        };
        values.push(value);
    }
    Ok(Row { names: names.clone(), values })
}

/// The core's connection on PostgreSQL: a transaction (writes) or a pooled connection
/// (reads), with the head it appended.
#[async_trait]
impl<C: DerefMut<Target = PgConnection> + Send> Conn for PgConn<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.flush().await?;
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())), params);
        Ok(q.execute(&mut *self.conn).await?.rows_affected())
    }
    async fn execute_script(&mut self, sql: &str) -> Result<()> {
        self.flush().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *self.conn).await?;
        Ok(())
    }
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.flush().await?;
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())), params);
        let rows = q.fetch_all(&mut *self.conn).await?;
        let Some(first) = rows.first() else { return Ok(Vec::new()) };
        let names: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_string()).collect();
        rows.iter().map(|r| row_of(r, &names)).collect()
    }
    async fn defer(&mut self, sql: &str, params: &[Value]) -> Result<()> {
        let held: usize = self.deferred.iter().map(|(_, p)| p.len()).sum();
        if held + params.len() > DEFERRED_PARAMS {
            self.flush().await?;
        }
        self.deferred.push((sql.to_string(), params.to_vec()));
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let (sql, params) = combine(std::mem::take(&mut self.deferred));
        // Prepared and cached like any statement: a unit of one kind defers the same
        // shapes every time, and planning the combination anew cost more than its
        // execution (a raise's seven INSERTs: 600 µs unprepared, 310 µs prepared).
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), &params);
        q.execute(&mut *self.conn).await?;
        Ok(())
    }
    fn appended(&mut self, seq: i64, hash: [u8; 32]) {
        self.appends.record(seq, hash);
    }

    fn tail(&self) -> Option<(i64, [u8; 32])> {
        self.appends.tail
    }

    /// Replicas each follow the shared log: what one node appended is not the whole feed.
    fn kept_events(&mut self) -> Option<&mut Vec<(Event, Option<String>)>> {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn held_statements_combine_into_one_with_placeholders_numbered_on() {
        let held = vec![
            ("INSERT INTO a (x, y) VALUES ($1, $2)".to_string(), vec![1i64.into(), 2i64.into()]),
            ("INSERT INTO b (x) VALUES ($1), ($2) ON CONFLICT DO NOTHING".to_string(), vec![3i64.into(), 4i64.into()]),
            ("INSERT INTO c (x) VALUES ($1)".to_string(), vec![5i64.into()]),
        ];
        let (sql, params) = super::combine(held);
        assert_eq!(
            sql,
            "WITH held0 AS (INSERT INTO a (x, y) VALUES ($1, $2)), \
             held1 AS (INSERT INTO b (x) VALUES ($3), ($4) ON CONFLICT DO NOTHING) \
             INSERT INTO c (x) VALUES ($5)"
        );
        assert_eq!(params.len(), 5);
        let one = vec![("INSERT INTO a (x) VALUES ($1)".to_string(), vec![1i64.into()])];
        assert_eq!(super::combine(one).0, "INSERT INTO a (x) VALUES ($1)");
    }

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(super::redact("postgres://fp:secret@db:5432/fp"), "postgres://fp:***@db:5432/fp");
        assert_eq!(super::redact("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
    }
}
