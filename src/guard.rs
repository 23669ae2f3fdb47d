//! The consumer guard: the consumer's half of "exactly once".
//!
//! The relay makes every row a message at least once, and FIFO queues see
//! it once. A *standard* queue can still hand a consumer the same row twice:
//!
//! - SQS itself delivers any standard-queue message at least once, so the
//!   very same message can arrive again;
//! - the relay resends a row whose send → mark SENT window was hit (docs/design.md,
//!   crash table: the relay died, stalled past its lease, or lost the mark's
//!   reply after SQS had accepted the message). The resend is a new SQS
//!   message with a new message id but the same `outbox-id` and
//!   `outbox-source` attributes.
//!
//! So the SQS message id cannot tell duplicates apart, and the row key can.
//! The guard is the "Deduplicating SQS messages using DynamoDB" pattern on
//! that key, in the consumer's own table (partition key `pk`, string, the
//! same `"<source>#<outbox-id>"` shape as the relay's ledger), with a lease:
//!
//! ```text
//! begin ─► PROCESSING (owner, lease_until_ms) ─► complete ─► DONE (expires_at)
//!              │                               └► abandon ─► no item
//!              └ the consumer died: once the lease is over, the next begin takes it
//! ```
//!
//! Why a lease: a plain "put if absent" marker written *before* processing
//! loses the message when the consumer dies half-way (the marker says seen,
//! nothing was done); written *after* processing, it lets two concurrent
//! deliveries both process. A PROCESSING item that expires is the middle
//! ground: one consumer at a time, and a dead one only delays the message.
//!
//! Every decision is one conditional write that either wins or hands back
//! the item that stopped it (`ReturnValuesOnConditionCheckFailure =
//! ALL_OLD`), as in the relay's ledger: never a read first, so two
//! consumers cannot both see "free".
//!
//! What the guard cannot do is make a side effect outside this table atomic
//! with [`ConsumerGuard::complete`]. A consumer that overran its lease learns
//! it only at `complete` ([`LeaseLost`]), after its effect. So: choose a
//! lease well above the processing time and a queue visibility timeout at
//! least as long, prefer idempotent effects, or write the effect and the
//! DONE mark in one `TransactWriteItems`. DONE items are kept for
//! `retention` (the `expires_at` TTL attribute; enable TTL on it): a
//! duplicate arriving later than that is processed again, so keep it above
//! the queue's message retention period.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use crate::attr::{n, names, s};
use crate::ledger::now_ms;
use crate::message::{ATTR_ID, ATTR_SOURCE};

/// Guard item state: a consumer is processing the message under a lease.
pub const PROCESSING: &str = "PROCESSING";
/// Guard item state: the message was processed (final until it expires).
pub const DONE: &str = "DONE";

/// A delivery takes the row: PROCESSING, ours, with a lease.
const BEGIN_UPDATE: &str = "SET #s = :processing, #o = :me, #l = :lease, #e = :exp ADD #a :one";
/// Only a new row, or one whose PROCESSING lease has run out.
const BEGIN_CONDITION: &str = "attribute_not_exists(pk) OR (#s = :processing AND #l < :now)";
/// The effect happened: DONE, kept for the retention.
const COMPLETE_UPDATE: &str = "SET #s = :done, #e = :exp REMOVE #l";
/// The fence of completing and abandoning: still PROCESSING and ours.
const OWNED: &str = "#s = :processing AND #o = :me";

/// What [`ConsumerGuard::begin`] decided about one delivery.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a Process admission holds a lease: complete or abandon it"]
pub enum Admission {
    /// This consumer holds the lease: process the message, then
    /// [`ConsumerGuard::complete`] (or [`ConsumerGuard::abandon`] on failure).
    Process(Ticket),
    /// The row was already processed: delete the message, do nothing else.
    Duplicate,
    /// Another consumer holds a live lease on the row: leave the message.
    /// It comes back after its visibility timeout, when the other consumer
    /// has either completed it ([`Admission::Duplicate`]) or died and let
    /// the lease run out ([`Admission::Process`]).
    InProgress,
}

/// Proof of a won lease, consumed by [`ConsumerGuard::complete`] or
/// [`ConsumerGuard::abandon`] so it cannot be used twice.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket holds a lease: complete or abandon it"]
pub struct Ticket {
    key: String,
    owner: String,
    lease_until_ms: u64,
}

impl Ticket {
    /// The guard item's key, `"<source>#<outbox-id>"`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This consumer's owner token (a fresh UUID per admission): the fence
    /// that stops it from completing a lease another consumer took over.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// When the lease ends (epoch ms). Past it, another delivery may take
    /// the message over and this ticket's completion will be refused.
    pub fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms
    }
}

/// [`ConsumerGuard::complete`] was refused: this consumer's lease ran out
/// and the message was taken over (or abandoned, or completed) by another
/// delivery, which owns the outcome now. The caller's effect may happen
/// twice; downcast the `anyhow::Error` to this type to tell it apart from
/// a transient DynamoDB failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "consumer guard: the lease on {key} was lost before completion: it ran out and another \
     delivery took the message over; this completion is not recorded"
)]
pub struct LeaseLost {
    /// The guard item's key.
    pub key: String,
}

/// Admits each outbox row's message to processing once, through
/// conditional writes on the consumer's DynamoDB table.
#[derive(Debug, Clone)]
pub struct ConsumerGuard {
    client: Client,
    table: String,
    lease: Duration,
    retention: Duration,
}

