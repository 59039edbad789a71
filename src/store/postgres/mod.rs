//! The PostgreSQL backend, for several hub replicas on one database.
//!
//! Behaviour matches the SQLite backend method for method (the contract tests in
//! `tests/api/store_contract.rs` run against both). What differs is how writers are kept
//! apart: SQLite has one writer by construction; here every replica writes, so
//!
//! - every transaction that appends events first takes one transaction-scoped advisory
//!   lock ([`events::lock_log`]): appends are serialised cluster-wide, `seq` is head + 1,
//!   contiguous, and commit order equals seq order (see `events.rs` for why that matters
//!   to readers);
//! - timers are claimed with `FOR UPDATE SKIP LOCKED` plus a lease, and firing re-checks
//!   the lease under the log lock, so two replicas never fire one step;
//! - migrations run under their own advisory lock, so replicas starting together apply
//!   each migration once.

mod credentials;
mod escalation;
mod events;
mod incidents;
mod outbox;
mod rows;

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::*;
use crate::domain::event::Event;
use crate::engine::plan::StepPlan;

/// Migrations, applied in order once each; embedded so the binary needs no files.
const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("migrations/0001_init.sql")), (2, include_str!("migrations/0002_dispatch.sql"))];

/// Advisory lock key held while migrating ("fpmigrat" in ASCII, to stay clear of others).
const MIGRATION_LOCK: i64 = 0x6670_6d69_6772_6174;

/// Connections per replica: enough for concurrent requests, the feed, the engine and the
/// dispatcher, while a few replicas stay well under PostgreSQL's default 100.
const POOL_SIZE: u32 = 10;

type Tx = Transaction<'static, Postgres>;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
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
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Replicas starting together: one migrates, the others wait and then find it done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
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
                .with_context(|| format!("applying PostgreSQL migration {version}"))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A transaction that may append events: it holds the log lock from its first
    /// statement, so every read in it sees the latest committed head.
    async fn begin_append(&self) -> Result<Tx> {
        let mut tx = self.pool.begin().await?;
        events::lock_log(&mut tx).await?;
        Ok(tx)
    }
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

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn raise(&self, raise: RaiseRecord) -> Result<RaiseOutcome> {
        let mut tx = self.begin_append().await?;
        let outcome = incidents::raise(&mut tx, raise).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn acknowledge(&self, ack: AckRecord) -> Result<AckOutcome> {
        let mut tx = self.begin_append().await?;
        let outcome = incidents::acknowledge(&mut tx, ack).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn add_note(&self, note: NoteRecord) -> Result<ChangeOutcome> {
        let mut tx = self.begin_append().await?;
        let outcome = incidents::add_note(&mut tx, note).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn close(&self, close: CloseRecord) -> Result<ChangeOutcome> {
        let mut tx = self.begin_append().await?;
        let outcome = incidents::close(&mut tx, close).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn incident(&self, id: Uuid) -> Result<Option<(Incident, Audience)>> {
        let mut conn = self.pool.acquire().await?;
        let Some(incident) = rows::load_incident(&mut conn, id).await? else {
            return Ok(None);
        };
        let audience = rows::load_audience(&mut conn, id).await?;
        Ok(Some((incident, audience)))
    }

    async fn timeline(&self, id: Uuid) -> Result<Vec<FeedEvent>> {
        events::timeline(&self.pool, id).await
    }

    async fn list_incidents(&self, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
        incidents::list(&self.pool, query, viewer).await
    }

    async fn visible_events(&self, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
        events::visible_after(&self.pool, after, limit, viewer).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
        events::all_after(&self.pool, after, limit).await
    }

    async fn head_seq(&self) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(&self.pool).await?;
        Ok(head.unwrap_or(0))
    }

    async fn verify_chain(&self) -> Result<ChainReport> {
        events::verify(&self.pool).await
    }

    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<TimerKey>> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.begin_append().await?;
        let outcome = escalation::fire(&mut tx, timer, owner, plan, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn pages(&self, incident: Uuid) -> Result<Vec<PageRecord>> {
        escalation::pages(&self.pool, incident).await
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        escalation::next_due(&self.pool).await
    }

    async fn pending_timers(&self) -> Result<u64> {
        escalation::pending(&self.pool).await
    }

    async fn claim_pages(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxPage>> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.begin_append().await?;
        let seq = outbox::record(&mut tx, page, owner, result, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn page_status(&self, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
        let mut tx = self.begin_append().await?;
        let seq = outbox::provider_status(&mut tx, provider_id, status, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn outbox_backlog(&self) -> Result<(Option<DateTime<Utc>>, u64)> {
        outbox::backlog(&self.pool).await
    }

    async fn outbox_pages(&self, incident: Uuid) -> Result<Vec<OutboxPage>> {
        outbox::incident_pages(&self.pool, incident).await
    }

    async fn active_incident_by_ref(&self, reference: &str) -> Result<Option<Uuid>> {
        outbox::incident_by_ref(&self.pool, reference).await
    }

    async fn insert_ack_token(
        &self,
        token_hash: &[u8],
        token: &AckToken,
        outbox_id: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        outbox::insert_ack_token(&self.pool, token_hash, token, outbox_id, now).await
    }

    async fn ack_token(&self, token_hash: &[u8]) -> Result<Option<AckToken>> {
        outbox::ack_token(&self.pool, token_hash).await
    }

    async fn consume_ack_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
        outbox::consume_ack_token(&self.pool, token_hash, now).await
    }

    async fn first_inbound_message(&self, sid: &str, now: DateTime<Utc>) -> Result<bool> {
        outbox::first_inbound(&self.pool, sid, now).await
    }

    async fn instance_secret(&self, name: &str, proposed: &str) -> Result<String> {
        outbox::instance_secret(&self.pool, name, proposed).await
    }

    async fn insert_token(&self, token_hash: &[u8], focal_point: &str, label: &str) -> Result<()> {
        credentials::insert_token(&self.pool, token_hash, focal_point, label).await
    }

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<String>> {
        credentials::token_owner(&self.pool, token_hash).await
    }

    async fn revoke_tokens(&self, focal_point: &str) -> Result<u64> {
        credentials::revoke_tokens(&self.pool, focal_point).await
    }

    async fn set_password(&self, focal_point: &str, phc: &str) -> Result<()> {
        credentials::set_password(&self.pool, focal_point, phc).await
    }

    async fn password_hash(&self, focal_point: &str) -> Result<Option<String>> {
        credentials::password_hash(&self.pool, focal_point).await
    }

    async fn insert_session(&self, session_hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()> {
        credentials::insert_session(&self.pool, session_hash, focal_point, expires_at).await
    }

    async fn session_owner(&self, session_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
        credentials::session_owner(&self.pool, session_hash, now).await
    }

    async fn delete_session(&self, session_hash: &[u8]) -> Result<()> {
        credentials::delete_session(&self.pool, session_hash).await
    }

    async fn credential_count(&self) -> Result<u64> {
        credentials::count(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(super::redact("postgres://fp:secret@db:5432/fp"), "postgres://fp:***@db:5432/fp");
        assert_eq!(super::redact("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
    }
}
