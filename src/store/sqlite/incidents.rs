//! Incident commands and queries, each inside the caller's write transaction.

use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::events::append;
use super::rows::{INCIDENT_COLUMNS, incident_from_row, load_incident};
use crate::domain::event::{EventType, NewEvent, to_millis};
use crate::domain::incident::State;
use crate::store::*;

type Tx = Transaction<'static, Sqlite>;

pub async fn acknowledge(tx: &mut Tx, ack: AckRecord) -> Result<AckOutcome> {
    let Some(incident) = load_incident(tx, ack.incident).await? else {
        return Ok(AckOutcome::NotFound);
    };
    if !incident.state.is_active() {
        return Ok(AckOutcome::Closed { incident });
    }
    match incident.party_state(&ack.party) {
        None => return Ok(AckOutcome::NotFound),
        Some(p) if p.acknowledged => return Ok(AckOutcome::AlreadyAcknowledged { incident }),
        Some(_) => {}
    }
    let id = ack.incident.to_string();
    let at = to_millis(ack.at);
    sqlx::query(
        "UPDATE incident_parties SET acknowledged_by = ?, acknowledged_at = ?, via = ?,
            esc_state = CASE WHEN esc_state IS NULL THEN NULL ELSE 'stopped' END, esc_next_at = NULL
         WHERE incident_id = ? AND party = ?",
    )
    .bind(&ack.by)
    .bind(at)
    .bind(&ack.via)
    .bind(&id)
    .bind(&ack.party)
    .execute(&mut **tx)
    .await?;
    // The party's escalation stops at once: no pending step of it may fire.
    sqlx::query(
        "UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = ? AND party = ? AND state = 'pending'",
    )
    .bind(&id)
    .bind(&ack.party)
    .execute(&mut **tx)
    .await?;
    // Pages for the party that have not gone out yet are moot now: cancel them. A page
    // in flight keeps its lease; the dispatcher records it sent if it was.
    sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = 'party acknowledged', updated_at = ?
         WHERE incident_id = ? AND party = ? AND state = 'pending'",
    )
    .bind(at)
    .bind(&id)
    .bind(&ack.party)
    .execute(&mut **tx)
    .await?;
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM incident_parties WHERE incident_id = ? AND acknowledged_by IS NULL")
            .bind(&id)
            .fetch_one(&mut **tx)
            .await?;
    let new_state = if pending == 0 { State::Acknowledged } else { State::Open };
    sqlx::query("UPDATE incidents SET state = ?, updated_at = ? WHERE id = ?")
        .bind(new_state.as_str())
        .bind(at)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    let incident = load_incident(tx, ack.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    let seq = append(tx, &NewEvent::acknowledged(&incident, &ack.party, &ack.by, &ack.via), at).await?;
    Ok(AckOutcome::Acknowledged { incident, seq })
}

