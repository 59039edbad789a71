//! The embedded SQLite backend: one file, WAL, zero set-up.
//!
//! Writes go through a pool of exactly one connection and every write transaction starts
//! with `BEGIN IMMEDIATE`: SQLite allows one writer at a time anyway, and taking the write
//! lock up front means a second process on the same file waits (busy timeout) instead of
//! failing half-way with SQLITE_BUSY on lock upgrade. Reads use a separate pool, which WAL
//! lets run beside the writer.

mod credentials;
mod escalation;
mod events;
mod fire_batch;
mod group_commit;
mod incidents;
mod outbox;
mod rows;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use super::*;
use crate::domain::event::Event;
use crate::engine::plan::StepPlan;

/// Migrations, applied in order once each; embedded so the binary needs no files.
const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("migrations/0001_init.sql")), (2, include_str!("migrations/0002_dispatch.sql"))];

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Raises go through one task that commits them in batches ([`group_commit`]).
    raises: tokio::sync::mpsc::Sender<group_commit::Job>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path/to/file.db`) and
    /// applies pending migrations.
    pub async fn open(url: &str, synchronous_full: bool) -> Result<SqliteStore> {
        let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .with_context(|| format!("store url {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a killed process (the OS has the pages); FULL
            // also survives power loss, at a cost per commit.
            .synchronous(if synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(false))
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        let raises = group_commit::start(writer.clone());
        let store = SqliteStore { writer, reader, raises };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(&mut *tx).await?;
        for (version, sql) in MIGRATIONS {
            if current.is_some_and(|c| c >= *version) {
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("applying migration {version}"))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A write transaction holding SQLite's write lock from its first statement.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn raise(&self, raise: RaiseRecord) -> Result<RaiseOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.raises.send((raise, reply)).await.map_err(|_| anyhow::anyhow!("the raise writer has stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the raise writer dropped a raise"))?
    }

    async fn acknowledge(&self, ack: AckRecord) -> Result<AckOutcome> {
        let mut tx = self.begin().await?;
        let outcome = incidents::acknowledge(&mut tx, ack).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn add_note(&self, note: NoteRecord) -> Result<ChangeOutcome> {
        let mut tx = self.begin().await?;
        let outcome = incidents::add_note(&mut tx, note).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn close(&self, close: CloseRecord) -> Result<ChangeOutcome> {
        let mut tx = self.begin().await?;
        let outcome = incidents::close(&mut tx, close).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn incident(&self, id: Uuid) -> Result<Option<(Incident, Audience)>> {
        let mut conn = self.reader.acquire().await?;
        let Some(incident) = rows::load_incident(&mut conn, id).await? else {
            return Ok(None);
        };
        let audience = rows::load_audience(&mut conn, id).await?;
        Ok(Some((incident, audience)))
    }

    async fn timeline(&self, id: Uuid) -> Result<Vec<FeedEvent>> {
        events::timeline(&self.reader, id).await
    }

    async fn list_incidents(&self, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
        incidents::list(&self.reader, query, viewer).await
    }

    async fn visible_events(&self, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
        events::visible_after(&self.reader, after, limit, viewer).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
        events::all_after(&self.reader, after, limit).await
    }

    async fn head_seq(&self) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(&self.reader).await?;
        Ok(head.unwrap_or(0))
    }

    async fn verify_chain(&self) -> Result<ChainReport> {
        events::verify(&self.reader).await
    }

    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<TimerKey>> {
        let mut tx = self.begin().await?;
        let timers = escalation::claim_due(&mut tx, now, owner, lease.as_millis() as i64, limit).await?;
        tx.commit().await?;
        Ok(timers)
    }

    async fn claim_party_timer(
        &self,
        incident: Uuid,
        party: &str,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<TimerKey>> {
        let mut tx = self.begin().await?;
        let timer = escalation::claim_party(&mut tx, incident, party, now, owner, lease.as_millis() as i64).await?;
        tx.commit().await?;
        Ok(timer)
    }

    async fn fire_step(
        &self,
        timer: &TimerKey,
        owner: &str,
        plan: &StepPlan,
        now: DateTime<Utc>,
    ) -> Result<FireOutcome> {
        let mut tx = self.begin().await?;
        let steps = [(timer.clone(), plan.clone())];
        let outcome = fire_batch::fire_many(&mut tx, &steps, owner, now).await?.pop().unwrap_or(FireOutcome::Stale);
        tx.commit().await?;
        Ok(outcome)
    }

    async fn pages(&self, incident: Uuid) -> Result<Vec<PageRecord>> {
        escalation::pages(&self.reader, incident).await
    }

    async fn fire_steps(
        &self,
        steps: &[(TimerKey, StepPlan)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<FireOutcome>> {
        let mut tx = self.begin().await?;
        let outcomes = fire_batch::fire_many(&mut tx, steps, owner, now).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn incidents(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, (Incident, Audience)>> {
        let mut conn = self.reader.acquire().await?;
        rows::load_many(&mut conn, ids).await
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        escalation::next_due(&self.reader).await
    }

    async fn pending_timers(&self) -> Result<u64> {
        escalation::pending(&self.reader).await
    }

    async fn claim_pages(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxPage>> {
        let mut tx = self.begin().await?;
        let pages = outbox::claim(&mut tx, now, owner, lease.as_millis() as i64, limit).await?;
        tx.commit().await?;
        Ok(pages)
    }

    async fn record_page(
        &self,
        page: &OutboxPage,
        owner: &str,
        result: &PageResult,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let seq = outbox::record(&mut tx, page, owner, result, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn page_status(&self, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let seq = outbox::provider_status(&mut tx, provider_id, status, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn outbox_backlog(&self) -> Result<(Option<DateTime<Utc>>, u64)> {
        outbox::backlog(&self.reader).await
    }

    async fn outbox_pages(&self, incident: Uuid) -> Result<Vec<OutboxPage>> {
        outbox::incident_pages(&self.reader, incident).await
    }

    async fn active_incident_by_ref(&self, reference: &str) -> Result<Option<Uuid>> {
        outbox::incident_by_ref(&self.reader, reference).await
    }

    async fn insert_ack_token(
        &self,
        token_hash: &[u8],
        token: &AckToken,
        outbox_id: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        outbox::insert_ack_token(&self.writer, token_hash, token, outbox_id, now).await
    }

    async fn ack_token(&self, token_hash: &[u8]) -> Result<Option<AckToken>> {
        outbox::ack_token(&self.reader, token_hash).await
    }

    async fn consume_ack_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
        outbox::consume_ack_token(&self.writer, token_hash, now).await
    }

    async fn first_inbound_message(&self, sid: &str, now: DateTime<Utc>) -> Result<bool> {
        outbox::first_inbound(&self.writer, sid, now).await
    }

    async fn instance_secret(&self, name: &str, proposed: &str) -> Result<String> {
        outbox::instance_secret(&self.writer, name, proposed).await
    }

    async fn insert_token(&self, token_hash: &[u8], focal_point: &str, label: &str) -> Result<()> {
        credentials::insert_token(&self.writer, token_hash, focal_point, label).await
    }

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<String>> {
        credentials::token_owner(&self.reader, token_hash).await
    }

    async fn revoke_tokens(&self, focal_point: &str) -> Result<u64> {
        credentials::revoke_tokens(&self.writer, focal_point).await
    }

    async fn set_password(&self, focal_point: &str, phc: &str) -> Result<()> {
        credentials::set_password(&self.writer, focal_point, phc).await
    }

    async fn password_hash(&self, focal_point: &str) -> Result<Option<String>> {
        credentials::password_hash(&self.reader, focal_point).await
    }

    async fn insert_session(&self, session_hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()> {
        credentials::insert_session(&self.writer, session_hash, focal_point, expires_at).await
    }

    async fn session_owner(&self, session_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
        credentials::session_owner(&self.reader, session_hash, now).await
    }

    async fn delete_session(&self, session_hash: &[u8]) -> Result<()> {
        credentials::delete_session(&self.writer, session_hash).await
    }

    async fn credential_count(&self) -> Result<u64> {
        credentials::count(&self.reader).await
    }
}
