//! The escalation planner: pure functions from (directory, incident, step) to whom to
//! page and what comes next. No I/O, so scenarios are easy to reason about and test.
//!
//! Visibility is enforced here, through [`visibility::may_see`]: a target who may not see
//! the incident is never paged. A red incident pages only its named recipients; an
//! amber+strict one stays inside its parties; amber lets the coordinators in when a step
//! or the unanswered alarm reaches them (their key is added to the audience).

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::directory::{Channel, Directory, Notify, Policy, Role};
use crate::domain::event::{EventType, NewEvent};
use crate::domain::incident::{EscalationState, Incident, Tlp};
use crate::domain::principal::Principal;
use crate::domain::visibility::{self, Audience};

/// One page: a focal point reached on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageTarget {
    pub focal_point: String,
    pub channel: Channel,
}

/// What entering a step (or exhausting the chain) does for one party. Applied by the
/// store in one transaction, after re-checking that the party is still unacknowledged.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub party: String,
    pub step: u32,
    pub loop_: u32,
    pub pages: Vec<PageTarget>,
    /// `incident.escalated` / `incident.unanswered` (none for step 0 of loop 0: the raise
    /// itself announces it), then one `page` event per focal point paged on the dashboard.
    pub events: Vec<NewEvent>,
    /// The timer to schedule next: (step, loop, due). For the unanswered alarm the step is
    /// the policy's step count.
    pub next_timer: Option<(u32, u32, DateTime<Utc>)>,
    pub state: EscalationState,
    /// Audience keys added (the coordinators' key for amber).
    pub audience_add: Vec<String>,
}

fn principal(directory: &Directory, id: &str) -> Option<Principal> {
    directory.focal_point(id).map(|fp| Principal::from_focal_point(fp, directory))
}

/// Whether a focal point may see the incident, given audience additions.
fn admitted(directory: &Directory, audience: &Audience, extra: &[String], id: &str) -> bool {
    let Some(p) = principal(directory, id) else { return false };
    let mut keys = audience.0.clone();
    keys.extend(extra.iter().cloned());
    visibility::may_see(&visibility::viewer_keys(&p), &Audience(keys), None, &p.id)
}

/// Candidate focal points of a step, before visibility.
fn candidates(directory: &Directory, incident: &Incident, party: &str, notify: &Notify) -> Vec<String> {
    match notify {
        Notify::Level(n) => {
            directory.focal_points_at_level(party, &incident.field, *n).into_iter().map(|f| f.id.clone()).collect()
        }
        Notify::FocalPoint(id) => vec![id.clone()],
        Notify::Coordinators => directory.coordinators().map(|f| f.id.clone()).collect(),
    }
}

/// Pages for one step of `party`'s policy.
fn step_pages(
    directory: &Directory,
    incident: &Incident,
    audience: &Audience,
    party: &str,
    policy: &Policy,
    step: usize,
) -> (Vec<PageTarget>, Vec<String>) {
    let Some(s) = policy.steps.get(step) else { return (Vec::new(), Vec::new()) };
    let mut extra = Vec::new();
    if s.notify == Notify::Coordinators && incident.tlp == Tlp::Amber {
        extra.push(visibility::COORDINATORS.to_string());
    }
    let mut ids = candidates(directory, incident, party, &s.notify);
    if incident.tlp == Tlp::Red {
        // Only named recipients; at step 0 every recipient of the party is paged even if
        // the step names someone else, so a red incident always reaches its recipients.
        ids.retain(|id| incident.recipients.contains(id));
        if step == 0 && ids.is_empty() {
            ids = incident
                .recipients
                .iter()
                .filter(|r| directory.focal_point(r).is_some_and(|f| f.party == party))
                .cloned()
                .collect();
        }
    }
    ids.retain(|id| admitted(directory, audience, &extra, id));
    ids.sort();
    ids.dedup();
    let mut pages = Vec::new();
    for id in &ids {
        let Some(fp) = directory.focal_point(id) else { continue };
        if !fp.is_pageable() {
            continue;
        }
        for channel in &s.channels {
            if fp.has_channel(*channel) {
                pages.push(PageTarget { focal_point: id.clone(), channel: *channel });
            }
        }
    }
    if pages.is_empty() {
        extra.clear();
    }
    (pages, extra)
}

/// A `page` event for each focal point paged on the dashboard: only that person sees it.
fn page_events(
    incident: &Incident,
    party: &str,
    step: u32,
    loop_: u32,
    pages: &[PageTarget],
    reason: &str,
) -> Vec<NewEvent> {
    pages
        .iter()
        .filter(|p| p.channel == Channel::Dashboard)
        .map(|p| NewEvent {
            kind: EventType::Page,
            incident: incident.id,
            party: Some(party.to_string()),
            only_for: Some(p.focal_point.clone()),
            data: json!({
                "focal_point": p.focal_point, "step": step, "loop": loop_, "channel": "dashboard",
                "ref": incident.reference, "severity": incident.severity, "reason": reason,
            }),
        })
        .collect()
}

/// Bots subscribe to escalations and unanswered alarms: every bot with a `webhook_url`
/// that may see the incident gets a signed webhook call (an outbox row, like any page).
/// They are not among the step's `targets`: they are told, not asked to acknowledge.
fn bot_pages(directory: &Directory, audience: &Audience, extra: &[String]) -> Vec<PageTarget> {
    directory
        .focal_points()
        .iter()
        .filter(|fp| fp.has_role(Role::Bot) && fp.webhook_url.is_some() && fp.has_channel(Channel::Webhook))
        .filter(|fp| admitted(directory, audience, extra, &fp.id))
        .map(|fp| PageTarget { focal_point: fp.id.clone(), channel: Channel::Webhook })
        .collect()
}

