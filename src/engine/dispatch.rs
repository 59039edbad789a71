//! The outbox dispatcher: sends each sms/email/webhook page at least once.
//!
//! Runs on every node. Pages are outbox rows written in the same transaction as the
//! event that caused them (the raise, an escalation step); this task sleeps until the
//! next one is due or the bus says the log grew (a new step may have written pages), or
//! the clock jumps (tests), claims a batch with a lease in the store, sends the batch
//! concurrently through the [`Gateways`] and records each result in the store with its
//! `notification.*` event.
//!
//! Guarantees and rules:
//! - At least once: a page stays `pending` under its lease while it is sent; if this node
//!   dies mid-send, the lease runs out and a node sends it again. A page in flight at a
//!   crash may go twice, never zero times.
//! - Temporary failures (timeouts, 5xx, 429, SMTP 4xx) retry with capped exponential
//!   backoff and jitter (5 s · 2^n ± 20 %, at most 10 min), or exactly after the
//!   provider's `Retry-After`. They retry for as long as the page matters: an ack or a
//!   close cancels it.
//! - Permanent failures are recorded `failed` with a `notification.failed` in the
//!   incident's timeline; when every page of the party's current step failed, the store
//!   makes the party's escalation timer due now (see [`Store::record_page`]).
//! - A page of a closed incident or of a party that acknowledged is cancelled, not sent.
//! - At most `dispatch.per_destination_per_minute` pages per minute go to one phone
//!   number, address or bot URL from this node; more are deferred to slots of their own,
//!   never dropped ([`super::throttle`]).
//!   (Counted per node: replicas each keep their own window.)
//! - Identical pending sms/email pages are merged when claimed (the store does it).
//! - Due times come from the injected [`Clock`], so tests fast-forward retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::auth::secret;
use crate::bus::Bus;
use crate::channels::{Gateways, Page, SendError};
use crate::clock::Clock;
use crate::config::DispatchSettings;
use crate::directory::{Channel, Directory};
use crate::domain::cursor::Cursors;
use crate::engine::throttle::Throttle;
use crate::store::{AckToken, OutboxPage, PageResult, Store};
use crate::telemetry::names;

/// Backstop: look at the outbox at least this often.
const SWEEP: Duration = Duration::from_secs(30);
/// After a claim found nothing although pages are due (another node holds them).
const CONTENDED: Duration = Duration::from_millis(500);
/// First retry delay, doubled per failed attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The shortest wait honoured for a `Retry-After` (a provider saying 0 is not a busy loop).
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest failure reason kept in the outbox and the timeline.
const MAX_REASON: usize = 300;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    gateways: Gateways,
    /// This node's name in leases.
    owner: String,
    settings: DispatchSettings,
    /// `server.public_url` without a trailing slash, for email ack links.
    public_url: String,
    /// True when SMS replies can acknowledge (the Twilio gateway is configured).
    sms_reply_hint: bool,
    page_ids: Cursors,
    /// Sends per destination (phone, address, URL) within the minute.
    throttle: Throttle,
}

