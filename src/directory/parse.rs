//! Network file → [`Directory`], collecting every problem with its line.
//!
//! The file is first deserialised into "raw" structs whose values are wrapped in
//! [`Spanned`] (so each problem can name a line) and kept as loose types
//! (strings, `i64`) so that a bad role or level is one problem among many
//! instead of a serde error that stops at the first. Unknown keys, syntax and
//! type errors still come back from `toml` as a single problem.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::check::{self, Lines, quote};
use super::model::{Channel, Field, FocalPoint, Party, Role};
use super::policies::{RawPolicy, policies};
use super::{Directory, Problem};

/// More focal points than this is a file gone wrong, not a network.
pub const MAX_FOCAL_POINTS: usize = 10_000;
/// A generous bound on the rest, so a hostile file cannot make lookups slow.
pub const MAX_PARTIES: usize = 64;
pub const MAX_FIELDS: usize = 256;

pub(super) type List = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    party: Vec<Spanned<RawParty>>,
    #[serde(default)]
    field: Vec<Spanned<RawField>>,
    #[serde(default)]
    focal_point: Vec<Spanned<RawFocalPoint>>,
    #[serde(default)]
    policy: Vec<Spanned<RawPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParty {
    code: Spanned<String>,
    name: Spanned<String>,
    timezone: Spanned<String>,
    #[serde(default)]
    languages: List,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    id: Spanned<String>,
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFocalPoint {
    id: Spanned<String>,
    name: Spanned<String>,
    party: Spanned<String>,
    #[serde(default)]
    roles: List,
    #[serde(default)]
    fields: List,
    #[serde(default)]
    level: Option<Spanned<i64>>,
    #[serde(default)]
    language: Option<Spanned<String>>,
    #[serde(default)]
    phone: Option<Spanned<String>>,
    #[serde(default)]
    email: Option<Spanned<String>>,
    #[serde(default)]
    channels: List,
    #[serde(default)]
    webhook_url: Option<Spanned<String>>,
}

/// Collects problems; `what` prefixes name the entry so an operator can find it.
pub(super) struct Ctx {
    pub(super) lines: Lines,
    pub(super) problems: Vec<Problem>,
}

impl Ctx {
    pub(super) fn at(&mut self, span: Range<usize>, message: String) {
        let line = self.lines.line(span.start);
        self.problems.push(Problem { line, message });
    }

    /// Runs a `check::*` function on a spanned value, reporting `what key` on failure.
    fn check(&mut self, what: &str, key: &str, v: &Spanned<String>, f: fn(&str) -> Result<(), String>) -> bool {
        match f(v.get_ref()) {
            Ok(()) => true,
            Err(reason) => {
                self.at(v.span(), format!("{what}: {key} {} {reason}", quote(v.get_ref())));
                false
            }
        }
    }
}

pub(super) fn parse(src: &str) -> Result<Directory, Vec<Problem>> {
    let lines = Lines::new(src);
    let raw: RawNetwork = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map_or(0, |s| lines.line(s.start));
            return Err(vec![Problem { line, message: e.message().trim().to_string() }]);
        }
    };
    let mut cx = Ctx { lines, problems: Vec::new() };
    let parties = parties(&mut cx, raw.party);
    let fields = fields(&mut cx, raw.field);
    let focal_points = focal_points(&mut cx, raw.focal_point, &parties, &fields);
    let policies = policies(&mut cx, raw.policy, &parties, &fields, &focal_points);
    if cx.problems.is_empty() {
        Ok(Directory::assemble(parties, fields, focal_points, policies))
    } else {
        cx.problems.sort_by_key(|p| p.line);
        Err(cx.problems)
    }
}

pub(super) fn too_many(cx: &mut Ctx, what: &str, n: usize, max: usize) {
    if n > max {
        cx.problems.push(Problem { line: 0, message: format!("{n} {what} entries, at most {max} are allowed") });
    }
}

