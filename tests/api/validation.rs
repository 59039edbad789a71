//! Promise 6: bad input of each kind gets a clear 4xx JSON error and changes nothing.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn bad_raises_get_a_clear_error_and_change_nothing() {
    let app = spawn_app().await;
    let base = incident("amber");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("object").remove(key);
        b
    };
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("missing title", without("title"), 422, Some("title")),
        ("blank title", with("title", json!("   ")), 422, Some("title")),
        ("long title", with("title", json!("x".repeat(201))), 422, Some("title")),
        ("control chars", with("title", json!("a\u{0007}b")), 422, Some("title")),
        ("missing description", without("description"), 422, Some("description")),
        ("unknown field", with("field", json!("jaywalking")), 422, Some("field")),
        ("bad severity", with("severity", json!("apocalyptic")), 422, None),
        ("missing tlp", without("tlp"), 422, Some("tlp")),
        ("bad tlp", with("tlp", json!("purple")), 422, None),
        ("no parties", with("parties", json!([])), 422, Some("parties")),
        ("unknown party", with("parties", json!(["XX"])), 422, Some("parties")),
        ("duplicate party", with("parties", json!(["MY", "MY"])), 422, Some("parties")),
        ("parties not a list", with("parties", json!("MY")), 422, None),
        ("red without recipients", with("tlp", json!("red")), 422, Some("recipients")),
        ("recipients on amber", with("recipients", json!(["my-drugs"])), 422, Some("recipients")),
        ("bad latitude", with("area", json!({"text": "x", "lat": 91.0, "lon": 0.0})), 422, Some("area")),
        ("lat without lon", with("area", json!({"text": "x", "lat": 1.0})), 422, Some("area")),
        ("unknown key", with("colour", json!("blue")), 422, None),
        ("long dedup key", with("dedup_key", json!("k".repeat(201))), 422, Some("dedup_key")),
    ];
    let head = app.changes().await;
    for (name, body, status, field) in cases {
        let r = app.post("th-duty", "/api/v1/incidents", &body).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let err: Value = r.json().await.expect("json error");
        assert!(err["error"]["code"].is_string(), "{name}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap_or("").is_empty(), "{name}: {err}");
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{name}: {err}");
        }
    }
    let token = app.token("th-duty").await;
    let raw = |body: &'static str, content_type: &'static str| {
        let app = app.clone();
        let token = token.clone();
        async move {
            app.http
                .post(format!("{}/api/v1/incidents", app.base))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("sent")
        }
    };
    assert_eq!(raw("{\"title\":", "application/json").await.status(), 400);
    assert_eq!(raw("title=x", "application/x-www-form-urlencoded").await.status(), 415);
    let huge = Box::leak(format!("{{\"title\":\"{}\"}}", "x".repeat(100_000)).into_boxed_str());
    assert_eq!(raw(huge, "application/json").await.status(), 413);
    // Focal points do not raise.
    assert_eq!(app.post("my-drugs", "/api/v1/incidents", &base).await.status(), 403);
    assert_eq!(app.changes().await, head, "no bad request changed anything");
}

#[tokio::test]
async fn bad_paths_queries_and_bodies_on_other_routes() {
    let app = spawn_app().await;
    let (_, inc) = app.raise("th-duty", &incident("amber")).await;
    let id = inc["id"].as_str().expect("id");
    let head = app.changes().await;
    assert_eq!(app.get("my-drugs", "/api/v1/incidents/not-a-uuid").await.status(), 404);
    assert_eq!(app.get("my-drugs", "/api/v1/incidents/00000000-0000-0000-0000-000000000000").await.status(), 404);
    assert_eq!(app.get("my-drugs", "/api/v1/events?after=-1").await.status(), 422);
    assert_eq!(app.get("my-drugs", "/api/v1/events?after=abc").await.status(), 422);
    assert_eq!(
        app.post("my-drugs", &format!("/api/v1/incidents/{id}/notes"), &json!({"text": ""})).await.status(),
        422
    );
    assert_eq!(
        app.post("my-drugs", &format!("/api/v1/incidents/{id}/notes"), &json!({"text": "x".repeat(4001)}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.post("my-drugs", &format!("/api/v1/incidents/{id}/notes"), &json!({"words": "hi"})).await.status(),
        422
    );
    assert_eq!(app.post("my-drugs", &format!("/api/v1/incidents/{id}/ack"), &json!({"extra": 1})).await.status(), 422);
    let unknown = app.get("my-drugs", "/api/v1/nothing-here").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.expect("json")["error"]["code"], "not_found");
    assert_eq!(app.changes().await, head);
}
