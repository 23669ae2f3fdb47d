//! A consumer draining the queue while relays run, as production has, so
//! what the checker judges is what a consumer received, FIFO deduplication
//! included. Several receivers, so eight relays' sends never outrun them;
//! short polls, so stopping them is prompt.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use tokio::task::JoinHandle;

use crate::common::{Fixture, Received};

/// Receivers per consumer.
const RECEIVERS: usize = 4;

/// What the receivers took, numbered in arrival order.
type Inbox = Arc<Mutex<Vec<(u64, Received)>>>;

pub(super) struct Consumer {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    got: Inbox,
}

impl Consumer {
    pub fn start(f: &Fixture) -> Consumer {
        let stop = Arc::new(AtomicBool::new(false));
        let got: Inbox = Arc::default();
        let seq = Arc::new(AtomicU64::new(0));
        let tasks = (0..RECEIVERS)
            .map(|_| {
                let receiver = Receiver {
                    sqs: f.sqs.clone(),
                    url: f.queue_url.clone(),
                    stop: stop.clone(),
                    got: got.clone(),
                    seq: seq.clone(),
                };
                tokio::spawn(receiver.run())
            })
            .collect();
        Consumer { stop, tasks, got }
    }

    /// Stops once the queue looks empty; what it received, in delivery
    /// order.
    pub async fn stop(self) -> Vec<Received> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut got = std::mem::take(&mut *self.got.lock().unwrap());
        got.sort_by_key(|(seq, _)| *seq);
        got.into_iter().map(|(_, m)| m).collect()
    }
}

/// One receiver: receive, record, batch-delete, until stopped and idle.
/// Messages are numbered as they arrive. A FIFO group's next message is
/// only handed out after the previous one is deleted, which is after it
/// was numbered: sorting by number keeps every group's delivery order.
struct Receiver {
    sqs: aws_sdk_sqs::Client,
    url: String,
    stop: Arc<AtomicBool>,
    got: Inbox,
    seq: Arc<AtomicU64>,
}

impl Receiver {
    async fn run(self) {
        loop {
            let received = self.receive().await;
            let stopping = self.stop.load(Ordering::Relaxed);
            match received {
                Some(messages) if !messages.is_empty() => {
                    let entries = self.record(&messages);
                    self.delete(entries).await;
                }
                _ if stopping => return,
                // The stand-in busy or a reply lost: the messages come back
                // after their visibility timeout.
                None => tokio::time::sleep(Duration::from_millis(200)).await,
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One short receive of up to ten messages; None if it failed.
    async fn receive(&self) -> Option<Vec<Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            // Short: a receive whose reply is lost must not hide its
            // messages from the final count for long.
            .visibility_timeout(20)
            .wait_time_seconds(0)
            .send()
            .await
            .ok()?;
        Some(out.messages().to_vec())
    }

    /// Numbers and keeps the messages; the delete entries for them.
    fn record(&self, messages: &[Message]) -> Vec<DeleteMessageBatchRequestEntry> {
        let mut got = self.got.lock().unwrap();
        let mut entries = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            got.push((
                self.seq.fetch_add(1, Ordering::SeqCst),
                Received::from_sqs(m),
            ));
            entries.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .unwrap(),
            );
        }
        entries
    }

    /// One batch delete per receive: one request instead of ten. A failed
    /// delete only means a redelivery, which the checker tells apart by
    /// message id.
    async fn delete(&self, entries: Vec<DeleteMessageBatchRequestEntry>) {
        let _ = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
    }
}
