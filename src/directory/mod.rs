//! The network's address book: parties, crime fields, focal points and
//! escalation policies, loaded from the TOML network file
//! (`config/network.toml`, DESIGN.md §6).
//!
//! Loading validates the whole file and reports *every* problem with its line,
//! because an operator fixing a 40-entry file one error per run would give up;
//! a [`Directory`] therefore only exists in a valid state and lookups never fail
//! for reasons of format. The directory holds no credentials (DESIGN.md §6).
//!
//! This module depends only on serde, toml, chrono-tz and thiserror so it can be
//! checked and tested on its own.

mod check;
mod model;
mod parse;
mod policies;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

pub use check::{MAX_ID, MAX_STRING, MAX_WAIT};
pub use model::{Channel, Field, FocalPoint, Notify, Party, Policy, Role, Scale, Step};
pub use parse::MAX_FOCAL_POINTS;
pub use policies::{MAX_POLICIES, MAX_REPEAT, MAX_STEPS};

/// Largest network file accepted: a real network is a few hundred KiB at most,
/// and the cap keeps a wrong path (a log, a device) from eating memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One thing wrong with a network file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending entry or value; 0 when it concerns the whole file.
    pub line: usize,
    /// Names the entry (`focal point \`th-drugs\`: …`) so it can be found without the line.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 { f.write_str(&self.message) } else { write!(f, "line {}: {}", self.line, self.message) }
    }
}

/// Why a network file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read network file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network file {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    /// The Display only counts; use [`LoadError::report`] to show every problem.
    #[error("{} problem(s) in {path}", .problems.len())]
    Invalid { path: String, problems: Vec<Problem> },
}

impl LoadError {
    /// The error line followed by one `path:line: message` line per problem,
    /// the form editors and CI logs turn into links.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        if let LoadError::Invalid { path, problems } = self {
            for p in problems {
                out.push('\n');
                if p.line == 0 {
                    out.push_str(&format!("{path}: {}", p.message));
                } else {
                    out.push_str(&format!("{path}:{}: {}", p.line, p.message));
                }
            }
        }
        out
    }
}

/// The validated network. Cheap to share behind an `Arc`; never mutated.
#[derive(Debug, Clone)]
pub struct Directory {
    parties: Vec<Party>,
    fields: Vec<Field>,
    focal_points: Vec<FocalPoint>,
    policies: Vec<Policy>,
    party_ix: HashMap<String, usize>,
    field_ix: HashMap<String, usize>,
    fp_ix: HashMap<String, usize>,
    phone_ix: HashMap<String, usize>,
    /// Focal point indices per party, in file order.
    members_ix: HashMap<String, Vec<usize>>,
    /// (party or "*", field or "*") → policy index.
    policy_ix: HashMap<(String, String), usize>,
}

