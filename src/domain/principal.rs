//! Who is acting: a focal point of the directory, authenticated by token or session.

use serde::Serialize;

use crate::directory::{Directory, FocalPoint, Role};

/// An authenticated member of the network.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub party: String,
    pub roles: Vec<Role>,
    pub fields: Vec<String>,
    pub level: u8,
    pub language: String,
    /// The IANA zone of the principal's party, for showing local times.
    pub timezone: String,
}

impl Principal {
    pub fn from_focal_point(fp: &FocalPoint, directory: &Directory) -> Principal {
        let timezone =
            directory.party(&fp.party).map(|p| p.timezone.name().to_string()).unwrap_or_else(|| "UTC".into());
        Principal {
            id: fp.id.clone(),
            name: fp.name.clone(),
            party: fp.party.clone(),
            roles: fp.roles.clone(),
            fields: fp.fields.clone(),
            level: fp.level,
            language: fp.language.clone(),
            timezone,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Officers and bots raise incidents.
    pub fn may_raise(&self) -> bool {
        self.has_role(Role::Officer) || self.has_role(Role::Bot)
    }

    /// Focal points (and coordinators) acknowledge for their party.
    pub fn may_acknowledge(&self) -> bool {
        self.has_role(Role::Focal) || self.has_role(Role::Coordinator)
    }

    /// Admin and auditor roles do not grant incident content; every other role does.
    pub fn reads_incidents(&self) -> bool {
        self.roles.iter().any(|r| r.reads_incidents())
    }

    /// Officers of the originating party resolve and cancel. Bots raise but never close:
    /// a compromised monitoring bot must not be able to silence its party's incidents.
    pub fn may_close(&self, originator_party: &str) -> bool {
        self.party == originator_party && self.has_role(Role::Officer)
    }

    /// Officers of the originating party and coordinators escalate by hand; bots do not.
    pub fn may_escalate(&self, originator_party: &str) -> bool {
        self.may_close(originator_party) || self.has_role(Role::Coordinator)
    }
}
