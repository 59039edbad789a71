//! Reading an incident back from its rows.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Conn, Row, Value, placeholders};
use crate::domain::event::from_millis;
use crate::domain::incident::{Content, EscalationState, Incident, Note, Originator, PartyState, State};
use crate::domain::visibility::Audience;
use crate::store::Result;

pub const INCIDENT_COLUMNS: &str =
    "id, ref, originator_party, originator_officer, state, content, raised_seq, raised_at, updated_at, closed_at";

/// Ids per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// The incident of a row of [`INCIDENT_COLUMNS`], without its parties' states and notes.
fn incident_base(row: &Row) -> Result<Incident> {
    let content: Content = serde_json::from_str(&row.text("content")?)?;
    let state = row.text("state")?;
    let state: State = state.parse().map_err(|_| anyhow::anyhow!("bad state {state:?} in store"))?;
    let mut incident = Incident::new(
        row.uuid("id")?,
        row.text("ref")?,
        Originator { party: row.text("originator_party")?, officer: row.text("originator_officer")? },
        content,
        from_millis(row.i64("raised_at")?),
    );
    incident.state = state;
    incident.updated_at = from_millis(row.i64("updated_at")?);
    incident.closed_at = row.opt_i64("closed_at")?.map(from_millis);
    Ok(incident)
}

const PARTY_COLUMNS: &str =
    "incident_id, party, acknowledged_by, acknowledged_at, via, esc_step, esc_loop, esc_next_at, esc_state";

fn party_state(r: &Row) -> Result<PartyState> {
    let by = r.opt_text("acknowledged_by")?;
    Ok(PartyState {
        party: r.text("party")?,
        acknowledged: by.is_some(),
        acknowledged_by: by,
        acknowledged_at: r.opt_i64("acknowledged_at")?.map(from_millis),
        via: r.opt_text("via")?,
        escalation: match r.opt_text("esc_state")? {
            None => None,
            Some(state) => Some(EscalationState {
                step: r.opt_i64("esc_step")?.unwrap_or(0) as u32,
                loop_: r.opt_i64("esc_loop")?.unwrap_or(0) as u32,
                next_at: r.opt_i64("esc_next_at")?.map(from_millis),
                state,
            }),
        },
    })
}

fn note(r: &Row) -> Result<Note> {
    Ok(Note { by: r.text("by_id")?, party: r.text("party")?, at: from_millis(r.i64("at")?), text: r.text("text")? })
}

/// Builds an incident from a row of [`INCIDENT_COLUMNS`] plus its parties and notes.
pub async fn incident_from_row(c: &mut dyn Conn, row: &Row) -> Result<Incident> {
    let mut incident = incident_base(row)?;
    let id: Value = incident.id.into();
    let sql = format!("SELECT {PARTY_COLUMNS} FROM incident_parties WHERE incident_id = $1 ORDER BY position");
    let parties = c.query(&sql, std::slice::from_ref(&id)).await?;
    incident.party_states = parties.iter().map(party_state).collect::<Result<_>>()?;
    let notes = c.query("SELECT by_id, party, at, text FROM notes WHERE incident_id = $1 ORDER BY id", &[id]).await?;
    incident.notes = notes.iter().map(note).collect::<Result<_>>()?;
    Ok(incident)
}

pub async fn load_incident(c: &mut dyn Conn, id: Uuid) -> Result<Option<Incident>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
    match c.query_opt(&sql, &[id.into()]).await? {
        None => Ok(None),
        Some(row) => Ok(Some(incident_from_row(c, &row).await?)),
    }
}

pub async fn load_audience(c: &mut dyn Conn, id: Uuid) -> Result<Audience> {
    let rows = c.query("SELECT key FROM incident_audience WHERE incident_id = $1", &[id.into()]).await?;
    let mut keys = rows.iter().map(|r| r.text("key")).collect::<Result<Vec<_>>>()?;
    keys.sort(); // byte order, the same on both backends
    Ok(Audience(keys))
}

/// An incident with its audience.
pub async fn load_with_audience(c: &mut dyn Conn, id: Uuid) -> Result<Option<(Incident, Audience)>> {
    let Some(incident) = load_incident(c, id).await? else {
        return Ok(None);
    };
    Ok(Some((incident, load_audience(c, id).await?)))
}

/// Several incidents with their audiences, in four queries per few hundred incidents.
pub async fn load_many(c: &mut dyn Conn, ids: &[Uuid]) -> Result<HashMap<Uuid, (Incident, Audience)>> {
    let mut out: HashMap<Uuid, (Incident, Audience)> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let list = placeholders(1, chunk.len());
        let params: Vec<Value> = chunk.iter().map(|id| Value::from(*id)).collect();
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id IN ({list})");
        for row in c.query(&sql, &params).await? {
            let mut incident = incident_base(&row)?;
            // `Incident::new` fills pending states from the content; the rows replace them.
            incident.party_states.clear();
            out.insert(incident.id, (incident, Audience::default()));
        }
        let sql = format!(
            "SELECT {PARTY_COLUMNS} FROM incident_parties WHERE incident_id IN ({list}) ORDER BY incident_id, position"
        );
        for row in c.query(&sql, &params).await? {
            if let Some((incident, _)) = out.get_mut(&row.uuid("incident_id")?) {
                incident.party_states.push(party_state(&row)?);
            }
        }
        let sql =
            format!("SELECT incident_id, by_id, party, at, text FROM notes WHERE incident_id IN ({list}) ORDER BY id");
        for row in c.query(&sql, &params).await? {
            if let Some((incident, _)) = out.get_mut(&row.uuid("incident_id")?) {
                incident.notes.push(note(&row)?);
            }
        }
        let sql = format!("SELECT incident_id, key FROM incident_audience WHERE incident_id IN ({list})");
        for row in c.query(&sql, &params).await? {
            if let Some((_, audience)) = out.get_mut(&row.uuid("incident_id")?) {
                audience.0.push(row.text("key")?);
            }
        }
    }
    for (_, audience) in out.values_mut() {
        audience.0.sort();
    }
    Ok(out)
}
