//! The hash-chained event log: append inside a write transaction, read for replay and the
//! live feed, verify end to end.
//!
//! Appends read the head (seq and hash) and write head + 1, head + 2, … That is atomic
//! because only one transaction appends at a time: SQLite has one writer, and on
//! PostgreSQL every appending transaction takes the log lock first (see
//! `store/postgres.rs`). So seq is contiguous and assigned in commit order, and a reader
//! that has seen seq N has seen everything below it.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Conn, Row, Value, placeholders, tuples};
use crate::domain::event::{Event, EventType, GENESIS, NewEvent, canonical_json, chain_hash, from_millis};
use crate::domain::visibility::Audience;
use crate::store::{ChainReport, FeedEvent, Result, Viewer};

/// Rows per multi-row INSERT (8 values each; well under both dialects' limits).
const CHUNK: usize = 100;
/// Ids per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// The head: its seq (0 for an empty log) and hash; this transaction's own last append
/// if it made one.
async fn head(c: &mut dyn Conn) -> Result<(i64, [u8; 32])> {
    if let Some(tail) = c.tail() {
        return Ok(tail);
    }
    let row = c.query_opt("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1", &[]).await?;
    match row {
        None => Ok((0, GENESIS)),
        Some(row) => {
            let seq = row.i64("seq")?;
            let hash: [u8; 32] =
                row.blob("hash")?.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt hash at seq {seq}"))?;
            Ok((seq, hash))
        }
    }
}

/// Appends events in order after the head, each with its own time; returns the last seq
/// (None for none). Must run in a write transaction that may append.
pub async fn append(c: &mut dyn Conn, events: &[(NewEvent, i64)]) -> Result<Option<i64>> {
    if events.is_empty() {
        return Ok(None);
    }
    let (mut seq, mut prev) = head(c).await?;
    let mut values: Vec<Value> = Vec::with_capacity(events.len() * 8);
    let mut rows = 0;
    for (event, at_ms) in events {
        seq += 1;
        let data = canonical_json(&event.data);
        let incident = event.incident.to_string();
        let hash = chain_hash(
            &prev,
            seq,
            *at_ms,
            event.kind.as_str(),
            &incident,
            event.party.as_deref(),
            event.only_for.as_deref(),
            &data,
        );
        prev = hash;
        if let Some(kept) = c.kept_events() {
            let shown = Event {
                seq,
                at: from_millis(*at_ms),
                kind: event.kind,
                incident: event.incident,
                party: event.party.clone(),
                data: event.data.clone(),
            };
            kept.push((shown, event.only_for.clone()));
        }
        values.extend([
            seq.into(),
            (*at_ms).into(),
            event.kind.as_str().into(),
            incident.into(),
            event.party.as_deref().into(),
            event.only_for.as_deref().into(),
            data.into(),
            Value::Blob(Some(hash.to_vec())),
        ]);
        rows += 1;
        if rows == CHUNK {
            insert(c, rows, &values).await?;
            values.clear();
            rows = 0;
        }
    }
    if rows > 0 {
        insert(c, rows, &values).await?;
    }
    c.appended(seq, prev);
    Ok(Some(seq))
}

async fn insert(c: &mut dyn Conn, rows: usize, values: &[Value]) -> Result<()> {
    let sql = format!(
        "INSERT INTO events (seq, at, type, incident_id, party, only_for, data, hash) VALUES {}",
        tuples(1, rows, 8)
    );
    c.defer(&sql, values).await
}

/// Appends one event; returns its seq.
pub async fn append_one(c: &mut dyn Conn, event: NewEvent, at_ms: i64) -> Result<i64> {
    append(c, &[(event, at_ms)]).await?.ok_or_else(|| anyhow::anyhow!("append wrote nothing"))
}

const EVENT_COLUMNS: &str = "e.seq, e.at, e.type, e.incident_id, e.party, e.only_for, e.data";

fn event_from_row(row: &Row) -> Result<(Event, Option<String>)> {
    let kind = row.text("type")?;
    let kind: EventType = kind.parse().map_err(|_| anyhow::anyhow!("unknown event type {kind:?} in store"))?;
    Ok((
        Event {
            seq: row.i64("seq")?,
            at: from_millis(row.i64("at")?),
            kind,
            incident: row.uuid("incident_id")?,
            party: row.opt_text("party")?,
            data: serde_json::from_str(&row.text("data")?)?,
        },
        row.opt_text("only_for")?,
    ))
}

