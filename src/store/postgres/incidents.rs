//! Incident commands and queries on PostgreSQL, each inside the caller's transaction,
//! which holds the log lock (see `events.rs`): like SQLite's single writer, that makes
//! "look for a dedup key or Idempotency-Key, then insert" atomic across replicas. The
//! unique partial indexes stay as a backstop.

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::events::append;
use super::rows::{INCIDENT_COLUMNS, incident_from_row, load_audience, load_incident};
use crate::domain::event::{EventType, NewEvent, to_millis};
use crate::domain::incident::State;
use crate::domain::reference;
use crate::store::*;

type Tx = Transaction<'static, Postgres>;

pub async fn raise(tx: &mut Tx, raise: RaiseRecord) -> Result<RaiseOutcome> {
    let RaiseRecord { mut incident, audience, idempotency, escalation } = raise;

    if let Some((principal, key, fingerprint)) = &idempotency {
        let row =
            sqlx::query("SELECT fingerprint, incident_id FROM idempotency_keys WHERE principal = $1 AND key = $2")
                .bind(principal)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(row) = row {
            let stored: String = row.try_get("fingerprint")?;
            if &stored != fingerprint {
                return Ok(RaiseOutcome::IdempotencyMismatch);
            }
            let id = Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?;
            let existing =
                load_incident(tx, id).await?.ok_or_else(|| anyhow::anyhow!("idempotency key points nowhere"))?;
            let audience = load_audience(tx, id).await?;
            return Ok(RaiseOutcome::IdempotentReplay { incident: existing, audience });
        }
    }

    if let Some(dedup) = &incident.dedup_key {
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM incidents WHERE originator_party = $1 AND dedup_key = $2
               AND state IN ('open', 'acknowledged')",
        )
        .bind(&incident.originator.party)
        .bind(dedup)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = existing {
            let id = Uuid::parse_str(&id)?;
            let existing = load_incident(tx, id).await?.ok_or_else(|| anyhow::anyhow!("dedup row vanished"))?;
            let audience = load_audience(tx, id).await?;
            return Ok(RaiseOutcome::DedupHit { incident: existing, audience });
        }
    }

    // A ref is unique among active incidents; lengthen it if the short space is crowded.
    let mut attempt = 0;
    loop {
        let taken: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM incidents WHERE ref = $1 AND state IN ('open', 'acknowledged')")
                .bind(&incident.reference)
                .fetch_optional(&mut **tx)
                .await?;
        if taken.is_none() {
            break;
        }
        attempt += 1;
        incident.reference = reference::generate(if attempt < 8 { 4 } else { 6 });
    }

    for plan in &escalation {
        if let Some(ps) = incident.party_states.iter_mut().find(|p| p.party == plan.party) {
            ps.escalation = Some(plan.state.clone());
        }
    }
    let at = to_millis(incident.raised_at);
    let seq = append(tx, &NewEvent::raised(&incident), at).await?;
    let id = incident.id.to_string();
    let content = serde_json::to_string(&incident.content())?;
    sqlx::query(
        "INSERT INTO incidents (id, ref, originator_party, originator_officer, field, severity, severity_rank, tlp,
            status, state, dedup_key, content, raised_seq, raised_at, updated_at, closed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL)",
    )
    .bind(&id)
    .bind(&incident.reference)
    .bind(&incident.originator.party)
    .bind(&incident.originator.officer)
    .bind(&incident.field)
    .bind(incident.severity.as_str())
    .bind(incident.severity.rank())
    .bind(incident.tlp.as_str())
    .bind(incident.status.as_str())
    .bind(incident.state.as_str())
    .bind(&incident.dedup_key)
    .bind(&content)
    .bind(seq)
    .bind(at)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    for (position, party) in incident.parties.iter().enumerate() {
        sqlx::query("INSERT INTO incident_parties (incident_id, party, position) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(party)
            .bind(position as i64)
            .execute(&mut **tx)
            .await?;
    }
    for key in audience.keys() {
        sqlx::query("INSERT INTO incident_audience (incident_id, key) VALUES ($1, $2)")
            .bind(&id)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    if let Some((principal, key, fingerprint)) = &idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, incident_id, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(principal)
        .bind(key)
        .bind(fingerprint)
        .bind(&id)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    let mut last = seq;
    for plan in &escalation {
        if let Some(s) = super::escalation::apply_step(tx, incident.id, &incident.reference, plan, at).await? {
            last = s;
        }
    }
    Ok(RaiseOutcome::Created { incident, seq: last })
}

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
        "UPDATE incident_parties SET acknowledged_by = $1, acknowledged_at = $2, via = $3,
            esc_state = CASE WHEN esc_state IS NULL THEN NULL ELSE 'stopped' END, esc_next_at = NULL
         WHERE incident_id = $4 AND party = $5",
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
        "UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = $1 AND party = $2 AND state = 'pending'",
    )
    .bind(&id)
    .bind(&ack.party)
    .execute(&mut **tx)
    .await?;
    // Pages for the party that have not gone out yet are moot now: cancel them. A page
    // in flight keeps its lease; the dispatcher records it sent if it was.
    sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = 'party acknowledged', updated_at = $1
         WHERE incident_id = $2 AND party = $3 AND state = 'pending'",
    )
    .bind(at)
    .bind(&id)
    .bind(&ack.party)
    .execute(&mut **tx)
    .await?;
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM incident_parties WHERE incident_id = $1 AND acknowledged_by IS NULL")
            .bind(&id)
            .fetch_one(&mut **tx)
            .await?;
    let new_state = if pending == 0 { State::Acknowledged } else { State::Open };
    sqlx::query("UPDATE incidents SET state = $1, updated_at = $2 WHERE id = $3")
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
    sqlx::query("INSERT INTO notes (incident_id, by_id, party, at, text) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&note.by)
        .bind(&note.party)
        .bind(at)
        .bind(&note.text)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE incidents SET updated_at = $1 WHERE id = $2").bind(at).bind(&id).execute(&mut **tx).await?;
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
    sqlx::query("UPDATE incidents SET state = $1, updated_at = $2, closed_at = $3 WHERE id = $4")
        .bind(close.state.as_str())
        .bind(at)
        .bind(at)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    // Closing stops every party's escalation.
    sqlx::query("UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = $1 AND state = 'pending'")
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE incident_parties SET esc_state = 'stopped', esc_next_at = NULL
         WHERE incident_id = $1 AND esc_state = 'active'",
    )
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    // Nothing more goes out about a closed incident: cancel its pages not yet sent.
    sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = 'incident closed', updated_at = $1
         WHERE incident_id = $2 AND state = 'pending'",
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
/// Unset filters are NULL parameters, so the SQL text is fixed.
pub async fn list(pool: &PgPool, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
    if viewer.keys.is_empty() {
        return Ok(IncidentPage { incidents: Vec::new(), total: 0, next_cursor: None });
    }
    const FILTER: &str = "EXISTS (SELECT 1 FROM incident_audience a WHERE a.incident_id = i.id AND a.key = ANY($1))
        AND (cardinality($2::text[]) = 0 OR i.state = ANY($2))
        AND ($3::text IS NULL OR i.originator_party = $3
             OR EXISTS (SELECT 1 FROM incident_parties p WHERE p.incident_id = i.id AND p.party = $3))
        AND ($4::text IS NULL OR i.field = $4)
        AND ($5::text IS NULL OR i.severity = $5)
        AND ($6::text IS NULL OR i.tlp = $6)";
    let states: Vec<String> = query.states.iter().map(|s| s.as_str().to_string()).collect();
    let mut conn = pool.acquire().await?;

    let count_sql = format!("SELECT COUNT(*) FROM incidents i WHERE {FILTER}");
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
        .bind(&viewer.keys)
        .bind(&states)
        .bind(&query.party)
        .bind(&query.field)
        .bind(&query.severity)
        .bind(&query.tlp)
        .fetch_one(&mut *conn)
        .await?;

    let columns = INCIDENT_COLUMNS.split(", ").map(|c| format!("i.{c}")).collect::<Vec<_>>().join(", ");
    let page_sql = format!(
        "SELECT {columns} FROM incidents i WHERE {FILTER} AND i.raised_seq < $7 ORDER BY i.raised_seq DESC LIMIT $8"
    );
    let limit = i64::from(query.limit.max(1));
    let rows = sqlx::query(sqlx::AssertSqlSafe(page_sql))
        .bind(&viewer.keys)
        .bind(&states)
        .bind(&query.party)
        .bind(&query.field)
        .bind(&query.severity)
        .bind(&query.tlp)
        .bind(query.before_seq.unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
    let more = rows.len() as i64 > limit;
    let mut incidents = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in rows.iter().take(limit as usize) {
        last_seq = Some(row.try_get::<i64, _>("raised_seq")?);
        incidents.push(incident_from_row(&mut conn, row).await?);
    }
    Ok(IncidentPage { incidents, total: total as u64, next_cursor: if more { last_seq } else { None } })
}
