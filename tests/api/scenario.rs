//! Escalation scenarios in the GoAlert style: seed a small network, raise, fast-forward a
//! manual clock, expect exactly the pages of each step — nothing more. Each scenario runs
//! on SQLite and on PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use focalpoint::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::*;

/// MY has two first-line desks and a chief; SG a desk and a chief; CN and ASEAN each a
/// coordinator. The catch-all policy: level 1 (5 min), level 2 (10 min), coordinators
/// (15 min), once more, then the unanswered alarm. Extreme incidents wait half as long.
pub const NETWORK: &str = r#"
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
[[party]]
code = "SG"
name = "Singapore"
timezone = "Asia/Singapore"
languages = ["en"]
[[party]]
code = "CN"
name = "China"
timezone = "Asia/Shanghai"
languages = ["zh", "en"]
[[party]]
code = "ASEAN"
name = "ASEAN Secretariat"
timezone = "Asia/Jakarta"
languages = ["en"]

[[field]]
id = "drug-trafficking"
name = "Drug trafficking"
[[field]]
id = "general"
name = "General"

[[focal_point]]
id = "th-duty"
name = "TH duty officer"
party = "TH"
roles = ["officer"]
fields = ["*"]
channels = ["dashboard", "email"]
email = "th-duty@th.example.org"

[[focal_point]]
id = "my-l1"
name = "MY drugs desk"
party = "MY"
roles = ["focal"]
fields = ["drug-trafficking"]
level = 1
channels = ["dashboard", "sms"]
phone = "+60355501001"

[[focal_point]]
id = "my-l1b"
name = "MY general desk"
party = "MY"
roles = ["focal"]
fields = ["*"]
level = 1
channels = ["dashboard"]

[[focal_point]]
id = "my-l2"
name = "MY chief"
party = "MY"
roles = ["focal"]
fields = ["*"]
level = 2
channels = ["dashboard", "email"]
email = "my-l2@my.example.org"

[[focal_point]]
id = "sg-l1"
name = "SG desk"
party = "SG"
roles = ["focal"]
fields = ["*"]
level = 1
channels = ["dashboard"]

[[focal_point]]
id = "sg-l2"
name = "SG chief"
party = "SG"
roles = ["focal"]
fields = ["*"]
level = 2
channels = ["dashboard"]

[[focal_point]]
id = "cn-coord"
name = "CN coordinator"
party = "CN"
roles = ["focal", "coordinator"]
fields = ["*"]
level = 1
channels = ["dashboard"]

[[focal_point]]
id = "asean-coord"
name = "ASEAN coordinator"
party = "ASEAN"
roles = ["focal", "coordinator"]
fields = ["*"]
level = 1
channels = ["dashboard"]

[[policy]]
party = "*"
field = "*"
repeat = 1
scale = { extreme = 0.5 }
steps = [
  { notify = "level:1", wait = "5m", channels = ["dashboard", "sms"] },
  { notify = "level:2", wait = "10m", channels = ["dashboard", "email"] },
  { notify = "coordinators", wait = "15m", channels = ["dashboard"] },
]
"#;

pub struct Scenario {
    pub app: Arc<TestApp>,
    pub clock: Arc<ManualClock>,
}

/// A hub on [`NETWORK`] with a manual clock, on a fresh database of `backend`.
pub async fn scenario(backend: Backend) -> Scenario {
    let clock = ManualClock::new(chrono::Utc::now());
    let app = TestApp::builder().backend(backend).network(NETWORK).clock(clock.clone()).spawn().await;
    Scenario { app, clock }
}

/// (focal point, channel) pages of one step of one party.
pub async fn pages(app: &TestApp, id: &str, party: &str, step: u32, loop_: u32) -> BTreeSet<(String, String)> {
    let id = uuid::Uuid::parse_str(id).expect("uuid");
    app.store
        .pages(id)
        .await
        .expect("pages")
        .into_iter()
        .filter(|p| p.party == party && p.step == step && p.loop_ == loop_)
        .map(|p| (p.focal_point, p.channel))
        .collect()
}

pub fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn raise_body(tlp: &str, parties: &[&str]) -> Value {
    json!({
        "title": "Heroin consignment", "description": "Container at Port Klang", "field": "drug-trafficking",
        "severity": "severe", "parties": parties, "tlp": tlp,
    })
}

