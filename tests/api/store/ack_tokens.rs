//! Email ack links: stored by the SHA-256 of the token only; `ack_token` finds a link used
//! or not; `consume_ack_token` is true for exactly one caller that found it unused while
//! its incident was active (open or acknowledged): once, and never after a close.

use chrono::Utc;
use focalpoint::domain::incident::State;
use focalpoint::store::*;
use uuid::Uuid;

use super::*;

on_both_backends!(
    multi_thread;
    an_ack_token_is_stored_and_found,
    an_ack_token_is_consumed_once,
    concurrent_consumers_consume_once,
    an_ack_token_is_void_after_resolve,
    an_ack_token_is_void_after_cancel,
    an_ack_token_works_while_the_incident_is_acknowledged,
);

/// A SHA-256-sized hash derived from a label.
fn hash(label: &str) -> Vec<u8> {
    let mut h = label.as_bytes().to_vec();
    h.resize(32, 0);
    h
}

/// Raises an amber MY incident and stores an ack link for my-l1's SMS page of it.
async fn with_token(f: &Fixture, label: &str) -> (Uuid, AckToken) {
    let inc = f.raise(body("amber", &["MY"])).await;
    let page = f.outbox(inc.id).await.into_iter().find(|p| p.channel == "sms").expect("my-l1's SMS page");
    let token = AckToken { incident: inc.id, focal_point: "my-l1".into(), party: "MY".into(), used: false };
    f.store.insert_ack_token(&hash(label), &token, page.id, Utc::now()).await.expect("insert");
    (inc.id, token)
}

async fn an_ack_token_is_stored_and_found(backend: Backend) {
    let f = fixture(backend).await;
    let (_, token) = with_token(&f, "link-1").await;
    assert_eq!(f.store.ack_token(&hash("link-1")).await.expect("lookup"), Some(token.clone()));
    assert_eq!(f.store.ack_token(&hash("link-unknown")).await.expect("lookup"), None);
    // Durable on return: another store (a restart, another replica) finds it.
    assert_eq!(f.another_store().await.ack_token(&hash("link-1")).await.expect("lookup"), Some(token));
}

async fn an_ack_token_is_consumed_once(backend: Backend) {
    let f = fixture(backend).await;
    let (_, token) = with_token(&f, "link-1").await;
    let (_, other) = with_token(&f, "link-2").await;
    assert!(f.store.consume_ack_token(&hash("link-1"), Utc::now()).await.expect("consume"));
    assert!(!f.store.consume_ack_token(&hash("link-1"), Utc::now()).await.expect("consume"), "a link works once");
    assert!(!f.another_store().await.consume_ack_token(&hash("link-1"), Utc::now()).await.expect("consume"));
    let used = f.store.ack_token(&hash("link-1")).await.expect("lookup").expect("still found");
    assert_eq!(used, AckToken { used: true, ..token }, "found, marked used");
    assert_eq!(f.store.ack_token(&hash("link-2")).await.expect("lookup"), Some(other), "others untouched");
    assert!(!f.store.consume_ack_token(&hash("link-unknown"), Utc::now()).await.expect("consume"));
    assert!(f.store.consume_ack_token(&hash("link-2"), Utc::now()).await.expect("consume"));
}

async fn concurrent_consumers_consume_once(backend: Backend) {
    let f = fixture(backend).await;
    with_token(&f, "link-race").await;
    // A mail scanner and the recipient (and a double click) post the link at once.
    let stores = [f.store.clone(), f.another_store().await];
    let wins = concurrently(&stores, 20, |_, store| async move {
        store.consume_ack_token(&hash("link-race"), Utc::now()).await.expect("consume")
    })
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "exactly one consumer wins: {wins:?}");
    assert!(f.store.ack_token(&hash("link-race")).await.expect("lookup").expect("found").used);
}

async fn void_after(backend: Backend, state: State) {
    let f = fixture(backend).await;
    let (id, token) = with_token(&f, "link-1").await;
    f.store.close(f.closing(id, state)).await.expect("close");
    assert!(
        !f.store.consume_ack_token(&hash("link-1"), Utc::now()).await.expect("consume"),
        "a link never works after the incident is {state:?}"
    );
    // Still found (the page says why it no longer works), and not marked used.
    assert_eq!(f.store.ack_token(&hash("link-1")).await.expect("lookup"), Some(token));
}

async fn an_ack_token_is_void_after_resolve(backend: Backend) {
    void_after(backend, State::Resolved).await;
}

async fn an_ack_token_is_void_after_cancel(backend: Backend) {
    void_after(backend, State::Cancelled).await;
}

async fn an_ack_token_works_while_the_incident_is_acknowledged(backend: Backend) {
    let f = fixture(backend).await;
    let (id, _) = with_token(&f, "link-1").await;
    f.store.acknowledge(f.ack(id, "MY", "my-l2")).await.expect("ack");
    let (incident, _) = f.store.incident(id).await.expect("read").expect("exists");
    assert_eq!(incident.state, State::Acknowledged);
    assert!(f.store.consume_ack_token(&hash("link-1"), Utc::now()).await.expect("consume"), "still active");
}
