//! Events: the append-only log that is at once the audit trail (hash-chained), the replay
//! source for reconnecting clients and the feed for the bus.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cursor::Cursors;
use super::incident::Incident;
use super::wire_enum;

wire_enum!(
    /// The kinds of event, by their wire name.
    EventType {
        Raised => "incident.raised",
        Updated => "incident.updated",
        Note => "incident.note",
        Acknowledged => "incident.acknowledged",
        Escalated => "incident.escalated",
        Unanswered => "incident.unanswered",
        Resolved => "incident.resolved",
        Cancelled => "incident.cancelled",
        Page => "page",
        NotificationSent => "notification.sent",
        NotificationDelivered => "notification.delivered",
        NotificationFailed => "notification.failed",
    }
);

/// An event of the log. Viewers never see its `seq` (it counts the events hidden from
/// them, see [`super::cursor`]): they get [`Event::shown`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: EventType,
    pub incident: Uuid,
    pub party: Option<String>,
    pub data: Value,
}

/// An event as clients see it (stream, `/events`, timelines): the seq sealed as a cursor,
/// first, so that a client can find it without parsing the rest.
#[derive(Debug, Serialize)]
pub struct Shown<'a> {
    pub cursor: String,
    pub at: &'a DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub incident: &'a Uuid,
    pub party: &'a Option<String>,
    pub data: &'a Value,
}

impl Event {
    pub fn shown(&self, cursors: &Cursors) -> Shown<'_> {
        Shown {
            cursor: cursors.seal(self.seq),
            at: &self.at,
            kind: self.kind,
            incident: &self.incident,
            party: &self.party,
            data: &self.data,
        }
    }
}

/// An event before the store gives it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventType,
    pub incident: Uuid,
    pub party: Option<String>,
    /// Set for events meant for one focal point only (a `page`): nobody else sees them,
    /// whatever the incident's audience.
    pub only_for: Option<String>,
    pub data: Value,
}

impl NewEvent {
    pub fn raised(incident: &Incident) -> Self {
        NewEvent {
            kind: EventType::Raised,
            incident: incident.id,
            party: Some(incident.originator.party.clone()),
            only_for: None,
            data: json!({ "incident": incident }),
        }
    }

    pub fn acknowledged(incident: &Incident, party: &str, by: &str, via: &str) -> Self {
        NewEvent {
            kind: EventType::Acknowledged,
            incident: incident.id,
            party: Some(party.to_string()),
            only_for: None,
            data: json!({ "party": party, "by": by, "via": via, "incident": incident }),
        }
    }

    pub fn note(incident: Uuid, party: &str, by: &str, text: &str) -> Self {
        NewEvent {
            kind: EventType::Note,
            incident,
            party: Some(party.to_string()),
            only_for: None,
            data: json!({ "by": by, "party": party, "text": text }),
        }
    }

    pub fn closed(kind: EventType, incident: &Incident, by: &str, reason: Option<&str>) -> Self {
        NewEvent {
            kind,
            incident: incident.id,
            party: Some(incident.originator.party.clone()),
            only_for: None,
            data: json!({ "by": by, "reason": reason, "incident": incident }),
        }
    }
}

/// Milliseconds since the epoch, the store's time unit.
pub fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The current time truncated to milliseconds, so what is stored and what is answered agree.
pub fn now_millis() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

/// The hash of the genesis "previous event".
pub const GENESIS: [u8; 32] = [0; 32];

/// SHA-256(previous hash ‖ canonical event). The canonical event is JSON with object keys
/// sorted at every depth; `data` is passed already canonical ([`canonical_json`]) and is
/// stored verbatim, so verification hashes exactly the bytes that were hashed at append
/// time, whatever the backend or float parsing does.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev: &[u8; 32],
    seq: i64,
    at_ms: i64,
    kind: &str,
    incident: &str,
    party: Option<&str>,
    only_for: Option<&str>,
    data_canonical: &str,
) -> [u8; 32] {
    let s = |v: Option<&str>| v.map(|v| Value::String(v.to_string()).to_string()).unwrap_or_else(|| "null".into());
    let envelope = format!(
        "{{\"at\":{at_ms},\"data\":{data_canonical},\"incident\":{},\"only_for\":{},\"party\":{},\"seq\":{seq},\"type\":{}}}",
        s(Some(incident)),
        s(only_for),
        s(party),
        s(Some(kind)),
    );
    let mut h = Sha256::new();
    h.update(prev);
    h.update(envelope.as_bytes());
    h.finalize().into()
}

/// JSON text with object keys sorted at every depth.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[3,{"q":1,"p":2}]}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a":{"x":[3,{"p":2,"q":1}],"y":2},"b":1}"#).expect("json");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let ha = chain_hash(&GENESIS, 1, 5, "page", "i", None, None, &canonical_json(&a));
        let hc = chain_hash(&ha, 1, 5, "page", "i", None, None, &canonical_json(&b));
        assert_ne!(ha, hc, "the previous hash is part of the chain");
    }
}
