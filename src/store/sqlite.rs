//! The embedded SQLite backend: one file, WAL, zero set-up.
//!
//! # One writer that owns its connection
//!
//! SQLite allows one writer at a time, so writes go to one thread that owns the write
//! connection and its prepared statements: a unit of work runs there to completion with
//! no thread hop per statement (the core's futures never wait on anything but the
//! connection, so the thread simply polls them). Units that arrive while a transaction is
//! being written wait in the queue and are then written together in one transaction,
//! each inside its own savepoint, so one failing unit rolls back alone while the batch
//! shares one commit (group commit): under load, the cost of a commit is spread over
//! every raise, acknowledgement, fired step and page result in it. Answers are sent only
//! after the commit, so "2xx after commit" holds for each of them.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`: a second process on the same
//! file (the CLI, a test's second engine) waits for the write lock (busy timeout) instead
//! of failing half-way with SQLITE_BUSY on lock upgrade.
//!
//! Reads run on a few reader threads, each with its own connection; WAL lets them run
//! beside the writer and see every committed transaction.
//!
//! Checkpoints (copying the WAL back into the database file, with its fsync) run on a
//! thread of their own, not in the writer's commits as SQLite does by default: under load
//! they were a seventh of the writer's time, and a passive checkpoint needs no write lock.
//! The writer's savepoints keep their journal in memory (`temp_store = memory`).

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{mpsc, oneshot};

use super::Result;
use super::recent::RecentEvents;
use super::sql::batch::{self, Pending};
use super::sql::events;
use super::sql::store::SqlStore;
use super::sql::{Appends, Backend, Conn, Dialect, HookCell, Job, Row, Value, Write, schema};
use super::{CommitHook, FeedEvent};
use crate::domain::event::Event;

/// Reader threads (and connections).
const READERS: usize = 3;
/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Page cache per connection, in KiB: SQLite's default. Larger caches measured slower
/// (each commit walks the cache's hash table); reads past it come from the memory map.
const CACHE_KIB: i64 = 2 * 1024;
/// WAL length (in pages) past which the checkpointer makes SQLite start the WAL over.
const WAL_RESTART_FRAMES: i64 = 8192;
/// Size the WAL file is trimmed back to when it starts over.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;
/// Reads through a memory map of the file, up to this size, instead of copying pages in.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

pub type SqliteStore = SqlStore<SqliteBackend>;

/// Opens (creating if needed) the database at `url` (`sqlite://path/to/file.db`) and
/// applies pending migrations.
pub async fn open(url: &str, synchronous_full: bool) -> Result<SqliteStore> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path).to_string();
    if path.is_empty() {
        anyhow::bail!("store url {url:?} names no file");
    }
    if let Some(dir) = std::path::Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut writer = connect(&path, synchronous_full).with_context(|| format!("opening SQLite database {path}"))?;
    writer.kept = Some(Vec::new());
    let recent = Arc::new(RecentEvents::default());
    let writer_recent = recent.clone();
    // The checkpointer below does this work, off the writer's commits.
    writer.raw.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let hook = Arc::new(HookCell::default());
    let (jobs, queue) = mpsc::channel(4 * batch::MAX_BATCH);
    let writer_hook = hook.clone();
    // Set by the checkpointer when the WAL is long; the writer then starts it over.
    let restart_wal = Arc::new(AtomicBool::new(false));
    let writer_restart = restart_wal.clone();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || write_loop(writer, queue, writer_hook, writer_restart, writer_recent))
        .context("starting the SQLite writer")?;
    let checkpointer = connect(&path, synchronous_full).with_context(|| format!("opening SQLite database {path}"))?;
    let (stop_checkpoints, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || checkpoint_loop(checkpointer, stopped, restart_wal))
        .context("starting the SQLite checkpointer")?;
    let backend = SqliteBackend { jobs, readers: None, hook, recent, _stop_checkpoints: stop_checkpoints };
    backend.write(Write::Plain, super::sql::job(|c| Box::pin(schema::migrate(c)))).await?;

    let (reads, read_queue) = std::sync::mpsc::channel::<ReadItem>();
    let read_queue = Arc::new(Mutex::new(read_queue));
    for i in 0..READERS {
        let conn = connect(&path, synchronous_full).with_context(|| format!("opening SQLite database {path}"))?;
        let queue = read_queue.clone();
        std::thread::Builder::new()
            .name(format!("sqlite-reader-{i}"))
            .spawn(move || read_loop(conn, queue))
            .context("starting an SQLite reader")?;
    }
    Ok(SqlStore::new(SqliteBackend { readers: Some(reads), ..backend }))
}

