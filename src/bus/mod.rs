//! The bus says one thing: "the event log has grown to seq N". It never carries incident
//! content, so nothing on it needs visibility checks; each node reads the new events from
//! the store and fans them out to its own clients ([`crate::feed`]).
//!
//! Delivery guarantee: a subscriber always ends up seeing the newest head, but may skip
//! intermediate values (heads are coalesced). That is enough, because readers fetch
//! everything after the last seq they handled.

pub mod memory;

use tokio::sync::watch;

pub trait Bus: Send + Sync + 'static {
    /// Announces that events up to `seq` are committed. Cheap and never blocks.
    fn publish(&self, seq: i64);
    /// A receiver of the newest announced head.
    fn subscribe(&self) -> watch::Receiver<i64>;
    /// False while the bus is degraded (nodes then fall back to polling the store).
    fn healthy(&self) -> bool;
    /// Name for readiness and logs.
    fn name(&self) -> &'static str;
}
