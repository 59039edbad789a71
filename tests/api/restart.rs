//! Promise 3 across a crash, with real processes: a step that falls due while the hub is
//! down fires once, at once, after the restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::crash::command;
use crate::helpers::*;

/// The scenario network with a 2-second first step (so a test can outlive it) and long
/// later ones.
fn network_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text =
        crate::scenario::NETWORK.replace("wait = \"5m\"", "wait = \"2s\"").replace("wait = \"10m\"", "wait = \"1h\"");
    let path = dir.join("network.toml");
    std::fs::write(&path, text).expect("network written");
    path
}

#[tokio::test]
async fn a_step_due_while_the_hub_was_down_fires_once_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("restart.db");
    let network = network_file(dir.path());
    let with_network = |mut c: std::process::Command| {
        c.env("FOCALPOINT__NETWORK__FILE", &network);
        c
    };
    // Tokens through the CLI, on the scenario network.
    let token = |id: &str| {
        let out = with_network(command(&db)).args(["token", "issue", id]).output().expect("cli");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).lines().last().expect("token").trim().to_string()
    };
    let officer = token("th-duty");

    let mut hub = crate::crash::start_with(&db, |c| {
        c.env("FOCALPOINT__NETWORK__FILE", &network);
    });
    let http = crate::helpers::http();
    let body = json!({"title": "t", "description": "d", "field": "drug-trafficking", "severity": "moderate", "parties": ["MY"], "tlp": "amber"});
    let r = http
        .post(format!("{}/api/v1/incidents", hub.base))
        .bearer_auth(&officer)
        .json(&body)
        .send()
        .await
        .expect("raise");
    assert_eq!(r.status(), 201);
    let inc: Value = r.json().await.expect("json");
    let id = inc["id"].as_str().expect("id").to_string();
    let due = chrono::DateTime::parse_from_rfc3339(
        inc["party_states"][0]["escalation"]["next_at"].as_str().expect("next_at"),
    )
    .expect("rfc3339");

    hub.child.kill().expect("SIGKILL");
    hub.child.wait().expect("reaped");
    // Stay down until the step is due: that is the situation under test.
    let remaining = (due.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(remaining + Duration::from_millis(300)).await;

    let hub = crate::crash::start_with(&db, |c| {
        c.env("FOCALPOINT__NETWORK__FILE", &network);
    });
    let mut stream = Stream::connect(&hub.base, &officer, Some("0")).await;
    let escalated = stream.expect("incident.escalated", &id).await;
    assert_eq!((escalated["data"]["step"].as_u64(), escalated["party"].as_str()), (Some(1), Some("MY")));

    // Prove it fired once: a later marker arrives, and the log holds one escalation.
    let marker = http
        .post(format!("{}/api/v1/incidents", hub.base))
        .bearer_auth(&officer)
        .json(&body)
        .send()
        .await
        .expect("raise");
    let marker: Value = marker.json().await.expect("json");
    stream.expect("incident.raised", marker["id"].as_str().expect("id")).await;
    let events: Value = http
        .get(format!("{}/api/v1/events?after=0", hub.base))
        .bearer_auth(&officer)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let count = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "incident.escalated" && e["incident"] == id.as_str())
        .count();
    assert_eq!(count, 1, "the step fired exactly once");
    drop(hub);
}
