//! Credentials: bearer tokens for machines and scripts, passwords and session cookies for
//! people, and the sign-in rate limiter. Only hashes are stored.

pub mod ended;
pub mod limiter;
pub mod password;
pub mod recent;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::directory::Directory;
use crate::domain::principal::Principal;
use crate::store::Store;
use recent::RecentTokens;

pub const SESSION_COOKIE: &str = "focalpoint_session";

/// Resolves credentials to principals of the current directory.
#[derive(Clone)]
pub struct Authenticator {
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    /// When each token's use was last written to the store. Writing it on every request
    /// would add a write to every read; `token list` needs it to the hour, not the second.
    touched: Arc<Mutex<HashMap<Vec<u8>, Instant>>>,
    /// Tokens verified a moment ago (see [`recent`]).
    recent: RecentTokens,
}

/// How often a token's "last used" time is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(300);

impl Authenticator {
    /// `recent` is shared with the node's [`ended::CredentialWatch`], which forgets the
    /// tokens that end.
    pub fn new(store: Arc<dyn Store>, directory: Arc<Directory>, recent: RecentTokens) -> Self {
        Authenticator { store, directory, touched: Arc::default(), recent }
    }

    /// The principal `id` if `given` is its password. Unknown accounts are verified
    /// against a dummy hash: same answer, same time.
    pub async fn check_password(&self, id: &str, given: String) -> anyhow::Result<Option<Principal>> {
        let principal = self.principal(id);
        let stored = match &principal {
            Some(_) => self.store.password_hash(id).await?,
            None => None,
        };
        Ok(if password::verify(given, stored).await { principal } else { None })
    }

    /// Opens a session for `principal` lasting `hours`; returns the cookie's secret (only
    /// its hash is stored).
    pub async fn open_session(&self, principal: &Principal, hours: i64) -> anyhow::Result<String> {
        let session = secret::generate();
        self.store
            .insert_session(&secret::hash(&session), &principal.id, Utc::now() + chrono::Duration::hours(hours))
            .await?;
        Ok(session)
    }

    pub async fn close_session(&self, session: &str) -> anyhow::Result<()> {
        self.store.delete_session(&secret::hash(session)).await
    }

    /// The principal behind a bearer token, if the token is neither revoked nor expired
    /// and its focal point is still in the directory.
    pub async fn by_token(&self, token: &str) -> anyhow::Result<Option<Principal>> {
        if !secret::looks_like_secret(token) {
            return Ok(None);
        }
        let hash = secret::hash(token);
        if let Some(owner) = self.recent.owner(&hash) {
            return Ok(self.principal(&owner));
        }
        let Some(owner) = self.store.token_owner(&hash, Utc::now()).await? else { return Ok(None) };
        self.recent.remember(&hash, &owner);
        if self.due_for_touch(&hash) {
            // Off the request's path: a failed write here must not refuse a valid token.
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(&hash, Utc::now()).await {
                    tracing::debug!(error = %e, "could not record a token's last use");
                }
            });
        }
        Ok(self.principal(&owner))
    }

    fn due_for_touch(&self, hash: &[u8]) -> bool {
        let now = Instant::now();
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        match touched.get(hash) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                // Bounded: there are as many entries as valid tokens used lately.
                if touched.len() > 100_000 {
                    touched.retain(|_, at| now.duration_since(*at) < TOUCH_EVERY);
                }
                touched.insert(hash.to_vec(), now);
                true
            }
        }
    }

    pub async fn by_session(&self, session: &str) -> anyhow::Result<Option<Principal>> {
        if !secret::looks_like_secret(session) {
            return Ok(None);
        }
        let owner = self.store.session_owner(&secret::hash(session), Utc::now()).await?;
        Ok(owner.and_then(|id| self.principal(&id)))
    }

    pub fn principal(&self, id: &str) -> Option<Principal> {
        self.directory.focal_point(id).map(|fp| Principal::from_focal_point(fp, &self.directory))
    }
}
