//! Group commit, for both backends: units of work queued by concurrent callers run one
//! after another in one transaction, each inside its own savepoint, and every caller is
//! answered after the one commit (or told it failed). A unit that fails is rolled back to
//! its savepoint alone; the others still commit.
//!
//! SQLite drives a batch from its writer thread, PostgreSQL from one task per replica
//! for the transactions that append (they take the log lock, so they are serial anyway:
//! one lock and one WAL flush per batch instead of per raise).

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Conn, HookCell, Job};
use crate::store::Result;

/// Units per transaction, at most.
pub const MAX_BATCH: usize = 512;

/// A queued write: runs inside the batch's transaction, answers after its commit.
pub trait Pending: Send {
    /// Runs the unit of work; true when it succeeded (its savepoint is kept).
    fn run<'a>(&'a mut self, conn: &'a mut dyn Conn) -> BoxFuture<'a, bool>;
    /// Sends the answer, now that the batch committed (or failed to).
    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>);
}

struct Item<R> {
    job: Option<Job<R>>,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

/// Wraps `job` for a batch; the receiver gets its answer.
pub fn pending<R: Send + 'static>(job: Job<R>) -> (Box<dyn Pending>, oneshot::Receiver<Result<R>>) {
    let (reply, answer) = oneshot::channel();
    (Box::new(Item { job: Some(job), outcome: None, reply }), answer)
}

/// Waits for the answer of a unit handed to a batch.
pub async fn answer<R>(answer: oneshot::Receiver<Result<R>>) -> Result<R> {
    answer.await.map_err(|_| anyhow::anyhow!("the store's writer dropped a unit of work"))?
}

impl<R: Send + 'static> Pending for Item<R> {
    fn run<'a>(&'a mut self, conn: &'a mut dyn Conn) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(job) = self.job.take() else { return false };
            let mut outcome = job(conn).await;
            // What the unit deferred belongs to it: sent (and failing it) before it ends.
            if outcome.is_ok()
                && let Err(e) = conn.flush().await
            {
                outcome = Err(e);
            }
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>) {
        let answer = match (commit, self.outcome) {
            (_, Some(Err(own))) => Err(own),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(e), Some(Ok(_))) => Err(anyhow::anyhow!("the transaction did not commit: {e}")),
            (Ok(()), None) | (Err(_), None) => Err(anyhow::anyhow!("the unit of work did not run")),
        };
        let _ = self.reply.send(answer);
    }
}

/// `first` and whatever else is already queued, up to [`MAX_BATCH`], without waiting.
pub fn gather(first: Box<dyn Pending>, queue: &mut mpsc::Receiver<Box<dyn Pending>>) -> Vec<Box<dyn Pending>> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    batch
}

/// After a batch's commit (or its failure): announces the head it appended, then answers
/// every caller.
pub fn settle(batch: Vec<Box<dyn Pending>>, commit: Result<Option<i64>>, hook: &HookCell, backend: &str) {
    if let Ok(Some(head)) = &commit {
        hook.announce(*head);
    }
    let commit = commit.map(|_| ()).map_err(|e| format!("{e:#}"));
    if let Err(e) = &commit {
        tracing::error!(error = %e, units = batch.len(), "{backend} write transaction failed");
    }
    for item in batch {
        item.finish(&commit);
    }
}
