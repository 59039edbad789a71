//! Reading an incident back from its rows.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use crate::domain::event::from_millis;
use crate::domain::incident::{Content, EscalationState, Incident, Note, Originator, PartyState, State};
use crate::domain::visibility::Audience;
use crate::store::Result;

pub const INCIDENT_COLUMNS: &str =
    "id, ref, originator_party, originator_officer, state, content, raised_seq, raised_at, updated_at, closed_at";

/// The incident of a row of [`INCIDENT_COLUMNS`], without its parties' states and notes.
fn incident_base(row: &sqlx::sqlite::SqliteRow) -> Result<Incident> {
    let id = Uuid::parse_str(row.try_get::<&str, _>("id")?)?;
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
    Ok(incident)
}

const PARTY_COLUMNS: &str =
    "incident_id, party, acknowledged_by, acknowledged_at, via, esc_step, esc_loop, esc_next_at, esc_state";

fn party_state(r: &sqlx::sqlite::SqliteRow) -> Result<PartyState> {
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
}

fn note(r: &sqlx::sqlite::SqliteRow) -> Result<Note> {
    Ok(Note {
        by: r.try_get("by_id")?,
        party: r.try_get("party")?,
        at: from_millis(r.try_get("at")?),
        text: r.try_get("text")?,
    })
}

/// Builds an incident from a row of [`INCIDENT_COLUMNS`] plus its parties and notes.
pub async fn incident_from_row(conn: &mut SqliteConnection, row: &sqlx::sqlite::SqliteRow) -> Result<Incident> {
    let mut incident = incident_base(row)?;
    let id = incident.id.to_string();
    let sql = format!("SELECT {PARTY_COLUMNS} FROM incident_parties WHERE incident_id = ? ORDER BY position");
    let parties = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&id).fetch_all(&mut *conn).await?;
    incident.party_states = parties.iter().map(party_state).collect::<Result<_>>()?;
    let notes = sqlx::query("SELECT by_id, party, at, text FROM notes WHERE incident_id = ? ORDER BY id")
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
    incident.notes = notes.iter().map(note).collect::<Result<_>>()?;
    Ok(incident)
}

/// Several incidents with their audiences, in four queries whatever their number.
pub async fn load_many(conn: &mut SqliteConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, (Incident, Audience)>> {
    let mut out: HashMap<Uuid, (Incident, Audience)> = HashMap::new();
    for chunk in ids.chunks(500) {
        let list = vec!["?"; chunk.len()].join(",");
        let texts: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let bind_all = |sql: String| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in &texts {
                q = q.bind(t.clone());
            }
            q
        };
        for row in bind_all(format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id IN ({list})"))
            .fetch_all(&mut *conn)
            .await?
        {
            let mut incident = incident_base(&row)?;
            // `Incident::new` fills pending states from the content; the rows replace them.
            incident.party_states.clear();
            out.insert(incident.id, (incident, Audience::default()));
        }
        let parties = bind_all(format!(
            "SELECT {PARTY_COLUMNS} FROM incident_parties WHERE incident_id IN ({list}) ORDER BY incident_id, position"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in &parties {
            let id = Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?;
            if let Some((incident, _)) = out.get_mut(&id) {
                incident.party_states.push(party_state(row)?);
            }
        }
        let notes = bind_all(format!(
            "SELECT incident_id, by_id, party, at, text FROM notes WHERE incident_id IN ({list}) ORDER BY id"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in &notes {
            let id = Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?;
            if let Some((incident, _)) = out.get_mut(&id) {
                incident.notes.push(note(row)?);
            }
        }
        let keys = bind_all(format!(
            "SELECT incident_id, key FROM incident_audience WHERE incident_id IN ({list}) ORDER BY incident_id, key"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in &keys {
            let id = Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?;
            if let Some((_, audience)) = out.get_mut(&id) {
                audience.0.push(row.try_get("key")?);
            }
        }
    }
    Ok(out)
}

pub async fn load_incident(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Incident>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&mut *conn).await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(incident_from_row(conn, &row).await?)),
    }
}

pub async fn load_audience(conn: &mut SqliteConnection, id: Uuid) -> Result<Audience> {
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM incident_audience WHERE incident_id = ? ORDER BY key")
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await?;
    Ok(Audience(keys))
}
