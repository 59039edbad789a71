//! Streams end with their credentials: a revoked or expired token, a session signed out
//! or expired closes every stream opened with it, with close code 4001 and a reason, on
//! every replica. On SQLite and PostgreSQL; the two-replica test shares one PostgreSQL.

use chrono::{TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use focalpoint::auth::secret;

/// The close frame's code and reason, waiting past any events; None if the socket just
/// dropped or nothing came within [`WAIT`].
async fn close_of(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Close(Some(frame))) => return Some((frame.code.into(), frame.reason.to_string())),
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

fn assert_credential_close(close: Option<(u16, String)>) {
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, focalpoint::auth::ended::CLOSE_CREDENTIAL, "{reason}");
    assert!(reason.contains("revoked, expired or signed out"), "{reason}");
}

async fn a_revoked_token_closes_its_streams(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let mut mine = Stream::connect(&app.base, &app.token("my-drugs").await, None).await;
    mine.backlog().await;
    let mut other = Stream::connect(&app.base, &app.token("sg-drugs").await, None).await;
    other.backlog().await;
    app.store.revoke_tokens("my-drugs").await.expect("revoked");
    assert_credential_close(close_of(&mut mine.ws).await);
    // Others' streams go on: the next incident reaches them.
    let (status, inc) = app.raise("th-duty", &incident("green")).await;
    assert_eq!(status, 201);
    other.expect("incident.raised", inc["id"].as_str().expect("id")).await;
    assert_eq!(connect_raw(&app.base, Some(&app.token("my-drugs").await), None, None).await.err(), Some(401));
}

async fn an_expiring_token_closes_its_stream(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let token = secret::generate();
    let expires = Utc::now() + TimeDelta::milliseconds(1500);
    app.store.insert_token(&secret::hash(&token), "my-drugs", "short", Some(expires)).await.expect("token");
    let mut stream = Stream::connect(&app.base, &token, None).await;
    stream.backlog().await;
    assert_credential_close(close_of(&mut stream.ws).await);
    assert!(Utc::now() >= expires, "closed when it expired, not before");
}

async fn signing_out_or_a_session_expiring_closes_the_stream(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let origin = format!("http://{}", app.addr);
    // Signed out through the API.
    let session = secret::generate();
    app.store.insert_session(&secret::hash(&session), "my-drugs", Utc::now() + TimeDelta::hours(1)).await.expect("s");
    let cookie = format!("focalpoint_session={session}");
    let mut ws = connect_raw(&app.base, None, None, Some((&cookie, &origin))).await.expect("opens");
    let out =
        app.http.delete(format!("{}/api/v1/session", app.base)).header("cookie", &cookie).send().await.expect("sent");
    assert_eq!(out.status(), 200);
    assert_credential_close(close_of(&mut ws).await);

    // Expiring by itself.
    let session = secret::generate();
    let expires = Utc::now() + TimeDelta::milliseconds(1500);
    app.store.insert_session(&secret::hash(&session), "my-drugs", expires).await.expect("session");
    let cookie = format!("focalpoint_session={session}");
    let mut ws = connect_raw(&app.base, None, None, Some((&cookie, &origin))).await.expect("opens");
    assert_credential_close(close_of(&mut ws).await);
    assert!(Utc::now() >= expires);
}

on_both_backends!(
    a_revoked_token_closes_its_streams,
    an_expiring_token_closes_its_stream,
    signing_out_or_a_session_expiring_closes_the_stream,
);

/// Two replicas on one PostgreSQL database: revoking on the store (as `focalpoint token
/// revoke` does, from another process) closes the token's streams on both.
#[tokio::test]
async fn revoking_closes_streams_on_every_replica() {
    let a = TestApp::builder().backend(Backend::Postgres).spawn().await;
    let b = TestApp::builder().database(&a.database).spawn().await;
    let token = a.token("my-drugs").await;
    let mut on_a = Stream::connect(&a.base, &token, None).await;
    on_a.backlog().await;
    let mut on_b = Stream::connect(&b.base, &token, None).await;
    on_b.backlog().await;
    a.store.revoke_tokens("my-drugs").await.expect("revoked");
    assert_credential_close(close_of(&mut on_a.ws).await);
    assert_credential_close(close_of(&mut on_b.ws).await);
}
