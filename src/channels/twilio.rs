//! Pure helpers for the inbound Twilio hooks (`/hooks/twilio/sms`, `/hooks/twilio/status`):
//! request signatures, SMS reply parsing and the TwiML answer.
//!
//! The signature is computed over the URL the hub is configured to be reached at
//! (`server.public_url` + path), never over the Host header (DESIGN.md §6): a forged Host
//! would otherwise let an attacker choose the signed string.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + name₁value₁ + …)) with
/// the POST parameters sorted by name (then value, for repeated names).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = String::from(url);
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// True when `header_value` is the signature of this request; compared in constant time.
/// An empty token or header never validates.
pub fn signature_valid(auth_token: &str, url: &str, params: &[(String, String)], header_value: &str) -> bool {
    if auth_token.is_empty() || header_value.trim().is_empty() {
        return false;
    }
    let expected = signature(auth_token, url, params);
    expected.as_bytes().ct_eq(header_value.trim().as_bytes()).into()
}

/// The ref acknowledged by an SMS reply, normalised (`K7Q2`), or None if the text is not
/// an ack. Accepts `ACK K7Q2`, `ack k7q2`, `K7Q2 A`, `k7q2 ack`, with any surrounding
/// whitespace or punctuation; anything else (more words, other verbs) is not an ack,
/// so a chatty reply never acknowledges by accident.
pub fn parse_reply(body: &str) -> Option<String> {
    let words: Vec<&str> = body.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let is_ack = |w: &str| w.eq_ignore_ascii_case("ack");
    match words.as_slice() {
        [verb, reference] if is_ack(verb) => crate::domain::reference::normalise(reference),
        [reference, verb] if is_ack(verb) || verb.eq_ignore_ascii_case("a") => {
            crate::domain::reference::normalise(reference)
        }
        _ => None,
    }
}

/// The TwiML answer to an inbound SMS: one reply message, XML-escaped.
pub fn reply_twiml(message: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>", escape_xml(message))
}

/// An empty TwiML answer (no reply SMS), for duplicates and non-acks the hook ignores.
pub fn empty_twiml() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_string()
}

fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [("MessageSid", "SM1"), ("From", "+6625550101"), ("Body", "ACK K7Q2"), ("To", "+15005550006")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const URL: &str = "https://hub.example.org/hooks/twilio/sms";

    #[test]
    fn known_answer() {
        // Computed independently: the documented concatenation, sorted by hand.
        let data = format!("{URL}BodyACK K7Q2From+6625550101MessageSidSM1To+15005550006");
        let mut mac = Hmac::<Sha1>::new_from_slice(b"12345").expect("key");
        mac.update(data.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature("12345", URL, &params()), expected);
        assert!(signature_valid("12345", URL, &params(), &expected));
        assert!(signature_valid("12345", URL, &params(), &format!(" {expected} ")));
    }

    #[test]
    fn twilio_documented_example() {
        // The example of Twilio's "webhooks security" documentation.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(signature("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn tampering_invalidates() {
        let good = signature("12345", URL, &params());
        let mut changed = params();
        changed[2].1 = "ACK K7Q3".into();
        assert!(!signature_valid("12345", URL, &changed, &good));
        assert!(!signature_valid("12345", "https://evil.example.org/hooks/twilio/sms", &params(), &good));
        assert!(!signature_valid("54321", URL, &params(), &good));
        assert!(!signature_valid("12345", URL, &params(), ""));
        assert!(!signature_valid("", URL, &params(), &signature("", URL, &params())));
        let mut extra = params();
        extra.push(("Extra".into(), "1".into()));
        assert!(!signature_valid("12345", URL, &extra, &good));
    }

    #[test]
    fn replies() {
        // Refs never contain 0/O, 1/I/L, 2/Z, 5/S, 8/B (see `domain::reference`), so K7Q2 is not one.
        for ok in ["ACK K7Q9", "ack k7q9", "K7Q9 A", "k7q9 ack", "  Ack: K7Q9!  ", "k7q9, a.", "\nACK\tk7q9\n"] {
            assert_eq!(parse_reply(ok).as_deref(), Some("K7Q9"), "{ok:?}");
        }
        for bad in [
            "",
            "ACK",
            "K7Q9",
            "ACK K0Q9",
            "ACK K7Q2",
            "yes K7Q9",
            "ACK K7Q9 please",
            "A K7Q9",
            "ACK ACK",
            "ACKK7Q9",
            "ACK กขค",
        ] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn twiml_is_escaped() {
        assert_eq!(
            reply_twiml("Acked K7Q2 <TH> & \"co\"\u{1}"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Acked K7Q2 &lt;TH&gt; &amp; &quot;co&quot;</Message></Response>"
        );
    }
}
