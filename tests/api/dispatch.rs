//! The outbox dispatcher end to end: a hub with the Twilio gateway pointed at a scripted
//! fake (`twilio_fake.rs`), the SMTP gateway at the test SMTP server (`smtp_server.rs`)
//! and a manual clock, so retries are fast-forwarded instead of waited for. Each test runs
//! on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use focalpoint::clock::{Clock, ManualClock};
use focalpoint::store::OutboxPage;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::smtp_server::{SmtpServer, Stage};
use crate::twilio_fake::{ACCOUNT_SID, AUTH_TOKEN, Answer, FROM, FakeTwilio};

pub const PUBLIC_URL: &str = "https://hub.example.org";
pub const MY_L1_PHONE: &str = "+60355501001";
pub const MY_L2_PHONE: &str = "+60355501002";
pub const TITLE: &str = "Zebra-Tango heroin consignment";

/// TH raises; MY has a first-line desk and a chief, both on SMS and email, and a bot.
/// Step 0 pages level 1 by SMS and email (no dashboard, so a step can fail entirely).
pub fn network(bot_url: &str) -> String {
    format!(
        r#"
[[party]]
code = "TH"
name = "Thailand"
timezone = "Asia/Bangkok"
languages = ["th", "en"]
[[party]]
code = "MY"
name = "Malaysia"
timezone = "Asia/Kuala_Lumpur"
languages = ["ms", "en"]

[[field]]
id = "drug-trafficking"
name = "Drug trafficking"

[[focal_point]]
id = "th-duty"
name = "TH duty officer"
party = "TH"
roles = ["officer"]
fields = ["*"]
channels = ["dashboard"]

[[focal_point]]
id = "my-l1"
name = "MY drugs desk"
party = "MY"
roles = ["focal"]
fields = ["*"]
level = 1
language = "en"
phone = "{MY_L1_PHONE}"
email = "my-l1@my.example.org"
channels = ["dashboard", "sms", "email"]

[[focal_point]]
id = "my-l2"
name = "MY chief"
party = "MY"
roles = ["focal"]
fields = ["*"]
level = 2
language = "en"
phone = "{MY_L2_PHONE}"
email = "my-l2@my.example.org"
channels = ["dashboard", "sms", "email"]

[[focal_point]]
id = "my-bot"
name = "MY pager bot"
party = "MY"
roles = ["bot"]
fields = ["*"]
channels = ["webhook"]
webhook_url = "{bot_url}"

[[policy]]
party = "*"
field = "*"
repeat = 1
steps = [
  {{ notify = "level:1", wait = "5m", channels = ["sms", "email"] }},
  {{ notify = "level:2", wait = "10m", channels = ["sms", "email"] }},
]
"#
    )
}

pub struct Paging {
    pub app: Arc<TestApp>,
    pub clock: Arc<ManualClock>,
    pub twilio: FakeTwilio,
    pub smtp: SmtpServer,
}

/// A hub on [`network`] with a manual clock, its SMS gateway pointed at a fake Twilio
/// and its email gateway at a test SMTP server, on a fresh database of `backend`.
pub async fn paging(backend: Backend) -> Paging {
    let twilio = FakeTwilio::start().await;
    let smtp = SmtpServer::start().await.expect("smtp server");
    let clock = ManualClock::new(chrono::Utc::now());
    let (twilio_url, smtp_port) = (twilio.url(), smtp.port());
    let app = TestApp::builder()
        .backend(backend)
        .network(&network(&format!("{twilio_url}/bot/my-bot")))
        .clock(clock.clone())
        .settings(move |settings| {
            settings.server.public_url = PUBLIC_URL.into();
            settings.sms.gateway = "twilio".into();
            settings.sms.base_url = twilio_url;
            settings.sms.account_sid = ACCOUNT_SID.into();
            settings.sms.auth_token = AUTH_TOKEN.into();
            settings.sms.from = FROM.into();
            settings.email.gateway = "smtp".into();
            settings.email.host = "127.0.0.1".into();
            settings.email.port = smtp_port;
            settings.email.tls = "none".into();
            settings.email.from = "Focalpoint <focalpoint@hub.example.org>".into();
        })
        .spawn()
        .await;
    Paging { app, clock, twilio, smtp }
}

pub fn body(tlp: &str) -> Value {
    json!({
        "title": TITLE, "description": "Informant Quokka: container at Port Klang", "field": "drug-trafficking",
        "severity": "severe", "parties": ["MY"], "tlp": tlp,
    })
}

