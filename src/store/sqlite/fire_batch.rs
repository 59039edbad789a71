//! Entering many claimed escalation steps in one transaction. The engine claims due steps
//! in batches; entering each in its own transaction costs a dozen round trips to SQLite's
//! worker thread per step, which caps firing at a few hundred steps a second. Here the
//! checks and every kind of row go in one statement per batch.
//!
//! [`Store::fire_step`](crate::store::Store::fire_step) is a batch of one. Each step is
//! fired only if its timer is still pending and leased to `owner`, the incident active and the
//! party unacknowledged; otherwise retired (`Stale`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::escalation::{apply_steps_many, to_key};
use crate::domain::event::to_millis;
use crate::engine::plan::StepPlan;
use crate::store::{FireOutcome, Result, TimerKey};

type Tx = Transaction<'static, Sqlite>;

const CHUNK: usize = 150;

pub async fn fire_many(
    tx: &mut Tx,
    steps: &[(TimerKey, StepPlan)],
    owner: &str,
    now: DateTime<Utc>,
) -> Result<Vec<FireOutcome>> {
    let now_ms = to_millis(now);
    // Timers still pending and leased to us.
    let mut held: HashSet<(String, String, i64, i64)> = HashSet::new();
    for chunk in steps.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT incident_id, party, step, loop FROM escalation_timers WHERE state = 'pending' AND lease_owner = ",
        );
        q.push_bind(owner).push(" AND (incident_id, party, step, loop) IN (");
        q.push_values(chunk, |mut b, (t, _)| {
            let (i, p, s, l) = to_key(t);
            b.push_bind(i).push_bind(p).push_bind(s).push_bind(l);
        });
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            held.insert((
                row.try_get("incident_id")?,
                row.try_get("party")?,
                row.try_get("step")?,
                row.try_get("loop")?,
            ));
        }
    }
    // Parties still waiting, on active incidents, with the incident's current ref.
    let mut live: std::collections::HashMap<(String, String), String> = std::collections::HashMap::new();
    for chunk in steps.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT i.id, p.party, i.ref FROM incidents i JOIN incident_parties p ON p.incident_id = i.id
             WHERE i.state IN ('open', 'acknowledged') AND p.acknowledged_by IS NULL AND (i.id, p.party) IN (",
        );
        q.push_values(chunk, |mut b, (t, _)| {
            b.push_bind(t.incident.to_string()).push_bind(t.party.clone());
        });
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            live.insert((row.try_get("id")?, row.try_get("party")?), row.try_get("ref")?);
        }
    }

    let mut outcomes = vec![FireOutcome::Stale; steps.len()];
    let mut fired: Vec<(Uuid, String, &StepPlan)> = Vec::new();
    let mut fired_keys = Vec::new();
    let mut retired_keys = Vec::new();
    for (i, (timer, plan)) in steps.iter().enumerate() {
        let key = to_key(timer);
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
    for (keys, set) in
        [(&fired_keys, "state = 'fired', fired_at = "), (&retired_keys, "state = 'cancelled', fired_at = ")]
    {
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE escalation_timers SET ");
            q.push(set).push_bind(now_ms).push(" WHERE (incident_id, party, step, loop) IN (");
            q.push_values(chunk, |mut b, (i, p, s, l)| {
                b.push_bind(i.clone()).push_bind(p.clone()).push_bind(*s).push_bind(*l);
            });
            q.push(")");
            q.build().execute(&mut **tx).await?;
        }
    }
    let last = apply_steps_many(tx, &fired, now_ms).await?;
    for o in outcomes.iter_mut() {
        if let FireOutcome::Fired { seq } = o {
            *seq = last.unwrap_or(0);
        }
    }
    Ok(outcomes)
}
