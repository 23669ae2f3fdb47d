//! A pass's loop over batches: start a batch, learn where its select
//! ended, start the next (two at once on a standard queue on PostgreSQL),
//! add up what each batch did.

use std::time::Instant;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::oneshot;

use super::{BatchResult, PIPELINE_DEPTH, Relay, Selected};
use crate::dialect::Dialect;
use crate::event::PassRequest;
use crate::stop::Stop;
use crate::summary::Summary;

impl Relay {
    /// One pass of batches, until a batch comes back short (see [`Relay::pass`]).
    pub(super) async fn pass_once(
        &self,
        req: &PassRequest,
        stop: &Stop,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> (Summary, anyhow::Result<()>) {
        let started = Instant::now();
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let owner = owner.as_str();
        let mut pass = PassLoop::new(self.depth(req), req.dry_run);
        let mut in_flight = FuturesOrdered::new();
        loop {
            if pass.may_start(in_flight.len())
                && let Some(next) = pass.next_batch(req.max_rows, self.batch_size, stop)
            {
                in_flight.push_back(self.run_batch(req, owner, next, deadline));
                continue;
            }
            if in_flight.is_empty() && pass.selecting.is_none() {
                break;
            }
            match pass.next_event(&mut in_flight).await {
                Event::Selected { limit, selected } => pass.selected(limit, selected),
                Event::Done(done) => pass.done(done, started, on_batch),
            }
        }
        pass.finish(started)
    }

    /// Batches in flight at once at most in a pass.
    fn depth(&self, req: &PassRequest) -> usize {
        // On a standard queue on PostgreSQL the next batch starts as soon
        // as this one's select has returned, so its claims (DynamoDB)
        // overlap this one's sends, marks and delete (SQS, the database).
        // Otherwise one batch at a time. FIFO: a second batch would see the
        // first one's locked rows as another relay's and hold their groups
        // back. MySQL/MariaDB: InnoDB's SKIP LOCKED also skips rows next to
        // the ones the first batch locked (seen with MariaDB 10.11), so the
        // second batch could come back short while rows remain, and the
        // pass would end early.
        if self.fifo || req.dry_run || self.source.dialect != Dialect::Postgres {
            1
        } else {
            PIPELINE_DEPTH
        }
    }

    /// Runs one batch, real or dry.
    async fn run_batch(
        &self,
        req: &PassRequest,
        owner: &str,
        next: NextBatch,
        deadline: Option<Instant>,
    ) -> anyhow::Result<BatchResult> {
        let NextBatch { after, limit, tell } = next;
        if req.dry_run {
            self.dry_batch(after.as_deref(), limit, tell).await
        } else {
            self.batch(owner, after.as_deref(), limit, deadline, tell)
                .await
        }
    }
}

/// Where the next batch selects from, and how it tells the pass loop.
struct NextBatch {
    /// The last key of the batch before (`None`: from the start).
    after: Option<String>,
    /// Rows to select at most.
    limit: u32,
    tell: oneshot::Sender<Selected>,
}

/// What woke the pass loop: the newest batch's select returned (`None` if
/// the batch failed before it), or the oldest batch finished.
enum Event {
    Selected {
        /// The rows that batch asked for.
        limit: u32,
        selected: Option<Selected>,
    },
    Done(anyhow::Result<BatchResult>),
}

/// The newest batch, until its select returns.
struct Selecting {
    told: oneshot::Receiver<Selected>,
    /// The rows it asked for: fewer back means nothing more right now.
    limit: u32,
}

/// One pass's loop over batches: where the next one starts, and the
/// totals so far. (The batches in flight are the caller's.)
struct PassLoop {
    /// Batches in flight at once at most (see `Relay::depth`).
    depth: usize,
    /// The newest batch, until its select returns.
    selecting: Option<Selecting>,
    /// Where the next batch's select starts.
    after: Option<String>,
    /// Rows selected so far, counted against `max_rows`.
    handled: u64,
    /// False once no batch is to start: a short page, a stop, a failure.
    more: bool,
    total: Summary,
    result: anyhow::Result<()>,
}

impl PassLoop {
    fn new(depth: usize, dry_run: bool) -> Self {
        PassLoop {
            depth,
            selecting: None,
            after: None,
            handled: 0,
            more: true,
            total: Summary {
                dry_run,
                ..Summary::default()
            },
            result: Ok(()),
        }
    }

    /// True when a batch may start: more rows may come, the newest batch's
    /// select has returned, and the pipeline has room.
    fn may_start(&self, in_flight: usize) -> bool {
        self.more && self.selecting.is_none() && in_flight < self.depth
    }

    /// The next batch to start, or, once `max_rows` rows were selected or
    /// `stop` is reached, `None`: the pass's batches end.
    fn next_batch(&mut self, max_rows: Option<u64>, size: u32, stop: &Stop) -> Option<NextBatch> {
        let left = max_rows.map(|m| m.saturating_sub(self.handled));
        if left == Some(0) || stop.reached() {
            self.total.remaining = true;
            self.more = false;
            return None;
        }
        let limit = left.map_or(size, |l| l.min(size.into()) as u32);
        let (tell, told) = oneshot::channel();
        self.selecting = Some(Selecting { told, limit });
        Some(NextBatch {
            after: self.after.clone(),
            limit,
            tell,
        })
    }

    /// Waits for the newest batch's select or the oldest batch's end,
    /// whichever comes first.
    async fn next_event<F>(&mut self, in_flight: &mut FuturesOrdered<F>) -> Event
    where
        F: Future<Output = anyhow::Result<BatchResult>>,
    {
        let mut waiting = self.selecting.take();
        let limit = waiting.as_ref().map_or(0, |s| s.limit);
        let event = {
            let told = async {
                match waiting.as_mut() {
                    Some(s) => (&mut s.told).await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                selected = told => Event::Selected { limit, selected },
                Some(done) = in_flight.next() => Event::Done(done),
            }
        };
        if let Event::Done(_) = event {
            // The newest batch's select is still to come.
            self.selecting = waiting;
        }
        event
    }

    /// The newest batch's select returned (`None`: it failed before).
    fn selected(&mut self, limit: u32, selected: Option<Selected>) {
        match selected {
            // A full page: the next batch starts after its last row.
            Some(s) if s.rows == u64::from(limit) => {
                self.handled += s.rows;
                self.after = s.last;
            }
            // A short page (nothing more right now).
            Some(s) => {
                self.handled += s.rows;
                self.more = false;
            }
            // The batch failed before its select: its error arrives with
            // its result.
            None => self.more = false,
        }
    }

    /// The oldest batch finished: its counts join the totals; its failure
    /// ends the pass once the batches in flight are done.
    fn done(
        &mut self,
        done: anyhow::Result<BatchResult>,
        started: Instant,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) {
        let trouble = match done {
            Ok(b) => {
                self.total.add(&b.counts);
                self.total.elapsed_ms = started.elapsed().as_millis() as u64;
                on_batch(&self.total);
                b.trouble
            }
            Err(e) => Some(e),
        };
        if let Some(e) = trouble {
            // No new batch; the one in flight still finishes
            // (stopping it midway would only waste its claims).
            self.total.remaining = true;
            self.more = false;
            if self.result.is_ok() {
                self.result = Err(e);
            }
        }
    }

    /// The pass's summary and outcome (the first failure).
    fn finish(self, started: Instant) -> (Summary, anyhow::Result<()>) {
        let mut total = self.total;
        if total.skipped > 0 {
            total.remaining = true;
        }
        total.elapsed_ms = started.elapsed().as_millis() as u64;
        (total, self.result)
    }
}