impl Paging {
    /// Raises as th-duty and returns (id, ref).
    pub async fn raise(&self, tlp: &str) -> (String, String) {
        let (status, inc) = self.app.raise("th-duty", &body(tlp)).await;
        assert_eq!(status, 201, "{inc}");
        (inc["id"].as_str().expect("id").to_string(), inc["ref"].as_str().expect("ref").to_string())
    }

    pub async fn outbox(&self, id: &str) -> Vec<OutboxPage> {
        let id = uuid::Uuid::parse_str(id).expect("uuid");
        self.app.store.outbox_pages(id).await.expect("outbox")
    }

    /// The page of `focal_point` on `channel` at step 0.
    pub async fn page(&self, id: &str, focal_point: &str, channel: &str) -> OutboxPage {
        self.outbox(id)
            .await
            .into_iter()
            .find(|p| p.focal_point == focal_point && p.channel == channel && p.step == 0)
            .expect("the page exists")
    }

    /// Waits until the page's state and attempts match.
    pub async fn wait_page(&self, id: &str, focal_point: &str, channel: &str, state: &str, attempts: u32) {
        wait_until(|| async {
            let p = self.page(id, focal_point, channel).await;
            p.state == state && p.attempts == attempts
        })
        .await;
    }

    /// The incident as th-duty sees it, with its timeline.
    pub async fn incident(&self, id: &str) -> Value {
        self.app.get("th-duty", &format!("/api/v1/incidents/{id}")).await.json().await.expect("json")
    }
}

on_both_backends!(
    a_raise_pages_sms_and_email_with_content_per_tlp,
    server_errors_are_retried_with_backoff_and_the_page_goes_once_after_recovery,
    retry_after_is_honoured,
    a_permanent_failure_shows_in_the_timeline_and_a_fully_failed_step_escalates_at_once,
    smtp_451_then_250_delivers_once,
    identical_pending_pages_are_merged_and_an_ack_cancels_the_rest,
    bots_get_signed_escalations,
);

/// The SMS bodies the fake accepted for `reference`.
fn sms_for(p: &Paging, reference: &str) -> Vec<String> {
    p.twilio
        .accepted_sms()
        .into_iter()
        .filter_map(|r| r.param("Body").map(String::from))
        .filter(|b| b.contains(reference))
        .collect()
}

async fn a_raise_pages_sms_and_email_with_content_per_tlp(backend: Backend) {
    let p = paging(backend).await;
    let (amber, amber_ref) = p.raise("amber").await;
    p.wait_page(&amber, "my-l1", "sms", "sent", 0).await;
    p.wait_page(&amber, "my-l1", "email", "sent", 0).await;
    let sms = p.twilio.accepted_sms();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].param("To"), Some(MY_L1_PHONE));
    assert_eq!(sms[0].param("From"), Some(FROM));
    assert_eq!(sms[0].param("StatusCallback"), Some(format!("{PUBLIC_URL}/hooks/twilio/status").as_str()));
    let text = sms[0].param("Body").expect("body");
    assert!(text.contains(&amber_ref) && text.contains("ACK"), "{text}");
    assert!(!text.contains("Zebra") && !text.contains("Quokka"), "amber SMS carries a pointer only: {text}");
    let mail = p.smtp.wait_for(1, WAIT).await;
    assert_eq!(mail[0].rcpt_to, ["my-l1@my.example.org"]);
    assert!(mail[0].data.contains(&format!("{PUBLIC_URL}/ack/fp_")), "an ack link: {}", mail[0].data);
    assert!(!mail[0].data.contains("Zebra"), "amber email carries a pointer only");
    // Not paged at step 0: the chief.
    assert!(p.outbox(&amber).await.iter().all(|r| r.focal_point != "my-l2"));

    let (green, green_ref) = p.raise("green").await;
    p.wait_page(&green, "my-l1", "sms", "sent", 0).await;
    let text = sms_for(&p, &green_ref).pop().expect("green sms");
    assert!(text.contains("Zebra-Tango"), "green SMS carries the title: {text}");

    // The timeline shows the sends, with the provider id and no address.
    let inc = p.incident(&amber).await;
    let sent: Vec<&Value> =
        inc["timeline"].as_array().expect("timeline").iter().filter(|e| e["type"] == "notification.sent").collect();
    assert_eq!(sent.len(), 2, "{inc}");
    let sms_event = sent.iter().find(|e| e["data"]["channel"] == "sms").expect("sms event");
    assert_eq!(sms_event["party"], "MY");
    assert_eq!(sms_event["data"]["focal_point"], "my-l1");
    assert_eq!(sms_event["data"]["provider_id"].as_str(), sms[0].sid.as_deref());
    assert!(!inc["timeline"].to_string().contains(MY_L1_PHONE) && !inc["timeline"].to_string().contains("my-l1@"));
}

