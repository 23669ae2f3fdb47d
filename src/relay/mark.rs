//! A batch's mark step: every sent row SENT in the ledger, batched while
//! the lease is surely ours, owner-fenced otherwise.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::stream::{self, StreamExt};

use super::send::Delivered;
use super::window::Window;
use super::{LEDGER_CONCURRENCY, Relay};
use crate::aws::OPERATION_TIMEOUT;
use crate::ledger::{Held, MAX_BATCH_WRITE, Mark, SentItem};
use crate::message::Message;
use crate::queue::Receipt;

/// What the marks did.
#[derive(Default)]
pub(super) struct Marked {
    /// Rows marked SENT: to delete.
    pub(super) to_delete: Vec<String>,
    /// Rows sent but not marked (taken over, or the mark failed): they
    /// stay, and are resent with the same key after the lease.
    pub(super) skipped: u64,
    /// No sent message of the batch could be marked.
    pub(super) trouble: Option<anyhow::Error>,
}

impl Relay {
    /// Mark SENT: only marked rows are deleted.
    pub(super) async fn mark(
        &self,
        owner: &str,
        sent: &[Delivered<'_>],
        held: &HashMap<&str, Held>,
        window: Window,
    ) -> Marked {
        let marks = self.mark_all(owner, sent, held, window).await;
        let mut marked = Marked::default();
        let mut failures = 0usize;
        for (d, mark) in sent.iter().zip(marks) {
            let key = &d.message.key;
            match mark {
                Ok(Mark::Marked) => marked.to_delete.push(key.clone()),
                Ok(Mark::Fenced) => {
                    marked.skipped += 1;
                    tracing::warn!(row = %key, "claim was taken over before the mark: row left to its new owner");
                }
                Err(e) => {
                    marked.skipped += 1;
                    failures += 1;
                    tracing::warn!(row = %key, error = %format!("{e:#}"), "sent but not marked; the row will be resent with the same key");
                }
            }
        }
        crate::fault::point("after-mark").await;
        if failures > 0 && failures == sent.len() {
            marked.trouble = Some(anyhow!("no sent message of the batch could be marked SENT"));
        }
        marked
    }

    /// Marks every sent row SENT; one result per row, in order.
    ///
    /// While the lease surely outlives the write, rows are marked 25 to a
    /// `BatchWriteItem`, which cannot carry the owner fence. The fence only
    /// matters once our lease may have run out and another relay may have
    /// taken the row over; before that no one else can hold the claim, so
    /// the unconditional write is the very write the fenced one would make.
    /// "Surely" is the same rule as for starting a send: the write must be
    /// able to time out with [`LEASE_SAFETY`](super::window::LEASE_SAFETY)
    /// to spare before the lease ends, reckoned from before the claim was
    /// made. Even if that rule were broken (a process frozen between the
    /// check and the write), the write only states a fact: this payload was
    /// sent with this message id. At worst the new owner's row is then
    /// deleted as already sent after it, too, was sent: a duplicate with
    /// the row key, never a loss.
    ///
    /// Otherwise (the lease is short, the batch call failed, or DynamoDB
    /// left items unprocessed) each row goes through the fenced mark.
    async fn mark_all(
        &self,
        owner: &str,
        sent: &[Delivered<'_>],
        held: &HashMap<&str, Held>,
        window: Window,
    ) -> Vec<anyhow::Result<Mark>> {
        // The chunks and their fenced marks are futures only: the writes
        // in flight are bounded by the relay's ledger slots.
        let chunks: Vec<Vec<anyhow::Result<Mark>>> = stream::iter(sent.chunks(MAX_BATCH_WRITE))
            .map(|chunk| self.mark_chunk(owner, chunk, held, window))
            .buffered(LEDGER_CONCURRENCY / 4)
            .collect()
            .await;
        chunks.into_iter().flatten().collect()
    }

    /// Marks up to [`MAX_BATCH_WRITE`] rows: one `BatchWriteItem` while the
    /// lease is surely ours, then fenced marks for whatever it left.
    async fn mark_chunk(
        &self,
        owner: &str,
        chunk: &[Delivered<'_>],
        held: &HashMap<&str, Held>,
        window: Window,
    ) -> Vec<anyhow::Result<Mark>> {
        let mut fenced: Vec<usize> = (0..chunk.len()).collect();
        let pks: Vec<String> = chunk
            .iter()
            .map(|d| self.target.ledger_key(&d.message.key))
            .collect();
        let items: Option<Vec<SentItem>> = chunk
            .iter()
            .zip(&pks)
            .map(|(d, pk)| {
                Some(SentItem {
                    pk,
                    sha: &d.message.payload_sha256,
                    receipt: &d.receipt,
                    held: held.get(d.message.key.as_str())?,
                })
            })
            .collect();
        if let Some(items) = items {
            // The slot first, then the clock: waiting for a slot must not
            // pass between the lease check and the unfenced write.
            let _slot = self.ledger_slot().await;
            if window.allows(OPERATION_TIMEOUT) {
                match self.ledger.put_sent(owner, &items).await {
                    Ok(unprocessed) => fenced = unprocessed,
                    Err(e) => tracing::debug!(
                        error = %format!("{e:#}"),
                        "batch mark failed; marking one by one"
                    ),
                }
            }
        }
        let mut out: Vec<anyhow::Result<Mark>> = chunk.iter().map(|_| Ok(Mark::Marked)).collect();
        let retried: Vec<anyhow::Result<Mark>> = stream::iter(&fenced)
            .map(|&i| self.mark_within_lease(owner, chunk[i].message, &chunk[i].receipt, window))
            .buffered(LEDGER_CONCURRENCY)
            .collect()
            .await;
        for (&i, mark) in fenced.iter().zip(retried) {
            out[i] = mark;
        }
        out
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
            // A slot per attempt: none is held through the pause.
            let attempt = {
                let _slot = self.ledger_slot().await;
                self.ledger.mark_sent(&pk, owner, receipt).await
            };
            match attempt {
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
}
