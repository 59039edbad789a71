//! The outbox: `claim_pages` leases due sms/email/webhook pages to one worker (a lease
//! that runs out is claimed again: at least once, never zero times) and merges identical
//! pending sms/email pages into the claimed one; acks and closes cancel pending pages;
//! `record_page` records a result only from the lease holder (except `Sent`);
//! `page_status` never moves a page backwards and appends `notification.delivered` once.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use focalpoint::domain::incident::State;
use focalpoint::store::*;
use uuid::Uuid;

use super::*;

on_both_backends!(
    multi_thread;
    claim_pages_leases_due_pages_to_one_worker,
    claim_lease_expiry_claims_the_page_again,
    a_result_from_a_worker_that_lost_its_lease_is_dropped,
    record_page_sent,
    record_page_retry_and_deferred,
    record_page_failed_and_cancelled,
    a_fully_failed_step_makes_the_next_step_due_now,
    identical_pending_pages_are_merged_into_the_claimed_one,
    identical_due_pages_claimed_together_go_once,
    an_ack_cancels_the_partys_pending_pages,
    a_close_cancels_every_pending_page,
    a_page_cancelled_in_flight_is_still_recorded_sent_by_its_holder,
    page_status_never_moves_backwards_and_delivers_once,
    page_status_failure_is_final,
    concurrent_delivery_callbacks_append_delivered_once,
    two_concurrent_claimers_never_get_the_same_page,
);

/// The lease as a chrono duration.
fn lease() -> TimeDelta {
    chrono::Duration::from_std(LEASE).expect("lease")
}

/// A moment after every page raised so far is due, in whole milliseconds (the store's
/// precision), so times derived from it compare exactly.
fn soon() -> DateTime<Utc> {
    let t = Utc::now() + TimeDelta::seconds(1);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a valid time")
}

/// Raises an amber MY incident: step 0 pages my-l1 by SMS (and the dashboard). Returns the
/// incident id and its SMS page.
async fn raise_sms(f: &Fixture) -> (Uuid, OutboxPage) {
    let inc = f.raise(body("amber", &["MY"])).await;
    let sms: Vec<OutboxPage> = f.outbox(inc.id).await.into_iter().filter(|p| p.channel == "sms").collect();
    assert_eq!(sms.len(), 1, "step 0 pages my-l1 by SMS once: {sms:?}");
    let page = sms[0].clone();
    assert_eq!((page.focal_point.as_str(), page.step, page.loop_, page.state.as_str()), ("my-l1", 0, 0, "pending"));
    (inc.id, page)
}

/// Claims exactly the page `id` (failing if the claim returns anything else).
async fn claim_one(f: &Fixture, store: &dyn Store, now: DateTime<Utc>, owner: &str, id: i64) -> OutboxPage {
    let claimed = store.claim_pages(now, owner, LEASE, 100).await.expect("claim");
    assert_eq!(claimed.iter().map(|p| p.id).collect::<Vec<_>>(), [id], "{owner} claims page {id}: {claimed:?}");
    let _ = f;
    claimed.into_iter().next().expect("claimed")
}

/// Events of one kind about one incident.
async fn count(f: &Fixture, incident: Uuid, kind: &str) -> usize {
    f.kinds(incident).await.iter().filter(|k| *k == kind).count()
}

