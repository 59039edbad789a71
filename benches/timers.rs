//! Escalation-timer benchmark (issue 3 and 7): loads N pending escalation steps into a
//! fresh SQLite store, lets the real engine fire them on the system clock, and prints
//! firing lateness p50/p99/max and what a pending timer costs (memory and disk).
//!
//! `cargo bench --bench timers` (defaults) or with arguments after `--`:
//! `cargo bench --bench timers -- --timers 100000 --window 240 --clients 500`
//!
//! - The timers are steps of real incidents (raised through the hub's command layer, two
//!   parties each), whose due times are then spread evenly over `--window` seconds
//!   starting a few seconds ahead, so the engine fires `timers / window` steps a second.
//! - Phase "idle" fires them with nothing else happening; phase "fan-out" (when
//!   `--clients` > 0) repeats the run with that many WebSocket clients connected and
//!   10 raises a second going out to them.
//! - Lateness is `fired_at - due_at` as recorded by the engine in the store.
//! - The escalation policy pages on the dashboard only, so SMS/email dispatch does not mix
//!   into the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use focalpoint::clock::SystemClock;
use focalpoint::directory::Directory;
use focalpoint::domain::principal::Principal;
use focalpoint::domain::raise::RaiseRequest;
use focalpoint::startup::Application;
use futures_util::StreamExt;

const NETWORK_POLICY: &str = r#"
[[policy]]
party = "*"
field = "*"
repeat = 0
steps = [
  { notify = "level:1", wait = "1h", channels = ["dashboard"] },
  { notify = "level:2", wait = "1h", channels = ["dashboard"] },
]
"#;

struct Args {
    timers: usize,
    window: u64,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args { timers: 100_000, window: 240, clients: 500 };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--timers", Some(v)) => a.timers = v as usize,
            ("--window", Some(v)) => a.window = v.max(1),
            ("--clients", Some(v)) => a.clients = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The sample network's parties, fields and focal points, with the bench's policy.
fn network() -> Directory {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/network.toml");
    let text = std::fs::read_to_string(path).expect("config/network.toml");
    let cut = text.find("\n[[policy]]\n").unwrap_or(text.len());
    let without_policies = text[..cut].to_string();
    Directory::parse(&(without_policies + NETWORK_POLICY)).expect("bench network")
}

async fn run(phase: &str, a: &Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("timers.db");
    let mut settings = focalpoint::config::Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.store.url = format!("sqlite://{}", db.display());
    settings.log.filter = "warn".into();
    let directory = Arc::new(network());
    let store = focalpoint::store::open(&settings.store.url, false).await.expect("store");
    let app =
        Application::build_with(settings, directory.clone(), store.clone(), Arc::new(SystemClock)).await.expect("hub");
    let addr = app.local_addr();
    let hub = app.hub();
    tokio::spawn(app.run_until(std::future::pending()));

    let officer = Principal::from_focal_point(directory.focal_point("th-duty").expect("th-duty"), &directory);
    let request = RaiseRequest {
        title: Some("Timer bench".into()),
        description: Some("Pending escalation step".into()),
        field: Some("drug-trafficking".into()),
        severity: "severe".parse().ok(),
        parties: Some(vec!["MY".into(), "SG".into()]),
        tlp: "green".parse().ok(),
        status: "test".parse().ok(),
        ..Default::default()
    };
    let rss_empty = rss_kib();
    let started = Instant::now();
    for _ in 0..a.timers.div_ceil(2) {
        hub.raise(&officer, &request, None, b"").await.expect("raise");
    }
    let loaded_in = started.elapsed();
    let pending = store.pending_timers().await.expect("pending");
    let rss_loaded = rss_kib();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.path().join("timers.db-wal")).map(|m| m.len()).unwrap_or(0);

    // Spread the due times over the window, starting 3 s from now.
    // The bench's own connection on the hub's file (WAL lets it run beside the hub).
    let bench_db = rusqlite::Connection::open(&db).expect("bench connection");
    bench_db.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let start_ms = chrono::Utc::now().timestamp_millis() + 3_000;
    let spacing = (a.window * 1000) as f64 / pending.max(1) as f64;
    bench_db
        .execute(
            "UPDATE escalation_timers SET due_at = ?1 + CAST((rowid - (SELECT MIN(rowid) FROM escalation_timers)) * ?2 AS INTEGER)
             WHERE state = 'pending'",
            rusqlite::params![start_ms, spacing],
        )
        .expect("spread due times");

    // Fan-out load: clients connected and 10 raises a second during the firing.
    let mut load = Vec::new();
    if phase == "fan-out" {
        let token = focalpoint::auth::secret::generate();
        store.insert_token(&focalpoint::auth::secret::hash(&token), "my-drugs", "bench", None).await.expect("token");
        for _ in 0..a.clients {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = format!("ws://{addr}/api/v1/stream").into_client_request().expect("request");
            req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
            let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("client connects");
            load.push(tokio::spawn(async move {
                let (_, mut read) = ws.split();
                while let Some(Ok(_)) = read.next().await {}
            }));
        }
        let hub = hub.clone();
        let officer = officer.clone();
        let request = request.clone();
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let _ = hub.raise(&officer, &request, None, b"").await;
            }
        }));
    }
    // Wake the engine: it re-reads the next deadline on any new event.
    hub.raise(&officer, &request, None, b"").await.expect("raise");

    let deadline = Instant::now() + Duration::from_secs(a.window + 600);
    let mut peak_rss = rss_kib();
    loop {
        let fired: i64 = bench_db
            .query_row("SELECT COUNT(*) FROM escalation_timers WHERE state = 'fired'", [], |r| r.get(0))
            .expect("count");
        peak_rss = peak_rss.max(rss_kib());
        if fired as u64 >= pending || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in load {
        t.abort();
    }
    let mut stmt =
        bench_db.prepare("SELECT fired_at - due_at FROM escalation_timers WHERE state = 'fired'").expect("lateness");
    let mut late: Vec<i64> =
        stmt.query_map([], |r| r.get::<_, i64>(0)).expect("lateness").filter_map(|r| r.ok()).collect();
    late.sort_unstable();
    println!("\n== escalation timers, {phase} ({} clients)", if phase == "fan-out" { a.clients } else { 0 });
    println!("  pending timers loaded        {pending} (raised in {:.1} s)", loaded_in.as_secs_f64());
    println!(
        "  fired                        {} over a {} s window ({:.0}/s)",
        late.len(),
        a.window,
        late.len() as f64 / a.window as f64
    );
    println!(
        "  lateness ms p50 / p99 / max  {} / {} / {}",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0)
    );
    println!(
        "  memory: hub RSS {} MiB empty, {} MiB with timers pending ({:.0} bytes per timer), peak {} MiB",
        rss_empty / 1024,
        rss_loaded / 1024,
        (rss_loaded.saturating_sub(rss_empty) * 1024) as f64 / pending.max(1) as f64,
        peak_rss / 1024
    );
    println!(
        "  store: {:.0} bytes on disk per pending timer with its incident (the engine keeps only the next deadline in memory)",
        db_bytes as f64 / pending.max(1) as f64
    );
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        run("idle", &a).await;
        if a.clients > 0 {
            run("fan-out", &a).await;
        }
    });
}
