//! Acknowledging from outside the dashboard: signed Twilio webhooks (inbound SMS replies
//! and delivery callbacks) and the email ack link, on SQLite and on PostgreSQL.

use focalpoint::channels::twilio;
use serde_json::Value;

use crate::dispatch::{MY_L1_PHONE, MY_L2_PHONE, PUBLIC_URL, Paging, paging};
use crate::helpers::*;
use crate::twilio_fake::{AUTH_TOKEN, encode};

on_both_backends!(
    forged_or_replayed_sms_changes_nothing,
    an_sms_reply_from_a_paged_number_acknowledges_for_its_party,
    delivery_callbacks_never_move_a_page_backwards,
    the_email_link_get_does_not_ack_and_its_post_acks_once,
);

enum Sign {
    Valid,
    /// Signed with another token.
    Forged,
    /// Signed over the URL the request really went to (a Host-header trick).
    OverHost,
    Missing,
}

/// Posts a Twilio-style form to `path`; returns (status, body).
async fn post_form(p: &Paging, path: &str, params: &[(&str, &str)], sign: Sign) -> (u16, String) {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = match sign {
        Sign::Valid => Some(twilio::signature(AUTH_TOKEN, &format!("{PUBLIC_URL}{path}"), &params)),
        Sign::Forged => Some(twilio::signature("not-the-token", &format!("{PUBLIC_URL}{path}"), &params)),
        Sign::OverHost => Some(twilio::signature(AUTH_TOKEN, &format!("{}{path}", p.app.base), &params)),
        Sign::Missing => None,
    };
    let body = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
    let mut request = p
        .app
        .http
        .post(format!("{}{path}", p.app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(s) = signature {
        request = request.header("X-Twilio-Signature", s);
    }
    let r = request.send().await.expect("sent");
    (r.status().as_u16(), r.text().await.expect("text"))
}

async fn sms(p: &Paging, sid: &str, from: &str, text: &str, sign: Sign) -> (u16, String) {
    post_form(
        p,
        "/hooks/twilio/sms",
        &[("MessageSid", sid), ("From", from), ("To", "+15005550006"), ("Body", text)],
        sign,
    )
    .await
}

async fn my_state(p: &Paging, id: &str) -> Value {
    let inc = p.incident(id).await;
    inc["party_states"].as_array().expect("states").iter().find(|s| s["party"] == "MY").cloned().expect("MY")
}

async fn forged_or_replayed_sms_changes_nothing(backend: Backend) {
    let p = paging(backend).await;
    let (id, reference) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "sent", 0).await;
    let ack = format!("ACK {reference}");
    for sign in [Sign::Forged, Sign::OverHost, Sign::Missing] {
        let (status, body) = sms(&p, "SMforged1", MY_L1_PHONE, &ack, sign).await;
        assert_eq!(status, 403, "{body}");
        let json: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(json["error"]["code"], "forbidden");
    }
    assert_eq!(my_state(&p, &id).await["acknowledged"], false);

    // A signed non-ack, then its MessageSid replayed (signed) with an ack body: ignored.
    let (status, body) = sms(&p, "SMreplay1", MY_L1_PHONE, "hello?", Sign::Valid).await;
    assert_eq!(status, 200);
    assert!(body.contains("reply ACK"), "{body}");
    let (status, body) = sms(&p, "SMreplay1", MY_L1_PHONE, &ack, Sign::Valid).await;
    assert_eq!((status, body.as_str()), (200, twilio::empty_twiml().as_str()));
    assert_eq!(my_state(&p, &id).await["acknowledged"], false);
    // Malformed input is refused before anything happens.
    let (status, _) = sms(&p, "SM bad!", MY_L1_PHONE, &ack, Sign::Valid).await;
    assert_eq!(status, 400);
}

async fn an_sms_reply_from_a_paged_number_acknowledges_for_its_party(backend: Backend) {
    let p = paging(backend).await;
    let (id, reference) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "sent", 0).await;

    let (_, body) = sms(&p, "SMa1", MY_L2_PHONE, &format!("ACK {reference}"), Sign::Valid).await;
    assert!(body.contains(&format!("No open incident {reference} was paged to you")), "{body}");
    let (_, body) = sms(&p, "SMa2", "+6590000000", &format!("ACK {reference}"), Sign::Valid).await;
    assert!(body.contains("not registered"), "{body}");
    assert_eq!(my_state(&p, &id).await["acknowledged"], false, "un-paged numbers do not ack");

    let (status, body) = sms(&p, "SMa3", MY_L1_PHONE, &format!("{} a", reference.to_lowercase()), Sign::Valid).await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("Acknowledged {reference} for MY")), "{body}");
    let state = my_state(&p, &id).await;
    assert_eq!((state["acknowledged_by"].as_str(), state["via"].as_str()), (Some("my-l1"), Some("sms")), "{state}");
    let (_, body) = sms(&p, "SMa4", MY_L1_PHONE, &format!("ACK {reference}"), Sign::Valid).await;
    assert!(body.contains("already acknowledged"), "{body}");
}