pub(super) fn list(l: List) -> (Option<Range<usize>>, Vec<Spanned<String>>) {
    match l {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, Vec::new()),
    }
}

fn parties(cx: &mut Ctx, raw: Vec<Spanned<RawParty>>) -> Vec<Party> {
    too_many(cx, "[[party]]", raw.len(), MAX_PARTIES);
    let mut out: Vec<Party> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in raw {
        let at = entry.span();
        let p = entry.into_inner();
        let what = format!("party {}", quote(p.code.get_ref()));
        let mut ok = cx.check(&what, "code", &p.code, check::party_code);
        if let Some(first) = seen.get(p.code.get_ref()) {
            cx.at(p.code.span(), format!("{what}: duplicate party code (first defined on line {first})"));
            ok = false;
        }
        cx.check(&what, "name", &p.name, check::text);
        let timezone = match p.timezone.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                let msg = format!("{what}: timezone {} is not an IANA time zone", quote(p.timezone.get_ref()));
                cx.at(p.timezone.span(), msg);
                chrono_tz::Tz::UTC
            }
        };
        let (lspan, langs) = list(p.languages);
        if langs.is_empty() {
            cx.at(lspan.unwrap_or(at.clone()), format!("{what}: languages is empty (list at least one)"));
        }
        let mut languages = Vec::new();
        for l in langs {
            cx.check(&what, "language", &l, check::language);
            let l = l.into_inner();
            if !languages.contains(&l) {
                languages.push(l);
            }
        }
        if ok {
            seen.insert(p.code.get_ref().clone(), cx.lines.line(at.start));
            out.push(Party { code: p.code.into_inner(), name: p.name.into_inner(), timezone, languages });
        }
    }
    out
}

fn fields(cx: &mut Ctx, raw: Vec<Spanned<RawField>>) -> Vec<Field> {
    too_many(cx, "[[field]]", raw.len(), MAX_FIELDS);
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in raw {
        let at = entry.span();
        let f = entry.into_inner();
        let what = format!("field {}", quote(f.id.get_ref()));
        let mut ok = cx.check(&what, "id", &f.id, check::id);
        if let Some(first) = seen.get(f.id.get_ref()) {
            cx.at(f.id.span(), format!("{what}: duplicate field id (first defined on line {first})"));
            ok = false;
        }
        cx.check(&what, "name", &f.name, check::text);
        if ok {
            seen.insert(f.id.get_ref().clone(), cx.lines.line(at.start));
            out.push(Field { id: f.id.into_inner(), name: f.name.into_inner() });
        }
    }
    out
}

