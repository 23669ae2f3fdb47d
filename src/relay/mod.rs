//! One pass of the relay: batches of select → claim → send → mark → delete.
//!
//! The order of the steps is the guarantee (docs/design.md, "the relay
//! protocol"): a row is deleted only once the ledger says SENT, under our
//! ownership or with the same payload hash; a message is sent only under a
//! claim whose lease outlives the send. A crash between any two steps leaves
//! a state the next pass resolves (the crash table in docs/design.md), so the
//! code below never needs to clean up after itself.
//!
//! On a standard queue on PostgreSQL two batches overlap: the next one
//! selects (after the current one's last key, so never the same rows) and
//! claims while the current one sends, marks and deletes. Each batch keeps
//! the order above in its own transaction; the overlap only keeps DynamoDB
//! busy.
//!
//! - this module: [`Relay`] and its pass;
//! - `pass`: a pass's loop over batches, two in flight on a standard queue;
//! - `batch`: one batch, an arrow of the diagram per function (select,
//!   classify, order check, claim, then `send` and `mark`, then finish:
//!   quarantine, delete, commit);
//! - `fifo`: the send order on FIFO queues;
//! - `window`: the time a batch's claims leave for sends and marks;
//! - `dry`: a dry run's page (reads only).

mod batch;
mod dry;
mod fifo;
mod mark;
mod pass;
mod send;
mod window;

use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::event::PassRequest;
use crate::ledger::Ledger;
use crate::message::{OutboxRow, Target};
use crate::queue::Queue;
use crate::source::Source;
use crate::stop::Stop;
use crate::summary::Summary;

/// Ledger writes in flight at once per relay: claims, batched marks (one
/// `BatchWriteItem` counts as one) and fenced marks alike, across the two
/// batches of the pipeline and across passes; each takes a slot of
/// [`Relay::ledger_slot`]. DynamoDB takes far more; this keeps one relay
/// from starving others sharing the table's capacity.
const LEDGER_CONCURRENCY: usize = 16;
/// SQS batch requests in flight at once (standard queues only).
const SEND_CONCURRENCY: usize = 4;
/// Batches in flight at once on a standard queue: the next one's select
/// and claims run while the previous one sends, marks and deletes.
const PIPELINE_DEPTH: usize = 2;
/// How long rows may wait for a running transaction (FIFO, PostgreSQL)
/// before each pass logs a warning: short writing transactions hold rows
/// back for milliseconds all the time; a long one holds every later row.
const HELD_BACK_WARN: Duration = Duration::from_secs(5);
/// How long a pass waits, at most, for rows held back by running
/// transactions (FIFO, PostgreSQL), and how often it looks again.
const SETTLE_WAIT: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Everything a pass needs, built once per process and shared by passes.
pub struct Relay {
    source: Source,
    ledger: Ledger,
    /// `QUEUE_URL` first, then the routes' queues (see [`crate::shaping`]).
    queues: Vec<Queue>,
    target: Target,
    fifo: bool,
    batch_size: u32,
    /// [`LEDGER_CONCURRENCY`] slots, one per ledger write in flight.
    ledger_slots: Semaphore,
    /// The oldest running transaction that last held rows back, and since
    /// when this process has seen it do so.
    held_since: std::sync::Mutex<Option<(String, Instant)>>,
}

/// A batch's select, told to the pass loop as soon as it returns: where
/// the next batch starts, and whether there may be more.
struct Selected {
    /// Rows the select returned.
    rows: u64,
    /// The last row's key (`None` when there were none).
    last: Option<String>,
}

impl Selected {
    /// What a batch tells the pass loop once its rows are selected.
    fn of(rows: &[OutboxRow]) -> Self {
        Selected {
            rows: rows.len() as u64,
            last: rows.last().map(|r| r.key.clone()),
        }
    }
}

/// The counts a batch starts from: a batch is a select that returned at
/// least one row, in real and dry runs alike ([`Summary::batches`]).
fn batch_counts(rows: &[OutboxRow], dry_run: bool) -> Summary {
    Summary {
        batches: u64::from(!rows.is_empty()),
        dry_run,
        ..Summary::default()
    }
}

/// What one batch did, and whether the pass should go on. (Where the next
/// batch starts went to the pass loop earlier, as [`Selected`].)
#[derive(Default)]
struct BatchResult {
    counts: Summary,
    /// A failure that should end the pass once this batch is committed.
    trouble: Option<anyhow::Error>,
}

impl Relay {
    /// Assembles a relay from connected parts.
    pub fn new(
        source: Source,
        ledger: Ledger,
        queues: Vec<Queue>,
        target: Target,
        batch_size: u32,
    ) -> Self {
        let fifo = target.fifo;
        Relay {
            source,
            ledger,
            queues,
            target,
            fifo,
            batch_size,
            ledger_slots: Semaphore::new(LEDGER_CONCURRENCY),
            held_since: std::sync::Mutex::new(None),
        }
    }

