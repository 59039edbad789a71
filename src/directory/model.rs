//! The directory's typed model: what the rest of the hub sees once a network
//! file has been validated. Every value here has already passed the checks in
//! `parse.rs`, so consumers never re-validate.

use std::fmt;
use std::time::Duration;

/// A member of the network: one of the 11 states or the ASEAN Secretariat.
#[derive(Debug, Clone)]
pub struct Party {
    /// `TH`, `CN`, … or `ASEAN`.
    pub code: String,
    pub name: String,
    /// Used to show times in the party's own zone; storage is always UTC.
    pub timezone: chrono_tz::Tz,
    /// In order of preference; the first one is the default for its focal points.
    pub languages: Vec<String>,
}

/// A crime field (`drug-trafficking`, …, `general`).
#[derive(Debug, Clone)]
pub struct Field {
    pub id: String,
    pub name: String,
}

/// A person or machine principal of the network.
#[derive(Debug, Clone)]
pub struct FocalPoint {
    pub id: String,
    pub name: String,
    /// Party code; always names a party of the directory.
    pub party: String,
    pub roles: Vec<Role>,
    /// Field ids covered, or `*` for all fields.
    pub fields: Vec<String>,
    /// Escalation tier (1 = first line). 1 when the file omits it.
    pub level: u8,
    /// Language for SMS/email; defaults to the party's first language, else `en`.
    pub language: String,
    /// E.164, unique across the directory (inbound SMS is matched by it).
    pub phone: Option<String>,
    pub email: Option<String>,
    pub channels: Vec<Channel>,
    /// Where bot-style deliveries go (http:// or https://).
    pub webhook_url: Option<String>,
}

impl FocalPoint {
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// True if this focal point handles `field` (a `*` entry covers every field).
    pub fn covers(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == "*" || f == field)
    }

    /// True if escalation steps may page this principal (`focal` or `coordinator`).
    pub fn is_pageable(&self) -> bool {
        self.has_role(Role::Focal) || self.has_role(Role::Coordinator)
    }

    pub fn has_channel(&self, c: Channel) -> bool {
        self.channels.contains(&c)
    }
}

/// What a principal may do (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Officer,
    Focal,
    Coordinator,
    Bot,
    Admin,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Officer, Role::Focal, Role::Coordinator, Role::Bot, Role::Admin, Role::Auditor];

    /// The spelling used in the network file and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Focal => "focal",
            Role::Coordinator => "coordinator",
            Role::Bot => "bot",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role reads incident content. Admins and auditors run the hub and check
    /// its audit trail; they never read what parties share.
    pub fn reads_incidents(self) -> bool {
        matches!(self, Role::Officer | Role::Focal | Role::Coordinator | Role::Bot)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A way to reach a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Dashboard,
    Sms,
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Dashboard, Channel::Sms, Channel::Email, Channel::Webhook];

    /// The spelling used in the network file and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Dashboard => "dashboard",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An escalation policy for a (party, field) pair; `None` stands for `*`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub party: Option<String>,
    pub field: Option<String>,
    /// How many more times the whole list of steps runs after the first pass
    /// (0 = run once). At most 100.
    pub repeat: u32,
    /// Never empty.
    pub steps: Vec<Step>,
    pub scale: Scale,
    /// 1-based line of the `[[policy]]` header, so logs can point at it.
    pub line: usize,
}

impl Policy {
    /// How long step `step` waits for an ack at `severity` (CAP severity,
    /// case-insensitive; anything unrecognised counts as `unknown`).
    ///
    /// The scaled wait never drops below one second: the engine's timers are
    /// only precise to about a second, and a sub-second step would be paged
    /// and escalated in the same breath. A `step` past the end gives zero.
    pub fn wait(&self, step: usize, severity: &str) -> Duration {
        let Some(s) = self.steps.get(step) else {
            return Duration::ZERO;
        };
        let m = self.scale.multiplier(severity);
        if m >= 1.0 {
            return s.wait;
        }
        let scaled = s.wait.mul_f64(m);
        // Keep whole milliseconds so deadlines stored in the database stay exact.
        let scaled = Duration::from_millis(scaled.as_millis().min(u64::MAX as u128) as u64);
        scaled.max(Duration::from_secs(1)).min(s.wait)
    }

