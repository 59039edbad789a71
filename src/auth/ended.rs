//! Credentials that stopped being valid while streams opened with them are still open:
//! revoked or expired tokens, sessions signed out or expired. Each node watches the store
//! for them and tells its streams, which close at once with [`CLOSE_CREDENTIAL`].
//!
//! Why poll the store: a token is revoked by `focalpoint token revoke`, another process
//! that may have no bus to speak on, and every replica must hear of it. One query a second
//! per node (the credential tables are small) is the delay; sign-outs on this node are
//! announced at once as well. Each round looks a few seconds further back than the last,
//! so a stream that subscribed just after a revocation, or a clock a little behind, still
//! hears of it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{broadcast, watch};

use super::recent::RecentTokens;
use crate::store::Store;

/// WebSocket close code for a stream whose credential ended.
pub const CLOSE_CREDENTIAL: u16 = 4001;

/// How often the store is asked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How far each round looks back past the previous one.
const OVERLAP: TimeDelta = TimeDelta::seconds(5);

/// Hashes of credentials that ended, as one batch.
pub type Ended = Arc<Vec<Vec<u8>>>;

pub struct CredentialWatch {
    tx: broadcast::Sender<Ended>,
}

impl CredentialWatch {
    /// Starts watching `store` until `shutdown` flips. Ended tokens are forgotten by
    /// `recent` before their streams are told.
    pub fn start(
        store: Arc<dyn Store>,
        recent: RecentTokens,
        mut shutdown: watch::Receiver<bool>,
    ) -> Arc<CredentialWatch> {
        let (tx, _) = broadcast::channel(64);
        let watch = Arc::new(CredentialWatch { tx: tx.clone() });
        tokio::spawn(async move {
            let mut since: DateTime<Utc> = Utc::now() - OVERLAP;
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => break,
                }
                let now = Utc::now();
                match store.ended_credentials(since, now).await {
                    Ok(ended) => {
                        if !ended.is_empty() {
                            recent.forget(&ended);
                            // No receivers is fine: no streams are open here.
                            let _ = tx.send(Arc::new(ended));
                        }
                        since = now - OVERLAP;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not check for ended credentials; retrying"),
                }
            }
        });
        watch
    }

    /// Tells this node's streams at once (a sign-out here).
    pub fn announce(&self, hash: Vec<u8>) {
        let _ = self.tx.send(Arc::new(vec![hash]));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ended> {
        self.tx.subscribe()
    }
}
