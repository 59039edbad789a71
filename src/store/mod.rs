//! The store: the hub's only door to durable state, as one trait per concern, each
//! stating what it guarantees. [`Store`] is their bundle.
//!
//! | trait | guarantee |
//! | --- | --- |
//! | [`EventLog`] | every change is one transaction with its events; seq contiguous in commit order; hash chain |
//! | [`Timers`] | claim with a lease; two claimers never hold one timer; each step fires once |
//! | [`Outbox`] | claim with a lease; at least once, never zero times; identical pages merged; cancelled on ack/close |
//! | [`AckLinks`] | an email ack link works once, and never after its incident closed |
//! | [`Credentials`] | hashes only; revocation and expiry take effect at once |
//! | [`Secrets`] | the first stored value wins, for every node |
//! | [`InboundMessages`] | an inbound message id is accepted once |
//!
//! Every method that changes state answers only after its commit (promise 1). After each
//! commit that appended events the store announces the new head through its commit hook
//! ([`Store::on_commit`]): the one place that publishes to the bus.
//!
//! Backends: [`sqlite`] (embedded default) and [`postgres`] (several replicas), each a
//! [`sql::Backend`] under the one SQL core in [`sql`]. The contract suites in
//! `tests/api/store/` run every trait against both. The embedded writer also keeps what it
//! just committed for the live feed (`recent`), so the feed need not read it back.

pub mod postgres;
mod recent;
mod records;
pub mod sql;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use records::*;

use crate::domain::event::Event;
use crate::domain::incident::Incident;
use crate::domain::plan::StepPlan;
use crate::domain::visibility::Audience;

pub type Result<T> = anyhow::Result<T>;

/// Called with the new head seq after every commit that appended events.
pub type CommitHook = Arc<dyn Fn(i64) + Send + Sync>;