async fn claim_pages_leases_due_pages_to_one_worker(backend: Backend) {
    let f = fixture(backend).await;
    let mut sms = BTreeSet::new();
    for _ in 0..3 {
        sms.insert(raise_sms(&f).await.1.id);
    }
    let (due, pending) = f.store.outbox_backlog().await.expect("backlog");
    assert_eq!(pending, 3, "dashboard pages are delivered with their event, not pending");
    assert!(due.is_some_and(|d| d <= soon()), "{due:?}");
    // Not due yet: nothing.
    let before = Utc::now() - TimeDelta::minutes(1);
    assert!(f.store.claim_pages(before, "w-a", LEASE, 100).await.expect("claim").is_empty());

    let now = soon();
    let first = f.store.claim_pages(now, "w-a", LEASE, 2).await.expect("claim");
    assert_eq!(first.len(), 2, "limit");
    let rest = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    let claimed: Vec<&OutboxPage> = first.iter().chain(&rest).collect();
    assert_eq!(claimed.iter().map(|p| p.id).collect::<BTreeSet<_>>(), sms, "each due SMS page once");
    for p in &claimed {
        assert_eq!((p.channel.as_str(), p.state.as_str(), p.attempts), ("sms", "pending", 0), "{p:?}");
        assert_eq!(p.merged_into, None);
    }
    // Leased: another worker gets nothing until the lease runs out, and a claimed page
    // stays pending (a worker that dies loses nothing).
    let within = now + lease() - TimeDelta::seconds(1);
    assert!(f.store.claim_pages(within, "w-b", LEASE, 100).await.expect("claim").is_empty());
    assert_eq!(f.store.outbox_backlog().await.expect("backlog").1, 3);
}

