//! Outbox dispatch on PostgreSQL, mirroring `store/sqlite/outbox.rs`: claim with leases,
//! record results with their events, delivery callbacks, and the small tables of inbound
//! acknowledgement (email ack tokens, processed inbound SMS ids, the hub's own secrets).
//!
//! Across replicas: `record` and `provider_status` append events, so their transactions
//! hold the log lock (`events.rs`); `claim` takes its own advisory lock, because merging
//! identical pages updates rows other than the claimed ones, and two replicas merging
//! each other's claims at once would deadlock. Claims are short; serialising them costs
//! nothing measurable.
//!
//! A page being sent stays `pending` under a lease (like escalation timers), so a worker
//! that dies mid-send loses nothing: its lease runs out and the page is claimed again.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::events::append;
use crate::domain::event::{EventType, NewEvent, from_millis, to_millis};
use crate::store::{AckToken, OutboxPage, PageResult, Result};

type Tx = Transaction<'static, Postgres>;

/// Advisory lock key serialising page claims ("fpoutbox" in ASCII).
const CLAIM_LOCK: i64 = 0x6670_6f75_7462_6f78;

pub const PAGE_COLUMNS: &str = "id, incident_id, party, focal_point, channel, step, loop, state, attempts, \
     next_attempt_at, provider_id, last_error, merged_into";

pub fn page_from_row(r: &PgRow) -> Result<OutboxPage> {
    Ok(OutboxPage {
        id: r.try_get("id")?,
        incident: Uuid::parse_str(r.try_get::<&str, _>("incident_id")?)?,
        party: r.try_get("party")?,
        focal_point: r.try_get("focal_point")?,
        channel: r.try_get("channel")?,
        step: r.try_get::<i64, _>("step")? as u32,
        loop_: r.try_get::<i64, _>("loop")? as u32,
        state: r.try_get("state")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        next_attempt_at: from_millis(r.try_get("next_attempt_at")?),
        provider_id: r.try_get("provider_id")?,
        last_error: r.try_get("last_error")?,
        merged_into: r.try_get("merged_into")?,
    })
}

pub async fn claim(tx: &mut Tx, now: DateTime<Utc>, owner: &str, lease_ms: i64, limit: u32) -> Result<Vec<OutboxPage>> {
    let now = to_millis(now);
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut **tx).await?;
    let sql = format!(
        "UPDATE outbox SET lease_owner = $1, lease_until = $2
         WHERE id IN (SELECT id FROM outbox
                      WHERE state = 'pending' AND channel IN ('sms', 'email', 'webhook') AND next_attempt_at <= $3
                        AND (lease_until IS NULL OR lease_until < $4)
                      ORDER BY next_attempt_at, id LIMIT $5
                      FOR UPDATE SKIP LOCKED)
         RETURNING {PAGE_COLUMNS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut **tx)
        .await?;
    let mut pages = rows.iter().map(page_from_row).collect::<Result<Vec<_>>>()?;
    pages.sort_by_key(|p| p.id);
    // Merge identical pending sms/email pages into the oldest claimed one: one message
    // says it all, and a backlog after an outage does not flood a phone. Webhooks are not
    // merged: each escalation is a distinct call a bot acts on.
    let mut merged = Vec::new();
    for page in &pages {
        if merged.contains(&page.id) || !matches!(page.channel.as_str(), "sms" | "email") {
            continue;
        }
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE outbox SET state = 'merged', merged_into = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2
             WHERE state = 'pending' AND incident_id = $3 AND focal_point = $4 AND channel = $5 AND id <> $6
               AND (lease_until IS NULL OR lease_until < $7 OR lease_owner = $8)
             RETURNING id",
        )
        .bind(page.id)
        .bind(now)
        .bind(page.incident.to_string())
        .bind(&page.focal_point)
        .bind(&page.channel)
        .bind(page.id)
        .bind(now)
        .bind(owner)
        .fetch_all(&mut **tx)
        .await?;
        merged.extend(ids);
    }
    pages.retain(|p| !merged.contains(&p.id));
    Ok(pages)
}

/// A `notification.*` event: visible to the incident's audience, carrying the party and
/// a small `data` — never a phone number or an email address.
fn notification(kind: EventType, page: &OutboxPage, key: &str, value: Option<&str>) -> NewEvent {
    let mut data = json!({
        "focal_point": page.focal_point, "channel": page.channel, "step": page.step, "loop": page.loop_,
    });
    data[key] = json!(value);
    NewEvent { kind, incident: page.incident, party: Some(page.party.clone()), only_for: None, data }
}

