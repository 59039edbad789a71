//! The live stream: delivery, acks over the socket, gap-free resume, slow clients.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_raise_reaches_an_addressed_focal_point_and_an_ack_reaches_the_originator() {
    let app = spawn_app().await;
    let mut focal = app.stream("my-drugs", None).await;
    let mut officer = app.stream("th-duty", None).await;
    focal.backlog().await;
    officer.backlog().await;

    let (_, inc) = app.raise("th-duty", &incident("amber")).await;
    let id = inc["id"].as_str().expect("id");
    let raised = focal.expect("incident.raised", id).await;
    assert_eq!(raised["data"]["incident"]["title"], inc["title"]);
    assert_eq!(raised["party"], "TH");

    assert_eq!(app.ack("my-drugs", id).await.status(), 200);
    let acked = officer.expect("incident.acknowledged", id).await;
    assert_eq!(acked["data"]["party"], "MY");
    assert_eq!(acked["data"]["by"], "my-drugs");
    assert!(app.seq(&acked) > app.seq(&raised), "in log order");
}

#[tokio::test]
async fn a_client_acks_over_the_socket() {
    let app = spawn_app().await;
    let mut focal = app.stream("sg-drugs", None).await;
    focal.backlog().await;
    let (_, inc) = app.raise("th-duty", &incident("amber")).await;
    let id = inc["id"].as_str().expect("id");
    focal.expect("incident.raised", id).await;

    focal.send(json!({"type": "ack", "incident": id})).await;
    let mut result = None;
    let mut acked = false;
    while result.is_none() || !acked {
        let v = focal.next_json(WAIT).await.expect("message");
        if v["type"] == "ack.result" {
            result = Some(v["result"].clone());
        }
        if v["type"] == "incident.acknowledged" {
            assert_eq!(v["data"]["via"], "stream");
            acked = true;
        }
    }
    assert_eq!(result, Some(json!("acknowledged")));

    focal.send(json!({"type": "ack", "incident": id})).await;
    let again = focal.next_reply().await;
    assert_eq!(again["result"], "already_acknowledged");
    focal.send(json!({"type": "dance"})).await;
    let err = focal.next_reply().await;
    assert_eq!(err["type"], "error");
    focal.send(json!({"type": "ack", "incident": "not-an-id"})).await;
    assert_eq!(focal.next_reply().await["code"], "not_found");
}

#[tokio::test]
async fn reconnecting_with_after_gets_exactly_the_missed_events() {
    let app = spawn_app().await;
    let mut first = app.stream("my-drugs", None).await;
    first.backlog().await;
    let (_, a) = app.raise("th-duty", &incident("amber")).await;
    let seen = first.expect("incident.raised", a["id"].as_str().expect("id")).await;
    let last_seen = seen["cursor"].as_str().expect("cursor").to_string();
    drop(first);

    // While disconnected: visible and invisible events happen.
    let (_, b) = app.raise("th-duty", &incident("amber")).await;
    let (_, hidden) = app.raise("vn-duty", &json!({
        "title": "VN only", "description": "x", "field": "general", "severity": "minor", "parties": ["KH"], "tlp": "amber"
    })).await;
    app.ack("sg-drugs", b["id"].as_str().expect("id")).await;
    app.post(
        "my-drugs",
        &format!("/api/v1/incidents/{}/notes", a["id"].as_str().expect("id")),
        &json!({"text": "on it"}),
    )
    .await;

    let mut again = app.stream("my-drugs", Some(&last_seen)).await;
    let missed = again.backlog().await;
    // The dispatcher's notification.* events (SMS and email pages sent) interleave; the
    // point here is the incident events.
    let got: Vec<(String, String)> = missed
        .iter()
        .filter(|e| !e["type"].as_str().unwrap_or("").starts_with("notification."))
        .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["incident"].as_str().unwrap_or("").to_string()))
        .collect();
    // my-drugs is MY's first-line drugs desk: the raises page it on the dashboard.
    let expected = vec![
        ("page".to_string(), a["id"].as_str().unwrap_or("").to_string()),
        ("incident.raised".to_string(), b["id"].as_str().unwrap_or("").to_string()),
        ("page".to_string(), b["id"].as_str().unwrap_or("").to_string()),
        ("incident.acknowledged".to_string(), b["id"].as_str().unwrap_or("").to_string()),
        ("incident.note".to_string(), a["id"].as_str().unwrap_or("").to_string()),
    ];
    assert_eq!(got, expected);
    assert!(missed.iter().all(|e| e["incident"] != hidden["id"]));
    let seqs: Vec<i64> = missed.iter().map(|e| app.seq(e)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");

    // And live events continue after the backlog without a gap.
    let (_, c) = app.raise("th-duty", &incident("amber")).await;
    again.expect("incident.raised", c["id"].as_str().expect("id")).await;
}

