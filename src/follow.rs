//! Following: drain, wait for new rows, drain again, until a stop.
//!
//! A follow wraps the pass of [`crate::relay`] unchanged: each wake-up runs
//! one ordinary pass (select → claim → send → mark → delete, batch by
//! batch, until a short page), so every guarantee of a pass holds for each
//! of them, and two followers (or a follower and a scheduled drain) keep
//! apart exactly as two passes do: `SKIP LOCKED` and the claim ledger.
//!
//! Between passes [`Waker`] waits for a `NOTIFY` or the next poll. The
//! follow ends at the first of: its end time (`FOLLOW_SECONDS`, within a
//! Lambda invocation's deadline reserve), `max_rows` rows relayed, a
//! shutdown request (SIGTERM, SIGINT), or a failed pass. It returns one
//! summary for the whole follow, the counts of all its passes.

use std::sync::Arc;
use std::time::Instant;

use crate::app::App;
use crate::error::RelayError;
use crate::event::PassRequest;
use crate::stop::{Shutdown, Stop};
use crate::summary::Summary;
use crate::wake::{Waker, Woken};

/// How long and how much to follow.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// No pass starts a batch after this (None: until shutdown).
    pub until: Option<Instant>,
    /// The Lambda invocation's hard deadline: no send starts that could
    /// outlast it (None outside Lambda).
    pub deadline: Option<Instant>,
    /// Stop once this many rows were relayed (deleted or quarantined).
    pub max_rows: Option<u64>,
    /// A graceful stop: the batch in flight finishes, no new one starts.
    pub shutdown: Option<Arc<Shutdown>>,
}

/// Follows the outbox as `plan` says. `on_batch` sees the follow's running
/// totals after every batch. On a failure the error carries the counts of
/// every pass before it.
pub async fn follow(
    app: &App,
    plan: &Plan,
    on_batch: &(dyn Fn(&Summary) + Sync),
) -> Result<Summary, RelayError> {
    let started = Instant::now();
    let stop = Stop {
        at: plan.until,
        shutdown: plan.shutdown.clone(),
    };
    let mut total = Summary::default();
    let mut waker: Option<Waker> = None;
    let outcome = loop {
        let relayed = total.deleted + total.quarantined;
        let left = plan.max_rows.map(|m| m.saturating_sub(relayed));
        let req = PassRequest {
            max_rows: left,
            dry_run: false,
        };
        let before = total.clone();
        let running = |s: &Summary| {
            let mut t = before.clone();
            t.add(s);
            t.elapsed_ms = started.elapsed().as_millis() as u64;
            on_batch(&t);
        };
        match app.run_until(&req, &stop, plan.deadline, &running).await {
            Ok(s) => {
                total.add(&s);
                total.remaining = s.remaining;
            }
            Err(e) => break Err(e),
        }
        let relayed = total.deleted + total.quarantined;
        if plan.max_rows.is_some_and(|m| relayed >= m) || stop.reached() {
            break Ok(());
        }
        // Started after the first pass, which connected the relay.
        let waker = match &mut waker {
            Some(w) => w,
            None => match start_waker(app).await {
                Ok(w) => waker.insert(w),
                Err(e) => break Err(e),
            },
        };
        match waker.wait(&stop).await {
            Ok(Woken::Rows) => continue,
            Ok(Woken::Stopped) => break Ok(()),
            Err(error) => {
                break Err(RelayError::Pass {
                    done: Summary::default(),
                    error: error.context("probing the outbox for new rows"),
                });
            }
        }
    };
    total.elapsed_ms = started.elapsed().as_millis() as u64;
    with_earlier_passes(total, outcome)
}

/// The waker of a follow, on the relay's connected source.
async fn start_waker(app: &App) -> Result<Waker, RelayError> {
    let relay = app.relay().await?;
    let cfg = app.config();
    tracing::info!(
        channel = cfg.notify_channel.as_ref().map(|c| c.as_str()),
        poll_ms = cfg.poll_interval.as_millis() as u64,
        "following: waiting for new rows"
    );
    Ok(Waker::start(
        relay.source().clone(),
        cfg.notify_channel.as_ref(),
        cfg.poll_interval,
    ))
}

/// The follow's result: on a failure, the error carries what every pass
/// before it did.
fn with_earlier_passes(
    mut total: Summary,
    outcome: Result<(), RelayError>,
) -> Result<Summary, RelayError> {
    match outcome {
        Ok(()) => Ok(total),
        Err(RelayError::Pass { done, error }) => {
            total.add(&done);
            total.remaining = true;
            Err(RelayError::Pass { done: total, error })
        }
        // Setup failed after earlier passes (a reconnect): what they did
        // is still reported.
        Err(RelayError::Setup(error)) if total.batches > 0 => {
            total.remaining = true;
            Err(RelayError::Pass { done: total, error })
        }
        Err(e) => Err(e),
    }
}
