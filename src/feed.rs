//! The node's live feed: one task follows the event log and broadcasts each new event,
//! serialised once, to every WebSocket client of this node. Each client filters with the
//! visibility function and keeps its own position (see `api::stream`).
//!
//! Why a broadcast ring: it is the bounded per-client buffer of promise 4. A client that
//! falls more than `capacity` events behind gets `Lagged` and is closed with a reason;
//! it never silently misses an event, and resumes from its last cursor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::bus::Bus;
use crate::domain::cursor::Cursors;
use crate::domain::visibility::Audience;
use crate::store::Store;

/// One event as the feed hands it to clients.
#[derive(Debug)]
pub struct FeedItem {
    pub seq: i64,
    pub incident: uuid::Uuid,
    /// The event as clients see it ([`crate::domain::event::Shown`]), serialised once for
    /// all of them.
    pub json: axum::extract::ws::Utf8Bytes,
    pub audience: Arc<Audience>,
    pub only_for: Option<String>,
}

pub struct Feed {
    tx: broadcast::Sender<Arc<FeedItem>>,
    /// The highest seq broadcast so far.
    delivered: watch::Receiver<i64>,
}

/// Backstop poll interval: the bus wakes the feed; this only covers a lost wake-up.
const BACKSTOP: Duration = Duration::from_secs(2);
/// Poll interval while the bus cannot be trusted to wake us ([`Bus::polls`]: Redis down,
/// or replicas sharing a store without Redis).
const POLL: Duration = Duration::from_millis(250);
const BATCH: u32 = 1000;

impl Feed {
    /// Starts following the log from its current head.
    pub async fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        capacity: usize,
        cursors: Cursors,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Feed>> {
        let (tx, _) = broadcast::channel(capacity);
        let head = store.head_seq().await?;
        let (delivered_tx, delivered) = watch::channel(head);
        let feed = Arc::new(Feed { tx: tx.clone(), delivered });
        let mut wake = bus.subscribe();
        tokio::spawn(async move {
            let mut last = head;
            loop {
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(if bus.polls() { POLL } else { BACKSTOP }) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
                loop {
                    let batch = match store.events_after(last, BATCH).await {
                        Ok(batch) => batch,
                        Err(e) => {
                            tracing::warn!(error = %e, "feed could not read the event log; retrying");
                            break;
                        }
                    };
                    let full = batch.len() as u32 == BATCH;
                    for f in batch {
                        let json = match serde_json::to_string(&f.event.shown(&cursors)) {
                            Ok(json) => axum::extract::ws::Utf8Bytes::from(json),
                            Err(e) => {
                                tracing::error!(seq = f.event.seq, error = %e, "event does not serialise");
                                continue;
                            }
                        };
                        last = f.event.seq;
                        // No receivers is fine: nobody is connected to this node.
                        let _ = tx.send(Arc::new(FeedItem {
                            seq: f.event.seq,
                            incident: f.event.incident,
                            json,
                            audience: f.audience,
                            only_for: f.only_for,
                        }));
                    }
                    delivered_tx.send_replace(last);
                    if !full {
                        break;
                    }
                }
            }
        });
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.tx.subscribe()
    }

    /// The highest seq this node's feed has broadcast.
    pub fn delivered(&self) -> i64 {
        *self.delivered.borrow()
    }
}
