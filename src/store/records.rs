//! The records the store takes and gives: what a command hands it, what it answers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::event::Event;
use crate::domain::incident::{Incident, State};
use crate::domain::plan::StepPlan;
use crate::domain::visibility::Audience;

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
    /// Where the dedup key holds ([`crate::domain::admission::dedup_scope`]).
    pub dedup_scope: String,
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

/// One page with what the dispatcher needs and records ([`Outbox::claim_pages`](super::Outbox::claim_pages),
/// [`Outbox::outbox_pages`](super::Outbox::outbox_pages)).
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

/// What became of a claimed page; recorded by [`Outbox::record_pages`](super::Outbox::record_pages).
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

/// What `token list` shows of an API token: never the token, and of its hash only the
/// first bytes, to tell tokens apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first 8 hex digits of the token's SHA-256.
    pub fingerprint: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
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