pub async fn record(
    tx: &mut Tx,
    page: &OutboxPage,
    owner: &str,
    result: &PageResult,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let at = to_millis(now);
    match result {
        PageResult::Sent { provider_id } => {
            let n = sqlx::query(
                "UPDATE outbox SET state = 'sent', provider_id = $1, last_error = NULL, lease_owner = NULL,
                    lease_until = NULL, updated_at = $2
                 WHERE id = $3 AND (state = 'pending' OR (state = 'cancelled' AND lease_owner = $4))",
            )
            .bind(provider_id)
            .bind(at)
            .bind(page.id)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(None);
            }
            let event = notification(EventType::NotificationSent, page, "provider_id", provider_id.as_deref());
            Ok(Some(append(tx, &event, at).await?))
        }
        PageResult::Retry { at: next, error } => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, lease_owner = NULL,
                    lease_until = NULL, updated_at = $3
                 WHERE id = $4 AND state = 'pending' AND lease_owner = $5",
            )
            .bind(to_millis(*next))
            .bind(error)
            .bind(at)
            .bind(page.id)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        PageResult::Deferred { at: next } => {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2
                 WHERE id = $3 AND state = 'pending' AND lease_owner = $4",
            )
            .bind(to_millis(*next))
            .bind(at)
            .bind(page.id)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        PageResult::Cancelled { reason } => {
            sqlx::query(
                "UPDATE outbox SET state = 'cancelled', last_error = $1, lease_owner = NULL, lease_until = NULL,
                    updated_at = $2
                 WHERE id = $3 AND state = 'pending' AND lease_owner = $4",
            )
            .bind(reason)
            .bind(at)
            .bind(page.id)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        PageResult::Failed { reason } => {
            let n = sqlx::query(
                "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $1, lease_owner = NULL,
                    lease_until = NULL, updated_at = $2
                 WHERE id = $3 AND state = 'pending' AND lease_owner = $4",
            )
            .bind(reason)
            .bind(at)
            .bind(page.id)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(None);
            }
            let seq =
                append(tx, &notification(EventType::NotificationFailed, page, "reason", Some(reason)), at).await?;
            move_on_if_unreachable(tx, page, at).await?;
            Ok(Some(seq))
        }
    }
}

/// When every page of the party's current step has failed permanently, nobody of that
/// step can answer: make the party's pending timer due now, so the escalation engine
/// (woken by the `notification.failed` on the bus) enters the next step at once instead
/// of waiting out the step. The next step's wait then counts from now.
async fn move_on_if_unreachable(tx: &mut Tx, page: &OutboxPage, at: i64) -> Result<()> {
    let id = page.incident.to_string();
    let (step, loop_) = (i64::from(page.step), i64::from(page.loop_));
    let reachable: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE incident_id = $1 AND party = $2 AND step = $3 AND loop = $4 AND state <> 'failed'",
    )
    .bind(&id)
    .bind(&page.party)
    .bind(step)
    .bind(loop_)
    .fetch_one(&mut **tx)
    .await?;
    if reachable > 0 {
        return Ok(());
    }
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT 1::BIGINT FROM incident_parties WHERE incident_id = $1 AND party = $2 AND esc_step = $3 AND esc_loop = $4
           AND acknowledged_by IS NULL AND esc_state = 'active'",
    )
    .bind(&id)
    .bind(&page.party)
    .bind(step)
    .bind(loop_)
    .fetch_optional(&mut **tx)
    .await?;
    if current.is_none() {
        return Ok(());
    }
    let moved = sqlx::query(
        "UPDATE escalation_timers SET due_at = $1
         WHERE incident_id = $2 AND party = $3 AND state = 'pending' AND due_at > $4",
    )
    .bind(at)
    .bind(&id)
    .bind(&page.party)
    .bind(at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if moved > 0 {
        sqlx::query("UPDATE incident_parties SET esc_next_at = $1 WHERE incident_id = $2 AND party = $3")
            .bind(at)
            .bind(&id)
            .bind(&page.party)
            .execute(&mut **tx)
            .await?;
        tracing::info!(incident = %page.incident, party = %page.party, step = page.step,
            "every page of the step failed; escalating now");
    }
    Ok(())
}

