//! `TestApp::builder()…spawn()`: a hub on 127.0.0.1:0 on a fresh database of either
//! backend ([`Backend`]), plus clients for it; `on_both_backends!` runs a test on both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use focalpoint::auth::secret;
use focalpoint::clock::{Clock, ManualClock};
use focalpoint::config::Settings;
use focalpoint::directory::Directory;
use focalpoint::domain::cursor::Cursors;
use focalpoint::startup::Application;
use focalpoint::store::Store;
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

/// The store a test runs on. Tests written with [`on_both_backends!`] run once per backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary folder.
    Sqlite,
    /// A fresh PostgreSQL database (`FOCALPOINT_TEST_POSTGRES`, see `servers.rs`); a
    /// missing server fails the test with a message saying so.
    Postgres,
}

/// A fresh, empty database for one test: its store URL and what keeps it alive. A
/// PostgreSQL database is dropped with the last handle to it.
#[derive(Clone)]
pub struct Database {
    pub backend: Backend,
    pub url: String,
    _keep: Arc<Keep>,
}

enum Keep {
    Sqlite(tempfile::TempDir),
    /// Dropped (`DROP DATABASE`) with the last handle.
    Postgres {
        _db: crate::servers::TestDatabase,
    },
}

impl Database {
    pub async fn fresh(backend: Backend) -> Database {
        let (url, keep) = match backend {
            Backend::Sqlite => {
                let tmp = tempfile::tempdir().expect("tempdir");
                (format!("sqlite://{}", tmp.path().join("hub.db").display()), Keep::Sqlite(tmp))
            }
            Backend::Postgres => {
                let db = crate::servers::fresh_database().await;
                (db.url.clone(), Keep::Postgres { _db: db })
            }
        };
        Database { backend, url, _keep: Arc::new(keep) }
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        match &*self._keep {
            Keep::Sqlite(tmp) => Some(tmp.path().join("hub.db")),
            Keep::Postgres { .. } => None,
        }
    }

    /// Another store handle on this database, as another hub process would open it.
    pub async fn open(&self) -> Arc<dyn Store> {
        focalpoint::store::open(&self.url, false).await.expect("store opens")
    }
}