on_both_backends!(
    each_step_pages_exactly_its_targets_then_loops_then_alarms,
    extreme_incidents_escalate_faster,
    an_ack_stops_only_that_partys_escalation,
    resolving_stops_every_partys_escalation,
    red_and_amber_strict_never_page_outside_their_audience,
    a_party_can_be_escalated_by_hand,
    two_engines_on_one_store_never_fire_a_step_twice,
);

/// Fast-forwards and waits for the `incident.escalated` (or `.unanswered`) of `party`.
async fn advance_until(s: &Scenario, watcher: &mut Stream, by: Duration, kind: &str, id: &str, party: &str) -> Value {
    s.clock.advance(by);
    loop {
        let e = watcher.expect(kind, id).await;
        if e["party"] == party {
            return e;
        }
    }
}

async fn each_step_pages_exactly_its_targets_then_loops_then_alarms(backend: Backend) {
    let s = scenario(backend).await;
    let mut officer = s.app.stream("th-duty", None).await;
    officer.backlog().await;
    let (_, inc) = s.app.raise("th-duty", &raise_body("amber", &["MY"])).await;
    let id = inc["id"].as_str().expect("id");
    assert_eq!(inc["party_states"][0]["escalation"]["step"], 0);
    assert!(inc["party_states"][0]["escalation"]["next_at"].is_string());

    let step0 = set(&[("my-l1", "dashboard"), ("my-l1", "sms"), ("my-l1b", "dashboard")]);
    assert_eq!(pages(&s.app, id, "MY", 0, 0).await, step0);

    // 4 minutes: nothing yet.
    s.clock.advance(Duration::from_secs(240));
    let e = advance_until(&s, &mut officer, Duration::from_secs(60), "incident.escalated", id, "MY").await;
    assert_eq!((e["data"]["step"].as_u64(), e["data"]["loop"].as_u64()), (Some(1), Some(0)));
    assert_eq!(e["data"]["targets"], json!(["my-l2"]));
    assert_eq!(pages(&s.app, id, "MY", 1, 0).await, set(&[("my-l2", "dashboard"), ("my-l2", "email")]));

    let e = advance_until(&s, &mut officer, Duration::from_secs(600), "incident.escalated", id, "MY").await;
    assert_eq!(e["data"]["step"], 2);
    // Amber lets the coordinators in: they are paged and may now see the incident.
    assert_eq!(pages(&s.app, id, "MY", 2, 0).await, set(&[("asean-coord", "dashboard"), ("cn-coord", "dashboard")]));
    assert_eq!(s.app.get("cn-coord", &format!("/api/v1/incidents/{id}")).await.status(), 200);

    let e = advance_until(&s, &mut officer, Duration::from_secs(900), "incident.escalated", id, "MY").await;
    assert_eq!((e["data"]["step"].as_u64(), e["data"]["loop"].as_u64()), (Some(0), Some(1)), "the loop restarts");
    assert_eq!(pages(&s.app, id, "MY", 0, 1).await, step0);
    advance_until(&s, &mut officer, Duration::from_secs(300), "incident.escalated", id, "MY").await;
    advance_until(&s, &mut officer, Duration::from_secs(600), "incident.escalated", id, "MY").await;
    let alarm = advance_until(&s, &mut officer, Duration::from_secs(900), "incident.unanswered", id, "MY").await;
    assert_eq!(alarm["data"]["alarmed"], json!(["th-duty", "cn-coord", "asean-coord"]));
    let page = officer.expect("page", id).await;
    assert_eq!(page["data"]["reason"], "unanswered");

    // Exhausted: nothing more is pending and nothing more happens.
    assert_eq!(s.app.store.pending_timers().await.expect("count"), 0);
    let got: Value = s.app.get("th-duty", &format!("/api/v1/incidents/{id}")).await.json().await.expect("json");
    assert_eq!(got["party_states"][0]["escalation"]["state"], "exhausted");
    let all = s.app.store.pages(uuid::Uuid::parse_str(id).expect("uuid")).await.expect("pages");
    // Two loops of (3 + 2 + 2) pages, then the alarm: th-duty on dashboard and email, the
    // two coordinators on the dashboard.
    assert_eq!(all.len(), 2 * (3 + 2 + 2) + 4, "exactly the pages of each step and the alarm");
}

