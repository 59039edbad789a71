//! Bearer tokens verified a moment ago, so that a bot or script making hundreds of
//! requests a second costs one store lookup a second instead of one each (on PostgreSQL
//! that lookup was the most frequent statement of a raise).
//!
//! How stale it may be, and why that is safe: an entry lives [`REMEMBER_FOR`] at most,
//! and [`super::ended::CredentialWatch`] forgets revoked and expired tokens the moment it
//! learns of them, before it closes their streams, so a request after that close is
//! checked against the store again. A revocation therefore takes effect on requests
//! within the same second that it closes streams, on every replica. Only successes are
//! remembered: a wrong token always goes to the store (and to the failure limiter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a verified token is taken on trust.
pub const REMEMBER_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most; past that, old ones are dropped first.
const MAX_ENTRIES: usize = 10_000;

/// Token hash → (owner, when verified).
type Verified = HashMap<Vec<u8>, (String, Instant)>;

#[derive(Clone, Default)]
pub struct RecentTokens(Arc<Mutex<Verified>>);

impl RecentTokens {
    /// The owner of `hash`, if it was verified less than [`REMEMBER_FOR`] ago.
    pub fn owner(&self, hash: &[u8]) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(hash).filter(|(_, at)| at.elapsed() < REMEMBER_FOR).map(|(owner, _)| owner.clone())
    }

    pub fn remember(&self, hash: &[u8], owner: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, at)| at.elapsed() < REMEMBER_FOR);
        }
        if map.len() < MAX_ENTRIES {
            map.insert(hash.to_vec(), (owner.to_string(), Instant::now()));
        }
    }

    /// Forgets credentials that ended (any hash; sessions are never here).
    pub fn forget(&self, hashes: &[Vec<u8>]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for hash in hashes {
            map.remove(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_forgotten() {
        let recent = RecentTokens::default();
        assert_eq!(recent.owner(b"h"), None);
        recent.remember(b"h", "my-bot");
        assert_eq!(recent.owner(b"h").as_deref(), Some("my-bot"));
        recent.forget(&[b"h".to_vec()]);
        assert_eq!(recent.owner(b"h"), None);
    }
}
