//! Time as the escalation engine sees it. Production uses the system clock; scenario
//! tests inject a [`ManualClock`] and fast-forward it, so an hour of escalation runs in
//! milliseconds without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::Notify;

use crate::domain::event::from_millis;

pub trait Clock: Send + Sync + 'static {
    /// Now, truncated to milliseconds (the store's unit).
    fn now(&self) -> DateTime<Utc>;
    /// Notified whenever the clock jumps (never for the system clock), so sleepers
    /// re-check their deadline.
    fn jumped(&self) -> Option<Arc<Notify>> {
        None
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        crate::domain::event::now_millis()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    jumped: Arc<Notify>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: Mutex::new(from_millis(start.timestamp_millis())),
            jumped: Arc::new(Notify::new()),
        })
    }

    pub fn advance(&self, by: std::time::Duration) {
        {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *now += Duration::milliseconds(by.as_millis() as i64);
        }
        self.jumped.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn jumped(&self) -> Option<Arc<Notify>> {
        Some(self.jumped.clone())
    }
}
