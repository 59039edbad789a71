//! Reading an incident back from its rows (PostgreSQL; the same columns as SQLite).

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::event::from_millis;
use crate::domain::incident::{Content, EscalationState, Incident, Note, Originator, PartyState, State};
use crate::domain::visibility::Audience;
use crate::store::Result;

pub const INCIDENT_COLUMNS: &str =
    "id, ref, originator_party, originator_officer, state, content, raised_seq, raised_at, updated_at, closed_at";

/// Builds an incident from a row of [`INCIDENT_COLUMNS`] plus its parties and notes.
pub async fn incident_from_row(conn: &mut PgConnection, row: &PgRow) -> Result<Incident> {
    let id_text: String = row.try_get("id")?;
    let id = Uuid::parse_str(&id_text)?;
    let content: Content = serde_json::from_str(row.try_get::<&str, _>("content")?)?;
    let state: String = row.try_get("state")?;
    let state: State = state.parse().map_err(|_| anyhow::anyhow!("bad state {state:?} in store"))?;
    let mut incident = Incident::new(
        id,
        row.try_get("ref")?,
        Originator { party: row.try_get("originator_party")?, officer: row.try_get("originator_officer")? },
        content,
        from_millis(row.try_get("raised_at")?),
    );
    incident.state = state;
    incident.updated_at = from_millis(row.try_get("updated_at")?);
    incident.closed_at = row.try_get::<Option<i64>, _>("closed_at")?.map(from_millis);

    let parties = sqlx::query(
        "SELECT party, acknowledged_by, acknowledged_at, via, esc_step, esc_loop, esc_next_at, esc_state
         FROM incident_parties WHERE incident_id = $1 ORDER BY position",
    )
    .bind(&id_text)
    .fetch_all(&mut *conn)
    .await?;
    incident.party_states = parties
        .iter()
        .map(|r| -> Result<PartyState> {
            let by: Option<String> = r.try_get("acknowledged_by")?;
            let esc_state: Option<String> = r.try_get("esc_state")?;
            Ok(PartyState {
                party: r.try_get("party")?,
                acknowledged: by.is_some(),
                acknowledged_by: by,
                acknowledged_at: r.try_get::<Option<i64>, _>("acknowledged_at")?.map(from_millis),
                via: r.try_get("via")?,
                escalation: match esc_state {
                    None => None,
                    Some(state) => Some(EscalationState {
                        step: r.try_get::<Option<i64>, _>("esc_step")?.unwrap_or(0) as u32,
                        loop_: r.try_get::<Option<i64>, _>("esc_loop")?.unwrap_or(0) as u32,
                        next_at: r.try_get::<Option<i64>, _>("esc_next_at")?.map(from_millis),
                        state,
                    }),
                },
            })
        })
        .collect::<Result<_>>()?;

    let notes = sqlx::query("SELECT by_id, party, at, text FROM notes WHERE incident_id = $1 ORDER BY id")
        .bind(&id_text)
        .fetch_all(&mut *conn)
        .await?;
    incident.notes = notes
        .iter()
        .map(|r| -> Result<Note> {
            Ok(Note {
                by: r.try_get("by_id")?,
                party: r.try_get("party")?,
                at: from_millis(r.try_get("at")?),
                text: r.try_get("text")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(incident)
}

pub async fn load_incident(conn: &mut PgConnection, id: Uuid) -> Result<Option<Incident>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&mut *conn).await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(incident_from_row(conn, &row).await?)),
    }
}

pub async fn load_audience(conn: &mut PgConnection, id: Uuid) -> Result<Audience> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM incident_audience WHERE incident_id = $1 ORDER BY key COLLATE \"C\"")
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    Ok(Audience(keys))
}
