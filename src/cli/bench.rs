//! `focalpoint bench`: load-tests a running hub, so operators can measure their own
//! deployment.
//!
//! Fan-out mode (default): N WebSocket clients (focal points of several parties) wait for
//! `stream.live`, then incidents are raised at a fixed offered rate (open loop: sends
//! follow the schedule whatever the responses; lateness is recorded). Each title carries
//! the run's marker, the incident's index and the send time in Unix nanos. A share of the
//! incidents is acknowledged by one client of an addressed party over its WebSocket. The
//! report gives raise → first/last client delivery, ack → first/last
//! `incident.acknowledged`, accepted raises per second, errors, and the hub's RSS per
//! connection (with `--hub-pid`).
//!
//! `--max-throughput`: no clients; C concurrent requests for D seconds (closed loop)
//! against the hub or, with `--target alertmanager`, against Alertmanager's
//! `POST /api/v2/alerts` (see `tests/bench/compare.sh`).
//!
//! Each client holds a file descriptor: raise `ulimit -n` before large runs.

mod clients;
mod stats;
mod throughput;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use clients::{ClientSpec, NO_ACKER, Shared};
use stats::{Summary, header, round3, rss_kib, unix_nanos};

#[derive(Args)]
pub struct BenchArgs {
    /// The hub's URL (or Alertmanager's, with `--target alertmanager`).
    #[arg(long, env = "FOCALPOINT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Where the WebSocket clients connect, if not `--url`: another replica of a cluster,
    /// to measure raise (on `--url`) → delivery across replicas.
    #[arg(long)]
    stream_url: Option<String>,
    /// Token of an officer (or bot) who raises the incidents.
    #[arg(long, env = "FOCALPOINT_TOKEN", hide_env_values = true)]
    officer_token: Option<String>,
    /// File with one client token per line (focal points; clients cycle through them).
    #[arg(long)]
    client_tokens: Option<PathBuf>,
    /// WebSocket clients to connect.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Offered raise rate, incidents per second (open loop).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of raising (fan-out mode) or of closed-loop load (`--max-throughput`).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Fraction of incidents one client acknowledges over its WebSocket (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    ack_share: f64,
    /// Clients reconnect when the hub goes away (restart it during the run to measure how
    /// fast every client is back and caught up; tests/bench/restart.sh does).
    #[arg(long)]
    reconnect: bool,
    /// Addressed parties, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "MY,SG")]
    parties: Vec<String>,
    /// TLP label of the raised incidents (clear, green, amber or amber+strict).
    #[arg(long, default_value = "green")]
    tlp: String,
    /// Status of the raised incidents (test keeps them apart from real ones).
    #[arg(long, default_value = "test")]
    status: String,
    /// The hub's process id: report its RSS before and after the clients connect.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds to wait after the last raise for outstanding deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// WebSocket handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Raises in flight at once before the open loop skips sends (and counts them).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Closed loop, no clients: raise as fast as `--concurrency` requests allow.
    #[arg(long)]
    max_throughput: bool,
    /// Concurrent requests for `--max-throughput`.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// What `--max-throughput` loads.
    #[arg(long, value_enum, default_value_t = Target::Hub)]
    target: Target,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Target {
    Hub,
    Alertmanager,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    if !(s.is_finite() && (0.0..=86_400.0).contains(&s)) {
        bail!("{what} must be between 0 and 86400 seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

pub async fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let url = args.url.trim_end_matches('/').to_string();
    let max_idle = args.max_in_flight.max(args.concurrency);
    let http = reqwest::Client::builder()
        .timeout(secs(args.timeout, "--timeout")?)
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .build()?;
    let marker = format!("fpbench {:08x}", (unix_nanos() as u64 ^ std::process::id() as u64) as u32);
    let report = if args.max_throughput {
        let target = match args.target {
            Target::Alertmanager => throughput::Target::Alertmanager { url: url.clone() },
            Target::Hub => throughput::Target::Hub {
                url: url.clone(),
                token: args.officer_token.clone().context("--officer-token is required")?,
                parties: args.parties.clone(),
                tlp: args.tlp.clone(),
                status: args.status.clone(),
                marker,
            },
        };
        if args.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let outcome = throughput::run(http, target, args.concurrency, secs(args.duration, "--duration")?).await;
        let name = if args.target == Target::Hub { "hub" } else { "alertmanager" };
        println!(
            "focalpoint bench --max-throughput — {name} at {url}, {} concurrent for {:.0} s",
            args.concurrency, args.duration
        );
        println!(
            "  accepted {} in {:.2} s = {:.0}/s; non-2xx {:?}; timeouts {}; errors {}{}",
            outcome.accepted,
            outcome.seconds,
            outcome.per_second(),
            outcome.statuses,
            outcome.timeouts,
            outcome.other_errors,
            outcome.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("{}", header());
        println!("{}", outcome.latency.row("request → 2xx response"));
        json!({ "mode": "max_throughput", "target": name, "url": url, "concurrency": args.concurrency, "result": outcome.json() })
    } else {
        fan_out(args, &url, http, marker).await?
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Who a token belongs to, from `GET /api/v1/network` (its `me`).
async fn whoami(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<(String, Vec<String>)> {
    let response =
        http.get(format!("{url}/api/v1/network")).bearer_auth(token).send().await.context("cannot reach the hub")?;
    let status = response.status();
    if !status.is_success() {
        bail!("the hub answered {status} for a token (…{})", token.chars().rev().take(4).collect::<String>());
    }
    let body: Value = response.json().await.context("the hub's /api/v1/network answer is not JSON")?;
    let party = body["me"]["party"].as_str().context("no `me.party` in /api/v1/network")?.to_string();
    let roles = body["me"]["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    Ok((party, roles))
}

#[derive(Default)]
struct RaiseStats {
    accepted: u64,
    latencies: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    timeouts: u64,
    other: u64,
    first_error: Option<String>,
}

async fn fan_out(args: &BenchArgs, url: &str, http: reqwest::Client, marker: String) -> anyhow::Result<Value> {
    let officer = args.officer_token.clone().context("--officer-token is required")?;
    let tlp = args.tlp.to_ascii_lowercase();
    if !["clear", "green", "amber", "amber+strict"].contains(&tlp.as_str()) {
        bail!("--tlp must be clear, green, amber or amber+strict (red needs named recipients)");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be above 0");
    }
    if !(0.0..=1.0).contains(&args.ack_share) {
        bail!("--ack-share must be between 0 and 1");
    }
    let duration = secs(args.duration, "--duration")?;
    let (officer_party, officer_roles) = whoami(&http, url, &officer).await.context("checking --officer-token")?;
    if !officer_roles.iter().any(|r| r == "officer" || r == "bot") {
        bail!("the --officer-token belongs to a principal who may not raise (roles {officer_roles:?})");
    }
    let tokens: Vec<String> = match &args.client_tokens {
        None if args.clients == 0 => Vec::new(),
        None => bail!("--client-tokens FILE is required with --clients > 0"),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    };
    if args.clients > 0 && tokens.is_empty() {
        bail!("no tokens in --client-tokens");
    }
    let mut principals = HashMap::new();
    for t in &tokens {
        if !principals.contains_key(t) {
            principals.insert(t.clone(), whoami(&http, url, t).await.context("checking --client-tokens")?);
        }
    }

    let planned = (args.rate * duration.as_secs_f64()).ceil() as usize;
    let shared = Arc::new(Shared::new(marker.clone(), planned));
    // Who should see the incidents, and who may acknowledge them.
    let everyone = tlp == "clear" || tlp == "green";
    let reads =
        |roles: &[String]| roles.iter().any(|r| ["officer", "focal", "coordinator", "bot"].contains(&r.as_str()));
    let mut visible = vec![false; args.clients];
    let mut ackers = Vec::new();
    for (c, v) in visible.iter_mut().enumerate() {
        let (party, roles) = &principals[&tokens[c % tokens.len()]];
        *v = reads(roles) && (everyone || args.parties.contains(party) || *party == officer_party);
        if *v && args.parties.contains(party) && roles.iter().any(|r| r == "focal" || r == "coordinator") {
            ackers.push(c as u32);
        }
    }
    let expected_per_incident = visible.iter().filter(|v| **v).count() as u32;
    if args.ack_share > 0.0 && ackers.is_empty() {
        bail!("--ack-share needs a client token of a focal point of an addressed party ({})", args.parties.join(","));
    }

    let rss_before = args.hub_pid.and_then(rss_kib);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let stream_base = args.stream_url.as_deref().map(|u| u.trim_end_matches('/')).unwrap_or(url);
    let stream_url = format!("{}/api/v1/stream", stream_base.replacen("http", "ws", 1));
    let connect_start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let spec = ClientSpec {
            index: c as u32,
            url: stream_url.clone(),
            token: tokens[c % tokens.len()].clone(),
            visible: visible[c],
            reconnect: args.reconnect,
        };
        tasks.push(tokio::spawn(clients::run(spec, shared.clone(), handshakes.clone(), stop_rx.clone())));
    }
    // Bounded wait for every client to be live (or to have failed).
    let connect_limit = Duration::from_secs(30 + args.clients as u64 / 100);
    let mut next_note = Instant::now() + Duration::from_secs(5);
    while shared.live.load(Relaxed) + shared.connect_errors.load(Relaxed) + shared.closed.load(Relaxed) < args.clients {
        if connect_start.elapsed() > connect_limit {
            eprintln!("-- gave up waiting for clients after {:.0} s", connect_limit.as_secs_f64());
            break;
        }
        if Instant::now() > next_note {
            eprintln!("-- {} of {} clients live", shared.live.load(Relaxed), args.clients);
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let live = shared.live.load(Relaxed);
    // Let the hub settle before measuring its idle memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_live = args.hub_pid.and_then(rss_kib);
    // Every incident should reach every live client that may see it.
    let want = shared.visible_live.load(Relaxed) as u32;
    if want < expected_per_incident {
        eprintln!("-- only {want} of {expected_per_incident} clients that should see the incidents are live");
    }

    // Open loop: raise i is due at start + i/rate, whatever happened to earlier ones.
    let raises = Arc::new(Mutex::new(RaiseStats::default()));
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let (mut lags, mut skipped, mut acks_planned) = (Vec::with_capacity(planned), 0u64, 0usize);
    let raise_start = tokio::time::Instant::now();
    let mut senders = Vec::with_capacity(planned);
    for i in 0..planned {
        let due = raise_start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        lags.push(due.elapsed().as_nanos() as u64);
        // Ack incident i when the running share crosses an integer.
        let ack = (((i + 1) as f64 * args.ack_share).floor() - (i as f64 * args.ack_share).floor()) >= 1.0;
        if ack && !ackers.is_empty() {
            shared.slots[i].acker.store(ackers[acks_planned % ackers.len()], Relaxed);
            acks_planned += 1;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (http, shared, raises, officer) = (http.clone(), shared.clone(), raises.clone(), officer.clone());
        let body = json!({
            "title": format!("{marker} #{i} t={}", unix_nanos()),
            "description": "focalpoint bench load test; safe to ignore",
            "field": "general", "severity": "minor", "status": args.status,
            "parties": args.parties, "tlp": tlp,
        });
        let post = format!("{url}/api/v1/incidents");
        senders.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            shared.slots[i].sent.store(shared.now(), Relaxed);
            let result = http.post(post).bearer_auth(officer).json(&body).send().await;
            let elapsed = sent.elapsed().as_nanos() as u64;
            let Ok(mut r) = raises.lock() else { return };
            match result {
                Ok(response) if response.status().is_success() => {
                    r.accepted += 1;
                    r.latencies.push(elapsed);
                }
                Ok(response) => *r.statuses.entry(response.status().as_u16()).or_default() += 1,
                Err(e) if e.is_timeout() => r.timeouts += 1,
                Err(e) => {
                    r.other += 1;
                    r.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }));
    }
    for s in senders {
        let _ = s.await; // each is bounded by the request timeout
    }
    let raise_seconds = raise_start.elapsed().as_secs_f64();

    // Drain: wait (bounded) until every sent incident reached every live client that sees it.
    let drain_until = Instant::now() + secs(args.drain, "--drain")?;
    loop {
        let done = shared.slots.iter().all(|s| {
            s.sent.load(Relaxed) == 0
                || (s.count.load(Relaxed) >= want
                    && (s.acker.load(Relaxed) == NO_ACKER || s.ack_count.load(Relaxed) >= want))
        });
        if done || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_end = args.hub_pid.and_then(rss_kib);
    let closed_during_run = shared.closed.load(Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    // Fold the slots into summaries. "Last" counts only incidents every expected client got.
    let (mut first, mut last, mut ack_first, mut ack_last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ack_result = Vec::new();
    let (mut sent, mut deliveries, mut incomplete, mut acks_sent, mut acks_incomplete) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for s in &shared.slots {
        let t0 = s.sent.load(Relaxed);
        if t0 == 0 {
            continue;
        }
        sent += 1;
        let n = s.count.load(Relaxed);
        deliveries += n as u64;
        if n > 0 {
            first.push(s.first.load(Relaxed).saturating_sub(t0));
        }
        if n >= want && want > 0 {
            last.push(s.last.load(Relaxed).saturating_sub(t0));
        } else {
            incomplete += 1;
        }
        let a0 = s.ack_sent.load(Relaxed);
        if a0 != 0 {
            acks_sent += 1;
            let answered = s.ack_result.load(Relaxed);
            if answered != 0 {
                ack_result.push(answered.saturating_sub(a0));
            }
            let n = s.ack_count.load(Relaxed);
            if n > 0 {
                ack_first.push(s.ack_first.load(Relaxed).saturating_sub(a0));
            }
            if n >= want {
                ack_last.push(s.ack_last.load(Relaxed).saturating_sub(a0));
            } else {
                acks_incomplete += 1;
            }
        }
    }
    let r = raises.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
    let lag = Summary::of_nanos(lags.clone());
    let late = lags.iter().filter(|l| **l > 5_000_000).count();
    let summaries = [
        ("raise → 2xx response", Summary::of_nanos(r.latencies)),
        ("raise → first client", Summary::of_nanos(first)),
        ("raise → last client (complete only)", Summary::of_nanos(last)),
        ("ack → acker's ack.result", Summary::of_nanos(ack_result)),
        ("ack → first acknowledged", Summary::of_nanos(ack_first)),
        ("ack → last acknowledged", Summary::of_nanos(ack_last)),
    ];
    let per_conn = match (rss_before, rss_live) {
        (Some(b), Some(a)) if live > 0 => Some(a.saturating_sub(b) as f64 / live as f64),
        _ => None,
    };
    let reasons = shared.reasons.lock().map(|r| r.clone()).unwrap_or_default();
    let accepted_per_s = if raise_seconds > 0.0 { r.accepted as f64 / raise_seconds } else { 0.0 };

    println!(
        "focalpoint bench — {url}: {} clients ({} tokens), parties {}, tlp {tlp}, {} incidents/s for {:.0} s, ack share {}",
        args.clients,
        principals.len(),
        args.parties.join(","),
        args.rate,
        duration.as_secs_f64(),
        args.ack_share
    );
    println!(
        "  clients    live {live}/{} in {connect_seconds:.1} s; connect errors {}; closed during run {closed_during_run}",
        args.clients,
        shared.connect_errors.load(Relaxed)
    );
    println!(
        "  raises     planned {planned}, sent {sent}, accepted {} ({accepted_per_s:.1}/s); non-2xx {:?}; timeouts {}; errors {}; skipped (in-flight cap) {skipped}",
        r.accepted, r.statuses, r.timeouts, r.other
    );
    println!("  schedule   lag p99 {:.2} ms, max {:.2} ms; sends more than 5 ms late: {late}", lag.p99, lag.max);
    println!(
        "  delivery   {deliveries} of {} expected ({want} clients see each); incidents not reaching every client: {incomplete}",
        sent * want as u64
    );
    if args.reconnect {
        let back = shared.reconnected.load(Relaxed);
        let first_down = shared.first_down.load(Relaxed);
        let last_back = shared.last_back.load(Relaxed);
        let span = if back > 0 && last_back > first_down { (last_back - first_down) as f64 / 1e9 } else { 0.0 };
        println!(
            "  reconnect  {back} of {live} clients lost the hub and came back live, resumed by cursor; first loss -> last client live {span:.2} s; longest single outage {:.2} s",
            shared.longest_outage.load(Relaxed) as f64 / 1e9
        );
    }
    if acks_sent > 0 || acks_planned > 0 {
        println!(
            "  acks       planned {acks_planned}, sent {acks_sent}, errors {}, not reaching every client: {acks_incomplete}",
            shared.ack_errors.load(Relaxed)
        );
    }
    if let (Some(b), Some(a)) = (rss_before, rss_live) {
        println!(
            "  hub RSS    {b} KiB before clients, {a} KiB with {live} idle clients ({:.1} KiB each), {} KiB at the end",
            per_conn.unwrap_or(0.0),
            rss_end.map(|e| e.to_string()).unwrap_or("?".into())
        );
    }
    println!("{}", header());
    for (label, s) in &summaries {
        println!("{}", s.row(label));
    }
    for reason in &reasons {
        println!("  note: {reason}");
    }
    if let Some(e) = &r.first_error {
        println!("  note: first raise error: {e}");
    }

    let latency: serde_json::Map<String, Value> = [
        "raise_response",
        "raise_to_first_client",
        "raise_to_last_client",
        "ack_to_result",
        "ack_to_first",
        "ack_to_last",
    ]
    .iter()
    .zip(summaries.iter())
    .map(|(k, (_, s))| (k.to_string(), s.json()))
    .collect();
    Ok(json!({
        "mode": "fan_out",
        "config": { "url": url, "clients": args.clients, "tokens": principals.len(), "rate": args.rate, "duration_s": duration.as_secs_f64(),
            "ack_share": args.ack_share, "parties": args.parties, "tlp": tlp, "status": args.status },
        "clients": { "live": live, "connect_seconds": round3(connect_seconds), "connect_errors": shared.connect_errors.load(Relaxed),
            "closed_during_run": closed_during_run, "messages": shared.messages.load(Relaxed) },
        "raises": { "planned": planned, "sent": sent, "accepted": r.accepted, "accepted_per_s": round3(accepted_per_s),
            "non_2xx": r.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "timeouts": r.timeouts, "other_errors": r.other, "skipped": skipped,
            "schedule_lag": lag.json(), "late_over_5ms": late },
        "delivery": { "clients_per_incident": want, "delivered": deliveries, "expected": sent * want as u64, "incomplete_incidents": incomplete },
        "acks": { "planned": acks_planned, "sent": acks_sent, "errors": shared.ack_errors.load(Relaxed), "incomplete": acks_incomplete },
        "latency": latency,
        "hub_rss_kib": { "before": rss_before, "live_idle": rss_live, "end": rss_end, "per_connection": per_conn.map(round3) },
        "notes": reasons,
    }))
}
