//! Failed sign-ins are limited per account and per client address (fixed windows). When
//! either is exhausted, sign-in answers 429 whether or not the password would be right,
//! so guessing cannot continue at a lower rate through one dimension.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct SignInLimiter {
    max_failures: u32,
    window: Duration,
    counters: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Bound on tracked keys, so a flood of distinct names cannot grow memory without end.
const MAX_KEYS: usize = 100_000;

impl SignInLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        SignInLimiter { max_failures, window, counters: Mutex::new(HashMap::new()) }
    }

    fn keys(account: &str, address: &str) -> [String; 2] {
        [format!("account:{}", account.to_ascii_lowercase()), format!("address:{address}")]
    }

    /// True if another attempt for this account from this address is allowed now.
    pub fn allowed(&self, account: &str, address: &str) -> bool {
        let now = Instant::now();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(account, address).iter().all(|k| match counters.get(k) {
            Some((start, n)) if now.duration_since(*start) < self.window => *n < self.max_failures,
            _ => true,
        })
    }

    pub fn record_failure(&self, account: &str, address: &str) {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() >= MAX_KEYS {
            let window = self.window;
            counters.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        for k in Self::keys(account, address) {
            let entry = counters.entry(k).or_insert((now, 0));
            if now.duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }

    pub fn record_success(&self, account: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.remove(&format!("account:{}", account.to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_per_address() {
        let l = SignInLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.allowed("th-duty", "10.0.0.1"));
            l.record_failure("th-duty", "10.0.0.1");
        }
        assert!(!l.allowed("th-duty", "10.0.0.2"), "the account is limited from any address");
        assert!(!l.allowed("my-drugs", "10.0.0.1"), "the address is limited for any account");
        assert!(l.allowed("my-drugs", "10.0.0.2"));
    }
}
