//! What the black-box security review found (issue 17), each closed and kept closed: who
//! may close and escalate, red recipients who can read, dedup keys that reveal nothing,
//! header size, bearer-token guessing, positions that count hidden events. Each runs on
//! SQLite and PostgreSQL.

use serde_json::{Value, json};

use crate::helpers::*;

async fn spawn(backend: Backend) -> std::sync::Arc<TestApp> {
    TestApp::builder().backend(backend).spawn().await
}

/// Raises an amber incident as asean-duty (party ASEAN) to MY and SG; returns its id.
async fn raise_by_asean(app: &TestApp) -> String {
    let (status, inc) = app.raise("asean-duty", &incident("amber")).await;
    assert_eq!(status, 201, "{inc}");
    inc["id"].as_str().expect("id").to_string()
}

async fn act(app: &TestApp, who: &str, id: &str, action: &str) -> u16 {
    let body = if action == "escalate" { json!({"party": "MY"}) } else { json!({}) };
    app.post(who, &format!("/api/v1/incidents/{id}/{action}"), &body).await.status().as_u16()
}

/// Every principal kind against resolve, cancel and escalate. Forbidden ones go first, on
/// the same incident, so that a wrongly allowed one would show as a 200 before the
/// allowed one runs; admins and auditors read no incidents, so to them it does not exist.
async fn only_the_named_roles_close_and_escalate(backend: Backend) {
    let app = spawn(backend).await;
    let refused = [
        ("asean-bot", 403),   // bot of the originating party
        ("my-duty", 403),     // officer of an addressed party
        ("my-drugs", 403),    // focal point of an addressed party
        ("asean-admin", 404), // admin
        ("asean-audit", 404), // auditor
    ];
    for action in ["resolve", "cancel", "escalate"] {
        let id = raise_by_asean(&app).await;
        for (who, expected) in refused {
            assert_eq!(act(&app, who, &id, action).await, expected, "{who} {action}");
        }
        if action != "escalate" {
            assert_eq!(act(&app, "asean-coord", &id, action).await, 403, "coordinators do not {action}");
        }
        assert_eq!(act(&app, "asean-duty", &id, action).await, 200, "the originating officer may {action}");
    }
    let id = raise_by_asean(&app).await;
    assert_eq!(act(&app, "asean-coord", &id, "escalate").await, 200, "coordinators escalate");
}

async fn red_recipients_must_be_readers(backend: Backend) {
    let app = spawn(backend).await;
    let red = |recipients: Value| {
        let mut body = incident("red");
        body["parties"] = json!(["ASEAN"]);
        body["recipients"] = recipients;
        body
    };
    for who in ["asean-admin", "asean-audit"] {
        let (status, err) = app.raise("th-duty", &red(json!([who]))).await;
        assert_eq!(status, 422, "{who}: {err}");
        assert_eq!(err["error"]["field"], "recipients");
    }
    let (status, err) = app.raise("th-duty", &red(json!(["asean-coord", "asean-admin"]))).await;
    assert_eq!(status, 422, "one non-reader among readers is refused too: {err}");
    let (status, inc) = app.raise("th-duty", &red(json!(["asean-coord"]))).await;
    assert_eq!(status, 201, "{inc}");
}

/// asean-duty's red incident names only my-drugs; asean-bot, of the same party, may not
/// see it. Reusing its dedup key or its Idempotency-Key must tell the bot nothing.
async fn dedup_and_idempotency_keys_reveal_no_hidden_incident(backend: Backend) {
    let app = spawn(backend).await;
    let mut red = incident("red");
    red["recipients"] = json!(["my-drugs"]);
    red["dedup_key"] = json!("port-klang-1");
    let r = app
        .http
        .post(format!("{}/api/v1/incidents", app.base))
        .bearer_auth(app.token("asean-duty").await)
        .header("Idempotency-Key", "k-1")
        .json(&red)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    let hidden: Value = r.json().await.expect("json");
    let hidden_id = hidden["id"].as_str().expect("id").to_string();
    assert_eq!(app.get("asean-bot", &format!("/api/v1/incidents/{hidden_id}")).await.status(), 404);

    // The same dedup key from the bot: a new incident of its own, as if the key were free.
    let mut amber = incident("amber");
    amber["dedup_key"] = json!("port-klang-1");
    let (status, mine) = app.raise("asean-bot", &amber).await;
    assert_eq!(status, 201, "{mine}");
    assert_ne!(mine["id"], hidden["id"]);
    assert!(!mine.to_string().contains(&hidden_id));
    // And that one is the party-wide holder of the key from now on: the officer, who
    // sees it, gets it back; the officer's own red one still answers its own retry.
    let (status, again) = app.raise("asean-duty", &amber).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], mine["id"]);

    // The officer's Idempotency-Key, reused by the bot: the bot's own new incident.
    let r = app
        .http
        .post(format!("{}/api/v1/incidents", app.base))
        .bearer_auth(app.token("asean-bot").await)
        .header("Idempotency-Key", "k-1")
        .json(&incident("amber"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    assert!(!body.to_string().contains(&hidden_id));
}

async fn oversized_headers_get_431(backend: Backend) {
    let app = spawn(backend).await;
    let get = |size: usize| app.http.get(format!("{}/healthz", app.base)).header("x-padding", "a".repeat(size)).send();
    assert_eq!(get(4 * 1024).await.expect("sent").status(), 200);
    let r = get(100 * 1024).await.expect("sent");
    assert_eq!(r.status(), 431);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "headers_too_large");
}

