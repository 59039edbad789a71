//! The SQL core: every statement and every row mapping of the store, written once for
//! both backends.
//!
//! # Why a connection trait and not a module compiled twice
//!
//! The two backends do not share a driver: PostgreSQL goes through sqlx (async, a pool of
//! network connections), while SQLite is driven by rusqlite on threads that own their
//! connections ([`super::sqlite`]), so a write costs no thread hop per statement. What
//! the core needs from either is small — run a statement with parameters, get rows of
//! plain values back — so it talks to a [`Conn`] (`&mut dyn Conn`), and each backend
//! implements that once. Statements are written with PostgreSQL-style `$1` placeholders;
//! the SQLite connection rewrites them to `?1`. The real dialect differences are the few
//! methods of [`Dialect`] (row locks, the append lock, schema types); everything else —
//! dedup-free SQL, hash chain, leases, merging — is the same text for both.
//!
//! [`store::SqlStore`] implements every store trait once on top of a [`Backend`], which
//! says how a unit of work runs: in a write transaction (SQLite: on the single writer
//! thread, grouped with concurrent work into one commit; PostgreSQL: a transaction that
//! takes the log lock first when it may append) or on a reader.

pub mod batch;
pub mod credentials;
pub mod escalation;
pub mod events;
pub mod incidents;
pub mod outbox;
pub mod rows;
pub mod schema;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use super::{CommitHook, Result};
use crate::domain::event::Event;

/// A parameter or a column value. Nulls are typed, because PostgreSQL wants to know what
/// a NULL parameter is.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_string))
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(Some(v.to_vec()))
    }
}
impl From<uuid::Uuid> for Value {
    fn from(v: uuid::Uuid) -> Self {
        Value::Text(Some(v.to_string()))
    }
}

/// One result row: column names shared by the rows of a result, values by position.
#[derive(Debug, Clone)]
pub struct Row {
    pub names: Arc<[String]>,
    pub values: Vec<Value>,
}

impl Row {
    fn get(&self, name: &str) -> Result<&Value> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| anyhow::anyhow!("no column {name:?} in the result"))?;
        Ok(&self.values[i])
    }
    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name)? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) | Value::Blob(None) => Ok(None),
            other => anyhow::bail!("column {name:?} is not an integer: {other:?}"),
        }
    }
    pub fn i64(&self, name: &str) -> Result<i64> {
        self.opt_i64(name)?.ok_or_else(|| anyhow::anyhow!("column {name:?} is NULL"))
    }
    pub fn u32(&self, name: &str) -> Result<u32> {
        u32::try_from(self.i64(name)?).map_err(|_| anyhow::anyhow!("column {name:?} is out of range"))
    }
    pub fn opt_text(&self, name: &str) -> Result<Option<String>> {
        match self.get(name)? {
            Value::Text(v) => Ok(v.clone()),
            Value::Int(None) | Value::Blob(None) => Ok(None),
            other => anyhow::bail!("column {name:?} is not text: {other:?}"),
        }
    }
    pub fn text(&self, name: &str) -> Result<String> {
        self.opt_text(name)?.ok_or_else(|| anyhow::anyhow!("column {name:?} is NULL"))
    }
    pub fn blob(&self, name: &str) -> Result<Vec<u8>> {
        match self.get(name)? {
            Value::Blob(Some(v)) => Ok(v.clone()),
            other => anyhow::bail!("column {name:?} is not a blob: {other:?}"),
        }
    }
    pub fn uuid(&self, name: &str) -> Result<uuid::Uuid> {
        Ok(uuid::Uuid::parse_str(&self.text(name)?)?)
    }
}

/// What differs between the two SQL dialects, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row locks for a claim's inner SELECT. SQLite has one writer, so none are needed;
    /// PostgreSQL replicas claiming at once take disjoint rows without waiting.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// What a unit of work and its transaction appended, as both backends' connections keep it
/// for [`Conn::appended`] and [`Conn::tail`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Appends {
    /// The highest seq the current unit of work appended (the batch resets it per unit).
    pub head: Option<i64>,
    /// The last append of the current transaction.
    pub tail: Option<(i64, [u8; 32])>,
}

impl Appends {
    pub fn record(&mut self, seq: i64, hash: [u8; 32]) {
        self.head = Some(self.head.map_or(seq, |h| h.max(seq)));
        self.tail = Some((seq, hash));
    }
}

