//! Whether a raise creates an incident, written once for every backend:
//!
//! - an Idempotency-Key already used by the same principal replays the incident it made
//!   (or is refused when the request differs);
//! - a dedup key held by an active incident of the same originator party returns that
//!   incident instead of a new one — within the key's scope ([`dedup_scope`]), so that a
//!   key never tells a raiser about an incident they may not see;
//! - a new incident's ref is re-drawn until no active incident holds it (lengthened when
//!   the short space is crowded).
//!
//! The store answers the questions ([`Existing`]) inside the write transaction that then
//! inserts, so the decision and the insert are atomic.

use async_trait::async_trait;
use uuid::Uuid;

use super::event::NewEvent;
use super::incident::Originator;
use super::principal::Principal;
use super::reference;
use super::visibility::{self, Audience};
use crate::directory::{Directory, Role};

/// What the store knows, asked inside its write transaction.
#[async_trait]
pub trait Existing: Send {
    /// The request fingerprint and incident of an Idempotency-Key `principal` used.
    async fn idempotency_key(&mut self, principal: &str, key: &str) -> anyhow::Result<Option<(String, Uuid)>>;
    /// The active incident of `party` holding `dedup_key` in the party-wide scope or in
    /// `raiser`'s own.
    async fn active_dedup(&mut self, party: &str, raiser: &str, dedup_key: &str) -> anyhow::Result<Option<Uuid>>;
    /// Whether an active incident holds `reference`.
    async fn ref_in_use(&mut self, reference: &str) -> anyhow::Result<bool>;
}

/// The raise as the rule sees it.
pub struct Candidate<'a> {
    /// `(principal, Idempotency-Key, fingerprint of the request body)`.
    pub idempotency: Option<&'a (String, String, String)>,
    pub party: &'a str,
    /// The raising principal's id.
    pub raiser: &'a str,
    pub dedup_key: Option<&'a str>,
}

/// The party-wide dedup scope.
pub const PARTY_SCOPE: &str = "";

/// Where a new incident's dedup key holds: [`PARTY_SCOPE`] when every principal of the
/// originator party who may raise also sees the incident, else the raiser alone (a red
/// incident, say). Otherwise a colleague reusing the key would learn from the answer that
/// an incident they may not see exists.
pub fn dedup_scope(directory: &Directory, originator: &Originator, audience: &Audience) -> String {
    let everyone_sees = directory
        .members(&originator.party)
        .filter(|fp| fp.roles.iter().any(|r| matches!(r, Role::Officer | Role::Bot)))
        .all(|fp| {
            let p = Principal::from_focal_point(fp, directory);
            visibility::may_see(&visibility::viewer_keys(&p), audience, None, &p.id)
        });
    if everyone_sees { PARTY_SCOPE.to_string() } else { originator.officer.clone() }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Create it, under this ref (the proposed one or a re-drawn one).
    Create { reference: String },
    /// The same principal sent the same request with this Idempotency-Key before.
    Replay(Uuid),
    /// The Idempotency-Key was used before for a different request.
    Mismatch,
    /// An active incident of the same party already has this dedup key.
    Duplicate(Uuid),
}

/// Decides the fate of a raise proposing `reference`.
pub async fn admit(raise: Candidate<'_>, proposed: &str, existing: &mut dyn Existing) -> anyhow::Result<Admission> {
    if let Some((principal, key, fingerprint)) = raise.idempotency
        && let Some((stored, id)) = existing.idempotency_key(principal, key).await?
    {
        return Ok(if &stored == fingerprint { Admission::Replay(id) } else { Admission::Mismatch });
    }
    if let Some(dedup) = raise.dedup_key
        && let Some(id) = existing.active_dedup(raise.party, raise.raiser, dedup).await?
    {
        return Ok(Admission::Duplicate(id));
    }
    let mut reference = proposed.to_string();
    let mut attempt = 0;
    while existing.ref_in_use(&reference).await? {
        attempt += 1;
        reference = reference::generate(if attempt < 8 { 4 } else { 6 });
    }
    Ok(Admission::Create { reference })
}

/// A planned event with the incident's final ref (planning ran before the ref was
/// re-drawn).
pub fn with_reference(event: &NewEvent, reference: &str) -> NewEvent {
    let mut event = event.clone();
    if let Some(r) = event.data.get_mut("ref") {
        *r = serde_json::Value::String(reference.to_string());
    }
    if let Some(r) = event.data.get_mut("incident").and_then(|i| i.get_mut("ref")) {
        *r = serde_json::Value::String(reference.to_string());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Known {
        keys: Vec<(String, String, String, Uuid)>,
        /// (party, scope, key, incident)
        dedup: Vec<(String, String, String, Uuid)>,
        refs: Vec<String>,
    }

    #[async_trait]
    impl Existing for Known {
        async fn idempotency_key(&mut self, principal: &str, key: &str) -> anyhow::Result<Option<(String, Uuid)>> {
            Ok(self.keys.iter().find(|k| k.0 == principal && k.1 == key).map(|k| (k.2.clone(), k.3)))
        }
        async fn active_dedup(&mut self, party: &str, raiser: &str, key: &str) -> anyhow::Result<Option<Uuid>> {
            let in_scope = |scope: &str| scope == PARTY_SCOPE || scope == raiser;
            Ok(self.dedup.iter().find(|d| d.0 == party && in_scope(&d.1) && d.2 == key).map(|d| d.3))
        }
        async fn ref_in_use(&mut self, reference: &str) -> anyhow::Result<bool> {
            Ok(self.refs.iter().any(|r| r == reference))
        }
    }

    fn run(known: &mut Known, idem: Option<&(String, String, String)>, dedup: Option<&str>, r: &str) -> Admission {
        run_as(known, "o1", idem, dedup, r)
    }

    fn run_as(
        known: &mut Known,
        raiser: &str,
        idem: Option<&(String, String, String)>,
        dedup: Option<&str>,
        r: &str,
    ) -> Admission {
        let candidate = Candidate { idempotency: idem, party: "MY", raiser, dedup_key: dedup };
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(admit(candidate, r, known)).unwrap()
    }

    #[test]
    fn idempotency_then_dedup_then_ref() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut known = Known {
            keys: vec![("o1".into(), "k".into(), "f".into(), a)],
            dedup: vec![("MY".into(), PARTY_SCOPE.into(), "d".into(), b)],
            refs: vec!["AAAA".into()],
        };
        let same = ("o1".to_string(), "k".to_string(), "f".to_string());
        let other = ("o1".to_string(), "k".to_string(), "g".to_string());
        assert_eq!(run(&mut known, Some(&same), Some("d"), "CCCC"), Admission::Replay(a));
        assert_eq!(run(&mut known, Some(&other), None, "CCCC"), Admission::Mismatch);
        assert_eq!(run(&mut known, None, Some("d"), "CCCC"), Admission::Duplicate(b));
        assert_eq!(run(&mut known, None, Some("e"), "CCCC"), Admission::Create { reference: "CCCC".into() });
        match run(&mut known, None, None, "AAAA") {
            Admission::Create { reference } => assert_ne!(reference, "AAAA"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_in_a_colleagues_own_scope_is_not_a_duplicate() {
        let private = Uuid::new_v4();
        let mut known = Known { dedup: vec![("MY".into(), "o1".into(), "d".into(), private)], ..Known::default() };
        assert_eq!(run_as(&mut known, "o1", None, Some("d"), "CCCC"), Admission::Duplicate(private));
        assert_eq!(run_as(&mut known, "o2", None, Some("d"), "CCCC"), Admission::Create { reference: "CCCC".into() });
    }
}