fn connect(path: &str, synchronous_full: bool) -> Result<SqliteConn> {
    let raw = rusqlite::Connection::open(path)?;
    raw.busy_timeout(BUSY_TIMEOUT)?;
    // NORMAL in WAL mode survives a killed process (the OS has the pages); FULL also
    // survives power loss, at a cost per commit.
    raw.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{CACHE_KIB}; PRAGMA mmap_size = {MMAP_BYTES}; \
         PRAGMA journal_size_limit = {WAL_KEEP_BYTES};",
        if synchronous_full { "FULL" } else { "NORMAL" }
    ))?;
    raw.set_prepared_statement_cache_capacity(256);
    Ok(SqliteConn { raw, appends: Appends::default(), kept: None })
}

pub struct SqliteBackend {
    jobs: mpsc::Sender<Box<dyn Pending>>,
    /// None only while migrating, before the readers start.
    readers: Option<std::sync::mpsc::Sender<ReadItem>>,
    hook: Arc<HookCell>,
    /// What the writer committed last, for the live feed.
    recent: Arc<RecentEvents>,
    /// Dropped with the store, which ends the checkpointer.
    _stop_checkpoints: std::sync::mpsc::Sender<()>,
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn write<R: Send + 'static>(&self, _kind: Write, job: Job<R>) -> Result<R> {
        let (item, answer) = batch::pending(job);
        self.jobs.send(item).await.map_err(|_| anyhow::anyhow!("the SQLite writer has stopped"))?;
        batch::answer(answer).await
    }

    async fn read<R: Send + 'static>(&self, job: Job<R>) -> Result<R> {
        let Some(readers) = &self.readers else {
            return self.write(Write::Plain, job).await;
        };
        let (reply, answer) = oneshot::channel();
        let item: ReadItem = Box::new(move |conn: &mut SqliteConn| {
            let _ = reply.send(block_on(job(conn)));
        });
        readers.send(item).map_err(|_| anyhow::anyhow!("the SQLite readers have stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("an SQLite reader dropped a query"))?
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        self.hook.set(hook);
    }

    fn recent_after(&self, after: i64, limit: u32) -> Option<Vec<FeedEvent>> {
        self.recent.after(after, limit)
    }
}

/// A connection owned by the writer or a reader thread.
pub struct SqliteConn {
    raw: rusqlite::Connection,
    /// What the current unit and transaction appended.
    appends: Appends,
    /// The writer's: the events the current transaction appended ([`Conn::kept_events`]).
    kept: Option<Vec<(Event, Option<String>)>>,
}

impl SqliteConn {
    /// A transaction-control statement, prepared once: these run several times per batch.
    fn control(&self, sql: &str) -> Result<()> {
        self.raw.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

/// `$1` → `?1`: the core writes PostgreSQL placeholders; SQLite's numbered ones are `?N`.
fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    // Byte-wise: `$` and digits are ASCII, so every other byte (UTF-8 included) is copied
    // through unchanged.
    let mut out = sql.as_bytes().to_vec();
    for i in 0..out.len() {
        if out[i] == b'$' && out.get(i + 1).is_some_and(u8::is_ascii_digit) {
            out[i] = b'?';
        }
    }
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| sql.to_string()))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Value::Int(None) | Value::Text(None) | Value::Blob(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

fn value_of(v: ValueRef<'_>) -> Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Int(None),
        ValueRef::Integer(i) => Value::Int(Some(i)),
        ValueRef::Text(t) => Value::Text(Some(std::str::from_utf8(t)?.to_string())),
        ValueRef::Blob(b) => Value::Blob(Some(b.to_vec())),
        ValueRef::Real(r) => anyhow::bail!("unexpected REAL {r} in the store"),
    })
}

#[async_trait]
impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.raw.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    async fn defer(&mut self, sql: &str, params: &[Value]) -> Result<()> {
        // In-process: a statement costs no round trip, so nothing is gained by holding it.
        self.execute(sql, params).await.map(|_| ())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    async fn execute_script(&mut self, sql: &str) -> Result<()> {
        Ok(self.raw.execute_batch(sql)?)
    }

    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.raw.prepare_cached(&placeholders(sql))?;
        let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_string).collect();
        let width = names.len();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..width).map(|i| value_of(row.get_ref(i)?)).collect::<Result<Vec<_>>>()?;
            out.push(Row { names: names.clone(), values });
        }
        Ok(out)
    }

    fn appended(&mut self, seq: i64, hash: [u8; 32]) {
        self.appends.record(seq, hash);
    }

    fn tail(&self) -> Option<(i64, [u8; 32])> {
        self.appends.tail
    }

    fn kept_events(&mut self) -> Option<&mut Vec<(Event, Option<String>)>> {
        self.kept.as_mut()
    }
}

