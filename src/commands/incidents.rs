//! Raise, acknowledge, note, resolve, cancel.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{CommandError, CommandResult, Hub};
use crate::domain::admission;
use crate::domain::incident::{Incident, Originator, State};
use crate::domain::plan::plan_raise;
use crate::domain::principal::Principal;
use crate::domain::raise::RaiseRequest;
use crate::domain::reference;
use crate::domain::visibility::Audience;
use crate::store::{AckOutcome, AckRecord, ChangeOutcome, CloseRecord, NoteRecord, RaiseOutcome, RaiseRecord};
use crate::telemetry::names;

pub const MAX_NOTE: usize = 4_000;
pub const MAX_REASON: usize = 1_000;
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The answer to a raise: the incident and whether it is new.
#[derive(Debug, Clone)]
pub struct Raised {
    pub incident: Incident,
    pub created: bool,
    /// True when the answer comes from an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct AckResult {
    pub incident: Incident,
    /// False when the party had already acknowledged: nothing was recorded.
    pub newly_acknowledged: bool,
}

impl Hub {
    /// Raises an incident for the principal's party. `body` is the raw request body, used
    /// to tell a true retry of an Idempotency-Key from a different request reusing it.
    pub async fn raise(
        &self,
        principal: &Principal,
        request: &RaiseRequest,
        idempotency_key: Option<&str>,
        body: &[u8],
    ) -> CommandResult<Raised> {
        if !principal.may_raise() {
            return Err(CommandError::Forbidden("only duty officers and bots raise incidents".into()));
        }
        let idempotency = match idempotency_key {
            None => None,
            Some(key) => {
                let key = key.trim();
                if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(CommandError::invalid(
                        "Idempotency-Key",
                        format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                    ));
                }
                Some((principal.id.clone(), key.to_string(), hex::encode(Sha256::digest(body))))
            }
        };
        let content = request.validate(&self.directory).map_err(|e| CommandError::invalid(e.field, e.message))?;
        let originator = Originator { party: principal.party.clone(), officer: principal.id.clone() };
        let audience = Audience::of(content.tlp, &originator, &content.parties, &content.recipients);
        // Time-ordered ids (UUIDv7, 74 random bits): each raise's rows land at the end of
        // every index keyed by incident, instead of at random pages.
        let incident = Incident::new(
            crate::domain::incident::new_id(),
            reference::generate(4),
            originator,
            content,
            self.clock.now(),
        );

