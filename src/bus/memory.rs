//! The in-process bus of a single node: a `watch` channel holding the newest head. On a
//! store shared by several replicas without Redis it is built with [`MemoryBus::polling`]:
//! it cannot hear the other replicas, so the feed polls the store.

use tokio::sync::watch;

use super::Bus;

pub struct MemoryBus {
    head: watch::Sender<i64>,
    polls: bool,
}

impl MemoryBus {
    pub fn new(head: i64) -> Self {
        MemoryBus { head: watch::Sender::new(head), polls: false }
    }

    /// For a replica on a shared store without Redis: the feed polls the store.
    pub fn polling(head: i64) -> Self {
        MemoryBus { head: watch::Sender::new(head), polls: true }
    }
}

impl Bus for MemoryBus {
    fn publish(&self, seq: i64) {
        // Heads only move forward: a late publish of an older seq is ignored.
        self.head.send_if_modified(|current| {
            if seq > *current {
                *current = seq;
                true
            } else {
                false
            }
        });
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    fn healthy(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn polls(&self) -> bool {
        self.polls
    }
}
