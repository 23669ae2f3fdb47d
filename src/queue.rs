//! The target SQS queue: batches of up to ten messages, each entry's result
//! checked on its own.
//!
//! `SendMessageBatch` answers HTTP 200 even when some entries failed, so the
//! reply is read entry by entry into a [`Delivery`]. A failure of the whole
//! call is either a definite rejection (a 4xx naming the request as
//! invalid: nothing was enqueued, so the entries are retried one by one to
//! find the poison row) or ambiguous (timeout, connection reset, 5xx: SQS
//! may have enqueued them, so nothing is resent in this pass; the lease
//! expires and the resend carries the same key and deduplication id).

use std::collections::HashMap;

use anyhow::{Context, bail};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::message::{ATTR_ID, ATTR_SOURCE, Message};

/// SQS's cap on one message and on one batch request (since August 2025).
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// SQS's cap on entries per batch request.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// What happened to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Enqueued, with what SQS said of it.
    Sent(Receipt),
    /// Refused as invalid: it never will be accepted (a poison row).
    Rejected(String),
    /// Not enqueued this time (throttled, SQS-side fault): try again later.
    Failed(String),
    /// The call's outcome is unknown: it may or may not be on the queue.
    Ambiguous(String),
}

/// What SQS returns for an enqueued message, kept in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SQS `MessageId`.
    pub message_id: String,
    /// FIFO queues only: the `SequenceNumber` SQS gave the message.
    pub sequence_number: Option<String>,
}

/// The queue, with what the relay needs to know about it.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    url: String,
    /// The queue's `MaximumMessageSize`, read at start.
    pub max_message_bytes: usize,
}

impl Queue {
    /// Opens the queue, reading its size limit (which also proves it exists
    /// and that the relay may use it).
    pub async fn open(client: Client, url: &str) -> anyhow::Result<Self> {
        Self::open_as(client, url, "QUEUE_URL").await
    }

    /// [`Queue::open`], naming `variable` (where the URL came from) in
    /// the error.
    pub async fn open_as(client: Client, url: &str, variable: &str) -> anyhow::Result<Self> {
        let attrs = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(|e| {
                // One line: the SDK's own chain repeats the code and message.
                let why = match (e.code(), e.message()) {
                    (Some(code), Some(msg)) => format!("{code}: {msg}"),
                    (Some(code), None) => code.to_owned(),
                    _ => error_chain(&e),
                };
                anyhow::anyhow!("{variable}: cannot use queue {url}: {why}")
            })?;
        let max_message_bytes = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_BATCH_BYTES);
        Ok(Queue {
            client,
            url: url.to_owned(),
            max_message_bytes,
        })
    }

    /// Sends one batch (≤ 10 messages, ≤ 1 MiB together); one [`Delivery`]
    /// per message, in order. A call rejected as a whole is retried one
    /// message at a time so only the offending row is blamed.
    ///
    /// `may_start` is asked before each call: the one-by-one retries must
    /// not start once the claim's lease could run out during the send.
    pub async fn send(
        &self,
        source: &str,
        batch: &[&Message],
        may_start: impl Fn() -> bool,
    ) -> anyhow::Result<Vec<Delivery>> {
        match self.send_batch(source, batch).await? {
            Ok(deliveries) => Ok(deliveries),
            Err(reason) if batch.len() == 1 => Ok(vec![Delivery::Rejected(reason)]),
            Err(_) => {
                let mut out = Vec::with_capacity(batch.len());
                for m in batch {
                    if !may_start() {
                        out.push(Delivery::Failed(
                            "lease too short to start a send".to_owned(),
                        ));
                        continue;
                    }
                    out.push(match self.send_batch(source, &[*m]).await {
                        Ok(Ok(mut d)) => d.pop().expect("one entry, one delivery"),
                        Ok(Err(reason)) => Delivery::Rejected(reason),
                        // Keep what the earlier calls achieved: a sent
                        // message must still be marked.
                        Err(e) => Delivery::Failed(format!("{e:#}")),
                    });
                }
                Ok(out)
            }
        }
    }

    /// One `SendMessageBatch`. `Ok(Err(reason))` when SQS refused the whole
    /// request as invalid; `Err` when the refusal is not about the messages
    /// (no such queue, access denied): that stops the pass, it must not
    /// quarantine good rows.
    async fn send_batch(
        &self,
        source: &str,
        batch: &[&Message],
    ) -> anyhow::Result<Result<Vec<Delivery>, String>> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, m)| entry(i, source, m))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => return classify_call_error(e, &self.url, batch.len()),
        };
        let mut by_id: HashMap<&str, Delivery> = HashMap::new();
        for ok in out.successful() {
            let receipt = Receipt {
                message_id: ok.message_id().to_owned(),
                sequence_number: ok.sequence_number().map(str::to_owned),
            };
            by_id.insert(ok.id(), Delivery::Sent(receipt));
        }
        for failed in out.failed() {
            let reason = format!(
                "SQS refused the message: {} {}",
                failed.code(),
                failed.message().unwrap_or_default()
            );
            let operator_problem = failed.code().starts_with("KMS")
                || failed.code().contains("AccessDenied")
                || failed.code().contains("Throttl");
            let d = if failed.sender_fault() && !operator_problem {
                Delivery::Rejected(reason)
            } else {
                Delivery::Failed(reason)
            };
            by_id.insert(failed.id(), d);
        }
        Ok(Ok((0..batch.len())
            .map(|i| {
                by_id.remove(i.to_string().as_str()).unwrap_or_else(|| {
                    // Neither listed as sent nor as failed: we cannot know.
                    Delivery::Ambiguous("entry missing from the SQS reply".to_owned())
                })
            })
            .collect()))
    }
}

