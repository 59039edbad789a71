//! Inbound message ids: `first_inbound_message(sid)` is true the first time only (a replay
//! is ignored, whatever its body), durable on return, across every store of the database
//! and under concurrent deliveries.

use chrono::Utc;

use super::*;

on_both_backends!(
    multi_thread;
    a_message_id_is_new_once,
    concurrent_deliveries_of_one_id_are_new_once,
    two_stores_on_one_database_agree,
);

async fn a_message_id_is_new_once(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    let now = Utc::now();
    assert!(s.first_inbound_message("SM0001", now).await.expect("inbound"));
    assert!(!s.first_inbound_message("SM0001", now).await.expect("inbound"), "a replay");
    assert!(!s.first_inbound_message("SM0001", now + chrono::TimeDelta::days(1)).await.expect("inbound"), "later too");
    assert!(s.first_inbound_message("SM0002", now).await.expect("inbound"), "another id");
    // Durable: after a restart the id is still known.
    let Fixture { store, db, .. } = f;
    drop(store);
    let restarted = db.open().await;
    assert!(!restarted.first_inbound_message("SM0001", now).await.expect("inbound"));
    assert!(!restarted.first_inbound_message("SM0002", now).await.expect("inbound"));
    assert!(restarted.first_inbound_message("SM0003", now).await.expect("inbound"));
}

async fn concurrent_deliveries_of_one_id_are_new_once(backend: Backend) {
    let f = fixture(backend).await;
    let stores = [f.store.clone(), f.another_store().await];
    let firsts = concurrently(&stores, 20, |_, store| async move {
        store.first_inbound_message("SMrace", Utc::now()).await.expect("inbound")
    })
    .await;
    assert_eq!(firsts.iter().filter(|b| **b).count(), 1, "exactly one delivery is new: {firsts:?}");
}

async fn two_stores_on_one_database_agree(backend: Backend) {
    let f = fixture(backend).await;
    let other = f.another_store().await;
    let now = Utc::now();
    assert!(f.store.first_inbound_message("SMa", now).await.expect("inbound"));
    assert!(!other.first_inbound_message("SMa", now).await.expect("inbound"), "seen by the first store");
    assert!(other.first_inbound_message("SMb", now).await.expect("inbound"));
    assert!(!f.store.first_inbound_message("SMb", now).await.expect("inbound"), "seen by the second store");
}
