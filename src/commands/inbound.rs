//! Acknowledgement from outside the dashboard: an SMS reply, a delivery status from the
//! SMS gateway, and the single-use email link. The API authenticates the request
//! (Twilio's signature, the link's token) and words the answer; who may acknowledge what
//! is decided here, by the same `acknowledge` command the dashboard uses.

use uuid::Uuid;

use super::{CommandError, CommandResult, Hub};
use crate::auth::secret;
use crate::domain::incident::{Severity, State};
use crate::domain::principal::Principal;

/// What an inbound SMS came to. The API turns each into the reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsReply {
    /// The message id was seen before: answer nothing, change nothing.
    Replayed,
    /// The sender's number belongs to no focal point.
    Unregistered,
    /// The text is not `ACK <ref>`.
    NotAnAck,
    /// No open incident with that ref was paged to the sender.
    NotPaged {
        reference: String,
    },
    Acknowledged {
        incident: Uuid,
        reference: String,
        party: String,
    },
    AlreadyAcknowledged {
        reference: String,
        party: String,
    },
    Closed {
        reference: String,
    },
    Forbidden {
        reference: String,
        reason: String,
    },
}

/// What an email link points at: a pointer only (ref, severity, party), whatever the TLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckLink {
    pub reference: String,
    pub severity: Severity,
    pub party: String,
    pub state: State,
    /// The link was already used.
    pub used: bool,
    /// The party has acknowledged, by whatever channel.
    pub acknowledged: bool,
}

/// What following an email link's form came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAck {
    Acknowledged(AckLink),
    AlreadyAcknowledged(AckLink),
    /// Used before, by this or another click.
    Used(AckLink),
    Closed(AckLink),
    /// The focal point may no longer acknowledge (e.g. removed from the network file).
    Forbidden,
}

impl Hub {
    /// An SMS reply `ACK <ref>` from `from`, processed once per message id. Only a focal
    /// point the hub paged for the incident may acknowledge it this way.
    pub async fn sms_reply(&self, message_id: &str, from: &str, reference: Option<String>) -> CommandResult<SmsReply> {
        if !self.store.first_inbound_message(message_id, self.clock.now()).await? {
            tracing::info!(sid = message_id, "inbound SMS replayed; ignored");
            return Ok(SmsReply::Replayed);
        }
        let Some(fp) = self.directory.focal_point_by_phone(from) else { return Ok(SmsReply::Unregistered) };
        let Some(reference) = reference else { return Ok(SmsReply::NotAnAck) };
        let not_paged = |reference| Ok(SmsReply::NotPaged { reference });
        let Some(id) = self.store.active_incident_by_ref(&reference).await? else { return not_paged(reference) };
        if !self.store.pages(id).await?.iter().any(|p| p.focal_point == fp.id) {
            return not_paged(reference);
        }
        let principal = Principal::from_focal_point(fp, &self.directory);
        let party = principal.party.clone();
        match self.acknowledge(&principal, id, "sms").await {
            Ok(result) if result.newly_acknowledged => {
                tracing::info!(incident = %id, focal_point = %fp.id, %party, "acknowledged by SMS reply");
                Ok(SmsReply::Acknowledged { incident: id, reference, party })
            }
            Ok(_) => Ok(SmsReply::AlreadyAcknowledged { reference, party }),
            Err(CommandError::NotFound) => not_paged(reference),
            Err(CommandError::Conflict { .. }) => Ok(SmsReply::Closed { reference }),
            Err(CommandError::Forbidden(reason)) => Ok(SmsReply::Forbidden { reference, reason }),
            Err(e) => Err(e),
        }
    }

    /// A delivery status for a sent SMS (`delivered`, `failed`, …), recorded on its page.
    pub async fn delivery_status(&self, provider_id: &str, status: &str) -> CommandResult<()> {
        self.store.page_status(provider_id, status, self.clock.now()).await?;
        Ok(())
    }

    /// What the email link `token` points at; None when it is not a link the hub issued.
    /// Reading it changes nothing: mail scanners follow links.
    pub async fn ack_link(&self, token: &str) -> CommandResult<Option<AckLink>> {
        Ok(self.link_record(token).await?.map(|(link, _, _)| link))
    }

    /// Acknowledges through the email link `token`, once; None when it is not a link the
    /// hub issued.
    pub async fn ack_by_link(&self, token: &str) -> CommandResult<Option<LinkAck>> {
        let Some((link, incident, focal_point)) = self.link_record(token).await? else { return Ok(None) };
        if !self.store.consume_ack_token(&secret::hash(token), self.clock.now()).await? {
            // Closing an incident voids its links, so an unusable link on a closed
            // incident is reported as closed, not as used.
            return Ok(Some(if link.state.is_active() { LinkAck::Used(link) } else { LinkAck::Closed(link) }));
        }
        let Some(fp) = self.directory.focal_point(&focal_point) else { return Ok(Some(LinkAck::Forbidden)) };
        let principal = Principal::from_focal_point(fp, &self.directory);
        match self.acknowledge(&principal, incident, "email").await {
            Ok(result) if result.newly_acknowledged => {
                tracing::info!(%incident, focal_point = %fp.id, "acknowledged by email link");
                Ok(Some(LinkAck::Acknowledged(link)))
            }
            Ok(_) => Ok(Some(LinkAck::AlreadyAcknowledged(link))),
            Err(CommandError::Conflict { .. }) => Ok(Some(LinkAck::Closed(link))),
            Err(CommandError::Internal(e)) => Err(CommandError::Internal(e)),
            Err(_) => Ok(Some(LinkAck::Forbidden)),
        }
    }

    async fn link_record(&self, token: &str) -> CommandResult<Option<(AckLink, Uuid, String)>> {
        if !secret::looks_like_secret(token) {
            return Ok(None);
        }
        let Some(record) = self.store.ack_token(&secret::hash(token)).await? else { return Ok(None) };
        let Some((incident, _)) = self.store.incident(record.incident).await? else { return Ok(None) };
        let link = AckLink {
            reference: incident.reference.clone(),
            severity: incident.severity,
            acknowledged: incident.party_state(&record.party).is_some_and(|p| p.acknowledged),
            party: record.party,
            state: incident.state,
            used: record.used,
        };
        Ok(Some((link, record.incident, record.focal_point)))
    }
}