async fn server_errors_are_retried_with_backoff_and_the_page_goes_once_after_recovery(backend: Backend) {
    let p = paging(backend).await;
    p.twilio.script([Answer::status(500), Answer::status(503), Answer::status(500)]);
    let (id, reference) = p.raise("amber").await;
    let mut last_due = p.clock.now();
    for attempt in 1..=3 {
        p.wait_page(&id, "my-l1", "sms", "pending", attempt).await;
        let row = p.page(&id, "my-l1", "sms").await;
        let delay = (row.next_attempt_at - p.clock.now()).num_milliseconds();
        let nominal = 5_000 * (1i64 << (attempt - 1));
        assert!(delay >= nominal * 8 / 10 && delay <= nominal * 12 / 10, "attempt {attempt}: {delay} ms");
        assert!(row.next_attempt_at > last_due);
        last_due = row.next_attempt_at;
        assert!(row.last_error.as_deref().is_some_and(|e| e.contains("HTTP 5")), "{row:?}");
        p.clock.advance(Duration::from_millis(delay as u64 + 1));
    }
    p.wait_page(&id, "my-l1", "sms", "sent", 3).await;
    assert_eq!(p.twilio.sms().len(), 4);
    assert_eq!(sms_for(&p, &reference).len(), 1, "sent exactly once after recovery");
}

async fn retry_after_is_honoured(backend: Backend) {
    let p = paging(backend).await;
    p.twilio.script([Answer::status(429).header("Retry-After", "120")]);
    let (id, reference) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "pending", 1).await;
    let row = p.page(&id, "my-l1", "sms").await;
    assert_eq!(row.next_attempt_at, p.clock.now() + chrono::TimeDelta::seconds(120), "{row:?}");
    p.clock.advance(Duration::from_secs(120));
    p.wait_page(&id, "my-l1", "sms", "sent", 1).await;
    assert_eq!(sms_for(&p, &reference).len(), 1);
}

async fn a_permanent_failure_shows_in_the_timeline_and_a_fully_failed_step_escalates_at_once(backend: Backend) {
    let p = paging(backend).await;
    let echo = format!("{{\"code\":21211,\"message\":\"The 'To' number {MY_L1_PHONE} is not a valid phone number.\"}}");
    p.twilio.script([Answer::status(400).body(&echo)]);
    p.smtp.reply_once(Stage::Rcpt, "550 5.1.1 <my-l1@my.example.org>: mailbox unavailable");
    let (id, _) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "failed", 1).await;
    p.wait_page(&id, "my-l1", "email", "failed", 1).await;
    let inc = p.incident(&id).await;
    let failed: Vec<&Value> =
        inc["timeline"].as_array().expect("timeline").iter().filter(|e| e["type"] == "notification.failed").collect();
    assert_eq!(failed.len(), 2, "{inc}");
    let sms = failed.iter().find(|e| e["data"]["channel"] == "sms").expect("sms failure");
    assert!(sms["data"]["reason"].as_str().is_some_and(|r| r.contains("HTTP 400")), "{sms}");
    let text = inc["timeline"].to_string();
    assert!(!text.contains("60355501001") && !text.contains("my-l1@"), "no address in events: {text}");
    // Nobody of step 0 can be reached: MY moves to step 1 without waiting 5 minutes.
    wait_until(|| async {
        p.outbox(&id).await.iter().any(|r| r.step == 1 && r.focal_point == "my-l2" && r.state == "sent")
    })
    .await;
    assert_eq!(p.twilio.sms().len(), 2, "the 400 is not retried");
}

async fn smtp_451_then_250_delivers_once(backend: Backend) {
    let p = paging(backend).await;
    p.smtp.reply_once(Stage::Message, "451 4.3.0 try later");
    let (id, _) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "email", "pending", 1).await;
    let row = p.page(&id, "my-l1", "email").await;
    p.clock.advance((row.next_attempt_at - p.clock.now()).to_std().expect("future") + Duration::from_millis(1));
    p.wait_page(&id, "my-l1", "email", "sent", 1).await;
    assert_eq!(p.smtp.attempts().len(), 2);
    assert_eq!(p.smtp.messages().len(), 1, "delivered once");
}

async fn escalate(p: &Paging, id: &str) {
    let r = p.app.post("th-duty", &format!("/api/v1/incidents/{id}/escalate"), &json!({ "party": "MY" })).await;
    assert_eq!(r.status(), 200);
}

