//! Authentication: tokens, password sign-in and sessions, rate limiting, the stream's
//! Origin check.

use serde_json::{Value, json};

use crate::helpers::*;

async fn set_password(app: &TestApp, id: &str, password: &str) {
    let phc = focalpoint::auth::password::hash(password).expect("hash");
    app.store.set_password(id, &phc).await.expect("stored");
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401() {
    let app = spawn_app().await;
    let r = app.http.get(format!("{}/api/v1/incidents", app.base)).send().await.expect("sent");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "unauthorized");
    for bad in ["fp_00000000000000000000000000000000", "nonsense", ""] {
        let r = app.http.get(format!("{}/api/v1/incidents", app.base)).bearer_auth(bad).send().await.expect("sent");
        assert_eq!(r.status(), 401, "token {bad:?}");
    }
    assert_eq!(connect_raw(&app.base, None, None, None).await.err(), Some(401));
    assert_eq!(connect_raw(&app.base, Some("fp_00000000000000000000000000000000"), None, None).await.err(), Some(401));
}

#[tokio::test]
async fn tokens_are_stored_hashed() {
    let app = spawn_app().await;
    let token = app.token("th-duty").await;
    let file = app.database.sqlite_file().expect("a SQLite hub");
    let db = std::fs::read(&file).expect("the database file exists");
    let wal = std::fs::read(file.with_extension("db-wal")).unwrap_or_default();
    assert!(!db.is_empty() || !wal.is_empty(), "the token went somewhere");
    let needle = token.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&db) && !contains(&wal), "the token itself is never stored");
}

#[tokio::test]
async fn password_sign_in_gives_a_strict_http_only_session() {
    let app = spawn_app().await;
    set_password(&app, "my-drugs", "correct horse battery").await;
    let r = app
        .http
        .post(format!("{}/api/v1/session", app.base))
        .json(&json!({"id": "my-drugs", "password": "correct horse battery"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().expect("ascii").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().expect("pair").to_string();

    let me: Value = app
        .http
        .get(format!("{}/api/v1/session", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(me["me"]["party"], "MY");

    // The stream accepts the cookie from the hub's own origin only.
    let own = format!("http://{}", app.addr);
    assert!(connect_raw(&app.base, None, None, Some((&session, &own))).await.is_ok());
    assert_eq!(connect_raw(&app.base, None, None, Some((&session, "https://evil.example"))).await.err(), Some(403));

    let out =
        app.http.delete(format!("{}/api/v1/session", app.base)).header("cookie", &session).send().await.expect("sent");
    assert_eq!(out.status(), 200);
    let after =
        app.http.get(format!("{}/api/v1/session", app.base)).header("cookie", &session).send().await.expect("sent");
    assert_eq!(after.status(), 401, "signed out sessions are gone");
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer_and_are_rate_limited() {
    let app = spawn_app().await;
    set_password(&app, "sg-drugs", "a very long password").await;
    let attempt = |id: &'static str, pw: &'static str| {
        let app = app.clone();
        async move {
            let r = app
                .http
                .post(format!("{}/api/v1/session", app.base))
                .json(&json!({"id": id, "password": pw}))
                .send()
                .await
                .expect("sent");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let wrong = attempt("sg-drugs", "wrong password!!").await;
    let unknown = attempt("nobody", "wrong password!!").await;
    assert_eq!(wrong, unknown, "no difference between unknown account and wrong password");
    assert_eq!(wrong.0, 401);
    for _ in 0..4 {
        attempt("sg-drugs", "wrong password!!").await;
    }
    // Limited now, even with the right password.
    assert_eq!(attempt("sg-drugs", "a very long password").await.0, 429);
}