fn targets_json(pages: &[PageTarget]) -> serde_json::Value {
    let mut ids: Vec<&str> = pages.iter().map(|p| p.focal_point.as_str()).collect();
    ids.dedup();
    json!(ids)
}

/// The step after (step, loop), or None when the chain is exhausted.
fn after(policy: &Policy, step: u32, loop_: u32) -> Option<(u32, u32)> {
    if (step as usize) + 1 < policy.steps.len() {
        Some((step + 1, loop_))
    } else if loop_ < policy.repeat {
        Some((0, loop_ + 1))
    } else {
        None
    }
}

/// Plans entering (step, loop) for `party`, scheduled to start at `scheduled`. Step
/// index `policy.steps.len()` means "exhausted": the unanswered alarm.
pub fn plan_step(
    directory: &Directory,
    incident: &Incident,
    audience: &Audience,
    party: &str,
    step: u32,
    loop_: u32,
    scheduled: DateTime<Utc>,
) -> Option<StepPlan> {
    let policy = directory.policy_for(party, &incident.field)?;
    if step as usize >= policy.steps.len() {
        return Some(unanswered(directory, incident, audience, party, step, loop_));
    }
    let (pages, audience_add) = step_pages(directory, incident, audience, party, policy, step as usize);
    let mut events = Vec::new();
    if step > 0 || loop_ > 0 {
        let mut snapshot = incident.clone();
        if let Some(ps) = snapshot.party_states.iter_mut().find(|p| p.party == party) {
            ps.escalation = Some(EscalationState { step, loop_, next_at: None, state: "active".into() });
        }
        events.push(NewEvent {
            kind: EventType::Escalated,
            incident: incident.id,
            party: Some(party.to_string()),
            only_for: None,
            data: json!({ "party": party, "step": step, "loop": loop_, "targets": targets_json(&pages), "incident": snapshot }),
        });
    }
    events.extend(page_events(incident, party, step, loop_, &pages, "escalation"));
    let mut pages = pages;
    if step > 0 || loop_ > 0 {
        pages.extend(bot_pages(directory, audience, &audience_add));
    }
    let wait = Duration::milliseconds(policy.wait(step as usize, incident.severity.as_str()).as_millis() as i64);
    let due = scheduled + wait;
    let next_timer = match after(policy, step, loop_) {
        Some((s, l)) => Some((s, l, due)),
        None => Some((policy.steps.len() as u32, loop_, due)),
    };
    Some(StepPlan {
        party: party.to_string(),
        step,
        loop_,
        pages,
        events,
        next_timer,
        state: EscalationState { step, loop_, next_at: Some(due), state: "active".into() },
        audience_add,
    })
}

/// The chain is exhausted: alarm the originator (the raising officer) and, where the
/// label allows, the coordinators.
fn unanswered(
    directory: &Directory,
    incident: &Incident,
    audience: &Audience,
    party: &str,
    step: u32,
    loop_: u32,
) -> StepPlan {
    let mut extra = Vec::new();
    let mut ids = vec![incident.originator.officer.clone()];
    if visibility::coordinators_allowed(incident.tlp) {
        if incident.tlp == Tlp::Amber {
            extra.push(visibility::COORDINATORS.to_string());
        }
        ids.extend(directory.coordinators().map(|f| f.id.clone()));
    }
    ids.retain(|id| admitted(directory, audience, &extra, id));
    let mut pages = Vec::new();
    for id in &ids {
        let Some(fp) = directory.focal_point(id) else { continue };
        for channel in [Channel::Dashboard, Channel::Sms, Channel::Email] {
            if fp.has_channel(channel) {
                pages.push(PageTarget { focal_point: id.clone(), channel });
            }
        }
    }
    let mut snapshot = incident.clone();
    if let Some(ps) = snapshot.party_states.iter_mut().find(|p| p.party == party) {
        ps.escalation = Some(EscalationState { step, loop_, next_at: None, state: "exhausted".into() });
    }
    let mut events = vec![NewEvent {
        kind: EventType::Unanswered,
        incident: incident.id,
        party: Some(party.to_string()),
        only_for: None,
        data: json!({ "party": party, "loops": loop_ + 1, "alarmed": targets_json(&pages), "incident": snapshot }),
    }];
    events.extend(page_events(incident, party, step, loop_, &pages, "unanswered"));
    pages.extend(bot_pages(directory, audience, &extra));
    StepPlan {
        party: party.to_string(),
        step,
        loop_,
        pages,
        events,
        next_timer: None,
        state: EscalationState { step, loop_, next_at: None, state: "exhausted".into() },
        audience_add: extra,
    }
}

/// Step 0 for every addressed party, entered with the raise.
pub fn plan_raise(directory: &Directory, incident: &Incident, audience: &Audience) -> Vec<StepPlan> {
    incident
        .parties
        .iter()
        .filter_map(|party| {
            let plan = plan_step(directory, incident, audience, party, 0, 0, incident.raised_at);
            if plan.is_none() {
                tracing::warn!(incident = %incident.id, %party, field = %incident.field, "no escalation policy matches; nobody is paged");
            }
            plan
        })
        .collect()
}
