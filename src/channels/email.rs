//! Email pages over SMTP (lettre, pooled, on rustls with the ring provider).
//!
//! Each page is a multipart/alternative message (text + HTML) with a Message-ID derived
//! from the page, `<page-{page_id}-{incident}@focalpoint>`: a resend after a crash is the
//! same message, so mail clients and relays that dedupe on Message-ID show it once.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Gateway, Page, SendError, Sent, compose};
use crate::config::EmailSettings;
use crate::directory::Directory;

/// Per SMTP command; also bounds connecting.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Backstop for a whole send (connect, EHLO, TLS, AUTH, MAIL, RCPT, DATA).
const SEND_DEADLINE: Duration = Duration::from_secs(60);

/// Sends page emails through one SMTP relay.
pub struct SmtpGateway {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for SmtpGateway {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpGateway").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl SmtpGateway {
    /// `tls`: `none` (plain, for local relays and tests), `starttls` (upgrade required) or
    /// `tls` (implicit TLS). Credentials are used when `username` is non-empty.
    ///
    /// Must be called inside a Tokio runtime: the connection pool starts a task.
    pub fn new(settings: &EmailSettings, directory: Arc<Directory>) -> anyhow::Result<SmtpGateway> {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("the SMTP gateway must be built inside a Tokio runtime (its pool runs a task)");
        }
        crate::crypto::install();
        let host = settings.host.as_str();
        if host.is_empty() {
            anyhow::bail!("email.host is empty");
        }
        let builder = match settings.tls.as_str() {
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| anyhow::anyhow!("email: cannot set up STARTTLS for {host}: {e}"))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| anyhow::anyhow!("email: cannot set up TLS for {host}: {e}"))?,
            other => anyhow::bail!("email.tls must be `none`, `starttls` or `tls`, got {other:?}"),
        };
        let mut builder = builder.port(settings.port).timeout(Some(SMTP_TIMEOUT));
        if !settings.username.is_empty() {
            builder = builder.credentials(Credentials::new(settings.username.clone(), settings.password.clone()));
        }
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from {:?} is not an address: {e}", settings.from))?;
        Ok(SmtpGateway { transport: builder.build(), from, directory })
    }

    /// The message for a page (public so tests and previews can look at it).
    pub fn message(&self, page: &Page) -> Result<Message, SendError> {
        let r = &page.recipient;
        let Some(address) = r.email.as_deref().filter(|e| !e.is_empty()) else {
            return Err(SendError::permanent(format!("recipient {} has no email", r.id)));
        };
        super::refuse_outsider(page)?;
        let address = address
            .parse()
            .map_err(|e| SendError::permanent(format!("recipient {} email {address:?} is invalid: {e}", r.id)))?;
        let to = Mailbox::new(Some(r.name.clone()), address);
        let content = compose::email(page, &self.directory);
        let header = |name: &'static str, value: String| HeaderValue::new(HeaderName::new_from_ascii_str(name), value);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(content.subject)
            .message_id(Some(message_id(page)))
            .raw_header(header("X-Focalpoint-Incident", page.incident.id.to_string()))
            .raw_header(header("X-Focalpoint-Ref", page.incident.reference.clone()))
            // Keeps vacation responders from answering pages.
            .raw_header(header("Auto-Submitted", "auto-generated".into()))
            .multipart(MultiPart::alternative_plain_html(content.text, content.html))
            .map_err(|e| SendError::permanent(format!("cannot build the email: {e}")))
    }
}

/// `<page-{page_id}-{incident id}@focalpoint>`: the same for every resend of a page.
pub fn message_id(page: &Page) -> String {
    format!("<page-{}-{}@focalpoint>", page.page_id, page.incident.id)
}

/// SMTP 4xx and connection trouble may pass; 5xx and client-side refusals will not.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let reason = format!("smtp: {e}");
    if e.is_permanent() {
        SendError::permanent(reason)
    } else if e.is_client() {
        // lettre refused before sending (e.g. 8BITMIME missing): a retry changes nothing.
        SendError::permanent(reason)
    } else {
        // Transient 4xx, timeouts, connection, TLS and response errors.
        SendError::temporary(reason)
    }
}

#[async_trait::async_trait]
impl Gateway for SmtpGateway {
    async fn send(&self, page: &Page) -> Result<Sent, SendError> {
        let message = self.message(page)?;
        match tokio::time::timeout(SEND_DEADLINE, self.transport.send(message)).await {
            Err(_) => Err(SendError::temporary(format!("smtp: no answer within {}s", SEND_DEADLINE.as_secs()))),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(_response)) => Ok(Sent { provider_id: Some(message_id(page)) }),
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::domain::incident::Tlp;

    fn settings() -> EmailSettings {
        EmailSettings { host: "127.0.0.1".into(), port: 9, tls: "none".into(), ..EmailSettings::default() }
    }

    #[test]
    fn needs_a_runtime() {
        assert!(SmtpGateway::new(&settings(), testing::directory()).is_err());
    }

    #[tokio::test]
    async fn message_has_stable_id_headers_and_both_parts() {
        let d = testing::directory();
        let gw = SmtpGateway::new(&settings(), d.clone()).expect("gateway");
        let page = testing::page(&d, "th-chief", Tlp::Amber);
        let raw = String::from_utf8(gw.message(&page).expect("message").formatted()).expect("ascii");
        let id = "<page-p42-00000000-0000-0000-0000-000000000000@focalpoint>";
        assert!(raw.contains(&format!("Message-ID: {id}")), "{raw}");
        assert!(raw.contains("X-Focalpoint-Ref: K7Q2") && raw.contains("X-Focalpoint-Incident: 00000000-"), "{raw}");
        assert!(raw.contains("multipart/alternative") && raw.contains("text/plain") && raw.contains("text/html"));
        assert!(!raw.contains("Zebra"), "{raw}");
    }

    #[tokio::test]
    async fn refusals() {
        let d = testing::directory();
        let gw = SmtpGateway::new(&settings(), d.clone()).expect("gateway");
        let mut page = testing::page(&d, "th-chief", Tlp::Amber);
        page.recipient.email = None;
        let err = gw.send(&page).await.expect_err("no email");
        assert!(!err.is_temporary() && err.reason().contains("no email"), "{err}");
        page.recipient.email = Some("th-chief@th.example.org".into());
        let err = gw.send(&page).await.expect_err("nothing listens on port 9");
        assert!(err.is_temporary(), "{err}");
        let bad = EmailSettings { tls: "ssl".into(), ..settings() };
        assert!(SmtpGateway::new(&bad, d.clone()).is_err());
        let bad = EmailSettings { from: "not an address".into(), ..settings() };
        assert!(SmtpGateway::new(&bad, d).is_err());
    }
}
