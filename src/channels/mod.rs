//! Channel gateways: turn one page (an outbox row) into an SMS, an email or a signed bot
//! webhook call, plus the pure helpers the inbound hooks need (Twilio signatures, SMS
//! reply parsing, TwiML).
//!
//! Every gateway implements [`Gateway`]. The outbox dispatcher (leases, retries, backoff)
//! lives in the engine and only looks at the [`SendError`] kind; this module never
//! retries on its own, so a page is sent at most once per call and the at-least-once
//! promise (DESIGN.md §3.2) is the dispatcher's.
//!
//! SMS and email leave the network's boundary, so their text is composed by [`compose`],
//! which applies the TLP rule of DESIGN.md §4 (pointer only for amber and above).
//! Webhooks go to bots inside the network and carry the full incident. Every real
//! gateway refuses (`Permanent`) a recipient outside the incident's audience
//! ([`in_audience`]), a backstop for the planner's own rule.

pub mod compose;
pub mod email;
pub mod log;
pub mod sms;
pub mod twilio;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::directory::{Channel, Directory, FocalPoint, Role};
use crate::domain::incident::Incident;
use crate::domain::visibility::{self, Audience};

pub use compose::EmailContent;
pub use email::SmtpGateway;
pub use log::{LogEmailGateway, LogSmsGateway};
pub use sms::{SmsEncoding, TwilioGateway};
pub use webhook::{SecretLookup, WebhookGateway};

/// One outbox row, ready to send.
#[derive(Debug, Clone)]
pub struct Page {
    pub outbox_id: i64,
    /// The outbox id sealed (see [`crate::domain::cursor::Cursors::page_ids`]): what
    /// recipients see, the same for every resend. The plain id numbers every page of the
    /// hub, so a bot could count the pages that went to others.
    pub page_id: String,
    /// Snapshot of the incident when the page was written.
    pub incident: Incident,
    pub recipient: FocalPoint,
    /// The party being escalated (a coordinator may be paged for another party).
    pub party: String,
    pub channel: Channel,
    pub step: u32,
    pub loop_: u32,
    /// Email: the single-use ack link (built by the caller).
    pub ack_url: Option<String>,
    /// True when SMS replies can ack (the Twilio gateway is configured).
    pub sms_reply_hint: bool,
}

/// What a gateway reports for an accepted page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The provider's message id (Twilio `SM…`), matched by delivery callbacks.
    pub provider_id: Option<String>,
}

/// Why a page was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The caller may retry later: timeouts, connection errors, HTTP 408/429/5xx, SMTP 4xx.
    /// `retry_after` is the provider's own hint (HTTP `Retry-After`), when it gave one.
    Temporary { reason: String, retry_after: Option<Duration> },
    /// Do not retry: HTTP 4xx other than 408/429, SMTP 5xx, a recipient without the
    /// address the channel needs, a recipient outside the incident's audience.
    Permanent { reason: String },
}

impl SendError {
    pub fn temporary(reason: impl Into<String>) -> SendError {
        SendError::Temporary { reason: reason.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError::Permanent { reason: reason.into() }
    }

    pub fn reason(&self) -> &str {
        match self {
            SendError::Temporary { reason, .. } | SendError::Permanent { reason } => reason,
        }
    }

    pub fn is_temporary(&self) -> bool {
        matches!(self, SendError::Temporary { .. })
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Temporary { reason, retry_after: Some(d) } => {
                write!(f, "temporary: {reason} (retry after {}s)", d.as_secs())
            }
            SendError::Temporary { reason, .. } => write!(f, "temporary: {reason}"),
            SendError::Permanent { reason } => write!(f, "permanent: {reason}"),
        }
    }
}

impl std::error::Error for SendError {}

/// A way to deliver a page.
///
/// Delivery semantics: `send` makes at most one delivery attempt per call and never
/// retries internally. `Ok` means the provider accepted the page. `Err(Temporary)` means
/// the caller may retry later (timeouts, connection errors, HTTP 5xx, 408, 429 with
/// `Retry-After` seconds or HTTP-date parsed into `retry_after`, SMTP 4xx); the attempt
/// may still have been delivered (a timeout after the provider accepted), so a retry can
/// duplicate a page, never lose one. `Err(Permanent)` means do not retry (HTTP 4xx other
/// than 408/429, SMTP 5xx, a recipient with no phone/email/webhook_url, no webhook secret).
#[async_trait::async_trait]
pub trait Gateway: Send + Sync {
    async fn send(&self, page: &Page) -> Result<Sent, SendError>;
    /// Short name for logs, metrics and notification events (`twilio`, `smtp`, `log`, `webhook`).
    fn name(&self) -> &'static str;
}

