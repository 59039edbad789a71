//! The SMTP gateway against the test SMTP server (`smtp_server.rs`): what is delivered,
//! and how SMTP replies map to retryable and final failures.

use std::sync::Arc;
use std::time::Duration;

use focalpoint::channels::{Gateway, Page, SendError, SmtpGateway};
use focalpoint::config::EmailSettings;
use focalpoint::directory::{Channel, Directory};
use focalpoint::domain::incident::{Area, Certainty, Content, Incident, Originator, Severity, Status, Tlp, Urgency};

use crate::smtp_server::{SmtpServer, Stage};

const TITLE: &str = "Zebra-Tango shipment at Mae Sai";
const DESCRIPTION: &str = "Informant Quokka reports 4 trucks";

const NETWORK: &str = r#"
[[party]]
code = "TH"
name = "Thailand"
timezone = "Asia/Bangkok"
languages = ["th", "en"]

[[field]]
id = "drug-trafficking"
name = "Drug trafficking"

[[focal_point]]
id = "th-drugs"
name = "Somchai P."
party = "TH"
roles = ["focal"]
fields = ["*"]
email = "th-drugs@th.example.org"
channels = ["dashboard", "email"]

[[policy]]
party = "*"
field = "*"
steps = [{ notify = "level:1", wait = "5m", channels = ["email"] }]
"#;

fn directory() -> Arc<Directory> {
    Arc::new(Directory::parse(NETWORK).unwrap_or_else(|p| panic!("test network: {p:?}")))
}

fn page(d: &Directory, tlp: Tlp) -> Page {
    let content = Content {
        title: TITLE.into(),
        description: DESCRIPTION.into(),
        field: "drug-trafficking".into(),
        severity: Severity::Extreme,
        urgency: Urgency::Immediate,
        certainty: Certainty::Observed,
        status: Status::Actual,
        tlp,
        parties: vec!["TH".into()],
        recipients: Vec::new(),
        area: Some(Area { text: "Golden Triangle".into(), lat: None, lon: None }),
        dedup_key: None,
    };
    let originator = Originator { party: "TH".into(), officer: "th-duty".into() };
    let incident = Incident::new(uuid::Uuid::new_v4(), "K7Q2".into(), originator, content, chrono::Utc::now());
    Page {
        outbox_id: 7,
        page_id: focalpoint::domain::cursor::Cursors::page_ids("fp_test").seal(7),
        incident,
        recipient: d.focal_point("th-drugs").cloned().expect("recipient"),
        party: "TH".into(),
        channel: Channel::Email,
        step: 1,
        loop_: 0,
        ack_url: Some("http://127.0.0.1:8080/ack/tok-abc".into()),
        sms_reply_hint: false,
    }
}

fn gateway(smtp: &SmtpServer, d: Arc<Directory>) -> SmtpGateway {
    let settings = EmailSettings {
        gateway: "smtp".into(),
        host: "127.0.0.1".into(),
        port: smtp.port(),
        tls: "none".into(),
        from: "Focalpoint <focalpoint@hub.example.org>".into(),
        ..EmailSettings::default()
    };
    SmtpGateway::new(&settings, d).expect("smtp gateway")
}

/// The raw message plus its base64 body parts decoded, so assertions can search the text.
pub fn decoded(raw: &str) -> String {
    use base64::Engine;
    let mut out = raw.replace("=\r\n", "");
    let mut chunk = String::new();
    let is_b64 = |l: &str| {
        !l.is_empty() && !l.starts_with("--") && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    };
    for line in raw.lines().chain(std::iter::once("")) {
        if is_b64(line) {
            chunk.push_str(line);
            continue;
        }
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&chunk)
            && let Ok(text) = String::from_utf8(bytes)
        {
            out.push_str(&text);
        }
        chunk.clear();
    }
    out
}

