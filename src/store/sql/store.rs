//! Every store trait, implemented once on top of a [`Backend`]: each method is one unit of
//! work (a write transaction or a read) running the core's statements.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Backend, Write, credentials, escalation, events, incidents, job, outbox, rows};
use crate::domain::event::Event;
use crate::domain::incident::Incident;
use crate::domain::plan::StepPlan;
use crate::domain::visibility::Audience;
use crate::store::*;

/// The store on one backend.
pub struct SqlStore<B> {
    backend: B,
}

impl<B: Backend> SqlStore<B> {
    pub fn new(backend: B) -> Self {
        SqlStore { backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// `self.write(kind, |c| body)`: a unit of work whose body is one core call.
macro_rules! unit {
    ($self:ident, write $kind:ident, |$c:ident| $body:expr) => {
        $self.backend.write(Write::$kind, job(move |$c| Box::pin(async move { $body }))).await
    };
    ($self:ident, read, |$c:ident| $body:expr) => {
        $self.backend.read(job(move |$c| Box::pin(async move { $body }))).await
    };
}

#[async_trait]
impl<B: Backend> EventLog for SqlStore<B> {
    async fn raise(&self, raise: RaiseRecord) -> Result<RaiseOutcome> {
        unit!(self, write Appends, |c| incidents::raise(c, raise).await)
    }

    async fn acknowledge(&self, ack: AckRecord) -> Result<AckOutcome> {
        unit!(self, write Appends, |c| incidents::acknowledge(c, ack).await)
    }

    async fn add_note(&self, note: NoteRecord) -> Result<ChangeOutcome> {
        unit!(self, write Appends, |c| incidents::add_note(c, note).await)
    }

    async fn close(&self, close: CloseRecord) -> Result<ChangeOutcome> {
        unit!(self, write Appends, |c| incidents::close(c, close).await)
    }

    async fn incident(&self, id: Uuid) -> Result<Option<(Incident, Audience)>> {
        unit!(self, read, |c| rows::load_with_audience(c, id).await)
    }

    async fn incidents(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, (Incident, Audience)>> {
        let ids = ids.to_vec();
        unit!(self, read, |c| rows::load_many(c, &ids).await)
    }

    async fn active_incident_by_ref(&self, reference: &str) -> Result<Option<Uuid>> {
        let reference = reference.to_string();
        unit!(self, read, |c| incidents::active_by_ref(c, &reference).await)
    }

    async fn timeline(&self, id: Uuid) -> Result<Vec<FeedEvent>> {
        unit!(self, read, |c| events::timeline(c, id).await)
    }

    async fn list_incidents(&self, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
        let (query, viewer) = (query.clone(), viewer.clone());
        unit!(self, read, |c| incidents::list(c, &query, &viewer).await)
    }

    async fn visible_events(&self, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
        let viewer = viewer.clone();
        unit!(self, read, |c| events::visible_after(c, after, limit, &viewer).await)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
        if let Some(events) = self.backend.recent_after(after, limit) {
            return Ok(events);
        }
        unit!(self, read, |c| events::all_after(c, after, limit).await)
    }

    async fn head_seq(&self) -> Result<i64> {
        unit!(self, read, |c| events::head_seq(c).await)
    }

    async fn verify_chain(&self) -> Result<ChainReport> {
        unit!(self, read, |c| events::verify(c).await)
    }
}

#[async_trait]
impl<B: Backend> Timers for SqlStore<B> {
    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<TimerKey>> {
        let owner = owner.to_string();
        unit!(self, write Plain, |c| escalation::claim_due(c, now, &owner, lease_ms(lease), limit).await)
    }

    async fn claim_party_timer(
        &self,
        incident: Uuid,
        party: &str,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<TimerKey>> {
        let (party, owner) = (party.to_string(), owner.to_string());
        unit!(self, write Plain, |c| escalation::claim_party(c, incident, &party, now, &owner, lease_ms(lease)).await)
    }

    async fn fire_steps(
        &self,
        steps: &[(TimerKey, StepPlan)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<FireOutcome>> {
        let (steps, owner) = (steps.to_vec(), owner.to_string());
        unit!(self, write Appends, |c| escalation::fire(c, &steps, &owner, now).await)
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        unit!(self, read, |c| escalation::next_due(c).await)
    }

    async fn pending_timers(&self) -> Result<u64> {
        unit!(self, read, |c| escalation::pending(c).await)
    }
}

#[async_trait]
impl<B: Backend> Outbox for SqlStore<B> {
    async fn claim_pages(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxPage>> {
        let owner = owner.to_string();
        unit!(self, write Plain, |c| outbox::claim(c, now, &owner, lease_ms(lease), limit).await)
    }

    async fn record_pages(
        &self,
        results: &[(OutboxPage, PageResult)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>> {
        let (results, owner) = (results.to_vec(), owner.to_string());
        unit!(self, write Appends, |c| {
            let mut seqs = Vec::with_capacity(results.len());
            for (page, result) in &results {
                seqs.push(outbox::record(c, page, &owner, result, now).await?);
            }
            Ok(seqs)
        })
    }

    async fn page_status(&self, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
        let (provider_id, status) = (provider_id.to_string(), status.to_string());
        unit!(self, write Appends, |c| outbox::provider_status(c, &provider_id, &status, now).await)
    }

    async fn outbox_backlog(&self) -> Result<(Option<DateTime<Utc>>, u64)> {
        unit!(self, read, |c| outbox::backlog(c).await)
    }

    async fn outbox_pages(&self, incident: Uuid) -> Result<Vec<OutboxPage>> {
        unit!(self, read, |c| outbox::incident_pages(c, incident).await)
    }

    async fn pages(&self, incident: Uuid) -> Result<Vec<PageRecord>> {
        unit!(self, read, |c| escalation::pages(c, incident).await)
    }
}

#[async_trait]
impl<B: Backend> AckLinks for SqlStore<B> {
    async fn insert_ack_token(
        &self,
        token_hash: &[u8],
        token: &AckToken,
        outbox_id: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (hash, token) = (token_hash.to_vec(), token.clone());
        unit!(self, write Plain, |c| outbox::insert_ack_token(c, &hash, &token, outbox_id, now).await)
    }

    async fn ack_token(&self, token_hash: &[u8]) -> Result<Option<AckToken>> {
        let hash = token_hash.to_vec();
        unit!(self, read, |c| outbox::ack_token(c, &hash).await)
    }

    async fn consume_ack_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
        let hash = token_hash.to_vec();
        unit!(self, write Plain, |c| outbox::consume_ack_token(c, &hash, now).await)
    }
}

#[async_trait]
impl<B: Backend> Credentials for SqlStore<B> {
    async fn insert_token(
        &self,
        token_hash: &[u8],
        focal_point: &str,
        label: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let (hash, fp, label) = (token_hash.to_vec(), focal_point.to_string(), label.to_string());
        unit!(self, write Plain, |c| credentials::insert_token(c, &hash, &fp, &label, expires_at).await)
    }

    async fn token_owner(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
        let hash = token_hash.to_vec();
        unit!(self, read, |c| credentials::token_owner(c, &hash, now).await)
    }

    async fn touch_token(&self, token_hash: &[u8], at: DateTime<Utc>) -> Result<()> {
        let hash = token_hash.to_vec();
        unit!(self, write Plain, |c| credentials::touch_token(c, &hash, at).await)
    }

    async fn tokens_of(&self, focal_point: &str) -> Result<Vec<TokenInfo>> {
        let fp = focal_point.to_string();
        unit!(self, read, |c| credentials::tokens_of(c, &fp).await)
    }

    async fn ended_credentials(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Vec<u8>>> {
        unit!(self, read, |c| credentials::ended(c, since, now).await)
    }

    async fn revoke_tokens(&self, focal_point: &str) -> Result<u64> {
        let fp = focal_point.to_string();
        unit!(self, write Plain, |c| credentials::revoke_tokens(c, &fp).await)
    }

    async fn set_password(&self, focal_point: &str, phc: &str) -> Result<()> {
        let (fp, phc) = (focal_point.to_string(), phc.to_string());
        unit!(self, write Plain, |c| credentials::set_password(c, &fp, &phc).await)
    }

    async fn password_hash(&self, focal_point: &str) -> Result<Option<String>> {
        let fp = focal_point.to_string();
        unit!(self, read, |c| credentials::password_hash(c, &fp).await)
    }

    async fn insert_session(&self, session_hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let (hash, fp) = (session_hash.to_vec(), focal_point.to_string());
        unit!(self, write Plain, |c| credentials::insert_session(c, &hash, &fp, expires_at).await)
    }

    async fn session_owner(&self, session_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
        let hash = session_hash.to_vec();
        unit!(self, read, |c| credentials::session_owner(c, &hash, now).await)
    }

    async fn delete_session(&self, session_hash: &[u8]) -> Result<()> {
        let hash = session_hash.to_vec();
        unit!(self, write Plain, |c| credentials::delete_session(c, &hash).await)
    }

    async fn credential_count(&self) -> Result<u64> {
        unit!(self, read, |c| credentials::count(c).await)
    }
}

#[async_trait]
impl<B: Backend> Secrets for SqlStore<B> {
    async fn instance_secret(&self, name: &str, proposed: &str) -> Result<String> {
        let (name, proposed) = (name.to_string(), proposed.to_string());
        unit!(self, write Plain, |c| credentials::instance_secret(c, &name, &proposed).await)
    }
}

#[async_trait]
impl<B: Backend> InboundMessages for SqlStore<B> {
    async fn first_inbound_message(&self, sid: &str, now: DateTime<Utc>) -> Result<bool> {
        let sid = sid.to_string();
        unit!(self, write Plain, |c| credentials::first_inbound(c, &sid, now).await)
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn ping(&self) -> Result<()> {
        unit!(self, read, |c| c.query("SELECT 1 AS one", &[]).await.map(|_| ()))
    }

    fn on_commit(&self, hook: CommitHook) {
        self.backend.set_commit_hook(hook);
    }
}
