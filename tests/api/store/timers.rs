//! Escalation timers: `claim_due_timers` leases due timers to one engine (atomic: two
//! engines never hold one timer; a lease that ran out is claimed again), and `fire_step`
//! enters a claimed step once, re-checking the lease, the incident and the party.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use focalpoint::domain::incident::State;
use focalpoint::store::*;
use uuid::Uuid;

use super::*;

on_both_backends!(
    multi_thread;
    claim_leases_due_timers_to_one_owner,
    claim_lease_expiry_lets_another_engine_take_over,
    two_concurrent_claimers_never_get_the_same_timer,
    each_step_fires_once_under_two_concurrent_engines,
    fire_rechecks_the_lease_the_party_and_the_incident,
    a_manual_escalation_claims_the_partys_timer_due_or_not,
);

/// Step 1 of the scenario policy is due 5 minutes after the raise.
const STEP_1: TimeDelta = TimeDelta::minutes(5);

fn key(t: &TimerKey) -> (Uuid, String, u32, u32) {
    (t.incident, t.party.clone(), t.step, t.loop_)
}

async fn claim_leases_due_timers_to_one_owner(backend: Backend) {
    let f = fixture(backend).await;
    let mut raised = BTreeMap::new();
    for _ in 0..3 {
        let inc = f.raise(body("amber", &["MY"])).await;
        raised.insert(inc.id, inc.raised_at);
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 3);
    let earliest = *raised.values().min().expect("raised");
    let due = f.store.next_timer_due().await.expect("due").expect("a pending timer");
    assert!((due - (earliest + STEP_1)).abs() <= TimeDelta::milliseconds(1), "next due {due}, raised {earliest}");

    // Not due yet: nothing to claim.
    let before = earliest + STEP_1 - TimeDelta::seconds(1);
    assert!(f.store.claim_due_timers(before, "engine-a", LEASE, 100).await.expect("claim").is_empty());

    // Due: `limit` at a time, each timer once, to the claimer.
    let now = Utc::now() + STEP_1 + TimeDelta::seconds(1);
    let first = f.store.claim_due_timers(now, "engine-a", LEASE, 2).await.expect("claim");
    assert_eq!(first.len(), 2, "limit");
    let second = f.store.claim_due_timers(now, "engine-a", LEASE, 100).await.expect("claim");
    assert_eq!(second.len(), 1, "the rest, not the ones already leased");
    let all: Vec<&TimerKey> = first.iter().chain(&second).collect();
    assert_eq!(all.iter().map(|t| t.incident).collect::<BTreeSet<_>>(), raised.keys().copied().collect());
    for t in &all {
        assert_eq!((t.party.as_str(), t.step, t.loop_), ("MY", 1, 0), "{t:?}");
        let expected = raised[&t.incident] + STEP_1;
        assert!((t.due_at - expected).abs() <= TimeDelta::milliseconds(1), "{t:?} due {expected}");
    }
    // Held by engine-a for the lease: another engine gets nothing, also just before the end.
    let within = now + chrono::Duration::from_std(LEASE).expect("lease") - TimeDelta::seconds(1);
    assert!(f.store.claim_due_timers(within, "engine-b", LEASE, 100).await.expect("claim").is_empty());
    // Claiming is not firing: the timers are still pending.
    assert_eq!(f.store.pending_timers().await.expect("pending"), 3);
}

async fn claim_lease_expiry_lets_another_engine_take_over(backend: Backend) {
    let f = fixture(backend).await;
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    let now = Utc::now() + STEP_1 + TimeDelta::seconds(1);
    let lease = chrono::Duration::from_std(LEASE).expect("lease");
    let held = f.store.claim_due_timers(now, "engine-a", LEASE, 100).await.expect("claim");
    assert_eq!(held.len(), 2);
    // engine-a dies. Until its lease runs out nobody else takes the timers…
    let just_before = now + lease - TimeDelta::milliseconds(1);
    assert!(f.store.claim_due_timers(just_before, "engine-b", LEASE, 100).await.expect("claim").is_empty());
    // …then engine-b does, the same timers, once.
    let after = now + lease + TimeDelta::milliseconds(1);
    let taken = f.store.claim_due_timers(after, "engine-b", LEASE, 100).await.expect("claim");
    assert_eq!(taken.iter().map(key).collect::<BTreeSet<_>>(), held.iter().map(key).collect::<BTreeSet<_>>());
    assert!(f.store.claim_due_timers(after, "engine-c", LEASE, 100).await.expect("claim").is_empty());
    // The old owner's claim is lost: its fire changes nothing; the new owner's fires.
    let t = &taken[0];
    let plan = f.plan(t).await;
    let head = f.head().await;
    assert_eq!(f.store.fire_step(t, "engine-a", &plan, after).await.expect("fire"), FireOutcome::Stale);
    assert_eq!(f.head().await, head, "a lost claim appends nothing");
    assert!(matches!(f.store.fire_step(t, "engine-b", &plan, after).await.expect("fire"), FireOutcome::Fired { .. }));
    let escalated = f.kinds(inc.id).await.iter().filter(|k| *k == "incident.escalated").count();
    assert_eq!(escalated, 1);
}