async fn claim_lease_expiry_claims_the_page_again(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = raise_sms(&f).await;
    let now = soon();
    claim_one(&f, &*f.store, now, "w-a", page.id).await;
    // w-a dies mid-send. Just before its lease runs out, nobody takes the page…
    assert!(
        f.store
            .claim_pages(now + lease() - TimeDelta::milliseconds(1), "w-b", LEASE, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    // …just after, another worker (on another store handle) does.
    let after = now + lease() + TimeDelta::milliseconds(1);
    let other = f.another_store().await;
    let again = claim_one(&f, &*other, after, "w-b", page.id).await;
    assert_eq!((again.state.as_str(), again.attempts), ("pending", 0));
    assert!(f.store.claim_pages(after, "w-c", LEASE, 100).await.expect("claim").is_empty(), "w-b holds it now");
    let seq = other.record_page(&again, "w-b", &PageResult::Sent { provider_id: Some("SMb".into()) }, after).await;
    assert!(seq.expect("record").is_some());
    assert_eq!(f.page(id, page.id).await.state, "sent");
    assert_eq!(count(&f, id, "notification.sent").await, 1);
}

async fn a_result_from_a_worker_that_lost_its_lease_is_dropped(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = raise_sms(&f).await;
    let now = soon();
    let stale = claim_one(&f, &*f.store, now, "w-a", page.id).await;
    let after = now + lease() + TimeDelta::seconds(1);
    let fresh = claim_one(&f, &*f.store, after, "w-b", page.id).await;
    let head = f.head().await;
    // w-a comes back with results for a page it no longer holds: all dropped.
    let results = [
        PageResult::Retry { at: after + TimeDelta::seconds(5), error: "HTTP 500".into() },
        PageResult::Deferred { at: after + TimeDelta::hours(1) },
        PageResult::Failed { reason: "HTTP 400".into() },
        PageResult::Cancelled { reason: "party acknowledged".into() },
    ];
    for result in &results {
        assert_eq!(f.store.record_page(&stale, "w-a", result, after).await.expect("record"), None, "{result:?}");
        let row = f.page(id, page.id).await;
        assert_eq!(
            (row.state.as_str(), row.attempts, row.last_error.as_deref(), row.next_attempt_at),
            ("pending", 0, None, page.next_attempt_at),
            "{result:?} from a lost lease changed the page: {row:?}"
        );
    }
    assert_eq!(f.head().await, head, "no event from a lost lease");
    // Still w-b's: nobody else claims it, and w-b's result counts.
    assert!(f.store.claim_pages(after, "w-c", LEASE, 100).await.expect("claim").is_empty());
    let failed = PageResult::Failed { reason: "HTTP 400".into() };
    assert!(f.store.record_page(&fresh, "w-b", &failed, after).await.expect("record").is_some());
    assert_eq!(f.page(id, page.id).await.state, "failed");
}

async fn record_page_sent(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = raise_sms(&f).await;
    let now = soon();
    let claimed = claim_one(&f, &*f.store, now, "w-a", page.id).await;
    let sent = PageResult::Sent { provider_id: Some("SM0001".into()) };
    let seq = f.store.record_page(&claimed, "w-a", &sent, now).await.expect("record").expect("an event");
    assert_eq!(seq, f.head().await, "the seq appended");
    let row = f.page(id, page.id).await;
    assert_eq!((row.state.as_str(), row.provider_id.as_deref(), row.attempts), ("sent", Some("SM0001"), 0), "{row:?}");
    let timeline = f.store.timeline(id).await.expect("timeline");
    let event = timeline.iter().find(|e| e.event.seq == seq).expect("the event").event.clone();
    assert_eq!(event.kind.as_str(), "notification.sent");
    assert_eq!(event.party.as_deref(), Some("MY"));
    assert_eq!(event.data["provider_id"], "SM0001");
    assert_eq!((event.data["focal_point"].as_str(), event.data["channel"].as_str()), (Some("my-l1"), Some("sms")));
    assert!(!event.data.to_string().contains("+6035"), "no phone number in events: {}", event.data);
    // Sent is final: not claimed again, not pending, and a repeat records nothing.
    assert!(f.store.claim_pages(now + TimeDelta::hours(2), "w-b", LEASE, 100).await.expect("claim").is_empty());
    assert_eq!(f.store.outbox_backlog().await.expect("backlog"), (None, 0));
    assert_eq!(f.store.record_page(&claimed, "w-a", &sent, now).await.expect("record"), None);
    assert_eq!(count(&f, id, "notification.sent").await, 1);
}

async fn record_page_retry_and_deferred(backend: Backend) {
    let f = fixture(backend).await;
    let (retry_id, retry_page) = raise_sms(&f).await;
    let (defer_id, defer_page) = raise_sms(&f).await;
    let now = soon();
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let get = |id: i64| claimed.iter().find(|p| p.id == id).expect("claimed").clone();
    let head = f.head().await;

    let retry_at = now + TimeDelta::seconds(5);
    let retry = PageResult::Retry { at: retry_at, error: "HTTP 500".into() };
    assert_eq!(f.store.record_page(&get(retry_page.id), "w-a", &retry, now).await.expect("record"), None);
    let row = f.page(retry_id, retry_page.id).await;
    assert_eq!((row.state.as_str(), row.attempts, row.last_error.as_deref()), ("pending", 1, Some("HTTP 500")));
    assert_eq!(row.next_attempt_at, retry_at);

    let defer_at = now + TimeDelta::seconds(30);
    let deferred = PageResult::Deferred { at: defer_at };
    assert_eq!(f.store.record_page(&get(defer_page.id), "w-a", &deferred, now).await.expect("record"), None);
    let row = f.page(defer_id, defer_page.id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 0), "deferred is not an attempt: {row:?}");
    assert_eq!(row.next_attempt_at, defer_at);
    assert_eq!(f.head().await, head, "neither appends an event");

    // The lease ends with the result: each page is claimable again (by anyone) at its
    // new time, long before the old lease would have run out, and not before.
    assert_eq!(f.store.outbox_backlog().await.expect("backlog"), (Some(retry_at), 2));
    assert!(
        f.store.claim_pages(retry_at - TimeDelta::milliseconds(1), "w-b", LEASE, 100).await.expect("claim").is_empty()
    );
    let again = claim_one(&f, &*f.store, retry_at, "w-b", retry_page.id).await;
    assert_eq!(again.attempts, 1);
    assert!(
        f.store.claim_pages(defer_at - TimeDelta::milliseconds(1), "w-c", LEASE, 100).await.expect("claim").is_empty()
    );
    claim_one(&f, &*f.store, defer_at, "w-c", defer_page.id).await;
}

async fn record_page_failed_and_cancelled(backend: Backend) {
    let f = fixture(backend).await;
    let (failed_id, failed_page) = raise_sms(&f).await;
    let (cancelled_id, cancelled_page) = raise_sms(&f).await;
    let now = soon();
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    let get = |id: i64| claimed.iter().find(|p| p.id == id).expect("claimed").clone();

    let failed = PageResult::Failed { reason: "HTTP 400: not a mobile number".into() };
    let seq = f.store.record_page(&get(failed_page.id), "w-a", &failed, now).await.expect("record").expect("event");
    let row = f.page(failed_id, failed_page.id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 1), "{row:?}");
    assert_eq!(row.last_error.as_deref(), Some("HTTP 400: not a mobile number"));
    let timeline = f.store.timeline(failed_id).await.expect("timeline");
    let event = &timeline.iter().find(|e| e.event.seq == seq).expect("the event").event;
    assert_eq!(event.kind.as_str(), "notification.failed");
    assert_eq!(event.data["reason"], "HTTP 400: not a mobile number");

    let head = f.head().await;
    let cancelled = PageResult::Cancelled { reason: "party acknowledged".into() };
    assert_eq!(f.store.record_page(&get(cancelled_page.id), "w-a", &cancelled, now).await.expect("record"), None);
    let row = f.page(cancelled_id, cancelled_page.id).await;
    assert_eq!((row.state.as_str(), row.last_error.as_deref()), ("cancelled", Some("party acknowledged")));
    assert_eq!(f.head().await, head, "a cancellation appends no event");

    // Both final: never claimed again, whatever the time.
    assert!(f.store.claim_pages(now + TimeDelta::days(1), "w-b", LEASE, 100).await.expect("claim").is_empty());
    assert_eq!(f.store.outbox_backlog().await.expect("backlog"), (None, 0));
    assert_eq!(count(&f, cancelled_id, "notification.failed").await, 0);
}