async fn delivery_callbacks_never_move_a_page_backwards(backend: Backend) {
    let p = paging(backend).await;
    let (id, _) = p.raise("amber").await;
    p.wait_page(&id, "my-l1", "sms", "sent", 0).await;
    let sid = p.page(&id, "my-l1", "sms").await.provider_id.expect("provider id");
    let status = |s: &'static str, sign| {
        let sid = sid.clone();
        let p = &p;
        async move { post_form(p, "/hooks/twilio/status", &[("MessageSid", &sid), ("MessageStatus", s)], sign).await.0 }
    };
    assert_eq!(status("delivered", Sign::Forged).await, 403);
    assert_eq!(p.page(&id, "my-l1", "sms").await.state, "sent");
    assert_eq!(status("delivered", Sign::Valid).await, 200);
    assert_eq!(status("sent", Sign::Valid).await, 200, "late, out of order");
    assert_eq!(status("delivered", Sign::Valid).await, 200, "repeated");
    assert_eq!(status("failed", Sign::Valid).await, 200, "after a final state");
    assert_eq!(p.page(&id, "my-l1", "sms").await.state, "delivered");
    let inc = p.incident(&id).await;
    let delivered =
        inc["timeline"].as_array().expect("timeline").iter().filter(|e| e["type"] == "notification.delivered");
    assert_eq!(delivered.count(), 1, "{inc}");
}

async fn the_email_link_get_does_not_ack_and_its_post_acks_once(backend: Backend) {
    let p = paging(backend).await;
    let (id, reference) = p.raise("amber").await;
    let mail = p.smtp.wait_for(1, WAIT).await;
    let text = crate::channels::decoded(&mail[0].data);
    let start = text.find(&format!("{PUBLIC_URL}/ack/")).expect("an ack link") + PUBLIC_URL.len() + 5;
    let token: String = text[start..].chars().take(35).collect();
    let link = format!("{}/ack/{token}", p.app.base);

    let r = p.app.http.get(&link).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let csp = r.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.headers().get("referrer-policy").and_then(|v| v.to_str().ok()), Some("no-referrer"));
    let html = r.text().await.expect("html");
    assert!(html.contains(&reference) && html.contains("method=\"post\""), "{html}");
    assert!(!html.contains("Zebra") && !html.contains("<script"), "{html}");
    assert_eq!(p.app.http.get(&link).send().await.expect("get").status(), 200, "a scanner may follow it again");
    assert_eq!(my_state(&p, &id).await["acknowledged"], false, "GET changes nothing");

    let r = p.app.http.post(&link).send().await.expect("post");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("html").contains("Acknowledged"));
    let state = my_state(&p, &id).await;
    assert_eq!((state["acknowledged_by"].as_str(), state["via"].as_str()), (Some("my-l1"), Some("email")), "{state}");

    let r = p.app.http.post(&link).send().await.expect("post again");
    assert_eq!(r.status(), 409);
    assert!(r.text().await.expect("html").contains("already used"));
    let bogus = format!("{}/ack/fp_{}", p.app.base, "0".repeat(32));
    assert_eq!(p.app.http.post(&bogus).send().await.expect("post").status(), 404);
    assert_eq!(p.app.http.get(format!("{}/ack/nonsense", p.app.base)).send().await.expect("get").status(), 404);
}
