//! Incident state: raise, acknowledge, note, close (each inside the caller's write
//! transaction), and the list query.

use async_trait::async_trait;
use uuid::Uuid;

use super::escalation::apply_steps;
use super::events::append_one;
use super::rows::{INCIDENT_COLUMNS, incident_from_row, load_incident, load_with_audience};
use super::{Conn, Value, placeholders};
use crate::domain::admission::{self, Admission, Candidate, Existing};
use crate::domain::event::{EventType, NewEvent, to_millis};
use crate::domain::incident::State;
use crate::store::*;

/// Rows per multi-row INSERT.
const CHUNK: usize = 100;

/// Inserts `values` (rows of `width`) into `head` (`INSERT INTO t (…) VALUES`), in
/// multi-row statements, with `tail` (e.g. a conflict clause) after each; deferred
/// ([`Conn::defer`]): these are new rows nobody counts.
pub async fn insert_rows(c: &mut dyn Conn, head: &str, width: usize, values: &[Value], tail: &str) -> Result<()> {
    for chunk in values.chunks(width * CHUNK) {
        let sql = format!("{head} {}{tail}", super::tuples(1, chunk.len() / width, width));
        c.defer(&sql, chunk).await?;
    }
    Ok(())
}

/// The store's answers to the admission rule, inside the raise's transaction.
struct Lookups<'a, 'c>(&'a mut (dyn Conn + 'c));

#[async_trait]
impl Existing for Lookups<'_, '_> {
    async fn idempotency_key(&mut self, principal: &str, key: &str) -> Result<Option<(String, Uuid)>> {
        let row = self
            .0
            .query_opt(
                "SELECT fingerprint, incident_id FROM idempotency_keys WHERE principal = $1 AND key = $2",
                &[principal.into(), key.into()],
            )
            .await?;
        row.map(|r| Ok((r.text("fingerprint")?, r.uuid("incident_id")?))).transpose()
    }

    async fn active_dedup(&mut self, party: &str, raiser: &str, dedup_key: &str) -> Result<Option<Uuid>> {
        let row = self
            .0
            .query_opt(
                "SELECT id FROM incidents WHERE originator_party = $1 AND dedup_key = $2
                   AND dedup_scope IN ($3, $4) AND state IN ('open', 'acknowledged')
                 ORDER BY dedup_scope LIMIT 1",
                &[party.into(), dedup_key.into(), admission::PARTY_SCOPE.into(), raiser.into()],
            )
            .await?;
        row.map(|r| r.uuid("id")).transpose()
    }

    async fn ref_in_use(&mut self, reference: &str) -> Result<bool> {
        let row = self
            .0
            .query_opt(
                "SELECT 1 AS taken FROM incidents WHERE ref = $1 AND state IN ('open', 'acknowledged')",
                &[reference.into()],
            )
            .await?;
        Ok(row.is_some())
    }
}

async fn existing(c: &mut dyn Conn, id: Uuid, what: &str) -> Result<(Incident, Audience)> {
    load_with_audience(c, id).await?.ok_or_else(|| anyhow::anyhow!("{what} points to a missing incident"))
}