async fn a_fully_failed_step_makes_the_next_step_due_now(backend: Backend) {
    // The dispatch network: step 0 pages my-l1 by SMS and email only.
    let f = fixture_on(backend, &crate::dispatch::network("http://127.0.0.1:9/bot")).await;
    let inc = f
        .raise(serde_json::json!({
            "title": "t", "description": "d", "field": "drug-trafficking", "severity": "severe",
            "parties": ["MY"], "tlp": "amber",
        }))
        .await;
    let now = soon();
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    assert_eq!(claimed.iter().map(|p| p.channel.as_str()).collect::<BTreeSet<_>>(), ["email", "sms"].into());
    let step1 = f.store.next_timer_due().await.expect("due").expect("MY's step 1");
    assert!(step1 > now + TimeDelta::minutes(4), "step 1 waits 5 minutes: {step1}");
    let failed = PageResult::Failed { reason: "permanent".into() };
    f.store.record_page(&claimed[0], "w-a", &failed, now).await.expect("record");
    assert_eq!(f.store.next_timer_due().await.expect("due"), Some(step1), "one page of the step can still go");
    f.store.record_page(&claimed[1], "w-a", &failed, now).await.expect("record");
    // Nobody of step 0 can be reached: step 1 is due at once.
    assert_eq!(f.store.next_timer_due().await.expect("due"), Some(now), "the next step is due now");
    let timers = f.store.claim_due_timers(now, "engine", LEASE, 100).await.expect("claim");
    assert_eq!(timers.iter().map(|t| (t.incident, t.party.as_str(), t.step)).collect::<Vec<_>>(), [(inc.id, "MY", 1)]);
}

/// Escalates MY by hand through step 1 and step 2 to step 0 of loop 1, which pages my-l1
/// by SMS again. Returns that page.
async fn loop_back_to_my_l1(f: &Fixture, id: Uuid, now: DateTime<Utc>) -> OutboxPage {
    for _ in 0..3 {
        f.escalate(id, "MY", now).await;
    }
    let pages: Vec<OutboxPage> =
        f.outbox(id).await.into_iter().filter(|p| p.channel == "sms" && p.focal_point == "my-l1").collect();
    assert_eq!(pages.iter().map(|p| (p.step, p.loop_)).collect::<Vec<_>>(), [(0, 0), (0, 1)], "{pages:?}");
    pages[1].clone()
}

