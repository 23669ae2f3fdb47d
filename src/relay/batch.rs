//! One real batch, in one database transaction: an arrow of the protocol
//! diagram (docs/design.md) per function, each handing the next a named
//! result.
//!
//! ```text
//! select ─► classify ─► order check ─► claim ─► send ─► mark ─► finish
//! (lock)    (poison?)   (FIFO)                                  (quarantine,
//!                                                                delete, commit)
//! ```
//!
//! The steps run in this order and no other: the fault points between them
//! (`crate::fault`) are where the crash tests kill a relay.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use tokio::sync::oneshot;

use super::fifo::GroupOrder;
use super::mark::Marked;
use super::send::Sent;
use super::window::Window;
use super::{BatchResult, LEDGER_CONCURRENCY, Relay, Selected, batch_counts};
use crate::ledger::{Claim, Held};
use crate::message::{Message, OutboxRow};
use crate::source::{Batch, Quarantine};
use crate::summary::Summary;

/// A row that can never be sent, and why: it goes to the dead-letter table.
pub(super) struct Poison {
    pub(super) key: String,
    pub(super) reason: String,
}

/// The select: the batch's rows, locked in its transaction.
struct Locked {
    tx: Batch,
    rows: Vec<OutboxRow>,
}

/// The rows as messages, and those that can never be one.
struct Classified {
    messages: Vec<Message>,
    poison: Vec<Poison>,
}

/// The order check's verdict: which messages may be claimed now.
struct Ordered<'m> {
    /// The batch's FIFO order, which the claims and sends go on to use.
    order: GroupOrder,
    /// In row order.
    claimable: Vec<&'m Message>,
    /// Rows behind an earlier row of their group held elsewhere.
    waiting: u64,
}

/// What the claims found.
struct Claimed<'m> {
    /// Claims won (new rows, expired claims, reused ids): to send.
    to_send: Vec<&'m Message>,
    /// What each won claim wrote, by row key: the batched mark writes it
    /// back beside `SENT`.
    held: HashMap<&'m str, Held>,
    /// Rows already SENT with this payload: deleted without a send.
    recovered: Vec<String>,
    /// Rows left: another relay's live claim, or a failed claim.
    skipped: u64,
    /// Taken before the first claim: the lease is reckoned from here.
    lease_start: Instant,
    /// Every claim failed and none was won or recovered.
    trouble: Option<anyhow::Error>,
}

/// What the last step did.
struct Finished {
    quarantined: u64,
    /// Poison rows the dead-letter table refused: they stay.
    skipped: u64,
    /// Sent or recovered rows deleted (quarantined ones not counted).
    deleted: u64,
}

impl Relay {
    /// One real batch: the diagram, step by step, in one transaction.
    pub(super) async fn batch(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: u32,
        deadline: Option<Instant>,
        selected: oneshot::Sender<Selected>,
    ) -> anyhow::Result<BatchResult> {
        let Locked { mut tx, rows } = self.select(after, limit, selected).await?;
        let mut counts = batch_counts(&rows, false);
        if rows.is_empty() {
            // No rows, no batch: counted as 0, as a dry run counts it.
            tx.commit().await?;
            return Ok(BatchResult {
                counts,
                trouble: None,
            });
        }
        crate::fault::point("after-select").await;

        // Poison rows are recognised before any claim: they never reach SQS.
        let Classified {
            messages,
            mut poison,
        } = self.classify(&rows);
        let ordered = self.order_check(&mut tx, &rows, &messages).await?;
        counts.skipped += ordered.waiting;
        let mut order = ordered.order;
        let claimed = self.claim(owner, &ordered.claimable, &mut order).await;
        claimed.tally(&mut counts);
        // Send, never starting a send the lease might not cover.
        let window = claimed.window(self, deadline);
        let sent = self.send(&claimed.to_send, &mut order, window).await;
        sent.tally(&mut counts);
        // Mark SENT; only marked rows are deleted.
        let marked = self
            .mark(owner, &sent.delivered, &claimed.held, window)
            .await;
        marked.tally(&mut counts);

        // A failure that ends the pass: the first step's that had one.
        let trouble = claimed.trouble.or(sent.trouble).or(marked.trouble);
        poison.extend(sent.rejected);
        let to_delete: Vec<String> = claimed
            .recovered
            .into_iter()
            .chain(marked.to_delete)
            .collect();
        let finished = self.finish(tx, &poison, to_delete).await?;
        counts.quarantined = finished.quarantined;
        counts.skipped += finished.skipped;
        counts.deleted = finished.deleted;
        Ok(BatchResult { counts, trouble })
    }

    /// Select: locks the next rows after `after` in a new transaction, and
    /// tells the pass loop at once, so it may start the next batch.
    async fn select(
        &self,
        after: Option<&str>,
        limit: u32,
        selected: oneshot::Sender<Selected>,
    ) -> anyhow::Result<Locked> {
        let mut tx = self.source.begin().await?;
        let rows = tx.lock_next(after, limit).await?;
        // The pass may start the next batch now.
        let _ = selected.send(Selected::of(&rows));
        Ok(Locked { tx, rows })
    }

