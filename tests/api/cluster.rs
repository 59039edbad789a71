//! Cluster mode: three hub replicas as separate processes on one PostgreSQL database and
//! one Redis (a fresh database and key prefix per test, see `servers.rs`). Redis outages
//! are made with a TCP proxy between the replicas and Redis; the shared Redis server is
//! never stopped. Waiting for a real escalation deadline is inherent here; everything
//! else waits for the expected event with a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;
use crate::scenario::NETWORK;
use crate::servers::{TestDatabase, fresh_database, require_redis, unique_prefix};

/// One replica: a `focalpoint serve` process.
pub struct Replica {
    child: Child,
    pub base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster under test: its database, network file, Redis URL and prefix, and tokens.
pub struct Cluster {
    pub db: TestDatabase,
    pub redis: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub tokens: BTreeMap<String, String>,
    pub http: reqwest::Client,
    /// The cluster's cursor key (from the shared store): the test reads positions in
    /// order where a viewer cannot.
    pub cursors: focalpoint::domain::cursor::Cursors,
}

/// The scenario network with every wait replaced by `wait` and `repeat` loops.
pub fn network_with(wait: &str, repeat: u32) -> String {
    NETWORK
        .replace("wait = \"5m\"", &format!("wait = \"{wait}\""))
        .replace("wait = \"10m\"", &format!("wait = \"{wait}\""))
        .replace("wait = \"15m\"", &format!("wait = \"{wait}\""))
        .replace("repeat = 1", &format!("repeat = {repeat}"))
}

impl Cluster {
    /// A fresh database and prefix, the network written to a temp dir, tokens issued.
    pub async fn new(network: &str, redis: Option<String>) -> Cluster {
        let db = fresh_database().await;
        let redis = match redis {
            Some(r) => r,
            None => require_redis().await,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("network.toml"), network).expect("network file");
        let store = focalpoint::store::open(&db.url, false).await.expect("store opens");
        let cursors = focalpoint::startup::cursors(&store).await.expect("cursor key");
        let mut cluster =
            Cluster { db, redis, prefix: unique_prefix(), dir, tokens: BTreeMap::new(), http: http(), cursors };
        for id in ["th-duty", "my-l1", "sg-l1", "cn-coord"] {
            let out = cluster.command().args(["token", "issue", id]).output().expect("cli runs");
            assert!(out.status.success(), "token issue failed: {}", String::from_utf8_lossy(&out.stderr));
            let token = String::from_utf8_lossy(&out.stdout).lines().last().expect("a token line").trim().to_string();
            cluster.tokens.insert(id.to_string(), token);
        }
        cluster
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_focalpoint"));
        cmd.env("FOCALPOINT__STORE__URL", &self.db.url)
            .env("FOCALPOINT__BUS__REDIS_URL", &self.redis)
            .env("FOCALPOINT__BUS__KEY_PREFIX", &self.prefix)
            .env("FOCALPOINT__SERVER__LISTEN", "127.0.0.1:0")
            .env("FOCALPOINT__NETWORK__FILE", self.dir.path().join("network.toml"))
            .env("FOCALPOINT__DISPATCH__LEASE_SECONDS", "5")
            // Hundreds of pages to the same few phones: no per-destination throttle here.
            .env("FOCALPOINT__DISPATCH__PER_DESTINATION_PER_MINUTE", "100000")
            .env("FOCALPOINT__LOG__FILTER", "warn")
            .env("FOCALPOINT__SERVER__METRICS_TOKEN", METRICS_TOKEN)
            .env("FOCALPOINT_CONFIG", "/nonexistent/focalpoint.toml");
        cmd
    }

