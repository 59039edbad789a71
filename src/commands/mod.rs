//! What principals may do, and the checks that come first: role, visibility, state.
//! The API, the CLI and (later) the SMS and email channels all act through [`Hub`].

mod escalate;
mod inbound;
mod incidents;
mod queries;

use std::sync::Arc;

use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::Limits;
use crate::directory::Directory;
use crate::domain::cursor::Cursors;
use crate::domain::principal::Principal;
use crate::domain::visibility::{self, Audience};
use crate::engine::escalation::EscalationEngine;
use crate::store::{Store, Viewer};

pub use inbound::{AckLink, LinkAck, SmsReply};
pub use incidents::{AckResult, Raised};
pub use queries::ListRequest;

/// The hub's command and query surface. Its parts are private: the API and the CLI act
/// only through its methods, so every rule they rely on lives in this module.
#[derive(Clone)]
pub struct Hub {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    engine: Arc<EscalationEngine>,
    limits: Limits,
    cursors: Cursors,
}

/// Whether this node can serve: the store answers; the bus may be degraded (the feed
/// then polls the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub store_ok: bool,
    pub bus: &'static str,
    pub bus_ok: bool,
}

/// Why a command was refused. The API maps each to a status code and never shows
/// `Internal`'s details to the caller.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Absent, or outside the caller's audience: the two are indistinguishable.
    #[error("no such incident")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Invalid { field: Option<&'static str>, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CommandError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        CommandError::Invalid { field: Some(field), message: message.into() }
    }
}

pub type CommandResult<T> = Result<T, CommandError>;

impl Hub {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        engine: Arc<EscalationEngine>,
        limits: Limits,
        cursors: Cursors,
    ) -> Hub {
        Hub { store, directory, bus, clock, engine, limits, cursors }
    }

    /// Seals seqs for viewers, who never see one (see [`crate::domain::cursor`]).
    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// The network file as loaded: parties, fields, focal points and policies.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub async fn readiness(&self) -> Readiness {
        // A store that hangs is as unready as one that fails; two seconds bounds the probe.
        let store_ok =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await.is_ok_and(|r| r.is_ok());
        Readiness { store_ok, bus: self.bus.name(), bus_ok: self.bus.healthy() }
    }

    pub fn viewer(principal: &Principal) -> Viewer {
        Viewer { id: principal.id.clone(), keys: visibility::viewer_keys(principal) }
    }

    /// The one visibility check for an incident-level read.
    pub fn sees(principal: &Principal, audience: &Audience) -> bool {
        visibility::may_see(&visibility::viewer_keys(principal), audience, None, &principal.id)
    }
}