/// Instantiates each `async fn name(backend: Backend)` as two tests, `name::sqlite` and
/// `name::postgres`. `multi_thread;` first for a multi-threaded runtime (concurrency tests).
macro_rules! on_both_backends {
    (multi_thread; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// The hub's store, for assertions on what was committed.
    pub store: Arc<dyn Store>,
    /// The database the hub runs on; pass it to [`TestAppBuilder::database`] to start
    /// another hub on the same store.
    pub database: Database,
    /// The hub's cursor key: tests read positions in order where a viewer cannot.
    pub cursors: Cursors,
    tokens: Mutex<HashMap<String, String>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Settings for a hub on `store_url`, listening on a free port, on `config/network.toml`.
pub fn test_settings(store_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.store.url = store_url.to_string();
    settings.network.file = network_file();
    settings.server.metrics_token = METRICS_TOKEN.into();
    settings
}

/// `server.metrics_token` of every test hub.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123";

impl TestApp {
    /// The hub's Prometheus text.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.base)).bearer_auth(METRICS_TOKEN).send().await.expect("sent");
        assert_eq!(r.status(), 200, "metrics with the metrics token");
        r.text().await.expect("text")
    }
}

/// A change to the settings, applied before the hub is built.
type Adjust = Box<dyn FnOnce(&mut Settings) + Send>;

/// The one way tests start a hub: `TestApp::builder().backend(..).network(..).clock(..)
/// .settings(..).spawn()`. Defaults: SQLite, `config/network.toml`, the system clock, the
/// log gateways.
pub struct TestAppBuilder {
    backend: Backend,
    database: Option<Database>,
    network: Option<String>,
    clock: Option<Arc<ManualClock>>,
    adjust: Vec<Adjust>,
}

impl TestAppBuilder {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs on an existing database (another hub's: [`TestApp::database`]) instead of a
    /// fresh one; the backend is the database's.
    pub fn database(mut self, database: &Database) -> Self {
        self.backend = database.backend;
        self.database = Some(database.clone());
        self
    }

    /// The network directory as TOML (instead of `config/network.toml`).
    pub fn network(mut self, toml: &str) -> Self {
        self.network = Some(toml.to_string());
        self
    }

    /// A manual clock the test advances (the engine and dispatcher follow it).
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adjusts the settings (gateways, limits) before the hub is built.
    pub fn settings(mut self, adjust: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.adjust.push(Box::new(adjust));
        self
    }

    pub async fn spawn(self) -> Arc<TestApp> {
        let database = match self.database {
            Some(db) => db,
            None => Database::fresh(self.backend).await,
        };
        let mut settings = test_settings(&database.url);
        for adjust in self.adjust {
            adjust(&mut settings);
        }
        let directory = match &self.network {
            Some(toml) => Directory::parse(toml).unwrap_or_else(|p| panic!("test network: {p:?}")),
            None => Directory::load(&settings.network.file).unwrap_or_else(|e| panic!("{}", e.report())),
        };
        let clock: Arc<dyn Clock> = match self.clock {
            Some(c) => c,
            None => Arc::new(focalpoint::clock::SystemClock),
        };
        let store = focalpoint::store::open(&database.url, settings.store.sqlite_synchronous == "full")
            .await
            .unwrap_or_else(|e| panic!("store opens on {:?}: {e:#}", database.backend));
        let app = Application::build_with(settings, Arc::new(directory), store, clock).await;
        let app = app.unwrap_or_else(|e| panic!("hub builds on {:?}: {e:#}", database.backend));
        TestApp::serve(app, database)
    }
}

pub async fn spawn_app() -> Arc<TestApp> {
    TestApp::builder().spawn().await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings) + Send + 'static) -> Arc<TestApp> {
    TestApp::builder().settings(adjust).spawn().await
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
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder { backend: Backend::Sqlite, database: None, network: None, clock: None, adjust: Vec::new() }
    }

    /// Serves a built hub in the background.
    pub fn serve(app: Application, database: Database) -> Arc<TestApp> {
        let addr = app.local_addr();
        let store = app.store();
        let cursors = app.hub().cursors().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stop_rx.await;
        }));
        Arc::new(TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().timeout(WAIT).build().expect("client"),
            store,
            database,
            cursors,
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
        self.store.insert_token(&secret::hash(&token), id, "test", None).await.expect("token stored");
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
        let events = self.store.events_after(0, 1_000_000).await.expect("events");
        events.iter().filter(|f| !f.event.kind.as_str().starts_with("notification.")).count()
    }

    pub async fn head(&self) -> i64 {
        self.store.head_seq().await.expect("head")
    }

    pub async fn stream(&self, who: &str, after: Option<&str>) -> Stream {
        let token = self.token(who).await;
        Stream::connect(&self.base, &token, after).await
    }

    /// The seq behind an event's (or `stream.live`'s, or a page's) cursor.
    pub fn seq(&self, message: &Value) -> i64 {
        let cursor = message["cursor"].as_str().unwrap_or_else(|| panic!("no cursor in {message}"));
        self.cursors.open(cursor).unwrap_or_else(|_| panic!("{cursor:?} is not a cursor of this hub"))
    }

    /// The cursor a viewer would hold at `seq`.
    pub fn cursor(&self, seq: i64) -> String {
        self.cursors.seal(seq)
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
    /// The cursor announced by `stream.live`, once seen.
    pub live_cursor: Option<String>,
}

impl Stream {
    pub async fn connect(base: &str, token: &str, after: Option<&str>) -> Stream {
        let ws = connect_raw(base, Some(token), after, None).await.expect("stream connects");
        Stream { ws, live_cursor: None }
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
                        self.live_cursor = v["cursor"].as_str().map(String::from);
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
            if v.get("cursor").is_none() || v["type"] == "stream.live" {
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
            if v.get("cursor").is_some() && v["type"] != "stream.live" && !notification {
                return v;
            }
        }
    }

    /// Waits for an event of `kind` about `incident`, returning it.
    pub async fn expect(&mut self, kind: &str, incident: &str) -> Value {
        loop {
            let e = self.next_event().await;
            if std::env::var("DEBUG_STREAM").is_ok() {
                eprintln!("stream: {} {} {} {}", e["cursor"], e["type"], e["incident"], e["data"]["step"]);
            }
            if e["type"] == kind && e["incident"] == incident {
                return e;
            }
        }
    }

    /// Asserts that no event about `incident` arrives before a marker event, proving a
    /// negative without sleeping: the caller raises a visible `marker` incident after the
    /// invisible one, and events arrive in log order.
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
    after: Option<&str>,
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
    focalpoint::crypto::install();
    reqwest::Client::builder().timeout(WAIT).build().expect("client")
}

/// `spawn_app()` on a fresh PostgreSQL database with the in-process bus polling it.
pub async fn spawn_app_pg() -> Arc<TestApp> {
    TestApp::builder().backend(Backend::Postgres).spawn().await
}
