//! The claim ledger in DynamoDB: who owns a row, and whether it was sent.
//!
//! One item per row, `pk = "<table>#<row key>"`. A claim is one conditional
//! write that either wins or hands back the item that stopped it
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so deciding what to do
//! with a row never costs a read. The claim is an `UpdateItem` rather than a
//! `PutItem` only so that `attempts` can count up in the same write.
//!
//! Marking SENT has two forms. [`Ledger::mark_sent`] is one write fenced on
//! the owner, always safe. [`Ledger::put_sent`] writes up to 25 SENT items
//! in one unconditional `BatchWriteItem` (BatchWriteItem takes no
//! conditions); the relay uses it only while the lease is surely still
//! its own, when the fence could not refuse anything (see `relay::mark`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::attr::{n, names, number, s, text};
use crate::queue::Receipt;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, WriteRequest,
};

/// Ledger item state: claimed, message not known to be sent.
pub const CLAIMED: &str = "CLAIMED";
/// Ledger item state: the message went out (final).
pub const SENT: &str = "SENT";

/// Most items one `BatchWriteItem` takes.
pub const MAX_BATCH_WRITE: usize = 25;
/// A claim's write: the item becomes ours, CLAIMED, with a new lease; a
/// SENT item's message fields of an earlier payload are removed.
const CLAIM_UPDATE: &str = "SET #s = :claimed, #o = :me, #l = :lease, #h = :sha, #e = :exp \
     ADD #a :one REMOVE #m, #q, #t";
/// Keys per `BatchGetItem`, DynamoDB's limit.
const MAX_BATCH_GET: usize = 100;
/// Tries of a dry run's ledger read before keys left unread fail it.
const PEEK_ATTEMPTS: u32 = 8;

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This relay owns the row until its lease ends: send it.
    Won(Held),
    /// Already SENT with this very payload: delete without sending.
    AlreadySent,
    /// SENT under another payload hash: the id was reused, and this relay
    /// has taken the item over to send the new row.
    TookOverReused(Held),
    /// A live claim of another relay: leave the row alone.
    HeldByOther,
}

/// The ledger item of a claim this relay holds, as the claim wrote it:
/// what a batched mark must write back unchanged beside `SENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The item's `attempts` after the claim.
    pub attempts: u64,
    /// The item's `lease_until_ms`.
    pub lease_until_ms: u64,
}

impl Held {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        Held {
            attempts: number(item, "attempts").unwrap_or(1),
            lease_until_ms: number(item, "lease_until_ms").unwrap_or(0),
        }
    }
}

/// A sent row to mark SENT in a batch.
#[derive(Debug, Clone, Copy)]
pub struct SentItem<'a> {
    /// Ledger key.
    pub pk: &'a str,
    /// Hash of the body as sent.
    pub sha: &'a str,
    /// What SQS said of the send (message id, FIFO sequence number).
    pub receipt: &'a Receipt,
    /// The claim the send was made under.
    pub held: &'a Held,
}

/// What marking a claim SENT found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// The item is SENT with our message id.
    Marked,
    /// Our claim was taken over after our lease ran out: the fence refused
    /// the write, and the row belongs to the new owner.
    Fenced,
}

/// The ledger's view of a row, for dry runs (a read, no write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// No item, or an expired claim: a pass would claim and send.
    Free,
    /// SENT with the same payload hash: a pass would delete without sending.
    Sent,
    /// SENT with another hash: a pass would send the new row.
    Reused,
    /// Another relay's live claim: a pass would skip the row.
    Held,
}

/// A handle on the ledger table.
#[derive(Clone)]
pub struct Ledger {
    client: Client,
    table: String,
    lease: Duration,
    retention: Duration,
}