/// A connection inside a unit of work. Statements use `$1`, `$2`, … placeholders.
#[async_trait]
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs several statements without parameters (migrations).
    async fn execute_script(&mut self, sql: &str) -> Result<()>;
    /// Runs a query (or a statement with RETURNING) and returns every row.
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs an INSERT of new rows whose count nobody reads, now or a little later: a
    /// backend may hold it and send what it holds as one statement before the unit's next
    /// statement or its end (PostgreSQL: a raise's seven INSERTs are one round trip under
    /// the log lock instead of seven). An error surfaces there and fails the unit alike.
    /// Held statements run on one snapshot, so none may depend on another's rows.
    async fn defer(&mut self, sql: &str, params: &[Value]) -> Result<()>;
    /// Sends what [`Conn::defer`] holds; a unit of work ends with it (see `batch`).
    async fn flush(&mut self) -> Result<()>;
    /// Remembers that this unit of work appended events up to `seq`, whose hash is
    /// `hash` (the backend announces the highest seq after commit).
    fn appended(&mut self, seq: i64, hash: [u8; 32]);
    /// The head this transaction appended last, if it appended: later units of the same
    /// batch start from it instead of reading it again (nobody else can append while the
    /// transaction holds the log). A batch restores it when it rolls a unit back.
    fn tail(&self) -> Option<(i64, [u8; 32])>;
    /// Where this connection keeps the events it appends, if its backend serves the live
    /// feed from memory (the SQLite writer: see `store::recent`); None elsewhere.
    fn kept_events(&mut self) -> Option<&mut Vec<(Event, Option<String>)>>;
}

impl dyn Conn + '_ {
    pub async fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
    pub async fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params).await?.ok_or_else(|| anyhow::anyhow!("query returned no row"))
    }
}

/// `$first, $first+1, …` for `n` values: the inside of an `IN (…)`.
pub fn placeholders(first: usize, n: usize) -> String {
    let mut sql = String::with_capacity(n * 6);
    push_placeholders(&mut sql, first, n);
    sql
}

/// `($1, $2), ($3, $4), …`: `rows` tuples of `width` placeholders from `first`.
pub fn tuples(first: usize, rows: usize, width: usize) -> String {
    // Built in one buffer: these run for every multi-row statement the writer executes,
    // and a string per placeholder was a tenth of its time.
    let mut sql = String::with_capacity(rows * (width * 6 + 4));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_placeholders(&mut sql, first + r * width, width);
        sql.push(')');
    }
    sql
}

fn push_placeholders(sql: &mut String, first: usize, n: usize) {
    use std::fmt::Write as _;
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        let _ = write!(sql, "${i}");
    }
}

/// A unit of work: runs against one connection, inside a transaction for writes.
pub type Job<R> = Box<dyn for<'c> FnOnce(&'c mut dyn Conn) -> BoxFuture<'c, Result<R>> + Send>;

/// Boxes a closure as a [`Job`] (this also fixes the closure's higher-ranked signature).
pub fn job<R, F>(f: F) -> Job<R>
where
    F: for<'c> FnOnce(&'c mut dyn Conn) -> BoxFuture<'c, Result<R>> + Send + 'static,
{
    Box::new(f)
}

/// Whether a write may append events. PostgreSQL takes the log lock first for those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Appends,
    Plain,
}

/// How units of work run on a backend.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `job` in a write transaction and commits it; the answer comes only after the
    /// commit (promise 1). A failed job changes nothing. When the job appended events,
    /// the highest seq is announced through the commit hook after the commit.
    async fn write<R: Send + 'static>(&self, kind: Write, job: Job<R>) -> Result<R>;
    /// Runs `job` on a connection that sees every committed write.
    async fn read<R: Send + 'static>(&self, job: Job<R>) -> Result<R>;
    /// Sets the hook told the new head after each commit that appended events.
    fn set_commit_hook(&self, hook: CommitHook);
    /// The events after `after` from memory, if the backend holds all of them (see
    /// `store::recent`); None: read them from the store.
    fn recent_after(&self, after: i64, limit: u32) -> Option<Vec<crate::store::FeedEvent>>;
}

/// Where a backend keeps its commit hook (set once the bus exists, after the store).
#[derive(Default)]
pub struct HookCell(std::sync::RwLock<Option<CommitHook>>);

impl HookCell {
    pub fn set(&self, hook: CommitHook) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hook);
    }

    /// Tells the hook, if any, that events up to `seq` are committed.
    pub fn announce(&self, seq: i64) {
        let hook = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if let Some(hook) = hook {
            hook(seq);
        }
    }
}