/// The gateways the dispatcher uses, one per outbound channel.
#[derive(Clone)]
pub struct Gateways {
    pub sms: Arc<dyn Gateway>,
    pub email: Arc<dyn Gateway>,
    pub webhook: Arc<dyn Gateway>,
}

impl Gateways {
    /// Builds the configured gateways: SMS `log` or `twilio`, email `log` or `smtp`, and
    /// always the real webhook gateway (the bot URL comes from the directory).
    ///
    /// Needs more than the settings: SMS and email text is composed with the directory
    /// (field names, the recipient party's time zone) and webhooks are signed with the
    /// per-bot secret that `webhook_secret` looks up by focal-point id. Twilio delivery
    /// callbacks go to `{server.public_url}/hooks/twilio/status`.
    pub fn from_settings(
        settings: &crate::config::Settings,
        directory: Arc<Directory>,
        webhook_secret: SecretLookup,
    ) -> anyhow::Result<Gateways> {
        let sms: Arc<dyn Gateway> = match settings.sms.gateway.as_str() {
            "log" => Arc::new(LogSmsGateway::new(directory.clone())),
            "twilio" => {
                let s = &settings.sms;
                if s.account_sid.is_empty() || s.auth_token.is_empty() || s.from.is_empty() {
                    anyhow::bail!("sms.gateway = \"twilio\" needs sms.account_sid, sms.auth_token and sms.from");
                }
                let callback = format!("{}/hooks/twilio/status", settings.server.public_url.trim_end_matches('/'));
                Arc::new(TwilioGateway::new(
                    &s.base_url,
                    &s.account_sid,
                    &s.auth_token,
                    &s.from,
                    callback,
                    directory.clone(),
                )?)
            }
            other => anyhow::bail!("sms.gateway must be `log` or `twilio`, got {other:?}"),
        };
        let email: Arc<dyn Gateway> = match settings.email.gateway.as_str() {
            "log" => Arc::new(LogEmailGateway::new(directory.clone())),
            "smtp" => Arc::new(SmtpGateway::new(&settings.email, directory.clone())?),
            other => anyhow::bail!("email.gateway must be `log` or `smtp`, got {other:?}"),
        };
        let webhook: Arc<dyn Gateway> = Arc::new(WebhookGateway::new(webhook_secret)?);
        Ok(Gateways { sms, email, webhook })
    }

    /// The gateway for a channel; None for `dashboard`, which the live feed serves.
    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Gateway>> {
        match channel {
            Channel::Sms => Some(&self.sms),
            Channel::Email => Some(&self.email),
            Channel::Webhook => Some(&self.webhook),
            Channel::Dashboard => None,
        }
    }
}

/// Backstop for the dispatcher's own checks: is the recipient in the incident's audience?
/// Uses the one visibility function. Coordinators pass where the label lets escalation
/// bring them in (the snapshot does not record whether it already has).
pub fn in_audience(page: &Page) -> bool {
    let i = &page.incident;
    let mut audience = Audience::of(i.tlp, &i.originator, &i.parties, &i.recipients);
    if visibility::coordinators_allowed(i.tlp) {
        audience.0.push(visibility::COORDINATORS.to_string());
    }
    let r = &page.recipient;
    let mut keys =
        vec![visibility::ALL.to_string(), visibility::party_key(&r.party), visibility::focal_point_key(&r.id)];
    if r.has_role(Role::Coordinator) {
        keys.push(visibility::COORDINATORS.to_string());
    }
    visibility::may_see(&keys, &audience, None, &r.id)
}

/// `Permanent` when the recipient is outside the incident's audience ([`in_audience`]).
pub(crate) fn refuse_outsider(page: &Page) -> Result<(), SendError> {
    if in_audience(page) {
        return Ok(());
    }
    Err(SendError::permanent(format!(
        "recipient {} is outside the audience of incident {}",
        page.recipient.id, page.incident.reference
    )))
}

