//! `log` gateways: the embedded default needs no SMS or SMTP credentials, so pages are
//! written to the log instead (DESIGN.md §5). They compose exactly what would be sent, so
//! a drill against the log shows the real text.

use std::sync::Arc;

use super::{Gateway, Page, SendError, Sent, compose};
use crate::directory::Directory;

/// Logs each SMS page; always succeeds.
pub struct LogSmsGateway {
    directory: Arc<Directory>,
}

impl LogSmsGateway {
    pub fn new(directory: Arc<Directory>) -> LogSmsGateway {
        LogSmsGateway { directory }
    }
}

#[async_trait::async_trait]
impl Gateway for LogSmsGateway {
    async fn send(&self, page: &Page) -> Result<Sent, SendError> {
        let text = compose::sms_text(page, &self.directory);
        let (encoding, segments) = super::sms::segments(&text);
        tracing::info!(
            outbox_id = page.outbox_id,
            incident = %page.incident.id,
            reference = %page.incident.reference,
            recipient = %page.recipient.id,
            phone = page.recipient.phone.as_deref().unwrap_or("-"),
            ?encoding,
            segments,
            text = %text,
            "sms (log gateway)"
        );
        Ok(Sent { provider_id: None })
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

/// Logs each email page; always succeeds.
pub struct LogEmailGateway {
    directory: Arc<Directory>,
}

impl LogEmailGateway {
    pub fn new(directory: Arc<Directory>) -> LogEmailGateway {
        LogEmailGateway { directory }
    }
}

#[async_trait::async_trait]
impl Gateway for LogEmailGateway {
    async fn send(&self, page: &Page) -> Result<Sent, SendError> {
        let mail = compose::email(page, &self.directory);
        tracing::info!(
            outbox_id = page.outbox_id,
            incident = %page.incident.id,
            reference = %page.incident.reference,
            recipient = %page.recipient.id,
            email = page.recipient.email.as_deref().unwrap_or("-"),
            subject = %mail.subject,
            text = %mail.text,
            "email (log gateway)"
        );
        Ok(Sent { provider_id: None })
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::domain::incident::Tlp;

    #[tokio::test]
    async fn log_gateways_always_succeed() {
        let d = testing::directory();
        let mut page = testing::page(&d, "th-drugs", Tlp::Red);
        page.recipient.phone = None;
        page.recipient.email = None;
        assert_eq!(LogSmsGateway::new(d.clone()).send(&page).await, Ok(Sent { provider_id: None }));
        assert_eq!(LogEmailGateway::new(d).send(&page).await, Ok(Sent { provider_id: None }));
    }
}
