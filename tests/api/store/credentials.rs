//! Credentials and sessions: hashes only; tokens until revoked, passwords replaced (ending
//! the sessions signed in with the old one), sessions until they expire or are deleted.

use chrono::{TimeDelta, Utc};

use super::*;

on_both_backends!(
    multi_thread;
    tokens_until_revoked,
    tokens_expire_and_are_listed_without_secrets,
    passwords_replace_and_end_old_sessions,
    sessions_expire_and_can_be_deleted,
    credential_count_counts_tokens_and_passwords,
    credentials_are_shared_by_every_store_on_the_database,
);

async fn tokens_until_revoked(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    s.insert_token(b"hash-1", "th-duty", "cli", None).await.expect("token");
    s.insert_token(b"hash-2", "th-duty", "bot", None).await.expect("token");
    s.insert_token(b"hash-3", "my-l1", "cli", None).await.expect("token");
    assert_eq!(s.token_owner(b"hash-1", Utc::now()).await.expect("owner").as_deref(), Some("th-duty"));
    assert_eq!(s.token_owner(b"hash-3", Utc::now()).await.expect("owner").as_deref(), Some("my-l1"));
    assert_eq!(s.token_owner(b"nope", Utc::now()).await.expect("owner"), None);
    assert_eq!(s.revoke_tokens("th-duty").await.expect("revoke"), 2, "the number revoked");
    assert_eq!(s.token_owner(b"hash-1", Utc::now()).await.expect("owner"), None);
    assert_eq!(s.token_owner(b"hash-2", Utc::now()).await.expect("owner"), None);
    assert_eq!(
        s.token_owner(b"hash-3", Utc::now()).await.expect("owner").as_deref(),
        Some("my-l1"),
        "others keep theirs"
    );
    assert_eq!(s.revoke_tokens("th-duty").await.expect("revoke"), 0);
    // A new token after a revocation works.
    s.insert_token(b"hash-4", "th-duty", "cli", None).await.expect("token");
    assert_eq!(s.token_owner(b"hash-4", Utc::now()).await.expect("owner").as_deref(), Some("th-duty"));
}

async fn tokens_expire_and_are_listed_without_secrets(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    let now = Utc::now();
    s.insert_token(b"hash-forever", "th-duty", "cli", None).await.expect("token");
    s.insert_token(b"hash-90d", "th-duty", "bot", Some(now + TimeDelta::days(90))).await.expect("token");
    s.insert_token(b"hash-old", "th-duty", "old", Some(now - TimeDelta::seconds(1))).await.expect("token");
    assert_eq!(s.token_owner(b"hash-90d", now).await.expect("owner").as_deref(), Some("th-duty"));
    assert_eq!(s.token_owner(b"hash-old", now).await.expect("owner"), None, "expired: refused like revoked");
    assert_eq!(
        s.token_owner(b"hash-90d", now + TimeDelta::days(91)).await.expect("owner"),
        None,
        "refused once its time is up"
    );
    s.touch_token(b"hash-90d", now).await.expect("touch");

    let listed = s.tokens_of("th-duty").await.expect("list");
    assert_eq!(listed.len(), 3);
    let by_label = |l: &str| listed.iter().find(|t| t.label == l).expect("listed");
    assert_eq!(by_label("bot").last_used_at.map(|t| t.timestamp_millis()), Some(now.timestamp_millis()));
    assert_eq!(by_label("cli").last_used_at, None);
    assert_eq!(by_label("cli").expires_at, None);
    assert!(by_label("old").expires_at.is_some_and(|e| e < now));
    assert_eq!(by_label("bot").fingerprint, hex::encode(&b"hash-90d"[..4]), "a prefix of the hash, never more");
    s.revoke_tokens("th-duty").await.expect("revoke");
    assert!(s.tokens_of("th-duty").await.expect("list").iter().all(|t| t.revoked_at.is_some()));
    assert!(s.tokens_of("my-l1").await.expect("list").is_empty());
}

