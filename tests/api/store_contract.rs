//! The store contract: one suite, run against every backend. Each test is an async
//! function taking a [`Backend`]; `contract!` instantiates it for SQLite (a temp file)
//! and PostgreSQL (a fresh database, see `servers.rs`). The records are built the way
//! `commands` builds them, from the scenario network.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use focalpoint::commands::Hub;
use focalpoint::directory::Directory;
use focalpoint::domain::incident::{Incident, Originator, State};
use focalpoint::domain::principal::Principal;
use focalpoint::domain::raise::RaiseRequest;
use focalpoint::domain::reference;
use focalpoint::domain::visibility::Audience;
use focalpoint::engine::plan::{plan_raise, plan_step};
use focalpoint::store::*;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::scenario::NETWORK;
use crate::servers::{TestDatabase, fresh_database};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store under test, with what keeps its database alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub dir: Arc<Directory>,
    _tmp: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

pub async fn fixture(backend: Backend) -> Fixture {
    let dir = Arc::new(Directory::parse(NETWORK).unwrap_or_else(|p| panic!("scenario network: {p:?}")));
    let (url, tmp, db) = match backend {
        Backend::Sqlite => {
            let tmp = tempfile::tempdir().expect("tempdir");
            (format!("sqlite://{}", tmp.path().join("contract.db").display()), Some(tmp), None)
        }
        Backend::Postgres => {
            let db = fresh_database().await;
            (db.url.clone(), None, Some(db))
        }
    };
    let store = open(&url, false).await.expect("store opens");
    Fixture { store, url, dir, _tmp: tmp, _db: db }
}

impl Fixture {
    /// A raise by `officer`, built as `Hub::raise` builds it.
    pub fn record(&self, officer: &str, body: Value, idempotency: Option<(&str, &str)>) -> RaiseRecord {
        let request: RaiseRequest = serde_json::from_value(body).expect("raise body");
        let content = request.validate(&self.dir).expect("valid raise");
        let fp = self.dir.focal_point(officer).expect("officer in the network");
        let originator = Originator { party: fp.party.clone(), officer: officer.to_string() };
        let audience = Audience::of(content.tlp, &originator, &content.parties, &content.recipients);
        let incident = Incident::new(Uuid::new_v4(), reference::generate(4), originator, content, Utc::now());
        let escalation = plan_raise(&self.dir, &incident, &audience);
        RaiseRecord {
            incident,
            audience,
            idempotency: idempotency.map(|(k, f)| (officer.to_string(), k.to_string(), f.to_string())),
            escalation,
        }
    }

    pub async fn raise(&self, body: Value) -> Incident {
        match self.store.raise(self.record("th-duty", body, None)).await.expect("raise") {
            RaiseOutcome::Created { incident, .. } => incident,
            other => panic!("expected a new incident, got {other:?}"),
        }
    }

    pub fn viewer(&self, id: &str) -> Viewer {
        Hub::viewer(&Principal::from_focal_point(self.dir.focal_point(id).expect("focal point"), &self.dir))
    }

    fn ack(&self, incident: Uuid, party: &str, by: &str) -> AckRecord {
        AckRecord { incident, party: party.into(), by: by.into(), via: "api".into(), at: Utc::now() }
    }

    fn closing(&self, incident: Uuid, state: State) -> CloseRecord {
        CloseRecord { incident, state, by: "th-duty".into(), reason: None, at: Utc::now() }
    }
}

pub fn body(tlp: &str, parties: &[&str]) -> Value {
    json!({
        "title": "Heroin consignment", "description": "Container at Port Klang", "field": "drug-trafficking",
        "severity": "severe", "parties": parties, "tlp": tlp,
    })
}

/// Instantiates an async `fn(Backend)` test for both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

contract!(
    raise_dedup_and_idempotency,
    ack_is_per_party_and_idempotent,
    close_stops_everything,
    list_visibility_pagination_and_counts,
    events_after_and_visible_events,
    timers_fire_once_under_two_concurrent_claimers,
    credentials_tokens_passwords_sessions,
    concurrent_raises_with_one_dedup_key_give_one_incident,
    concurrent_appends_never_show_a_reader_a_gap,
);

