//! The Redis bus between replicas: after a commit a replica publishes the new head seq
//! (a number, never incident content) on `{prefix}:events`; every replica subscribes and
//! wakes its feed and escalation engine, which read the new events from the shared store.
//!
//! Two tasks, both owned by the bus and stopped when it is dropped:
//!
//! - the publisher takes the newest local head from a `watch` (publishes coalesce: a
//!   later head covers the earlier ones) and PUBLISHes it on its own connection,
//!   reconnecting on the next publish after an error. `publish` itself never blocks. It
//!   also republishes the head every [`HEARTBEAT_EVERY`], so every subscription hears
//!   something regularly;
//! - the subscriber keeps a pub/sub connection; when it has heard nothing (not even its
//!   own node's heartbeat) for [`SILENCE`], or on any error, it marks the bus unhealthy,
//!   waits with exponential backoff (100 ms up to 2 s) and reconnects and resubscribes.
//!
//! Why heartbeats and not PING on the subscription: with the redis crate, a PING on a
//! subscribed connection held up the messages behind it by ~100 ms each time (measured:
//! every cross-replica delivery in the 1 % tail was one of those), and the heartbeat
//! checks the whole path (publish, server, subscription) rather than one socket.
//!
//! While unhealthy, `healthy()` is false: `/readyz` reports the bus degraded and the feed
//! polls the store ([`crate::feed`]), so clients still get every event, a little later.
//! On each (re)subscription the local head is re-announced, so the feed catches up on
//! whatever was published while the connection was down. Degraded periods and seconds
//! are counted in [`names::BUS_DEGRADED`] and [`names::BUS_DEGRADED_SECONDS`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::Bus;
use crate::telemetry::names;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often each node republishes its head.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// How long a subscription may hear nothing before it is taken for dead.
const SILENCE: Duration = Duration::from_secs(10);
/// How long a connect, subscribe or publish may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisBus {
    /// The newest head known to this node: local commits and other replicas' publishes.
    head: watch::Sender<i64>,
    /// The newest local head still to be published.
    outgoing: watch::Sender<i64>,
    healthy: Arc<Health>,
    /// Dropped with the bus: its tasks see the channel close and end.
    _stop: watch::Sender<()>,
}

/// Whether the subscription is up, and the bookkeeping of degraded periods.
struct Health {
    up: AtomicBool,
    /// Since when the time degraded is not yet counted (Some during a degraded period),
    /// and the fraction of a second carried over (the counter counts whole seconds).
    degraded: Mutex<(Option<Instant>, Duration)>,
}

impl Health {
    /// Starting up is not an outage: a degraded period begins when a subscription is
    /// lost or a connection attempt fails, and ends when a subscription succeeds.
    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        metrics::gauge!(names::BUS_HEALTHY).set(if up { 1.0 } else { 0.0 });
        let in_period = self.lock().0.is_some();
        if !up && !in_period {
            metrics::counter!(names::BUS_DEGRADED).increment(1);
            tracing::warn!("redis bus degraded: feeds poll the store until it is back");
            self.lock().0 = Some(Instant::now());
        } else if up && in_period {
            self.account();
            self.lock().0 = None;
            tracing::info!("redis bus recovered");
        } else if up {
            tracing::info!("redis bus connected");
        }
    }

    /// Adds the time degraded since the last call to the seconds counter.
    fn account(&self) {
        let mut g = self.lock();
        if let Some(since) = g.0 {
            let total = g.1 + since.elapsed();
            let whole = total.as_secs();
            metrics::counter!(names::BUS_DEGRADED_SECONDS).increment(whole);
            *g = (Some(Instant::now()), total - Duration::from_secs(whole));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, Duration)> {
        // The data is two plain values: a panic elsewhere cannot leave it inconsistent.
        self.degraded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RedisBus {
    /// Connects to `url` and starts the publisher and subscriber tasks. Fails only on a
    /// malformed URL: an unreachable server starts the bus degraded, and it connects
    /// when the server appears.
    pub fn start(url: &str, prefix: &str, head: i64) -> anyhow::Result<RedisBus> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("bus.redis_url: {e}"))?;
        let channel = format!("{prefix}:events");
        let head_tx = watch::Sender::new(head);
        let outgoing = watch::Sender::new(head);
        // Healthy once subscribed.
        let healthy = Arc::new(Health { up: AtomicBool::new(false), degraded: Mutex::new((None, Duration::ZERO)) });
        metrics::gauge!(names::BUS_HEALTHY).set(0.0);
        let (stop, stop_rx) = watch::channel(());
        tokio::spawn(publisher(client.clone(), channel.clone(), outgoing.subscribe(), stop_rx.clone()));
        tokio::spawn(subscriber(client, channel, head_tx.clone(), healthy.clone(), stop_rx));
        Ok(RedisBus { head: head_tx, outgoing, healthy, _stop: stop })
    }
}

