//! What principals may do, and the checks that come first: role, visibility, state.
//! The API, the CLI and (later) the SMS and email channels all act through [`Hub`].

mod escalate;
mod incidents;
mod queries;

use std::sync::Arc;

use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::Limits;
use crate::directory::Directory;
use crate::domain::principal::Principal;
use crate::domain::visibility::{self, Audience};
use crate::engine::escalation::EscalationEngine;
use crate::store::{Store, Viewer};

pub use incidents::{AckResult, Raised};
pub use queries::ListRequest;

/// The hub's command and query surface.
#[derive(Clone)]
pub struct Hub {
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    pub bus: Arc<dyn Bus>,
    pub clock: Arc<dyn Clock>,
    pub engine: Arc<EscalationEngine>,
    pub limits: Limits,
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
    pub fn viewer(principal: &Principal) -> Viewer {
        Viewer { id: principal.id.clone(), keys: visibility::viewer_keys(principal) }
    }

    /// The one visibility check for an incident-level read.
    pub fn sees(principal: &Principal, audience: &Audience) -> bool {
        visibility::may_see(&visibility::viewer_keys(principal), audience, None, &principal.id)
    }
}
