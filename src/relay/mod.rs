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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::stream::{self, FuturesOrdered, StreamExt};
use tokio::sync::oneshot;

use crate::aws::OPERATION_TIMEOUT;
use crate::dialect::Dialect;
use crate::event::PassRequest;
use crate::ledger::{Claim, Held, Ledger, MAX_BATCH_WRITE, Mark, Peek, SentItem, now_ms};
use crate::message::{Message, Target};
use crate::queue::{Delivery, Queue, Receipt, pack};
use crate::source::{Quarantine, Source};
use crate::stop::Stop;
use crate::summary::Summary;

/// Ledger writes in flight at once per relay. DynamoDB takes far more; this
/// keeps one relay from starving others sharing the table's capacity.
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
/// Time a send must have left on its lease beyond the SDK's own operation
/// timeout: covers clock skew between relays and the mark that follows.
const LEASE_SAFETY: Duration = Duration::from_secs(5);

/// The longest the mark that follows a send may take: a `BatchWriteItem`
/// up to the SDK's operation timeout.
const MARK_AFTER_SEND: Duration = OPERATION_TIMEOUT;

/// When a write that must complete under this batch's claims may start.
///
/// Three clocks bound it. The lease on this process's monotonic clock,
/// reckoned from before the claims were made. The same lease on the wall
/// clock, by which other relays judge it expired: the monotonic clock stops
/// while a machine is suspended (a laptop running a backfill), so after a
/// sleep it would still believe in a lease that others have long taken
/// over. And the invocation's hard deadline, when Lambda will end the
/// process: a send cut off before its mark is a duplicate.
#[derive(Debug, Clone, Copy)]
struct Window {
    lease_end: Instant,
    lease_until_ms: u64,
    deadline: Option<Instant>,
}

impl Window {
    /// True while a call that may take `need` would still end inside the
    /// window with [`LEASE_SAFETY`] to spare.
    fn allows(&self, need: Duration) -> bool {
        let need = need + LEASE_SAFETY;
        let now = Instant::now();
        now + need <= self.lease_end
            && now_ms() + need.as_millis() as u64 <= self.lease_until_ms
            && self.deadline.is_none_or(|d| now + need <= d)
    }

    /// True while a send may start: it may take the SDK's operation
    /// timeout, and the invocation must then still outlive the mark that
    /// follows it. A send whose mark Lambda cuts off is a duplicate after
    /// the lease.
    fn allows_send(&self) -> bool {
        let send_and_mark = OPERATION_TIMEOUT + MARK_AFTER_SEND + LEASE_SAFETY;
        self.allows(OPERATION_TIMEOUT)
            && self
                .deadline
                .is_none_or(|d| Instant::now() + send_and_mark <= d)
    }
}

/// Everything a pass needs, built once per process and shared by passes.
pub struct Relay {
    source: Source,
    ledger: Ledger,
    /// `QUEUE_URL` first, then the routes' queues (see [`crate::shaping`]).
    queues: Vec<Queue>,
    target: Target,
    fifo: bool,
    batch_size: u32,
    /// The oldest running transaction that last held rows back, and since
    /// when this process has seen it do so.
    held_since: std::sync::Mutex<Option<(String, Instant)>>,
}

/// A batch's select, told to the pass loop: rows returned, last key.
type Selected = (u64, Option<String>);

/// What a batch tells the pass loop once its rows are selected.
fn selection(rows: &[crate::message::OutboxRow]) -> Selected {
    (rows.len() as u64, rows.last().map(|r| r.key.clone()))
}

/// What woke the pass loop: the newest batch's select returned (rows and
/// last key; `None` if it failed first), or the oldest batch finished.
enum Event {
    Selected(Option<Selected>),
    Done(anyhow::Result<BatchResult>),
}

