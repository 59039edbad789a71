//! Raise, dedup, idempotency, acknowledgement, notes and the lifecycle over REST.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn raise_then_get_shows_each_party_pending_and_the_timeline() {
    let app = spawn_app().await;
    let (status, inc) = app.raise("th-duty", &incident("amber")).await;
    assert_eq!(status, 201);
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["originator"]["party"], "TH");
    assert_eq!(inc["ref"].as_str().map(str::len), Some(4));
    let id = inc["id"].as_str().expect("id");

    let got: Value = app.get("my-drugs", &format!("/api/v1/incidents/{id}")).await.json().await.expect("json");
    let parties: Vec<(&str, bool)> = got["party_states"]
        .as_array()
        .expect("party states")
        .iter()
        .map(|p| (p["party"].as_str().unwrap_or(""), p["acknowledged"].as_bool().unwrap_or(true)))
        .collect();
    assert_eq!(parties, vec![("MY", false), ("SG", false)]);
    assert_eq!(got["timeline"][0]["type"], "incident.raised");
}

#[tokio::test]
async fn ack_is_per_party_and_idempotent() {
    let app = spawn_app().await;
    let (_, inc) = app.raise("th-duty", &incident("amber")).await;
    let id = inc["id"].as_str().expect("id");

    let first = app.ack("my-drugs", id).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ack-result"], "acknowledged");
    let body: Value = first.json().await.expect("json");
    assert_eq!(body["state"], "open", "SG has not acknowledged yet");
    assert_eq!(body["party_states"][0]["acknowledged_by"], "my-drugs");
    let head = app.changes().await;

    // A colleague of the same party acks again: nothing new is recorded.
    let again = app.ack("my-cyber", id).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["ack-result"], "already_acknowledged");
    assert_eq!(app.changes().await, head, "a repeated ack adds no event");

    let last = app.ack("sg-drugs", id).await;
    let body: Value = last.json().await.expect("json");
    assert_eq!(body["state"], "acknowledged", "every addressed party has acknowledged");

    // An officer (no focal role) of an addressed party may not ack; a non-addressed
    // party's focal point cannot even see an amber incident.
    assert_eq!(app.ack("my-duty", id).await.status(), 403);
    assert_eq!(app.ack("vn-drugs", id).await.status(), 404);
}

#[tokio::test]
async fn fifty_concurrent_raises_with_one_dedup_key_give_one_incident() {
    let app = spawn_app().await;
    let mut body = incident("green");
    body["dedup_key"] = json!("port-klang-2026-11-30");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move { app.raise("th-duty", &body).await }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, inc) = t.await.expect("task");
        assert!(status == 201 || status == 200, "status {status}: {inc}");
        if status == 201 {
            created += 1;
        }
        ids.insert(inc["id"].as_str().expect("id").to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let list: Value = app.get("th-duty", "/api/v1/incidents").await.json().await.expect("json");
    assert_eq!(list["total"], 1);

    // Once resolved, the key is free again.
    let id = ids.into_iter().next().expect("one id");
    assert_eq!(app.post("th-duty", &format!("/api/v1/incidents/{id}/resolve"), &json!({})).await.status(), 200);
    let (status, again) = app.raise("th-duty", &body).await;
    assert_eq!(status, 201);
    assert_ne!(again["id"], id.as_str());
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_a_different_body() {
    let app = spawn_app().await;
    let token = app.token("th-duty").await;
    let send = |body: Value| {
        let app = app.clone();
        let token = token.clone();
        async move {
            app.http
                .post(format!("{}/api/v1/incidents", app.base))
                .bearer_auth(token)
                .header("Idempotency-Key", "retry-1")
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };
    let first = send(incident("amber")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let head = app.changes().await;
    let replay = send(incident("amber")).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay["id"], first["id"]);
    let mut other = incident("amber");
    other["title"] = json!("Something else");
    let conflict = send(other).await;
    assert_eq!(conflict.status(), 409);
    let err: Value = conflict.json().await.expect("json");
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    assert_eq!(app.changes().await, head, "replays and conflicts add nothing");
}

#[tokio::test]
async fn notes_resolve_and_cancel_follow_the_lifecycle_and_roles() {
    let app = spawn_app().await;
    let (_, inc) = app.raise("th-duty", &incident("amber")).await;
    let id = inc["id"].as_str().expect("id");

    let noted =
        app.post("sg-drugs", &format!("/api/v1/incidents/{id}/notes"), &json!({"text": "Customs alerted"})).await;
    assert_eq!(noted.status(), 200);
    let noted: Value = noted.json().await.expect("json");
    assert_eq!(noted["notes"][0]["text"], "Customs alerted");
    assert_eq!(noted["notes"][0]["party"], "SG");

    // Only officers of the originating party resolve or cancel.
    assert_eq!(app.post("my-duty", &format!("/api/v1/incidents/{id}/resolve"), &json!({})).await.status(), 403);
    assert_eq!(app.post("th-drugs", &format!("/api/v1/incidents/{id}/resolve"), &json!({})).await.status(), 403);
    let resolved = app.post("th-duty", &format!("/api/v1/incidents/{id}/resolve"), &json!({"reason": "Seized"})).await;
    assert_eq!(resolved.status(), 200);
    let resolved: Value = resolved.json().await.expect("json");
    assert_eq!(resolved["state"], "resolved");
    assert!(resolved["closed_at"].is_string());

    // A closed incident takes no more acks, notes or closes, and says why.
    let late = app.ack("my-drugs", id).await;
    assert_eq!(late.status(), 409);
    assert_eq!(late.json::<Value>().await.expect("json")["error"]["code"], "incident_closed");
    assert_eq!(app.post("th-duty", &format!("/api/v1/incidents/{id}/cancel"), &json!({})).await.status(), 409);

    let (_, other) = app.raise("th-duty", &incident("green")).await;
    let oid = other["id"].as_str().expect("id");
    let cancelled: Value =
        app.post("th-duty", &format!("/api/v1/incidents/{oid}/cancel"), &json!({})).await.json().await.expect("json");
    assert_eq!(cancelled["state"], "cancelled");
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut body = incident("green");
        body["title"] = json!(format!("Incident {i}"));
        if i % 2 == 0 {
            body["field"] = json!("cyber-crime");
        }
        ids.push(app.raise("th-duty", &body).await.1["id"].as_str().expect("id").to_string());
    }
    let page: Value = app.get("vn-drugs", "/api/v1/incidents?limit=3").await.json().await.expect("json");
    assert_eq!(page["total"], 7);
    assert_eq!(page["incidents"].as_array().map(Vec::len), Some(3));
    assert_eq!(page["incidents"][0]["id"], ids[6].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let page2: Value =
        app.get("vn-drugs", &format!("/api/v1/incidents?limit=3&cursor={cursor}")).await.json().await.expect("json");
    assert_eq!(page2["incidents"][0]["id"], ids[3].as_str());

    let cyber: Value =
        app.get("vn-drugs", "/api/v1/incidents?field=cyber-crime&state=active").await.json().await.expect("json");
    assert_eq!(cyber["total"], 4);
    let bad = app.get("vn-drugs", "/api/v1/incidents?state=sleeping").await;
    assert_eq!(bad.status(), 422);
}