async fn identical_pending_pages_are_merged_into_the_claimed_one(backend: Backend) {
    let f = fixture(backend).await;
    let (id, old) = raise_sms(&f).await;
    let now = soon();
    // The provider asks to wait an hour for the first SMS…
    let claimed = claim_one(&f, &*f.store, now, "w-a", old.id).await;
    let deferred = PageResult::Deferred { at: now + TimeDelta::hours(1) };
    f.store.record_page(&claimed, "w-a", &deferred, now).await.expect("record");
    // …meanwhile the escalation loops back to my-l1: an identical SMS page.
    let new = loop_back_to_my_l1(&f, id, now).await;
    let claimed = f.store.claim_pages(now, "w-b", LEASE, 100).await.expect("claim");
    let sms: Vec<&OutboxPage> = claimed.iter().filter(|p| p.channel == "sms").collect();
    assert_eq!(sms.iter().map(|p| p.id).collect::<Vec<_>>(), [new.id], "the due page is claimed: {claimed:?}");
    let old_row = f.page(id, old.id).await;
    assert_eq!((old_row.state.as_str(), old_row.merged_into), ("merged", Some(new.id)), "{old_row:?}");
    // A merged page is done: not pending, never claimed, even when its time comes (only
    // w-b's pages come back, their lease having run out).
    let (_, pending) = f.store.outbox_backlog().await.expect("backlog");
    assert_eq!(pending as usize, claimed.len(), "only the claimed pages are pending");
    let later = f.store.claim_pages(now + TimeDelta::hours(2), "w-c", LEASE, 100).await.expect("claim");
    let ids = |pages: &[OutboxPage]| pages.iter().map(|p| p.id).collect::<BTreeSet<_>>();
    assert_eq!(ids(&later), ids(&claimed), "the merged page is not claimed again: {later:?}");
    // Other pages are not merged into it: my-l2's email (another recipient) was claimed.
    assert!(claimed.iter().any(|p| p.focal_point == "my-l2" && p.channel == "email"), "{claimed:?}");
    assert!(f.outbox(id).await.iter().filter(|p| p.state == "merged").all(|p| p.id == old.id));
}

async fn identical_due_pages_claimed_together_go_once(backend: Backend) {
    let f = fixture(backend).await;
    let (id, old) = raise_sms(&f).await;
    let now = soon();
    // Both SMS pages to my-l1 are due when the worker comes (after an outage, say).
    let new = loop_back_to_my_l1(&f, id, now).await;
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    let sms: Vec<&OutboxPage> = claimed.iter().filter(|p| p.channel == "sms").collect();
    assert_eq!(sms.len(), 1, "one SMS goes: {claimed:?}");
    let sent = sms[0].id;
    let other = if sent == old.id { new.id } else { old.id };
    assert!(sent == old.id || sent == new.id);
    let row = f.page(id, other).await;
    assert_eq!((row.state.as_str(), row.merged_into), ("merged", Some(sent)), "{row:?}");
    let sent_row = f.page(id, sent).await;
    assert_eq!((sent_row.state.as_str(), sent_row.merged_into), ("pending", None));
}

async fn an_ack_cancels_the_partys_pending_pages(backend: Backend) {
    let f = fixture(backend).await;
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    let (other, other_page) = raise_sms(&f).await;
    let now = soon();
    // my-l2's email (step 1) is waiting for a retry, my-l1's SMS (step 0) not yet sent.
    f.escalate(inc.id, "MY", now).await;
    let before = f.outbox(inc.id).await;
    let email = before.iter().find(|p| p.channel == "email").expect("my-l2's email").clone();
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    let email = claimed.iter().find(|p| p.id == email.id).expect("claimed").clone();
    let retry = PageResult::Retry { at: now + TimeDelta::seconds(30), error: "451".into() };
    f.store.record_page(&email, "w-a", &retry, now).await.expect("record");
    let sg_before: Vec<OutboxPage> = before.iter().filter(|p| p.party == "SG").cloned().collect();

    f.store.acknowledge(f.ack(inc.id, "MY", "my-l1")).await.expect("ack");
    let after = f.outbox(inc.id).await;
    for p in after.iter().filter(|p| p.party == "MY" && p.channel != "dashboard") {
        assert_eq!(p.state, "cancelled", "MY acknowledged: {p:?}");
        assert!(p.last_error.is_some(), "a cancelled page says why: {p:?}");
    }
    let sg_after: Vec<OutboxPage> = after.iter().filter(|p| p.party == "SG").cloned().collect();
    assert_eq!(sg_after, sg_before, "SG's pages are untouched");
    assert_eq!(f.page(other, other_page.id).await.state, "pending", "other incidents' pages are untouched");
    // Nothing of MY's is claimed any more.
    let later = f.store.claim_pages(now + TimeDelta::hours(1), "w-b", LEASE, 100).await.expect("claim");
    assert!(later.iter().all(|p| p.incident == other), "{later:?}");
}