pub async fn raise(c: &mut dyn Conn, raise: RaiseRecord) -> Result<RaiseOutcome> {
    let RaiseRecord { mut incident, audience, idempotency, escalation, dedup_scope } = raise;
    let candidate = Candidate {
        idempotency: idempotency.as_ref(),
        party: &incident.originator.party,
        raiser: &incident.originator.officer,
        dedup_key: incident.dedup_key.as_deref(),
    };
    let proposed = incident.reference.clone();
    match admission::admit(candidate, &proposed, &mut Lookups(c)).await? {
        Admission::Replay(id) => {
            let (incident, audience) = existing(c, id, "an Idempotency-Key").await?;
            return Ok(RaiseOutcome::IdempotentReplay { incident, audience });
        }
        Admission::Mismatch => return Ok(RaiseOutcome::IdempotencyMismatch),
        Admission::Duplicate(id) => {
            let (incident, audience) = existing(c, id, "a dedup key").await?;
            return Ok(RaiseOutcome::DedupHit { incident, audience });
        }
        Admission::Create { reference } => incident.reference = reference,
    }

    for plan in &escalation {
        if let Some(ps) = incident.party_states.iter_mut().find(|p| p.party == plan.party) {
            ps.escalation = Some(plan.state.clone());
        }
    }
    let at = to_millis(incident.raised_at);
    let raised_seq = append_one(c, NewEvent::raised(&incident), at).await?;
    let id = incident.id.to_string();
    let content = serde_json::to_string(&incident.content())?;
    c.defer(
        "INSERT INTO incidents (id, ref, originator_party, originator_officer, field, severity, severity_rank, tlp,
            status, state, dedup_key, content, raised_seq, raised_at, updated_at, closed_at, dedup_scope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        &[
            (&id).into(),
            (&incident.reference).into(),
            (&incident.originator.party).into(),
            (&incident.originator.officer).into(),
            (&incident.field).into(),
            incident.severity.as_str().into(),
            incident.severity.rank().into(),
            incident.tlp.as_str().into(),
            incident.status.as_str().into(),
            incident.state.as_str().into(),
            (&incident.dedup_key).into(),
            content.into(),
            raised_seq.into(),
            at.into(),
            at.into(),
            Value::Int(None),
            dedup_scope.into(),
        ],
    )
    .await?;

    let mut parties = Vec::new();
    for (position, ps) in incident.party_states.iter().enumerate() {
        let esc = ps.escalation.as_ref();
        parties.extend([
            Value::from(&id),
            (&ps.party).into(),
            (position as i64).into(),
            esc.map(|e| i64::from(e.step)).into(),
            esc.map(|e| i64::from(e.loop_)).into(),
            esc.and_then(|e| e.next_at).map(to_millis).into(),
            esc.map(|e| e.state.clone()).into(),
        ]);
    }
    insert_rows(
        c,
        "INSERT INTO incident_parties (incident_id, party, position, esc_step, esc_loop, esc_next_at, esc_state) VALUES",
        7,
        &parties,
        "",
    )
    .await?;
    let keys: Vec<Value> = audience.keys().iter().flat_map(|k| [Value::from(&id), k.into()]).collect();
    insert_rows(c, "INSERT INTO incident_audience (incident_id, key) VALUES", 2, &keys, " ON CONFLICT DO NOTHING")
        .await?;
    if let Some((principal, key, fingerprint)) = &idempotency {
        c.defer(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, incident_id, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[principal.into(), key.into(), fingerprint.into(), (&id).into(), at.into()],
        )
        .await?;
    }
    // Step 0 of every party: its events (with the final ref), pages and next timers. The
    // parties' escalation state went in with their rows above.
    let items: Vec<(Uuid, String, &crate::domain::plan::StepPlan)> =
        escalation.iter().map(|p| (incident.id, incident.reference.clone(), p)).collect();
    let last = apply_steps(c, &items, at, false).await?.unwrap_or(raised_seq);
    Ok(RaiseOutcome::Created { incident, seq: last })
}