async fn raise_dedup_and_idempotency(backend: Backend) {
    let f = fixture(backend).await;
    let mut with_key = body("amber", &["MY"]);
    with_key["dedup_key"] = json!("sensor-7");
    let first = f.raise(with_key.clone()).await;
    match f.store.raise(f.record("th-duty", with_key.clone(), None)).await.expect("raise") {
        RaiseOutcome::DedupHit { incident, .. } => assert_eq!(incident.id, first.id),
        other => panic!("expected a dedup hit, got {other:?}"),
    }

    let plain = body("green", &["SG"]);
    let created = match f.store.raise(f.record("th-duty", plain.clone(), Some(("k-1", "fp-a")))).await.expect("raise") {
        RaiseOutcome::Created { incident, .. } => incident,
        other => panic!("expected a new incident, got {other:?}"),
    };
    match f.store.raise(f.record("th-duty", plain.clone(), Some(("k-1", "fp-a")))).await.expect("raise") {
        RaiseOutcome::IdempotentReplay { incident, .. } => assert_eq!(incident.id, created.id),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        f.store.raise(f.record("th-duty", plain, Some(("k-1", "fp-b")))).await.expect("raise"),
        RaiseOutcome::IdempotencyMismatch
    ));

    // Closing frees the dedup key.
    f.store.close(f.closing(first.id, State::Resolved)).await.expect("close");
    let again = f.raise(with_key).await;
    assert_ne!(again.id, first.id);
    assert_eq!(f.store.verify_chain().await.expect("verify").broken_at, None);
}

async fn ack_is_per_party_and_idempotent(backend: Backend) {
    let f = fixture(backend).await;
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    assert_eq!(f.store.pending_timers().await.expect("pending"), 2);
    let head = f.store.head_seq().await.expect("head");
    match f.store.acknowledge(f.ack(inc.id, "MY", "my-l1")).await.expect("ack") {
        AckOutcome::Acknowledged { incident, seq } => {
            assert_eq!(incident.state, State::Open);
            assert_eq!(seq, head + 1);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 1, "MY's escalation stopped");
    assert!(matches!(
        f.store.acknowledge(f.ack(inc.id, "MY", "my-l2")).await.expect("ack"),
        AckOutcome::AlreadyAcknowledged { .. }
    ));
    assert_eq!(f.store.head_seq().await.expect("head"), head + 1, "a repeated ack appends nothing");
    assert!(matches!(f.store.acknowledge(f.ack(inc.id, "CN", "cn-coord")).await.expect("ack"), AckOutcome::NotFound));
    assert!(matches!(
        f.store.acknowledge(f.ack(Uuid::new_v4(), "MY", "my-l1")).await.expect("ack"),
        AckOutcome::NotFound
    ));
    match f.store.acknowledge(f.ack(inc.id, "SG", "sg-l1")).await.expect("ack") {
        AckOutcome::Acknowledged { incident, .. } => assert_eq!(incident.state, State::Acknowledged),
        other => panic!("expected an ack, got {other:?}"),
    }
    let (stored, _) = f.store.incident(inc.id).await.expect("read").expect("exists");
    assert!(stored.party_states.iter().all(|p| p.acknowledged));
    assert_eq!(stored.party_states[0].acknowledged_by.as_deref(), Some("my-l1"));
}

async fn close_stops_everything(backend: Backend) {
    let f = fixture(backend).await;
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    let note = NoteRecord {
        incident: inc.id,
        by: "th-duty".into(),
        party: "TH".into(),
        text: "update".into(),
        at: Utc::now(),
    };
    assert!(matches!(f.store.add_note(note.clone()).await.expect("note"), ChangeOutcome::Changed { .. }));
    match f.store.close(f.closing(inc.id, State::Cancelled)).await.expect("close") {
        ChangeOutcome::Changed { incident, .. } => assert_eq!(incident.state, State::Cancelled),
        other => panic!("expected a change, got {other:?}"),
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 0);
    assert!(matches!(
        f.store.close(f.closing(inc.id, State::Resolved)).await.expect("close"),
        ChangeOutcome::Closed { .. }
    ));
    assert!(matches!(f.store.add_note(note).await.expect("note"), ChangeOutcome::Closed { .. }));
    assert!(matches!(f.store.acknowledge(f.ack(inc.id, "MY", "my-l1")).await.expect("ack"), AckOutcome::Closed { .. }));
    assert!(matches!(
        f.store.close(f.closing(Uuid::new_v4(), State::Resolved)).await.expect("close"),
        ChangeOutcome::NotFound
    ));
    let kinds: Vec<String> =
        f.store.timeline(inc.id).await.expect("timeline").iter().map(|e| e.event.kind.as_str().to_string()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("incident.raised"));
    assert_eq!(kinds.last().map(String::as_str), Some("incident.cancelled"));
    assert!(kinds.contains(&"incident.note".to_string()));
}

async fn list_visibility_pagination_and_counts(backend: Backend) {
    let f = fixture(backend).await;
    let mut amber = Vec::new();
    for _ in 0..5 {
        amber.push(f.raise(body("amber+strict", &["MY"])).await.id);
    }
    let mut red = body("red", &["MY"]);
    red["recipients"] = json!(["my-l2"]);
    let red = f.raise(red).await.id;
    for _ in 0..3 {
        f.raise(body("green", &["SG"])).await;
    }
    let all = IncidentQuery { limit: 100, ..Default::default() };
    let page = |q: IncidentQuery, who: &'static str| {
        let (store, viewer) = (f.store.clone(), f.viewer(who));
        async move { store.list_incidents(&q, &viewer).await.expect("list") }
    };
    assert_eq!(page(all.clone(), "my-l1").await.total, 8, "amber+strict and green, not red");
    assert_eq!(page(all.clone(), "my-l2").await.total, 9, "the red recipient sees it too");
    assert_eq!(page(all.clone(), "cn-coord").await.total, 3, "an outsider sees the green ones only");
    assert!(!page(all.clone(), "my-l1").await.incidents.iter().any(|i| i.id == red));

    // Pages of 3, newest first, covering everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = page(IncidentQuery { limit: 3, before_seq: cursor, ..Default::default() }, "my-l2").await;
        assert_eq!(p.total, 9);
        seen.extend(p.incidents.iter().map(|i| i.id));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 9);
    assert_eq!(seen[8], amber[0], "oldest last");

    f.store.close(f.closing(amber[0], State::Resolved)).await.expect("close");
    let open = IncidentQuery { states: vec![State::Open], limit: 100, ..Default::default() };
    assert_eq!(page(open, "my-l2").await.total, 8);
    let sg = IncidentQuery { party: Some("SG".into()), limit: 100, ..Default::default() };
    assert_eq!(page(sg, "my-l2").await.total, 3);
    let strict = IncidentQuery { tlp: Some("amber+strict".into()), limit: 2, ..Default::default() };
    let p = page(strict, "my-l1").await;
    assert_eq!((p.total, p.incidents.len(), p.next_cursor.is_some()), (5, 2, true));
    let nobody = Viewer { id: "nobody".into(), keys: Vec::new() };
    assert_eq!(f.store.list_incidents(&all, &nobody).await.expect("list").total, 0);
}