async fn a_close_cancels_every_pending_page(backend: Backend) {
    let f = fixture(backend).await;
    for state in [State::Resolved, State::Cancelled] {
        let inc = f.raise(body("amber", &["MY", "SG"])).await;
        let now = soon();
        f.escalate(inc.id, "MY", now).await; // my-l2's email
        assert!(f.outbox(inc.id).await.iter().filter(|p| p.channel != "dashboard").count() >= 2);
        f.store.close(f.closing(inc.id, state)).await.expect("close");
        for p in f.outbox(inc.id).await.iter().filter(|p| p.channel != "dashboard") {
            assert_eq!(p.state, "cancelled", "{state:?}: {p:?}");
        }
        assert!(f.store.claim_pages(now + TimeDelta::hours(1), "w", LEASE, 100).await.expect("claim").is_empty());
    }
    assert_eq!(f.store.outbox_backlog().await.expect("backlog"), (None, 0));
}

async fn a_page_cancelled_in_flight_is_still_recorded_sent_by_its_holder(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = raise_sms(&f).await;
    let (id2, page2) = raise_sms(&f).await;
    let now = soon();
    let claimed = f.store.claim_pages(now, "w-a", LEASE, 100).await.expect("claim");
    let get = |id: i64| claimed.iter().find(|p| p.id == id).expect("claimed").clone();
    // Both are being sent when MY acknowledges.
    f.store.acknowledge(f.ack(id, "MY", "my-l1")).await.expect("ack");
    f.store.acknowledge(f.ack(id2, "MY", "my-l1")).await.expect("ack");
    assert_eq!(f.page(id, page.id).await.state, "cancelled");
    // The SMS did go out: its holder records it, with its event.
    let sent = PageResult::Sent { provider_id: Some("SMlate".into()) };
    assert!(f.store.record_page(&get(page.id), "w-a", &sent, now).await.expect("record").is_some());
    assert_eq!(f.page(id, page.id).await.state, "sent");
    assert_eq!(count(&f, id, "notification.sent").await, 1);
    // Not from a worker that never held it, and not any other result.
    assert_eq!(f.store.record_page(&get(page2.id), "w-z", &sent, now).await.expect("record"), None);
    let retry = PageResult::Retry { at: now, error: "HTTP 500".into() };
    assert_eq!(f.store.record_page(&get(page2.id), "w-a", &retry, now).await.expect("record"), None);
    let row = f.page(id2, page2.id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("cancelled", 0), "{row:?}");
    assert!(f.store.claim_pages(now + TimeDelta::hours(1), "w-b", LEASE, 100).await.expect("claim").is_empty());
}

/// Sends `page` as `provider_id` and returns the incident.
async fn sent_as(f: &Fixture, provider_id: &str) -> (Uuid, OutboxPage) {
    let (id, page) = raise_sms(f).await;
    let now = soon();
    let claimed = claim_one(f, &*f.store, now, "w", page.id).await;
    let sent = PageResult::Sent { provider_id: Some(provider_id.into()) };
    f.store.record_page(&claimed, "w", &sent, now).await.expect("record").expect("sent event");
    (id, page)
}

