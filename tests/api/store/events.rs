//! The event log and incident state: a raise, ack, note or close is one transaction with
//! its events; dedup and Idempotency-Key replays create nothing new; lists and event
//! reads honour visibility; seq is contiguous in commit order and hash-chained, also under
//! concurrent appends from several store handles.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use focalpoint::domain::incident::State;
use focalpoint::store::*;
use serde_json::json;
use uuid::Uuid;

use super::*;

on_both_backends!(
    multi_thread;
    raise_dedup_and_idempotency,
    ack_is_per_party_and_idempotent,
    close_stops_everything,
    list_visibility_pagination_and_counts,
    events_after_and_visible_events,
    the_hash_chain_covers_every_event,
    active_incident_by_ref_finds_open_and_acknowledged_incidents_only,
    concurrent_raises_with_one_dedup_key_give_one_incident,
    concurrent_appends_never_show_a_reader_a_gap,
    a_failing_write_among_concurrent_ones_fails_alone,
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

async fn the_hash_chain_covers_every_event(backend: Backend) {
    let f = fixture(backend).await;
    let empty = f.store.verify_chain().await.expect("verify");
    assert_eq!((empty.events, empty.head_seq, empty.broken_at), (0, 0, None), "{empty:?}");
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    f.store.acknowledge(f.ack(inc.id, "MY", "my-l1")).await.expect("ack");
    f.store.close(f.closing(inc.id, State::Resolved)).await.expect("close");
    let report = f.store.verify_chain().await.expect("verify");
    let head = f.head().await;
    assert_eq!((report.events, report.head_seq, report.broken_at), (head as u64, head, None), "{report:?}");
    assert!(
        report.head_hash.len() == 64 && report.head_hash.chars().all(|c| c.is_ascii_hexdigit()),
        "a SHA-256 head hash: {report:?}"
    );
    // One more event moves the head hash; a second handle walks the same chain.
    f.raise(body("green", &["SG"])).await;
    let later = f.another_store().await.verify_chain().await.expect("verify");
    assert_ne!(later.head_hash, report.head_hash);
    assert_eq!((later.head_seq, later.broken_at), (f.head().await, None), "{later:?}");
}

async fn active_incident_by_ref_finds_open_and_acknowledged_incidents_only(backend: Backend) {
    let f = fixture(backend).await;
    let open = f.raise(body("amber", &["MY"])).await;
    let acked = f.raise(body("amber", &["MY"])).await;
    let resolved = f.raise(body("amber", &["MY"])).await;
    let cancelled = f.raise(body("amber", &["MY"])).await;
    f.store.acknowledge(f.ack(acked.id, "MY", "my-l1")).await.expect("ack");
    f.store.close(f.closing(resolved.id, State::Resolved)).await.expect("close");
    f.store.close(f.closing(cancelled.id, State::Cancelled)).await.expect("close");
    let by_ref = |r: String| {
        let store = f.store.clone();
        async move { store.active_incident_by_ref(&r).await.expect("by ref") }
    };
    // The store may have re-drawn a proposed ref: read the one it kept.
    let kept = |id: Uuid| {
        let store = f.store.clone();
        async move { store.incident(id).await.expect("read").expect("exists").0.reference }
    };
    assert_eq!(by_ref(kept(open.id).await).await, Some(open.id));
    assert_eq!(by_ref(kept(acked.id).await).await, Some(acked.id), "acknowledged is still active");
    assert_eq!(by_ref(kept(resolved.id).await).await, None, "resolved");
    assert_eq!(by_ref(kept(cancelled.id).await).await, None, "cancelled");
    assert_eq!(by_ref("ZZZZZZ".into()).await, None, "unknown ref");
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

/// Concurrent raises are written together (group commit); a raise that fails after
/// appending its event (its incident id is taken: the same record raised twice) must fail
/// alone, leaving the others committed and the log contiguous and chained.
async fn a_failing_write_among_concurrent_ones_fails_alone(backend: Backend) {
    let f = Arc::new(fixture(backend).await);
    let start = f.store.head_seq().await.expect("head");
    let mut tasks = Vec::new();
    for i in 0..30 {
        let record = f.record("th-duty", body("green", &["MY"]), None);
        let copies = if i % 3 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let (f, record) = (f.clone(), record.clone());
            tasks.push(tokio::spawn(async move { f.store.raise(record).await.is_ok() }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("task"));
    }
    assert_eq!(ok, 30, "each incident once; each second copy refused");
    let report = f.store.verify_chain().await.expect("verify");
    assert_eq!(report.broken_at, None, "the chain holds");
    let events = f.store.events_after(start, 1000).await.expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, ((start + 1)..=(start + seqs.len() as i64)).collect::<Vec<_>>(), "contiguous");
    let raised = events.iter().filter(|e| e.event.kind == focalpoint::domain::event::EventType::Raised).count();
    assert_eq!(raised, 30, "only the raises that committed left events");
}

async fn concurrent_appends_never_show_a_reader_a_gap(backend: Backend) {
    let f = fixture(backend).await;
    let target = f.raise(body("green", &["MY"])).await;
    let start = f.store.head_seq().await.expect("head");
    const WRITES: i64 = 200;
    // Several store handles (connection pools), as several replicas would have.
    let mut handles = vec![f.store.clone()];
    for _ in 0..2 {
        handles.push(f.another_store().await);
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