async fn events_after_and_visible_events(backend: Backend) {
    let f = fixture(backend).await;
    assert_eq!(f.store.head_seq().await.expect("head"), 0);
    let strict = f.raise(body("amber+strict", &["MY"])).await;
    let green = f.raise(body("green", &["SG"])).await;
    let head = f.store.head_seq().await.expect("head");
    let all = f.store.events_after(0, 1000).await.expect("events");
    let seqs: Vec<i64> = all.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "contiguous from 1");
    let raised = all.iter().find(|e| e.event.incident == strict.id).expect("raised");
    assert_eq!(raised.event.kind.as_str(), "incident.raised");
    assert!(raised.audience.contains("party:MY") || !raised.audience.keys().is_empty());
    assert!(all.iter().any(|e| e.only_for.is_some()), "step-0 dashboard pages are only_for their focal point");
    assert_eq!(f.store.events_after(1, 1).await.expect("events")[0].event.seq, 2, "limit and after");

    let outsider = f.store.visible_events(0, 1000, &f.viewer("cn-coord")).await.expect("events");
    assert!(outsider.iter().all(|e| e.incident == green.id), "amber+strict is invisible to CN");
    assert!(!outsider.is_empty());
    let mine = f.store.visible_events(0, 1000, &f.viewer("my-l1")).await.expect("events");
    assert!(mine.iter().any(|e| e.incident == strict.id));
    let pages_for_me = mine.iter().filter(|e| e.kind.as_str() == "page").count();
    let pages_all = all.iter().filter(|e| e.only_for.as_deref() == Some("my-l1")).count();
    assert_eq!(pages_for_me, pages_all, "a viewer sees exactly the pages addressed to it");
    assert!(all.iter().filter(|e| e.only_for.is_some()).all(|e| e.event.kind.as_str() == "page"));
    assert_eq!(f.store.verify_chain().await.expect("verify").head_seq, head);
}