    /// `party/field` as written in the file (`*` for wildcards), for messages.
    pub fn label(&self) -> String {
        format!("({}, {})", self.party.as_deref().unwrap_or("*"), self.field.as_deref().unwrap_or("*"))
    }
}

/// One step of a policy: whom to page, on which channels, and how long to wait
/// for the party's ack before the next step.
#[derive(Debug, Clone)]
pub struct Step {
    pub notify: Notify,
    pub wait: Duration,
    /// Never empty; a recipient is paged on those of these it has.
    pub channels: Vec<Channel>,
}

/// Whom a step pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `level:N`: the party's focal points at level N covering the incident's field.
    Level(u8),
    /// `focal:<id>`: one named focal point.
    FocalPoint(String),
    /// `coordinators`: the network coordinators (subject to the TLP audience).
    Coordinators,
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notify::Level(n) => write!(f, "level:{n}"),
            Notify::FocalPoint(id) => write!(f, "focal:{id}"),
            Notify::Coordinators => f.write_str("coordinators"),
        }
    }
}

/// Per-severity multiplier of waits (an extreme incident waits less):
/// `scale = { extreme = 0.25, severe = 0.5 }`; missing severities are 1.0.
/// Multipliers are in (0, 1]: scaling may only hurry escalation, never delay it.
#[derive(Debug, Clone, Default)]
pub struct Scale {
    pub extreme: Option<f64>,
    pub severe: Option<f64>,
    pub moderate: Option<f64>,
    pub minor: Option<f64>,
    pub unknown: Option<f64>,
}

impl Scale {
    /// The multiplier for a CAP severity (case-insensitive; unrecognised = `unknown`).
    pub fn multiplier(&self, severity: &str) -> f64 {
        let sev = severity.trim().to_ascii_lowercase();
        let m = match sev.as_str() {
            "extreme" => self.extreme,
            "severe" => self.severe,
            "moderate" => self.moderate,
            "minor" => self.minor,
            _ => self.unknown,
        };
        match m {
            // Validated at load, but a Scale can also be built by hand.
            Some(v) if v > 0.0 && v <= 1.0 => v,
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scale: Scale) -> Policy {
        Policy {
            party: None,
            field: None,
            repeat: 0,
            steps: vec![
                Step { notify: Notify::Level(1), wait: Duration::from_secs(300), channels: vec![Channel::Sms] },
                Step { notify: Notify::Coordinators, wait: Duration::from_secs(2), channels: vec![Channel::Email] },
            ],
            scale,
            line: 1,
        }
    }

    #[test]
    fn wait_scales_by_severity() {
        let p = policy(Scale { extreme: Some(0.25), severe: Some(0.5), ..Scale::default() });
        assert_eq!(p.wait(0, "extreme"), Duration::from_secs(75));
        assert_eq!(p.wait(0, "Severe"), Duration::from_secs(150));
        assert_eq!(p.wait(0, "moderate"), Duration::from_secs(300));
        assert_eq!(p.wait(0, "nonsense"), Duration::from_secs(300));
        assert_eq!(p.wait(1, "extreme"), Duration::from_secs(1), "floored at 1 s");
        assert_eq!(p.wait(7, "extreme"), Duration::ZERO);
    }

    #[test]
    fn unknown_severity_uses_unknown_multiplier() {
        let p = policy(Scale { unknown: Some(0.5), ..Scale::default() });
        assert_eq!(p.wait(0, "whatever"), Duration::from_secs(150));
        assert_eq!(p.wait(0, "unknown"), Duration::from_secs(150));
    }

    #[test]
    fn roles_and_channels_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Role::parse("Focal"), None);
        assert_eq!(Notify::Level(2).to_string(), "level:2");
        assert_eq!(Notify::FocalPoint("th-drugs".into()).to_string(), "focal:th-drugs");
    }
}
