//! Small measurement helpers for `focalpoint bench`: latency summaries, the hub's RSS, and
//! wall-clock nanos for payload timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// p50/p99/max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises durations given in nanoseconds (nearest-rank percentiles).
    pub fn of_nanos(mut samples: Vec<u64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1e6
        };
        Summary { n: samples.len(), p50: rank(0.50), p99: rank(0.99), max: rank(1.0) }
    }

    pub fn json(&self) -> Value {
        json!({ "n": self.n, "p50_ms": round3(self.p50), "p99_ms": round3(self.p99), "max_ms": round3(self.max) })
    }

    /// One table row: `label  n  p50  p99  max`.
    pub fn row(&self, label: &str) -> String {
        if self.n == 0 {
            return format!("  {label:<34} {:>8} {:>10} {:>10} {:>10}", 0, "-", "-", "-");
        }
        format!("  {label:<34} {:>8} {:>10.2} {:>10.2} {:>10.2}", self.n, self.p50, self.p99, self.max)
    }
}

pub fn header() -> String {
    format!("  {:<34} {:>8} {:>10} {:>10} {:>10}", "latency (ms)", "n", "p50", "p99", "max")
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos()
}

/// The resident set size of a process in KiB, from `/proc/PID/status` (Linux only).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of_nanos((1..=100).map(|i| i * 1_000_000).collect());
        assert_eq!((s.n, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Summary::of_nanos(vec![]).n, 0);
    }
}