async fn timers_fire_once_under_two_concurrent_claimers(backend: Backend) {
    let f = fixture(backend).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(f.raise(body("amber", &["MY", "SG"])).await.id);
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 40);
    // Step 1 is due 5 minutes after the raise, step 2 ten minutes after that.
    let later = Utc::now() + chrono::Duration::minutes(6);
    assert!(f.store.next_timer_due().await.expect("due").is_some_and(|d| d < later));

    // Two engines on two store handles race for the same due timers and fire them.
    let second = open(&f.url, false).await.expect("second handle");
    let mut tasks = Vec::new();
    for (owner, store) in [("engine-a", f.store.clone()), ("engine-b", second)] {
        let dir = f.dir.clone();
        tasks.push(tokio::spawn(async move {
            let mut fired = Vec::new();
            loop {
                let timers = store.claim_due_timers(later, owner, Duration::from_secs(60), 7).await.expect("claim");
                if timers.is_empty() {
                    return fired;
                }
                for t in timers {
                    let (incident, audience) = store.incident(t.incident).await.expect("read").expect("exists");
                    let plan =
                        plan_step(&dir, &incident, &audience, &t.party, t.step, t.loop_, t.due_at).expect("plan");
                    if let FireOutcome::Fired { .. } = store.fire_step(&t, owner, &plan, later).await.expect("fire") {
                        fired.push((t.incident, t.party.clone(), t.step, t.loop_));
                    }
                }
            }
        }));
    }
    let mut fired = Vec::new();
    for t in tasks {
        fired.extend(t.await.expect("engine task"));
    }
    assert_eq!(fired.len(), 40, "every due step fired");
    assert_eq!(fired.iter().collect::<BTreeSet<_>>().len(), 40, "none twice");
    let mut escalated: BTreeMap<(Uuid, String), usize> = BTreeMap::new();
    for id in &ids {
        for e in f.store.timeline(*id).await.expect("timeline") {
            if e.event.kind.as_str() == "incident.escalated" {
                *escalated.entry((*id, e.event.party.clone().unwrap_or_default())).or_default() += 1;
            }
        }
    }
    assert_eq!(escalated.len(), 40);
    assert!(escalated.values().all(|n| *n == 1), "{escalated:?}");
    assert_eq!(f.store.pending_timers().await.expect("pending"), 40, "each party's next step is scheduled");

    // A lease held by a live owner is not claimed again; a lost claim fires nothing.
    let soon = Utc::now() + chrono::Duration::hours(2);
    let held = f.store.claim_due_timers(soon, "engine-a", Duration::from_secs(60), 100).await.expect("claim");
    assert_eq!(held.len(), 40);
    assert!(f.store.claim_due_timers(soon, "engine-b", Duration::from_secs(60), 100).await.expect("claim").is_empty());
    let t = &held[0];
    let (incident, audience) = f.store.incident(t.incident).await.expect("read").expect("exists");
    let plan = plan_step(&f.dir, &incident, &audience, &t.party, t.step, t.loop_, t.due_at).expect("plan");
    assert_eq!(f.store.fire_step(t, "engine-b", &plan, soon).await.expect("fire"), FireOutcome::Stale);
    // After the lease runs out (its engine died), another engine takes the timer over.
    let after_lease = soon + chrono::Duration::seconds(61);
    let taken = f.store.claim_due_timers(after_lease, "engine-b", Duration::from_secs(60), 100).await.expect("claim");
    assert_eq!(taken.len(), 40);
    assert!(matches!(
        f.store.fire_step(t, "engine-b", &plan, after_lease).await.expect("fire"),
        FireOutcome::Fired { .. }
    ));
    assert_eq!(f.store.fire_step(t, "engine-a", &plan, after_lease).await.expect("fire"), FireOutcome::Stale);
    // A manual escalation claims one party's timer, due or not.
    let fresh = f.raise(body("amber", &["MY"])).await;
    let manual = f.store.claim_party_timer(fresh.id, "MY", Utc::now(), "hand", Duration::from_secs(60)).await;
    assert_eq!(manual.expect("claim").map(|t| (t.step, t.loop_)), Some((1, 0)));
    assert!(f.store.pages(fresh.id).await.expect("pages").iter().all(|p| p.party == "MY" && p.step == 0));
    assert_eq!(f.store.verify_chain().await.expect("verify").broken_at, None);
}