/// Builds the HTTP client for the HTTP gateways: no redirects (a signed request must not
/// be replayed elsewhere, and Twilio never redirects), the given overall timeout.
pub(crate) fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    crate::crypto::install();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("focalpoint/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

/// Longest `Retry-After` honoured; a provider asking for more is retried on our schedule.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// Maps a finished HTTP exchange that was not 2xx to a [`SendError`].
pub(crate) fn http_status_error(
    what: &str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> SendError {
    let detail = snippet(body);
    let reason = if detail.is_empty() {
        format!("{what} answered HTTP {}", status.as_u16())
    } else {
        format!("{what} answered HTTP {}: {detail}", status.as_u16())
    };
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        SendError::Temporary { reason, retry_after }
    } else {
        SendError::Permanent { reason }
    }
}

/// Maps a transport-level reqwest error (no HTTP answer) to a [`SendError`].
pub(crate) fn http_transport_error(what: &str, e: &reqwest::Error) -> SendError {
    if e.is_builder() {
        // A malformed URL will not fix itself.
        return SendError::permanent(format!("{what}: invalid request: {e}"));
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    SendError::temporary(format!("{what}: {kind}: {e}"))
}

/// The first line-ish part of a provider's answer, for error reasons.
fn snippet(body: &str) -> String {
    let s: String = body.chars().filter(|c| !c.is_control()).take(300).collect();
    s.trim().to_string()
}

/// Fixtures shared by the gateway unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::domain::incident::{Area, Certainty, Content, Originator, Severity, Status, Tlp, Urgency};

    /// Distinctive strings that must never leave the network for amber and above.
    pub const TITLE: &str = "Zebra-Tango shipment at Mae Sai";
    pub const DESCRIPTION: &str = "Informant Quokka reports <b>4 trucks</b> & a boat";
    pub const AREA: &str = "Golden Triangle Wharf 9";

    const NETWORK: &str = r#"
[[party]]
code = "TH"
name = "Thailand"
timezone = "Asia/Bangkok"
languages = ["th", "en"]

[[party]]
code = "VN"
name = "Viet Nam"
timezone = "Asia/Ho_Chi_Minh"
languages = ["vi", "en"]

[[field]]
id = "drug-trafficking"
name = "Drug trafficking"

[[focal_point]]
id = "th-drugs"
name = "Somchai P."
party = "TH"
roles = ["focal"]
fields = ["drug-trafficking"]
level = 1
phone = "+6625550101"
email = "th-drugs@th.example.org"
channels = ["dashboard", "sms", "email"]

[[focal_point]]
id = "th-chief"
name = "TH chief"
party = "TH"
roles = ["focal"]
fields = ["*"]
level = 2
language = "en"
phone = "+6625550102"
email = "th-chief@th.example.org"
channels = ["dashboard", "sms", "email"]

[[focal_point]]
id = "vn-bot"
name = "VN pager bot"
party = "VN"
roles = ["bot"]
fields = ["*"]
channels = ["webhook"]
webhook_url = "http://127.0.0.1:9/hook"

[[policy]]
party = "*"
field = "*"
steps = [{ notify = "level:1", wait = "5m", channels = ["sms"] }]
"#;

    pub fn directory() -> Arc<Directory> {
        match Directory::parse(NETWORK) {
            Ok(d) => Arc::new(d),
            Err(problems) => panic!("test network invalid: {problems:?}"),
        }
    }

    /// A page for `recipient` about a TH drug incident addressed to TH.
    pub fn page(d: &Directory, recipient: &str, tlp: Tlp) -> Page {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-05T07:30:00Z").map(|t| t.to_utc()).expect("time");
        let content = Content {
            title: TITLE.into(),
            description: DESCRIPTION.into(),
            field: "drug-trafficking".into(),
            severity: Severity::Severe,
            urgency: Urgency::Immediate,
            certainty: Certainty::Likely,
            status: Status::Actual,
            tlp,
            parties: vec!["TH".into()],
            recipients: Vec::new(),
            area: Some(Area { text: AREA.into(), lat: None, lon: None }),
            dedup_key: None,
        };
        let originator = Originator { party: "TH".into(), officer: "th-duty".into() };
        let incident = Incident::new(uuid::Uuid::nil(), "K7Q2".into(), originator, content, at);
        let recipient = d.focal_point(recipient).cloned().expect("recipient in test network");
        Page {
            outbox_id: 42,
            page_id: "p42".into(),
            incident,
            recipient,
            party: "TH".into(),
            channel: Channel::Sms,
            step: 0,
            loop_: 0,
            ack_url: Some("https://hub.example.org/ack/tok123".into()),
            sms_reply_hint: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z").map(|d| d.to_utc()).expect("date");
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Mon, 05 Jan 2026 08:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Mon, 05 Jan 2026 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn audience_backstop() {
        use crate::domain::incident::Tlp;
        let d = testing::directory();
        let mut page = testing::page(&d, "th-drugs", Tlp::Red);
        page.incident.recipients = vec!["th-drugs".into()];
        assert!(in_audience(&page));
        page.incident.recipients = vec!["th-chief".into()];
        assert!(!in_audience(&page), "red goes to named recipients only");
        page.incident.tlp = Tlp::Amber;
        assert!(in_audience(&page));
        let mut vn = testing::page(&d, "vn-bot", Tlp::AmberStrict);
        assert!(!in_audience(&vn), "VN is not addressed");
        vn.incident.tlp = Tlp::Green;
        assert!(in_audience(&vn));
    }
}
