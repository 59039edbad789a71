//! The store contract: one suite per concern, each test run against both backends
//! (`on_both_backends!`: `store::<concern>::<test>::sqlite` on a fresh SQLite file in a
//! temporary folder, `…::postgres` on a fresh PostgreSQL database created from
//! `FOCALPOINT_TEST_POSTGRES`; a missing server fails the test, saying so). Tests use the
//! store's public trait methods only, with records built the way `commands` builds them
//! from the scenario network, and assert what each method's doc comment promises.
//!
//! - [`events`]: the event log and incident state (dedup, idempotency, ack, close, lists,
//!   events, the hash chain, concurrent appends without a gap);
//! - [`timers`]: escalation timers (claim with a lease, lease expiry, concurrent claimers,
//!   fire once);
//! - [`outbox`]: pages (claim with a lease, lease expiry, merge, cancel, results, delivery
//!   callbacks, concurrent claimers);
//! - [`credentials`]: tokens, passwords and sessions;
//! - [`secrets`]: the hub's instance secrets;
//! - [`inbound`]: inbound message ids;
//! - [`ack_tokens`]: email ack links.

mod ack_tokens;
mod credentials;
mod events;
mod inbound;
mod outbox;
mod secrets;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use focalpoint::commands::Hub;
use focalpoint::directory::Directory;
use focalpoint::domain::incident::{Incident, Originator, State};
use focalpoint::domain::plan::{StepPlan, plan_raise, plan_step};
use focalpoint::domain::principal::Principal;
use focalpoint::domain::raise::RaiseRequest;
use focalpoint::domain::reference;
use focalpoint::domain::visibility::Audience;
// The glob brings the store's traits into scope as well as its records.
use focalpoint::store::*;
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::helpers::{Backend, Database, WAIT};
use crate::scenario::NETWORK;

/// A long lease: held for the whole test unless the test moves time past it.
pub const LEASE: Duration = Duration::from_secs(60);

/// A store under test on a fresh database, with the network its records are built from.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub db: Database,
    pub dir: Arc<Directory>,
}

/// A fresh store of `backend` for the scenario network (`scenario::NETWORK`).
pub async fn fixture(backend: Backend) -> Fixture {
    fixture_on(backend, NETWORK).await
}

/// A fresh store of `backend` for the network `toml`.
pub async fn fixture_on(backend: Backend, toml: &str) -> Fixture {
    let dir = Arc::new(Directory::parse(toml).unwrap_or_else(|p| panic!("test network: {p:?}")));
    let db = Database::fresh(backend).await;
    let store = db.open().await;
    Fixture { store, db, dir }
}

impl Fixture {
    /// Another store handle on the same database (another replica, or a restart).
    pub async fn another_store(&self) -> Arc<dyn Store> {
        self.db.open().await
    }

    /// A raise by `officer`, built as `Hub::raise` builds it.
    pub fn record(&self, officer: &str, body: Value, idempotency: Option<(&str, &str)>) -> RaiseRecord {
        let request: RaiseRequest = serde_json::from_value(body).expect("raise body");
        let content = request.validate(&self.dir).expect("valid raise");
        let fp = self.dir.focal_point(officer).expect("officer in the network");
        let originator = Originator { party: fp.party.clone(), officer: officer.to_string() };
        let audience = Audience::of(content.tlp, &originator, &content.parties, &content.recipients);
        let incident = Incident::new(Uuid::new_v4(), reference::generate(4), originator, content, Utc::now());
        let escalation = plan_raise(&self.dir, &incident, &audience);
        let dedup_scope = focalpoint::domain::admission::dedup_scope(&self.dir, &incident.originator, &audience);
        RaiseRecord {
            incident,
            audience,
            idempotency: idempotency.map(|(k, f)| (officer.to_string(), k.to_string(), f.to_string())),
            escalation,
            dedup_scope,
        }
    }

