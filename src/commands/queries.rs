//! Reads, each filtered by the viewer's visibility.

use uuid::Uuid;

use super::{CommandError, CommandResult, Hub};
use crate::directory::Role;
use crate::domain::event::Event;
use crate::domain::incident::{Incident, State};
use crate::domain::principal::Principal;
use crate::domain::visibility;
use crate::store::{ChainReport, IncidentPage, IncidentQuery};

/// Query parameters of `GET /api/v1/incidents`, as given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// `open`, `acknowledged`, `resolved`, `cancelled`, or `active` (open + acknowledged);
    /// comma-separated.
    pub state: Option<String>,
    pub party: Option<String>,
    pub field: Option<String>,
    pub severity: Option<String>,
    pub tlp: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

impl Hub {
    /// The seq of the last committed event. Read before a list, it is where a client's
    /// stream resumes without missing anything.
    pub async fn head_seq(&self) -> CommandResult<i64> {
        Ok(self.store.head_seq().await?)
    }

    /// The position a viewer's cursor names, for `after` (events, stream) and `cursor`
    /// (lists): `parameter` names the field in the error.
    pub fn open_cursor(&self, parameter: &'static str, cursor: &str) -> CommandResult<i64> {
        self.cursors.open(cursor).map_err(|e| CommandError::invalid(parameter, e.to_string()))
    }

    /// Walks the audit trail's hash chain. For auditors and admins; the report shows no
    /// incident content.
    pub async fn verify_chain(&self, principal: &Principal) -> CommandResult<ChainReport> {
        if !(principal.has_role(Role::Auditor) || principal.has_role(Role::Admin)) {
            return Err(CommandError::Forbidden("only auditors and admins verify the audit trail".into()));
        }
        Ok(self.store.verify_chain().await?)
    }

    pub async fn incident(&self, principal: &Principal, id: Uuid) -> CommandResult<(Incident, Vec<Event>)> {
        let (incident, _) = self.visible(principal, id).await?;
        let keys = visibility::viewer_keys(principal);
        let timeline = self
            .store
            .timeline(id)
            .await?
            .into_iter()
            .filter(|f| visibility::may_see(&keys, &f.audience, f.only_for.as_deref(), &principal.id))
            .map(|f| f.event)
            .collect();
        Ok((incident, timeline))
    }

    pub async fn list(&self, principal: &Principal, request: &ListRequest) -> CommandResult<IncidentPage> {
        let mut query =
            IncidentQuery { limit: request.limit.unwrap_or(50).clamp(1, self.limits.max_page), ..Default::default() };
        if let Some(states) = &request.state {
            for s in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if s == "active" {
                    query.states.extend([State::Open, State::Acknowledged]);
                } else {
                    let state: State = s.parse().map_err(|_| {
                        CommandError::invalid(
                            "state",
                            format!("unknown state {s:?}; expected active, {}", State::names()),
                        )
                    })?;
                    query.states.push(state);
                }
            }
        }
        if let Some(party) = &request.party {
            if self.directory.party(party).is_none() {
                return Err(CommandError::invalid("party", format!("unknown party {party:?}")));
            }
            query.party = Some(party.clone());
        }
        if let Some(field) = &request.field {
            if self.directory.field(field).is_none() {
                return Err(CommandError::invalid("field", format!("unknown field {field:?}")));
            }
            query.field = Some(field.clone());
        }
        if let Some(s) = &request.severity {
            s.parse::<crate::domain::incident::Severity>()
                .map_err(|_| CommandError::invalid("severity", format!("unknown severity {s:?}")))?;
            query.severity = Some(s.clone());
        }
        if let Some(t) = &request.tlp {
            t.parse::<crate::domain::incident::Tlp>()
                .map_err(|_| CommandError::invalid("tlp", format!("unknown tlp {t:?}")))?;
            query.tlp = Some(t.clone());
        }
        if let Some(cursor) = &request.cursor {
            query.before_seq = Some(self.open_cursor("cursor", cursor)?).filter(|s| *s > 0);
        }
        Ok(self.store.list_incidents(&query, &Hub::viewer(principal)).await?)
    }

    /// Events after `after` that the principal may see, oldest first.
    pub async fn events_after(
        &self,
        principal: &Principal,
        after: i64,
        limit: Option<u32>,
    ) -> CommandResult<Vec<Event>> {
        let limit = limit.unwrap_or(self.limits.max_page).clamp(1, self.limits.max_page);
        Ok(self.store.visible_events(after, limit, &Hub::viewer(principal)).await?)
    }
}
