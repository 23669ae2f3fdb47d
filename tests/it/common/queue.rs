//! The consumer's side of the queue: receiving (and deleting) messages,
//! reading them as [`Received`], and counting what is on the queue.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};

use super::Fixture;

/// A message as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub outbox_id: String,
    pub outbox_source: String,
    pub message_id: String,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

impl Received {
    /// Reads a received SQS message (asked for with all message and
    /// system attributes).
    pub fn from_sqs(m: &Message) -> Received {
        let attr = |name: &str| {
            m.message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_owned()
        };
        let sys =
            |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
        Received {
            body: m.body().unwrap_or_default().to_owned(),
            outbox_id: attr("outbox-id"),
            outbox_source: attr("outbox-source"),
            message_id: m.message_id().unwrap_or_default().to_owned(),
            group_id: sys(MessageSystemAttributeName::MessageGroupId),
            dedup_id: sys(MessageSystemAttributeName::MessageDeduplicationId),
        }
    }
}

/// Counts per outbox-id of received messages.
pub fn counts(msgs: &[Received]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for m in msgs {
        *c.entry(m.outbox_id.clone()).or_default() += 1;
    }
    c
}

/// One receive of up to ten messages, as a consumer asks: with every
/// message and system attribute, hidden for five minutes so that a loop
/// reading until the queue is empty sees each message once.
pub async fn receive_some(sqs: &aws_sdk_sqs::Client, url: &str, wait_seconds: i32) -> Vec<Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .visibility_timeout(300)
        .wait_time_seconds(wait_seconds)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

/// Deletes a received message, as a consumer does once it is done.
pub async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, m: &Message) {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(m.receipt_handle().unwrap())
        .send()
        .await
        .expect("delete");
}

impl Fixture {
    /// Number of messages on the queue, by the queue's own count.
    pub async fn queue_depth(&self) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().unwrap();
        let get = |n: QueueAttributeName| -> u64 {
            attrs.get(&n).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }

    /// Receives every message on the queue and deletes it (FIFO groups
    /// only release the next message once the previous one is deleted).
    pub async fn receive_all(&self) -> Vec<Received> {
        let msgs = drain(&self.sqs, &self.queue_url).await;
        msgs.iter().map(Received::from_sqs).collect()
    }
}

/// Receives every message on the queue at `url`, deleting each (FIFO
/// groups only release the next message once the previous one is deleted).
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut out = Vec::new();
    // One empty receive does not prove the queue empty (a short poll asks
    // only some of SQS's servers); two in a row are taken to.
    let mut empty = 0;
    while empty < 2 {
        let msgs = receive_some(sqs, url, 0).await;
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in msgs {
            delete(sqs, url, &m).await;
            out.push(m);
        }
    }
    out
}
