//! Validation of `[[policy]]` entries: escalation steps, waits and scales.
//! Runs after parties, fields and focal points, which it cross-checks.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

use super::Problem;
use super::check::{self, quote};
use super::model::{Channel, Field, FocalPoint, Notify, Party, Policy, Role, Scale, Step};
use super::parse::{Ctx, List, list, too_many};

pub const MAX_POLICIES: usize = 10_000;
/// More steps than this is a typo (or an attack), never a real escalation ladder.
pub const MAX_STEPS: usize = 32;
pub const MAX_REPEAT: i64 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    party: Spanned<String>,
    field: Spanned<String>,
    #[serde(default)]
    repeat: Option<Spanned<i64>>,
    #[serde(default)]
    scale: Option<RawScale>,
    #[serde(default)]
    steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    extreme: Option<Spanned<f64>>,
    severe: Option<Spanned<f64>>,
    moderate: Option<Spanned<f64>>,
    minor: Option<Spanned<f64>>,
    unknown: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    notify: Spanned<String>,
    wait: Spanned<String>,
    #[serde(default)]
    channels: List,
}

pub(super) fn policies(
    cx: &mut Ctx,
    raw: Vec<Spanned<RawPolicy>>,
    parties: &[Party],
    fields: &[Field],
    fps: &[FocalPoint],
) -> Vec<Policy> {
    too_many(cx, "[[policy]]", raw.len(), MAX_POLICIES);
    let levels: HashSet<(&str, u8)> =
        fps.iter().filter(|f| f.is_pageable()).map(|f| (f.party.as_str(), f.level)).collect();
    let by_id: HashMap<&str, &FocalPoint> = fps.iter().map(|f| (f.id.as_str(), f)).collect();
    let any_coordinator = fps.iter().any(|f| f.has_role(Role::Coordinator));
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut out = Vec::new();
    let mut catch_all = false;
    for entry in raw {
        let at = entry.span();
        let line = cx.lines.line(at.start);
        let p = entry.into_inner();
        let (party, field) = (p.party.get_ref().clone(), p.field.get_ref().clone());
        let what = format!("policy ({}, {})", quote(&party), quote(&field));
        if party != "*" && !parties.iter().any(|x| x.code == party) {
            cx.at(
                p.party.span(),
                format!("{what}: party {} is not a [[party]] of the network (or `*`)", quote(&party)),
            );
        }
        if field != "*" && !fields.iter().any(|x| x.id == field) {
            cx.at(
                p.field.span(),
                format!("{what}: field {} is not a [[field]] of the network (or `*`)", quote(&field)),
            );
        }
        catch_all |= party == "*" && field == "*";
        if let Some(first) = seen.get(&(party.clone(), field.clone())) {
            cx.at(
                at.clone(),
                format!("{what}: duplicate policy for this (party, field) (first defined on line {first})"),
            );
        } else {
            seen.insert((party.clone(), field.clone()), line);
        }

        let repeat = match p.repeat {
            None => 0,
            Some(r) if (0..=MAX_REPEAT).contains(r.get_ref()) => *r.get_ref() as u32,
            Some(r) => {
                cx.at(r.span(), format!("{what}: repeat {} is not between 0 and {MAX_REPEAT}", r.get_ref()));
                0
            }
        };
        let scale = scale(cx, &what, p.scale);

        let (sspan, raw_steps) = match p.steps {
            Some(s) => (s.span(), s.into_inner()),
            None => (at.clone(), Vec::new()),
        };
        if raw_steps.is_empty() {
            cx.at(sspan, format!("{what}: steps is empty (a policy needs at least one step)"));
        } else if raw_steps.len() > MAX_STEPS {
            cx.at(sspan, format!("{what}: {} steps, at most {MAX_STEPS} are allowed", raw_steps.len()));
        }
        let party_ref = (party != "*").then_some(party.as_str());
        let mut steps = Vec::new();
        for (i, s) in raw_steps.into_iter().enumerate() {
            let s_at = s.span();
            let s = s.into_inner();
            let swhat = format!("{what}: step {i}");
            let n = s.notify.get_ref().as_str();
            let notify = if n == "coordinators" {
                if !any_coordinator {
                    cx.at(
                        s.notify.span(),
                        format!("{swhat} notifies coordinators but no focal point has role coordinator"),
                    );
                }
                Some(Notify::Coordinators)
            } else if let Some(lv) = n.strip_prefix("level:") {
                match lv.parse::<u8>() {
                    Ok(l) if (1..=9).contains(&l) && lv.bytes().all(|b| b.is_ascii_digit()) => {
                        if let Some(pc) = party_ref.filter(|pc| !levels.contains(&(*pc, l))) {
                            cx.at(
                                s.notify.span(),
                                format!("{swhat} notifies level:{l} but party {pc} has no focal point at level {l}"),
                            );
                        }
                        Some(Notify::Level(l))
                    }
                    _ => {
                        cx.at(s.notify.span(), format!("{swhat}: notify {} needs a level between 1 and 9", quote(n)));
                        None
                    }
                }
            } else if let Some(id) = n.strip_prefix("focal:") {
                match by_id.get(id) {
                    None => cx.at(
                        s.notify.span(),
                        format!("{swhat} notifies focal point {} which is not in the network", quote(id)),
                    ),
                    Some(fp) if !fp.is_pageable() => cx.at(
                        s.notify.span(),
                        format!(
                            "{swhat} notifies focal point {} which has neither role focal nor coordinator",
                            quote(id)
                        ),
                    ),
                    Some(fp) => {
                        if let Some(pc) = party_ref.filter(|pc| *pc != fp.party) {
                            cx.at(
                                s.notify.span(),
                                format!(
                                    "{swhat} notifies focal point {} of party {} but the policy is for party {pc}",
                                    quote(id),
                                    fp.party
                                ),
                            );
                        }
                    }
                }
                Some(Notify::FocalPoint(id.to_string()))
            } else {
                cx.at(
                    s.notify.span(),
                    format!("{swhat}: notify {} is not `level:N`, `focal:<id>` or `coordinators`", quote(n)),
                );
                None
            };
            let wait = match check::wait(s.wait.get_ref()) {
                Ok(w) => Some(w),
                Err(reason) => {
                    cx.at(s.wait.span(), format!("{swhat}: wait {} {reason}", quote(s.wait.get_ref())));
                    None
                }
            };
            let (cspan, raw_channels) = list(s.channels);
            let mut channels = Vec::new();
            for c in raw_channels {
                match Channel::parse(c.get_ref()) {
                    Some(ch) if !channels.contains(&ch) => channels.push(ch),
                    Some(_) => {}
                    None => cx.at(
                        c.span(),
                        format!("{swhat}: unknown channel {} (dashboard, sms, email or webhook)", quote(c.get_ref())),
                    ),
                }
            }
            if channels.is_empty() {
                cx.at(cspan.unwrap_or(s_at), format!("{swhat}: channels is empty (list at least one)"));
            }
            if let (Some(notify), Some(wait)) = (notify, wait) {
                steps.push(Step { notify, wait, channels });
            }
        }
        out.push(Policy {
            party: party_ref.map(str::to_string),
            field: (field != "*").then_some(field),
            repeat,
            steps,
            scale,
            line,
        });
    }
    if !catch_all {
        cx.problems.push(Problem {
            line: 0,
            message:
                "no catch-all policy: add a [[policy]] with party = \"*\" and field = \"*\" so every incident escalates"
                    .into(),
        });
    }
    out
}

