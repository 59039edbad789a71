//! The store: one trait, the hub's only door to durable state. Every method that changes
//! state is one transaction that also appends its events to the hash-chained log, so an
//! answer given after it returns is durable (promise 1) and the log never disagrees with
//! the state.
//!
//! Backends: [`sqlite`] (embedded default) and [`postgres`] (several replicas). The
//! contract tests in `tests/api/store_contract.rs` run against both.

pub mod postgres;
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

/// One page with what the dispatcher needs and records ([`Store::claim_pages`],
/// [`Store::outbox_pages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPage {
    pub id: i64,
    pub incident: Uuid,
    pub party: String,
    pub focal_point: String,
    pub channel: String,
    pub step: u32,
    pub loop_: u32,
    /// pending | sent | delivered | failed | cancelled | merged. A page being sent stays
    /// `pending` under a lease, so a worker that dies loses nothing.
    pub state: String,
    /// Send attempts that ended in an error (temporary or permanent).
    pub attempts: u32,
    /// When a pending page is (next) due to be sent.
    pub next_attempt_at: DateTime<Utc>,
    /// The provider's message id once sent (Twilio `SM…`, the email Message-ID).
    pub provider_id: Option<String>,
    /// Why the last attempt failed, or why the page was cancelled; never an address.
    pub last_error: Option<String>,
    /// For a `merged` page: the identical page that was sent instead.
    pub merged_into: Option<i64>,
}

/// What became of a claimed page; recorded by [`Store::record_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageResult {
    /// The provider accepted it: state `sent`, event `notification.sent`.
    Sent { provider_id: Option<String> },
    /// A temporary failure: attempts + 1, try again at `at`. No event.
    Retry { at: DateTime<Utc>, error: String },
    /// Not attempted (the destination is throttled): try again at `at`. No event.
    Deferred { at: DateTime<Utc> },
    /// A permanent failure: state `failed`, event `notification.failed` with the reason.
    Failed { reason: String },
    /// Not sent because the party acknowledged or the incident closed. No event.
    Cancelled { reason: String },
}

/// An email ack link, looked up by the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckToken {
    pub incident: Uuid,
    pub focal_point: String,
    pub party: String,
    pub used: bool,
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
    /// Enters many claimed steps at once; each outcome is what [`Store::fire_step`] would
    /// give for it. Backends may do it in one transaction (the default goes one by one).
    async fn fire_steps(
        &self,
        steps: &[(TimerKey, StepPlan)],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<FireOutcome>> {
        let mut outcomes = Vec::with_capacity(steps.len());
        for (timer, plan) in steps {
            outcomes.push(self.fire_step(timer, owner, plan, now).await?);
        }
        Ok(outcomes)
    }
    /// Several incidents with their audiences (the default loads them one by one).
    async fn incidents(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, (Incident, Audience)>> {
        let mut out = std::collections::HashMap::new();
        for id in ids {
            if let Some(found) = self.incident(*id).await? {
                out.insert(*id, found);
            }
        }
        Ok(out)
    }
    /// The earliest due time of a pending timer.
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>>;
    async fn pending_timers(&self) -> Result<u64>;

    // Outbox dispatch and inbound acknowledgement (issue 4). Each has a default that
    // fails with "not supported by this backend", so a backend still being written keeps
    // building; a complete backend overrides every one of them.

    /// Claims up to `limit` pending pages due at `now` (sms, email, webhook), leasing them
    /// to `owner` until `now + lease`; a lease that ran out (its worker died mid-send) is
    /// claimed again, so a page is sent at least once and may be sent twice, never zero
    /// times. In the same transaction, other pending sms/email pages identical to a
    /// claimed one (same incident, focal point and channel) become `merged` with
    /// `merged_into` pointing at it, and are not returned.
    async fn claim_pages(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxPage>> {
        let _ = (now, owner, lease, limit);
        Err(unsupported("claim_pages"))
    }
    /// Records the result of a claimed page in one transaction with its event (see
    /// [`PageResult`]); returns the seq appended, if any. `Sent` is recorded while the
    /// page is pending (whoever holds it) or was cancelled while in flight under
    /// `owner`'s lease; other results only while `owner` still holds the lease, so a
    /// result from a worker that lost its lease is dropped and the page is tried again.
    /// A permanent failure that leaves every page of the party's current step failed
    /// makes the party's pending escalation timer due now.
    async fn record_page(
        &self,
        page: &OutboxPage,
        owner: &str,
        result: &PageResult,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let _ = (page, owner, result, now);
        Err(unsupported("record_page"))
    }
    /// A provider's delivery callback for the page sent as `provider_id`. Never moves a
    /// page backwards (queued < sent < delivered; failed and undelivered are final);
    /// appends `notification.delivered` (or `.failed`) at most once. Returns the seq
    /// appended, if any; unknown ids and statuses change nothing.
    async fn page_status(&self, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
        let _ = (provider_id, status, now);
        Err(unsupported("page_status"))
    }
    /// The earliest due time of a pending page, and how many pages are pending.
    async fn outbox_backlog(&self) -> Result<(Option<DateTime<Utc>>, u64)> {
        Err(unsupported("outbox_backlog"))
    }
    /// Every outbox row of one incident with its dispatch details, oldest first.
    async fn outbox_pages(&self, incident: Uuid) -> Result<Vec<OutboxPage>> {
        let _ = incident;
        Err(unsupported("outbox_pages"))
    }

    /// The active (open or acknowledged) incident holding `reference`, for SMS replies.
    async fn active_incident_by_ref(&self, reference: &str) -> Result<Option<Uuid>> {
        let _ = reference;
        Err(unsupported("active_incident_by_ref"))
    }
    /// Stores an email ack link (the SHA-256 of its token only). Durable on return.
    async fn insert_ack_token(
        &self,
        token_hash: &[u8],
        token: &AckToken,
        outbox_id: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let _ = (token_hash, token, outbox_id, now);
        Err(unsupported("insert_ack_token"))
    }
    /// The ack link with this hash, used or not.
    async fn ack_token(&self, token_hash: &[u8]) -> Result<Option<AckToken>> {
        let _ = token_hash;
        Err(unsupported("ack_token"))
    }
    /// Marks an ack link used. True only for the one caller that found it unused while
    /// its incident was active: a link works once, and never after the incident closed.
    async fn consume_ack_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
        let _ = (token_hash, now);
        Err(unsupported("consume_ack_token"))
    }
    /// Records an inbound message id; true the first time only (a replay is ignored,
    /// whatever its body). Durable on return.
    async fn first_inbound_message(&self, sid: &str, now: DateTime<Utc>) -> Result<bool> {
        let _ = (sid, now);
        Err(unsupported("first_inbound_message"))
    }
    /// The hub's own secret called `name`: stored on first use as `proposed`, the stored
    /// value ever after (every node of a cluster gets the same).
    async fn instance_secret(&self, name: &str, proposed: &str) -> Result<String> {
        let _ = (name, proposed);
        Err(unsupported("instance_secret"))
    }

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

fn unsupported(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what} is not supported by this store backend yet")
}

/// Opens the backend named by `url`.
pub async fn open(url: &str, synchronous_full: bool) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, synchronous_full).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        anyhow::bail!("unsupported store url {url:?}: use sqlite://… or postgres://…")
    }
}
