//! The outbox: claiming due pages with leases (merging identical ones), recording what
//! became of them with their events, delivery callbacks, and email ack links.
//!
//! A page being sent stays `pending` under a lease (like escalation timers), so a worker
//! that dies mid-send loses nothing: its lease runs out and the page is claimed again.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::events::append_one;
use super::{Conn, Dialect, Row, Value};
use crate::domain::event::{EventType, NewEvent, from_millis, to_millis};
use crate::store::{AckToken, OutboxPage, PageResult, Result};

/// Advisory lock key serialising page claims on PostgreSQL ("fpoutbox" in ASCII): two
/// replicas merging pages of the same recipient at once would otherwise wait on each
/// other's rows in opposite orders.
const CLAIM_LOCK: i64 = 0x6670_6f75_7462_6f78;

pub const PAGE_COLUMNS: &str = "id, incident_id, party, focal_point, channel, step, loop, state, attempts, \
     next_attempt_at, provider_id, last_error, merged_into";

pub fn page_from_row(r: &Row) -> Result<OutboxPage> {
    Ok(OutboxPage {
        id: r.i64("id")?,
        incident: r.uuid("incident_id")?,
        party: r.text("party")?,
        focal_point: r.text("focal_point")?,
        channel: r.text("channel")?,
        step: r.u32("step")?,
        loop_: r.u32("loop")?,
        state: r.text("state")?,
        attempts: r.u32("attempts")?,
        next_attempt_at: from_millis(r.i64("next_attempt_at")?),
        provider_id: r.opt_text("provider_id")?,
        last_error: r.opt_text("last_error")?,
        merged_into: r.opt_i64("merged_into")?,
    })
}