/// What the dispatcher needs besides the hub's shared parts.
pub struct DispatchConfig {
    pub owner: String,
    pub settings: DispatchSettings,
    pub public_url: String,
    pub sms_reply_hint: bool,
    /// Seals outbox ids into the page ids recipients see.
    pub page_ids: Cursors,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        gateways: Gateways,
        config: DispatchConfig,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            directory,
            bus,
            clock,
            gateways,
            owner: config.owner,
            throttle: Throttle::new(config.settings.per_destination_per_minute),
            settings: config.settings,
            public_url: config.public_url.trim_end_matches('/').to_string(),
            sms_reply_hint: config.sms_reply_hint,
            page_ids: config.page_ids,
        })
    }

    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut head = self.bus.subscribe();
            let jumped = self.clock.jumped();
            loop {
                // Created before looking at the outbox, so a jump in between is not missed.
                let notified = jumped.as_ref().map(|n| n.notified());
                let jump_notified = async move {
                    match notified {
                        Some(n) => n.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(jump_notified);
                // Marks the head seen, so only commits after this pass wake us.
                head.borrow_and_update();
                let wait = match self.clone().pass().await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox dispatcher could not reach the store; retrying");
                        Duration::from_secs(1)
                    }
                };
                if wait.is_zero() {
                    if *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = head.changed() => {}
                    _ = &mut jump_notified => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }

    /// Sends one claimed batch, or works out how long to sleep when nothing is due.
    async fn pass(self: Arc<Self>) -> anyhow::Result<Duration> {
        let now = self.clock.now();
        let lease = Duration::from_secs(self.settings.lease_seconds);
        let pages = self.store.claim_pages(now, &self.owner, lease, self.settings.concurrency).await?;
        if pages.is_empty() {
            let (next, pending) = self.store.outbox_backlog().await?;
            metrics::gauge!(names::OUTBOX_PENDING).set(pending as f64);
            return Ok(match next {
                Some(due) if due <= now => CONTENDED,
                Some(due) => (due - now).to_std().unwrap_or(Duration::ZERO).clamp(Duration::from_millis(1), SWEEP),
                None => SWEEP,
            });
        }
        let mut batch = tokio::task::JoinSet::new();
        for page in pages {
            let this = self.clone();
            batch.spawn(async move {
                let result = this.attempt(&page).await;
                this.log(&page, &result);
                (page, result)
            });
        }
        // Results are recorded as they come, each time together with whatever else has
        // finished by then: one unit of work (on PostgreSQL, one turn under the log lock)
        // for the pages of a fast gateway, while a slow one delays nobody's record.
        let mut done = Vec::new();
        while let Some(first) = batch.join_next().await {
            let mut next = Some(first);
            while let Some(finished) = next {
                match finished {
                    Ok(result) => done.push(result),
                    Err(e) => tracing::error!(error = %e, "a page task panicked; the page is retried after its lease"),
                }
                next = batch.try_join_next();
            }
            self.record(&mut done).await;
        }
        Ok(Duration::ZERO)
    }

    /// Records what became of pages (emptying `done`).
    async fn record(&self, done: &mut Vec<(OutboxPage, PageResult)>) {
        if done.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_pages(done, &self.owner, self.clock.now()).await {
            // The store announces what it appended; nothing was, here.
            let ids: Vec<i64> = done.iter().map(|(p, _)| p.id).collect();
            tracing::warn!(pages = ?ids, error = %e, "could not record page results; the pages are tried again after their lease");
        }
        done.clear();
    }

    /// Metrics and a log line for one page's result.
    fn log(&self, page: &OutboxPage, result: &PageResult) {
        let channel = page.channel.clone();
        match result {
            PageResult::Sent { provider_id } => {
                metrics::counter!(names::PAGES_SENT, "channel" => channel).increment(1);
                tracing::info!(incident = %page.incident, page = page.id, channel = %page.channel,
                    focal_point = %page.focal_point, provider_id = provider_id.as_deref().unwrap_or(""), "page sent");
            }
            PageResult::Retry { at, error } => {
                metrics::counter!(names::PAGES_RETRIED, "channel" => channel).increment(1);
                tracing::warn!(incident = %page.incident, page = page.id, channel = %page.channel,
                    attempts = page.attempts + 1, next_attempt_at = %at, error = %error, "page failed; will retry");
            }
            PageResult::Deferred { at } => {
                metrics::counter!(names::PAGES_THROTTLED, "channel" => channel).increment(1);
                tracing::info!(incident = %page.incident, page = page.id, channel = %page.channel,
                    next_attempt_at = %at, "destination throttled; page deferred");
            }
            PageResult::Failed { reason } => {
                metrics::counter!(names::PAGES_FAILED, "channel" => channel).increment(1);
                tracing::warn!(incident = %page.incident, page = page.id, channel = %page.channel,
                    reason = %reason, "page failed permanently");
            }
            PageResult::Cancelled { reason } => {
                tracing::info!(incident = %page.incident, page = page.id, channel = %page.channel,
                    reason = %reason, "page cancelled");
            }
        }
    }

    /// Everything short of recording: checks, throttling, the ack link, the send.
    async fn attempt(&self, row: &OutboxPage) -> PageResult {
        let now = self.clock.now();
        let retry_soon = |what: &str, e: anyhow::Error| PageResult::Retry {
            at: now + chrono::TimeDelta::seconds(5),
            error: redact(&format!("{what}: {e}")),
        };
        let incident = match self.store.incident(row.incident).await {
            Ok(Some((incident, _))) => incident,
            Ok(None) => return PageResult::Cancelled { reason: "incident not found".into() },
            Err(e) => return retry_soon("store", e),
        };
        if !incident.state.is_active() {
            return PageResult::Cancelled { reason: format!("incident {}", incident.state) };
        }
        if incident.party_state(&row.party).is_some_and(|p| p.acknowledged) {
            return PageResult::Cancelled { reason: "party acknowledged".into() };
        }
        let Some(channel) = Channel::parse(&row.channel) else {
            return PageResult::Failed { reason: format!("unknown channel {:?}", row.channel) };
        };
        let Some(gateway) = self.gateways.for_channel(channel) else {
            return PageResult::Cancelled { reason: "dashboard pages are delivered by the live feed".into() };
        };
        let Some(recipient) = self.directory.focal_point(&row.focal_point).cloned() else {
            return PageResult::Failed {
                reason: format!("focal point {} is no longer in the directory", row.focal_point),
            };
        };
        let destination = match channel {
            Channel::Sms => recipient.phone.clone(),
            Channel::Email => recipient.email.clone(),
            Channel::Webhook => recipient.webhook_url.clone(),
            Channel::Dashboard => None,
        };
        if let Some(at) = destination.and_then(|d| self.throttle.take(&d, now)) {
            return PageResult::Deferred { at };
        }
        let ack_url = if channel == Channel::Email {
            let token = secret::generate();
            let record = AckToken {
                incident: row.incident,
                focal_point: row.focal_point.clone(),
                party: row.party.clone(),
                used: false,
            };
            if let Err(e) = self.store.insert_ack_token(&secret::hash(&token), &record, row.id, now).await {
                return retry_soon("store", e);
            }
            Some(format!("{}/ack/{token}", self.public_url))
        } else {
            None
        };
        let page = Page {
            outbox_id: row.id,
            page_id: self.page_ids.seal(row.id),
            incident,
            recipient,
            party: row.party.clone(),
            channel,
            step: row.step,
            loop_: row.loop_,
            ack_url,
            sms_reply_hint: self.sms_reply_hint,
        };
        let started = Instant::now();
        let sent = gateway.send(&page).await;
        let outcome = match &sent {
            Ok(_) => "sent",
            Err(e) if e.is_temporary() => "retry",
            Err(_) => "failed",
        };
        metrics::histogram!(names::SEND_LATENCY, "channel" => row.channel.clone(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let now = self.clock.now();
        match sent {
            Ok(sent) => PageResult::Sent { provider_id: sent.provider_id },
            Err(SendError::Temporary { reason, retry_after }) => {
                let delay = match retry_after {
                    Some(d) => d.max(MIN_RETRY_AFTER),
                    None => backoff(row.attempts),
                };
                let delay = chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::seconds(600));
                PageResult::Retry { at: now + delay, error: redact(&reason) }
            }
            Err(SendError::Permanent { reason }) => PageResult::Failed { reason: redact(&reason) },
        }
    }
}

/// 5 s · 2^attempts, at most 10 min, with ±20 % jitter so retries after an outage spread.
pub fn backoff(attempts: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempts.min(16)).min(MAX_BACKOFF);
    exp.mul_f64(rand::random_range(0.8..1.2))
}