pub async fn add_note(tx: &mut Tx, note: NoteRecord) -> Result<ChangeOutcome> {
    let Some(incident) = load_incident(tx, note.incident).await? else {
        return Ok(ChangeOutcome::NotFound);
    };
    if !incident.state.is_active() {
        return Ok(ChangeOutcome::Closed { incident });
    }
    let id = note.incident.to_string();
    let at = to_millis(note.at);
    sqlx::query("INSERT INTO notes (incident_id, by_id, party, at, text) VALUES (?, ?, ?, ?, ?)")
        .bind(&id)
        .bind(&note.by)
        .bind(&note.party)
        .bind(at)
        .bind(&note.text)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE incidents SET updated_at = ? WHERE id = ?").bind(at).bind(&id).execute(&mut **tx).await?;
    let seq = append(tx, &NewEvent::note(note.incident, &note.party, &note.by, &note.text), at).await?;
    let incident = load_incident(tx, note.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    Ok(ChangeOutcome::Changed { incident, seq })
}

pub async fn close(tx: &mut Tx, close: CloseRecord) -> Result<ChangeOutcome> {
    let Some(incident) = load_incident(tx, close.incident).await? else {
        return Ok(ChangeOutcome::NotFound);
    };
    if !incident.state.is_active() {
        return Ok(ChangeOutcome::Closed { incident });
    }
    let id = close.incident.to_string();
    let at = to_millis(close.at);
    sqlx::query("UPDATE incidents SET state = ?, updated_at = ?, closed_at = ? WHERE id = ?")
        .bind(close.state.as_str())
        .bind(at)
        .bind(at)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    // Closing stops every party's escalation.
    sqlx::query("UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = ? AND state = 'pending'")
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE incident_parties SET esc_state = 'stopped', esc_next_at = NULL
         WHERE incident_id = ? AND esc_state = 'active'",
    )
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    // Nothing more goes out about a closed incident: cancel its pages not yet sent.
    sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = 'incident closed', updated_at = ?
         WHERE incident_id = ? AND state = 'pending'",
    )
    .bind(at)
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    let incident = load_incident(tx, close.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    let kind = if close.state == State::Resolved { EventType::Resolved } else { EventType::Cancelled };
    let seq = append(tx, &NewEvent::closed(kind, &incident, &close.by, close.reason.as_deref()), at).await?;
    Ok(ChangeOutcome::Changed { incident, seq })
}

/// Visible incidents matching the query, newest raise first, with the visible total.
pub async fn list(pool: &SqlitePool, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
    if viewer.keys.is_empty() {
        return Ok(IncidentPage { incidents: Vec::new(), total: 0, next_cursor: None });
    }
    // Conditions and their binds, in order; built from fixed fragments only.
    let mut conditions = vec![format!(
        "EXISTS (SELECT 1 FROM incident_audience a WHERE a.incident_id = i.id AND a.key IN ({}))",
        vec!["?"; viewer.keys.len()].join(",")
    )];
    let mut binds: Vec<String> = viewer.keys.clone();
    if !query.states.is_empty() {
        conditions.push(format!("i.state IN ({})", vec!["?"; query.states.len()].join(",")));
        binds.extend(query.states.iter().map(|s| s.as_str().to_string()));
    }
    if let Some(party) = &query.party {
        conditions.push("(i.originator_party = ? OR EXISTS (SELECT 1 FROM incident_parties p WHERE p.incident_id = i.id AND p.party = ?))".into());
        binds.push(party.clone());
        binds.push(party.clone());
    }
    for (column, value) in [("i.field", &query.field), ("i.severity", &query.severity), ("i.tlp", &query.tlp)] {
        if let Some(v) = value {
            conditions.push(format!("{column} = ?"));
            binds.push(v.clone());
        }
    }
    let filter = conditions.join(" AND ");

    let count_sql = format!("SELECT COUNT(*) FROM incidents i WHERE {filter}");
    let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql));
    for b in &binds {
        count = count.bind(b);
    }
    let mut conn = pool.acquire().await?;
    let total = count.fetch_one(&mut *conn).await? as u64;

    let page_sql = format!(
        "SELECT {} FROM incidents i WHERE {filter} AND i.raised_seq < ? ORDER BY i.raised_seq DESC LIMIT ?",
        INCIDENT_COLUMNS.split(", ").map(|c| format!("i.{c}")).collect::<Vec<_>>().join(", ")
    );
    let mut page = sqlx::query(sqlx::AssertSqlSafe(page_sql));
    for b in &binds {
        page = page.bind(b);
    }
    let limit = i64::from(query.limit.max(1));
    let rows = page.bind(query.before_seq.unwrap_or(i64::MAX)).bind(limit + 1).fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    let mut incidents = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in rows.iter().take(limit as usize) {
        last_seq = Some(row.try_get::<i64, _>("raised_seq")?);
        incidents.push(incident_from_row(&mut conn, row).await?);
    }
    Ok(IncidentPage { incidents, total, next_cursor: if more { last_seq } else { None } })
}
