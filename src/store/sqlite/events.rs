//! The hash-chained event log: append inside a write transaction, read for replay and
//! the live feed, verify end to end.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::domain::event::{Event, EventType, GENESIS, NewEvent, canonical_json, chain_hash, from_millis};
use crate::domain::visibility::Audience;
use crate::store::{ChainReport, FeedEvent, Result, Viewer};

/// Appends one event after the current head. Must run inside a write transaction (the
/// write lock makes "read head, insert head+1" atomic).
pub async fn append(conn: &mut SqliteConnection, event: &NewEvent, at_ms: i64) -> Result<i64> {
    let seq = append_many(conn, std::slice::from_ref(event), at_ms).await?;
    seq.ok_or_else(|| anyhow::anyhow!("append wrote nothing"))
}

/// Rows per multi-row INSERT: 8 binds each, well under SQLite's variable limit.
const INSERT_CHUNK: usize = 100;

/// Appends events in order after the current head and returns the last seq (None for
/// none). The head is read once and the rows go in as few multi-row INSERTs as possible:
/// every statement is a round trip to SQLite's worker thread, which is what limits a raise.
pub async fn append_many(conn: &mut SqliteConnection, events: &[NewEvent], at_ms: i64) -> Result<Option<i64>> {
    let timed: Vec<(NewEvent, i64)> = events.iter().map(|e| (e.clone(), at_ms)).collect();
    append_timed(conn, &timed).await
}

/// [`append_many`] with a time per event.
pub async fn append_timed(conn: &mut SqliteConnection, events: &[(NewEvent, i64)]) -> Result<Option<i64>> {
    if events.is_empty() {
        return Ok(None);
    }
    let last = sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    let (mut seq, mut prev) = match last {
        None => (0, GENESIS),
        Some(row) => {
            let seq: i64 = row.try_get("seq")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let prev: [u8; 32] =
                hash.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt hash at seq {seq}"))?;
            (seq, prev)
        }
    };
    struct Row<'a> {
        seq: i64,
        at: i64,
        event: &'a NewEvent,
        incident: String,
        data: String,
        hash: [u8; 32],
    }
    let mut rows = Vec::with_capacity(events.len());
    for (event, at_ms) in events {
        let at_ms = *at_ms;
        seq += 1;
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
        prev = hash;
        rows.push(Row { seq, at: at_ms, event, incident, data, hash });
    }
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (seq, at, type, incident_id, party, only_for, data, hash) ",
        );
        insert.push_values(chunk, |mut b, r| {
            b.push_bind(r.seq)
                .push_bind(r.at)
                .push_bind(r.event.kind.as_str())
                .push_bind(r.incident.as_str())
                .push_bind(r.event.party.as_deref())
                .push_bind(r.event.only_for.as_deref())
                .push_bind(r.data.as_str())
                .push_bind(&r.hash[..]);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(Some(seq))
}

const EVENT_COLUMNS: &str = "e.seq, e.at, e.type, e.incident_id, e.party, e.only_for, e.data";

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<(Event, Option<String>)> {
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
async fn with_audiences(pool: &SqlitePool, rows: Vec<(Event, Option<String>)>) -> Result<Vec<FeedEvent>> {
    let mut ids: Vec<String> = rows.iter().map(|(e, _)| e.incident.to_string()).collect();
    ids.sort();
    ids.dedup();
    let mut audiences: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!("SELECT incident_id, key FROM incident_audience WHERE incident_id IN ({placeholders})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(pool).await? {
            audiences.entry(row.try_get("incident_id")?).or_default().push(row.try_get("key")?);
        }
    }
    let audiences: HashMap<String, Arc<Audience>> =
        audiences.into_iter().map(|(id, keys)| (id, Arc::new(Audience(keys)))).collect();
    Ok(rows
        .into_iter()
        .map(|(event, only_for)| {
            let audience = audiences.get(&event.incident.to_string()).cloned().unwrap_or_default();
            FeedEvent { event, audience, only_for }
        })
        .collect())
}

pub async fn all_after(pool: &SqlitePool, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > ? ORDER BY e.seq LIMIT ?");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(i64::from(limit)).fetch_all(pool).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(pool, rows).await
}

pub async fn timeline(pool: &SqlitePool, id: Uuid) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.incident_id = ? ORDER BY e.seq");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_all(pool).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(pool, rows).await
}

/// SQL condition "the viewer may see this event" for `e` — the same keys as
/// [`crate::domain::visibility::may_see`]; binds: viewer id, then each key.
pub fn visible_condition(keys: usize) -> String {
    let placeholders = vec!["?"; keys.max(1)].join(",");
    format!(
        "(e.only_for IS NULL OR e.only_for = ?) AND EXISTS (SELECT 1 FROM incident_audience a \
         WHERE a.incident_id = e.incident_id AND a.key IN ({placeholders}))"
    )
}

pub async fn visible_after(pool: &SqlitePool, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
    if viewer.keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > ? AND {} ORDER BY e.seq LIMIT ?",
        visible_condition(viewer.keys.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(&viewer.id);
    for k in &viewer.keys {
        q = q.bind(k);
    }
    let rows = q.bind(i64::from(limit)).fetch_all(pool).await?;
    rows.iter().map(|r| event_from_row(r).map(|(e, _)| e)).collect()
}

/// Walks the whole chain in batches, recomputing every hash from the stored bytes.
pub async fn verify(pool: &SqlitePool) -> Result<ChainReport> {
    let mut prev = GENESIS;
    let mut after = 0i64;
    let mut count = 0u64;
    let mut expected_seq = 1i64;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, type, incident_id, party, only_for, data, hash FROM events WHERE seq > ? ORDER BY seq LIMIT 5000",
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