async fn passwords_replace_and_end_old_sessions(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    assert_eq!(s.password_hash("my-l1").await.expect("hash"), None);
    s.set_password("my-l1", "$argon2id$one").await.expect("password");
    assert_eq!(s.password_hash("my-l1").await.expect("hash").as_deref(), Some("$argon2id$one"));
    let now = Utc::now();
    s.insert_session(b"session-1", "my-l1", now + TimeDelta::hours(1)).await.expect("session");
    s.insert_session(b"session-other", "sg-l1", now + TimeDelta::hours(1)).await.expect("session");
    assert_eq!(s.session_owner(b"session-1", now).await.expect("owner").as_deref(), Some("my-l1"));
    // A new password ends the sessions signed in with the old one, and only those.
    s.set_password("my-l1", "$argon2id$two").await.expect("password");
    assert_eq!(s.password_hash("my-l1").await.expect("hash").as_deref(), Some("$argon2id$two"));
    assert_eq!(s.session_owner(b"session-1", now).await.expect("owner"), None);
    assert_eq!(s.session_owner(b"session-other", now).await.expect("owner").as_deref(), Some("sg-l1"));
    assert_eq!(s.password_hash("sg-l1").await.expect("hash"), None);
}

async fn sessions_expire_and_can_be_deleted(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    let now = Utc::now();
    s.insert_session(b"session-1", "my-l1", now + TimeDelta::hours(1)).await.expect("session");
    s.insert_session(b"session-2", "my-l1", now + TimeDelta::hours(1)).await.expect("session");
    assert_eq!(s.session_owner(b"session-1", now).await.expect("owner").as_deref(), Some("my-l1"));
    assert_eq!(
        s.session_owner(b"session-1", now + TimeDelta::minutes(59)).await.expect("owner").as_deref(),
        Some("my-l1"),
        "valid until it expires"
    );
    assert_eq!(s.session_owner(b"session-1", now + TimeDelta::hours(2)).await.expect("owner"), None, "expired");
    s.delete_session(b"session-2").await.expect("delete");
    assert_eq!(s.session_owner(b"session-2", now).await.expect("owner"), None, "deleted");
    s.delete_session(b"never-existed").await.expect("deleting an unknown session is fine");
    assert_eq!(s.session_owner(b"unknown", now).await.expect("owner"), None);
}

async fn credential_count_counts_tokens_and_passwords(backend: Backend) {
    let f = fixture(backend).await;
    let s = &f.store;
    assert_eq!(s.credential_count().await.expect("count"), 0, "zero on a first start");
    s.insert_token(b"hash-1", "th-duty", "cli", None).await.expect("token");
    s.insert_token(b"hash-2", "my-l1", "cli", None).await.expect("token");
    s.set_password("my-l1", "$argon2id$one").await.expect("password");
    assert_eq!(s.credential_count().await.expect("count"), 3);
    s.set_password("my-l1", "$argon2id$two").await.expect("password");
    assert_eq!(s.credential_count().await.expect("count"), 3, "a replaced password is one credential");
    s.insert_session(b"session", "my-l1", Utc::now() + TimeDelta::hours(1)).await.expect("session");
    assert_eq!(s.credential_count().await.expect("count"), 3, "sessions are not credentials");
    s.revoke_tokens("th-duty").await.expect("revoke");
    assert_eq!(s.credential_count().await.expect("count"), 2, "revoked tokens do not count");
}

async fn credentials_are_shared_by_every_store_on_the_database(backend: Backend) {
    let f = fixture(backend).await;
    let other = f.another_store().await;
    f.store.insert_token(b"hash-1", "th-duty", "cli", None).await.expect("token");
    f.store.set_password("my-l1", "$argon2id$one").await.expect("password");
    other.insert_session(b"session", "my-l1", Utc::now() + TimeDelta::hours(1)).await.expect("session");
    assert_eq!(other.token_owner(b"hash-1", Utc::now()).await.expect("owner").as_deref(), Some("th-duty"));
    assert_eq!(other.password_hash("my-l1").await.expect("hash").as_deref(), Some("$argon2id$one"));
    assert_eq!(f.store.session_owner(b"session", Utc::now()).await.expect("owner").as_deref(), Some("my-l1"));
    assert_eq!(other.revoke_tokens("th-duty").await.expect("revoke"), 1);
    assert_eq!(f.store.token_owner(b"hash-1", Utc::now()).await.expect("owner"), None, "revoked everywhere");
}
