//! Instance secrets: `instance_secret(name, proposed)` stores `proposed` on first use and
//! returns the stored value ever after, on every store of the database (every node of a
//! cluster gets the same), also when nodes propose at once.

use std::collections::BTreeSet;

use super::*;

on_both_backends!(
    multi_thread;
    the_first_proposal_wins,
    a_second_store_on_the_database_gets_the_same_value,
    concurrent_proposals_agree,
);

async fn the_first_proposal_wins(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    assert_eq!(s.instance_secret("webhook.signing_key", "first").await.expect("secret"), "first");
    assert_eq!(s.instance_secret("webhook.signing_key", "second").await.expect("secret"), "first");
    assert_eq!(s.instance_secret("webhook.signing_key", "first").await.expect("secret"), "first");
    // Names are independent.
    assert_eq!(s.instance_secret("other", "x").await.expect("secret"), "x");
    assert_eq!(s.instance_secret("webhook.signing_key", "third").await.expect("secret"), "first");
}

async fn a_second_store_on_the_database_gets_the_same_value(backend: Backend) {
    let f = fixture(backend).await;
    assert_eq!(f.store.instance_secret("k", "from-a").await.expect("secret"), "from-a");
    let other = f.another_store().await;
    assert_eq!(other.instance_secret("k", "from-b").await.expect("secret"), "from-a");
    // The other way round for a name the second store sees first.
    assert_eq!(other.instance_secret("k2", "from-b").await.expect("secret"), "from-b");
    assert_eq!(f.store.instance_secret("k2", "from-a").await.expect("secret"), "from-b");
    // Durable: a restart (a fresh store after the others are gone) gets the same.
    drop(other);
    let Fixture { store, db, .. } = f;
    drop(store);
    let restarted = db.open().await;
    assert_eq!(restarted.instance_secret("k", "after-restart").await.expect("secret"), "from-a");
    assert_eq!(restarted.instance_secret("k2", "after-restart").await.expect("secret"), "from-b");
}

async fn concurrent_proposals_agree(backend: Backend) {
    let f = fixture(backend).await;
    // Nodes starting together, each proposing its own value.
    let stores = [f.store.clone(), f.another_store().await, f.another_store().await];
    let got = concurrently(&stores, 24, |i, store| async move {
        store.instance_secret("webhook.signing_key", &format!("proposal-{i}")).await.expect("secret")
    })
    .await;
    let values: BTreeSet<&String> = got.iter().collect();
    assert_eq!(values.len(), 1, "every node got the same secret: {values:?}");
    let winner = got[0].clone();
    assert!((0..24).any(|i| winner == format!("proposal-{i}")), "the stored value is one of the proposals");
    assert_eq!(f.store.instance_secret("webhook.signing_key", "late").await.expect("secret"), winner);
}
