//! Message text for SMS and email, per recipient language and TLP label.
//!
//! SMS and email leave the network's boundary (DESIGN.md §4), so for `amber`,
//! `amber+strict` and `red` they carry a pointer only: ref, severity, field, originator
//! party, time and how to ack — never title, description or area. `clear` and `green`
//! may add the title (SMS, truncated to fit) and, in email, the description and area.
//!
//! Operational keywords stay in English in every language so they can be read out and
//! searched the same way across the network: `[EXERCISE]`, `[TEST]`, `ESCALATION step N`,
//! CAP severities, `TLP:…` labels and `ACK <ref>` (the only reply the SMS hook parses).

use super::Page;
use super::sms;
use crate::directory::Directory;
use crate::domain::incident::{Status, Tlp};

/// Subject, plain text and HTML of one page email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Most segments a page SMS may use when a title is included (pointer texts are shorter).
pub const MAX_SMS_SEGMENTS: usize = 3;

/// The phrases of one language. Placeholders are `{name}`, filled by [`fill`].
struct Lang {
    /// `{sev}`, `{field}`, `{party}`.
    headline: &'static str,
    raised: &'static str,
    for_party: &'static str,
    /// `{tlp}`.
    restricted: &'static str,
    /// `{ref}`.
    reply: &'static str,
    dashboard: &'static str,
    link: &'static str,
    reference: &'static str,
    severity: &'static str,
    field: &'static str,
    originator: &'static str,
    title: &'static str,
    area: &'static str,
    description: &'static str,
}

const EN: Lang = Lang {
    headline: "{sev} {field} incident from {party}",
    raised: "raised",
    for_party: "for party",
    restricted: "Details only on the dashboard ({tlp}).",
    reply: "Reply ACK {ref} to acknowledge.",
    dashboard: "Acknowledge on the dashboard.",
    link: "Acknowledge here:",
    reference: "Reference",
    severity: "Severity",
    field: "Field",
    originator: "Originator",
    title: "Title",
    area: "Area",
    description: "Description",
};

const TH: Lang = Lang {
    headline: "เหตุด้าน {field} ระดับ {sev} จาก {party}",
    raised: "แจ้งเมื่อ",
    for_party: "สำหรับ",
    restricted: "ดูรายละเอียดในแดชบอร์ดเท่านั้น ({tlp})",
    reply: "ตอบ ACK {ref} เพื่อรับทราบ",
    dashboard: "กรุณารับทราบในแดชบอร์ด",
    link: "รับทราบที่นี่:",
    reference: "รหัส",
    severity: "ความรุนแรง",
    field: "ด้าน",
    originator: "ผู้แจ้ง",
    title: "หัวข้อ",
    area: "พื้นที่",
    description: "รายละเอียด",
};

const MS: Lang = Lang {
    headline: "Insiden {field} {sev} dari {party}",
    raised: "dilaporkan",
    for_party: "untuk pihak",
    restricted: "Butiran di papan pemuka sahaja ({tlp}).",
    reply: "Balas ACK {ref} untuk mengesahkan.",
    dashboard: "Sahkan di papan pemuka.",
    link: "Sahkan di sini:",
    reference: "Rujukan",
    severity: "Tahap",
    field: "Bidang",
    originator: "Pemula",
    title: "Tajuk",
    area: "Kawasan",
    description: "Keterangan",
};

const VI: Lang = Lang {
    headline: "Sự cố {field} mức {sev} từ {party}",
    raised: "lúc",
    for_party: "cho bên",
    restricted: "Chi tiết chỉ có trên bảng điều khiển ({tlp}).",
    reply: "Trả lời ACK {ref} để xác nhận.",
    dashboard: "Xác nhận trên bảng điều khiển.",
    link: "Xác nhận tại:",
    reference: "Mã",
    severity: "Mức độ",
    field: "Lĩnh vực",
    originator: "Bên gửi",
    title: "Tiêu đề",
    area: "Khu vực",
    description: "Mô tả",
};

const ZH: Lang = Lang {
    headline: "来自{party}的{sev}级{field}事件",
    raised: "发起于",
    for_party: "针对",
    restricted: "详情仅在值班面板查看（{tlp}）。",
    reply: "回复 ACK {ref} 确认。",
    dashboard: "请在值班面板确认。",
    link: "确认链接：",
    reference: "编号",
    severity: "严重程度",
    field: "领域",
    originator: "发起方",
    title: "标题",
    area: "地区",
    description: "描述",
};

