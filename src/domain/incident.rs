//! The incident: what was raised, for whom, and where each addressed party stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::wire_enum;

wire_enum!(
    /// CAP severity.
    Severity { Extreme => "extreme", Severe => "severe", Moderate => "moderate", Minor => "minor", Unknown => "unknown" }
);
wire_enum!(
    /// CAP urgency.
    Urgency { Immediate => "immediate", Expected => "expected", Future => "future", Past => "past", Unknown => "unknown" }
);
wire_enum!(
    /// CAP certainty.
    Certainty { Observed => "observed", Likely => "likely", Possible => "possible", Unlikely => "unlikely", Unknown => "unknown" }
);
wire_enum!(
    /// Whether the incident is real or a drill; drills are first-class.
    Status { Actual => "actual", Exercise => "exercise", Test => "test" }
);
wire_enum!(
    /// Traffic Light Protocol 2.0 label (DESIGN.md section 4).
    Tlp { Clear => "clear", Green => "green", Amber => "amber", AmberStrict => "amber+strict", Red => "red" }
);
wire_enum!(
    /// Lifecycle: open → acknowledged (every addressed party acked) → resolved, or cancelled.
    State { Open => "open", Acknowledged => "acknowledged", Resolved => "resolved", Cancelled => "cancelled" }
);

impl Severity {
    /// 0 is the most severe; used to order boards and lists.
    pub fn rank(self) -> i64 {
        match self {
            Severity::Extreme => 0,
            Severity::Severe => 1,
            Severity::Moderate => 2,
            Severity::Minor => 3,
            Severity::Unknown => 4,
        }
    }
}

impl State {
    /// Open and acknowledged incidents are "active": they can still be acked, noted,
    /// resolved or cancelled, and their dedup key and ref are reserved.
    pub fn is_active(self) -> bool {
        matches!(self, State::Open | State::Acknowledged)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Area {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Originator {
    pub party: String,
    pub officer: String,
}

/// Where one addressed party stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartyState {
    pub party: String,
    pub acknowledged: bool,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// `web`, `api`, `stream`, `sms`, `email`, `cli`.
    pub via: Option<String>,
    /// Filled by the escalation engine; None while the party has no escalation.
    pub escalation: Option<EscalationState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EscalationState {
    pub step: u32,
    #[serde(rename = "loop")]
    pub loop_: u32,
    pub next_at: Option<DateTime<Utc>>,
    /// `active`, `stopped` (acked or closed) or `exhausted` (unanswered).
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    pub by: String,
    pub party: String,
    pub at: DateTime<Utc>,
    pub text: String,
}

/// The immutable content of an incident as raised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Content {
    pub title: String,
    pub description: String,
    pub field: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    pub status: Status,
    pub tlp: Tlp,
    pub parties: Vec<String>,
    pub recipients: Vec<String>,
    pub area: Option<Area>,
    pub dedup_key: Option<String>,
}

/// An incident with its current state, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub id: Uuid,
    #[serde(rename = "ref")]
    pub reference: String,
    pub originator: Originator,
    pub parties: Vec<String>,
    pub field: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    pub status: Status,
    pub tlp: Tlp,
    pub recipients: Vec<String>,
    pub area: Option<Area>,
    pub title: String,
    pub description: String,
    pub dedup_key: Option<String>,
    pub state: State,
    pub raised_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub party_states: Vec<PartyState>,
    pub notes: Vec<Note>,
}

/// A new incident id: UUIDv7 (time-ordered, so the store's index stays local) with all of
/// its other bits random. `Uuid::now_v7` would count: its bits after the millisecond are
/// a counter shared by the process, so two ids a party sees within one millisecond would
/// tell how many incidents hidden from it were raised in between.
pub fn new_id() -> Uuid {
    Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
}

impl Incident {
    /// A freshly raised incident: every addressed party pending.
    pub fn new(id: Uuid, reference: String, originator: Originator, content: Content, at: DateTime<Utc>) -> Self {
        let party_states = content
            .parties
            .iter()
            .map(|p| PartyState {
                party: p.clone(),
                acknowledged: false,
                acknowledged_by: None,
                acknowledged_at: None,
                via: None,
                escalation: None,
            })
            .collect();
        Incident {
            id,
            reference,
            originator,
            parties: content.parties,
            field: content.field,
            severity: content.severity,
            urgency: content.urgency,
            certainty: content.certainty,
            status: content.status,
            tlp: content.tlp,
            recipients: content.recipients,
            area: content.area,
            title: content.title,
            description: content.description,
            dedup_key: content.dedup_key,
            state: State::Open,
            raised_at: at,
            updated_at: at,
            closed_at: None,
            party_states,
            notes: Vec::new(),
        }
    }

    pub fn content(&self) -> Content {
        Content {
            title: self.title.clone(),
            description: self.description.clone(),
            field: self.field.clone(),
            severity: self.severity,
            urgency: self.urgency,
            certainty: self.certainty,
            status: self.status,
            tlp: self.tlp,
            parties: self.parties.clone(),
            recipients: self.recipients.clone(),
            area: self.area.clone(),
            dedup_key: self.dedup_key.clone(),
        }
    }

    pub fn party_state(&self, party: &str) -> Option<&PartyState> {
        self.party_states.iter().find(|p| p.party == party)
    }

    /// True once every addressed party has acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.party_states.iter().all(|p| p.acknowledged)
    }
}

#[cfg(test)]
mod tests {
    /// Ids made in one burst share their millisecond; what follows it must not count.
    #[test]
    fn ids_are_time_ordered_and_count_nothing() {
        let ids: Vec<u128> = (0..2000).map(|_| super::new_id().as_u128()).collect();
        let after_ms = |id: u128| id & ((1u128 << 80) - 1);
        let same_ms: Vec<_> = ids.windows(2).filter(|w| w[0] >> 80 == w[1] >> 80).collect();
        assert!(!same_ms.is_empty(), "a burst shares milliseconds");
        let counted = same_ms.iter().filter(|w| after_ms(w[1]).wrapping_sub(after_ms(w[0])) < 1 << 34).count();
        assert!(counted * 10 < same_ms.len(), "{counted} of {} neighbours look counted", same_ms.len());
        assert!(ids.windows(2).all(|w| w[0] >> 80 <= w[1] >> 80), "ordered by millisecond");
    }
}
