//! A batch's send step: its claimed messages to SQS, never starting a send
//! the lease might not cover, and on FIFO queues never one beside an
//! earlier message of its group.

use anyhow::anyhow;
use futures_util::stream::{self, StreamExt};

use super::batch::Poison;
use super::fifo::{GroupOrder, fifo_rounds};
use super::window::Window;
use super::{Relay, SEND_CONCURRENCY};
use crate::message::Message;
use crate::queue::{Delivery, Receipt, pack};

/// A message SQS accepted, with what it said of it.
pub(super) struct Delivered<'m> {
    pub(super) message: &'m Message,
    pub(super) receipt: Receipt,
}

/// What the sends did.
#[derive(Default)]
pub(super) struct Sent<'m> {
    /// Accepted by SQS, in send order: to mark SENT.
    pub(super) delivered: Vec<Delivered<'m>>,
    /// Refused by SQS as the sender's fault: poison rows.
    pub(super) rejected: Vec<Poison>,
    /// Not sent (a failed or ambiguous entry, a short lease, a blocked
    /// group): retried after the lease.
    pub(super) unsent: u64,
    /// A failure not about the rows (no queue, no permission), or nothing
    /// of the batch could be sent.
    pub(super) trouble: Option<anyhow::Error>,
}

impl Relay {
    /// Send: the messages in rounds (FIFO: one per group per round; else
    /// one round), each round packed into `SendMessageBatch` calls that run
    /// together. A message not sent blocks the rest of its group.
    pub(super) async fn send<'m>(
        &self,
        to_send: &[&'m Message],
        order: &mut GroupOrder,
        window: Window,
    ) -> Sent<'m> {
        let mut sent = Sent::default();
        let rounds = if self.fifo {
            fifo_rounds(to_send)
        } else {
            vec![to_send.to_vec()]
        };
        for round in rounds {
            // A group blocked in an earlier round stays blocked: its later
            // rows wait for the pass that sends the blocked one.
            let (held, round): (Vec<&Message>, Vec<&Message>) = round
                .into_iter()
                .partition(|m| self.fifo && order.is_blocked(m));
            sent.unsent += held.len() as u64;
            let batches = pack(&round);
            let outcomes: Vec<anyhow::Result<Vec<Delivery>>> = stream::iter(&batches)
                .map(|batch| self.send_within_lease(batch, window))
                .buffered(SEND_CONCURRENCY)
                .collect()
                .await;
            for (batch, outcome) in batches.iter().zip(outcomes) {
                sent.take(batch, outcome, order);
            }
        }
        crate::fault::point("after-send").await;
        if sent.unsent > 0 && sent.delivered.is_empty() && sent.trouble.is_none() {
            sent.trouble = Some(anyhow!("no message of the batch could be sent to SQS"));
        }
        sent
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
}

impl<'m> Sent<'m> {
    /// Takes in the outcome of one `SendMessageBatch` call.
    fn take(
        &mut self,
        batch: &[&'m Message],
        outcome: anyhow::Result<Vec<Delivery>>,
        order: &mut GroupOrder,
    ) {
        let deliveries = match outcome {
            Ok(d) => d,
            Err(e) => {
                // Not about the rows (no queue, no permission): stop the pass.
                self.unsent += batch.len() as u64;
                batch.iter().for_each(|m| order.block(m));
                self.trouble.get_or_insert(e);
                return;
            }
        };
        for (m, d) in batch.iter().zip(deliveries) {
            match d {
                Delivery::Sent(receipt) => self.delivered.push(Delivered {
                    message: m,
                    receipt,
                }),
                // A poison row leaves its group: the group moves on.
                Delivery::Rejected(reason) => self.rejected.push(Poison {
                    key: m.key.clone(),
                    reason,
                }),
                Delivery::Failed(why) | Delivery::Ambiguous(why) => {
                    self.unsent += 1;
                    order.block(m);
                    tracing::warn!(row = %m.key, reason = %why, "not sent; retried after the lease");
                }
            }
        }
    }
}
