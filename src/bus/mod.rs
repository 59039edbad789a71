//! The bus says one thing: "the event log has grown to seq N". It never carries incident
//! content, so nothing on it needs visibility checks; each node reads the new events from
//! the store and fans them out to its own clients ([`crate::feed`]).
//!
//! Delivery guarantee: a subscriber always ends up seeing the newest head, but may skip
//! intermediate values (heads are coalesced). That is enough, because readers fetch
//! everything after the last seq they handled.
//!
//! Backends: [`memory`] (one node) and [`redis`] (replicas on a shared PostgreSQL store).
//! Replicas on a shared store without Redis still work: their feeds poll the store
//! ([`Bus::polls`]), so events from other replicas arrive within the poll interval.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::BusSettings;

pub trait Bus: Send + Sync + 'static {
    /// Announces that events up to `seq` are committed. Cheap and never blocks.
    fn publish(&self, seq: i64);
    /// A receiver of the newest announced head.
    fn subscribe(&self) -> watch::Receiver<i64>;
    /// False while the bus is degraded (nodes then fall back to polling the store).
    fn healthy(&self) -> bool;
    /// Name for readiness and logs.
    fn name(&self) -> &'static str;
    /// Whether the feed must poll the store because the bus may miss other writers'
    /// commits: while degraded, or always when replicas share a store without Redis.
    fn polls(&self) -> bool {
        !self.healthy()
    }
}

/// The bus for this configuration: Redis when `bus.redis_url` is set; otherwise the
/// in-process bus, polling the store when it is shared with other replicas
/// (`shared_store`: PostgreSQL).
pub fn open(settings: &BusSettings, shared_store: bool, head: i64) -> anyhow::Result<Arc<dyn Bus>> {
    if settings.redis_url.is_empty() {
        if shared_store {
            tracing::warn!("bus.redis_url is empty on a shared store: replicas find each other's events by polling");
            Ok(Arc::new(memory::MemoryBus::polling(head)))
        } else {
            Ok(Arc::new(memory::MemoryBus::new(head)))
        }
    } else {
        Ok(Arc::new(redis::RedisBus::start(&settings.redis_url, &settings.key_prefix, head)?))
    }
}