/// The event log and the incident state it records.
///
/// Guarantees: each method that changes state is one transaction that also appends its
/// events, so the log never disagrees with the state; `seq` is contiguous and assigned in
/// commit order, so a reader that has seen seq N has seen everything before it; each
/// event stores SHA-256(previous hash ‖ canonical event). Concurrent raises with one
/// dedup key produce exactly one incident.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Stores a new incident with its `incident.raised` event and step 0 of every
    /// party's escalation, unless the admission rule ([`crate::domain::admission`]) finds
    /// it exists already. `incident.reference` is a proposal: re-drawn if taken.
    async fn raise(&self, raise: RaiseRecord) -> Result<RaiseOutcome>;
    /// Records a party's acknowledgement (idempotent), stops its escalation and cancels
    /// its pending pages; when it is the last party, the incident becomes `acknowledged`.
    async fn acknowledge(&self, ack: AckRecord) -> Result<AckOutcome>;
    async fn add_note(&self, note: NoteRecord) -> Result<ChangeOutcome>;
    /// Resolves or cancels an active incident; stops every escalation and cancels pending
    /// pages.
    async fn close(&self, close: CloseRecord) -> Result<ChangeOutcome>;

    async fn incident(&self, id: Uuid) -> Result<Option<(Incident, Audience)>>;
    /// Several incidents with their audiences, in a few queries.
    async fn incidents(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, (Incident, Audience)>>;
    /// The active (open or acknowledged) incident holding `reference`, for SMS replies.
    async fn active_incident_by_ref(&self, reference: &str) -> Result<Option<Uuid>>;
    /// Every event of one incident, oldest first (the caller filters `only_for`).
    async fn timeline(&self, id: Uuid) -> Result<Vec<FeedEvent>>;
    async fn list_incidents(&self, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage>;
    /// Events after `after` that `viewer` may see, oldest first.
    async fn visible_events(&self, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>>;
    /// Every event after `after` with its audience, oldest first: the live feed's source.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<FeedEvent>>;
    /// The highest committed seq (0 when the log is empty).
    async fn head_seq(&self) -> Result<i64>;
    async fn verify_chain(&self) -> Result<ChainReport>;
}

/// Escalation timers: one per (incident, party, step, loop) due to fire.
///
/// Guarantees: a claim leases timers to one owner until the lease runs out; two engines
/// never hold the same timer at once, and a timer whose lease ran out (its engine died)
/// can be claimed again. Firing re-checks, in the transaction that enters the step, that
/// the timer is still pending and leased to the caller, the incident active and the
/// party unacknowledged: each step is entered at most once, cluster-wide.
#[async_trait]
pub trait Timers: Send + Sync {
    /// Claims up to `limit` pending timers due at `now`, leasing them to `owner` until
    /// `now + lease`.
    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<TimerKey>>;
    /// Claims the pending timer of one party, due or not (a manual escalation).
    async fn claim_party_timer(
        &self,
        incident: Uuid,
        party: &str,
        now: DateTime<Utc>,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Option<TimerKey>>;
    /// Enters claimed steps in one transaction: for each, its events, outbox rows and
    /// next timer, and marks it fired; a timer no longer held, or whose party no longer
    /// waits, is retired and its outcome is `Stale`.
    async fn fire_steps(
        &self,
        steps: &[(TimerKey, StepPlan)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<FireOutcome>>;
    /// [`Timers::fire_steps`] for one step.
    async fn fire_step(
        &self,
        timer: &TimerKey,
        owner: &str,
        plan: &StepPlan,
        now: DateTime<Utc>,
    ) -> Result<FireOutcome> {
        let outcomes = self.fire_steps(&[(timer.clone(), plan.clone())], owner, now).await?;
        Ok(outcomes.into_iter().next().unwrap_or(FireOutcome::Stale))
    }
    /// The earliest due time of a pending timer.
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>>;
    async fn pending_timers(&self) -> Result<u64>;
}

/// The transactional outbox: one page per (incident, recipient, channel, party, step,
/// loop), written in the transaction of the event that causes it.
///
/// Guarantees: a claim leases pages to one worker; a lease that runs out (the worker died
/// mid-send) is claimed again, so a page is sent at least once and may be sent twice,
/// never zero times. Identical pending sms/email pages are merged into the one claimed.
/// An acknowledgement or a close cancels pending pages. A result from a worker that lost
/// its lease is dropped.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` pending pages due at `now` (sms, email, webhook), leasing them
    /// to `owner` until `now + lease`. In the same transaction, other pending sms/email
    /// pages identical to a claimed one (same incident, focal point and channel) become
    /// `merged` with `merged_into` pointing at it, and are not returned.
    async fn claim_pages(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxPage>>;
    /// Records the results of claimed pages in one transaction with their events (see
    /// [`PageResult`]); returns, per page, the seq appended if any. `Sent` is recorded
    /// while the page is pending (whoever holds it) or was cancelled while in flight under
    /// `owner`'s lease; other results only while `owner` still holds the lease. A
    /// permanent failure that leaves every page of the party's current step failed makes
    /// the party's pending escalation timer due now.
    async fn record_pages(
        &self,
        results: &[(OutboxPage, PageResult)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>>;
    /// [`Outbox::record_pages`] for one page.
    async fn record_page(
        &self,
        page: &OutboxPage,
        owner: &str,
        result: &PageResult,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let seqs = self.record_pages(&[(page.clone(), result.clone())], owner, now).await?;
        Ok(seqs.into_iter().next().flatten())
    }
    /// A provider's delivery callback for the page sent as `provider_id`. Never moves a
    /// page backwards (queued < sent < delivered; failed and undelivered are final);
    /// appends `notification.delivered` (or `.failed`) at most once. Returns the seq
    /// appended, if any; unknown ids and statuses change nothing.
    async fn page_status(&self, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>>;
    /// The earliest due time of a pending page, and how many pages are pending.
    async fn outbox_backlog(&self) -> Result<(Option<DateTime<Utc>>, u64)>;
    /// Every outbox row of one incident with its dispatch details, oldest first.
    async fn outbox_pages(&self, incident: Uuid) -> Result<Vec<OutboxPage>>;
    /// Every outbox row of one incident, briefly, oldest first.
    async fn pages(&self, incident: Uuid) -> Result<Vec<PageRecord>>;
}

/// Email ack links, stored as the SHA-256 of their token.
///
/// Guarantee: a link is consumed once, by one caller, and never after its incident closed.
#[async_trait]
pub trait AckLinks: Send + Sync {
    /// Stores an ack link. Durable on return.
    async fn insert_ack_token(
        &self,
        token_hash: &[u8],
        token: &AckToken,
        outbox_id: i64,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The ack link with this hash, used or not.
    async fn ack_token(&self, token_hash: &[u8]) -> Result<Option<AckToken>>;
    /// Marks an ack link used. True only for the one caller that found it unused while
    /// its incident was active.
    async fn consume_ack_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool>;
}

/// Tokens, passwords and sessions.
///
/// Guarantees: the store sees hashes only, never a token or password; a revoked or expired
/// token and an expired or deleted session stop authenticating at once; a new password
/// ends the focal point's sessions.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// Stores a token's hash; `expires_at` None means until revoked.
    async fn insert_token(
        &self,
        token_hash: &[u8],
        focal_point: &str,
        label: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// The focal point of a token neither revoked nor expired at `now`.
    async fn token_owner(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>>;
    /// Records that a token was used at `at`.
    async fn touch_token(&self, token_hash: &[u8], at: DateTime<Utc>) -> Result<()>;
    /// Every token of a focal point, oldest first, revoked and expired ones included.
    async fn tokens_of(&self, focal_point: &str) -> Result<Vec<TokenInfo>>;
    async fn revoke_tokens(&self, focal_point: &str) -> Result<u64>;
    /// Hashes of tokens revoked or expired, and of sessions ended (signed out, replaced by
    /// a new password, expired), in `(since, now]`.
    async fn ended_credentials(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Vec<u8>>>;
    async fn set_password(&self, focal_point: &str, phc: &str) -> Result<()>;
    async fn password_hash(&self, focal_point: &str) -> Result<Option<String>>;
    async fn insert_session(&self, session_hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()>;
    async fn session_owner(&self, session_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>>;
    async fn delete_session(&self, session_hash: &[u8]) -> Result<()>;
    /// Tokens plus passwords stored: zero on a first start.
    async fn credential_count(&self) -> Result<u64>;
}

/// The hub's own generated secrets (e.g. the webhook signing key).
///
/// Guarantee: the first value stored under a name wins; every caller, on every node of a
/// cluster, gets that value ever after.
#[async_trait]
pub trait Secrets: Send + Sync {
    async fn instance_secret(&self, name: &str, proposed: &str) -> Result<String>;
}

/// Inbound message ids (Twilio `MessageSid`).
///
/// Guarantee: true for the first caller that records an id, false for every replay,
/// whatever its body, across nodes. Durable on return.
#[async_trait]
pub trait InboundMessages: Send + Sync {
    async fn first_inbound_message(&self, sid: &str, now: DateTime<Utc>) -> Result<bool>;
}

/// Every concern of the store, on one backend.
#[async_trait]
pub trait Store: EventLog + Timers + Outbox + AckLinks + Credentials + Secrets + InboundMessages + 'static {
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<()>;
    /// Sets the hook told the new head after every commit that appended events.
    fn on_commit(&self, hook: CommitHook);
}

/// Opens the backend named by `url` and applies pending migrations.
pub async fn open(url: &str, synchronous_full: bool) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url, synchronous_full).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url).await?))
    } else {
        anyhow::bail!("unsupported store url {url:?}: use sqlite://… or postgres://…")
    }
}
