//! SMS: GSM 03.38 / UCS-2 segment counting and the Twilio-compatible gateway.
//!
//! Segment counts matter because operators pay per segment and long concatenated SMS
//! arrive out of order or partly on some networks; the composer keeps pages short.

use std::sync::Arc;
use std::time::Duration;

use super::{Gateway, Page, SendError, Sent, compose, http_client, http_status_error, http_transport_error};
use crate::directory::Directory;

/// How an SMS body is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    /// GSM 03.38 default alphabet, 7 bits a character (extension characters take 2).
    Gsm7,
    /// UTF-16, needed as soon as one character is outside GSM-7.
    Ucs2,
}

/// GSM 03.38 basic character set (the escape code 0x1B excluded).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38 extension table: sent as escape + character, 2 septets each.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or None if it needs UCS-2.
fn septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// GSM-7 if every character is in the basic or extension table, else UCS-2.
pub fn encoding(text: &str) -> SmsEncoding {
    if text.chars().all(|c| septets(c).is_some()) { SmsEncoding::Gsm7 } else { SmsEncoding::Ucs2 }
}

/// The encoding and number of segments `text` is sent as: one segment holds 160 septets
/// (GSM-7) or 70 UTF-16 units (UCS-2); concatenated segments hold 153 / 67 because of the
/// user-data header. Units are packed the way handsets do: an escape pair or a surrogate
/// pair is never split across segments, which can cost an extra segment.
pub fn segments(text: &str) -> (SmsEncoding, usize) {
    let enc = encoding(text);
    let units: Vec<usize> = match enc {
        SmsEncoding::Gsm7 => text.chars().map(|c| septets(c).unwrap_or(1)).collect(),
        SmsEncoding::Ucs2 => text.chars().map(char::len_utf16).collect(),
    };
    let (single, multi) = match enc {
        SmsEncoding::Gsm7 => (160, 153),
        SmsEncoding::Ucs2 => (70, 67),
    };
    let total: usize = units.iter().sum();
    if total <= single {
        return (enc, 1);
    }
    let (mut count, mut used) = (1, 0);
    for u in units {
        if used + u > multi {
            count += 1;
            used = 0;
        }
        used += u;
    }
    (enc, count)
}

/// Twilio (or a compatible provider) Messages API.
pub struct TwilioGateway {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    from: String,
    status_callback_url: String,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for TwilioGateway {
    // The auth token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioGateway").field("url", &self.url).field("from", &self.from).finish_non_exhaustive()
    }
}

/// Twilio's own request timeout is far shorter; 10 s bounds a hung connection.
const TWILIO_TIMEOUT: Duration = Duration::from_secs(10);

