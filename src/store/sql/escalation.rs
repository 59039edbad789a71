//! Escalation timers: claiming due steps with leases, and entering planned steps (events,
//! outbox rows, audience additions, the parties' state, the next timer) inside one write
//! transaction.
//!
//! Why both a lease and (on PostgreSQL) `FOR UPDATE SKIP LOCKED`: SKIP LOCKED lets
//! replicas claiming at the same moment take disjoint timers without waiting on each
//! other; the lease (`lease_owner`, `lease_until`) makes the claim outlive the claiming
//! transaction, so the step is planned outside it, and lets another engine take the timer
//! over once the lease runs out (its owner died). Firing re-checks the lease inside the
//! appending transaction, so a step is entered at most once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::append;
use super::incidents::insert_rows;
use super::{Conn, Row, Value, placeholders, tuples};
use crate::directory::Channel;
use crate::domain::admission::with_reference;
use crate::domain::event::{from_millis, to_millis};
use crate::domain::plan::StepPlan;
use crate::store::{FireOutcome, PageRecord, Result, TimerKey};

/// Items per `IN (…)` list.
const IN_CHUNK: usize = 150;

/// Applies planned steps of many incidents: their events (with each incident's current
/// ref), outbox rows, audience additions, the next timers and, when `update_state`, the
/// parties' escalation state. Returns the last seq appended.
pub async fn apply_steps(
    c: &mut dyn Conn,
    items: &[(Uuid, String, &StepPlan)],
    at_ms: i64,
    update_state: bool,
) -> Result<Option<i64>> {
    let events: Vec<_> = items
        .iter()
        .flat_map(|(_, reference, p)| p.events.iter().map(move |e| (with_reference(e, reference), at_ms)))
        .collect();
    let last = append(c, &events).await?;

    let mut pages = Vec::new();
    for (id, _, plan) in items {
        for page in &plan.pages {
            // Dashboard pages are delivered by their `page` event in this transaction.
            let state = if page.channel == Channel::Dashboard { "delivered" } else { "pending" };
            pages.extend([
                Value::from(*id),
                (&plan.party).into(),
                (&page.focal_point).into(),
                page.channel.as_str().into(),
                plan.step.into(),
                plan.loop_.into(),
                state.into(),
                at_ms.into(),
                at_ms.into(),
                at_ms.into(),
            ]);
        }
    }
    insert_rows(
        c,
        "INSERT INTO outbox (incident_id, party, focal_point, channel, step, loop, state, next_attempt_at, created_at, updated_at) VALUES",
        10,
        &pages,
        " ON CONFLICT DO NOTHING",
    )
    .await?;
    let keys: Vec<Value> = items
        .iter()
        .flat_map(|(id, _, p)| p.audience_add.iter().flat_map(move |k| [Value::from(*id), k.into()]))
        .collect();
    insert_rows(c, "INSERT INTO incident_audience (incident_id, key) VALUES", 2, &keys, " ON CONFLICT DO NOTHING")
        .await?;
    let timers: Vec<Value> = items
        .iter()
        .filter_map(|(id, _, p)| p.next_timer.map(|t| (id, p, t)))
        .flat_map(|(id, p, (step, loop_, due))| {
            [Value::from(*id), (&p.party).into(), step.into(), loop_.into(), to_millis(due).into(), "pending".into()]
        })
        .collect();
    insert_rows(
        c,
        "INSERT INTO escalation_timers (incident_id, party, step, loop, due_at, state) VALUES",
        6,
        &timers,
        " ON CONFLICT DO NOTHING",
    )
    .await?;
    if update_state {
        for (id, _, plan) in items {
            c.execute(
                "UPDATE incident_parties SET esc_step = $1, esc_loop = $2, esc_next_at = $3, esc_state = $4
                 WHERE incident_id = $5 AND party = $6",
                &[
                    plan.state.step.into(),
                    plan.state.loop_.into(),
                    plan.state.next_at.map(to_millis).into(),
                    (&plan.state.state).into(),
                    Value::from(*id),
                    (&plan.party).into(),
                ],
            )
            .await?;
        }
        let mut ids: Vec<Value> = items.iter().map(|(id, _, _)| Value::from(*id)).collect();
        ids.dedup();
        for chunk in ids.chunks(IN_CHUNK) {
            let mut params = vec![Value::from(at_ms)];
            params.extend_from_slice(chunk);
            let sql = format!("UPDATE incidents SET updated_at = $1 WHERE id IN ({})", placeholders(2, chunk.len()));
            c.execute(&sql, &params).await?;
        }
    }
    Ok(last)
}