async fn bearer_token_guessing_is_rate_limited(backend: Backend) {
    let app = TestApp::builder().backend(backend).settings(|s| s.limits.token_failures = 3).spawn().await;
    let valid = app.token("th-duty").await;
    let (invalid_before, limited_before) =
        (token_failures(&app, "invalid").await, token_failures(&app, "rate_limited").await);
    let list = |token: String| app.http.get(format!("{}/api/v1/incidents", app.base)).bearer_auth(token).send();
    for n in 0..3 {
        let guess = format!("fp_{n:032}");
        assert_eq!(list(guess).await.expect("sent").status(), 401);
    }
    let r = list("fp_99999999999999999999999999999999".into()).await.expect("sent");
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(wait > 0 && wait <= 900, "Retry-After {wait}");
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "rate_limited");
    // Limited like sign-ins: the address waits, whatever it sends.
    assert_eq!(list(valid).await.expect("sent").status(), 429);
    // The recorder is shared by every hub in this test process: compare, do not equate.
    assert!(token_failures(&app, "invalid").await >= invalid_before + 3);
    assert!(token_failures(&app, "rate_limited").await >= limited_before + 2);
}

/// The `focalpoint_token_failures_total{reason}` counter (0 before the first).
async fn token_failures(app: &TestApp, reason: &str) -> u64 {
    let metrics = app.metrics().await;
    let prefix = format!("focalpoint_token_failures_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().expect("a count"))
}

/// Expired tokens are refused like revoked ones; a used token's last use is recorded.
async fn expired_tokens_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let now = chrono::Utc::now();
    let (expired, valid) = (focalpoint::auth::secret::generate(), focalpoint::auth::secret::generate());
    let hash = focalpoint::auth::secret::hash;
    app.store
        .insert_token(&hash(&expired), "th-duty", "old", Some(now - chrono::TimeDelta::minutes(1)))
        .await
        .expect("token");
    app.store
        .insert_token(&hash(&valid), "th-duty", "new", Some(now + chrono::TimeDelta::days(90)))
        .await
        .expect("token");
    let list = |token: String| app.http.get(format!("{}/api/v1/incidents", app.base)).bearer_auth(token).send();
    assert_eq!(list(expired).await.expect("sent").status(), 401);
    assert_eq!(list(valid).await.expect("sent").status(), 200);
    let store = app.store.clone();
    wait_until(|| {
        let store = store.clone();
        async move {
            let tokens = store.tokens_of("th-duty").await.expect("list");
            tokens.iter().any(|t| t.label == "new" && t.last_used_at.is_some())
        }
    })
    .await;
    let tokens = app.store.tokens_of("th-duty").await.expect("list");
    assert!(tokens.iter().all(|t| t.label != "old" || t.last_used_at.is_none()), "a refused token was not used");
}

