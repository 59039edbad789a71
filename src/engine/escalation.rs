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
use crate::domain::plan::{StepPlan, plan_step};
use crate::store::{FireOutcome, Store, TimerKey};
use crate::telemetry::names;

/// How long a claimed timer stays ours; an engine that dies holding it loses it after this.
/// Short, because it bounds how late a step fires when its engine dies mid-claim; long
/// enough for a batch to be entered (milliseconds). An engine that overruns it loses the
/// claim and its firing transaction finds that out, so a step never fires twice.
pub const LEASE: Duration = Duration::from_secs(5);
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
    /// When the pending-timers gauge was last refreshed.
    pub gauge_at: std::sync::Mutex<Option<std::time::Instant>>,
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
            if n > 0
                && let Err(e) = self.enter_batch(timers).await
            {
                tracing::warn!(error = %e, steps = n, "escalation steps failed; they will be retried after their lease");
            }
            self.update_pending_gauge().await?;
            if n < BATCH as usize {
                return Ok(claimed);
            }
        }
    }

    /// Counting pending timers scans them, so the gauge is refreshed at most once a second.
    async fn update_pending_gauge(&self) -> anyhow::Result<()> {
        let now = std::time::Instant::now();
        {
            let mut last = self.gauge_at.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                return Ok(());
            }
            *last = Some(now);
        }
        metrics::gauge!(names::TIMERS_PENDING).set(self.store.pending_timers().await? as f64);
        Ok(())
    }

    /// Enters a batch of claimed steps, each planned from its due time (so lateness never
    /// accumulates), in one store call.
    async fn enter_batch(&self, timers: Vec<TimerKey>) -> anyhow::Result<()> {
        let mut ids: Vec<uuid::Uuid> = timers.iter().map(|t| t.incident).collect();
        ids.sort();
        ids.dedup();
        let incidents = self.store.incidents(&ids).await?;
        let steps: Vec<(TimerKey, StepPlan)> = timers
            .into_iter()
            .map(|timer| {
                let plan = incidents
                    .get(&timer.incident)
                    .and_then(|(incident, audience)| {
                        plan_step(
                            &self.directory,
                            incident,
                            audience,
                            &timer.party,
                            timer.step,
                            timer.loop_,
                            timer.due_at,
                        )
                    })
                    .unwrap_or_else(|| retire(&timer));
                (timer, plan)
            })
            .collect();
        let now = self.clock.now();
        let outcomes = self.store.fire_steps(&steps, &self.owner, now).await?;
        for ((timer, plan), outcome) in steps.iter().zip(outcomes) {
            if let FireOutcome::Fired { .. } = outcome {
                let lateness = (now - timer.due_at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!(names::TIMER_LATENESS).record(lateness);
                metrics::counter!(names::ESCALATIONS).increment(1);
                tracing::info!(incident = %timer.incident, party = %timer.party, step = timer.step, r#loop = timer.loop_,
                    pages = plan.pages.len(), lateness_ms = lateness * 1000.0, "escalation step entered");
            }
        }
        // The store announced the new head on the bus when it committed.
        Ok(())
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
        let plan = plan.unwrap_or_else(|| retire(timer));
        let outcome = self.store.fire_step(timer, &self.owner, &plan, now).await?;
        if let FireOutcome::Fired { .. } = outcome {
            let lateness = (now - timer.due_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(names::TIMER_LATENESS).record(lateness);
            metrics::counter!(names::ESCALATIONS).increment(1);
            tracing::info!(incident = %timer.incident, party = %timer.party, step = timer.step, r#loop = timer.loop_,
                pages = plan.pages.len(), lateness_ms = lateness * 1000.0, "escalation step entered");
        }
        Ok(outcome)
    }
}

/// No policy any more (the directory changed): a plan that retires the timer without paging.
fn retire(timer: &TimerKey) -> StepPlan {
    StepPlan {
        party: timer.party.clone(),
        step: timer.step,
        loop_: timer.loop_,
        pages: Vec::new(),
        events: Vec::new(),
        next_timer: None,
        state: EscalationState { step: timer.step, loop_: timer.loop_, next_at: None, state: "stopped".into() },
        audience_add: Vec::new(),
    }
}