/// Moves `head` forward to `seq`; an older seq is ignored.
fn advance(head: &watch::Sender<i64>, seq: i64) {
    head.send_if_modified(|current| {
        if seq > *current {
            *current = seq;
            true
        } else {
            false
        }
    });
}

impl Bus for RedisBus {
    fn publish(&self, seq: i64) {
        // This node's own feed and engine wake at once; other replicas via Redis.
        advance(&self.head, seq);
        advance(&self.outgoing, seq);
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    fn healthy(&self) -> bool {
        self.healthy.up.load(Ordering::SeqCst)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

async fn publisher(
    client: redis::Client,
    channel: String,
    mut outgoing: watch::Receiver<i64>,
    mut stop: watch::Receiver<()>,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = outgoing.changed() => if changed.is_err() { return },
            _ = heartbeat.tick() => {}
            _ = stop.changed() => return,
        }
        let seq = *outgoing.borrow_and_update();
        if conn.is_none() {
            conn = match tokio::time::timeout(IO_TIMEOUT, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => Some(c),
                // Other replicas find the events by polling meanwhile; the next publish
                // tries again.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis publish: cannot connect");
                    None
                }
                Err(_) => None,
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&channel).arg(seq);
        match tokio::time::timeout(IO_TIMEOUT, publish.query_async::<i64>(c)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, seq, "redis publish failed");
                conn = None;
            }
            Err(_) => conn = None,
        }
    }
}

async fn subscriber(
    client: redis::Client,
    channel: String,
    head: watch::Sender<i64>,
    health: Arc<Health>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscribe_once(&client, &channel, &head, &health, &mut stop).await {
            Ended::Stopped => return,
            Ended::Failed { was_up, error } => {
                if was_up {
                    backoff = Duration::from_millis(100);
                }
                tracing::debug!(error = %error, "redis subscription lost; reconnecting");
            }
        }
        health.set(false);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        health.account();
    }
}

enum Ended {
    Stopped,
    Failed { was_up: bool, error: String },
}

async fn subscribe_once(
    client: &redis::Client,
    channel: &str,
    head: &watch::Sender<i64>,
    health: &Health,
    stop: &mut watch::Receiver<()>,
) -> Ended {
    let failed = |error: String| Ended::Failed { was_up: false, error };
    let pubsub = match tokio::time::timeout(IO_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed("connect timed out".into()),
    };
    let (mut sink, mut messages) = pubsub.split();
    match tokio::time::timeout(IO_TIMEOUT, sink.subscribe(channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed("subscribe timed out".into()),
    }
    health.set(true);
    // Whatever was published while we were away: wake the feed to read from the store.
    head.send_modify(|_| {});
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Ended::Failed { was_up: true, error: "connection closed".into() };
                };
                heard = tokio::time::Instant::now();
                match msg.get_payload::<String>().ok().and_then(|p| p.parse::<i64>().ok()) {
                    Some(seq) => advance(head, seq),
                    None => tracing::warn!(channel, "ignoring a malformed message on the bus"),
                }
            }
            _ = tokio::time::sleep_until(heard + SILENCE) => {
                return Ended::Failed { was_up: true, error: format!("nothing heard for {SILENCE:?}") };
            }
            _ = stop.changed() => return Ended::Stopped,
        }
    }
}