/// Order of provider statuses; 0 for unknown. `delivered` (4) and the failures (5) are final.
fn status_rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" | "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "read" => 4,
        "failed" | "undelivered" | "canceled" => 5,
        _ => 0,
    }
}

pub async fn provider_status(tx: &mut Tx, provider_id: &str, status: &str, now: DateTime<Utc>) -> Result<Option<i64>> {
    let new = status_rank(status);
    if new == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT {PAGE_COLUMNS}, provider_status FROM outbox WHERE provider_id = $1 ORDER BY id LIMIT 1");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(provider_id).fetch_optional(&mut **tx).await? else {
        return Ok(None);
    };
    let page = page_from_row(&row)?;
    let current = row.try_get::<Option<String>, _>("provider_status")?.map(|s| status_rank(&s)).unwrap_or(0);
    if current >= 4 || new <= current {
        return Ok(None); // final already, or an out-of-order older status
    }
    let at = to_millis(now);
    let state = match new {
        4 => "delivered",
        5 => "failed",
        _ => page.state.as_str(),
    };
    sqlx::query("UPDATE outbox SET provider_status = $1, state = $2, updated_at = $3 WHERE id = $4")
        .bind(status)
        .bind(state)
        .bind(at)
        .bind(page.id)
        .execute(&mut **tx)
        .await?;
    let event = match new {
        4 => notification(EventType::NotificationDelivered, &page, "provider_id", Some(provider_id)),
        5 => notification(EventType::NotificationFailed, &page, "reason", Some(&format!("provider reported {status}"))),
        _ => return Ok(None),
    };
    Ok(Some(append(tx, &event, at).await?))
}

pub async fn backlog(pool: &PgPool) -> Result<(Option<DateTime<Utc>>, u64)> {
    let row = sqlx::query(
        "SELECT MIN(next_attempt_at) AS due, COUNT(*) AS n FROM outbox
         WHERE state = 'pending' AND channel IN ('sms', 'email', 'webhook')",
    )
    .fetch_one(pool)
    .await?;
    let due: Option<i64> = row.try_get("due")?;
    let n: i64 = row.try_get("n")?;
    Ok((due.map(from_millis), n as u64))
}

pub async fn incident_by_ref(pool: &PgPool, reference: &str) -> Result<Option<Uuid>> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM incidents WHERE ref = $1 AND state IN ('open', 'acknowledged')")
            .bind(reference)
            .fetch_optional(pool)
            .await?;
    id.map(|i| Uuid::parse_str(&i).map_err(Into::into)).transpose()
}

pub async fn insert_ack_token(
    pool: &PgPool,
    hash: &[u8],
    token: &AckToken,
    outbox_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ack_tokens (hash, incident_id, focal_point, party, outbox_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hash)
    .bind(token.incident.to_string())
    .bind(&token.focal_point)
    .bind(&token.party)
    .bind(outbox_id)
    .bind(to_millis(now))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn ack_token(pool: &PgPool, hash: &[u8]) -> Result<Option<AckToken>> {
    let row = sqlx::query("SELECT incident_id, focal_point, party, used_at FROM ack_tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(AckToken {
            incident: Uuid::parse_str(r.try_get::<&str, _>("incident_id")?)?,
            focal_point: r.try_get("focal_point")?,
            party: r.try_get("party")?,
            used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
        })
    })
    .transpose()
}

pub async fn consume_ack_token(pool: &PgPool, hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE ack_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL
           AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = ack_tokens.incident_id AND i.state IN ('open', 'acknowledged'))",
    )
    .bind(to_millis(now))
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn first_inbound(pool: &PgPool, sid: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = sqlx::query("INSERT INTO inbound_messages (sid, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(sid)
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub async fn instance_secret(pool: &PgPool, name: &str, proposed: &str) -> Result<String> {
    sqlx::query("INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(proposed)
        .bind(Utc::now().timestamp_millis())
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1").bind(name).fetch_one(pool).await?)
}

pub async fn incident_pages(pool: &PgPool, incident: Uuid) -> Result<Vec<OutboxPage>> {
    let sql = format!("SELECT {PAGE_COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(incident.to_string()).fetch_all(pool).await?;
    rows.iter().map(page_from_row).collect()
}