async fn two_concurrent_claimers_never_get_the_same_timer(backend: Backend) {
    let f = fixture(backend).await;
    for _ in 0..30 {
        f.raise(body("amber", &["MY", "SG"])).await;
    }
    let now = Utc::now() + STEP_1 + TimeDelta::seconds(1);
    // Two store handles (two replicas), four claimers each, small batches, until empty.
    let stores = [f.store.clone(), f.another_store().await];
    let claims = concurrently(&stores, 8, move |i, store| async move {
        let owner = format!("engine-{i}");
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_due_timers(now, &owner, LEASE, 3).await.expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.iter().map(key));
        }
    })
    .await;
    let total: usize = claims.iter().map(Vec::len).sum();
    let distinct: BTreeSet<_> = claims.iter().flatten().cloned().collect();
    assert_eq!(distinct.len(), 60, "every due timer claimed");
    assert_eq!(total, 60, "no timer claimed by two claimers: {claims:?}");
}

async fn each_step_fires_once_under_two_concurrent_engines(backend: Backend) {
    let f = Arc::new(fixture(backend).await);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(f.raise(body("amber", &["MY", "SG"])).await.id);
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 40);
    let later = Utc::now() + STEP_1 + TimeDelta::minutes(1);
    assert!(f.store.next_timer_due().await.expect("due").is_some_and(|d| d < later));

    // Two engines on two store handles race for the same due timers and fire them.
    let stores = [f.store.clone(), f.another_store().await];
    let fired = concurrently(&stores, 2, {
        let f = f.clone();
        move |i, store| {
            let f = f.clone();
            async move {
                let owner = format!("engine-{i}");
                let mut fired = Vec::new();
                loop {
                    let timers = store.claim_due_timers(later, &owner, LEASE, 7).await.expect("claim");
                    if timers.is_empty() {
                        return fired;
                    }
                    for t in timers {
                        let plan = f.plan(&t).await;
                        if let FireOutcome::Fired { .. } =
                            store.fire_step(&t, &owner, &plan, later).await.expect("fire")
                        {
                            fired.push(key(&t));
                        }
                    }
                }
            }
        }
    })
    .await;
    let fired: Vec<_> = fired.into_iter().flatten().collect();
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
    // Each fired step wrote its pages once: MY step 1 pages my-l2 on dashboard and email.
    for id in &ids {
        let step1: Vec<_> = f.store.pages(*id).await.expect("pages").into_iter().filter(|p| p.step == 1).collect();
        let my: BTreeSet<_> =
            step1.iter().filter(|p| p.party == "MY").map(|p| (p.focal_point.clone(), p.channel.clone())).collect();
        assert_eq!(step1.iter().filter(|p| p.party == "MY").count(), my.len(), "no page twice: {step1:?}");
        assert_eq!(my, [("my-l2", "dashboard"), ("my-l2", "email")].map(|(a, b)| (a.into(), b.into())).into());
    }
    // A fired timer is done: its owner cannot fire it again.
    let (id, party) = (ids[0], "MY");
    let step2_due = f.store.claim_due_timers(later + TimeDelta::hours(1), "engine-x", LEASE, 100).await.expect("claim");
    assert!(step2_due.iter().all(|t| t.step == 2), "only the next steps are pending: {step2_due:?}");
    let done = TimerKey { incident: id, party: party.into(), step: 1, loop_: 0, due_at: later };
    let plan = f.plan(&done).await;
    assert_eq!(f.store.fire_step(&done, "engine-0", &plan, later).await.expect("fire"), FireOutcome::Stale);
    assert_eq!(f.store.fire_step(&done, "engine-1", &plan, later).await.expect("fire"), FireOutcome::Stale);
    f.assert_chain_intact().await;
}