async fn credentials_tokens_passwords_sessions(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    assert_eq!(s.credential_count().await.expect("count"), 0);
    s.insert_token(b"hash-1", "th-duty", "cli").await.expect("token");
    s.insert_token(b"hash-2", "th-duty", "bot").await.expect("token");
    assert_eq!(s.token_owner(b"hash-1").await.expect("owner").as_deref(), Some("th-duty"));
    assert_eq!(s.token_owner(b"nope").await.expect("owner"), None);
    assert_eq!(s.revoke_tokens("th-duty").await.expect("revoke"), 2);
    assert_eq!(s.token_owner(b"hash-1").await.expect("owner"), None);
    assert_eq!(s.revoke_tokens("th-duty").await.expect("revoke"), 0);

    s.set_password("my-l1", "$argon2id$one").await.expect("password");
    let now = Utc::now();
    s.insert_session(b"session-1", "my-l1", now + chrono::Duration::hours(1)).await.expect("session");
    assert_eq!(s.session_owner(b"session-1", now).await.expect("owner").as_deref(), Some("my-l1"));
    assert_eq!(s.session_owner(b"session-1", now + chrono::Duration::hours(2)).await.expect("owner"), None, "expired");
    // A new password ends the sessions signed in with the old one.
    s.set_password("my-l1", "$argon2id$two").await.expect("password");
    assert_eq!(s.password_hash("my-l1").await.expect("hash").as_deref(), Some("$argon2id$two"));
    assert_eq!(s.session_owner(b"session-1", now).await.expect("owner"), None);
    s.insert_session(b"session-2", "my-l1", now + chrono::Duration::hours(1)).await.expect("session");
    s.delete_session(b"session-2").await.expect("delete");
    assert_eq!(s.session_owner(b"session-2", now).await.expect("owner"), None);
    assert_eq!(s.password_hash("sg-l1").await.expect("hash"), None);
    assert_eq!(s.credential_count().await.expect("count"), 1);
}

async fn concurrent_raises_with_one_dedup_key_give_one_incident(backend: Backend) {
    let f = Arc::new(fixture(backend).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = body("amber", &["MY"]);
            b["dedup_key"] = json!("one-sensor");
            match f.store.raise(f.record("th-duty", b, None)).await.expect("raise") {
                RaiseOutcome::Created { incident, .. } => (true, incident.id),
                RaiseOutcome::DedupHit { incident, .. } => (false, incident.id),
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for t in tasks {
        let (new, id) = t.await.expect("task");
        created += usize::from(new);
        ids.insert(id);
    }
    assert_eq!((created, ids.len()), (1, 1), "exactly one incident, every raise answered with it");
    let all = IncidentQuery { limit: 100, ..Default::default() };
    assert_eq!(f.store.list_incidents(&all, &f.viewer("th-duty")).await.expect("list").total, 1);
}

async fn concurrent_appends_never_show_a_reader_a_gap(backend: Backend) {
    let f = fixture(backend).await;
    let target = f.raise(body("green", &["MY"])).await;
    let start = f.store.head_seq().await.expect("head");
    const WRITES: i64 = 200;
    // Several store handles (connection pools), as several replicas would have.
    let mut handles = vec![f.store.clone()];
    for _ in 0..2 {
        handles.push(open(&f.url, false).await.expect("another handle"));
    }
    let reader = {
        let store = f.store.clone();
        tokio::spawn(async move {
            let mut last = start;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while last < start + WRITES {
                assert!(tokio::time::Instant::now() < deadline, "reader stuck at {last}");
                for e in store.events_after(last, 7).await.expect("read") {
                    assert_eq!(e.event.seq, last + 1, "the reader saw seq {} right after {last}", e.event.seq);
                    last = e.event.seq;
                }
                tokio::task::yield_now().await;
            }
            last
        })
    };
    let mut writers = Vec::new();
    for i in 0..WRITES {
        let store = handles[i as usize % handles.len()].clone();
        writers.push(tokio::spawn(async move {
            let note = NoteRecord {
                incident: target.id,
                by: "th-duty".into(),
                party: "TH".into(),
                text: format!("n{i}"),
                at: Utc::now(),
            };
            match store.add_note(note).await.expect("note") {
                ChangeOutcome::Changed { seq, .. } => seq,
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    let mut seqs = BTreeSet::new();
    for w in writers {
        seqs.insert(w.await.expect("writer"));
    }
    assert_eq!(seqs, (start + 1..=start + WRITES).collect::<BTreeSet<_>>(), "each append got its own seq");
    assert_eq!(reader.await.expect("reader"), start + WRITES);
    let report = f.store.verify_chain().await.expect("verify");
    assert_eq!((report.broken_at, report.head_seq), (None, start + WRITES), "{report:?}");
}