/// Promise 4: a client that stops reading is closed with a reason naming the cursor to
/// resume after, and resuming from there loses nothing.
#[tokio::test]
async fn a_slow_client_is_closed_with_a_reason_and_resumes_without_a_gap() {
    let app = spawn_app_with(|s| s.limits.ws_buffer_events = 16).await;
    let token = app.token("my-drugs").await;
    // A small receive buffer on the client so the server's writes back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(app.addr).await.expect("connect");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/api/v1/stream", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let (ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
    let mut slow = Stream { ws, live_cursor: None };
    slow.backlog().await;

    // Raise far more than the socket buffers hold while the client does not read.
    let big = "x".repeat(9_000);
    let mut ids = Vec::new();
    for i in 0..700 {
        let mut body = incident("amber");
        body["description"] = json!(format!("{i} {big}"));
        ids.push(app.raise("th-duty", &body).await.1["id"].as_str().expect("id").to_string());
    }

    // Now read: events in order, then a close frame with code 4008 and the resume cursor.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut received: Vec<Value> = Vec::new();
    let reason = loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await.expect("the server closes in time") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                if v["cursor"].is_string() && v["type"] != "stream.live" {
                    received.push(v);
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 4008);
                break frame.reason.to_string();
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame with a reason, got {other:?}"),
        }
    };
    let raised = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == "incident.raised")
            .filter_map(|e| e["incident"].as_str().map(String::from))
            .collect()
    };
    assert!(raised(&received).len() < ids.len(), "the client really fell behind");
    let resume = reason.rsplit(' ').next().expect("reason names a cursor").to_string();
    if let Some(last) = received.last() {
        assert_eq!(
            Some(resume.as_str()),
            last["cursor"].as_str(),
            "the reason names the last cursor the client received"
        );
    }

    let mut again = app.stream("my-drugs", Some(&resume)).await;
    let rest = again.backlog().await;
    let mut all = raised(&received);
    all.extend(raised(&rest));
    assert_eq!(all, ids, "every raise arrives exactly once, in order, across the two connections");
}

/// The embedded feed serves what its own writer just committed from memory; events another
/// hub appended to the same SQLite file in between leave a gap there, which the feed must
/// fill from the store: a client sees every raise of both, once, in log order.
#[tokio::test]
async fn events_of_another_hub_on_the_same_file_fill_the_gaps_in_memory() {
    let a = spawn_app().await;
    let b = TestApp::builder().database(&a.database).spawn().await;
    let mut client = a.stream("my-drugs", None).await;
    client.backlog().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        // A last, so A's own commit wakes its feed after B's raises.
        let hub = if i % 2 == 0 { &b } else { &a };
        let (status, inc) = hub.raise("th-duty", &incident("green")).await;
        assert_eq!(status, 201, "{inc}");
        ids.push(inc["id"].as_str().expect("id").to_string());
    }
    let mut got: Vec<Value> = Vec::new();
    while got.len() < ids.len() {
        let e = client.next_event().await;
        if e["type"] == "incident.raised" {
            got.push(e);
        }
    }
    let got_ids: Vec<&str> = got.iter().filter_map(|e| e["incident"].as_str()).collect();
    assert_eq!(got_ids, ids.iter().map(String::as_str).collect::<Vec<_>>(), "every raise, once, in order");
    let seqs: Vec<i64> = got.iter().map(|e| a.seq(e)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "log order: {seqs:?}");
}