/// A failure reason fit for the outbox and the incident timeline: no phone numbers or
/// email addresses (providers echo them in errors), bounded length.
pub fn redact(reason: &str) -> String {
    let words: Vec<String> = reason
        .split_whitespace()
        .map(|w| {
            if w.contains('@') {
                "[address]".to_string()
            } else if w.chars().filter(char::is_ascii_digit).count() >= 7 {
                "[number]".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let joined = words.join(" ");
    if joined.chars().count() > MAX_REASON {
        joined.chars().take(MAX_REASON).collect::<String>() + "…"
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for (attempts, nominal) in [(0u32, 5.0), (1, 10.0), (3, 40.0), (7, 600.0), (40, 600.0)] {
            let d = backoff(attempts).as_secs_f64();
            assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9, "{attempts}: {d}");
        }
    }

    #[test]
    fn redacts_addresses_and_numbers() {
        let r = redact("twilio answered HTTP 400: {\"message\":\"The 'To' number +60355501001 is invalid\"} <a@b.org>");
        assert!(!r.contains("60355501001") && !r.contains("a@b.org"), "{r}");
        assert!(r.contains("HTTP 400"), "{r}");
        assert_eq!(redact(&"x".repeat(1000)).chars().count(), MAX_REASON + 1);
    }
}