/// Milliseconds since the epoch, the unit of `lease_until_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ledger {
    /// A ledger on `table`, with the lease and SENT retention of the config.
    pub fn new(client: Client, table: String, lease: Duration, retention: Duration) -> Self {
        Ledger {
            client,
            table,
            lease,
            retention,
        }
    }

    /// The lease a claim made now would get.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims `pk` for `owner` with the body hash `sha`.
    ///
    /// Wins when there is no item or only an expired claim. Otherwise the old
    /// item decides: SENT with the same hash is [`Claim::AlreadySent`]; SENT
    /// with another hash is a reused id, taken over (fenced on the old hash,
    /// so two relays cannot both take it); a live claim is
    /// [`Claim::HeldByOther`]. Errors are transient (throttling, timeouts):
    /// the row stays for a later pass.
    pub async fn claim(&self, pk: &str, owner: &str, sha: &str) -> anyhow::Result<Claim> {
        let now = now_ms();
        let free = "attribute_not_exists(pk) OR (#s = :claimed AND #l < :now)";
        let old = match self.write_claim(pk, owner, sha, now, free, None).await? {
            Ok(held) => return Ok(Claim::Won(held)),
            Err(old) => old,
        };
        match (text(&old, "state"), text(&old, "payload_sha256")) {
            // Our own claim: the SDK retried a write whose first attempt
            // landed but whose reply was lost.
            (Some(CLAIMED), Some(h)) if text(&old, "owner") == Some(owner) && h == sha => {
                Ok(Claim::Won(Held::from_item(&old)))
            }
            (Some(SENT), Some(h)) if h == sha => Ok(Claim::AlreadySent),
            (Some(SENT), old_hash) => {
                let old_hash = old_hash.unwrap_or_default().to_owned();
                let reused = "#s = :sent AND #h = :oldhash";
                match self
                    .write_claim(pk, owner, sha, now, reused, Some(&old_hash))
                    .await?
                {
                    Ok(held) => {
                        tracing::warn!(
                            pk,
                            "ledger says SENT under another payload hash: the id was reused; \
                             sending the new row"
                        );
                        Ok(Claim::TookOverReused(held))
                    }
                    // Another relay got there first; it owns the row now.
                    Err(_) => Ok(Claim::HeldByOther),
                }
            }
            _ => Ok(Claim::HeldByOther),
        }
    }

    /// One conditional claim write: `Ok(Ok(held))` when it won, with the
    /// item as written; `Ok(Err(old))` when the condition failed.
    async fn write_claim(
        &self,
        pk: &str,
        owner: &str,
        sha: &str,
        now: u64,
        condition: &str,
        old_hash: Option<&str>,
    ) -> anyhow::Result<Result<Held, HashMap<String, AttributeValue>>> {
        let lease_until = now + self.lease.as_millis() as u64;
        // A claim that is never marked (a crashed relay, a quarantined row)
        // must not stay for ever: it expires with the SENT retention.
        let expires = (lease_until / 1000) + self.retention.as_secs();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression(CLAIM_UPDATE)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[CLAIM_UPDATE, condition])))
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":sha", s(sha))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":one", n(1))
            // What the write made of `attempts`, for a batched mark; the
            // reply carries it at no extra cost.
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match old_hash {
            None => req = req.expression_attribute_values(":now", n(now)),
            Some(h) => {
                req = req
                    .expression_attribute_values(":sent", s(SENT))
                    .expression_attribute_values(":oldhash", s(h))
            }
        }
        match req.send().await {
            Ok(out) => Ok(Ok(Held {
                attempts: out
                    .attributes()
                    .and_then(|a| number(a, "attempts"))
                    .unwrap_or(1),
                lease_until_ms: lease_until,
            })),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Err(c.item().cloned().unwrap_or_default()))
                }
                _ => Err(anyhow::Error::new(e)
                    .context(format!("DynamoDB claim of {pk} in {} failed", self.table))),
            },
        }
    }

    /// Marks our claim SENT with the SQS message id, fenced on `owner`: a
    /// relay whose lease ran out and was taken over gets [`Mark::Fenced`].
    pub async fn mark_sent(
        &self,
        pk: &str,
        owner: &str,
        receipt: &Receipt,
    ) -> anyhow::Result<Mark> {
        let message_id = receipt.message_id.as_str();
        let now = now_ms();
        let expires = now / 1000 + self.retention.as_secs();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk));
        // `sequence_number` only on FIFO queues; `sent_at_ms` is when the
        // mark was written (just after SQS accepted the message).
        let update = match &receipt.sequence_number {
            Some(seq) => {
                req = req.expression_attribute_values(":seq", s(seq));
                "SET #s = :sent, #m = :mid, #e = :exp, #t = :at, #q = :seq"
            }
            None => "SET #s = :sent, #m = :mid, #e = :exp, #t = :at",
        };
        let condition = "#o = :me AND #s = :claimed";
        let result = req
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[update, condition])))
            .expression_attribute_values(":at", n(now))
            .expression_attribute_values(":sent", s(SENT))
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":mid", s(message_id))
            .expression_attribute_values(":exp", n(expires))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Mark::Marked),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    // A retried mark whose first attempt landed finds its
                    // own SENT item: that is a success, not a takeover.
                    let old = c.item().cloned().unwrap_or_default();
                    let ours = text(&old, "state") == Some(SENT)
                        && text(&old, "owner") == Some(owner)
                        && text(&old, "message_id") == Some(message_id);
                    Ok(if ours { Mark::Marked } else { Mark::Fenced })
                }
                _ => Err(anyhow::Error::new(e)
                    .context(format!("DynamoDB mark of {pk} in {} failed", self.table))),
            },
        }
    }

    /// Writes the SENT items of up to [`MAX_BATCH_WRITE`] sent rows in one
    /// `BatchWriteItem`, **without a fence**: each item replaces whatever is
    /// there. Only for claims whose lease is surely still ours (the caller
    /// checks the time); the item written is the claim's own item turned
    /// SENT, so the ledger ends exactly as [`Ledger::mark_sent`] leaves it.
    ///
    /// Returns the positions DynamoDB left unprocessed (throttled part of
    /// the batch): those are not marked, and are for the fenced path.
    pub async fn put_sent(&self, owner: &str, rows: &[SentItem<'_>]) -> anyhow::Result<Vec<usize>> {
        let now = now_ms();
        let expires = now / 1000 + self.retention.as_secs();
        let mut writes = Vec::with_capacity(rows.len());
        for r in rows {
            let mut item = HashMap::from([
                ("pk".to_owned(), s(r.pk)),
                ("state".to_owned(), s(SENT)),
                ("owner".to_owned(), s(owner)),
                ("lease_until_ms".to_owned(), n(r.held.lease_until_ms)),
                ("payload_sha256".to_owned(), s(r.sha)),
                ("message_id".to_owned(), s(&r.receipt.message_id)),
                ("attempts".to_owned(), n(r.held.attempts)),
                ("expires_at".to_owned(), n(expires)),
                ("sent_at_ms".to_owned(), n(now)),
            ]);
            if let Some(seq) = &r.receipt.sequence_number {
                item.insert("sequence_number".to_owned(), s(seq));
            }
            let put = PutRequest::builder().set_item(Some(item)).build()?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, writes)
            .send()
            .await
            .with_context(|| format!("DynamoDB batch mark in {} failed", self.table))?;
        let left: HashSet<&str> = out
            .unprocessed_items()
            .and_then(|u| u.get(&self.table))
            .into_iter()
            .flatten()
            .filter_map(|w| w.put_request())
            .filter_map(|p| text(p.item(), "pk"))
            .collect();
        let unprocessed: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| left.contains(r.pk))
            .map(|(i, _)| i)
            .collect();
        crate::stats::batch_items(
            "DynamoDB.BatchWriteItem",
            (rows.len() - unprocessed.len()) as u64,
        );
        Ok(unprocessed)
    }

    /// Reads the ledger for these keys and says what a pass would do with
    /// each, given the body hashes. Used by dry runs only. Keys go 100 to a
    /// `BatchGetItem` (its limit).
    ///
    /// DynamoDB may answer part of a request (throttling, 16 MB): the rest
    /// is asked again after a growing pause. Keys still unanswered after
    /// the last try fail the read: counting them as free would make a dry
    /// run report sends that a pass would not make.
    pub async fn peek(&self, keys: &[(String, String)]) -> anyhow::Result<HashMap<String, Peek>> {
        let mut found: HashMap<String, HashMap<String, AttributeValue>> = HashMap::new();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            let mut wanted = KeysAndAttributes::builder().consistent_read(true);
            for (pk, _) in chunk {
                wanted = wanted.keys(HashMap::from([("pk".to_owned(), s(pk))]));
            }
            let mut request = HashMap::from([(self.table.clone(), wanted.build()?)]);
            let mut pause = Duration::from_millis(50);
            for attempt in 1..=PEEK_ATTEMPTS {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .with_context(|| format!("DynamoDB read of {} failed", self.table))?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(pk) = text(item, "pk") {
                        found.insert(pk.to_owned(), item.clone());
                    }
                }
                match out.unprocessed_keys() {
                    Some(rest) if !rest.is_empty() => request = rest.clone(),
                    _ => break,
                }
                if attempt == PEEK_ATTEMPTS {
                    let left = request.values().map(|k| k.keys().len()).sum::<usize>();
                    anyhow::bail!(
                        "DynamoDB left {left} keys of {} unread after {PEEK_ATTEMPTS} tries; the dry run cannot say what a pass would do with them",
                        self.table
                    );
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        let now = now_ms();
        Ok(keys
            .iter()
            .map(|(pk, sha)| {
                let peek = match found.get(pk) {
                    None => Peek::Free,
                    Some(item) => match text(item, "state") {
                        Some(SENT) if text(item, "payload_sha256") == Some(sha) => Peek::Sent,
                        Some(SENT) => Peek::Reused,
                        _ if number(item, "lease_until_ms").unwrap_or(0) < now => Peek::Free,
                        _ => Peek::Held,
                    },
                };
                (pk.clone(), peek)
            })
            .collect())
    }
}