async fn extreme_incidents_escalate_faster(backend: Backend) {
    let s = scenario(backend).await;
    let mut officer = s.app.stream("th-duty", None).await;
    officer.backlog().await;
    let mut body = raise_body("green", &["SG"]);
    body["severity"] = json!("extreme");
    let (_, inc) = s.app.raise("th-duty", &body).await;
    let id = inc["id"].as_str().expect("id");
    // Half of 5 minutes.
    let e = advance_until(&s, &mut officer, Duration::from_secs(150), "incident.escalated", id, "SG").await;
    assert_eq!(e["data"]["step"], 1);
}

async fn an_ack_stops_only_that_partys_escalation(backend: Backend) {
    let s = scenario(backend).await;
    let mut officer = s.app.stream("th-duty", None).await;
    officer.backlog().await;
    let (_, inc) = s.app.raise("th-duty", &raise_body("amber", &["MY", "SG"])).await;
    let id = inc["id"].as_str().expect("id");
    assert_eq!(s.app.ack("my-l1", id).await.status(), 200);
    let acked: Value = s.app.get("th-duty", &format!("/api/v1/incidents/{id}")).await.json().await.expect("json");
    assert_eq!(acked["party_states"][0]["escalation"]["state"], "stopped");

    let e = advance_until(&s, &mut officer, Duration::from_secs(300), "incident.escalated", id, "SG").await;
    assert_eq!(e["data"]["step"], 1);
    assert_eq!(pages(&s.app, id, "SG", 1, 0).await, set(&[("sg-l2", "dashboard")]));
    assert!(pages(&s.app, id, "MY", 1, 0).await.is_empty(), "MY acknowledged: no step 1 for MY");
    assert_eq!(s.app.store.pending_timers().await.expect("count"), 1, "only SG's next step is pending");
}

async fn resolving_stops_every_partys_escalation(backend: Backend) {
    let s = scenario(backend).await;
    let (_, inc) = s.app.raise("th-duty", &raise_body("amber", &["MY", "SG"])).await;
    let id = inc["id"].as_str().expect("id");
    assert_eq!(s.app.store.pending_timers().await.expect("count"), 2);
    s.app.post("th-duty", &format!("/api/v1/incidents/{id}/resolve"), &json!({})).await;
    assert_eq!(s.app.store.pending_timers().await.expect("count"), 0);
    let head = s.app.cursor(s.app.head().await);
    s.clock.advance(Duration::from_secs(3 * 3600));
    // Prove nothing fired: raise a marker and see it come right after the head.
    let (_, marker) = s.app.raise("th-duty", &raise_body("green", &["SG"])).await;
    let events: Value = s.app.get("th-duty", &format!("/api/v1/events?after={head}")).await.json().await.expect("json");
    // (The dispatcher's notification.* for pages sent before the resolve may come in between.)
    let first = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| !e["type"].as_str().unwrap_or("").starts_with("notification."))
        .expect("the marker's events");
    assert_eq!(first["incident"], marker["id"], "no step fired for the resolved incident: {first}");
    assert_eq!(pages(&s.app, id, "MY", 1, 0).await.len() + pages(&s.app, id, "SG", 1, 0).await.len(), 0);
}

