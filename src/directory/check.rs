//! Small, pure format checks used while validating a network file. Each returns
//! `Err(reason)` with a reason that reads after "… is …" or stands alone.

use std::time::Duration;

/// Longest accepted free-text value (names, emails, URLs).
pub const MAX_STRING: usize = 200;
/// Longest accepted id (field and focal point ids).
pub const MAX_ID: usize = 64;
/// Longest accepted wait: an escalation that waits a week is a mistake.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Maps byte offsets to 1-based line numbers; built once per file so 10,000
/// entries do not rescan the text.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(src: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(src.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// 1-based line containing byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// Quotes a user value for a message, cut short so a 4 MiB string is never echoed.
pub fn quote(s: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::from("`");
    for (n, c) in s.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// Free text: bounded, single-line, no control characters (these end up in SMS
/// bodies and log lines).
pub fn text(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("is empty".into());
    }
    if s.chars().count() > MAX_STRING {
        return Err(format!("is longer than {MAX_STRING} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// Ids appear in URLs, SMS replies and logs, hence the small alphabet.
pub fn id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_ID {
        return Err(format!("is longer than {MAX_ID} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("may only contain a-z, 0-9 and `-`".into());
    }
    Ok(())
}

/// Two uppercase letters (ISO 3166 style) or `ASEAN`.
pub fn party_code(s: &str) -> Result<(), String> {
    if s == "ASEAN" || (s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())) {
        Ok(())
    } else {
        Err("is not two uppercase letters or `ASEAN`".into())
    }
}

/// BCP-47-ish: a 2–3 letter lowercase language, then optional `-subtag`s.
pub fn language(s: &str) -> Result<(), String> {
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or("");
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let rest_ok = parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if lang_ok && rest_ok && s.len() <= 35 {
        Ok(())
    } else {
        Err("is not a language code like `th` or `zh-Hans`".into())
    }
}

/// E.164: `+`, then 8 to 15 digits, the first not 0. No spaces: the SMS
/// gateway and inbound matching compare the exact string.
pub fn e164(s: &str) -> Result<(), String> {
    let ok = s
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'));
    if ok { Ok(()) } else { Err("is not E.164 (`+` then 8-15 digits, no spaces)".into()) }
}

/// A deliberately loose email check: one `@`, a non-empty local part and a
/// dotted domain. The SMTP server is the real judge; this catches typos.
pub fn email(s: &str) -> Result<(), String> {
    text(s)?;
    let bad = || Err("is not an email address (one `@` and a dotted domain)".to_string());
    let Some((local, domain)) = s.split_once('@') else {
        return bad();
    };
    if local.is_empty() || domain.contains('@') || s.chars().any(char::is_whitespace) {
        return bad();
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return bad();
    }
    Ok(())
}

/// An http(s) URL with a host; anything else could not be delivered to.
pub fn webhook_url(s: &str) -> Result<(), String> {
    text(s)?;
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.chars().any(char::is_whitespace) => Ok(()),
        _ => Err("is not an http:// or https:// URL".into()),
    }
}

/// Parses waits like `30s`, `5m`, `1h`, `1h30m`, `90s` (units d, h, m, s, each
/// at most once and largest first). Must be > 0 and at most 7 days.
pub fn wait(s: &str) -> Result<Duration, String> {
    let bad = || "is not a duration like `30s`, `5m`, `1h30m`".to_string();
    if s.is_empty() || s.len() > 32 {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut last_unit = u64::MAX;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = num.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(d as u64));
            num = Some(n.ok_or_else(bad)?);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n = num.take().ok_or_else(bad)?;
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if num.is_some() {
        // Trailing digits without a unit: "5" is ambiguous, refuse it.
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d > MAX_WAIT {
        return Err("is longer than 7 days".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_offsets() {
        let l = Lines::new("a\nbc\n\nd");
        assert_eq!(l.line(0), 1);
        assert_eq!(l.line(1), 1);
        assert_eq!(l.line(2), 2);
        assert_eq!(l.line(5), 3);
        assert_eq!(l.line(6), 4);
        assert_eq!(l.line(999), 4);
    }

    #[test]
    fn waits() {
        assert_eq!(wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(wait("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(wait("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(wait("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(wait("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(wait("7d"), Ok(MAX_WAIT));
        for bad in ["", "0s", "5", "m", "5x", "1m1h", "1h1h", "-5m", "5 m", "8d", "99999999999999999999s", "1.5h"] {
            assert!(wait(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn phones() {
        assert!(e164("+6625550101").is_ok());
        assert!(e164("+861055550101").is_ok());
        for bad in ["6625550101", "+66 2555 0101", "+0625550101", "+1234567", "+1234567890123456", "+"] {
            assert!(e164(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_and_urls() {
        assert!(email("th-drugs@th.example.org").is_ok());
        for bad in ["a", "a@b", "a@@b.c", "@b.c", "a@b.", "a@.b", "a b@c.d", "a@b@c.d"] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert!(webhook_url("http://127.0.0.1:9/hooks/x").is_ok());
        assert!(webhook_url("https://bot.example.org").is_ok());
        for bad in ["ftp://x", "http://", "https:///x", "127.0.0.1"] {
            assert!(webhook_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn codes_ids_languages() {
        assert!(party_code("TH").is_ok() && party_code("ASEAN").is_ok());
        assert!(party_code("th").is_err() && party_code("THA").is_err() && party_code("*").is_err());
        assert!(id("th-drugs-2").is_ok());
        assert!(id("TH").is_err() && id("a_b").is_err() && id(&"a".repeat(65)).is_err());
        assert!(language("fil").is_ok() && language("zh-Hans").is_ok());
        assert!(language("EN").is_err() && language("english").is_err());
        assert!(text("Line\nbreak").is_err() && text(&"x".repeat(201)).is_err());
        assert_eq!(quote("a\nb"), "`a\\nb`");
        assert!(quote(&"x".repeat(500)).chars().count() < 70);
    }
}