/// Runs a future on this thread to completion. The core's futures complete without
/// waiting (every statement runs synchronously here), so this rarely parks.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn write_loop(
    mut conn: SqliteConn,
    mut queue: mpsc::Receiver<Box<dyn Pending>>,
    hook: Arc<HookCell>,
    restart_wal: Arc<AtomicBool>,
    recent: Arc<RecentEvents>,
) {
    while let Some(first) = queue.blocking_recv() {
        if restart_wal.swap(false, Ordering::Relaxed) {
            // Between transactions, so the writer lock is ours at once; the checkpointer
            // has already copied nearly every frame, so this waits only for readers.
            if let Err(e) = conn.raw.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "SQLite WAL restart failed; the checkpointer will ask again");
            }
        }
        let mut batch = batch::gather(first, &mut queue);
        let commit = write_batch(&mut conn, &mut batch, &recent);
        batch::settle(batch, commit, &hook, "SQLite");
    }
}

/// Writes a batch in one transaction; returns the head appended, if any. The events it
/// appended go to `recent` after the commit, before the caller announces it.
fn write_batch(conn: &mut SqliteConn, batch: &mut [Box<dyn Pending>], recent: &RecentEvents) -> Result<Option<i64>> {
    conn.control("BEGIN IMMEDIATE")?;
    conn.appends.tail = None;
    if let Some(kept) = &mut conn.kept {
        kept.clear();
    }
    // A unit alone needs no savepoint: if it fails, the whole transaction rolls back.
    let alone = batch.len() == 1;
    let mut head = None;
    let mut kept = 0;
    let mut run = || -> Result<()> {
        for item in batch.iter_mut() {
            conn.appends.head = None;
            let tail = conn.appends.tail;
            let appended = conn.kept.as_ref().map_or(0, Vec::len);
            if !alone {
                conn.control("SAVEPOINT unit")?;
            }
            let ok = block_on(item.run(conn));
            if !ok {
                conn.appends.tail = tail;
                if let Some(events) = &mut conn.kept {
                    events.truncate(appended);
                }
            }
            if !alone {
                if !ok {
                    conn.control("ROLLBACK TO unit")?;
                }
                conn.control("RELEASE unit")?;
            }
            if ok {
                kept += 1;
                head = head.max(conn.appends.head);
            }
        }
        Ok(())
    };
    match run() {
        Err(e) => {
            let _ = conn.raw.execute_batch("ROLLBACK");
            Err(e)
        }
        Ok(()) if kept == 0 => {
            conn.raw.execute_batch("ROLLBACK")?;
            Ok(None)
        }
        Ok(()) => {
            // Their audiences as this transaction leaves them; if that read fails, the feed
            // reads these events from the store instead.
            let appended = conn.kept.as_mut().map(std::mem::take).unwrap_or_default();
            let shown = if appended.is_empty() {
                None
            } else {
                block_on(events::with_audiences(conn, appended))
                    .inspect_err(|e| tracing::debug!(error = %e, "no audiences for the feed from the writer"))
                    .ok()
            };
            if let Err(e) = conn.control("COMMIT") {
                let _ = conn.raw.execute_batch("ROLLBACK");
                return Err(e);
            }
            if let Some(shown) = shown {
                recent.push(shown);
            }
            Ok(head)
        }
    }
}

/// Copies committed WAL frames into the database file every [`CHECKPOINT_EVERY`], until
/// the store is dropped.
///
/// Passive rounds never block the writer or a reader. But SQLite only starts the WAL
/// over when a write transaction begins with every frame copied, which under steady load
/// (a commit every millisecond, a checkpoint every 250) almost never happens: the WAL
/// would grow without end, and every read with it. So once it holds more than
/// [`WAL_RESTART_FRAMES`], the checkpointer asks the writer to run a RESTART checkpoint
/// between two transactions (the only moment no write lock is held; from here it would
/// only spin on the lock), and the next commit starts the WAL from the beginning
/// (`journal_size_limit` then trims the file).
fn checkpoint_loop(conn: SqliteConn, stop: std::sync::mpsc::Receiver<()>, restart_wal: Arc<AtomicBool>) {
    use std::sync::mpsc::RecvTimeoutError;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        match conn.raw.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames > WAL_RESTART_FRAMES => restart_wal.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; retrying"),
        }
    }
}

type ReadItem = Box<dyn FnOnce(&mut SqliteConn) + Send>;

fn read_loop(mut conn: SqliteConn, queue: Arc<Mutex<std::sync::mpsc::Receiver<ReadItem>>>) {
    loop {
        let next = {
            let queue = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            queue.recv()
        };
        match next {
            Ok(item) => item(&mut conn),
            Err(_) => return, // the store was dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn rewrites_numbered_placeholders_only() {
        assert_eq!(placeholders("SELECT $1, $12 FROM t WHERE a = 'x$'"), "SELECT ?1, ?12 FROM t WHERE a = 'x$'");
        assert_eq!(placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(placeholders("SELECT 'é$' || $2"), "SELECT 'é$' || ?2");
    }

    #[test]
    fn tuples_and_lists() {
        use crate::store::sql::{placeholders as list, tuples};
        assert_eq!(tuples(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(tuples(5, 1, 1), "($5)");
        assert_eq!(list(3, 3), "$3, $4, $5");
        assert_eq!(list(1, 0), "");
    }
}
