//! TLP 2.0 (DESIGN.md section 4): for every label, who sees the incident and who gets
//! 404 — on REST (get, list, counts, events) and on the stream.

use serde_json::{Value, json};

use crate::helpers::*;

/// Thailand's officer raises to MY; `my-drugs` is the red recipient.
fn body(tlp: &str) -> Value {
    let mut b = json!({
        "title": format!("TLP {tlp} incident"),
        "description": "details that must not leak",
        "field": "drug-trafficking",
        "severity": "severe",
        "parties": ["MY"],
        "tlp": tlp,
    });
    if tlp == "red" {
        b["recipients"] = json!(["my-drugs"]);
    }
    b
}

/// (viewer, sees it?) per label. th-drugs is of the originator party; my-cyber of the
/// addressed party but not a red recipient; vn-drugs and cn-coord are outside.
fn expectations(tlp: &str) -> Vec<(&'static str, bool)> {
    let everyone = ["th-duty", "th-drugs", "my-drugs", "my-cyber", "vn-drugs", "cn-coord"];
    let seen: &[&str] = match tlp {
        "clear" | "green" => &everyone,
        "amber" | "amber+strict" => &["th-duty", "th-drugs", "my-drugs", "my-cyber"],
        "red" => &["th-duty", "my-drugs"],
        _ => unreachable!(),
    };
    let mut out: Vec<(&str, bool)> = everyone.iter().map(|v| (*v, seen.contains(v))).collect();
    // Admins and auditors never read incident content.
    out.push(("asean-admin", false));
    out.push(("asean-audit", false));
    out
}

#[tokio::test]
async fn every_label_is_seen_exactly_by_its_audience_on_rest_and_stream() {
    let app = spawn_app().await;
    for tlp in ["clear", "green", "amber", "amber+strict", "red"] {
        let expect = expectations(tlp);
        let mut streams = Vec::new();
        for (viewer, _) in &expect {
            let mut s = app.stream(viewer, None).await;
            s.backlog().await;
            streams.push(s);
        }
        let head_before = app.cursor(app.head().await);
        let (status, inc) = app.raise("th-duty", &body(tlp)).await;
        assert_eq!(status, 201, "{inc}");
        let id = inc["id"].as_str().expect("id").to_string();
        // A clear marker after it: everyone who reads incidents sees the marker, so its
        // arrival proves whether the first one was (not) delivered.
        let (_, marker) = app.raise("th-duty", &json!({
            "title": "marker", "description": "m", "field": "general", "severity": "minor", "parties": ["VN"], "tlp": "clear"
        })).await;
        let marker_id = marker["id"].as_str().expect("id").to_string();

        for ((viewer, sees), stream) in expect.iter().zip(streams.iter_mut()) {
            let r = app.get(viewer, &format!("/api/v1/incidents/{id}")).await;
            assert_eq!(r.status().as_u16(), if *sees { 200 } else { 404 }, "{tlp}: GET by {viewer}");
            let list: Value = app.get(viewer, "/api/v1/incidents?limit=500").await.json().await.expect("json");
            let listed = list["incidents"].as_array().expect("list").iter().any(|i| i["id"] == id.as_str());
            assert_eq!(listed, *sees, "{tlp}: list by {viewer}");
            let events: Value =
                app.get(viewer, &format!("/api/v1/events?after={head_before}")).await.json().await.expect("json");
            let in_events = events["events"].as_array().expect("events").iter().any(|e| e["incident"] == id.as_str());
            assert_eq!(in_events, *sees, "{tlp}: /events by {viewer}");

            if viewer.starts_with("asean-") {
                // No content role: the stream carries nothing at all for them.
                continue;
            }
            if *sees {
                let e = stream.next_event().await;
                assert_eq!(e["incident"], id.as_str(), "{tlp}: stream of {viewer}");
            } else {
                stream.assert_absent_before(&id, &marker_id).await;
            }
        }
    }
}

#[tokio::test]
async fn counts_never_include_invisible_incidents() {
    let app = spawn_app().await;
    app.raise("th-duty", &body("red")).await;
    app.raise("th-duty", &body("amber+strict")).await;
    app.raise("th-duty", &body("green")).await;
    let count = |who: &'static str| {
        let app = app.clone();
        async move { app.get(who, "/api/v1/incidents").await.json::<Value>().await.expect("json")["total"].as_u64() }
    };
    assert_eq!(count("vn-drugs").await, Some(1));
    assert_eq!(count("my-cyber").await, Some(2));
    assert_eq!(count("my-drugs").await, Some(3));
    assert_eq!(count("asean-audit").await, Some(0));
}

#[tokio::test]
async fn auditors_verify_the_chain_without_reading_content() {
    let app = spawn_app().await;
    app.raise("th-duty", &body("green")).await;
    let report: Value = app.get("asean-audit", "/api/v1/audit/verify").await.json().await.expect("json");
    assert_eq!(report["intact"], true);
    assert!(report["report"]["events"].as_i64() >= Some(2), "{report}");
    assert_eq!(app.get("my-drugs", "/api/v1/audit/verify").await.status(), 403);
}