/// What one batch did, and whether the pass should go on. (Where the next
/// batch starts went to the pass loop earlier, as [`Selected`].)
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
            held_since: std::sync::Mutex::new(None),
        }
    }

    /// The source database, e.g. to close its pool at exit.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Runs one pass: batches until the table is empty, `max_rows` rows were
    /// handled, or `stop_at` has passed. No send starts that could outlast
    /// `deadline` (a Lambda invocation's end). The summary is returned even
    /// when the pass fails, so callers can log what was done before the
    /// failure. `on_batch` sees the running totals after each batch (CLI
    /// progress).
    pub async fn pass(
        &self,
        req: &PassRequest,
        stop_at: Option<Instant>,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> (Summary, anyhow::Result<()>) {
        self.pass_until(req, &Stop::at(stop_at), deadline, on_batch)
            .await
    }

    /// [`Relay::pass`], stopping between batches once `stop` is reached (a
    /// time, or a shutdown request of `outbox-relay follow`).
    pub async fn pass_until(
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

    /// One pass of batches, until a batch comes back short (see [`Relay::pass`]).
    async fn pass_once(
        &self,
        req: &PassRequest,
        stop: &Stop,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> (Summary, anyhow::Result<()>) {
        let started = Instant::now();
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let owner = owner.as_str();
        let mut total = Summary {
            dry_run: req.dry_run,
            ..Summary::default()
        };
        // On a standard queue on PostgreSQL the next batch starts as soon
        // as this one's select has returned, so its claims (DynamoDB)
        // overlap this one's sends, marks and delete (SQS, the database).
        // Otherwise one batch at a time. FIFO: a second batch would see the
        // first one's locked rows as another relay's and hold their groups
        // back. MySQL/MariaDB: InnoDB's SKIP LOCKED also skips rows next to
        // the ones the first batch locked (seen with MariaDB 10.11), so the
        // second batch could come back short while rows remain, and the
        // pass would end early.
        let depth = if self.fifo || req.dry_run || self.source.dialect != Dialect::Postgres {
            1
        } else {
            PIPELINE_DEPTH
        };
        let mut in_flight = FuturesOrdered::new();
        // The newest batch's selection, until it arrives: (rows, last key).
        let mut selecting: Option<(oneshot::Receiver<Selected>, u32)> = None;
        let mut after: Option<String> = None;
        let mut handled: u64 = 0;
        let mut more = true;
        let mut result = Ok(());
        loop {
            if more && selecting.is_none() && in_flight.len() < depth {
                let left = req.max_rows.map(|m| m.saturating_sub(handled));
                if left == Some(0) || stop.reached() {
                    total.remaining = true;
                    more = false;
                } else {
                    let limit =
                        left.map_or(self.batch_size, |l| l.min(self.batch_size.into()) as u32);
                    let (tell, told) = oneshot::channel();
                    let from = after.clone();
                    in_flight.push_back(async move {
                        if req.dry_run {
                            self.dry_batch(from.as_deref(), limit, tell).await
                        } else {
                            self.batch(owner, from.as_deref(), limit, deadline, tell)
                                .await
                        }
                    });
                    selecting = Some((told, limit));
                    continue;
                }
            }
            if in_flight.is_empty() && selecting.is_none() {
                break;
            }
            let mut waiting = selecting.take();
            let event = {
                let told = async {
                    match waiting.as_mut() {
                        Some((told, _)) => told.await.ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    selected = told => Event::Selected(selected),
                    Some(done) = in_flight.next() => Event::Done(done),
                }
            };
            match event {
                Event::Selected(selected) => {
                    let limit = waiting.map_or(0, |(_, limit)| limit);
                    match selected {
                        // A full page: the next batch starts after its last row.
                        Some((rows, last)) if rows == u64::from(limit) => {
                            handled += rows;
                            after = last;
                        }
                        // A short page (nothing more right now).
                        Some((rows, _)) => {
                            handled += rows;
                            more = false;
                        }
                        // The batch failed before its select: its error
                        // arrives with its result.
                        None => more = false,
                    }
                }
                Event::Done(done) => {
                    selecting = waiting;
                    let trouble = match done {
                        Ok(b) => {
                            total.add(&b.counts);
                            total.elapsed_ms = started.elapsed().as_millis() as u64;
                            on_batch(&total);
                            b.trouble
                        }
                        Err(e) => Some(e),
                    };
                    if let Some(e) = trouble {
                        // No new batch; the one in flight still finishes
                        // (stopping it midway would only waste its claims).
                        total.remaining = true;
                        more = false;
                        result = result.and(Err(e));
                    }
                }
            }
        }
        if total.skipped > 0 {
            total.remaining = true;
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

    /// One real batch, in one database transaction.
    async fn batch(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: u32,
        deadline: Option<Instant>,
        selected: oneshot::Sender<Selected>,
    ) -> anyhow::Result<BatchResult> {
        let mut tx = self.source.begin().await?;
        let rows = tx.lock_next(after, limit).await?;
        // The pass may start the next batch now.
        let _ = selected.send(selection(&rows));
        let mut counts = Summary {
            batches: 1,
            ..Summary::default()
        };
        let mut result = BatchResult {
            counts: Summary::default(),
            trouble: None,
        };
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(result);
        }

        crate::fault::point("after-select").await;

        // Poison rows are recognised before any claim: they never reach SQS.
        let mut poison: Vec<(String, String)> = Vec::new();
        let mut messages: Vec<Message> = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.target.message(row) {
                Ok(m) => messages.push(m),
                Err(reason) => poison.push((row.key.clone(), reason)),
            }
        }

        // FIFO: a row waits while an earlier row of its group is elsewhere
        // (another relay's batch, or left unsent): sending it now would
        // overtake that row. Such rows are not even claimed.
        let mut order = GroupOrder::new(&rows);
        if self.fifo {
            let last = rows.last().expect("rows is not empty").key.as_str();
            let ours: HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
            // In id order, ours interleaved with the rest: once a row that
            // is not ours appears in a group, our later rows of it wait.
            let mut stopped: HashSet<String> = HashSet::new();
            for (key, group) in self.source.rows_up_to(&mut tx, last).await? {
                let group = group.unwrap_or_else(|| self.target.source.clone());
                if !ours.contains(key.as_str()) {
                    stopped.insert(group);
                } else if stopped.contains(&group) {
                    order.waiting.insert(key);
                }
            }
        }
        let (waiting, claimable): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| self.fifo && order.is_stopped(m));
        counts.skipped += waiting.len() as u64;

        // Claim every row; the claims are independent, so they run together.
        let lease_start = Instant::now();
        let claims: Vec<anyhow::Result<Claim>> = stream::iter(&claimable)
            .map(|m| async move {
                let pk = self.target.ledger_key(&m.key);
                self.ledger.claim(&pk, owner, &m.payload_sha256).await
            })
            .buffered(LEDGER_CONCURRENCY)
            .collect()
            .await;
        crate::fault::point("after-claim").await;
        let mut to_send: Vec<&Message> = Vec::new();
        let mut held: HashMap<&str, Held> = HashMap::new();
        let mut to_delete: Vec<String> = Vec::new();
        let mut claim_errors = Vec::new();
        for (m, claim) in claimable.iter().zip(claims) {
            match claim {
                Ok(Claim::Won(h) | Claim::TookOverReused(h)) => {
                    counts.claimed += 1;
                    held.insert(m.key.as_str(), h);
                    to_send.push(m);
                }
                Ok(Claim::AlreadySent) => {
                    counts.recovered += 1;
                    to_delete.push(m.key.clone());
                }
                Ok(Claim::HeldByOther) => {
                    counts.skipped += 1;
                    order.block(m);
                }
                Err(e) => {
                    counts.skipped += 1;
                    order.block(m);
                    claim_errors.push(e);
                }
            }
        }
        if !claim_errors.is_empty() {
            tracing::warn!(
                failed = claim_errors.len(),
                error = %format!("{:#}", claim_errors[0]),
                "claims failed; those rows stay for a later pass"
            );
            if counts.claimed + counts.recovered == 0 {
                result.trouble = claim_errors.into_iter().next();
            }
        }

        // Send, never starting a send the lease might not cover.
        let window = Window {
            lease_end: lease_start + self.ledger.lease(),
            lease_until_ms: held.values().map(|h| h.lease_until_ms).min().unwrap_or(0),
            deadline,
        };
        let mut sent: Vec<(&Message, Receipt)> = Vec::new();
        let mut unsent = 0u64;
        let rounds = if self.fifo {
            fifo_rounds(&to_send)
        } else {
            vec![to_send.clone()]
        };
        for round in rounds {
            // A group blocked in an earlier round stays blocked: its later
            // rows wait for the pass that sends the blocked one.
            let (held, round): (Vec<&Message>, Vec<&Message>) = round
                .into_iter()
                .partition(|m| self.fifo && order.is_blocked(m));
            unsent += held.len() as u64;
            let batches = pack(&round);
            let sends: Vec<anyhow::Result<Vec<Delivery>>> = stream::iter(&batches)
                .map(|batch| self.send_within_lease(batch, window))
                .buffered(SEND_CONCURRENCY)
                .collect()
                .await;
            for (batch, outcome) in batches.iter().zip(sends) {
                let deliveries = match outcome {
                    Ok(d) => d,
                    Err(e) => {
                        // Not about the rows (no queue, no permission): stop the pass.
                        unsent += batch.len() as u64;
                        batch.iter().for_each(|m| order.block(m));
                        result.trouble.get_or_insert(e);
                        continue;
                    }
                };
                for (m, d) in batch.iter().zip(deliveries) {
                    match d {
                        Delivery::Sent(id) => sent.push((m, id)),
                        // A poison row leaves its group: the group moves on.
                        Delivery::Rejected(reason) => poison.push((m.key.clone(), reason)),
                        Delivery::Failed(why) | Delivery::Ambiguous(why) => {
                            unsent += 1;
                            order.block(m);
                            tracing::warn!(row = %m.key, reason = %why, "not sent; retried after the lease");
                        }
                    }
                }
            }
        }
        crate::fault::point("after-send").await;
        counts.sent = sent.len() as u64;
        counts.skipped += unsent;
        if unsent > 0 && sent.is_empty() && result.trouble.is_none() {
            result.trouble = Some(anyhow!("no message of the batch could be sent to SQS"));
        }

        // Mark SENT; only marked rows are deleted.
        let marks = self.mark_all(owner, &sent, &held, window).await;
        let mut mark_failures = 0u64;
        for ((m, _), mark) in sent.iter().zip(marks) {
            match mark {
                Ok(Mark::Marked) => to_delete.push(m.key.clone()),
                Ok(Mark::Fenced) => {
                    counts.skipped += 1;
                    tracing::warn!(row = %m.key, "claim was taken over before the mark: row left to its new owner");
                }
                Err(e) => {
                    counts.skipped += 1;
                    mark_failures += 1;
                    tracing::warn!(row = %m.key, error = %format!("{e:#}"), "sent but not marked; the row will be resent with the same key");
                }
            }
        }
        crate::fault::point("after-mark").await;
        if mark_failures > 0 && mark_failures == sent.len() as u64 && result.trouble.is_none() {
            result.trouble = Some(anyhow!("no sent message of the batch could be marked SENT"));
        }

        // Quarantine and delete together, then commit: all or nothing.
        let mut quarantined: Vec<String> = Vec::with_capacity(poison.len());
        for (key, reason) in &poison {
            match tx.quarantine(key, reason).await? {
                Quarantine::Moved => {
                    tracing::warn!(row = %key, reason = %reason, "poison row moved to the dead-letter table");
                    quarantined.push(key.clone());
                }
                Quarantine::Refused(e) => {
                    // Kept, never dropped: it waits in the outbox (and shows in
                    // the oldest-row age) until the dead-letter table takes it.
                    counts.skipped += 1;
                    tracing::error!(row = %key, reason = %reason, error = %format!("{e:#}"), "poison row could not be moved to the dead-letter table; it stays in the outbox");
                }
            }
        }
        counts.quarantined = quarantined.len() as u64;
        let all: Vec<String> = to_delete.iter().cloned().chain(quarantined).collect();
        let deleted = tx.delete(&all).await?;
        crate::fault::point("after-delete").await;
        tx.commit().await?;
        crate::fault::point("after-commit").await;
        counts.deleted = deleted.saturating_sub(counts.quarantined);
        result.counts = counts;
        Ok(result)
    }

    /// Sends one SQS batch, unless the lease might run out before the send
    /// could time out: then the rows wait for the lease to expire instead.
    async fn send_within_lease(
        &self,
        batch: &[&Message],
        window: Window,
    ) -> anyhow::Result<Vec<Delivery>> {
        let may_start = || window.allows_send();
        if !may_start() {
            let why = "lease too short to start a send".to_owned();
            return Ok(batch
                .iter()
                .map(|_| Delivery::Failed(why.clone()))
                .collect());
        }
        // pack() keeps each batch to one queue.
        let queue = &self.queues[batch.first().map_or(0, |m| m.shaped.queue)];
        let deliveries = queue.send(&self.target.source, batch, may_start).await;
        crate::fault::point("mid-send").await;
        deliveries
    }

    /// Marks every sent row SENT; one result per row, in order.
    ///
    /// While the lease surely outlives the write, rows are marked 25 to a
    /// `BatchWriteItem`, which cannot carry the owner fence. The fence only
    /// matters once our lease may have run out and another relay may have
    /// taken the row over; before that no one else can hold the claim, so
    /// the unconditional write is the very write the fenced one would make.
    /// "Surely" is the same rule as for starting a send: the write must be
    /// able to time out with [`LEASE_SAFETY`] to spare before the lease
    /// ends, reckoned from before the claim was made. Even if that rule
    /// were broken (a process frozen between the check and the write), the
    /// write only states a fact: this payload was sent with this message
    /// id. At worst the new owner's row is then deleted as already sent
    /// after it, too, was sent: a duplicate with the row key, never a loss.
    ///
    /// Otherwise (the lease is short, the batch call failed, or DynamoDB
    /// left items unprocessed) each row goes through the fenced mark.
    async fn mark_all(
        &self,
        owner: &str,
        sent: &[(&Message, Receipt)],
        held: &HashMap<&str, Held>,
        window: Window,
    ) -> Vec<anyhow::Result<Mark>> {
        let chunks: Vec<Vec<anyhow::Result<Mark>>> = stream::iter(sent.chunks(MAX_BATCH_WRITE))
            .map(|chunk| async move {
                let mut fenced: Vec<usize> = (0..chunk.len()).collect();
                let pks: Vec<String> = chunk
                    .iter()
                    .map(|(m, _)| self.target.ledger_key(&m.key))
                    .collect();
                let items: Option<Vec<SentItem>> = chunk
                    .iter()
                    .zip(&pks)
                    .map(|((m, id), pk)| {
                        Some(SentItem {
                            pk,
                            sha: &m.payload_sha256,
                            receipt: id,
                            held: held.get(m.key.as_str())?,
                        })
                    })
                    .collect();
                let lease_is_ours = window.allows(OPERATION_TIMEOUT);
                if let (true, Some(items)) = (lease_is_ours, items) {
                    match self.ledger.put_sent(owner, &items).await {
                        Ok(unprocessed) => fenced = unprocessed,
                        Err(e) => tracing::debug!(
                            error = %format!("{e:#}"),
                            "batch mark failed; marking one by one"
                        ),
                    }
                }
                let mut out: Vec<anyhow::Result<Mark>> =
                    chunk.iter().map(|_| Ok(Mark::Marked)).collect();
                let retried: Vec<anyhow::Result<Mark>> = stream::iter(&fenced)
                    .map(|&i| self.mark_within_lease(owner, chunk[i].0, &chunk[i].1, window))
                    .buffered(LEDGER_CONCURRENCY)
                    .collect()
                    .await;
                for (&i, mark) in fenced.iter().zip(retried) {
                    out[i] = mark;
                }
                out
            })
            .buffered(LEDGER_CONCURRENCY / 4)
            .collect()
            .await;
        chunks.into_iter().flatten().collect()
    }

    /// Marks a sent row SENT, retrying a failed mark while the lease lasts.
    ///
    /// A row sent but not marked is sent again after its lease: a duplicate
    /// on a standard queue. The mark is idempotent (a retry that finds its
    /// own SENT item counts as done), so retrying it is safe and cheap
    /// compared with that duplicate; the lease bounds the retries, so a
    /// claim never outlives it by being retried for ever.
    async fn mark_within_lease(
        &self,
        owner: &str,
        m: &Message,
        receipt: &Receipt,
        window: Window,
    ) -> anyhow::Result<Mark> {
        let pk = self.target.ledger_key(&m.key);
        let mut pause = Duration::from_millis(50);
        loop {
            match self.ledger.mark_sent(&pk, owner, receipt).await {
                Ok(mark) => return Ok(mark),
                Err(e) if !window.allows(OPERATION_TIMEOUT + pause) => return Err(e),
                Err(e) => {
                    tracing::debug!(row = %m.key, error = %format!("{e:#}"), "mark failed; retrying within the lease");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One dry-run page: reads the rows and the ledger, writes nothing.
    async fn dry_batch(
        &self,
        after: Option<&str>,
        limit: u32,
        selected: oneshot::Sender<Selected>,
    ) -> anyhow::Result<BatchResult> {
        let rows = self.source.peek(after, limit).await?;
        let _ = selected.send(selection(&rows));
        let mut counts = Summary {
            batches: 1,
            dry_run: true,
            ..Summary::default()
        };
        let mut keys = Vec::new();
        for row in &rows {
            match self.target.message(row) {
                Ok(m) => keys.push((self.target.ledger_key(&m.key), m.payload_sha256)),
                Err(_) => counts.quarantined += 1,
            }
        }
        let peeks = self.ledger.peek(&keys).await?;
        for (pk, _) in &keys {
            match peeks.get(pk) {
                Some(Peek::Free | Peek::Reused) | None => counts.sent += 1,
                Some(Peek::Sent) => counts.recovered += 1,
                Some(Peek::Held) => counts.skipped += 1,
            }
        }
        Ok(BatchResult {
            counts,
            trouble: None,
        })
    }
}

/// Per-group send order on FIFO queues: which rows must not go yet.
#[derive(Default)]
struct GroupOrder {
    /// Our rows behind an earlier row of their group that is elsewhere.
    waiting: HashSet<String>,
    /// Group → batch position from which its rows are held back, because
    /// the row there could not be claimed or sent in this batch.
    blocked: HashMap<String, usize>,
    /// Batch position (id order) of each of our keys.
    position: HashMap<String, usize>,
}

impl GroupOrder {
    fn new(rows: &[crate::message::OutboxRow]) -> Self {
        GroupOrder {
            position: rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.key.clone(), i))
                .collect(),
            ..GroupOrder::default()
        }
    }

    fn is_stopped(&self, m: &Message) -> bool {
        self.waiting.contains(&m.key) || self.is_blocked(m)
    }

    /// Holds back `m` and the rows of its group after it in this batch.
    fn block(&mut self, m: &Message) {
        if let (Some(g), Some(&at)) = (&m.group_id, self.position.get(&m.key)) {
            let from = self.blocked.entry(g.clone()).or_insert(at);
            *from = (*from).min(at);
        }
    }

    fn is_blocked(&self, m: &Message) -> bool {
        match (&m.group_id, self.position.get(&m.key)) {
            (Some(g), Some(at)) => self.blocked.get(g).is_some_and(|from| from <= at),
            _ => false,
        }
    }
}

/// Splits FIFO messages into rounds holding at most one message per group,
/// in row order. A round's calls run in parallel (different groups); the
/// next round starts after it, so a message is never in flight beside an
/// earlier one of its group, and a failure can stop its group before
/// anything after it goes out. SQS documents no order for the entries of
/// one group within a partly failed batch call, so this is the price of
/// "never overtaken": more calls when a batch holds many rows of one group.
fn fifo_rounds<'m>(messages: &[&'m Message]) -> Vec<Vec<&'m Message>> {
    let mut rounds: Vec<Vec<&Message>> = Vec::new();
    let mut next_round: HashMap<&str, usize> = HashMap::new();
    for m in messages {
        let group = m.group_id.as_deref().unwrap_or_default();
        let r = next_round.entry(group).or_insert(0);
        if rounds.len() <= *r {
            rounds.push(Vec::new());
        }
        rounds[*r].push(m);
        *r += 1;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(lease_left: Duration, wall_left_ms: i64, deadline: Option<Duration>) -> Window {
        let now = Instant::now();
        Window {
            lease_end: now + lease_left,
            lease_until_ms: (now_ms() as i64 + wall_left_ms).max(0) as u64,
            deadline: deadline.map(|d| now + d),
        }
    }

    #[test]
    fn a_send_starts_only_while_every_clock_leaves_room_for_it() {
        let minute = Duration::from_secs(60);
        assert!(window(minute, 60_000, None).allows(OPERATION_TIMEOUT));
        // The lease is nearly over on this process's clock.
        assert!(!window(Duration::from_secs(12), 60_000, None).allows(OPERATION_TIMEOUT));
    }

    #[test]
    fn a_lease_expired_on_the_wall_clock_refuses_sends_after_a_suspend() {
        // After a sleep the monotonic clock says the lease is young, but by
        // the wall clock (the one other relays use) it has run out.
        let w = window(Duration::from_secs(55), -300_000, None);
        assert!(!w.allows(OPERATION_TIMEOUT));
    }

    #[test]
    fn no_send_starts_unless_its_mark_also_fits_before_the_deadline() {
        // 20 s left: the send fits (10 s and the 5 s margin), but the mark
        // after it, a batch write of up to 10 s more, would not.
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(20)),
        );
        assert!(w.allows(OPERATION_TIMEOUT));
        assert!(!w.allows_send());
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(26)),
        );
        assert!(w.allows_send());
        assert!(window(Duration::from_secs(60), 60_000, None).allows_send());
        assert!(!window(Duration::from_secs(12), 60_000, None).allows_send());
    }

    #[test]
    fn no_send_starts_that_could_outlast_the_invocation() {
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(8)),
        );
        assert!(!w.allows(OPERATION_TIMEOUT));
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(40)),
        );
        assert!(w.allows(OPERATION_TIMEOUT));
    }
}