        let escalation = plan_raise(&self.directory, &incident, &audience);
        let dedup_scope = match incident.dedup_key {
            Some(_) => admission::dedup_scope(&self.directory, &incident.originator, &audience),
            None => admission::PARTY_SCOPE.to_string(),
        };
        let record = RaiseRecord { incident, audience, idempotency, escalation, dedup_scope };
        let outcome = self.store.raise(record).await?;
        match outcome {
            RaiseOutcome::Created { incident, .. } => {
                metrics::counter!(names::INCIDENTS_RAISED).increment(1);
                tracing::info!(incident = %incident.id, r#ref = %incident.reference, party = %incident.originator.party,
                    severity = %incident.severity, tlp = %incident.tlp, "incident raised");
                Ok(Raised { incident, created: true, replayed: false })
            }
            RaiseOutcome::DedupHit { incident, audience } => {
                if !Hub::sees(principal, &audience) {
                    // Dedup scopes keep hidden incidents out of reach (the key of one the
                    // raiser may not see is in its raiser's own scope); this is only
                    // reached if the directory changed since. Say nothing about it.
                    tracing::warn!(incident = %incident.id, by = %principal.id, "dedup hit on an incident the raiser may not see");
                    return Err(CommandError::NotFound);
                }
                Ok(Raised { incident, created: false, replayed: false })
            }
            RaiseOutcome::IdempotentReplay { incident, audience } => {
                if !Hub::sees(principal, &audience) {
                    return Err(CommandError::NotFound);
                }
                Ok(Raised { incident, created: false, replayed: true })
            }
            RaiseOutcome::IdempotencyMismatch => Err(CommandError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for a different request".into(),
            }),
        }
    }

    /// Loads an incident the principal may see, or NotFound.
    pub(super) async fn visible(&self, principal: &Principal, id: Uuid) -> CommandResult<(Incident, Audience)> {
        match self.store.incident(id).await? {
            Some((incident, audience)) if Hub::sees(principal, &audience) => Ok((incident, audience)),
            _ => Err(CommandError::NotFound),
        }
    }

    /// Acknowledges for the principal's party. Idempotent: a second ack changes nothing
    /// and says so.
    pub async fn acknowledge(&self, principal: &Principal, id: Uuid, via: &str) -> CommandResult<AckResult> {
        let (incident, _) = self.visible(principal, id).await?;
        if !principal.may_acknowledge() {
            return Err(CommandError::Forbidden("only focal points acknowledge for their party".into()));
        }
        if incident.party_state(&principal.party).is_none() {
            return Err(CommandError::Forbidden(format!("{} is not addressed by this incident", principal.party)));
        }
        let ack = AckRecord {
            incident: id,
            party: principal.party.clone(),
            by: principal.id.clone(),
            via: via.into(),
            at: self.clock.now(),
        };
        match self.store.acknowledge(ack).await? {
            AckOutcome::Acknowledged { incident, .. } => {
                metrics::counter!(names::ACKS).increment(1);
                tracing::info!(incident = %id, party = %principal.party, by = %principal.id, via, "acknowledged");
                Ok(AckResult { incident, newly_acknowledged: true })
            }
            AckOutcome::AlreadyAcknowledged { incident } => Ok(AckResult { incident, newly_acknowledged: false }),
            AckOutcome::Closed { incident } => Err(CommandError::Conflict {
                code: "incident_closed",
                message: format!("incident {} is {}", incident.reference, incident.state),
            }),
            AckOutcome::NotFound => Err(CommandError::NotFound),
        }
    }

    pub async fn add_note(&self, principal: &Principal, id: Uuid, text: &str) -> CommandResult<Incident> {
        self.visible(principal, id).await?;
        let text = text.trim();
        if text.is_empty() {
            return Err(CommandError::invalid("text", "`text` must not be empty"));
        }
        if text.chars().count() > MAX_NOTE {
            return Err(CommandError::invalid("text", format!("`text` is longer than {MAX_NOTE} characters")));
        }
        if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(CommandError::invalid("text", "`text` contains control characters"));
        }
        let note = NoteRecord {
            incident: id,
            by: principal.id.clone(),
            party: principal.party.clone(),
            text: text.into(),
            at: self.clock.now(),
        };
        self.changed(self.store.add_note(note).await?)
    }

    /// Resolves (`State::Resolved`) or cancels (`State::Cancelled`) an active incident.
    /// Only officers of the originator party may ([`Principal::may_close`]).
    pub async fn close(
        &self,
        principal: &Principal,
        id: Uuid,
        state: State,
        reason: Option<&str>,
    ) -> CommandResult<Incident> {
        let (incident, _) = self.visible(principal, id).await?;
        if !principal.may_close(&incident.originator.party) {
            return Err(CommandError::Forbidden("only officers of the originating party resolve or cancel".into()));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = reason
            && (r.chars().count() > MAX_REASON || r.chars().any(|c| c.is_control() && c != '\n'))
        {
            return Err(CommandError::invalid(
                "reason",
                format!("`reason` must be at most {MAX_REASON} characters of text"),
            ));
        }
        let close = CloseRecord {
            incident: id,
            state,
            by: principal.id.clone(),
            reason: reason.map(Into::into),
            at: self.clock.now(),
        };
        let incident = self.changed(self.store.close(close).await?)?;
        tracing::info!(incident = %id, state = %state, by = %principal.id, "incident closed");
        Ok(incident)
    }

    fn changed(&self, outcome: ChangeOutcome) -> CommandResult<Incident> {
        match outcome {
            ChangeOutcome::Changed { incident, .. } => Ok(incident),
            ChangeOutcome::Closed { incident } => Err(CommandError::Conflict {
                code: "incident_closed",
                message: format!("incident {} is already {}", incident.reference, incident.state),
            }),
            ChangeOutcome::NotFound => Err(CommandError::NotFound),
        }
    }
}
