//! Credentials: bearer tokens for machines and scripts, passwords and session cookies for
//! people, and the sign-in rate limiter. Only hashes are stored.

pub mod limiter;
pub mod password;
pub mod secret;

use std::sync::Arc;

use chrono::Utc;

use crate::directory::Directory;
use crate::domain::principal::Principal;
use crate::store::Store;

pub const SESSION_COOKIE: &str = "focalpoint_session";

/// Resolves credentials to principals of the current directory.
#[derive(Clone)]
pub struct Authenticator {
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
}

impl Authenticator {
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

    /// The principal behind a bearer token, if the token is valid and its focal point is
    /// still in the directory.
    pub async fn by_token(&self, token: &str) -> anyhow::Result<Option<Principal>> {
        if !secret::looks_like_secret(token) {
            return Ok(None);
        }
        let owner = self.store.token_owner(&secret::hash(token)).await?;
        Ok(owner.and_then(|id| self.principal(&id)))
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