async fn page_status_never_moves_backwards_and_delivers_once(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = sent_as(&f, "SMd1").await;
    let now = Utc::now();
    let status = |s: &'static str| {
        let store = f.store.clone();
        async move { store.page_status("SMd1", s, now).await.expect("status") }
    };
    let head = f.head().await;
    assert_eq!(status("queued").await, None, "an earlier status appends nothing");
    assert_eq!(f.page(id, page.id).await.state, "sent", "queued does not move a sent page back");
    assert_eq!(status("sent").await, None);
    assert_eq!(f.head().await, head);
    let seq = status("delivered").await.expect("delivered appends its event");
    assert_eq!(seq, f.head().await);
    assert_eq!(f.page(id, page.id).await.state, "delivered");
    // Late, repeated and contradicting callbacks after a final state change nothing.
    for late in ["sent", "queued", "delivered", "read", "failed", "undelivered"] {
        assert_eq!(status(late).await, None, "{late} after delivered");
        assert_eq!(f.page(id, page.id).await.state, "delivered", "{late} after delivered");
    }
    assert_eq!(f.head().await, seq);
    assert_eq!(count(&f, id, "notification.delivered").await, 1);
    assert_eq!(count(&f, id, "notification.failed").await, 0);
    let timeline = f.store.timeline(id).await.expect("timeline");
    let event = &timeline.iter().find(|e| e.event.seq == seq).expect("event").event;
    assert_eq!((event.party.as_deref(), event.data["channel"].as_str()), (Some("MY"), Some("sms")));
    // Unknown ids and statuses change nothing.
    assert_eq!(f.store.page_status("SMunknown", "delivered", now).await.expect("status"), None);
    let (id2, page2) = sent_as(&f, "SMd2").await;
    let head = f.head().await;
    assert_eq!(f.store.page_status("SMd2", "exploded", now).await.expect("status"), None);
    assert_eq!((f.head().await, f.page(id2, page2.id).await.state), (head, "sent".to_string()));
}

async fn page_status_failure_is_final(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = sent_as(&f, "SMf1").await;
    let now = Utc::now();
    let seq = f.store.page_status("SMf1", "undelivered", now).await.expect("status").expect("failed event");
    assert_eq!(f.page(id, page.id).await.state, "failed");
    let timeline = f.store.timeline(id).await.expect("timeline");
    let event = &timeline.iter().find(|e| e.event.seq == seq).expect("event").event;
    assert_eq!(event.kind.as_str(), "notification.failed");
    for late in ["delivered", "sent", "failed"] {
        assert_eq!(f.store.page_status("SMf1", late, now).await.expect("status"), None, "{late} after undelivered");
    }
    assert_eq!(f.page(id, page.id).await.state, "failed");
    assert_eq!(count(&f, id, "notification.failed").await, 1);
    assert_eq!(count(&f, id, "notification.delivered").await, 0);
}

async fn concurrent_delivery_callbacks_append_delivered_once(backend: Backend) {
    let f = fixture(backend).await;
    let (id, page) = sent_as(&f, "SMc1").await;
    // The provider retries its callback; replicas receive the copies at once.
    let stores = [f.store.clone(), f.another_store().await];
    let seqs = concurrently(&stores, 16, |_, store| async move {
        store.page_status("SMc1", "delivered", Utc::now()).await.expect("status")
    })
    .await;
    assert_eq!(seqs.iter().flatten().count(), 1, "exactly one callback appends: {seqs:?}");
    assert_eq!(count(&f, id, "notification.delivered").await, 1);
    assert_eq!(f.page(id, page.id).await.state, "delivered");
    f.assert_chain_intact().await;
}

async fn two_concurrent_claimers_never_get_the_same_page(backend: Backend) {
    let f = fixture(backend).await;
    let mut all = BTreeSet::new();
    for _ in 0..30 {
        all.insert(raise_sms(&f).await.1.id);
    }
    let now = soon();
    // Two store handles (two replicas), four workers each, small batches, until empty.
    let stores = [f.store.clone(), f.another_store().await];
    let claims = concurrently(&stores, 8, move |i, store| async move {
        let owner = format!("w-{i}");
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_pages(now, &owner, LEASE, 3).await.expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.iter().map(|p| p.id));
        }
    })
    .await;
    let total: usize = claims.iter().map(Vec::len).sum();
    let distinct: BTreeSet<i64> = claims.iter().flatten().copied().collect();
    assert_eq!(distinct, all, "every due page claimed");
    assert_eq!(total, all.len(), "no page claimed by two workers: {claims:?}");
}