    /// Starts a replica and waits for the line naming its address.
    pub fn start(&self) -> Replica {
        let mut child =
            self.command().arg("serve").stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("hub starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let base = first.strip_prefix("focalpoint listening on ").expect("the address line").trim().to_string();
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Replica { child, base }
    }

    pub fn token(&self, id: &str) -> &str {
        self.tokens.get(id).map(String::as_str).expect("token issued")
    }

    /// Raises on `replica`; returns the incident id if answered 201.
    pub async fn raise(&self, replica: &str, body: &Value) -> Option<String> {
        let r = self
            .http
            .post(format!("{replica}/api/v1/incidents"))
            .bearer_auth(self.token("th-duty"))
            .json(body)
            .send()
            .await
            .ok()?;
        if r.status() != 201 {
            return None;
        }
        r.json::<Value>().await.ok()?["id"].as_str().map(String::from)
    }

    /// The seq behind a message's cursor.
    pub fn seq(&self, message: &Value) -> i64 {
        let cursor = message["cursor"].as_str().unwrap_or_else(|| panic!("no cursor in {message}"));
        self.cursors.open(cursor).unwrap_or_else(|_| panic!("{cursor:?} is not a cursor of this cluster"))
    }

    fn seqs(&self, events: &[Value]) -> Vec<i64> {
        events.iter().map(|e| self.seq(e)).collect()
    }

    /// Every event `who` may see after `after`, read page by page from `/api/v1/events`.
    pub async fn events(&self, replica: &str, who: &str, after: i64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = self.cursors.seal(after);
        loop {
            let page: Value = self
                .http
                .get(format!("{replica}/api/v1/events?after={after}&limit=500"))
                .bearer_auth(self.token(who))
                .send()
                .await
                .expect("events request")
                .json()
                .await
                .expect("events json");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return all;
            }
            after = page["cursor"].as_str().expect("cursor").to_string();
            all.extend(events);
        }
    }

    /// `/readyz` of a replica: (bus state, whole response).
    pub async fn bus_state(&self, replica: &str) -> String {
        let r: Value = match self.http.get(format!("{replica}/readyz")).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        r["bus"]["state"].as_str().unwrap_or("unknown").to_string()
    }
}

pub fn raise_body(i: usize, tlp: &str, parties: &[&str]) -> Value {
    json!({
        "title": format!("cluster incident {i}"), "description": "Container at Port Klang",
        "field": "drug-trafficking", "severity": "severe", "parties": parties, "tlp": tlp,
    })
}

/// The next event of any type, the dispatcher's `notification.*` included (a gap check
/// must see them all; `Stream::next_event` skips them).
async fn next_any_event(stream: &mut Stream) -> Value {
    loop {
        let v = stream.next_json(WAIT).await.expect("an event arrives");
        if v.get("cursor").is_some() && v["type"] != "stream.live" {
            return v;
        }
    }
}

/// Collects events from a stream until `done` says so, checking order and uniqueness.
async fn collect_until(cluster: &Cluster, stream: &mut Stream, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    while !done(&got) {
        let e = next_any_event(stream).await;
        if let Some(prev) = got.last() {
            let (seq, prev_seq) = (cluster.seq(&e), cluster.seq(prev));
            assert!(seq > prev_seq, "out of order or doubled: {seq} after {prev_seq}");
        }
        got.push(e);
    }
    got
}

fn raised_count(events: &[Value], ids: &BTreeSet<String>) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == "incident.raised" && ids.contains(e["incident"].as_str().unwrap_or("")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incidents_raised_on_one_replica_reach_stream_clients_of_the_others_once_and_in_order() {
    let cluster = Cluster::new(NETWORK, None).await;
    let (a, b, c) = (cluster.start(), cluster.start(), cluster.start());
    let mut on_b = Stream::connect(&b.base, cluster.token("my-l1"), Some("0")).await;
    let mut on_c = Stream::connect(&c.base, cluster.token("sg-l1"), Some("0")).await;
    on_b.backlog().await;
    on_c.backlog().await;
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        let id = cluster.raise(&a.base, &raise_body(i, "amber", &["MY", "SG"])).await.expect("raise answered 201");
        ids.insert(id);
    }
    let mut last_on_b = String::new();
    for (stream, who) in [(&mut on_b, "my-l1"), (&mut on_c, "sg-l1")] {
        let got = collect_until(&cluster, stream, |got| raised_count(got, &ids) == ids.len()).await;
        // Exactly what the store says this viewer may see, in the same order: no gap.
        let expected = cluster.events(&a.base, who, 0).await;
        let expected: Vec<i64> = cluster.seqs(&expected).into_iter().take(got.len()).collect();
        assert_eq!(cluster.seqs(&got), expected, "{who}'s stream equals its visible events");
        if who == "my-l1" {
            last_on_b = got.last().and_then(|e| e["cursor"].as_str()).expect("a cursor").to_string();
        }
    }

    // Every replica seals alike: a cursor received from B resumes on C without a gap.
    drop(on_b);
    let later = cluster.raise(&a.base, &raise_body(30, "amber", &["MY"])).await.expect("raise answered 201");
    let mut on_c = Stream::connect(&c.base, cluster.token("my-l1"), Some(&last_on_b)).await;
    let resumed = collect_until(&cluster, &mut on_c, |got| got.iter().any(|e| e["incident"] == later.as_str())).await;
    let expected = cluster.events(&a.base, "my-l1", cluster.cursors.open(&last_on_b).expect("cursor")).await;
    assert_eq!(
        cluster.seqs(&resumed),
        cluster.seqs(&expected)[..resumed.len()].to_vec(),
        "resumed on C after B's cursor"
    );
}

/// A TCP proxy to Redis that the test can cut (every connection closed, new ones refused),
/// freeze (connections stay open, bytes stop: a network gone silent) and restore.
struct Proxy {
    addr: String,
    cut: Arc<Mutex<bool>>,
    frozen: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let target = upstream.trim_start_matches("redis://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = format!("redis://{}", listener.local_addr().expect("addr"));
        let cut = Arc::new(Mutex::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (cut, conns, frozen) = (cut.clone(), conns.clone(), frozen.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if *cut.lock().expect("lock") {
                        drop(inbound); // refused while cut
                        continue;
                    }
                    let (target, frozen) = (target.clone(), frozen.clone());
                    conns.lock().expect("lock").push(tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(&target).await {
                            let (from_client, to_client) = inbound.into_split();
                            let (from_redis, to_redis) = outbound.into_split();
                            tokio::join!(pump(from_client, to_redis, &frozen), pump(from_redis, to_client, &frozen));
                        }
                    }));
                }
            })
        };
        Proxy { addr, cut, frozen, conns, accept }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    fn cut(&self) {
        *self.cut.lock().expect("lock") = true;
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        *self.cut.lock().expect("lock") = false;
    }
}