    /// The source database, e.g. to close its pool at exit.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Waits for a ledger write slot; the write holds it while in flight.
    /// Without it each batch's claims and its marks would each bound
    /// themselves, and the pipeline's two batches would add up.
    async fn ledger_slot(&self) -> SemaphorePermit<'_> {
        self.ledger_slots
            .acquire()
            .await
            .expect("the ledger semaphore is never closed")
    }

    /// Runs one pass: batches until the table is empty, `max_rows` rows were
    /// handled, or `stop` is reached (a time, or a shutdown request of
    /// `outbox-relay follow`; checked between batches). No send starts that
    /// could outlast `deadline` (a Lambda invocation's end). The summary is
    /// returned even when the pass fails, so callers can log what was done
    /// before the failure. `on_batch` sees the running totals after each
    /// batch (CLI progress).
    pub async fn pass(
        &self,
        req: &PassRequest,
        stop: &Stop,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> (Summary, anyhow::Result<()>) {
        let started = Instant::now();
        let (mut total, mut result) = self.pass_once(req, stop, deadline, on_batch).await;
        // FIFO on PostgreSQL: rows held back by transactions still running
        // (most write transactions last milliseconds) are waited for a
        // little, so they go in this pass rather than the next one. Not for
        // backfills with `max_rows`, nor dry runs, nor once `stop` is reached.
        if self.fifo && !req.dry_run && req.max_rows.is_none() {
            let settling = Instant::now();
            let mut held = self.held_back().await;
            while result.is_ok()
                && held.is_some()
                && settling.elapsed() < SETTLE_WAIT
                && !stop.reached()
                && stop.at.is_none_or(|t| Instant::now() + SETTLE_POLL < t)
            {
                tokio::time::sleep(SETTLE_POLL).await;
                let (again, r) = self.pass_once(req, stop, deadline, on_batch).await;
                // Rows skipped earlier may have gone now: the last round's
                // skipped and remaining are the pass's.
                total.add(&Summary {
                    skipped: 0,
                    ..again.clone()
                });
                total.skipped = again.skipped;
                total.remaining = again.remaining;
                result = r;
                held = self.held_back().await;
            }
            if result.is_ok() {
                self.report_held_back(held);
            }
        }
        total.elapsed_ms = started.elapsed().as_millis() as u64;
        (total, result)
    }

    /// The rows a running transaction holds back (FIFO on PostgreSQL);
    /// a failed check counts as none: it only loses a wait and a line.
    async fn held_back(&self) -> Option<crate::source::HeldBack> {
        match self.source.held_back().await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot count the rows held back");
                None
            }
        }
    }

    /// FIFO on PostgreSQL: says when rows wait for a transaction still
    /// running (they are not selected until it ends; see "Order on FIFO
    /// queues" in docs/guarantee.md). Keys and payloads are not logged.
    fn report_held_back(&self, held: Option<crate::source::HeldBack>) {
        // How long the same transaction has held rows back, as far as this
        // process knows (the server shows its start only to some roles).
        let seen_for = {
            let mut since = self.held_since.lock().unwrap_or_else(|e| e.into_inner());
            match (&held, since.as_ref()) {
                (None, _) => {
                    *since = None;
                    return;
                }
                (Some(h), Some((xid, at))) if *xid == h.oldest_xid => at.elapsed(),
                (Some(h), _) => {
                    *since = Some((h.oldest_xid.clone(), Instant::now()));
                    Duration::ZERO
                }
            }
        };
        let Some(h) = held else { return };
        let waited = h.open_seconds.unwrap_or(0.0).max(seen_for.as_secs_f64());
        if waited >= HELD_BACK_WARN.as_secs_f64() {
            tracing::warn!(
                rows = h.rows,
                oldest_running_xid = %h.oldest_xid,
                waited_seconds = waited,
                "rows wait for an older transaction still running: on a FIFO queue no row goes out while a transaction that began writing before it is open"
            );
        } else {
            tracing::debug!(rows = h.rows, oldest_running_xid = %h.oldest_xid, "rows wait for running transactions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::Shape;

    fn row(key: &str) -> OutboxRow {
        OutboxRow {
            key: key.to_owned(),
            payload: Some(Ok("{}".to_owned())),
            group: None,
            shape: Shape::default(),
        }
    }

    #[test]
    fn a_batch_is_a_select_that_returned_rows_in_real_and_dry_runs_alike() {
        for dry_run in [false, true] {
            let empty = batch_counts(&[], dry_run);
            assert_eq!((empty.batches, empty.dry_run), (0, dry_run));
            let some = batch_counts(&[row("1"), row("2")], dry_run);
            assert_eq!((some.batches, some.dry_run), (1, dry_run));
        }
    }

    #[test]
    fn the_pass_loop_learns_where_the_next_batch_starts() {
        let s = Selected::of(&[row("1"), row("7")]);
        assert_eq!((s.rows, s.last.as_deref()), (2, Some("7")));
        let none = Selected::of(&[]);
        assert_eq!((none.rows, none.last), (0, None));
    }
}