/// Error codes that blame the request's content, not the queue or caller.
const CONTENT_ERRORS: &[&str] = &[
    "InvalidMessageContents",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "MessageTooLong",
    "BatchRequestTooLong",
    "AWS.SimpleQueueService.BatchRequestTooLong",
    "InvalidAttributeValue",
];

fn classify_call_error<E, R>(
    e: SdkError<E, R>,
    url: &str,
    entries: usize,
) -> anyhow::Result<Result<Vec<Delivery>, String>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(_) => {
            let code = e.code().unwrap_or_default().to_owned();
            let message = e.message().unwrap_or_default().to_owned();
            if CONTENT_ERRORS.contains(&code.as_str()) {
                return Ok(Err(format!("SQS refused the message: {code} {message}")));
            }
            let transient = code.contains("Throttl")
                || code.contains("Unavailable")
                || code.contains("InternalError")
                || code.contains("InternalFailure")
                || code.is_empty();
            if transient {
                // A 5xx may have been enqueued before it failed: ambiguous.
                let why = format!("SQS answered {code}: {message}");
                return Ok(Ok(vec![Delivery::Ambiguous(why); entries]));
            }
            bail!("SQS refused the send to {url}: {code} {message}")
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let why = format!("send outcome unknown: {}", error_chain(&e));
            Ok(Ok(vec![Delivery::Ambiguous(why); entries]))
        }
        _ => Err(anyhow::Error::new(e)).context("cannot build the SQS request"),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn string_attr(v: &str) -> anyhow::Result<MessageAttributeValue> {
    Ok(MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()?)
}

fn entry(i: usize, source: &str, m: &Message) -> anyhow::Result<SendMessageBatchRequestEntry> {
    let mut e = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(&m.body)
        .message_attributes(ATTR_ID, string_attr(&m.key)?)
        .message_attributes(ATTR_SOURCE, string_attr(source)?)
        .set_message_group_id(m.group_id.clone())
        .set_message_deduplication_id(m.dedup_id.clone());
    for (name, value) in &m.shaped.attributes {
        e = e.message_attributes(name, string_attr(value)?);
    }
    if let Some(trace) = &m.shaped.trace_header {
        e = e.message_system_attributes(
            MessageSystemAttributeNameForSends::AwsTraceHeader,
            MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()?,
        );
    }
    Ok(e.build()?)
}

/// Splits messages into batches of one queue each, at most ten entries and
/// 1 MiB (every byte of the request counted), keeping their order within a
/// queue (FIFO groups rely on it).
pub fn pack<'m>(messages: &[&'m Message]) -> Vec<Vec<&'m Message>> {
    let mut by_queue: Vec<&Message> = messages.to_vec();
    // Stable: the order within a queue stays the rows' order.
    by_queue.sort_by_key(|m| m.shaped.queue);
    let mut batches: Vec<Vec<&Message>> = Vec::new();
    let mut size = 0;
    for m in by_queue {
        let fits = batches.last().is_some_and(|b| {
            b.len() < MAX_BATCH_ENTRIES
                && b[0].shaped.queue == m.shaped.queue
                && size + m.request_bytes() <= MAX_BATCH_BYTES
        });
        if !fits {
            batches.push(Vec::new());
            size = 0;
        }
        size += m.request_bytes();
        batches.last_mut().expect("just pushed").push(m);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(size: usize) -> Message {
        Message {
            key: "1".into(),
            body: String::new(),
            payload_sha256: String::new(),
            group_id: None,
            dedup_id: None,
            size,
            shaped: Default::default(),
        }
    }

    #[test]
    fn batches_hold_ten_entries_and_one_mebibyte_at_most() {
        let small: Vec<Message> = (0..25).map(|_| msg(10)).collect();
        let refs: Vec<&Message> = small.iter().collect();
        let sizes: Vec<usize> = pack(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);

        let big: Vec<Message> = (0..5).map(|_| msg(400_000)).collect();
        let refs: Vec<&Message> = big.iter().collect();
        let sizes: Vec<usize> = pack(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn a_batch_holds_one_queue_and_counts_the_trace_header() {
        let mut ms: Vec<Message> = (0..4).map(|_| msg(10)).collect();
        ms[1].shaped.queue = 1;
        ms[3].shaped.queue = 1;
        let refs: Vec<&Message> = ms.iter().collect();
        let queues: Vec<Vec<usize>> = pack(&refs)
            .iter()
            .map(|b| b.iter().map(|m| m.shaped.queue).collect())
            .collect();
        assert_eq!(queues, vec![vec![0, 0], vec![1, 1]]);

        let mut traced = msg(MAX_BATCH_BYTES / 2);
        traced.shaped.trace_header = Some("Root=1-5759e988-bd862e3fe1be46a994272793".into());
        let plain = msg(MAX_BATCH_BYTES / 2);
        let sizes: Vec<usize> = pack(&[&traced, &plain]).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1], "the trace header's bytes count too");
    }
}
