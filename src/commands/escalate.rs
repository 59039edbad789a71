//! Manual escalation: move a silent party to its next step now.

use uuid::Uuid;

use super::{CommandError, CommandResult, Hub};
use crate::domain::incident::Incident;
use crate::domain::principal::Principal;
use crate::store::FireOutcome;

impl Hub {
    /// Officers of the originating party and coordinators may escalate a party by hand.
    pub async fn escalate(&self, principal: &Principal, id: Uuid, party: &str) -> CommandResult<Incident> {
        let (incident, _) = self.visible(principal, id).await?;
        if !principal.may_escalate(&incident.originator.party) {
            return Err(CommandError::Forbidden(
                "only officers of the originating party and coordinators escalate".into(),
            ));
        }
        let Some(state) = incident.party_state(party) else {
            return Err(CommandError::invalid("party", format!("{party:?} is not addressed by this incident")));
        };
        if state.acknowledged || !incident.state.is_active() {
            return Err(CommandError::Conflict {
                code: "nothing_to_escalate",
                message: format!("{party} has acknowledged or the incident is closed"),
            });
        }
        let now = self.clock.now();
        let timer = self
            .store
            .claim_party_timer(id, party, now, &self.engine.owner, crate::engine::escalation::LEASE)
            .await?
            .ok_or(CommandError::Conflict {
                code: "nothing_to_escalate",
                message: format!("{party} has no pending escalation step"),
            })?;
        match self.engine.enter(&timer, now).await? {
            FireOutcome::Fired { .. } => {
                tracing::info!(incident = %id, %party, by = %principal.id, step = timer.step, "escalated by hand");
            }
            FireOutcome::Stale => {
                return Err(CommandError::Conflict {
                    code: "nothing_to_escalate",
                    message: format!("{party} acknowledged meanwhile"),
                });
            }
        }
        let (incident, _) = self.visible(principal, id).await?;
        Ok(incident)
    }
}
