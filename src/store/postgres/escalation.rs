//! Escalation timers and pages on PostgreSQL: claiming due steps with
//! `FOR UPDATE SKIP LOCKED` plus a lease, and applying a planned step (events, outbox
//! rows, next timer) inside one transaction that holds the log lock.
//!
//! Why both: SKIP LOCKED lets replicas claiming at the same moment take disjoint timers
//! without waiting on each other; the lease (`lease_owner`, `lease_until`) makes the
//! claim outlive the claiming transaction, so the step can be planned outside it, and
//! lets another replica take the timer over once the lease runs out (its owner died).
//! `fire` re-checks the lease under the log lock, so a step is entered at most once.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::events::append;
use crate::directory::Channel;
use crate::domain::event::{from_millis, to_millis};
use crate::engine::plan::StepPlan;
use crate::store::{FireOutcome, PageRecord, Result, TimerKey};

type Tx = Transaction<'static, Postgres>;

/// Applies a planned step for `incident`: events, outbox rows, the party's escalation
/// state, audience additions and the next timer. Returns the last seq appended. The
/// caller's transaction holds the log lock.
pub async fn apply_step(
    conn: &mut PgConnection,
    incident: Uuid,
    reference: &str,
    plan: &StepPlan,
    at_ms: i64,
) -> Result<Option<i64>> {
    let id = incident.to_string();
    let mut last = None;
    for event in &plan.events {
        let mut event = event.clone();
        // The ref may have been re-drawn by the store after planning.
        if let Some(r) = event.data.get_mut("ref") {
            *r = serde_json::Value::String(reference.to_string());
        }
        if let Some(r) = event.data.get_mut("incident").and_then(|i| i.get_mut("ref")) {
            *r = serde_json::Value::String(reference.to_string());
        }
        last = Some(append(conn, &event, at_ms).await?);
    }
    for page in &plan.pages {
        // Dashboard pages are delivered by their `page` event in this transaction.
        let state = if page.channel == Channel::Dashboard { "delivered" } else { "pending" };
        sqlx::query(
            "INSERT INTO outbox (incident_id, party, focal_point, channel, step, loop, state, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&plan.party)
        .bind(&page.focal_point)
        .bind(page.channel.as_str())
        .bind(i64::from(plan.step))
        .bind(i64::from(plan.loop_))
        .bind(state)
        .bind(at_ms)
        .bind(at_ms)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
    }
    for key in &plan.audience_add {
        sqlx::query("INSERT INTO incident_audience (incident_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&id)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "UPDATE incident_parties SET esc_step = $1, esc_loop = $2, esc_next_at = $3, esc_state = $4
         WHERE incident_id = $5 AND party = $6",
    )
    .bind(i64::from(plan.state.step))
    .bind(i64::from(plan.state.loop_))
    .bind(plan.state.next_at.map(to_millis))
    .bind(&plan.state.state)
    .bind(&id)
    .bind(&plan.party)
    .execute(&mut *conn)
    .await?;
    if let Some((step, loop_, due)) = plan.next_timer {
        sqlx::query(
            "INSERT INTO escalation_timers (incident_id, party, step, loop, due_at, state)
             VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&plan.party)
        .bind(i64::from(step))
        .bind(i64::from(loop_))
        .bind(to_millis(due))
        .execute(&mut *conn)
        .await?;
    }
    Ok(last)
}

fn timer_from_row(row: &PgRow) -> Result<TimerKey> {
    Ok(TimerKey {
        incident: Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?,
        party: row.try_get("party")?,
        step: u32::try_from(row.try_get::<i64, _>("step")?)?,
        loop_: u32::try_from(row.try_get::<i64, _>("loop")?)?,
        due_at: from_millis(row.try_get("due_at")?),
    })
}

pub async fn claim_due(
    tx: &mut Tx,
    now: DateTime<Utc>,
    owner: &str,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<TimerKey>> {
    let now = to_millis(now);
    let rows = sqlx::query(
        "UPDATE escalation_timers t SET lease_owner = $1, lease_until = $2
         FROM (SELECT incident_id, party, step, loop FROM escalation_timers
               WHERE state = 'pending' AND due_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
               ORDER BY due_at LIMIT $4
               FOR UPDATE SKIP LOCKED) due
         WHERE t.incident_id = due.incident_id AND t.party = due.party AND t.step = due.step AND t.loop = due.loop
         RETURNING t.incident_id, t.party, t.step, t.loop, t.due_at",
    )
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await?;
    let mut timers = rows.iter().map(timer_from_row).collect::<Result<Vec<_>>>()?;
    timers.sort_by_key(|t| t.due_at);
    Ok(timers)
}

pub async fn claim_party(
    tx: &mut Tx,
    incident: Uuid,
    party: &str,
    now: DateTime<Utc>,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<TimerKey>> {
    let now = to_millis(now);
    let row = sqlx::query(
        "UPDATE escalation_timers t SET lease_owner = $1, lease_until = $2
         FROM (SELECT incident_id, party, step, loop FROM escalation_timers
               WHERE incident_id = $3 AND party = $4 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $5)
               FOR UPDATE SKIP LOCKED) due
         WHERE t.incident_id = due.incident_id AND t.party = due.party AND t.step = due.step AND t.loop = due.loop
         RETURNING t.incident_id, t.party, t.step, t.loop, t.due_at",
    )
    .bind(owner)
    .bind(now + lease_ms)
    .bind(incident.to_string())
    .bind(party)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(timer_from_row).transpose()
}

pub async fn fire(
    tx: &mut Tx,
    timer: &TimerKey,
    owner: &str,
    plan: &StepPlan,
    now: DateTime<Utc>,
) -> Result<FireOutcome> {
    let id = timer.incident.to_string();
    let key = (id.as_str(), timer.party.as_str(), i64::from(timer.step), i64::from(timer.loop_));
    let held: Option<String> = sqlx::query_scalar(
        "SELECT lease_owner FROM escalation_timers
         WHERE incident_id = $1 AND party = $2 AND step = $3 AND loop = $4 AND state = 'pending'
         FOR UPDATE",
    )
    .bind(key.0)
    .bind(key.1)
    .bind(key.2)
    .bind(key.3)
    .fetch_optional(&mut **tx)
    .await?
    .flatten();
    if held.as_deref() != Some(owner) {
        return Ok(FireOutcome::Stale);
    }
    let live = sqlx::query(
        "SELECT i.ref FROM incidents i JOIN incident_parties p ON p.incident_id = i.id
         WHERE i.id = $1 AND p.party = $2 AND i.state IN ('open', 'acknowledged') AND p.acknowledged_by IS NULL",
    )
    .bind(key.0)
    .bind(key.1)
    .fetch_optional(&mut **tx)
    .await?;
    let now_ms = to_millis(now);
    let Some(live) = live else {
        sqlx::query(
            "UPDATE escalation_timers SET state = 'cancelled'
             WHERE incident_id = $1 AND party = $2 AND step = $3 AND loop = $4",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .bind(key.3)
        .execute(&mut **tx)
        .await?;
        return Ok(FireOutcome::Stale);
    };
    let reference: String = live.try_get("ref")?;
    sqlx::query(
        "UPDATE escalation_timers SET state = 'fired', fired_at = $1
         WHERE incident_id = $2 AND party = $3 AND step = $4 AND loop = $5",
    )
    .bind(now_ms)
    .bind(key.0)
    .bind(key.1)
    .bind(key.2)
    .bind(key.3)
    .execute(&mut **tx)
    .await?;
    let last = apply_step(tx, timer.incident, &reference, plan, now_ms).await?;
    sqlx::query("UPDATE incidents SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(key.0)
        .execute(&mut **tx)
        .await?;
    Ok(match last {
        Some(seq) => FireOutcome::Fired { seq },
        None => FireOutcome::Stale,
    })
}

pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    let due: Option<i64> =
        sqlx::query_scalar("SELECT MIN(due_at) FROM escalation_timers WHERE state = 'pending'").fetch_one(pool).await?;
    Ok(due.map(from_millis))
}

pub async fn pending(pool: &PgPool) -> Result<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'").fetch_one(pool).await?;
    Ok(n as u64)
}

pub async fn pages(pool: &PgPool, incident: Uuid) -> Result<Vec<PageRecord>> {
    let rows = sqlx::query(
        "SELECT id, party, focal_point, channel, step, loop, state, attempts FROM outbox
         WHERE incident_id = $1 ORDER BY id",
    )
    .bind(incident.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PageRecord {
                id: r.try_get("id")?,
                party: r.try_get("party")?,
                focal_point: r.try_get("focal_point")?,
                channel: r.try_get("channel")?,
                step: u32::try_from(r.try_get::<i64, _>("step")?)?,
                loop_: u32::try_from(r.try_get::<i64, _>("loop")?)?,
                state: r.try_get("state")?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?)?,
            })
        })
        .collect()
}