fn timer_from_row(row: &Row) -> Result<TimerKey> {
    Ok(TimerKey {
        incident: row.uuid("incident_id")?,
        party: row.text("party")?,
        step: row.u32("step")?,
        loop_: row.u32("loop")?,
        due_at: from_millis(row.i64("due_at")?),
    })
}

/// Leases up to `limit` pending timers due at `now` to `owner`.
pub async fn claim_due(
    c: &mut dyn Conn,
    now: DateTime<Utc>,
    owner: &str,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<TimerKey>> {
    let now = to_millis(now);
    let sql = format!(
        "UPDATE escalation_timers SET lease_owner = $1, lease_until = $2
         WHERE (incident_id, party, step, loop) IN (
             SELECT incident_id, party, step, loop FROM escalation_timers
             WHERE state = 'pending' AND due_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
             ORDER BY due_at LIMIT $4{})
         RETURNING incident_id, party, step, loop, due_at",
        c.dialect().skip_locked()
    );
    let rows = c.query(&sql, &[owner.into(), (now + lease_ms).into(), now.into(), limit.into()]).await?;
    let mut timers = rows.iter().map(timer_from_row).collect::<Result<Vec<_>>>()?;
    timers.sort_by_key(|t| t.due_at);
    Ok(timers)
}

/// Leases the pending timer of one party, due or not (a manual escalation).
pub async fn claim_party(
    c: &mut dyn Conn,
    incident: Uuid,
    party: &str,
    now: DateTime<Utc>,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<TimerKey>> {
    let now = to_millis(now);
    let sql = format!(
        "UPDATE escalation_timers SET lease_owner = $1, lease_until = $2
         WHERE (incident_id, party, step, loop) IN (
             SELECT incident_id, party, step, loop FROM escalation_timers
             WHERE incident_id = $3 AND party = $4 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $5){})
         RETURNING incident_id, party, step, loop, due_at",
        c.dialect().skip_locked()
    );
    let rows =
        c.query(&sql, &[owner.into(), (now + lease_ms).into(), incident.into(), party.into(), now.into()]).await?;
    rows.first().map(timer_from_row).transpose()
}

type Key = (String, String, i64, i64);

fn key_of(t: &TimerKey) -> Key {
    (t.incident.to_string(), t.party.clone(), i64::from(t.step), i64::from(t.loop_))
}

fn key_values(k: &Key) -> [Value; 4] {
    [(&k.0).into(), (&k.1).into(), k.2.into(), k.3.into()]
}

/// Enters claimed steps: each one only if its timer is still pending and leased to
/// `owner`, the incident active and the party unacknowledged; otherwise the timer is
/// retired and the outcome is `Stale`. A few statements per batch, whatever its size.
pub async fn fire(
    c: &mut dyn Conn,
    steps: &[(TimerKey, StepPlan)],
    owner: &str,
    now: DateTime<Utc>,
) -> Result<Vec<FireOutcome>> {
    let now_ms = to_millis(now);
    // Timers still pending and leased to us.
    let mut held: HashSet<Key> = HashSet::new();
    for chunk in steps.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT incident_id, party, step, loop FROM escalation_timers
             WHERE state = 'pending' AND lease_owner = $1 AND (incident_id, party, step, loop) IN (VALUES {})",
            tuples(2, chunk.len(), 4)
        );
        let mut params = vec![Value::from(owner)];
        params.extend(chunk.iter().flat_map(|(t, _)| key_values(&key_of(t))));
        for row in c.query(&sql, &params).await? {
            held.insert((row.text("incident_id")?, row.text("party")?, row.i64("step")?, row.i64("loop")?));
        }
    }
    // Parties still waiting, on active incidents, with the incident's current ref.
    let mut live: HashMap<(String, String), String> = HashMap::new();
    for chunk in steps.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT i.id, p.party, i.ref FROM incidents i JOIN incident_parties p ON p.incident_id = i.id
             WHERE i.state IN ('open', 'acknowledged') AND p.acknowledged_by IS NULL AND (i.id, p.party) IN (VALUES {})",
            tuples(1, chunk.len(), 2)
        );
        let params: Vec<Value> = chunk.iter().flat_map(|(t, _)| [Value::from(t.incident), (&t.party).into()]).collect();
        for row in c.query(&sql, &params).await? {
            live.insert((row.text("id")?, row.text("party")?), row.text("ref")?);
        }
    }

    let mut outcomes = vec![FireOutcome::Stale; steps.len()];
    let mut fired: Vec<(Uuid, String, &StepPlan)> = Vec::new();
    let mut fired_keys = Vec::new();
    let mut retired_keys = Vec::new();
    for (i, (timer, plan)) in steps.iter().enumerate() {
        let key = key_of(timer);
        if !held.contains(&key) {
            continue;
        }
        match live.get(&(key.0.clone(), key.1.clone())) {
            Some(reference) if !plan.events.is_empty() => {
                fired.push((timer.incident, reference.clone(), plan));
                fired_keys.push(key);
                outcomes[i] = FireOutcome::Fired { seq: 0 };
            }
            _ => retired_keys.push(key),
        }
    }
    for (keys, state) in [(&fired_keys, "fired"), (&retired_keys, "cancelled")] {
        for chunk in keys.chunks(IN_CHUNK) {
            let sql = format!(
                "UPDATE escalation_timers SET state = $1, fired_at = $2 WHERE (incident_id, party, step, loop) IN (VALUES {})",
                tuples(3, chunk.len(), 4)
            );
            let mut params = vec![Value::from(state), now_ms.into()];
            params.extend(chunk.iter().flat_map(key_values));
            c.execute(&sql, &params).await?;
        }
    }
    let last = apply_steps(c, &fired, now_ms, true).await?;
    for o in outcomes.iter_mut() {
        if let FireOutcome::Fired { seq } = o {
            *seq = last.unwrap_or(0);
        }
    }
    Ok(outcomes)
}

pub async fn next_due(c: &mut dyn Conn) -> Result<Option<DateTime<Utc>>> {
    let row = c.query_one("SELECT MIN(due_at) AS due FROM escalation_timers WHERE state = 'pending'", &[]).await?;
    Ok(row.opt_i64("due")?.map(from_millis))
}

pub async fn pending(c: &mut dyn Conn) -> Result<u64> {
    let row = c.query_one("SELECT COUNT(*) AS n FROM escalation_timers WHERE state = 'pending'", &[]).await?;
    Ok(row.i64("n")? as u64)
}

pub async fn pages(c: &mut dyn Conn, incident: Uuid) -> Result<Vec<PageRecord>> {
    let rows = c
        .query(
            "SELECT id, party, focal_point, channel, step, loop, state, attempts FROM outbox
             WHERE incident_id = $1 ORDER BY id",
            &[incident.into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PageRecord {
                id: r.i64("id")?,
                party: r.text("party")?,
                focal_point: r.text("focal_point")?,
                channel: r.text("channel")?,
                step: r.u32("step")?,
                loop_: r.u32("loop")?,
                state: r.text("state")?,
                attempts: r.u32("attempts")?,
            })
        })
        .collect()
}