impl Directory {
    /// Reads and validates a network file (at most [`MAX_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Directory, LoadError> {
        let shown = path.display().to_string();
        let io = |source| LoadError::Io { path: shown.clone(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // Read through `take` rather than trusting metadata: the path may be a
        // pipe or device, or the file may grow between stat and read.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge { path: shown, limit: MAX_FILE_BYTES });
        }
        let src = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                let problems = vec![Problem { line, message: "the file is not valid UTF-8".into() }];
                return Err(LoadError::Invalid { path: shown, problems });
            }
        };
        Directory::parse(&src).map_err(|problems| LoadError::Invalid { path: shown, problems })
    }

    /// Validates network-file text; on failure returns all problems, sorted by line.
    pub fn parse(src: &str) -> Result<Directory, Vec<Problem>> {
        parse::parse(src)
    }

    /// Builds the lookup indices; inputs are already validated (unique keys).
    fn assemble(
        parties: Vec<Party>,
        fields: Vec<Field>,
        focal_points: Vec<FocalPoint>,
        policies: Vec<Policy>,
    ) -> Directory {
        let party_ix = parties.iter().enumerate().map(|(i, p)| (p.code.clone(), i)).collect();
        let field_ix = fields.iter().enumerate().map(|(i, f)| (f.id.clone(), i)).collect();
        let fp_ix = focal_points.iter().enumerate().map(|(i, f)| (f.id.clone(), i)).collect();
        let phone_ix = focal_points.iter().enumerate().filter_map(|(i, f)| f.phone.clone().map(|p| (p, i))).collect();
        let mut members_ix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in focal_points.iter().enumerate() {
            members_ix.entry(f.party.clone()).or_default().push(i);
        }
        let policy_ix = policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let key =
                    (p.party.clone().unwrap_or_else(|| "*".into()), p.field.clone().unwrap_or_else(|| "*".into()));
                (key, i)
            })
            .collect();
        Directory {
            parties,
            fields,
            focal_points,
            policies,
            party_ix,
            field_ix,
            fp_ix,
            phone_ix,
            members_ix,
            policy_ix,
        }
    }

    pub fn parties(&self) -> &[Party] {
        &self.parties
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    pub fn focal_points(&self) -> &[FocalPoint] {
        &self.focal_points
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn party(&self, code: &str) -> Option<&Party> {
        self.party_ix.get(code).map(|&i| &self.parties[i])
    }

    pub fn field(&self, id: &str) -> Option<&Field> {
        self.field_ix.get(id).map(|&i| &self.fields[i])
    }

    pub fn focal_point(&self, id: &str) -> Option<&FocalPoint> {
        self.fp_ix.get(id).map(|&i| &self.focal_points[i])
    }

    /// Exact match on the E.164 string (phones are unique in a valid directory);
    /// used to identify the sender of an inbound SMS.
    pub fn focal_point_by_phone(&self, e164: &str) -> Option<&FocalPoint> {
        self.phone_ix.get(e164).map(|&i| &self.focal_points[i])
    }

    /// Principals with role `coordinator`, in file order.
    pub fn coordinators(&self) -> impl Iterator<Item = &FocalPoint> {
        self.focal_points.iter().filter(|f| f.has_role(Role::Coordinator))
    }

    /// Every principal of `party` (any role), in file order.
    pub fn members(&self, party: &str) -> impl Iterator<Item = &FocalPoint> {
        self.members_ix.get(party).into_iter().flatten().map(|&i| &self.focal_points[i])
    }

    /// Policy for (party, field) with fallbacks (party, "*"), then ("*", field),
    /// then ("*", "*"); None if none matches (never, in a loaded directory).
    ///
    /// ("*", field) sits after (party, "*") because a party's own policy encodes
    /// how that party is staffed, which a network-wide field rule cannot know.
    pub fn policy_for(&self, party: &str, field: &str) -> Option<&Policy> {
        let get = |p: &str, f: &str| self.policy_ix.get(&(p.to_string(), f.to_string())).map(|&i| &self.policies[i]);
        get(party, field).or_else(|| get(party, "*")).or_else(|| get("*", field)).or_else(|| get("*", "*"))
    }

    /// Focal points of `party` with role focal (or coordinator) at exactly `level`
    /// covering `field` ("*" in fields covers all), in file order.
    pub fn focal_points_at_level(&self, party: &str, field: &str, level: u8) -> Vec<&FocalPoint> {
        self.members(party).filter(|f| f.is_pageable() && f.level == level && f.covers(field)).collect()
    }

    /// One-line summary, as printed by `focalpoint network check`.
    pub fn summary(&self) -> String {
        format!(
            "network ok: {} parties, {} fields, {} focal points, {} policies",
            self.parties.len(),
            self.fields.len(),
            self.focal_points.len(),
            self.policies.len()
        )
    }
}

/// Used by `focalpoint network check FILE`: Ok(summary line like
/// "network ok: 12 parties, 12 fields, 40 focal points, 14 policies") or every
/// problem (print it with [`LoadError::report`]).
pub fn check_file(path: &Path) -> Result<String, LoadError> {
    Directory::load(path).map(|d| d.summary())
}