/// Nothing unauthenticated tells how much is going on: readiness says ready or not, and
/// metrics need their own token (none configured: no metrics at all).
async fn no_unauthenticated_endpoint_reveals_activity(backend: Backend) {
    let app = spawn(backend).await;
    let (status, _) = app.raise("th-duty", &incident("amber")).await;
    assert_eq!(status, 201);
    let ready: Value =
        app.http.get(format!("{}/readyz", app.base)).send().await.expect("sent").json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    let text = ready.to_string();
    assert!(!text.contains("seq") && !text.chars().any(|c| c.is_ascii_digit()), "no counters: {text}");

    let metrics = |token: Option<&str>| {
        let mut r = app.http.get(format!("{}/metrics", app.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(metrics(None).await.expect("sent").status(), 401);
    assert_eq!(metrics(Some("test-metrics-token-0124")).await.expect("sent").status(), 401);
    let officer = app.token("th-duty").await;
    assert_eq!(metrics(Some(&officer)).await.expect("sent").status(), 401, "a party's token is not the metrics token");
    assert!(app.metrics().await.contains("focalpoint_incidents_raised_total"));

    let off = TestApp::builder().backend(backend).settings(|s| s.server.metrics_token.clear()).spawn().await;
    let r = off.http.get(format!("{}/metrics", off.base)).bearer_auth(METRICS_TOKEN).send().await.expect("sent");
    assert_eq!(r.status(), 404, "no metrics token configured: no metrics");
}

/// Every place an object has a key `name`, at any depth.
fn keys_named<'a>(v: &'a Value, name: &str, found: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == name {
                    found.push(v);
                }
                keys_named(v, name, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys_named(v, name, found)),
        _ => {}
    }
}

/// A viewer cannot count what it was not shown: between two incidents it sees, others it
/// may not see are raised, and nothing it receives (stream events and `stream.live`,
/// `/events`, lists, timelines) carries the log's seq. Positions are opaque cursors that
/// only this hub (any replica of it) opens; a number or a tampered cursor is refused.
async fn no_value_a_viewer_receives_counts_the_events_hidden_from_it(backend: Backend) {
    let app = spawn(backend).await;
    let mut stream = app.stream("my-drugs", None).await;
    stream.backlog().await;
    let mut received: Vec<Value> = vec![json!({ "cursor": stream.live_cursor.clone() })];
    let (_, a) = app.raise("th-duty", &incident("amber")).await;
    let a = a["id"].as_str().expect("id").to_string();
    let hidden = json!({
        "title": "KH only", "description": "x", "field": "general", "severity": "minor", "parties": ["KH"], "tlp": "amber"
    });
    for _ in 0..5 {
        assert_eq!(app.raise("vn-duty", &hidden).await.0, 201);
    }
    let (_, b) = app.raise("th-duty", &incident("amber")).await;
    let b = b["id"].as_str().expect("id").to_string();
    loop {
        let v = stream.next_json(WAIT).await.expect("events arrive");
        let done = v["type"] == "incident.raised" && v["incident"] == b.as_str();
        received.push(v);
        if done {
            break;
        }
    }
    let raised = |id: &str| {
        received.iter().find(|e| e["type"] == "incident.raised" && e["incident"] == id).cloned().expect("raised")
    };
    let (raised_a, raised_b) = (raised(&a), raised(&b));
    // The hidden raises really lie between the two (so a seq would have shown them)...
    let shown_between = received.iter().filter(|e| e.get("type").is_some()).count();
    assert!(app.seq(&raised_b) - app.seq(&raised_a) > shown_between as i64, "hidden events in between");
    for path in
        ["/api/v1/events?after=0".to_string(), "/api/v1/incidents?limit=1".into(), format!("/api/v1/incidents/{a}")]
    {
        received.push(app.get("my-drugs", &path).await.json::<Value>().await.expect("json"));
    }
    // ... and nothing received says where the viewer is in the log.
    for name in ["seq", "last_seq"] {
        let mut found = Vec::new();
        received.iter().for_each(|v| keys_named(v, name, &mut found));
        assert!(found.is_empty(), "`{name}` reached a viewer: {found:?}");
    }
    let mut cursors = Vec::new();
    for name in ["cursor", "next_cursor"] {
        received.iter().for_each(|v| keys_named(v, name, &mut cursors));
    }
    assert!(cursors.len() > 10, "cursors everywhere a position is: {}", cursors.len());
    for c in &cursors {
        let c = c.as_str().expect("a cursor is a string");
        // "0", the start of the log, is the one position every viewer may know.
        assert!(c == "0" || (c.len() == 22 && !c.bytes().all(|b| b.is_ascii_digit())), "opaque: {c}");
        assert!(app.cursors.open(c).is_ok(), "{c} opens on this hub");
    }

    // Positions the hub did not give out are refused, on every path.
    let mut tampered = raised_a["cursor"].as_str().expect("cursor").to_string().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let number = app.seq(&raised_a).to_string();
    for bad in [number.as_str(), tampered.as_str()] {
        let r = app.get("my-drugs", &format!("/api/v1/events?after={bad}")).await;
        assert_eq!(r.status(), 422, "/events?after={bad}");
        let r = app.get("my-drugs", &format!("/api/v1/incidents?cursor={bad}")).await;
        assert_eq!(r.status(), 422, "list cursor {bad}");
        let token = app.token("my-drugs").await;
        assert_eq!(connect_raw(&app.base, Some(&token), Some(bad), None).await.err(), Some(422), "stream {bad}");
    }

    // Another replica on the same store seals alike: the viewer resumes there from A's
    // cursor and gets exactly what followed, B included.
    let other = TestApp::builder().backend(backend).database(&app.database).spawn().await;
    let mut resumed = other.stream("my-drugs", raised_a["cursor"].as_str()).await;
    let backlog = resumed.backlog().await;
    let after_a: Vec<&Value> = received.iter().skip_while(|e| **e != raised_a).skip(1).collect();
    let backlog_raises: Vec<&Value> = backlog.iter().filter(|e| e["type"] == "incident.raised").collect();
    assert_eq!(backlog_raises, after_a.into_iter().filter(|e| e["type"] == "incident.raised").collect::<Vec<_>>());
    assert_eq!(backlog_raises.last().map(|e| &e["incident"]), Some(&json!(b)));
}

on_both_backends!(
    no_value_a_viewer_receives_counts_the_events_hidden_from_it,
    no_unauthenticated_endpoint_reveals_activity,
    expired_tokens_are_refused,
    only_the_named_roles_close_and_escalate,
    red_recipients_must_be_readers,
    dedup_and_idempotency_keys_reveal_no_hidden_incident,
    oversized_headers_get_431,
    bearer_token_guessing_is_rate_limited,
);
