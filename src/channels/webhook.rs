//! Signed webhook calls to escalation bots.
//!
//! A bot is a principal inside the network and in the incident's audience, so the body
//! carries the full incident. Each call is signed with the bot's own secret:
//! `X-Focalpoint-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>` with
//! `X-Focalpoint-Timestamp: <unix seconds>`, so a bot can reject forged and replayed calls
//! ([`verify`]). Delivery is at least once: bots dedupe on `page_id`.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Gateway, Page, SendError, Sent, http_client, http_status_error, http_transport_error};

/// Looks up the webhook secret issued to a bot, by focal-point id.
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub const TIMESTAMP_HEADER: &str = "X-Focalpoint-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Focalpoint-Signature";

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts pages to each bot's `webhook_url`.
pub struct WebhookGateway {
    client: reqwest::Client,
    secret_for: SecretLookup,
}

impl WebhookGateway {
    pub fn new(secret_for: SecretLookup) -> anyhow::Result<WebhookGateway> {
        Ok(WebhookGateway { client: http_client(WEBHOOK_TIMEOUT)?, secret_for })
    }
}

/// The JSON body of a page call.
pub fn payload(page: &Page) -> serde_json::Value {
    serde_json::json!({
        "type": "page",
        "page_id": page.page_id,
        "incident": page.incident,
        "party": page.party,
        "step": page.step,
        "loop": page.loop_,
        "recipient": {
            "id": page.recipient.id,
            "name": page.recipient.name,
            "party": page.recipient.party,
        },
    })
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` only fails for fixed-size MACs.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Focalpoint-Signature` value: `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// A bot's webhook secret: hex HMAC-SHA256(`webhook.signing_key`, bot id). Derived, not
/// stored, so every node signs alike and `focalpoint bot secret <id>` can print it; rotating
/// the signing key rotates every bot's secret.
pub fn derive_secret(signing_key: &str, bot_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(signing_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(bot_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a received call: the timestamp is within `tolerance` of `now` (unix seconds)
/// and `header` holds a matching `v1=` signature (several may be given, comma-separated,
/// while a secret is rotated). Compared in constant time.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str, now: i64, tolerance: Duration) -> bool {
    if secret.is_empty() || now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let expected = sign(secret, timestamp, body);
    header
        .split(',')
        .map(str::trim)
        .filter(|s| s.starts_with("v1="))
        .fold(false, |found, candidate| found | bool::from(expected.as_bytes().ct_eq(candidate.as_bytes())))
}

#[async_trait::async_trait]
impl Gateway for WebhookGateway {
    async fn send(&self, page: &Page) -> Result<Sent, SendError> {
        let r = &page.recipient;
        let Some(url) = r.webhook_url.as_deref().filter(|u| !u.is_empty()) else {
            return Err(SendError::permanent(format!("recipient {} has no webhook_url", r.id)));
        };
        super::refuse_outsider(page)?;
        let Some(secret) = (self.secret_for)(&r.id).filter(|s| !s.is_empty()) else {
            return Err(SendError::permanent(format!("no secret issued for bot {}", r.id)));
        };
        let body = serde_json::to_vec(&payload(page))
            .map_err(|e| SendError::permanent(format!("cannot encode the page: {e}")))?;
        // Signed at send time, so a retry carries a fresh timestamp.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&secret, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| http_transport_error("webhook", &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Sent { provider_id: None });
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Err(http_status_error("webhook", status, &headers, &text))
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::domain::incident::Tlp;
    use wiremock::matchers::{header_exists, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TOLERANCE: Duration = Duration::from_secs(300);

    #[test]
    fn sign_and_verify() {
        let body = br#"{"type":"page"}"#;
        let sig = sign("s3cret", 1_767_600_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        assert!(verify("s3cret", 1_767_600_000, body, &sig, 1_767_600_010, TOLERANCE));
        assert!(verify("s3cret", 1_767_600_000, body, &format!("v1=00, {sig}"), 1_767_600_000, TOLERANCE));
        // Tampered body, timestamp, secret or signature.
        assert!(!verify("s3cret", 1_767_600_000, br#"{"type":"pagE"}"#, &sig, 1_767_600_000, TOLERANCE));
        assert!(!verify("s3cret", 1_767_600_001, body, &sig, 1_767_600_000, TOLERANCE));
        assert!(!verify("other", 1_767_600_000, body, &sig, 1_767_600_000, TOLERANCE));
        assert!(!verify("s3cret", 1_767_600_000, body, &sig.replace("v1=", "v0="), 1_767_600_000, TOLERANCE));
        assert!(!verify("s3cret", 1_767_600_000, body, "", 1_767_600_000, TOLERANCE));
        // Stale or future timestamps.
        assert!(!verify("s3cret", 1_767_600_000, body, &sig, 1_767_600_301, TOLERANCE));
        assert!(!verify("s3cret", 1_767_600_000, body, &sig, 1_767_599_699, TOLERANCE));
    }

    #[test]
    fn known_answer() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac key
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"key").expect("key");
        m.update(b"1700000000.{}");
        assert_eq!(sign("key", 1_700_000_000, b"{}"), format!("v1={}", hex::encode(m.finalize().into_bytes())));
    }

    fn gateway(secret: Option<&'static str>) -> WebhookGateway {
        WebhookGateway::new(Arc::new(move |id: &str| (id == "vn-bot").then_some(secret).flatten().map(String::from)))
            .expect("gateway")
    }

    fn bot_page(url: &str, tlp: Tlp) -> Page {
        let mut page = testing::page(&testing::directory(), "vn-bot", tlp);
        page.recipient.webhook_url = Some(url.to_string());
        page.incident.parties.push("VN".into());
        page
    }

    #[tokio::test]
    async fn posts_signed_full_incident() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/hook"))
            .and(header_exists(SIGNATURE_HEADER))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let page = bot_page(&format!("{}/hook", server.uri()), Tlp::Amber);
        gateway(Some("bot-secret")).send(&page).await.expect("delivered");
        let requests = server.received_requests().await.expect("recorded");
        let req = &requests[0];
        let ts: i64 =
            req.headers.get(TIMESTAMP_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("ts");
        let sig = req.headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).expect("sig");
        assert!(verify("bot-secret", ts, &req.body, sig, chrono::Utc::now().timestamp(), TOLERANCE));
        let json: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(json["type"], "page");
        assert_eq!(json["incident"]["ref"], "K7Q2");
        assert_eq!(json["incident"]["title"], testing::TITLE, "bots inside the audience get the full incident");
        assert_eq!(json["party"], "TH");
        assert_eq!(json["recipient"]["id"], "vn-bot");
        assert_eq!(json["page_id"], "p42", "the sealed id, never the outbox row number");
    }

    #[tokio::test]
    async fn refusals_and_errors() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/busy"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
            .mount(&server)
            .await;
        Mock::given(method("POST")).and(path("/gone")).respond_with(ResponseTemplate::new(410)).mount(&server).await;
        let url = |p: &str| format!("{}{p}", server.uri());

        let err = gateway(None).send(&bot_page(&url("/busy"), Tlp::Amber)).await.expect_err("no secret");
        assert!(!err.is_temporary() && err.reason().contains("no secret issued"), "{err}");

        let err = gateway(Some("s")).send(&bot_page(&url("/busy"), Tlp::Amber)).await.expect_err("429");
        assert_eq!(
            err,
            SendError::Temporary { reason: err.reason().to_string(), retry_after: Some(Duration::from_secs(7)) }
        );

        let err = gateway(Some("s")).send(&bot_page(&url("/gone"), Tlp::Amber)).await.expect_err("410");
        assert!(!err.is_temporary(), "{err}");

        let mut outsider = bot_page(&url("/busy"), Tlp::AmberStrict);
        outsider.incident.parties.retain(|p| p != "VN");
        let err = gateway(Some("s")).send(&outsider).await.expect_err("outside audience");
        assert!(!err.is_temporary() && err.reason().contains("outside the audience"), "{err}");

        let mut no_url = bot_page(&url("/busy"), Tlp::Green);
        no_url.recipient.webhook_url = None;
        let err = gateway(Some("s")).send(&no_url).await.expect_err("no url");
        assert!(err.reason().contains("no webhook_url"), "{err}");

        let err = gateway(Some("s")).send(&bot_page("http://127.0.0.1:9/x", Tlp::Green)).await.expect_err("refused");
        assert!(err.is_temporary(), "{err}");
    }
}