fn row<'a>(rows: &'a [OutboxPage], fp: &str, channel: &str, step: u32, loop_: u32) -> Option<&'a OutboxPage> {
    rows.iter().find(|r| r.focal_point == fp && r.channel == channel && r.step == step && r.loop_ == loop_)
}

async fn identical_pending_pages_are_merged_and_an_ack_cancels_the_rest(backend: Backend) {
    let p = paging(backend).await;
    // The provider asks to wait an hour for my-l1's first SMS; meanwhile the escalation
    // loops back to my-l1 (escalated by hand): one SMS goes, the older page is merged.
    p.twilio.script([Answer::status(429).header("Retry-After", "3600")]);
    let (id, _) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "pending", 1).await;
    escalate(&p, &id).await; // step 1: my-l2
    escalate(&p, &id).await; // loop 1, step 0: my-l1 again
    wait_until(|| async {
        let rows = p.outbox(&id).await;
        row(&rows, "my-l1", "sms", 0, 1).is_some_and(|r| r.state == "sent")
    })
    .await;
    let rows = p.outbox(&id).await;
    let old = row(&rows, "my-l1", "sms", 0, 0).expect("loop 0 page");
    let new = row(&rows, "my-l1", "sms", 0, 1).expect("loop 1 page");
    assert_eq!((old.state.as_str(), old.merged_into), ("merged", Some(new.id)), "{old:?}");
    let to_l1 = p.twilio.accepted_sms().iter().filter(|r| r.param("To") == Some(MY_L1_PHONE)).count();
    assert_eq!(to_l1, 1, "my-l1 got one SMS");

    // my-l2's next SMS fails temporarily; MY acknowledges meanwhile: it is cancelled.
    p.twilio.script([Answer::status(500)]);
    escalate(&p, &id).await; // loop 1, step 1: my-l2
    wait_until(|| async {
        let rows = p.outbox(&id).await;
        row(&rows, "my-l2", "sms", 1, 1).is_some_and(|r| r.attempts == 1 && r.state == "pending")
    })
    .await;
    assert_eq!(p.app.ack("my-l1", &id).await.status(), 200);
    let rows = p.outbox(&id).await;
    assert_eq!(row(&rows, "my-l2", "sms", 1, 1).map(|r| r.state.as_str()), Some("cancelled"));
    assert!(rows.iter().all(|r| r.state != "pending"), "nothing left to send: {rows:?}");
}

async fn bots_get_signed_escalations(backend: Backend) {
    let p = paging(backend).await;
    let (id, _) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "sent", 0).await;
    assert!(p.outbox(&id).await.iter().all(|r| r.channel != "webhook"), "no webhook for the raise itself");
    let esc = p.app.post("th-duty", &format!("/api/v1/incidents/{id}/escalate"), &json!({ "party": "MY" })).await;
    assert_eq!(esc.status(), 200);
    wait_until(|| async { p.twilio.requests().iter().any(|r| r.path == "/bot/my-bot") }).await;
    let call = p.twilio.requests().into_iter().find(|r| r.path == "/bot/my-bot").expect("bot call");
    let key = p.app.store.instance_secret("webhook.signing_key", "unused").await.expect("key");
    let secret = focalpoint::channels::webhook::derive_secret(&key, "my-bot");
    let header = |n: &str| call.headers.get(n).and_then(|v| v.to_str().ok()).expect("header").to_string();
    let ts: i64 = header("X-Focalpoint-Timestamp").parse().expect("timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!(focalpoint::channels::webhook::verify(
        &secret,
        ts,
        &call.raw,
        &header("X-Focalpoint-Signature"),
        now,
        Duration::from_secs(300)
    ));
    let json: Value = serde_json::from_slice(&call.raw).expect("json");
    assert_eq!((json["incident"]["id"].as_str(), json["step"].as_u64()), (Some(id.as_str()), Some(1)));
    // The page id is the outbox row sealed: the bot cannot count the pages sent to others.
    let page_id = json["page_id"].as_str().expect("page_id is a string");
    let row = p.outbox(&id).await.into_iter().find(|r| r.channel == "webhook").expect("the webhook row");
    let secret = p.app.store.instance_secret(focalpoint::domain::cursor::KEY_NAME, "unused").await.expect("key");
    assert_eq!(page_id, focalpoint::domain::cursor::Cursors::page_ids(&secret).seal(row.id));
    assert_ne!(page_id, row.id.to_string());
}
