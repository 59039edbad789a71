//! Group commit for raises. Every statement sent to SQLite is a round trip to sqlx's
//! worker thread (two context switches); a single raise needs about a dozen, which caps an
//! embedded hub at roughly a thousand raises a second on two cores. Raises that arrive
//! together are therefore written by one task in one transaction, with each kind of row
//! in one multi-row statement for the whole batch: about a dozen round trips per batch,
//! whatever its size.
//!
//! The outcome of every raise is exactly what running them one by one, in arrival order,
//! would give (dedup and Idempotency-Key hits included, within the batch too). If the
//! batch fails, each raise is retried on its own, so one bad raise cannot fail others.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::escalation::with_ref;
use super::events::append_timed;
use super::rows::{load_audience, load_incident};
use crate::directory::Channel;
use crate::domain::event::{NewEvent, to_millis};
use crate::domain::incident::Incident;
use crate::domain::reference;
use crate::domain::visibility::Audience;
use crate::store::{RaiseOutcome, RaiseRecord, Result};

type Tx = Transaction<'static, Sqlite>;

/// Largest batch: bounds the transaction's size and the wait of the first raise in it.
const MAX_BATCH: usize = 256;
/// Rows per multi-row INSERT (SQLite allows 32,766 bound values per statement).
const CHUNK: usize = 200;

pub type Job = (RaiseRecord, oneshot::Sender<Result<RaiseOutcome>>);

/// Starts the task that writes raises; it ends when the store (the sender) is dropped.
pub fn start(writer: SqlitePool) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let records: Vec<RaiseRecord> = jobs.iter().map(|(r, _)| r.clone()).collect();
            match write_batch(&writer, records).await {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in jobs.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    if jobs.len() > 1 {
                        tracing::warn!(error = %e, raises = jobs.len(), "batched raise failed; writing one by one");
                    }
                    for (record, reply) in jobs {
                        let _ = reply.send(write_one(&writer, record).await);
                    }
                }
            }
        }
    });
    tx
}

async fn write_one(writer: &SqlitePool, record: RaiseRecord) -> Result<RaiseOutcome> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let outcome = batch(&mut tx, vec![record]).await?.pop().ok_or_else(|| anyhow::anyhow!("raise gave no outcome"))?;
    tx.commit().await?;
    Ok(outcome)
}

async fn write_batch(writer: &SqlitePool, records: Vec<RaiseRecord>) -> Result<Vec<RaiseOutcome>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let outcomes = batch(&mut tx, records).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// What happens to each raise of the batch, decided before anything is written.
enum Fate {
    Create,
    /// The same as an earlier raise of this batch (index), by dedup key or Idempotency-Key.
    SameAs(usize, bool),
    Done(Box<RaiseOutcome>),
}