#[tokio::test]
async fn delivers_multipart_pointer_email_with_stable_message_id() {
    let smtp = SmtpServer::start().await.expect("smtp server");
    let d = directory();
    let page = page(&d, Tlp::Amber);
    let sent = gateway(&smtp, d).send(&page).await.expect("delivered");
    let id = format!("<page-{}-{}@focalpoint>", page.page_id, page.incident.id);
    assert_eq!(sent.provider_id.as_deref(), Some(id.as_str()));

    let got = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "focalpoint@hub.example.org");
    assert_eq!(m.rcpt_to, ["th-drugs@th.example.org"]);
    assert_eq!(m.header("Message-ID").as_deref(), Some(id.as_str()));
    assert_eq!(m.header("X-Focalpoint-Ref").as_deref(), Some("K7Q2"));
    assert_eq!(m.header("X-Focalpoint-Incident"), Some(page.incident.id.to_string()));
    assert!(m.header("Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")), "{}", m.data);
    assert!(m.data.contains("text/plain") && m.data.contains("text/html"), "{}", m.data);
    let body = decoded(&m.data);
    assert!(body.contains("K7Q2") && body.contains("EXTREME"), "{body}");
    assert!(body.contains("http://127.0.0.1:8080/ack/tok-abc"), "{body}");
    assert!(body.contains("ESCALATION step 1"), "{body}");
    for secret in ["Zebra", "Quokka", "Golden Triangle"] {
        assert!(!body.contains(secret), "amber email leaked {secret}: {body}");
    }
}

#[tokio::test]
async fn green_email_carries_the_description() {
    let smtp = SmtpServer::start().await.expect("smtp server");
    let d = directory();
    gateway(&smtp, d.clone()).send(&page(&d, Tlp::Green)).await.expect("delivered");
    let got = smtp.wait_for(1, Duration::from_secs(5)).await;
    let body = decoded(&got[0].data);
    assert!(body.contains(DESCRIPTION) && body.contains(TITLE), "{body}");
}

#[tokio::test]
async fn temporary_refusal_then_success() {
    let smtp = SmtpServer::start().await.expect("smtp server");
    smtp.reply_once(Stage::Message, "451 4.3.0 try later");
    let d = directory();
    let gw = gateway(&smtp, d.clone());
    let mut page = page(&d, Tlp::Red);
    page.incident.recipients = vec!["th-drugs".into()];

    let err = gw.send(&page).await.expect_err("451");
    assert!(matches!(err, SendError::Temporary { .. }), "{err}");
    assert!(err.reason().contains("451") || err.reason().contains("try later"), "{err}");
    assert!(smtp.messages().is_empty());

    gw.send(&page).await.expect("second attempt accepted");
    let attempts = smtp.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].header("Message-ID"), attempts[1].header("Message-ID"), "a resend is the same message");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn permanent_refusals() {
    let d = directory();
    for stage in [Stage::Message, Stage::Rcpt, Stage::Mail] {
        let smtp = SmtpServer::start().await.expect("smtp server");
        smtp.reply_once(stage, "550 5.1.1 mailbox unavailable");
        let err = gateway(&smtp, d.clone()).send(&page(&d, Tlp::Amber)).await.expect_err("550");
        assert!(matches!(err, SendError::Permanent { .. }), "{stage:?}: {err}");
        assert!(smtp.messages().is_empty());
    }
}

#[tokio::test]
async fn unreachable_server_is_temporary() {
    let smtp = SmtpServer::start().await.expect("smtp server");
    smtp.reply_once(Stage::Greeting, "421 4.3.2 shutting down");
    let d = directory();
    let err = gateway(&smtp, d.clone()).send(&page(&d, Tlp::Amber)).await.expect_err("421");
    assert!(err.is_temporary(), "{err}");

    let port = smtp.port();
    drop(smtp);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let settings = EmailSettings { host: "127.0.0.1".into(), port, tls: "none".into(), ..EmailSettings::default() };
    let gw = SmtpGateway::new(&settings, d.clone()).expect("gateway");
    let err = gw.send(&page(&d, Tlp::Amber)).await.expect_err("nothing listens");
    assert!(err.is_temporary(), "{err}");
}

#[tokio::test]
async fn red_page_to_someone_not_named_is_refused() {
    let smtp = SmtpServer::start().await.expect("smtp server");
    let d = directory();
    let mut page = page(&d, Tlp::Red);
    page.incident.recipients = vec!["th-chief".into()];
    let err = gateway(&smtp, d).send(&page).await.expect_err("outside the audience");
    assert!(matches!(err, SendError::Permanent { .. }) && err.reason().contains("audience"), "{err}");
    assert!(smtp.attempts().is_empty() && smtp.connections() == 0);
}
