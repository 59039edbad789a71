//! The events the embedded store committed last, kept in memory for the live feed.
//!
//! Why: after each commit the feed asked a reader thread for the new events, a round trip
//! of about 0.4 ms (two thread hand-overs and the query) in a raise → delivery of about
//! 1.7 ms. The writer has just written those events and knows their audiences, so it keeps
//! them here after the commit and before announcing it; the feed takes them from memory.
//! The store stays the truth: anything not contiguous in memory (a restart, a gap, a
//! client far behind) is read from the store as before.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::FeedEvent;

/// Events kept, at most: a few commits' worth under load.
const KEEP: usize = 1024;

#[derive(Default)]
pub struct RecentEvents(Mutex<VecDeque<FeedEvent>>);

impl RecentEvents {
    /// Adds the events of one commit, in seq order. Events that do not follow on from
    /// those kept replace them.
    pub fn push(&self, committed: Vec<FeedEvent>) {
        let Some(first) = committed.first().map(|e| e.event.seq) else { return };
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.back().is_some_and(|last| last.event.seq + 1 != first) {
            kept.clear();
        }
        kept.extend(committed);
        while kept.len() > KEEP {
            kept.pop_front();
        }
    }

    /// Up to `limit` events after `after`, if memory holds every one of them from there:
    /// None sends the caller to the store (including when nothing newer is kept, since a
    /// commit may not have reached memory yet).
    pub fn after(&self, after: i64, limit: u32) -> Option<Vec<FeedEvent>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (first, last) = (kept.front()?.event.seq, kept.back()?.event.seq);
        if after < first - 1 || after >= last {
            return None;
        }
        let start = usize::try_from(after + 1 - first).ok()?;
        Some(kept.iter().skip(start).take(limit as usize).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::event::{Event, EventType, now_millis};

    fn event(seq: i64) -> FeedEvent {
        FeedEvent {
            event: Event {
                seq,
                at: now_millis(),
                kind: EventType::Note,
                incident: uuid::Uuid::nil(),
                party: None,
                data: serde_json::Value::Null,
            },
            audience: Arc::default(),
            only_for: None,
        }
    }

    fn seqs(events: Option<Vec<FeedEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.event.seq).collect())
    }

    #[test]
    fn serves_only_what_it_holds_contiguously() {
        let recent = RecentEvents::default();
        assert_eq!(seqs(recent.after(0, 10)), None, "nothing kept: the store");
        recent.push(vec![event(5), event(6)]);
        recent.push(vec![event(7)]);
        assert_eq!(seqs(recent.after(4, 10)), Some(vec![5, 6, 7]));
        assert_eq!(seqs(recent.after(5, 1)), Some(vec![6]));
        assert_eq!(seqs(recent.after(3, 10)), None, "seq 4 is not in memory");
        assert_eq!(seqs(recent.after(7, 10)), None, "newer ones may be committed, not kept yet");
        recent.push(vec![event(9)]);
        assert_eq!(seqs(recent.after(8, 10)), Some(vec![9]), "a gap starts over");
        assert_eq!(seqs(recent.after(6, 10)), None);
    }

    #[test]
    fn keeps_a_bounded_window() {
        let recent = RecentEvents::default();
        recent.push((1..=(KEEP as i64 + 10)).map(event).collect());
        assert_eq!(seqs(recent.after(0, 1)), None);
        assert_eq!(seqs(recent.after(10, 1)), Some(vec![11]));
    }
}