impl ConsumerGuard {
    /// A guard on `table` (partition key `pk`, string). `lease` bounds how
    /// long a dead consumer blocks a message; `retention` is how long a
    /// processed row is remembered.
    pub fn new(client: Client, table: String, lease: Duration, retention: Duration) -> Self {
        ConsumerGuard {
            client,
            table,
            lease,
            retention,
        }
    }

    /// Asks to process the row `outbox_id` of the outbox table `source`.
    ///
    /// One conditional write: it wins when there is no item, or only a
    /// PROCESSING item whose lease is over (a consumer that died). Otherwise
    /// the item that stopped it decides: DONE is [`Admission::Duplicate`],
    /// a live PROCESSING lease is [`Admission::InProgress`]. Errors are
    /// transient (throttling, timeouts): leave the message for redelivery.
    pub async fn begin(&self, source: &str, outbox_id: &str) -> anyhow::Result<Admission> {
        let key = format!("{source}#{outbox_id}");
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let now = now_ms();
        let lease_until_ms = now + self.lease.as_millis() as u64;
        // A lease nobody completes (the consumer died and the message went to
        // a dead-letter queue) must not stay for ever: it expires too.
        let expires = lease_until_ms / 1000 + self.retention.as_secs();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&key))
            .update_expression(BEGIN_UPDATE)
            .condition_expression(BEGIN_CONDITION)
            .set_expression_attribute_names(Some(names(&[BEGIN_UPDATE, BEGIN_CONDITION])))
            .expression_attribute_values(":processing", s(PROCESSING))
            .expression_attribute_values(":me", s(&owner))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(_) => {
                return Ok(Admission::Process(Ticket {
                    key,
                    owner,
                    lease_until_ms,
                }));
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    c.item().cloned().unwrap_or_default()
                }
                _ => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "consumer guard: DynamoDB write of {key} in {} failed",
                        self.table
                    )));
                }
            },
        };
        match old
            .get("state")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
        {
            Some(DONE) => Ok(Admission::Duplicate),
            // The condition failed, so by our clock this lease is still live.
            Some(PROCESSING) => Ok(Admission::InProgress),
            other => bail!(
                "consumer guard: item {key} in {} has state {other:?}, neither {PROCESSING} nor \
                 {DONE}; is the table used by something else?",
                self.table
            ),
        }
    }

    /// [`ConsumerGuard::begin`] for a received SQS message, keyed by its
    /// `outbox-id` and `outbox-source` attributes. The message must have been
    /// received with those attributes requested (`MessageAttributeNames`
    /// `All`, or the two names); a message without them is an error naming
    /// the missing one, never a guess.
    pub async fn begin_message(
        &self,
        message: &aws_sdk_sqs::types::Message,
    ) -> anyhow::Result<Admission> {
        let id = message.message_id().unwrap_or("(no message id)");
        let attribute = |name: &str| -> anyhow::Result<&str> {
            let value = message
                .message_attributes()
                .and_then(|a| a.get(name))
                .ok_or_else(|| {
                    anyhow!(
                        "SQS message {id} has no `{name}` message attribute: not an outbox \
                         message, or received without MessageAttributeNames \
                         [\"{ATTR_ID}\", \"{ATTR_SOURCE}\"] (or \"All\")"
                    )
                })?;
            match value.string_value() {
                Some(v) if !v.is_empty() => Ok(v),
                _ => bail!(
                    "SQS message {id}: the `{name}` message attribute is not a non-empty String \
                     (data type {})",
                    value.data_type()
                ),
            }
        };
        let outbox_id = attribute(ATTR_ID)?;
        let source = attribute(ATTR_SOURCE)?;
        self.begin(source, outbox_id)
            .await
            .with_context(|| format!("SQS message {id}"))
    }

    /// Records the row as processed (DONE, kept for the retention), fenced
    /// on this ticket's owner. If the lease ran out and another delivery
    /// took the message over, the write is refused with [`LeaseLost`] and
    /// the new owner's outcome stands. Completing after the lease ended is
    /// accepted as long as nobody took over: the effect still happened once.
    pub async fn complete(&self, ticket: Ticket) -> anyhow::Result<()> {
        let expires = now_ms() / 1000 + self.retention.as_secs();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&ticket.key))
            .update_expression(COMPLETE_UPDATE)
            .condition_expression(OWNED)
            .set_expression_attribute_names(Some(names(&[COMPLETE_UPDATE, OWNED])))
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":processing", s(PROCESSING))
            .expression_attribute_values(":me", s(&ticket.owner))
            .expression_attribute_values(":exp", n(expires))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    Err(LeaseLost { key: ticket.key }.into())
                }
                _ => Err(anyhow::Error::new(e).context(format!(
                    "consumer guard: DynamoDB completion of {} in {} failed",
                    ticket.key, self.table
                ))),
            },
        }
    }

    /// Gives the lease up after a failed processing, so the next delivery
    /// processes the message at once instead of waiting for the lease to
    /// end. Fenced on the owner: if the lease was already taken over, the
    /// new owner's item is left alone and this is not an error (the message
    /// is no longer this consumer's either way).
    pub async fn abandon(&self, ticket: Ticket) -> anyhow::Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&ticket.key))
            .condition_expression(OWNED)
            .set_expression_attribute_names(Some(names(&[OWNED])))
            .expression_attribute_values(":processing", s(PROCESSING))
            .expression_attribute_values(":me", s(&ticket.owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => {
                    tracing::warn!(
                        key = %ticket.key,
                        "abandoned a lease that was already lost: processing took longer than the lease"
                    );
                    Ok(())
                }
                _ => Err(anyhow::Error::new(e).context(format!(
                    "consumer guard: DynamoDB release of {} in {} failed",
                    ticket.key, self.table
                ))),
            },
        }
    }
}