async fn fire_rechecks_the_lease_the_party_and_the_incident(backend: Backend) {
    let f = fixture(backend).await;
    let acked = f.raise(body("amber", &["MY"])).await;
    let closed = f.raise(body("amber", &["MY"])).await;
    let other = f.raise(body("amber", &["MY"])).await;
    let now = Utc::now() + STEP_1 + TimeDelta::seconds(1);
    let claimed = f.store.claim_due_timers(now, "engine-a", LEASE, 100).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let timer = |id: Uuid| claimed.iter().find(|t| t.incident == id).expect("claimed").clone();
    let plans = (f.plan(&timer(acked.id)).await, f.plan(&timer(closed.id)).await, f.plan(&timer(other.id)).await);

    // Between claim and fire, MY acknowledges one incident and another is resolved.
    f.store.acknowledge(f.ack(acked.id, "MY", "my-l1")).await.expect("ack");
    f.store.close(f.closing(closed.id, State::Resolved)).await.expect("close");
    let head = f.head().await;
    assert_eq!(f.store.fire_step(&timer(acked.id), "engine-a", &plans.0, now).await.expect("fire"), FireOutcome::Stale);
    assert_eq!(
        f.store.fire_step(&timer(closed.id), "engine-a", &plans.1, now).await.expect("fire"),
        FireOutcome::Stale
    );
    // Not the lease holder.
    assert_eq!(f.store.fire_step(&timer(other.id), "engine-b", &plans.2, now).await.expect("fire"), FireOutcome::Stale);
    assert_eq!(f.head().await, head, "stale fires append nothing");
    for id in [acked.id, closed.id] {
        assert!(f.store.pages(id).await.expect("pages").iter().all(|p| p.step == 0), "no step 1 pages for {id}");
    }
    assert_eq!(f.store.pending_timers().await.expect("pending"), 1, "only the live incident's timer is pending");
    assert!(matches!(
        f.store.fire_step(&timer(other.id), "engine-a", &plans.2, now).await.expect("fire"),
        FireOutcome::Fired { .. }
    ));
    assert_eq!(f.store.pending_timers().await.expect("pending"), 1, "its step 2 is scheduled");
}

async fn a_manual_escalation_claims_the_partys_timer_due_or_not(backend: Backend) {
    let f = fixture(backend).await;
    let inc = f.raise(body("amber", &["MY", "SG"])).await;
    let now = Utc::now();
    // Leased for longer than the step's wait, so it is still held when the step is due.
    let long = std::time::Duration::from_secs(3600);
    let manual = f.store.claim_party_timer(inc.id, "MY", now, "hand", long).await.expect("claim").expect("MY's timer");
    assert_eq!((manual.incident, manual.party.as_str(), manual.step, manual.loop_), (inc.id, "MY", 1, 0));
    // Leased to the hand: neither a second manual claim nor the engine gets it.
    assert_eq!(f.store.claim_party_timer(inc.id, "MY", now, "hand-2", LEASE).await.expect("claim"), None);
    let due = Utc::now() + STEP_1 + TimeDelta::seconds(1);
    let engine = f.store.claim_due_timers(due, "engine", LEASE, 100).await.expect("claim");
    assert_eq!(engine.iter().map(|t| t.party.as_str()).collect::<Vec<_>>(), ["SG"], "{engine:?}");
    let plan = f.plan(&manual).await;
    assert!(matches!(f.store.fire_step(&manual, "hand", &plan, now).await.expect("fire"), FireOutcome::Fired { .. }));
    assert!(f.store.pages(inc.id).await.expect("pages").iter().any(|p| p.party == "MY" && p.step == 1));
    assert!(!f.store.pages(inc.id).await.expect("pages").iter().any(|p| p.party == "SG" && p.step == 1));
    // An unknown party or incident has no timer.
    assert_eq!(f.store.claim_party_timer(inc.id, "CN", now, "hand", LEASE).await.expect("claim"), None);
    assert_eq!(f.store.claim_party_timer(Uuid::new_v4(), "MY", now, "hand", LEASE).await.expect("claim"), None);
}