async fn red_and_amber_strict_never_page_outside_their_audience(backend: Backend) {
    let s = scenario(backend).await;
    let mut officer = s.app.stream("th-duty", None).await;
    officer.backlog().await;

    let mut red = raise_body("red", &["MY"]);
    red["recipients"] = json!(["my-l2"]);
    let (_, inc) = s.app.raise("th-duty", &red).await;
    let red_id = inc["id"].as_str().expect("id").to_string();
    let (_, inc) = s.app.raise("th-duty", &raise_body("amber+strict", &["MY"])).await;
    let strict_id = inc["id"].as_str().expect("id").to_string();

    // Red: only the named recipient, at every step; no coordinators.
    // Step 0 names level 1, which holds no recipient: the party's recipients are paged on
    // the step's channels they have.
    assert_eq!(pages(&s.app, &red_id, "MY", 0, 0).await, set(&[("my-l2", "dashboard")]));
    for round in 0..2 {
        s.clock.advance(Duration::from_secs(300));
        officer.expect("incident.escalated", &red_id).await;
        s.clock.advance(Duration::from_secs(600));
        officer.expect("incident.escalated", &red_id).await;
        s.clock.advance(Duration::from_secs(900));
        officer.expect(if round == 0 { "incident.escalated" } else { "incident.unanswered" }, &red_id).await;
    }
    let all = s.app.store.pages(uuid::Uuid::parse_str(&red_id).expect("uuid")).await.expect("pages");
    let people: BTreeSet<String> = all.iter().map(|p| p.focal_point.clone()).collect();
    assert_eq!(
        people,
        ["my-l2", "th-duty"].iter().map(|s| s.to_string()).collect(),
        "red pages only its recipient and raiser"
    );
    let strict = s.app.store.pages(uuid::Uuid::parse_str(&strict_id).expect("uuid")).await.expect("pages");
    assert!(strict.iter().all(|p| p.focal_point.starts_with("my-") || p.focal_point == "th-duty"), "{strict:?}");
    assert!(!strict.is_empty());
    assert_eq!(s.app.get("cn-coord", &format!("/api/v1/incidents/{strict_id}")).await.status(), 404);
    assert_eq!(s.app.get("cn-coord", &format!("/api/v1/incidents/{red_id}")).await.status(), 404);
}

async fn a_party_can_be_escalated_by_hand(backend: Backend) {
    let s = scenario(backend).await;
    let (_, inc) = s.app.raise("th-duty", &raise_body("amber", &["MY"])).await;
    let id = inc["id"].as_str().expect("id");
    let r = s.app.post("th-duty", &format!("/api/v1/incidents/{id}/escalate"), &json!({"party": "MY"})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["party_states"][0]["escalation"]["step"], 1);
    assert_eq!(pages(&s.app, id, "MY", 1, 0).await, set(&[("my-l2", "dashboard"), ("my-l2", "email")]));
    assert_eq!(
        s.app.post("my-l1", &format!("/api/v1/incidents/{id}/escalate"), &json!({"party": "MY"})).await.status(),
        403
    );
    assert_eq!(
        s.app.post("th-duty", &format!("/api/v1/incidents/{id}/escalate"), &json!({"party": "SG"})).await.status(),
        422
    );
    s.app.ack("my-l1", id).await;
    assert_eq!(
        s.app.post("th-duty", &format!("/api/v1/incidents/{id}/escalate"), &json!({"party": "MY"})).await.status(),
        409
    );
}

async fn two_engines_on_one_store_never_fire_a_step_twice(backend: Backend) {
    let first = scenario(backend).await;
    let second =
        TestApp::builder().database(&first.app.database).network(NETWORK).clock(first.clock.clone()).spawn().await;
    let second = Scenario { app: second, clock: first.clock.clone() };
    let mut ids = Vec::new();
    for i in 0..150 {
        let app = if i % 2 == 0 { &first.app } else { &second.app };
        let (status, inc) = app.raise("th-duty", &raise_body("amber", &["MY", "SG"])).await;
        assert_eq!(status, 201);
        ids.push(inc["id"].as_str().expect("id").to_string());
    }
    // Both engines wake on the jump and race for the same 300 due steps.
    first.clock.advance(Duration::from_secs(300));
    let store = &first.app.store;
    wait_until(|| async {
        store.pending_timers().await.map(|n| n == 300).unwrap_or(false) && fired(store, &ids).await == 300
    })
    .await;
    let mut escalated = 0;
    for id in &ids {
        for party in ["MY", "SG"] {
            let expected = if party == "MY" {
                set(&[("my-l2", "dashboard"), ("my-l2", "email")])
            } else {
                set(&[("sg-l2", "dashboard")])
            };
            assert_eq!(pages(&first.app, id, party, 1, 0).await, expected, "{id} {party}");
        }
        let timeline = store.timeline(uuid::Uuid::parse_str(id).expect("uuid")).await.expect("timeline");
        escalated += timeline.iter().filter(|f| f.event.kind.as_str() == "incident.escalated").count();
    }
    assert_eq!(escalated, 300, "each (incident, party, step) escalated exactly once");
}

async fn fired(store: &Arc<dyn focalpoint::store::Store>, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        let timeline = store.timeline(uuid::Uuid::parse_str(id).expect("uuid")).await.unwrap_or_default();
        n += timeline.iter().filter(|f| f.event.kind.as_str() == "incident.escalated").count();
    }
    n
}
