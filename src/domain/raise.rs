//! The raise request: every field checked against the contract and the directory before
//! anything is stored.

use serde::Deserialize;

use super::incident::{Area, Certainty, Content, Severity, Status, Tlp, Urgency};
use crate::directory::Directory;

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_AREA: usize = 500;
pub const MAX_DEDUP_KEY: usize = 200;
pub const MAX_RECIPIENTS: usize = 100;

/// The body of `POST /api/v1/incidents`. Every field is optional here so that a missing
/// one gets a message naming it rather than a generic parse error.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RaiseRequest {
    pub title: Option<String>,
    pub description: Option<String>,
    pub field: Option<String>,
    pub severity: Option<Severity>,
    pub parties: Option<Vec<String>>,
    pub tlp: Option<Tlp>,
    pub urgency: Option<Urgency>,
    pub certainty: Option<Certainty>,
    pub status: Option<Status>,
    pub recipients: Option<Vec<String>>,
    pub area: Option<AreaRequest>,
    pub dedup_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaRequest {
    pub text: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// A rejected field and why, in words a duty officer understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// Text a person typed: trimmed, bounded, without control characters (newlines and tabs
/// are allowed where `multiline`).
fn text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
    multiline: bool,
    required: bool,
) -> Result<Option<String>, Invalid> {
    let Some(value) = value else {
        return if required { Err(invalid(field, format!("`{field}` is required"))) } else { Ok(None) };
    };
    let value = value.trim();
    if value.is_empty() {
        return if required { Err(invalid(field, format!("`{field}` must not be empty"))) } else { Ok(None) };
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("`{field}` is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t' || c == '\r'))) {
        return Err(invalid(field, format!("`{field}` contains control characters")));
    }
    Ok(Some(value.to_string()))
}

impl RaiseRequest {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self, directory: &Directory) -> Result<Content, Invalid> {
        let title = text("title", self.title.as_deref(), MAX_TITLE, false, true)?.unwrap_or_default();
        let description =
            text("description", self.description.as_deref(), MAX_DESCRIPTION, true, true)?.unwrap_or_default();
        let field = self.field.as_deref().ok_or_else(|| invalid("field", "`field` is required"))?;
        if directory.field(field).is_none() {
            return Err(invalid("field", format!("unknown field of crime {field:?}")));
        }
        let severity = self
            .severity
            .ok_or_else(|| invalid("severity", format!("`severity` is required ({})", Severity::names())))?;
        let tlp = self.tlp.ok_or_else(|| invalid("tlp", format!("`tlp` is required ({})", Tlp::names())))?;

        let parties = self.parties.as_ref().ok_or_else(|| invalid("parties", "`parties` is required"))?;
        if parties.is_empty() {
            return Err(invalid("parties", "address at least one party"));
        }
        if parties.len() > directory.parties().len() {
            return Err(invalid("parties", "more parties than the network has"));
        }
        let mut seen = Vec::with_capacity(parties.len());
        for p in parties {
            if directory.party(p).is_none() {
                return Err(invalid("parties", format!("unknown party {p:?}")));
            }
            if seen.contains(p) {
                return Err(invalid("parties", format!("party {p} is listed twice")));
            }
            seen.push(p.clone());
        }

        let recipients = self.recipients.clone().unwrap_or_default();
        if tlp == Tlp::Red {
            if recipients.is_empty() {
                return Err(invalid("recipients", "a red incident needs named recipients"));
            }
            if recipients.len() > MAX_RECIPIENTS {
                return Err(invalid("recipients", format!("at most {MAX_RECIPIENTS} recipients")));
            }
            for r in &recipients {
                let Some(fp) = directory.focal_point(r) else {
                    return Err(invalid("recipients", format!("unknown focal point {r:?}")));
                };
                if !seen.contains(&fp.party) {
                    return Err(invalid("recipients", format!("{r} belongs to {}, which is not addressed", fp.party)));
                }
                // A recipient who may never read incident content (an admin, an auditor)
                // would leave a red incident that nobody on that side can open.
                if !fp.roles.iter().any(|role| role.reads_incidents()) {
                    return Err(invalid("recipients", format!("{r} does not read incidents (an admin or auditor)")));
                }
            }
        } else if !recipients.is_empty() {
            return Err(invalid("recipients", "named recipients are only for red incidents"));
        }
        let mut recipients = recipients;
        recipients.sort();
        recipients.dedup();

        let area = match &self.area {
            None => None,
            Some(a) => {
                let text = text("area", a.text.as_deref(), MAX_AREA, false, false)?.unwrap_or_default();
                match (a.lat, a.lon) {
                    (None, None) => {}
                    (Some(lat), Some(lon)) => {
                        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                            return Err(invalid("area", "latitude must be between -90 and 90"));
                        }
                        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                            return Err(invalid("area", "longitude must be between -180 and 180"));
                        }
                    }
                    _ => return Err(invalid("area", "give both lat and lon, or neither")),
                }
                if text.is_empty() && a.lat.is_none() { None } else { Some(Area { text, lat: a.lat, lon: a.lon }) }
            }
        };
        let dedup_key = text("dedup_key", self.dedup_key.as_deref(), MAX_DEDUP_KEY, false, false)?;

        Ok(Content {
            title,
            description,
            field: field.to_string(),
            severity,
            urgency: self.urgency.unwrap_or(Urgency::Unknown),
            certainty: self.certainty.unwrap_or(Certainty::Unknown),
            status: self.status.unwrap_or(Status::Actual),
            tlp,
            parties: seen,
            recipients,
            area,
            dedup_key,
        })
    }
}
