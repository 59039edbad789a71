//! `spawn_app()`: a hub on 127.0.0.1:0 with a fresh SQLite file, plus clients for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use focalpoint::auth::secret;
use focalpoint::commands::Hub;
use focalpoint::config::Settings;
use focalpoint::startup::Application;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any test waits for an expected event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn network_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/network.toml")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub hub: Hub,
    pub dir: tempfile::TempDir,
    tokens: Mutex<HashMap<String, String>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

pub fn test_settings(db: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.store.url = format!("sqlite://{}", db.display());
    settings.network.file = network_file();
    settings
}

pub async fn spawn_app() -> Arc<TestApp> {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> Arc<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(&dir.path().join("hub.db"));
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("hub builds");
    TestApp::serve(app, dir)
}

/// Waits for a condition on the store (an escalation fired, a page was sent), failing
/// the test after `WAIT`. The condition is re-checked every few milliseconds.
pub async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Serves a built hub in the background.
    pub fn serve(app: Application, dir: tempfile::TempDir) -> Arc<TestApp> {
        let addr = app.local_addr();
        let hub = app.hub();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stop_rx.await;
        }));
        Arc::new(TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().timeout(WAIT).build().expect("client"),
            hub,
            dir,
            tokens: Mutex::new(HashMap::new()),
            stop: Mutex::new(Some(stop_tx)),
        })
    }

    /// A token for a focal point, issued on first use.
    pub async fn token(&self, id: &str) -> String {
        if let Some(t) = self.tokens.lock().expect("lock").get(id) {
            return t.clone();
        }
        let token = secret::generate();
        self.hub.store.insert_token(&secret::hash(&token), id, "test").await.expect("token stored");
        self.tokens.lock().expect("lock").insert(id.to_string(), token.clone());
        token
    }

    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().expect("lock").take() {
            let _ = tx.send(());
        }
    }

    pub async fn post(&self, who: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token(who).await)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, who: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(who).await)
            .send()
            .await
            .expect("request sent")
    }

    /// Raises and returns (status, body).
    pub async fn raise(&self, who: &str, body: &Value) -> (u16, Value) {
        let r = self.post(who, "/api/v1/incidents", body).await;
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    pub async fn ack(&self, who: &str, id: &str) -> reqwest::Response {
        self.post(who, &format!("/api/v1/incidents/{id}/ack"), &json!({})).await
    }

    /// Events other than the dispatcher's `notification.*` (which follow pages in the
    /// background): what a request may or may not have changed.
    pub async fn changes(&self) -> usize {
        let events = self.hub.store.events_after(0, 1_000_000).await.expect("events");
        events.iter().filter(|f| !f.event.kind.as_str().starts_with("notification.")).count()
    }

    pub async fn head(&self) -> i64 {
        self.hub.store.head_seq().await.expect("head")
    }

    pub async fn stream(&self, who: &str, after: Option<i64>) -> Stream {
        let token = self.token(who).await;
        Stream::connect(&self.base, &token, after).await
    }
}