pub async fn acknowledge(c: &mut dyn Conn, ack: AckRecord) -> Result<AckOutcome> {
    let Some(incident) = load_incident(c, ack.incident).await? else {
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
    c.execute(
        "UPDATE incident_parties SET acknowledged_by = $1, acknowledged_at = $2, via = $3,
            esc_state = CASE WHEN esc_state IS NULL THEN NULL ELSE 'stopped' END, esc_next_at = NULL
         WHERE incident_id = $4 AND party = $5",
        &[(&ack.by).into(), at.into(), (&ack.via).into(), (&id).into(), (&ack.party).into()],
    )
    .await?;
    // The party's escalation stops at once: no pending step of it may fire.
    c.execute(
        "UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = $1 AND party = $2 AND state = 'pending'",
        &[(&id).into(), (&ack.party).into()],
    )
    .await?;
    // Pages for the party that have not gone out yet are moot now: cancel them. A page
    // in flight keeps its lease; the dispatcher records it sent if it was.
    c.execute(
        "UPDATE outbox SET state = 'cancelled', last_error = 'party acknowledged', updated_at = $1
         WHERE incident_id = $2 AND party = $3 AND state = 'pending'",
        &[at.into(), (&id).into(), (&ack.party).into()],
    )
    .await?;
    let pending = c
        .query_one(
            "SELECT COUNT(*) AS n FROM incident_parties WHERE incident_id = $1 AND acknowledged_by IS NULL",
            &[(&id).into()],
        )
        .await?
        .i64("n")?;
    let new_state = if pending == 0 { State::Acknowledged } else { State::Open };
    c.execute(
        "UPDATE incidents SET state = $1, updated_at = $2 WHERE id = $3",
        &[new_state.as_str().into(), at.into(), (&id).into()],
    )
    .await?;
    let incident = load_incident(c, ack.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    let seq = append_one(c, NewEvent::acknowledged(&incident, &ack.party, &ack.by, &ack.via), at).await?;
    Ok(AckOutcome::Acknowledged { incident, seq })
}

pub async fn add_note(c: &mut dyn Conn, note: NoteRecord) -> Result<ChangeOutcome> {
    let Some(incident) = load_incident(c, note.incident).await? else {
        return Ok(ChangeOutcome::NotFound);
    };
    if !incident.state.is_active() {
        return Ok(ChangeOutcome::Closed { incident });
    }
    let id = note.incident.to_string();
    let at = to_millis(note.at);
    c.execute(
        "INSERT INTO notes (incident_id, by_id, party, at, text) VALUES ($1, $2, $3, $4, $5)",
        &[(&id).into(), (&note.by).into(), (&note.party).into(), at.into(), (&note.text).into()],
    )
    .await?;
    c.execute("UPDATE incidents SET updated_at = $1 WHERE id = $2", &[at.into(), (&id).into()]).await?;
    let seq = append_one(c, NewEvent::note(note.incident, &note.party, &note.by, &note.text), at).await?;
    let incident = load_incident(c, note.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    Ok(ChangeOutcome::Changed { incident, seq })
}

pub async fn close(c: &mut dyn Conn, close: CloseRecord) -> Result<ChangeOutcome> {
    let Some(incident) = load_incident(c, close.incident).await? else {
        return Ok(ChangeOutcome::NotFound);
    };
    if !incident.state.is_active() {
        return Ok(ChangeOutcome::Closed { incident });
    }
    let id = close.incident.to_string();
    let at = to_millis(close.at);
    c.execute(
        "UPDATE incidents SET state = $1, updated_at = $2, closed_at = $3 WHERE id = $4",
        &[close.state.as_str().into(), at.into(), at.into(), (&id).into()],
    )
    .await?;
    // Closing stops every party's escalation.
    c.execute(
        "UPDATE escalation_timers SET state = 'cancelled' WHERE incident_id = $1 AND state = 'pending'",
        &[(&id).into()],
    )
    .await?;
    c.execute(
        "UPDATE incident_parties SET esc_state = 'stopped', esc_next_at = NULL
         WHERE incident_id = $1 AND esc_state = 'active'",
        &[(&id).into()],
    )
    .await?;
    // Nothing more goes out about a closed incident: cancel its pages not yet sent.
    c.execute(
        "UPDATE outbox SET state = 'cancelled', last_error = 'incident closed', updated_at = $1
         WHERE incident_id = $2 AND state = 'pending'",
        &[at.into(), (&id).into()],
    )
    .await?;
    let incident = load_incident(c, close.incident).await?.ok_or_else(|| anyhow::anyhow!("incident vanished"))?;
    let kind = if close.state == State::Resolved { EventType::Resolved } else { EventType::Cancelled };
    let event = NewEvent::closed(kind, &incident, &close.by, close.reason.as_deref());
    let seq = append_one(c, event, at).await?;
    Ok(ChangeOutcome::Changed { incident, seq })
}

/// The active (open or acknowledged) incident holding `reference`.
pub async fn active_by_ref(c: &mut dyn Conn, reference: &str) -> Result<Option<Uuid>> {
    let row = c
        .query_opt("SELECT id FROM incidents WHERE ref = $1 AND state IN ('open', 'acknowledged')", &[reference.into()])
        .await?;
    row.map(|r| r.uuid("id")).transpose()
}

/// Visible incidents matching the query, newest raise first, with the visible total.
pub async fn list(c: &mut dyn Conn, query: &IncidentQuery, viewer: &Viewer) -> Result<IncidentPage> {
    if viewer.keys.is_empty() {
        return Ok(IncidentPage { incidents: Vec::new(), total: 0, next_cursor: None });
    }
    // Conditions and their parameters, in order; built from fixed fragments only.
    let mut params: Vec<Value> = viewer.keys.iter().map(Value::from).collect();
    let mut conditions = vec![format!(
        "EXISTS (SELECT 1 FROM incident_audience a WHERE a.incident_id = i.id AND a.key IN ({}))",
        placeholders(1, viewer.keys.len())
    )];
    if !query.states.is_empty() {
        conditions.push(format!("i.state IN ({})", placeholders(params.len() + 1, query.states.len())));
        params.extend(query.states.iter().map(|s| Value::from(s.as_str())));
    }
    if let Some(party) = &query.party {
        let n = params.len() + 1;
        conditions.push(format!(
            "(i.originator_party = ${n} OR EXISTS (SELECT 1 FROM incident_parties p WHERE p.incident_id = i.id AND p.party = ${n}))"
        ));
        params.push(party.into());
    }
    for (column, value) in [("i.field", &query.field), ("i.severity", &query.severity), ("i.tlp", &query.tlp)] {
        if let Some(v) = value {
            conditions.push(format!("{column} = ${}", params.len() + 1));
            params.push(v.into());
        }
    }
    let filter = conditions.join(" AND ");
    let total =
        c.query_one(&format!("SELECT COUNT(*) AS n FROM incidents i WHERE {filter}"), &params).await?.i64("n")?;

    let limit = i64::from(query.limit.max(1));
    let n = params.len();
    let page_sql = format!(
        "SELECT {} FROM incidents i WHERE {filter} AND i.raised_seq < ${} ORDER BY i.raised_seq DESC LIMIT ${}",
        INCIDENT_COLUMNS.split(", ").map(|c| format!("i.{c}")).collect::<Vec<_>>().join(", "),
        n + 1,
        n + 2
    );
    params.push(query.before_seq.unwrap_or(i64::MAX).into());
    params.push((limit + 1).into());
    let rows = c.query(&page_sql, &params).await?;
    let more = rows.len() as i64 > limit;
    let mut incidents = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in rows.iter().take(limit as usize) {
        last_seq = Some(row.i64("raised_seq")?);
        incidents.push(incident_from_row(c, row).await?);
    }
    Ok(IncidentPage { incidents, total: total as u64, next_cursor: if more { last_seq } else { None } })
}
