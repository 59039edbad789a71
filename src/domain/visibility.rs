//! Who may see an incident (DESIGN.md section 4, TLP 2.0). This module is the one place
//! that decides it; every read path (REST, stream, lists, counts, the SMS and email
//! composer, the escalation planner, bus payloads) goes through it.
//!
//! An incident's audience is a small set of keys computed here when it is raised and
//! stored with it, and a viewer holds a matching set of keys: a viewer sees an incident
//! when the two sets meet. Stores filter lists and counts with the same keys in SQL, so
//! pagination and totals never reveal what a viewer may not see.
//!
//! | label | audience keys |
//! | --- | --- |
//! | clear, green | `all` |
//! | amber | `party:<originator>`, `party:<addressed>`…, and `coord` once the escalation pulls the coordinators in |
//! | amber+strict | `party:<originator>`, `party:<addressed>`… only |
//! | red | `fp:<raising officer>`, `fp:<recipient>`… only |

use super::incident::{Originator, Tlp};
use super::principal::Principal;
use crate::directory::Role;

/// Key every principal that reads incidents holds.
pub const ALL: &str = "all";
/// Key the coordinators hold; added to an amber incident's audience when its escalation
/// reaches them.
pub const COORDINATORS: &str = "coord";

pub fn party_key(party: &str) -> String {
    format!("party:{party}")
}

pub fn focal_point_key(id: &str) -> String {
    format!("fp:{id}")
}

/// The audience keys of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn of(tlp: Tlp, originator: &Originator, parties: &[String], recipients: &[String]) -> Audience {
        let mut keys = match tlp {
            Tlp::Clear | Tlp::Green => vec![ALL.to_string()],
            Tlp::Amber | Tlp::AmberStrict => {
                std::iter::once(&originator.party).chain(parties.iter()).map(|p| party_key(p)).collect()
            }
            Tlp::Red => {
                std::iter::once(&originator.officer).chain(recipients.iter()).map(|id| focal_point_key(id)).collect()
            }
        };
        keys.sort();
        keys.dedup();
        Audience(keys)
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|k| k == key)
    }
}

/// May the coordinators be brought into this incident by escalation or alarms?
/// Only where the label allows sharing beyond the parties: never for amber+strict or red.
pub fn coordinators_allowed(tlp: Tlp) -> bool {
    matches!(tlp, Tlp::Clear | Tlp::Green | Tlp::Amber)
}

/// The keys a viewer holds. Empty for principals whose roles grant no incident content
/// (admin, auditor): they see nothing.
pub fn viewer_keys(p: &Principal) -> Vec<String> {
    if !p.reads_incidents() {
        return Vec::new();
    }
    let mut keys = vec![ALL.to_string(), party_key(&p.party), focal_point_key(&p.id)];
    if p.has_role(Role::Coordinator) {
        keys.push(COORDINATORS.to_string());
    }
    keys
}

/// The one visibility decision: does a viewer holding `viewer` keys see an incident
/// whose audience is `audience`? An event addressed to one focal point (`only_for`) is
/// seen by that focal point alone, and only if the incident is visible to it.
pub fn may_see(viewer: &[String], audience: &Audience, only_for: Option<&str>, viewer_id: &str) -> bool {
    if let Some(target) = only_for
        && target != viewer_id
    {
        return false;
    }
    viewer.iter().any(|k| audience.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn originator() -> Originator {
        Originator { party: "TH".into(), officer: "th-duty".into() }
    }

    fn principal(id: &str, party: &str, roles: &[Role]) -> Principal {
        Principal {
            id: id.into(),
            name: id.into(),
            party: party.into(),
            roles: roles.to_vec(),
            fields: vec!["*".into()],
            level: 1,
            language: "en".into(),
            timezone: "UTC".into(),
        }
    }

    #[test]
    fn every_label_admits_exactly_its_audience() {
        let parties = vec!["MY".to_string()];
        let recipients = vec!["my-drugs".to_string()];
        let my = principal("my-drugs", "MY", &[Role::Focal]);
        let my_other = principal("my-cyber", "MY", &[Role::Focal]);
        let vn = principal("vn-drugs", "VN", &[Role::Focal]);
        let th_other = principal("th-cyber", "TH", &[Role::Focal]);
        let coord = principal("cn-coord", "CN", &[Role::Focal, Role::Coordinator]);
        let admin = principal("asean-admin", "ASEAN", &[Role::Admin]);
        let sees = |tlp, p: &Principal| {
            may_see(&viewer_keys(p), &Audience::of(tlp, &originator(), &parties, &recipients), None, &p.id)
        };

        for tlp in [Tlp::Clear, Tlp::Green] {
            assert!(sees(tlp, &vn) && sees(tlp, &my) && sees(tlp, &coord));
            assert!(!sees(tlp, &admin), "admin does not read content");
        }
        for tlp in [Tlp::Amber, Tlp::AmberStrict] {
            assert!(sees(tlp, &my) && sees(tlp, &my_other) && sees(tlp, &th_other));
            assert!(!sees(tlp, &vn) && !sees(tlp, &coord) && !sees(tlp, &admin));
        }
        assert!(sees(Tlp::Red, &my));
        assert!(!sees(Tlp::Red, &my_other) && !sees(Tlp::Red, &th_other) && !sees(Tlp::Red, &coord));
    }

    #[test]
    fn only_for_limits_to_one_focal_point() {
        let a = Audience(vec![ALL.into()]);
        let p = principal("my-drugs", "MY", &[Role::Focal]);
        assert!(may_see(&viewer_keys(&p), &a, Some("my-drugs"), "my-drugs"));
        assert!(!may_see(&viewer_keys(&p), &a, Some("my-cyber"), "my-drugs"));
    }
}
