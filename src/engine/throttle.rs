//! At most so many pages a minute to one destination (a phone number, an address, a bot
//! URL) from this node; the rest are deferred, never dropped.
//!
//! Why each deferred page is promised its own later slot: told only "the next slot frees
//! at T", every page of a backlog came back at T, one got the slot and the rest were
//! deferred again — claimed and written once more per page per slot, a churn that grows
//! with the square of the backlog. With promised slots spaced a window/quota apart, each
//! page comes back about when there is room for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

/// The window the quota counts over.
pub const WINDOW: TimeDelta = TimeDelta::seconds(60);

/// Destinations remembered at most before idle ones are forgotten.
const MAX_DESTINATIONS: usize = 10_000;

pub struct Throttle {
    per_window: u32,
    destinations: Mutex<HashMap<String, Sends>>,
}

#[derive(Default)]
struct Sends {
    /// When this node sent to the destination within the window, oldest first.
    times: VecDeque<DateTime<Utc>>,
    /// The latest slot promised to a deferred page.
    promised: Option<DateTime<Utc>>,
}

impl Sends {
    fn forget_before(&mut self, now: DateTime<Utc>) {
        while self.times.front().is_some_and(|t| *t <= now - WINDOW) {
            self.times.pop_front();
        }
    }

    /// When the window is full: the slot promised to this page.
    fn defer(&mut self, per_window: u32) -> Option<DateTime<Utc>> {
        if self.times.len() < per_window as usize {
            return None;
        }
        let frees = *self.times.front()? + WINDOW;
        let spacing = WINDOW / i32::try_from(per_window.max(1)).unwrap_or(i32::MAX);
        let at = match self.promised {
            Some(last) if last >= frees => last + spacing,
            _ => frees,
        };
        self.promised = Some(at);
        Some(at)
    }
}

impl Throttle {
    pub fn new(per_minute: u32) -> Throttle {
        Throttle { per_window: per_minute, destinations: Mutex::default() }
    }

    /// Counts a send to `destination`, or, over the quota, returns when to try this page
    /// again: a slot of its own, after those promised before.
    pub fn take(&self, destination: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut destinations = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        if destinations.len() > MAX_DESTINATIONS {
            destinations.retain(|_, s| s.times.back().is_some_and(|t| *t > now - WINDOW));
        }
        let sends = destinations.entry(destination.to_string()).or_default();
        sends.forget_before(now);
        if let Some(at) = sends.defer(self.per_window) {
            return Some(at);
        }
        sends.times.push_back(now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_quota_each_page_gets_a_slot_of_its_own() {
        let throttle = Throttle::new(2);
        let t0 = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000);
        assert_eq!(throttle.take("+60 1", t0), None, "nothing sent yet");
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(1)), None);
        // Full: the backlog is spread a window/quota (30 s) apart from the first free slot.
        let s = |n| Some(t0 + TimeDelta::seconds(n));
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(2)), s(60));
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(2)), s(90));
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(3)), s(120));
        assert_eq!(throttle.take("+60 9", t0 + TimeDelta::seconds(3)), None, "other destinations are not held up");
        // When the first slot frees, the page promised it goes.
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(60)), None);
        assert_eq!(throttle.take("+60 1", t0 + TimeDelta::seconds(60)), s(150), "still promised after the others");
    }

    #[test]
    fn promises_far_in_the_past_start_over() {
        let throttle = Throttle::new(1);
        let t0 = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000);
        assert_eq!(throttle.take("a", t0), None);
        assert_eq!(throttle.take("a", t0), Some(t0 + WINDOW));
        // An hour later the window and the promises are long gone.
        let later = t0 + TimeDelta::hours(1);
        assert_eq!(throttle.take("a", later), None);
        assert_eq!(throttle.take("a", later), Some(later + WINDOW));
    }
}