/// Attaches each event's incident audience (one query per few hundred incidents).
pub async fn with_audiences(c: &mut dyn Conn, rows: Vec<(Event, Option<String>)>) -> Result<Vec<FeedEvent>> {
    let mut ids: Vec<String> = rows.iter().map(|(e, _)| e.incident.to_string()).collect();
    ids.sort();
    ids.dedup();
    let mut audiences: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT incident_id, key FROM incident_audience WHERE incident_id IN ({})",
            placeholders(1, chunk.len())
        );
        let params: Vec<Value> = chunk.iter().map(Value::from).collect();
        for row in c.query(&sql, &params).await? {
            audiences.entry(row.text("incident_id")?).or_default().push(row.text("key")?);
        }
    }
    let audiences: HashMap<String, Arc<Audience>> = audiences
        .into_iter()
        .map(|(id, mut keys)| {
            keys.sort(); // byte order, the same on both backends
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

pub async fn all_after(c: &mut dyn Conn, after: i64, limit: u32) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2");
    let rows = c.query(&sql, &[after.into(), limit.into()]).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(c, rows).await
}

pub async fn timeline(c: &mut dyn Conn, id: uuid::Uuid) -> Result<Vec<FeedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.incident_id = $1 ORDER BY e.seq");
    let rows = c.query(&sql, &[id.into()]).await?;
    let rows = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
    with_audiences(c, rows).await
}

/// SQL condition "the viewer may see this event" for `e` — the same keys as
/// [`crate::domain::visibility::may_see`]; placeholders from `first`: the viewer id, then
/// each key.
pub fn visible_condition(first: usize, keys: usize) -> String {
    format!(
        "(e.only_for IS NULL OR e.only_for = ${first}) AND EXISTS (SELECT 1 FROM incident_audience a \
         WHERE a.incident_id = e.incident_id AND a.key IN ({}))",
        placeholders(first + 1, keys.max(1))
    )
}

/// Events after `after` that `viewer` may see, oldest first.
pub async fn visible_after(c: &mut dyn Conn, after: i64, limit: u32, viewer: &Viewer) -> Result<Vec<Event>> {
    if viewer.keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1 AND {} ORDER BY e.seq LIMIT ${}",
        visible_condition(2, viewer.keys.len()),
        3 + viewer.keys.len()
    );
    let mut params: Vec<Value> = vec![after.into(), (&viewer.id).into()];
    params.extend(viewer.keys.iter().map(Value::from));
    params.push(limit.into());
    let rows = c.query(&sql, &params).await?;
    rows.iter().map(|r| event_from_row(r).map(|(e, _)| e)).collect()
}

pub async fn head_seq(c: &mut dyn Conn) -> Result<i64> {
    Ok(c.query_one("SELECT MAX(seq) AS head FROM events", &[]).await?.opt_i64("head")?.unwrap_or(0))
}

/// Walks the whole chain in batches, recomputing every hash from the stored text.
pub async fn verify(c: &mut dyn Conn) -> Result<ChainReport> {
    let mut prev = GENESIS;
    let mut after = 0i64;
    let mut count = 0u64;
    loop {
        let rows = c
            .query(
                "SELECT seq, at, type, incident_id, party, only_for, data, hash FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT 5000",
                &[after.into()],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq = row.i64("seq")?;
            let hash = chain_hash(
                &prev,
                seq,
                row.i64("at")?,
                &row.text("type")?,
                &row.text("incident_id")?,
                row.opt_text("party")?.as_deref(),
                row.opt_text("only_for")?.as_deref(),
                &row.text("data")?,
            );
            if seq != after + 1 || row.blob("hash")? != hash {
                return Ok(ChainReport {
                    events: count,
                    head_seq: seq,
                    head_hash: hex::encode(prev),
                    broken_at: Some(seq),
                });
            }
            prev = hash;
            after = seq;
            count += 1;
        }
    }
    Ok(ChainReport { events: count, head_seq: after, head_hash: hex::encode(prev), broken_at: None })
}