impl TwilioGateway {
    /// `base_url` is `https://api.twilio.com` or a fake's URL. `from` is an E.164 number, or
    /// a Messaging Service SID (`MG…`), sent as `MessagingServiceSid`. An empty
    /// `status_callback_url` sends no `StatusCallback`.
    pub fn new(
        base_url: impl Into<String>,
        account_sid: impl Into<String>,
        auth_token: impl Into<String>,
        from: impl Into<String>,
        status_callback_url: impl Into<String>,
        directory: Arc<Directory>,
    ) -> anyhow::Result<TwilioGateway> {
        let base_url = base_url.into();
        let account_sid = account_sid.into();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            anyhow::bail!("sms.base_url must be an http(s) URL, got {base_url:?}");
        }
        if account_sid.is_empty() || !account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            anyhow::bail!("sms.account_sid must be non-empty and alphanumeric");
        }
        let url = format!("{}/2010-04-01/Accounts/{account_sid}/Messages.json", base_url.trim_end_matches('/'));
        Ok(TwilioGateway {
            client: http_client(TWILIO_TIMEOUT)?,
            url,
            account_sid,
            auth_token: auth_token.into(),
            from: from.into(),
            status_callback_url: status_callback_url.into(),
            directory,
        })
    }

    fn form(&self, to: &str, body: &str) -> String {
        let from_key = if self.from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let mut fields = vec![("To", to), (from_key, self.from.as_str()), ("Body", body)];
        if !self.status_callback_url.is_empty() {
            fields.push(("StatusCallback", self.status_callback_url.as_str()));
        }
        fields.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect::<Vec<_>>().join("&")
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct MessageResource {
    sid: Option<String>,
}

#[async_trait::async_trait]
impl Gateway for TwilioGateway {
    async fn send(&self, page: &Page) -> Result<Sent, SendError> {
        let Some(to) = page.recipient.phone.as_deref().filter(|p| !p.is_empty()) else {
            return Err(SendError::permanent(format!("recipient {} has no phone", page.recipient.id)));
        };
        super::refuse_outsider(page)?;
        let body = compose::sms_text(page, &self.directory);
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(self.form(to, &body))
            .send()
            .await
            .map_err(|e| http_transport_error("twilio", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(http_status_error("twilio", status, &headers, &text));
        }
        // Accepted: never turn this into an error, a retry would send the SMS twice.
        let provider_id = serde_json::from_str::<MessageResource>(&text).ok().and_then(|m| m.sid);
        if provider_id.is_none() {
            tracing::warn!(outbox_id = page.outbox_id, "twilio accepted the message but returned no sid");
        }
        let (encoding, segments) = segments(&body);
        tracing::debug!(outbox_id = page.outbox_id, ?encoding, segments, sid = ?provider_id, "sms sent");
        Ok(Sent { provider_id })
    }

    fn name(&self) -> &'static str {
        "twilio"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::domain::incident::Tlp;
    use base64::Engine;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn gsm7_lengths() {
        let a160 = "a".repeat(160);
        assert_eq!(segments(&a160), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"a".repeat(161)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&"a".repeat(306)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&"a".repeat(307)), (SmsEncoding::Gsm7, 3));
        assert_eq!(segments(""), (SmsEncoding::Gsm7, 1));
        // Extension characters count double.
        assert_eq!(segments(&"€".repeat(80)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"[".repeat(81)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&("a".repeat(159) + "€")), (SmsEncoding::Gsm7, 2));
        // An escape pair is not split: 152 septets then `€` moves to segment 2.
        assert_eq!(segments(&("a".repeat(152) + "€" + &"a".repeat(151))), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&("a".repeat(152) + "€" + &"a".repeat(152))), (SmsEncoding::Gsm7, 3));
        assert_eq!(encoding("Über café? ¿Año! @£$¥ Δ Ç {x} ~ \\"), SmsEncoding::Gsm7);
        assert_eq!(encoding("façade"), SmsEncoding::Ucs2, "only capital Ç is GSM-7");
        assert_eq!(encoding("curly ’quote’"), SmsEncoding::Ucs2);
    }

    #[test]
    fn ucs2_lengths() {
        assert_eq!(segments(&"ก".repeat(70)), (SmsEncoding::Ucs2, 1));
        assert_eq!(segments(&"ก".repeat(71)), (SmsEncoding::Ucs2, 2));
        assert_eq!(segments(&"中".repeat(134)), (SmsEncoding::Ucs2, 2));
        assert_eq!(segments(&"中".repeat(135)), (SmsEncoding::Ucs2, 3));
        // One non-GSM character turns the whole text into UCS-2.
        assert_eq!(segments(&("a".repeat(69) + "中")), (SmsEncoding::Ucs2, 1));
        // Emoji are two UTF-16 units.
        assert_eq!(segments(&"🚨".repeat(35)), (SmsEncoding::Ucs2, 1));
        assert_eq!(segments(&("🚨".repeat(35) + "a")), (SmsEncoding::Ucs2, 2));
        // 66 units then an emoji: the pair is not split, it opens segment 2.
        assert_eq!(segments(&("a".repeat(66) + "🚨" + &"a".repeat(65))), (SmsEncoding::Ucs2, 2));
        assert_eq!(segments(&("a".repeat(66) + "🚨" + &"a".repeat(66))), (SmsEncoding::Ucs2, 3));
    }

    async fn gateway(server: &MockServer) -> TwilioGateway {
        TwilioGateway::new(
            server.uri(),
            "AC123",
            "tok-secret",
            "+15005550006",
            "https://hub.example.org/hooks/twilio/status",
            testing::directory(),
        )
        .expect("gateway")
    }

    fn page() -> Page {
        testing::page(&testing::directory(), "th-drugs", Tlp::Amber)
    }

    fn form_fields(body: &[u8]) -> Vec<(String, String)> {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("utf-8")
        };
        let body = std::str::from_utf8(body).expect("utf-8 body");
        body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
    }

    #[tokio::test]
    async fn accepted_message_returns_sid_with_right_form_and_auth() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
            .respond_with(ResponseTemplate::new(201).set_body_string(r#"{"sid":"SM0123","status":"queued"}"#))
            .expect(1)
            .mount(&server)
            .await;
        let sent = gateway(&server).await.send(&page()).await.expect("sent");
        assert_eq!(sent.provider_id.as_deref(), Some("SM0123"));

        let requests = server.received_requests().await.expect("recorded");
        let req = &requests[0];
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok()).expect("auth header");
        let expected = base64::engine::general_purpose::STANDARD.encode("AC123:tok-secret");
        assert_eq!(auth, format!("Basic {expected}"));
        let fields = form_fields(&req.body);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("To").as_deref(), Some("+6625550101"));
        assert_eq!(get("From").as_deref(), Some("+15005550006"));
        assert_eq!(get("StatusCallback").as_deref(), Some("https://hub.example.org/hooks/twilio/status"));
        let body = get("Body").expect("Body");
        assert!(body.contains("K7Q2") && body.contains("ACK K7Q2"), "{body}");
        assert!(!body.contains("Zebra"), "amber SMS carries no title: {body}");
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let cases = [
            (ResponseTemplate::new(500), true, None),
            (ResponseTemplate::new(503).insert_header("Retry-After", "30"), true, Some(30)),
            (ResponseTemplate::new(429).insert_header("Retry-After", "7"), true, Some(7)),
            (ResponseTemplate::new(408), true, None),
            (
                ResponseTemplate::new(400).set_body_string(r#"{"code":21211,"message":"Invalid 'To' Phone Number"}"#),
                false,
                None,
            ),
            (ResponseTemplate::new(401), false, None),
            (ResponseTemplate::new(302).insert_header("Location", "http://elsewhere.invalid/"), false, None),
        ];
        for (response, temporary, retry_after) in cases {
            let server = MockServer::start().await;
            Mock::given(method("POST")).respond_with(response).mount(&server).await;
            let err = gateway(&server).await.send(&page()).await.expect_err("must fail");
            assert_eq!(err.is_temporary(), temporary, "{err}");
            if let SendError::Temporary { retry_after: got, .. } = &err {
                assert_eq!(*got, retry_after.map(Duration::from_secs), "{err}");
            }
            if err.reason().contains("21211") {
                assert!(err.reason().contains("Invalid 'To'"), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn no_phone_or_no_server() {
        let server = MockServer::start().await;
        let mut p = page();
        p.recipient.phone = None;
        let err = gateway(&server).await.send(&p).await.expect_err("no phone");
        assert!(!err.is_temporary() && err.reason().contains("no phone"), "{err}");

        let dead =
            TwilioGateway::new("http://127.0.0.1:9", "AC1", "t", "+1", "", testing::directory()).expect("gateway");
        let err = dead.send(&page()).await.expect_err("connection refused");
        assert!(err.is_temporary(), "{err}");
    }
}