fn focal_points(
    cx: &mut Ctx,
    raw: Vec<Spanned<RawFocalPoint>>,
    parties: &[Party],
    fields: &[Field],
) -> Vec<FocalPoint> {
    too_many(cx, "[[focal_point]]", raw.len(), MAX_FOCAL_POINTS);
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Inbound SMS is matched by sender number, so a number may belong to one principal only.
    let mut phones: HashMap<String, String> = HashMap::new();
    for entry in raw {
        let at = entry.span();
        let f = entry.into_inner();
        let what = format!("focal point {}", quote(f.id.get_ref()));
        let mut ok = cx.check(&what, "id", &f.id, check::id);
        if let Some(first) = seen.get(f.id.get_ref()) {
            cx.at(f.id.span(), format!("{what}: duplicate focal point id (first defined on line {first})"));
            ok = false;
        }
        cx.check(&what, "name", &f.name, check::text);
        let party = parties.iter().find(|p| &p.code == f.party.get_ref());
        if party.is_none() {
            cx.at(
                f.party.span(),
                format!("{what}: party {} is not a [[party]] of the network", quote(f.party.get_ref())),
            );
        }

        let (rspan, raw_roles) = list(f.roles);
        let mut roles = Vec::new();
        for r in raw_roles {
            match Role::parse(r.get_ref()) {
                Some(role) if !roles.contains(&role) => roles.push(role),
                Some(_) => {}
                None => cx.at(
                    r.span(),
                    format!(
                        "{what}: unknown role {} (officer, focal, coordinator, bot, admin or auditor)",
                        quote(r.get_ref())
                    ),
                ),
            }
        }
        if roles.is_empty() {
            cx.at(rspan.unwrap_or(at.clone()), format!("{what}: roles is empty (give at least one role)"));
        }
        let pageable = roles.contains(&Role::Focal) || roles.contains(&Role::Coordinator);

        let (fspan, raw_fields) = list(f.fields);
        let mut covered = Vec::new();
        for fl in raw_fields {
            let known = fl.get_ref() == "*" || fields.iter().any(|x| &x.id == fl.get_ref());
            if !known {
                cx.at(
                    fl.span(),
                    format!("{what}: field {} is not a [[field]] of the network (or `*`)", quote(fl.get_ref())),
                );
            } else if !covered.contains(fl.get_ref()) {
                covered.push(fl.into_inner());
            }
        }
        if pageable && covered.is_empty() {
            cx.at(
                fspan.unwrap_or(at.clone()),
                format!("{what}: has role focal or coordinator but covers no field (use [\"*\"] for all)"),
            );
        }

        let level = match f.level {
            None => 1,
            Some(l) if (1..=9).contains(l.get_ref()) => *l.get_ref() as u8,
            Some(l) => {
                cx.at(l.span(), format!("{what}: level {} is not between 1 and 9", l.get_ref()));
                1
            }
        };
        let language = match f.language {
            Some(l) => {
                cx.check(&what, "language", &l, check::language);
                l.into_inner()
            }
            None => party.and_then(|p| p.languages.first().cloned()).unwrap_or_else(|| "en".to_string()),
        };
        let phone = f.phone.map(|p| {
            if cx.check(&what, "phone", &p, check::e164) {
                if let Some(other) = phones.get(p.get_ref()) {
                    cx.at(
                        p.span(),
                        format!(
                            "{what}: phone {} is already the phone of focal point {}",
                            quote(p.get_ref()),
                            quote(other)
                        ),
                    );
                } else {
                    phones.insert(p.get_ref().clone(), f.id.get_ref().clone());
                }
            }
            p.into_inner()
        });
        let email = f.email.map(|e| {
            cx.check(&what, "email", &e, check::email);
            e.into_inner()
        });
        let webhook_url = f.webhook_url.map(|u| {
            cx.check(&what, "webhook_url", &u, check::webhook_url);
            u.into_inner()
        });

        let (cspan, raw_channels) = list(f.channels);
        let mut channels = Vec::new();
        for c in raw_channels {
            let Some(ch) = Channel::parse(c.get_ref()) else {
                cx.at(
                    c.span(),
                    format!("{what}: unknown channel {} (dashboard, sms, email or webhook)", quote(c.get_ref())),
                );
                continue;
            };
            let missing = match ch {
                Channel::Sms if phone.is_none() => Some("phone"),
                Channel::Email if email.is_none() => Some("email"),
                Channel::Webhook if webhook_url.is_none() => Some("webhook_url"),
                _ => None,
            };
            if let Some(key) = missing {
                cx.at(c.span(), format!("{what}: channel {ch} needs a {key}"));
            }
            if !channels.contains(&ch) {
                channels.push(ch);
            }
        }
        if pageable && channels.is_empty() {
            cx.at(
                cspan.unwrap_or(at.clone()),
                format!("{what}: has role focal or coordinator but no channels, so it could never be paged"),
            );
        }

        if ok {
            seen.insert(f.id.get_ref().clone(), cx.lines.line(at.start));
            out.push(FocalPoint {
                id: f.id.into_inner(),
                name: f.name.into_inner(),
                party: f.party.into_inner(),
                roles,
                fields: covered,
                level,
                language,
                phone,
                email,
                channels,
                webhook_url,
            });
        }
    }
    out
}