/// Forwards bytes one way; while frozen it holds them (the connection stays open).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A network device, not synchronisation: silent for as long as the test says.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn wait_bus(cluster: &Cluster, replicas: &[&Replica], state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for r in replicas {
        while cluster.bus_state(&r.base).await != state {
            assert!(tokio::time::Instant::now() < deadline, "{} never reported bus {state}", r.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Redis gone silent without closing anything (a dead link, a frozen server): the
/// replicas notice from their own heartbeats not coming back, report the bus degraded,
/// keep delivering by polling, and recover when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_redis_is_noticed_and_clients_still_get_every_event() {
    let redis = require_redis().await;
    let proxy = Proxy::start(&redis).await;
    let cluster = Cluster::new(NETWORK, Some(proxy.addr.clone())).await;
    let (a, b) = (cluster.start(), cluster.start());
    wait_bus(&cluster, &[&a, &b], "ok").await;
    let mut on_b = Stream::connect(&b.base, cluster.token("my-l1"), Some("0")).await;
    on_b.backlog().await;
    proxy.freeze(true);
    wait_bus(&cluster, &[&a, &b], "degraded").await;
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        ids.insert(cluster.raise(&a.base, &raise_body(i, "amber", &["MY"])).await.expect("raise answered"));
    }
    let got = collect_until(&cluster, &mut on_b, |got| raised_count(got, &ids) == 5).await;
    let expected = cluster.events(&a.base, "my-l1", cluster.seq(&got[0]) - 1).await;
    assert_eq!(cluster.seqs(&got), cluster.seqs(&expected)[..got.len()].to_vec(), "no gap while polling");
    proxy.freeze(false);
    wait_bus(&cluster, &[&a, &b], "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_get_every_event_while_redis_is_cut_and_the_bus_recovers_by_itself() {
    let redis = require_redis().await;
    let proxy = Proxy::start(&redis).await;
    let cluster = Cluster::new(NETWORK, Some(proxy.addr.clone())).await;
    let (a, b, c) = (cluster.start(), cluster.start(), cluster.start());
    wait_bus(&cluster, &[&a, &b, &c], "ok").await;
    let mut on_b = Stream::connect(&b.base, cluster.token("my-l1"), Some("0")).await;
    let mut on_c = Stream::connect(&c.base, cluster.token("my-l1"), Some("0")).await;
    on_b.backlog().await;
    on_c.backlog().await;
    let mut ids = BTreeSet::new();
    for round in 0..3 {
        match round {
            1 => {
                proxy.cut();
                wait_bus(&cluster, &[&a, &b, &c], "degraded").await;
            }
            2 => {
                proxy.restore();
                wait_bus(&cluster, &[&a, &b, &c], "ok").await;
            }
            _ => {}
        }
        for i in 0..10 {
            let id =
                cluster.raise(&a.base, &raise_body(round * 10 + i, "amber", &["MY"])).await.expect("raise answered");
            ids.insert(id);
        }
        for stream in [&mut on_b, &mut on_c] {
            // Events of this round arrive (by polling while Redis is cut), in order, once.
            let got = collect_until(&cluster, stream, |got| raised_count(got, &ids) == 10).await;
            let expected = cluster.events(&a.base, "my-l1", cluster.seq(&got[0]) - 1).await;
            assert_eq!(cluster.seqs(&got), cluster.seqs(&expected)[..got.len()].to_vec(), "round {round}: no gap");
        }
        ids.clear();
    }
    let metrics = cluster
        .http
        .get(format!("{}/metrics", b.base))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let degraded = metrics
        .lines()
        .find(|l| l.starts_with("focalpoint_bus_degraded_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(degraded.is_some_and(|d| d >= 1.0), "the degraded period is counted: {degraded:?}");
}

/// Per (incident, party, step, loop): how many `incident.escalated` events.
fn escalations(events: &[Value], ids: &BTreeSet<String>) -> BTreeMap<(String, String, u64, u64), usize> {
    let mut count = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "incident.escalated") {
        let id = e["incident"].as_str().unwrap_or("").to_string();
        if !ids.contains(&id) {
            continue;
        }
        let key = (
            id,
            e["party"].as_str().unwrap_or("").to_string(),
            e["data"]["step"].as_u64().unwrap_or(99),
            e["data"]["loop"].as_u64().unwrap_or(99),
        );
        *count.entry(key).or_insert(0) += 1;
    }
    count
}

/// Waits until the officer sees `n` `incident.unanswered` events for `ids` (the end of
/// every party's escalation), returning every event.
async fn wait_unanswered(
    cluster: &Cluster,
    replica: &str,
    ids: &BTreeSet<String>,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = cluster.events(replica, "th-duty", 0).await;
        let done = events
            .iter()
            .filter(|e| e["type"] == "incident.unanswered" && ids.contains(e["incident"].as_str().unwrap_or("")))
            .count();
        if done >= n {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {done} of {n} escalations finished in {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_escalation_step_fires_once_across_three_replicas() {
    // Two steps of 2 s, two loops: per party step 1, loop restart, step 1 again, then
    // the unanswered alarm, all within about 8 s of the raise.
    let cluster = Cluster::new(&network_with("2s", 1), None).await;
    let replicas = [cluster.start(), cluster.start(), cluster.start()];
    let mut ids = BTreeSet::new();
    for i in 0..200 {
        let r = &replicas[i % 3];
        ids.insert(cluster.raise(&r.base, &raise_body(i, "amber", &["MY", "SG"])).await.expect("raise answered"));
    }
    let events = wait_unanswered(&cluster, &replicas[1].base, &ids, 400, Duration::from_secs(90)).await;
    let count = escalations(&events, &ids);
    // Steps: (1, 0) · (2, 0) · (0, 1) · (1, 1) · (2, 1), then unanswered: 5 per party.
    assert_eq!(count.len(), 200 * 2 * 5, "every step of every party fired");
    let doubled: Vec<_> = count.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "steps fired more than once: {doubled:?}");
    let report: Value = verify(&cluster).await;
    assert_eq!(report["intact"], true, "{report}");
}

/// The hash chain as an auditor's `/api/v1/audit/verify` reports it, read from the store.
async fn verify(cluster: &Cluster) -> Value {
    let store = focalpoint::store::open(&cluster.db.url, false).await.expect("store");
    let report = store.verify_chain().await.expect("verify");
    json!({ "intact": report.broken_at.is_none(), "report": report })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_with_kill_9_loses_and_doubles_nothing() {
    let cluster = Cluster::new(&network_with("2s", 0), None).await;
    let (a, b) = (cluster.start(), cluster.start());
    let mut c = cluster.start();
    let mut ids = BTreeSet::new();
    for i in 0..90 {
        if i == 45 {
            c.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
            c.child.wait().expect("reaped");
        }
        let target = match i % 3 {
            0 => &a.base,
            1 => &b.base,
            _ if i < 45 => &c.base,
            _ => &a.base,
        };
        if let Some(id) = cluster.raise(target, &raise_body(i, "amber", &["MY", "SG"])).await {
            ids.insert(id);
        }
    }
    assert_eq!(ids.len(), 90, "every raise answered 201 (none sent to the dead replica)");
    // A step whose engine died holding its lease fires after the lease (5 s).
    let events = wait_unanswered(&cluster, &a.base, &ids, 180, Duration::from_secs(90)).await;
    let raised: BTreeSet<String> = events
        .iter()
        .filter(|e| e["type"] == "incident.raised")
        .filter_map(|e| e["incident"].as_str().map(String::from))
        .collect();
    assert!(ids.is_subset(&raised), "every answered incident is in the log");
    let count = escalations(&events, &ids);
    // Steps (1, 0), (2, 0), then unanswered: 2 escalations per party.
    assert_eq!(count.len(), 90 * 2 * 2, "no escalation lost");
    assert!(count.values().all(|n| *n == 1), "no escalation doubled");

    // Pages: one row per (incident, party, focal point, channel, step, loop), and every
    // SMS/email page sent (the `log` gateway) — none left pending after the kill.
    let store = focalpoint::store::open(&cluster.db.url, false).await.expect("store");
    let mut sent_events: BTreeMap<(String, String, String, u64, u64), usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "notification.sent") {
        let d = &e["data"];
        let key = (
            e["incident"].as_str().unwrap_or("").to_string(),
            d["focal_point"].as_str().unwrap_or("").to_string(),
            d["channel"].as_str().unwrap_or("").to_string(),
            d["step"].as_u64().unwrap_or(99),
            d["loop"].as_u64().unwrap_or(99),
        );
        *sent_events.entry(key).or_default() += 1;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).expect("uuid");
        loop {
            let pages = store.pages(uuid).await.expect("pages");
            let pending = pages.iter().filter(|p| p.state == "pending").count();
            if pending == 0 {
                let unsent: Vec<_> = pages
                    .iter()
                    .filter(|p| {
                        p.channel != "dashboard" && !matches!(p.state.as_str(), "sent" | "merged" | "delivered")
                    })
                    .collect();
                assert!(unsent.is_empty(), "every page went out: {unsent:?}");
                let keys: BTreeSet<_> =
                    pages.iter().map(|p| (&p.party, &p.focal_point, &p.channel, p.step, p.loop_)).collect();
                assert_eq!(keys.len(), pages.len(), "no page row doubled");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{pending} pages of {id} still pending");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(sent_events.values().all(|n| *n <= 2), "a page is sent at most twice (once more if in flight at the kill)");
    let report = store.verify_chain().await.expect("verify");
    assert_eq!(report.broken_at, None, "{report:?}");
}

#[tokio::test]
async fn the_http_suite_helper_runs_on_postgres() {
    let app = spawn_app_pg().await;
    let mut officer = app.stream("th-duty", None).await;
    officer.backlog().await;
    let (status, inc) = app.raise("th-duty", &incident("amber")).await;
    assert_eq!(status, 201);
    let id = inc["id"].as_str().expect("id");
    officer.expect("incident.raised", id).await;
    assert_eq!(app.ack("my-drugs", id).await.status(), 200);
    officer.expect("incident.acknowledged", id).await;
    let got: Value = app.get("th-duty", &format!("/api/v1/incidents/{id}")).await.json().await.expect("json");
    assert_eq!(got["party_states"][0]["acknowledged_by"], "my-drugs");
}