fn scale(cx: &mut Ctx, what: &str, raw: Option<RawScale>) -> Scale {
    let Some(r) = raw else {
        return Scale::default();
    };
    let mut one = |name: &str, v: Option<Spanned<f64>>| -> Option<f64> {
        let v = v?;
        let x = *v.get_ref();
        if x > 0.0 && x <= 1.0 {
            Some(x)
        } else {
            cx.at(v.span(), format!("{what}: scale {name} = {x} is not in (0, 1] (scaling may only shorten waits)"));
            None
        }
    };
    Scale {
        extreme: one("extreme", r.extreme),
        severe: one("severe", r.severe),
        moderate: one("moderate", r.moderate),
        minor: one("minor", r.minor),
        unknown: one("unknown", r.unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINI, has, problems};
    use super::super::{Directory, Problem};

    #[test]
    fn policy_fallbacks() {
        let src = format!(
            "{MINI}\n{}\n{}\n{}",
            "[[policy]]\nparty = \"TH\"\nfield = \"*\"\nsteps = [{ notify = \"level:2\", wait = \"1m\", channels = [\"sms\"] }]",
            "[[policy]]\nparty = \"TH\"\nfield = \"cyber-crime\"\nsteps = [{ notify = \"focal:th-chief\", wait = \"2m\", channels = [\"sms\"] }]",
            "[[policy]]\nparty = \"*\"\nfield = \"drug-trafficking\"\nsteps = [{ notify = \"level:1\", wait = \"3m\", channels = [\"sms\"] }]",
        );
        let d = Directory::parse(&src).expect("valid");
        let wait = |p: &str, f: &str| d.policy_for(p, f).map(|p| p.steps[0].wait.as_secs());
        assert_eq!(wait("TH", "cyber-crime"), Some(120));
        assert_eq!(wait("TH", "drug-trafficking"), Some(60), "(party, *) before (*, field)");
        assert_eq!(wait("CN", "drug-trafficking"), Some(180));
        assert_eq!(wait("CN", "cyber-crime"), Some(300));
        assert_eq!(wait("ZZ", "nothing"), Some(300));
    }

    #[test]
    fn policy_rules() {
        let extra = r#"
    [[policy]]
    party = "TH"
    field = "*"
    repeat = 101
    steps = [
      { notify = "level:3", wait = "5m", channels = ["sms"] },
      { notify = "focal:cn-coord", wait = "0s", channels = [] },
      { notify = "focal:nobody", wait = "8d", channels = ["sms"] },
      { notify = "everyone", wait = "1m", channels = ["sms"] },
      { notify = "level:0", wait = "1m", channels = ["sms"] },
    ]

    [[policy]]
    party = "XX"
    field = "piracy"
    steps = []

    [[policy]]
    party = "*"
    field = "cyber-crime"
    steps = [{ notify = "focal:cn-coord", wait = "1m", channels = ["sms"] }]
    "#;
        let src = format!("{MINI}{extra}");
        let ps = problems(&src);
        let text = ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
        for msg in [
            "policy (`TH`, `*`): repeat 101 is not between 0 and 100",
            "policy (`TH`, `*`): step 0 notifies level:3 but party TH has no focal point at level 3",
            "policy (`TH`, `*`): step 1 notifies focal point `cn-coord` of party CN but the policy is for party TH",
            "policy (`TH`, `*`): step 1: wait `0s` must be longer than zero",
            "policy (`TH`, `*`): step 1: channels is empty",
            "policy (`TH`, `*`): step 2 notifies focal point `nobody` which is not in the network",
            "policy (`TH`, `*`): step 2: wait `8d` is longer than 7 days",
            "policy (`TH`, `*`): step 3: notify `everyone` is not",
            "policy (`TH`, `*`): step 4: notify `level:0` needs a level between 1 and 9",
            "policy (`XX`, `piracy`): party `XX` is not a [[party]]",
            "policy (`XX`, `piracy`): field `piracy` is not a [[field]]",
            "policy (`XX`, `piracy`): steps is empty",
        ] {
            assert!(text.contains(msg), "missing: {msg}\n--- got:\n{text}");
        }
        assert!(!text.contains("`cyber-crime`"), "a `*` policy may name any party's focal point:\n{text}");
        assert_eq!(ps.iter().filter(|p| p.message.contains("no focal point at level")).count(), 1);
    }

    #[test]
    fn catch_all_required_and_coordinators_needed() {
        let src = MINI
            .replace("party = \"*\"\nfield = \"*\"", "party = \"TH\"\nfield = \"*\"")
            .replace("\"focal\", \"coordinator\"", "\"focal\"");
        let ps = problems(&src);
        assert!(has(&ps, 0, "no catch-all policy"), "{ps:?}");
        assert!(
            ps.iter().any(|p| {
                p.message.contains("step 1 notifies coordinators but no focal point has role coordinator")
            })
        );
        assert_eq!(Problem { line: 0, message: "m".into() }.to_string(), "m");
        assert_eq!(Problem { line: 4, message: "m".into() }.to_string(), "line 4: m");
    }
}
