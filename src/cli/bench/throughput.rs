//! `focalpoint bench --max-throughput`: no clients, C workers each sending one request
//! after the other for D seconds (closed loop). The same generator drives Alertmanager
//! (`--target alertmanager`, one alert per `POST /api/v2/alerts`) so that a side-by-side
//! run compares the servers, not two load generators.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stats::{Summary, round3, unix_nanos};

/// What a closed-loop run measured.
pub struct Outcome {
    pub seconds: f64,
    pub accepted: u64,
    pub latency: Summary,
    pub statuses: BTreeMap<u16, u64>,
    pub timeouts: u64,
    pub other_errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.accepted as f64 / self.seconds } else { 0.0 }
    }

    pub fn json(&self) -> Value {
        json!({
            "seconds": round3(self.seconds),
            "accepted": self.accepted,
            "accepted_per_s": round3(self.per_second()),
            "latency": self.latency.json(),
            "non_2xx": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "timeouts": self.timeouts,
            "other_errors": self.other_errors,
            "first_error": self.first_error,
        })
    }
}

/// Where the requests go.
#[derive(Clone)]
pub enum Target {
    /// `POST {url}/api/v1/incidents` with an officer token.
    Hub { url: String, token: String, parties: Vec<String>, tlp: String, status: String, marker: String },
    /// `POST {url}/api/v2/alerts` with one alert.
    Alertmanager { url: String },
}

impl Target {
    fn request(&self, client: &reqwest::Client, worker: usize, n: u64) -> reqwest::RequestBuilder {
        let t = unix_nanos();
        match self {
            Target::Hub { url, token, parties, tlp, status, marker } => {
                client.post(format!("{url}/api/v1/incidents")).bearer_auth(token).json(&json!({
                    "title": format!("{marker} w{worker}-{n} t={t}"),
                    "description": "focalpoint bench load test; safe to ignore",
                    "field": "general", "severity": "minor", "status": status,
                    "parties": parties, "tlp": tlp,
                }))
            }
            Target::Alertmanager { url } => client.post(format!("{url}/api/v2/alerts")).json(&json!([{
                "labels": { "alertname": "FocalpointBench", "bench_id": format!("w{worker}-{n}-{t}") },
                "annotations": { "sent_ns": t.to_string(), "summary": "focalpoint bench load test; safe to ignore" },
            }])),
        }
    }
}

struct Worker {
    latencies: Vec<u64>,
    accepted: u64,
    statuses: BTreeMap<u16, u64>,
    timeouts: u64,
    other: u64,
    first_error: Option<String>,
}

/// Runs `concurrency` workers against `target` for `duration`.
pub async fn run(client: reqwest::Client, target: Target, concurrency: usize, duration: Duration) -> Outcome {
    let target = Arc::new(target);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (client, target) = (client.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut me = Worker {
                latencies: Vec::new(),
                accepted: 0,
                statuses: BTreeMap::new(),
                timeouts: 0,
                other: 0,
                first_error: None,
            };
            let mut n = 0u64;
            // Bounded: every request has a client timeout, and no request starts after the deadline.
            while Instant::now() < deadline {
                n += 1;
                let sent = Instant::now();
                match target.request(&client, w, n).send().await {
                    Ok(response) => {
                        let status = response.status();
                        // Read the body so the connection goes back to the pool.
                        let _ = response.bytes().await;
                        if status.is_success() {
                            me.accepted += 1;
                            me.latencies.push(sent.elapsed().as_nanos() as u64);
                        } else {
                            *me.statuses.entry(status.as_u16()).or_default() += 1;
                        }
                    }
                    Err(e) if e.is_timeout() => me.timeouts += 1,
                    Err(e) => {
                        me.other += 1;
                        me.first_error.get_or_insert_with(|| e.to_string());
                        // A refused connection would otherwise spin: back off a little.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            me
        }));
    }
    let mut all = Worker {
        latencies: Vec::new(),
        accepted: 0,
        statuses: BTreeMap::new(),
        timeouts: 0,
        other: 0,
        first_error: None,
    };
    for task in tasks {
        let Ok(w) = task.await else { continue };
        all.latencies.extend(w.latencies);
        all.accepted += w.accepted;
        for (k, v) in w.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.timeouts += w.timeouts;
        all.other += w.other;
        if all.first_error.is_none() {
            all.first_error = w.first_error;
        }
    }
    Outcome {
        seconds: start.elapsed().as_secs_f64(),
        accepted: all.accepted,
        latency: Summary::of_nanos(all.latencies),
        statuses: all.statuses,
        timeouts: all.timeouts,
        other_errors: all.other,
        first_error: all.first_error,
    }
}