/// A typical raise body: an amber drug-trafficking incident from Thailand to MY and SG.
pub fn incident(tlp: &str) -> Value {
    json!({
        "title": "Methamphetamine consignment bound for Port Klang",
        "description": "Container MSKU 123 left Laem Chabang; suspected 400 kg.",
        "field": "drug-trafficking",
        "severity": "severe",
        "parties": ["MY", "SG"],
        "tlp": tlp,
    })
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client of `/api/v1/stream`.
pub struct Stream {
    pub ws: Socket,
    /// The seq announced by `stream.live`, once seen.
    pub live_seq: Option<i64>,
}

impl Stream {
    pub async fn connect(base: &str, token: &str, after: Option<i64>) -> Stream {
        let ws = connect_raw(base, Some(token), after, None).await.expect("stream connects");
        Stream { ws, live_seq: None }
    }

    /// Next JSON message (events and control messages), or None on close/timeout.
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("stream sends JSON");
                    if v["type"] == "stream.live" {
                        self.live_seq = v["seq"].as_i64();
                    }
                    return Some(v);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next control message (not an event): an ack result or an error.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let v = self.next_json(WAIT).await.expect("a reply arrives");
            if v.get("seq").is_none() || v["type"] == "stream.live" {
                return v;
            }
        }
    }

    /// Waits for `stream.live`, collecting the backlog events before it.
    pub async fn backlog(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let v = self.next_json(WAIT).await.expect("stream.live arrives");
            if v["type"] == "stream.live" {
                return events;
            }
            events.push(v);
        }
    }

    /// The next event (skipping control messages and the dispatcher's `notification.*`,
    /// which arrive in the background whenever an SMS or email page is sent), failing the
    /// test after `WAIT`.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let v = self.next_json(WAIT).await.expect("an event arrives");
            let notification = v["type"].as_str().is_some_and(|t| t.starts_with("notification."));
            if v.get("seq").is_some() && v["type"] != "stream.live" && !notification {
                return v;
            }
        }
    }

    /// Waits for an event of `kind` about `incident`, returning it.
    pub async fn expect(&mut self, kind: &str, incident: &str) -> Value {
        loop {
            let e = self.next_event().await;
            if std::env::var("DEBUG_STREAM").is_ok() {
                eprintln!("stream: {} {} {} {}", e["seq"], e["type"], e["incident"], e["data"]["step"]);
            }
            if e["type"] == kind && e["incident"] == incident {
                return e;
            }
        }
    }

    /// Asserts that no event about `incident` arrives before a marker event, proving a
    /// negative without sleeping: the caller raises a visible `marker` incident after the
    /// invisible one, and events arrive in seq order.
    pub async fn assert_absent_before(&mut self, incident: &str, marker: &str) {
        loop {
            let e = self.next_event().await;
            assert_ne!(e["incident"], incident, "an invisible incident reached the stream: {e}");
            if e["incident"] == marker {
                return;
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.expect("send");
    }
}

/// Opens the stream with optional bearer token and cookie/Origin, returning the socket or
/// the HTTP status of the refusal.
pub async fn connect_raw(
    base: &str,
    token: Option<&str>,
    after: Option<i64>,
    cookie_origin: Option<(&str, &str)>,
) -> Result<Socket, u16> {
    let ws_base = base.replacen("http", "ws", 1);
    let url = match after {
        Some(a) => format!("{ws_base}/api/v1/stream?after={a}"),
        None => format!("{ws_base}/api/v1/stream"),
    };
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    if let Some((cookie, origin)) = cookie_origin {
        request.headers_mut().insert("cookie", cookie.parse().expect("header"));
        request.headers_mut().insert("origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("stream connection failed: {e}"),
    }
}

impl Drop for TestApp {
    /// Stops the hub (its background tasks end with the test's runtime anyway; this closes
    /// the listener and the streams promptly).
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client for tests that talk to hub processes (installs the TLS provider first:
/// reqwest panics without one).
pub fn http() -> reqwest::Client {
    focalpoint::startup::install_crypto();
    reqwest::Client::builder().timeout(WAIT).build().expect("client")
}

/// `spawn_app()` on a fresh PostgreSQL database (`FOCALPOINT_TEST_POSTGRES`, see
/// `servers.rs`) with the in-process bus polling it, so the HTTP tests can run against
/// PostgreSQL. The database outlives the returned hub (the hub holds connections to it
/// until the test's runtime ends); the sweep in `servers::fresh_database` drops it later.
pub async fn spawn_app_pg() -> Arc<TestApp> {
    spawn_app_pg_with(|_| {}).await
}

pub async fn spawn_app_pg_with(adjust: impl FnOnce(&mut Settings)) -> Arc<TestApp> {
    let db = crate::servers::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(&dir.path().join("unused.db"));
    settings.store.url = db.url.clone();
    std::mem::forget(db);
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("hub builds on PostgreSQL");
    TestApp::serve(app, dir)
}
