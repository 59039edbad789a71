//! The store: one trait, the hub's only door to durable state. Every method that changes
//! state is one transaction that also appends its events to the hash-chained log, so an
//! answer given after it returns is durable (promise 1) and the log never disagrees with
//! the state.
//!
//! Backends: [`sqlite`] (embedded default). The contract tests in `tests/api/store.rs`
//! run against every backend.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::event::Event;
use crate::domain::incident::{Incident, State};
use crate::domain::visibility::Audience;
use crate::engine::plan::StepPlan;

pub type Result<T> = anyhow::Result<T>;

/// A raise, ready to be stored. `incident.reference` is a proposal: the store replaces it
/// if another active incident holds it.
#[derive(Debug, Clone)]
pub struct RaiseRecord {
    pub incident: Incident,
    pub audience: Audience,
    /// `(principal, Idempotency-Key, fingerprint of the request body)`.
    pub idempotency: Option<(String, String, String)>,
    /// Step 0 of each addressed party's escalation, entered with the raise.
    pub escalation: Vec<StepPlan>,
}

/// A due escalation step of one party, claimed by one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerKey {
    pub incident: Uuid,
    pub party: String,
    pub step: u32,
    pub loop_: u32,
    pub due_at: DateTime<Utc>,
}

/// One page in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRecord {
    pub id: i64,
    pub party: String,
    pub focal_point: String,
    pub channel: String,
    pub step: u32,
    pub loop_: u32,
    /// pending | sending | sent | delivered | failed | cancelled
    pub state: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// The step was entered; events up to `seq` were appended.
    Fired { seq: i64 },
    /// Nothing to do: the party acknowledged, the incident closed, or the claim was lost.
    Stale,
}

#[derive(Debug, Clone)]
pub enum RaiseOutcome {
    Created {
        incident: Incident,
        seq: i64,
    },
    /// An active incident of the same party already has this dedup key.
    DedupHit {
        incident: Incident,
        audience: Audience,
    },
    /// The same principal already used this Idempotency-Key for the same request.
    IdempotentReplay {
        incident: Incident,
        audience: Audience,
    },
    /// The Idempotency-Key was used before for a different request.
    IdempotencyMismatch,
}

#[derive(Debug, Clone)]
pub struct AckRecord {
    pub incident: Uuid,
    pub party: String,
    pub by: String,
    pub via: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum AckOutcome {
    Acknowledged {
        incident: Incident,
        seq: i64,
    },
    AlreadyAcknowledged {
        incident: Incident,
    },
    /// Resolved or cancelled: nothing to acknowledge.
    Closed {
        incident: Incident,
    },
    NotFound,
}

#[derive(Debug, Clone)]
pub struct NoteRecord {
    pub incident: Uuid,
    pub by: String,
    pub party: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct CloseRecord {
    pub incident: Uuid,
    /// `Resolved` or `Cancelled`.
    pub state: State,
    pub by: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum ChangeOutcome {
    Changed {
        incident: Incident,
        seq: i64,
    },
    /// The incident is already resolved or cancelled.
    Closed {
        incident: Incident,
    },
    NotFound,
}

/// Filters of `GET /api/v1/incidents`.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Empty: every state.
    pub states: Vec<State>,
    pub party: Option<String>,
    pub field: Option<String>,
    pub severity: Option<String>,
    pub tlp: Option<String>,
    /// Return incidents raised before this one (by raise order); the page cursor.
    pub before_seq: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    /// Visible incidents matching the filters, over all pages.
    pub total: u64,
    pub next_cursor: Option<i64>,
}

/// An event with what the live feed needs to decide who may receive it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub event: Event,
    pub audience: Arc<Audience>,
    pub only_for: Option<String>,
}

/// Result of walking the hash chain from the first event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainReport {
    pub events: u64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The first seq whose hash does not match, if any.
    pub broken_at: Option<i64>,
}

/// The viewer's visibility keys ([`crate::domain::visibility::viewer_keys`]) and id.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub id: String,
    pub keys: Vec<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<()>;

    /// Stores a new incident with its `incident.raised` event, unless the Idempotency-Key
    /// or the dedup key (same originator party, active incident) says it exists already.
    /// Concurrent raises with one dedup key produce exactly one incident.
    async fn raise(&self, raise: RaiseRecord) -> Result<RaiseOutcome>;
    /// Records a party's acknowledgement (idempotent) and, when it is the last party,
    /// moves the incident to `acknowledged`.
    async fn acknowledge(&self, ack: AckRecord) -> Result<AckOutcome>;
    async fn add_note(&self, note: NoteRecord) -> Result<ChangeOutcome>;
    /// Resolves or cancels an active incident.
    async fn close(&self, close: CloseRecord) -> Result<ChangeOutcome>;

    async fn incident(&self, id: Uuid) -> Result<Option<(Incident, Audience)>>;
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

    /// Claims up to `limit` pending timers due at `now`, leasing them to `owner` until
    /// `now + lease`. Atomic: two engines never hold the same timer; a lease that ran out
    /// (its engine died) can be claimed again.
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
    /// Enters the planned step for a claimed timer, in one transaction: re-checks that the
    /// timer is still pending and leased to `owner`, the incident active and the party
    /// unacknowledged; then appends the events, writes the outbox rows and the next
    /// timer, and marks this one fired. Otherwise marks it cancelled and returns `Stale`.
    async fn fire_step(
        &self,
        timer: &TimerKey,
        owner: &str,
        plan: &StepPlan,
        now: DateTime<Utc>,
    ) -> Result<FireOutcome>;
    /// Every outbox row (page) of one incident, oldest first.
    async fn pages(&self, incident: Uuid) -> Result<Vec<PageRecord>>;
    /// The earliest due time of a pending timer.
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>>;
    async fn pending_timers(&self) -> Result<u64>;

    /// Credentials. Hashes only: the store never sees a token or password.
    async fn insert_token(&self, token_hash: &[u8], focal_point: &str, label: &str) -> Result<()>;
    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<String>>;
    async fn revoke_tokens(&self, focal_point: &str) -> Result<u64>;
    async fn set_password(&self, focal_point: &str, phc: &str) -> Result<()>;
    async fn password_hash(&self, focal_point: &str) -> Result<Option<String>>;
    async fn insert_session(&self, session_hash: &[u8], focal_point: &str, expires_at: DateTime<Utc>) -> Result<()>;
    async fn session_owner(&self, session_hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>>;
    async fn delete_session(&self, session_hash: &[u8]) -> Result<()>;
    /// Tokens plus passwords stored: zero on a first start.
    async fn credential_count(&self) -> Result<u64>;
}

/// Opens the backend named by `url`.
pub async fn open(url: &str, synchronous_full: bool) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, synchronous_full).await?))
    } else {
        anyhow::bail!("unsupported store url {url:?}: this build supports sqlite://")
    }
}
