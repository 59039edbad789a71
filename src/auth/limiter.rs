//! Failed authentications are limited in fixed windows: sign-ins per account and per
//! client address, bearer tokens per client address. When a limit is exhausted the answer
//! is 429 with Retry-After whether or not the credential would be right, so guessing
//! cannot go on at a lower rate through another dimension.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counters per key, in fixed windows.
struct Windows {
    max_failures: u32,
    window: Duration,
    counters: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Bound on tracked keys, so a flood of distinct names cannot grow memory without end.
const MAX_KEYS: usize = 100_000;

impl Windows {
    fn new(max_failures: u32, window: Duration) -> Self {
        Windows { max_failures, window, counters: Mutex::new(HashMap::new()) }
    }

    /// None if every key may try again now, else how long until the last of them may.
    fn retry_after(&self, keys: &[&str]) -> Option<Duration> {
        let now = Instant::now();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| match counters.get(*k) {
                Some((start, n)) if now.duration_since(*start) < self.window && *n >= self.max_failures => {
                    Some(self.window - now.duration_since(*start))
                }
                _ => None,
            })
            .max()
    }

    fn record_failure(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() >= MAX_KEYS {
            let window = self.window;
            counters.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        for k in keys {
            let entry = counters.entry(k.to_string()).or_insert((now, 0));
            if now.duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }

    fn clear(&self, key: &str) {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Failed sign-ins, per account and per address.
pub struct SignInLimiter(Windows);

impl SignInLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        SignInLimiter(Windows::new(max_failures, window))
    }

    fn keys(account: &str, address: &str) -> [String; 2] {
        [format!("account:{}", account.to_ascii_lowercase()), format!("address:{address}")]
    }

    /// None if another attempt for this account from this address is allowed now, else
    /// how long to wait.
    pub fn retry_after(&self, account: &str, address: &str) -> Option<Duration> {
        let [a, b] = Self::keys(account, address);
        self.0.retry_after(&[&a, &b])
    }

    pub fn record_failure(&self, account: &str, address: &str) {
        let [a, b] = Self::keys(account, address);
        self.0.record_failure(&[&a, &b]);
    }

    pub fn record_success(&self, account: &str) {
        self.0.clear(&format!("account:{}", account.to_ascii_lowercase()));
    }
}

/// Requests with a bearer token that is not valid, per client address.
pub struct TokenLimiter(Windows);

impl TokenLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        TokenLimiter(Windows::new(max_failures, window))
    }

    pub fn retry_after(&self, address: &str) -> Option<Duration> {
        self.0.retry_after(&[address])
    }

    pub fn record_failure(&self, address: &str) {
        self.0.record_failure(&[address]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_per_address() {
        let l = SignInLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.retry_after("th-duty", "10.0.0.1").is_none());
            l.record_failure("th-duty", "10.0.0.1");
        }
        assert!(l.retry_after("th-duty", "10.0.0.2").is_some(), "the account is limited from any address");
        assert!(l.retry_after("my-drugs", "10.0.0.1").is_some(), "the address is limited for any account");
        assert!(l.retry_after("my-drugs", "10.0.0.2").is_none());
        let wait = l.retry_after("th-duty", "10.0.0.1").unwrap_or_default();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn token_failures_limit_the_address_only() {
        let l = TokenLimiter::new(2, Duration::from_secs(60));
        l.record_failure("10.0.0.1");
        assert!(l.retry_after("10.0.0.1").is_none());
        l.record_failure("10.0.0.1");
        assert!(l.retry_after("10.0.0.1").is_some());
        assert!(l.retry_after("10.0.0.2").is_none());
    }
}