    /// Classify: each row becomes its message or a poison row.
    fn classify(&self, rows: &[OutboxRow]) -> Classified {
        let mut out = Classified {
            messages: Vec::with_capacity(rows.len()),
            poison: Vec::new(),
        };
        for row in rows {
            match self.target.message(row) {
                Ok(m) => out.messages.push(m),
                Err(reason) => out.poison.push(Poison {
                    key: row.key.clone(),
                    reason,
                }),
            }
        }
        out
    }

    /// Order check (FIFO): a row waits while an earlier row of its group is
    /// elsewhere (another relay's batch, or left unsent): sending it now
    /// would overtake that row. Such rows are not even claimed.
    async fn order_check<'m>(
        &self,
        tx: &mut Batch,
        rows: &[OutboxRow],
        messages: &'m [Message],
    ) -> anyhow::Result<Ordered<'m>> {
        let mut order = GroupOrder::new(rows);
        if self.fifo {
            let last = rows.last().expect("rows is not empty").key.as_str();
            let listing = self.source.rows_up_to(tx, last).await?;
            order.wait_behind_others(listing, &self.target.source);
        }
        let (waiting, claimable): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| self.fifo && order.is_stopped(m));
        Ok(Ordered {
            order,
            claimable,
            waiting: waiting.len() as u64,
        })
    }

    /// Claim every row; the claims are independent, so they run together.
    /// A row that cannot be claimed blocks the rest of its group.
    async fn claim<'m>(
        &self,
        owner: &str,
        claimable: &[&'m Message],
        order: &mut GroupOrder,
    ) -> Claimed<'m> {
        let lease_start = Instant::now();
        let claims: Vec<anyhow::Result<Claim>> = stream::iter(claimable)
            .map(|m| async move {
                let pk = self.target.ledger_key(&m.key);
                let _slot = self.ledger_slot().await;
                self.ledger.claim(&pk, owner, &m.payload_sha256).await
            })
            .buffered(LEDGER_CONCURRENCY)
            .collect()
            .await;
        crate::fault::point("after-claim").await;
        let mut out = Claimed {
            to_send: Vec::new(),
            held: HashMap::new(),
            recovered: Vec::new(),
            skipped: 0,
            lease_start,
            trouble: None,
        };
        let mut errors = Vec::new();
        for (m, claim) in claimable.iter().zip(claims) {
            match claim {
                Ok(Claim::Won(h) | Claim::TookOverReused(h)) => {
                    out.held.insert(m.key.as_str(), h);
                    out.to_send.push(m);
                }
                Ok(Claim::AlreadySent) => out.recovered.push(m.key.clone()),
                Ok(Claim::HeldByOther) => {
                    out.skipped += 1;
                    order.block(m);
                }
                Err(e) => {
                    out.skipped += 1;
                    order.block(m);
                    errors.push(e);
                }
            }
        }
        out.note_failures(errors);
        out
    }

    /// Finish: quarantine and delete together, then commit: all or nothing.
    async fn finish(
        &self,
        mut tx: Batch,
        poison: &[Poison],
        mut to_delete: Vec<String>,
    ) -> anyhow::Result<Finished> {
        let mut skipped = 0;
        let mut quarantined: u64 = 0;
        for Poison { key, reason } in poison {
            match tx.quarantine(key, reason).await? {
                Quarantine::Moved => {
                    tracing::warn!(row = %key, reason = %reason, "poison row moved to the dead-letter table");
                    quarantined += 1;
                    to_delete.push(key.clone());
                }
                Quarantine::Refused(e) => {
                    // Kept, never dropped: it waits in the outbox (and shows in
                    // the oldest-row age) until the dead-letter table takes it.
                    skipped += 1;
                    tracing::error!(row = %key, reason = %reason, error = %format!("{e:#}"), "poison row could not be moved to the dead-letter table; it stays in the outbox");
                }
            }
        }
        let deleted = tx.delete(&to_delete).await?;
        crate::fault::point("after-delete").await;
        tx.commit().await?;
        crate::fault::point("after-commit").await;
        Ok(Finished {
            quarantined,
            skipped,
            deleted: deleted.saturating_sub(quarantined),
        })
    }
}

impl Claimed<'_> {
    /// Logs failed claims; when no claim was won or recovered, the first
    /// failure ends the pass (the ledger is likely unreachable).
    fn note_failures(&mut self, errors: Vec<anyhow::Error>) {
        let Some(first) = errors.first() else { return };
        tracing::warn!(
            failed = errors.len(),
            error = %format!("{first:#}"),
            "claims failed; those rows stay for a later pass"
        );
        if self.to_send.is_empty() && self.recovered.is_empty() {
            self.trouble = errors.into_iter().next();
        }
    }

    /// The time these claims leave for sends and marks.
    fn window(&self, relay: &Relay, deadline: Option<Instant>) -> Window {
        Window {
            lease_end: self.lease_start + relay.ledger.lease(),
            lease_until_ms: self
                .held
                .values()
                .map(|h| h.lease_until_ms)
                .min()
                .unwrap_or(0),
            deadline,
        }
    }

    fn tally(&self, counts: &mut Summary) {
        counts.claimed = self.to_send.len() as u64;
        counts.recovered = self.recovered.len() as u64;
        counts.skipped += self.skipped;
    }
}

impl Sent<'_> {
    fn tally(&self, counts: &mut Summary) {
        counts.sent = self.delivered.len() as u64;
        counts.skipped += self.unsent;
    }
}

impl Marked {
    fn tally(&self, counts: &mut Summary) {
        counts.skipped += self.skipped;
    }
}
