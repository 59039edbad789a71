//! The hash-chained event log on PostgreSQL.
//!
//! # Global order without gaps
//!
//! With several writers, a sequence (`nextval`) hands out numbers at insert time but the
//! transactions commit in any order: seq 8 may become visible before seq 7. A feed that
//! read 8 and moved its cursor past it would never deliver 7 (DESIGN §5, the trap), and
//! the hash chain would have no well-defined "previous" event.
//!
//! We serialise appends instead. Every transaction that appends events starts with
//! `pg_advisory_xact_lock(LOG_LOCK)` ([`lock_log`]), before any other statement, and
//! holds it until it commits or rolls back. Under the lock it reads the head (seq and
//! hash) and appends head + 1, head + 2, … So:
//!
//! - seq is contiguous and assigned in lock order, which is commit order: PostgreSQL makes
//!   a commit visible before it releases the transaction's locks, so the next holder's
//!   statements (READ COMMITTED takes a snapshot per statement, after the lock) see every
//!   earlier append; a rolled-back transaction leaves no hole because the next holder
//!   reads the head again;
//! - a reader that has seen seq N has therefore seen every seq below N: nothing with a
//!   smaller seq can commit later;
//! - the chain's previous hash is the committed head's, exactly as in SQLite, so
//!   `verify` is the same walk (contiguous seqs, `chain_hash` over the stored text).
//!
//! The price is one writer at a time across the cluster — the same as SQLite, and far
//! above the network's rate of incidents. The lock is taken first in every writing
//! transaction, so no lock-order deadlock can involve it. Timer claims do not append and
//! do not take it.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::event::{Event, EventType, GENESIS, NewEvent, canonical_json, chain_hash, from_millis};
use crate::domain::visibility::Audience;
use crate::store::{ChainReport, FeedEvent, Result, Viewer};

/// Advisory lock key serialising appends ("fpevents" in ASCII).
pub const LOG_LOCK: i64 = 0x6670_6576_656e_7473;

/// Takes the log lock for the rest of the transaction. Must be the transaction's first
/// statement (see the module comment).
pub async fn lock_log(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOG_LOCK).execute(&mut *conn).await?;
    Ok(())
}

/// Appends one event after the current head. Must run inside a transaction that holds
/// [`lock_log`].
pub async fn append(conn: &mut PgConnection, event: &NewEvent, at_ms: i64) -> Result<i64> {
    let last = sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    let (seq, prev) = match last {
        None => (1, GENESIS),
        Some(row) => {
            let seq: i64 = row.try_get("seq")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let prev: [u8; 32] =
                hash.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt hash at seq {seq}"))?;
            (seq + 1, prev)
        }
    };
    let data = canonical_json(&event.data);
    let incident = event.incident.to_string();
    let hash = chain_hash(
        &prev,
        seq,
        at_ms,
        event.kind.as_str(),
        &incident,
        event.party.as_deref(),
        event.only_for.as_deref(),
        &data,
    );
    sqlx::query(
        "INSERT INTO events (seq, at, type, incident_id, party, only_for, data, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(at_ms)
    .bind(event.kind.as_str())
    .bind(&incident)
    .bind(&event.party)
    .bind(&event.only_for)
    .bind(&data)
    .bind(&hash[..])
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}

const EVENT_COLUMNS: &str = "e.seq, e.at, e.type, e.incident_id, e.party, e.only_for, e.data";

fn event_from_row(row: &PgRow) -> Result<(Event, Option<String>)> {
    let kind: String = row.try_get("type")?;
    let kind: EventType = kind.parse().map_err(|_| anyhow::anyhow!("unknown event type {kind:?} in store"))?;
    let incident: String = row.try_get("incident_id")?;
    let data: String = row.try_get("data")?;
    Ok((
        Event {
            seq: row.try_get("seq")?,
            at: from_millis(row.try_get("at")?),
            kind,
            incident: Uuid::parse_str(&incident)?,
            party: row.try_get("party")?,
            data: serde_json::from_str(&data)?,
        },
        row.try_get("only_for")?,
    ))
}

/// Attaches each event's incident audience (one query for the whole batch).
async fn with_audiences(pool: &PgPool, rows: Vec<(Event, Option<String>)>) -> Result<Vec<FeedEvent>> {
    let mut ids: Vec<String> = rows.iter().map(|(e, _)| e.incident.to_string()).collect();
    ids.sort();
    ids.dedup();
    let mut audiences: HashMap<String, Vec<String>> = HashMap::new();
    if !ids.is_empty() {
        let found = sqlx::query("SELECT incident_id, key FROM incident_audience WHERE incident_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
        for row in found {
            audiences.entry(row.try_get("incident_id")?).or_default().push(row.try_get("key")?);
        }
    }
    let audiences: HashMap<String, Arc<Audience>> = audiences
        .into_iter()
        .map(|(id, mut keys)| {
            keys.sort(); // byte order, as `ORDER BY key COLLATE "C"`
            (id, Arc::new(Audience(keys)))
        })
        .collect();
    Ok(rows
        .into_iter()
        .map(|(event, only_for)| {
            let audience = audiences.get(&event.incident.to_string()).cloned().unwrap_or_default();
            FeedEvent { event, audience, only_for }
        })
        .collect())
}

pub async fn all_after(pool: &PgPool, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(i64::from(limit)).fetch_all(pool).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(pool, rows).await
}

pub async fn timeline(pool: &PgPool, id: Uuid) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.incident_id = $1 ORDER BY e.seq");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_all(pool).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(pool, rows).await
}

/// Events after `after` that `viewer` may see: the same keys as
/// [`crate::domain::visibility::may_see`], as in the SQLite backend.
pub async fn visible_after(pool: &PgPool, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
    if viewer.keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1
           AND (e.only_for IS NULL OR e.only_for = $2)
           AND EXISTS (SELECT 1 FROM incident_audience a WHERE a.incident_id = e.incident_id AND a.key = ANY($3))
         ORDER BY e.seq LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(&viewer.id)
        .bind(&viewer.keys)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| event_from_row(r).map(|(e, _)| e)).collect()
}

/// Walks the whole chain in batches, recomputing every hash from the stored text.
pub async fn verify(pool: &PgPool) -> Result<ChainReport> {
    let mut prev = GENESIS;
    let mut after = 0i64;
    let mut count = 0u64;
    let mut expected_seq = 1i64;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, type, incident_id, party, only_for, data, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT 5000",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let stored: Vec<u8> = row.try_get("hash")?;
            let hash = chain_hash(
                &prev,
                seq,
                row.try_get("at")?,
                row.try_get::<&str, _>("type")?,
                row.try_get::<&str, _>("incident_id")?,
                row.try_get::<Option<&str>, _>("party")?,
                row.try_get::<Option<&str>, _>("only_for")?,
                row.try_get::<&str, _>("data")?,
            );
            if seq != expected_seq || stored.as_slice() != hash {
                return Ok(ChainReport {
                    events: count,
                    head_seq: seq,
                    head_hash: hex::encode(prev),
                    broken_at: Some(seq),
                });
            }
            prev = hash;
            after = seq;
            expected_seq += 1;
            count += 1;
        }
    }
    Ok(ChainReport { events: count, head_seq: after, head_hash: hex::encode(prev), broken_at: None })
}