const ID: Lang = Lang {
    headline: "Insiden {field} {sev} dari {party}",
    raised: "dilaporkan",
    for_party: "untuk pihak",
    restricted: "Rincian hanya di dasbor ({tlp}).",
    reply: "Balas ACK {ref} untuk konfirmasi.",
    dashboard: "Konfirmasi di dasbor.",
    link: "Konfirmasi di sini:",
    reference: "Referensi",
    severity: "Tingkat",
    field: "Bidang",
    originator: "Pengirim",
    title: "Judul",
    area: "Wilayah",
    description: "Deskripsi",
};

/// The recipient's language (`th`, `th-TH`, `zh-Hans` …), falling back to English.
fn lang(code: &str) -> &'static Lang {
    let primary = code.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    match primary.as_str() {
        "th" => &TH,
        "ms" => &MS,
        "vi" => &VI,
        "zh" => &ZH,
        "id" | "in" => &ID,
        _ => &EN,
    }
}

/// Replaces `{name}` placeholders in one pass, so substituted values are never rescanned.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after
            .find('}')
            .and_then(|close| values.iter().find(|(k, _)| *k == &after[..close]).map(|(_, v)| (close, *v)));
        match value {
            Some((close, v)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `TLP:AMBER+STRICT` etc.
pub fn tlp_label(tlp: Tlp) -> String {
    format!("TLP:{}", tlp.as_str().to_ascii_uppercase())
}

/// True when the label keeps content inside the network (pointer-only messages).
pub fn pointer_only(tlp: Tlp) -> bool {
    matches!(tlp, Tlp::Amber | Tlp::AmberStrict | Tlp::Red)
}

/// `[EXERCISE] ESCALATION step 2 ` — drill and escalation markers, empty for a first page
/// of a real incident.
fn markers(page: &Page) -> String {
    let mut out = String::new();
    match page.incident.status {
        Status::Exercise => out.push_str("[EXERCISE] "),
        Status::Test => out.push_str("[TEST] "),
        Status::Actual => {}
    }
    if page.step > 0 || page.loop_ > 0 {
        out.push_str(&format!("ESCALATION step {}", page.step));
        if page.loop_ > 0 {
            out.push_str(&format!(" loop {}", page.loop_));
        }
        out.push(' ');
    }
    out
}

/// What every message says, whatever the label.
struct Facts {
    lang: &'static Lang,
    markers: String,
    reference: String,
    severity: String,
    field: String,
    party: String,
    time: String,
    headline: String,
    /// ` (for party MY)` when a coordinator or other party's member is paged.
    for_party: String,
}

fn facts(page: &Page, directory: &Directory) -> Facts {
    let l = lang(&page.recipient.language);
    let i = &page.incident;
    let field = directory.field(&i.field).map(|f| f.name.clone()).unwrap_or_else(|| i.field.clone());
    let severity = i.severity.as_str().to_ascii_uppercase();
    let party = i.originator.party.clone();
    // Times in the recipient party's zone; UTC if the party is unknown.
    let time = match directory.party(&page.recipient.party) {
        Some(p) => i.raised_at.with_timezone(&p.timezone).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => i.raised_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    };
    let headline = fill(l.headline, &[("sev", &severity), ("field", &field), ("party", &party)]);
    let for_party = if page.party != page.recipient.party && page.party != party {
        format!(" ({} {})", l.for_party, page.party)
    } else {
        String::new()
    };
    Facts {
        lang: l,
        markers: markers(page),
        reference: i.reference.clone(),
        severity,
        field,
        party,
        time,
        headline,
        for_party,
    }
}

/// The SMS body. Pointer only for amber and above; for clear/green the title is added,
/// truncated so the message stays within [`MAX_SMS_SEGMENTS`].
pub fn sms_text(page: &Page, directory: &Directory) -> String {
    let f = facts(page, directory);
    let l = f.lang;
    let ack = if page.sms_reply_hint { fill(l.reply, &[("ref", &f.reference)]) } else { l.dashboard.to_string() };
    let head =
        format!("{}FOCALPOINT {}: {}{}, {} {}.", f.markers, f.reference, f.headline, f.for_party, l.raised, f.time);
    let tlp = page.incident.tlp;
    if pointer_only(tlp) {
        let restricted = fill(l.restricted, &[("tlp", &tlp_label(tlp))]);
        return format!("{head} {restricted} {ack}");
    }
    let title = page.incident.title.trim();
    if title.is_empty() {
        return format!("{head} {ack}");
    }
    let with = |t: &str| format!("{head} \"{t}\" {ack}");
    let full = with(title);
    if sms::segments(&full).1 <= MAX_SMS_SEGMENTS {
        return full;
    }
    // Longest prefix of the title (in chars) that fits, marked with "...".
    let chars: Vec<char> = title.chars().collect();
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let t: String = chars[..mid].iter().collect::<String>() + "...";
        if sms::segments(&with(&t)).1 <= MAX_SMS_SEGMENTS {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return format!("{head} {ack}");
    }
    with(&(chars[..lo].iter().collect::<String>().trim_end().to_string() + "..."))
}

/// The email: subject, plain text and HTML (every interpolated value escaped). Pointer
/// only for amber and above; clear/green add title, area and description.
pub fn email(page: &Page, directory: &Directory) -> EmailContent {
    let f = facts(page, directory);
    let l = f.lang;
    let i = &page.incident;
    let tlp = i.tlp;
    let label = tlp_label(tlp);
    let pointer = pointer_only(tlp);

    let mut subject = format!("{}[FOCALPOINT {}] {}{}", f.markers, f.reference, f.headline, f.for_party);
    if !pointer && !i.title.trim().is_empty() {
        subject.push_str(": ");
        subject.push_str(i.title.trim());
    }
    subject = subject.replace(['\r', '\n'], " ");

    let mut rows: Vec<(&str, String)> = vec![
        (l.reference, f.reference.clone()),
        (l.severity, f.severity.clone()),
        (l.field, f.field.clone()),
        (l.originator, f.party.clone()),
        (l.raised, f.time.clone()),
        ("TLP", label.clone()),
    ];
    if !pointer {
        rows.push((l.title, i.title.clone()));
        if let Some(area) = i.area.as_ref().filter(|a| !a.text.trim().is_empty()) {
            rows.push((l.area, area.text.clone()));
        }
    }
    let description = (!pointer && !i.description.trim().is_empty()).then(|| i.description.trim().to_string());
    let restricted = pointer.then(|| fill(l.restricted, &[("tlp", &label)]));
    let reply = page.sms_reply_hint.then(|| fill(l.reply, &[("ref", &f.reference)]));

    // Plain text.
    let mut text = format!("{}{}{}\n\n", f.markers, f.headline, f.for_party);
    for (k, v) in &rows {
        text.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(d) = &description {
        text.push_str(&format!("\n{}:\n{d}\n", l.description));
    }
    if let Some(r) = &restricted {
        text.push_str(&format!("\n{r}\n"));
    }
    text.push('\n');
    match &page.ack_url {
        Some(url) => text.push_str(&format!("{} {url}\n", l.link)),
        None => text.push_str(&format!("{}\n", l.dashboard)),
    }
    if let Some(r) = &reply {
        text.push_str(&format!("{r}\n"));
    }

    // HTML.
    let e = escape_html;
    let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n");
    html.push_str(&format!("<h2>{}{}{}</h2>\n<table>\n", e(&f.markers), e(&f.headline), e(&f.for_party)));
    for (k, v) in &rows {
        html.push_str(&format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>\n", e(k), e(v)));
    }
    html.push_str("</table>\n");
    if let Some(d) = &description {
        html.push_str(&format!("<h3>{}</h3>\n<p>{}</p>\n", e(l.description), e(d).replace('\n', "<br>\n")));
    }
    if let Some(r) = &restricted {
        html.push_str(&format!("<p><strong>{}</strong></p>\n", e(r)));
    }
    match &page.ack_url {
        Some(url) => html.push_str(&format!("<p>{} <a href=\"{}\">{}</a></p>\n", e(l.link), e(url), e(url))),
        None => html.push_str(&format!("<p>{}</p>\n", e(l.dashboard))),
    }
    if let Some(r) = &reply {
        html.push_str(&format!("<p>{}</p>\n", e(r)));
    }
    html.push_str("</body></html>\n");

    EmailContent { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, AREA, DESCRIPTION, TITLE};
    use super::*;

    fn all_text(c: &EmailContent) -> String {
        format!("{}\n{}\n{}", c.subject, c.text, c.html)
    }

    #[test]
    fn amber_and_above_carry_a_pointer_only() {
        let d = testing::directory();
        for tlp in [Tlp::Amber, Tlp::AmberStrict, Tlp::Red] {
            for who in ["th-drugs", "th-chief"] {
                let page = testing::page(&d, who, tlp);
                let sms = sms_text(&page, &d);
                let mail = all_text(&email(&page, &d));
                for out in [&sms, &mail] {
                    assert!(out.contains("K7Q2") && out.contains("SEVERE"), "{out}");
                    assert!(out.contains("Drug trafficking") && out.contains("TH"), "{out}");
                    for secret in ["Zebra", "Quokka", "Golden Triangle"] {
                        assert!(!out.contains(secret), "{tlp:?} leaked {secret}: {out}");
                    }
                }
                assert!(sms.contains("ACK K7Q2"), "{sms}");
                assert!(mail.contains("https://hub.example.org/ack/tok123"), "{mail}");
            }
        }
    }

    #[test]
    fn green_carries_title_and_description() {
        let d = testing::directory();
        let page = testing::page(&d, "th-chief", Tlp::Green);
        let sms = sms_text(&page, &d);
        assert!(sms.contains(TITLE), "{sms}");
        let mail = email(&page, &d);
        assert!(mail.subject.contains(TITLE));
        assert!(mail.text.contains(DESCRIPTION) && mail.text.contains(AREA), "{}", mail.text);
        // HTML-escaped in the html part, verbatim in the text part.
        assert!(
            mail.html.contains("Informant Quokka reports &lt;b&gt;4 trucks&lt;/b&gt; &amp; a boat"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<b>4 trucks"));
    }

    #[test]
    fn long_green_title_is_truncated_to_fit() {
        let d = testing::directory();
        let mut page = testing::page(&d, "th-chief", Tlp::Clear);
        page.incident.title = "Very long title ".repeat(60);
        let sms = sms_text(&page, &d);
        assert!(sms::segments(&sms).1 <= MAX_SMS_SEGMENTS, "{sms}");
        assert!(sms.contains("Very long title") && sms.contains("...\""), "{sms}");
        assert!(sms.ends_with("Reply ACK K7Q2 to acknowledge."), "{sms}");
    }

    #[test]
    fn language_time_zone_and_markers() {
        let d = testing::directory();
        let mut page = testing::page(&d, "th-drugs", Tlp::Amber);
        page.incident.status = Status::Exercise;
        page.step = 2;
        let sms = sms_text(&page, &d);
        assert!(sms.starts_with("[EXERCISE] ESCALATION step 2 FOCALPOINT K7Q2"), "{sms}");
        assert!(sms.contains("ตอบ ACK K7Q2"), "Thai template: {sms}");
        // 07:30 UTC is 14:30 in Bangkok.
        assert!(sms.contains("2026-01-05 14:30"), "{sms}");
        let mail = email(&page, &d);
        assert!(mail.subject.starts_with("[EXERCISE] ESCALATION step 2 [FOCALPOINT K7Q2]"), "{}", mail.subject);
        assert!(mail.text.contains("รับทราบที่นี่:"), "{}", mail.text);

        page.incident.status = Status::Test;
        page.step = 0;
        page.loop_ = 1;
        page.sms_reply_hint = false;
        page.recipient.language = "xx".into();
        let sms = sms_text(&page, &d);
        assert!(sms.starts_with("[TEST] ESCALATION step 0 loop 1 "), "{sms}");
        assert!(sms.contains("Acknowledge on the dashboard.") && !sms.contains("Reply ACK"), "{sms}");
    }

    #[test]
    fn every_language_has_a_template() {
        let d = testing::directory();
        let mut page = testing::page(&d, "th-drugs", Tlp::Amber);
        let mut seen = std::collections::HashSet::new();
        for code in ["en", "th", "ms", "vi", "zh-Hans", "id"] {
            page.recipient.language = code.into();
            let sms = sms_text(&page, &d);
            assert!(sms.contains("ACK K7Q2") && sms.contains("SEVERE") && sms.contains("TLP:AMBER"), "{code}: {sms}");
            assert!(seen.insert(sms), "{code} has its own text");
        }
    }

    #[test]
    fn fill_is_single_pass() {
        assert_eq!(fill("{a}-{b}-{c}", &[("a", "{b}"), ("b", "x")]), "{b}-x-{c}");
        assert_eq!(fill("{ unterminated", &[]), "{ unterminated");
    }
}