    /// Raises as th-duty; the raise must create a new incident.
    pub async fn raise(&self, body: Value) -> Incident {
        match self.store.raise(self.record("th-duty", body, None)).await.expect("raise") {
            RaiseOutcome::Created { incident, .. } => incident,
            other => panic!("expected a new incident, got {other:?}"),
        }
    }

    pub fn viewer(&self, id: &str) -> Viewer {
        Hub::viewer(&Principal::from_focal_point(self.dir.focal_point(id).expect("focal point"), &self.dir))
    }

    pub fn ack(&self, incident: Uuid, party: &str, by: &str) -> AckRecord {
        AckRecord { incident, party: party.into(), by: by.into(), via: "api".into(), at: Utc::now() }
    }

    pub fn closing(&self, incident: Uuid, state: State) -> CloseRecord {
        CloseRecord { incident, state, by: "th-duty".into(), reason: None, at: Utc::now() }
    }

    /// The plan the engine would make for a claimed timer.
    pub async fn plan(&self, timer: &TimerKey) -> StepPlan {
        let (incident, audience) = self.store.incident(timer.incident).await.expect("read").expect("incident exists");
        plan_step(&self.dir, &incident, &audience, &timer.party, timer.step, timer.loop_, timer.due_at)
            .expect("a policy for the party")
    }

    /// Escalates `party` by hand (as `Hub::escalate` does): claims its pending timer and
    /// enters the step. Returns the timer entered.
    pub async fn escalate(&self, incident: Uuid, party: &str, now: DateTime<Utc>) -> TimerKey {
        let timer = self
            .store
            .claim_party_timer(incident, party, now, "hand", LEASE)
            .await
            .expect("claim")
            .unwrap_or_else(|| panic!("{party} has a pending timer"));
        let plan = self.plan(&timer).await;
        match self.store.fire_step(&timer, "hand", &plan, now).await.expect("fire") {
            FireOutcome::Fired { .. } => timer,
            FireOutcome::Stale => panic!("the step of a claimed timer fires: {timer:?}"),
        }
    }

    /// The outbox rows of one incident.
    pub async fn outbox(&self, incident: Uuid) -> Vec<OutboxPage> {
        self.store.outbox_pages(incident).await.expect("outbox pages")
    }

    /// One outbox row by id.
    pub async fn page(&self, incident: Uuid, id: i64) -> OutboxPage {
        self.outbox(incident).await.into_iter().find(|p| p.id == id).unwrap_or_else(|| panic!("page {id} exists"))
    }

    /// The kinds of the events of one incident, oldest first.
    pub async fn kinds(&self, incident: Uuid) -> Vec<String> {
        self.store
            .timeline(incident)
            .await
            .expect("timeline")
            .iter()
            .map(|e| e.event.kind.as_str().to_string())
            .collect()
    }

    pub async fn head(&self) -> i64 {
        self.store.head_seq().await.expect("head")
    }

    pub async fn assert_chain_intact(&self) {
        let report = self.store.verify_chain().await.expect("verify");
        assert_eq!(report.broken_at, None, "{report:?}");
        assert_eq!(report.head_seq, self.head().await, "{report:?}");
    }
}

/// A raise body: a drug-trafficking incident from TH to `parties`.
pub fn body(tlp: &str, parties: &[&str]) -> Value {
    json!({
        "title": "Heroin consignment", "description": "Container at Port Klang", "field": "drug-trafficking",
        "severity": "severe", "parties": parties, "tlp": tlp,
    })
}

/// Runs `n` copies of `task` at once (`task(i)`), spread over `stores`, and returns their
/// results in task order; fails the test if they do not all finish within `WAIT`.
pub async fn concurrently<T, F, Fut>(stores: &[Arc<dyn Store>], n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let fut = task(i, stores[i % stores.len()].clone());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(tokio::time::timeout(WAIT * 3, h).await.expect("concurrent tasks finish").expect("task"));
    }
    out
}
