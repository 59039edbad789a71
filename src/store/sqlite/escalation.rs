//! Escalation timers and pages: claiming due steps with leases, and applying a planned
//! step (events, outbox rows, next timer) inside one write transaction.

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use super::events::append_timed;
use crate::directory::Channel;
use crate::domain::event::{NewEvent, from_millis, to_millis};
use crate::engine::plan::StepPlan;
use crate::store::{PageRecord, Result, TimerKey};

type Tx = Transaction<'static, Sqlite>;

/// (step, loop, due) of the timer a plan schedules.
type NextTimer = (u32, u32, DateTime<Utc>);

/// Sets the current ref in a planned event (the store may re-draw the ref after planning).
pub fn with_ref(event: &NewEvent, reference: &str) -> NewEvent {
    let mut event = event.clone();
    if let Some(r) = event.data.get_mut("ref") {
        *r = serde_json::Value::String(reference.to_string());
    }
    if let Some(r) = event.data.get_mut("incident").and_then(|i| i.get_mut("ref")) {
        *r = serde_json::Value::String(reference.to_string());
    }
    event
}

/// The primary key of a timer row.
pub fn to_key(t: &TimerKey) -> (String, String, i64, i64) {
    (t.incident.to_string(), t.party.clone(), i64::from(t.step), i64::from(t.loop_))
}

/// Applies planned steps of many incidents (the engine's batches): their events, outbox
/// rows, audience additions, the parties' escalation state and the next timers. Returns
/// the last seq appended.
pub async fn apply_steps_many(
    conn: &mut SqliteConnection,
    items: &[(Uuid, String, &StepPlan)],
    at_ms: i64,
) -> Result<Option<i64>> {
    write_steps(conn, items, at_ms).await
}

/// Rows per multi-row statement.
const CHUNK: usize = 150;

/// Writes planned steps, each kind of row in one multi-row statement: round trips to
/// SQLite's worker thread are what cost here.
async fn write_steps(
    conn: &mut SqliteConnection,
    items: &[(Uuid, String, &StepPlan)],
    at_ms: i64,
) -> Result<Option<i64>> {
    let mut events = Vec::new();
    events.extend(
        items.iter().flat_map(|(_, reference, p)| p.events.iter().map(move |e| (with_ref(e, reference), at_ms))),
    );
    let last = append_timed(conn, &events).await?;

    let pages: Vec<(String, &StepPlan, &crate::engine::plan::PageTarget)> =
        items.iter().flat_map(|(id, _, p)| p.pages.iter().map(move |page| (id.to_string(), *p, page))).collect();
    for chunk in pages.chunks(CHUNK) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO outbox (incident_id, party, focal_point, channel, step, loop, state, next_attempt_at, created_at, updated_at) ",
        );
        insert.push_values(chunk, |mut b, (id, plan, page)| {
            // Dashboard pages are delivered by their `page` event in this transaction.
            let state = if page.channel == Channel::Dashboard { "delivered" } else { "pending" };
            b.push_bind(id.clone())
                .push_bind(plan.party.clone())
                .push_bind(page.focal_point.clone())
                .push_bind(page.channel.as_str())
                .push_bind(i64::from(plan.step))
                .push_bind(i64::from(plan.loop_))
                .push_bind(state)
                .push_bind(at_ms)
                .push_bind(at_ms)
                .push_bind(at_ms);
        });
        insert.build().execute(&mut *conn).await?;
    }
    let keys: Vec<(String, String)> =
        items.iter().flat_map(|(id, _, p)| p.audience_add.iter().map(move |k| (id.to_string(), k.clone()))).collect();
    for chunk in keys.chunks(CHUNK) {
        let mut insert =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT OR IGNORE INTO incident_audience (incident_id, key) ");
        insert.push_values(chunk, |mut b, (id, key)| {
            b.push_bind(id.clone()).push_bind(key.clone());
        });
        insert.build().execute(&mut *conn).await?;
    }
    for chunk in items.chunks(CHUNK) {
        let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE incident_parties SET esc_step = v.column3, esc_loop = v.column4, esc_next_at = v.column5, esc_state = v.column6 FROM (",
        );
        update.push_values(chunk, |mut b, (id, _, plan)| {
            b.push_bind(id.to_string())
                .push_bind(plan.party.clone())
                .push_bind(i64::from(plan.state.step))
                .push_bind(i64::from(plan.state.loop_))
                .push_bind(plan.state.next_at.map(to_millis))
                .push_bind(plan.state.state.clone());
        });
        update.push(") AS v WHERE incident_parties.incident_id = v.column1 AND incident_parties.party = v.column2");
        update.build().execute(&mut *conn).await?;
    }
    let ids: Vec<String> = items.iter().map(|(id, _, _)| id.to_string()).collect();
    for chunk in ids.chunks(CHUNK) {
        let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE incidents SET updated_at = ");
        update.push_bind(at_ms).push(" WHERE id IN (");
        let mut list = update.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        update.push(")");
        update.build().execute(&mut *conn).await?;
    }
    let timers: Vec<(String, &StepPlan, NextTimer)> =
        items.iter().filter_map(|(id, _, p)| p.next_timer.map(|t| (id.to_string(), *p, t))).collect();
    for chunk in timers.chunks(CHUNK) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO escalation_timers (incident_id, party, step, loop, due_at, state) ",
        );
        insert.push_values(chunk, |mut b, (id, plan, (step, loop_, due))| {
            b.push_bind(id.clone())
                .push_bind(plan.party.clone())
                .push_bind(i64::from(*step))
                .push_bind(i64::from(*loop_))
                .push_bind(to_millis(*due))
                .push_bind("pending");
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(last)
}

fn timer_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TimerKey> {
    Ok(TimerKey {
        incident: Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?,
        party: row.try_get("party")?,
        step: row.try_get::<i64, _>("step")? as u32,
        loop_: row.try_get::<i64, _>("loop")? as u32,
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
        "UPDATE escalation_timers SET lease_owner = ?, lease_until = ?
         WHERE rowid IN (SELECT rowid FROM escalation_timers
                         WHERE state = 'pending' AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?)
                         ORDER BY due_at LIMIT ?)
         RETURNING incident_id, party, step, loop, due_at",
    )
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
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
        "UPDATE escalation_timers SET lease_owner = ?, lease_until = ?
         WHERE incident_id = ? AND party = ? AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?)
         RETURNING incident_id, party, step, loop, due_at",
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

pub async fn next_due(pool: &SqlitePool) -> Result<Option<DateTime<Utc>>> {
    let due: Option<i64> =
        sqlx::query_scalar("SELECT MIN(due_at) FROM escalation_timers WHERE state = 'pending'").fetch_one(pool).await?;
    Ok(due.map(from_millis))
}

pub async fn pending(pool: &SqlitePool) -> Result<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'").fetch_one(pool).await?;
    Ok(n as u64)
}

pub async fn pages(pool: &SqlitePool, incident: Uuid) -> Result<Vec<PageRecord>> {
    let rows = sqlx::query(
        "SELECT id, party, focal_point, channel, step, loop, state, attempts FROM outbox WHERE incident_id = ? ORDER BY id",
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
                step: r.try_get::<i64, _>("step")? as u32,
                loop_: r.try_get::<i64, _>("loop")? as u32,
                state: r.try_get("state")?,
                attempts: r.try_get::<i64, _>("attempts")? as u32,
            })
        })
        .collect()
}
