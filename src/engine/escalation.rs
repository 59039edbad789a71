//! The escalation engine: fires each due step once, cluster-wide, on time.
//!
//! Timers live in the store; this task only caches "when is the next one due". It sleeps
//! until that deadline, or until the bus says the log grew (a raise may have added an
//! earlier timer, an ack may have removed one), or the clock jumps (tests). A slow sweep
//! is only a backstop. Claiming is an atomic lease in the store, and firing re-checks the
//! lease in the same transaction that writes the step, so two engines on one store never
//! fire a step twice, and a step whose engine died is taken over after the lease.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::bus::Bus;
use crate::clock::Clock;
use crate::directory::Directory;
use crate::domain::incident::EscalationState;
use crate::engine::plan::{StepPlan, plan_step};
use crate::store::{FireOutcome, Store, TimerKey};
use crate::telemetry::names;

/// How long a claimed timer stays ours; an engine that dies holding it loses it after this.
pub const LEASE: Duration = Duration::from_secs(30);
/// Backstop: re-read the next deadline at least this often.
const SWEEP: Duration = Duration::from_secs(30);
/// After a claim found nothing (another engine holds the due timers), wait this long.
const CONTENDED: Duration = Duration::from_millis(200);
const BATCH: u32 = 200;

pub struct EscalationEngine {
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    pub bus: Arc<dyn Bus>,
    pub clock: Arc<dyn Clock>,
    /// This engine's name in leases.
    pub owner: String,
}

impl EscalationEngine {
    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut head = self.bus.subscribe();
            let jumped = self.clock.jumped();
            loop {
                // Created before reading the deadline: `notify_waiters` reaches every
                // `Notified` created before it, so a jump in between is not missed.
                let notified = jumped.as_ref().map(|n| n.notified());
                let jump_notified = async move {
                    match notified {
                        Some(n) => n.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(jump_notified);
                let wait = match self.step().await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "escalation engine could not reach the store; retrying");
                        Duration::from_secs(1)
                    }
                };
                if wait.is_zero() {
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

    /// Fires what is due and returns how long to sleep before looking again.
    async fn step(&self) -> anyhow::Result<Duration> {
        let now = self.clock.now();
        let next = self.store.next_timer_due().await?;
        match next {
            Some(due) if due <= now => {
                let fired = self.fire_due().await?;
                Ok(if fired == 0 { CONTENDED } else { Duration::ZERO })
            }
            Some(due) => Ok((due - now).to_std().unwrap_or(Duration::ZERO).clamp(Duration::from_millis(1), SWEEP)),
            None => Ok(SWEEP),
        }
    }

    /// Claims and fires every timer due now; returns how many were claimed.
    pub async fn fire_due(&self) -> anyhow::Result<usize> {
        let mut claimed = 0;
        loop {
            let now = self.clock.now();
            let timers = self.store.claim_due_timers(now, &self.owner, LEASE, BATCH).await?;
            claimed += timers.len();
            let n = timers.len();
            for timer in timers {
                let scheduled = timer.due_at;
                if let Err(e) = self.enter(&timer, scheduled).await {
                    tracing::warn!(incident = %timer.incident, party = %timer.party, error = %e, "escalation step failed; it will be retried after its lease");
                }
            }
            metrics::gauge!(names::TIMERS_PENDING).set(self.store.pending_timers().await? as f64);
            if n < BATCH as usize {
                return Ok(claimed);
            }
        }
    }

    /// Enters the step of a claimed timer, planned from `scheduled` (the timer's due time,
    /// so lateness never accumulates; now for a manual escalation).
    pub async fn enter(&self, timer: &TimerKey, scheduled: DateTime<Utc>) -> anyhow::Result<FireOutcome> {
        let now = self.clock.now();
        let plan = match self.store.incident(timer.incident).await? {
            Some((incident, audience)) => {
                plan_step(&self.directory, &incident, &audience, &timer.party, timer.step, timer.loop_, scheduled)
            }
            None => None,
        };
        // No policy any more (the directory changed): retire the timer without paging.
        let plan = plan.unwrap_or_else(|| StepPlan {
            party: timer.party.clone(),
            step: timer.step,
            loop_: timer.loop_,
            pages: Vec::new(),
            events: Vec::new(),
            next_timer: None,
            state: EscalationState { step: timer.step, loop_: timer.loop_, next_at: None, state: "stopped".into() },
            audience_add: Vec::new(),
        });
        let outcome = self.store.fire_step(timer, &self.owner, &plan, now).await?;
        if let FireOutcome::Fired { seq } = outcome {
            let lateness = (now - timer.due_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(names::TIMER_LATENESS).record(lateness);
            metrics::counter!(names::ESCALATIONS).increment(1);
            tracing::info!(incident = %timer.incident, party = %timer.party, step = timer.step, r#loop = timer.loop_,
                pages = plan.pages.len(), lateness_ms = lateness * 1000.0, "escalation step entered");
            self.bus.publish(seq);
        }
        Ok(outcome)
    }
}