async fn batch(tx: &mut Tx, mut records: Vec<RaiseRecord>) -> Result<Vec<RaiseOutcome>> {
    // Idempotency keys and dedup keys already in the store, in one query each.
    let mut stored_keys: HashMap<(String, String), (String, Uuid)> = HashMap::new();
    let keyed: Vec<&(String, String, String)> = records.iter().filter_map(|r| r.idempotency.as_ref()).collect();
    for chunk in keyed.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT principal, key, fingerprint, incident_id FROM idempotency_keys WHERE (principal, key) IN (",
        );
        q.push_values(chunk, |mut b, (principal, key, _)| {
            b.push_bind(principal.as_str()).push_bind(key.as_str());
        });
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            let id = Uuid::parse_str(row.try_get::<&str, _>("incident_id")?)?;
            stored_keys.insert((row.try_get("principal")?, row.try_get("key")?), (row.try_get("fingerprint")?, id));
        }
    }
    let mut stored_dedup: HashMap<(String, String), Uuid> = HashMap::new();
    let deduped: Vec<(&str, &str)> = records
        .iter()
        .filter_map(|r| r.incident.dedup_key.as_deref().map(|k| (r.incident.originator.party.as_str(), k)))
        .collect();
    for chunk in deduped.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, originator_party, dedup_key FROM incidents WHERE state IN ('open', 'acknowledged') AND (originator_party, dedup_key) IN (",
        );
        q.push_values(chunk, |mut b, (party, key)| {
            b.push_bind(*party).push_bind(*key);
        });
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            let id = Uuid::parse_str(row.try_get::<&str, _>("id")?)?;
            stored_dedup.insert((row.try_get("originator_party")?, row.try_get("dedup_key")?), id);
        }
    }

    // Decide each raise's fate in arrival order, as if they ran one by one.
    let mut fates = Vec::with_capacity(records.len());
    let mut batch_keys: HashMap<(String, String), (String, usize)> = HashMap::new();
    let mut batch_dedup: HashMap<(String, String), usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some((principal, key, fingerprint)) = &r.idempotency {
            let k = (principal.clone(), key.clone());
            if let Some((stored, id)) = stored_keys.get(&k) {
                fates.push(if stored != fingerprint {
                    Fate::Done(Box::new(RaiseOutcome::IdempotencyMismatch))
                } else {
                    let incident = load_incident(tx, *id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("idempotency key points nowhere"))?;
                    let audience = load_audience(tx, *id).await?;
                    Fate::Done(Box::new(RaiseOutcome::IdempotentReplay { incident, audience }))
                });
                continue;
            }
            if let Some((earlier_fingerprint, j)) = batch_keys.get(&k) {
                fates.push(if earlier_fingerprint != fingerprint {
                    Fate::Done(Box::new(RaiseOutcome::IdempotencyMismatch))
                } else {
                    Fate::SameAs(*j, true)
                });
                continue;
            }
        }
        if let Some(dedup) = &r.incident.dedup_key {
            let k = (r.incident.originator.party.clone(), dedup.clone());
            if let Some(id) = stored_dedup.get(&k) {
                let incident = load_incident(tx, *id).await?.ok_or_else(|| anyhow::anyhow!("dedup row vanished"))?;
                let audience = load_audience(tx, *id).await?;
                fates.push(Fate::Done(Box::new(RaiseOutcome::DedupHit { incident, audience })));
                continue;
            }
            if let Some(j) = batch_dedup.get(&k) {
                fates.push(Fate::SameAs(*j, false));
                continue;
            }
            batch_dedup.insert(k, i);
        }
        if let Some((principal, key, fingerprint)) = &r.idempotency {
            batch_keys.insert((principal.clone(), key.clone()), (fingerprint.clone(), i));
        }
        fates.push(Fate::Create);
    }

    // Refs unique among active incidents and within the batch.
    let created: Vec<usize> = (0..records.len()).filter(|i| matches!(fates[*i], Fate::Create)).collect();
    let mut pending: Vec<usize> = created.clone();
    let mut attempt = 0;
    while !pending.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT ref FROM incidents WHERE state IN ('open', 'acknowledged') AND ref IN (",
        );
        q.push_values(&pending, |mut b, i| {
            b.push_bind(records[*i].incident.reference.clone());
        });
        q.push(")");
        let taken: Vec<String> =
            q.build().fetch_all(&mut **tx).await?.iter().filter_map(|r| r.try_get("ref").ok()).collect();
        let mut seen: Vec<String> =
            created.iter().filter(|i| !pending.contains(i)).map(|i| records[*i].incident.reference.clone()).collect();
        let mut retry = Vec::new();
        for i in pending {
            let r = &records[i].incident.reference;
            if taken.contains(r) || seen.contains(r) {
                retry.push(i);
            } else {
                seen.push(r.clone());
            }
        }
        attempt += 1;
        for i in &retry {
            records[*i].incident.reference = reference::generate(if attempt < 8 { 4 } else { 6 });
        }
        pending = retry;
    }

    let last = write_created(tx, &mut records, &created).await?;

    let mut outcomes: Vec<Option<RaiseOutcome>> = Vec::with_capacity(records.len());
    for (i, fate) in fates.into_iter().enumerate() {
        outcomes.push(Some(match fate {
            Fate::Done(outcome) => *outcome,
            Fate::Create => RaiseOutcome::Created { incident: records[i].incident.clone(), seq: 0 },
            Fate::SameAs(j, replay) => {
                let (incident, audience) = (records[j].incident.clone(), records[j].audience.clone());
                if replay {
                    RaiseOutcome::IdempotentReplay { incident, audience }
                } else {
                    RaiseOutcome::DedupHit { incident, audience }
                }
            }
        }));
    }
    // Each created raise announces the batch's last seq on the bus: nothing before it is
    // missing, and readers fetch everything after what they have.
    for i in &created {
        if let Some(Some(RaiseOutcome::Created { seq, .. })) = outcomes.get_mut(*i) {
            *seq = last;
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// Writes the created incidents: events (each raise's `incident.raised`, then its step-0
/// events), incident rows, parties, audience, Idempotency-Keys, pages and timers.
async fn write_created(tx: &mut Tx, records: &mut [RaiseRecord], created: &[usize]) -> Result<i64> {
    if created.is_empty() {
        return Ok(0);
    }
    let mut events: Vec<(NewEvent, i64)> = Vec::new();
    let mut raised_index = Vec::with_capacity(created.len());
    for i in created {
        let r = &mut records[*i];
        for plan in &r.escalation {
            if let Some(ps) = r.incident.party_states.iter_mut().find(|p| p.party == plan.party) {
                ps.escalation = Some(plan.state.clone());
            }
        }
        raised_index.push(events.len());
        let at = to_millis(r.incident.raised_at);
        events.push((NewEvent::raised(&r.incident), at));
        let reference = r.incident.reference.clone();
        events.extend(r.escalation.iter().flat_map(|p| p.events.iter().map(|e| (with_ref(e, &reference), at))));
    }
    let last = append_timed(tx, &events).await?.ok_or_else(|| anyhow::anyhow!("batch appended nothing"))?;
    let first_seq = last - events.len() as i64 + 1;

    let mut rows: Vec<(&Incident, i64, String)> = Vec::with_capacity(created.len());
    for (i, k) in created.iter().zip(&raised_index) {
        let inc = &records[*i].incident;
        rows.push((inc, first_seq + *k as i64, serde_json::to_string(&inc.content())?));
    }
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO incidents (id, ref, originator_party, originator_officer, field, severity, severity_rank, tlp,
                status, state, dedup_key, content, raised_seq, raised_at, updated_at, closed_at) ",
        );
        q.push_values(chunk, |mut b, (inc, seq, content)| {
            let at = to_millis(inc.raised_at);
            b.push_bind(inc.id.to_string())
                .push_bind(inc.reference.clone())
                .push_bind(inc.originator.party.clone())
                .push_bind(inc.originator.officer.clone())
                .push_bind(inc.field.clone())
                .push_bind(inc.severity.as_str())
                .push_bind(inc.severity.rank())
                .push_bind(inc.tlp.as_str())
                .push_bind(inc.status.as_str())
                .push_bind(inc.state.as_str())
                .push_bind(inc.dedup_key.clone())
                .push_bind(content.clone())
                .push_bind(*seq)
                .push_bind(at)
                .push_bind(at)
                .push_bind(None::<i64>);
        });
        q.build().execute(&mut **tx).await?;
    }

    let parties: Vec<(String, usize, &crate::domain::incident::PartyState)> = created
        .iter()
        .flat_map(|i| {
            let inc = &records[*i].incident;
            inc.party_states.iter().enumerate().map(move |(pos, ps)| (inc.id.to_string(), pos, ps))
        })
        .collect();
    for chunk in parties.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO incident_parties (incident_id, party, position, esc_step, esc_loop, esc_next_at, esc_state) ",
        );
        q.push_values(chunk, |mut b, (id, pos, ps)| {
            let esc = ps.escalation.as_ref();
            b.push_bind(id.clone())
                .push_bind(ps.party.clone())
                .push_bind(*pos as i64)
                .push_bind(esc.map(|e| i64::from(e.step)))
                .push_bind(esc.map(|e| i64::from(e.loop_)))
                .push_bind(esc.and_then(|e| e.next_at).map(to_millis))
                .push_bind(esc.map(|e| e.state.clone()));
        });
        q.build().execute(&mut **tx).await?;
    }

    let mut keys: Vec<(String, String)> = Vec::new();
    for i in created {
        let r = &records[*i];
        let id = r.incident.id.to_string();
        let Audience(base) = &r.audience;
        keys.extend(base.iter().map(|k| (id.clone(), k.clone())));
        keys.extend(r.escalation.iter().flat_map(|p| p.audience_add.iter()).map(|k| (id.clone(), k.clone())));
    }
    for chunk in keys.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO incident_audience (incident_id, key) ");
        q.push_values(chunk, |mut b, (id, key)| {
            b.push_bind(id.clone()).push_bind(key.clone());
        });
        q.build().execute(&mut **tx).await?;
    }

    let idem: Vec<(&(String, String, String), String, i64)> = created
        .iter()
        .filter_map(|i| {
            let r = &records[*i];
            r.idempotency.as_ref().map(|k| (k, r.incident.id.to_string(), to_millis(r.incident.raised_at)))
        })
        .collect();
    for chunk in idem.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, incident_id, created_at) ",
        );
        q.push_values(chunk, |mut b, ((principal, key, fingerprint), id, at)| {
            b.push_bind(principal.clone())
                .push_bind(key.clone())
                .push_bind(fingerprint.clone())
                .push_bind(id.clone())
                .push_bind(*at);
        });
        q.build().execute(&mut **tx).await?;
    }

    // Pages and timers of every party's step 0.
    let mut pages = Vec::new();
    let mut timers = Vec::new();
    for i in created {
        let r = &records[*i];
        let id = r.incident.id.to_string();
        let at = to_millis(r.incident.raised_at);
        for plan in &r.escalation {
            for page in &plan.pages {
                pages.push((
                    id.clone(),
                    plan.party.clone(),
                    page.focal_point.clone(),
                    page.channel,
                    plan.step,
                    plan.loop_,
                    at,
                ));
            }
            if let Some((step, loop_, due)) = plan.next_timer {
                timers.push((id.clone(), plan.party.clone(), step, loop_, to_millis(due)));
            }
        }
    }
    for chunk in pages.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO outbox (incident_id, party, focal_point, channel, step, loop, state, next_attempt_at, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, (id, party, fp, channel, step, loop_, at)| {
            // Dashboard pages are delivered by their `page` event in this transaction.
            let state = if *channel == Channel::Dashboard { "delivered" } else { "pending" };
            b.push_bind(id.clone())
                .push_bind(party.clone())
                .push_bind(fp.clone())
                .push_bind(channel.as_str())
                .push_bind(i64::from(*step))
                .push_bind(i64::from(*loop_))
                .push_bind(state)
                .push_bind(*at)
                .push_bind(*at)
                .push_bind(*at);
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in timers.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO escalation_timers (incident_id, party, step, loop, due_at, state) ",
        );
        q.push_values(chunk, |mut b, (id, party, step, loop_, due)| {
            b.push_bind(id.clone())
                .push_bind(party.clone())
                .push_bind(i64::from(*step))
                .push_bind(i64::from(*loop_))
                .push_bind(*due)
                .push_bind("pending");
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(last)
}