pub async fn claim(
    c: &mut dyn Conn,
    now: DateTime<Utc>,
    owner: &str,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxPage>> {
    let now = to_millis(now);
    if c.dialect() == Dialect::Postgres {
        // The claim walks the due index in order and stops at the limit. Right after a
        // flood the planner's statistics still describe a small table and it reads every
        // due page then sorts them instead (measured: 16 ms a claim with 30,000 queued,
        // 0.05 ms walking): bitmap scans are off for this transaction. One round trip
        // with the lock.
        c.execute_script(&format!("SET LOCAL enable_bitmapscan = off; SELECT pg_advisory_xact_lock({CLAIM_LOCK})"))
            .await?;
    }
    let sql = format!(
        "UPDATE outbox SET lease_owner = $1, lease_until = $2
         WHERE id IN (SELECT id FROM outbox
                      WHERE state = 'pending' AND channel IN ('sms', 'email', 'webhook') AND next_attempt_at <= $3
                        AND (lease_until IS NULL OR lease_until < $3)
                      ORDER BY next_attempt_at LIMIT $4{})
         RETURNING {PAGE_COLUMNS}",
        c.dialect().skip_locked()
    );
    let rows = c.query(&sql, &[owner.into(), (now + lease_ms).into(), now.into(), limit.into()]).await?;
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
        let rows = c
            .query(
                "UPDATE outbox SET state = 'merged', merged_into = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2
                 WHERE state = 'pending' AND incident_id = $3 AND focal_point = $4 AND channel = $5 AND id <> $1
                   AND (lease_until IS NULL OR lease_until < $2 OR lease_owner = $6)
                 RETURNING id",
                &[
                    page.id.into(),
                    now.into(),
                    page.incident.into(),
                    (&page.focal_point).into(),
                    (&page.channel).into(),
                    owner.into(),
                ],
            )
            .await?;
        for row in rows {
            merged.push(row.i64("id")?);
        }
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

/// Records what became of one claimed page (see [`crate::store::Outbox::record_pages`]).
pub async fn record(
    c: &mut dyn Conn,
    page: &OutboxPage,
    owner: &str,
    result: &PageResult,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let at = to_millis(now);
    let held = "WHERE id = $3 AND state = 'pending' AND lease_owner = $4";
    match result {
        PageResult::Sent { provider_id } => {
            let n = c
                .execute(
                    "UPDATE outbox SET state = 'sent', provider_id = $1, last_error = NULL, lease_owner = NULL,
                        lease_until = NULL, updated_at = $2
                     WHERE id = $3 AND (state = 'pending' OR (state = 'cancelled' AND lease_owner = $4))",
                    &[provider_id.as_deref().into(), at.into(), page.id.into(), owner.into()],
                )
                .await?;
            if n == 0 {
                return Ok(None);
            }
            let event = notification(EventType::NotificationSent, page, "provider_id", provider_id.as_deref());
            Ok(Some(append_one(c, event, at).await?))
        }
        PageResult::Retry { at: next, error } => {
            let sql = format!(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $5, last_error = $1, lease_owner = NULL,
                    lease_until = NULL, updated_at = $2 {held}"
            );
            c.execute(&sql, &[error.into(), at.into(), page.id.into(), owner.into(), to_millis(*next).into()]).await?;
            Ok(None)
        }
        PageResult::Deferred { at: next } => {
            let sql = format!(
                "UPDATE outbox SET next_attempt_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2 {held}"
            );
            c.execute(&sql, &[to_millis(*next).into(), at.into(), page.id.into(), owner.into()]).await?;
            Ok(None)
        }
        PageResult::Cancelled { reason } => {
            let sql = format!(
                "UPDATE outbox SET state = 'cancelled', last_error = $1, lease_owner = NULL, lease_until = NULL,
                    updated_at = $2 {held}"
            );
            c.execute(&sql, &[reason.into(), at.into(), page.id.into(), owner.into()]).await?;
            Ok(None)
        }
        PageResult::Failed { reason } => {
            let sql = format!(
                "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $1, lease_owner = NULL,
                    lease_until = NULL, updated_at = $2 {held}"
            );
            let n = c.execute(&sql, &[reason.into(), at.into(), page.id.into(), owner.into()]).await?;
            if n == 0 {
                return Ok(None);
            }
            let seq =
                append_one(c, notification(EventType::NotificationFailed, page, "reason", Some(reason)), at).await?;
            move_on_if_unreachable(c, page, at).await?;
            Ok(Some(seq))
        }
    }
}

/// When every page of the party's current step has failed permanently, nobody of that
/// step can answer: make the party's pending timer due now, so the escalation engine
/// (woken by the `notification.failed` on the bus) enters the next step at once instead
/// of waiting out the step. The next step's wait then counts from now.
async fn move_on_if_unreachable(c: &mut dyn Conn, page: &OutboxPage, at: i64) -> Result<()> {
    let step: [Value; 4] = [page.incident.into(), (&page.party).into(), page.step.into(), page.loop_.into()];
    let reachable = c
        .query_one(
            "SELECT COUNT(*) AS n FROM outbox
             WHERE incident_id = $1 AND party = $2 AND step = $3 AND loop = $4 AND state <> 'failed'",
            &step,
        )
        .await?
        .i64("n")?;
    if reachable > 0 {
        return Ok(());
    }
    let current = c
        .query_opt(
            "SELECT 1 AS current FROM incident_parties WHERE incident_id = $1 AND party = $2 AND esc_step = $3
               AND esc_loop = $4 AND acknowledged_by IS NULL AND esc_state = 'active'",
            &step,
        )
        .await?;
    if current.is_none() {
        return Ok(());
    }
    let party: [Value; 3] = [at.into(), page.incident.into(), (&page.party).into()];
    let moved = c
        .execute(
            "UPDATE escalation_timers SET due_at = $1
             WHERE incident_id = $2 AND party = $3 AND state = 'pending' AND due_at > $1",
            &party,
        )
        .await?;
    if moved > 0 {
        c.execute("UPDATE incident_parties SET esc_next_at = $1 WHERE incident_id = $2 AND party = $3", &party).await?;
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

pub async fn provider_status(
    c: &mut dyn Conn,
    provider_id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let new = status_rank(status);
    if new == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT {PAGE_COLUMNS}, provider_status FROM outbox WHERE provider_id = $1 ORDER BY id LIMIT 1");
    let Some(row) = c.query_opt(&sql, &[provider_id.into()]).await? else {
        return Ok(None);
    };
    let page = page_from_row(&row)?;
    let current = row.opt_text("provider_status")?.map(|s| status_rank(&s)).unwrap_or(0);
    if current >= 4 || new <= current {
        return Ok(None); // final already, or an out-of-order older status
    }
    let at = to_millis(now);
    let state = match new {
        4 => "delivered",
        5 => "failed",
        _ => page.state.as_str(),
    };
    c.execute(
        "UPDATE outbox SET provider_status = $1, state = $2, updated_at = $3 WHERE id = $4",
        &[status.into(), state.into(), at.into(), page.id.into()],
    )
    .await?;
    let event = match new {
        4 => notification(EventType::NotificationDelivered, &page, "provider_id", Some(provider_id)),
        5 => notification(EventType::NotificationFailed, &page, "reason", Some(&format!("provider reported {status}"))),
        _ => return Ok(None),
    };
    Ok(Some(append_one(c, event, at).await?))
}

pub async fn backlog(c: &mut dyn Conn) -> Result<(Option<DateTime<Utc>>, u64)> {
    let row = c
        .query_one(
            "SELECT MIN(next_attempt_at) AS due, COUNT(*) AS n FROM outbox
             WHERE state = 'pending' AND channel IN ('sms', 'email', 'webhook')",
            &[],
        )
        .await?;
    Ok((row.opt_i64("due")?.map(from_millis), row.i64("n")? as u64))
}

pub async fn incident_pages(c: &mut dyn Conn, incident: Uuid) -> Result<Vec<OutboxPage>> {
    let sql = format!("SELECT {PAGE_COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY id");
    c.query(&sql, &[incident.into()]).await?.iter().map(page_from_row).collect()
}

pub async fn insert_ack_token(
    c: &mut dyn Conn,
    hash: &[u8],
    token: &AckToken,
    outbox_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    c.execute(
        "INSERT INTO ack_tokens (hash, incident_id, focal_point, party, outbox_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            hash.into(),
            token.incident.into(),
            (&token.focal_point).into(),
            (&token.party).into(),
            outbox_id.into(),
            to_millis(now).into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn ack_token(c: &mut dyn Conn, hash: &[u8]) -> Result<Option<AckToken>> {
    let row = c
        .query_opt("SELECT incident_id, focal_point, party, used_at FROM ack_tokens WHERE hash = $1", &[hash.into()])
        .await?;
    row.map(|r| {
        Ok(AckToken {
            incident: r.uuid("incident_id")?,
            focal_point: r.text("focal_point")?,
            party: r.text("party")?,
            used: r.opt_i64("used_at")?.is_some(),
        })
    })
    .transpose()
}

pub async fn consume_ack_token(c: &mut dyn Conn, hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE ack_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL
               AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = ack_tokens.incident_id AND i.state IN ('open', 'acknowledged'))",
            &[to_millis(now).into(), hash.into()],
        )
        .await?;
    Ok(n == 1)
}
