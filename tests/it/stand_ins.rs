//! The local stand-ins behave like AWS where the relay's guarantee depends
//! on it. Every other suite trusts these properties of the stack `make test`
//! starts (DynamoDB Local, LocalStack's SQS); these tests are what makes that
//! trust earned, and they fail on a stand-in that lacks them (moto fails the
//! first and the second: `STACK_DYNAMODB=moto` / `STACK_SQS=moto`).

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::StreamExt;
use outbox_relay::ledger::{Claim, Ledger};

/// The primitive the whole protocol stands on: of sixteen relays claiming
/// the same row at once, exactly one wins, for every row. (moto admitted
/// 202 winners over 200 keys in this race: its threaded server checks the
/// condition, then writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_claims_on_each_of_200_rows_have_exactly_one_winner_each() {
    const KEYS: usize = 200;
    const RACERS: usize = 16;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws().await);
    let table = common::pk_table(&ddb, "race").await;
    let ledger = Arc::new(Ledger::new(
        ddb,
        table,
        Duration::from_secs(60),
        Duration::from_secs(3600),
    ));
    // Per row, sixteen claims under different owners leave at once, each on
    // a task of its own; a few rows race at a time.
    let rounds = futures_util::stream::iter(0..KEYS).map(|i| {
        let ledger = ledger.clone();
        async move {
            let key = format!("outbox#{i}");
            let racers: Vec<_> = (0..RACERS)
                .map(|racer| {
                    let (ledger, key) = (ledger.clone(), key.clone());
                    tokio::spawn(async move {
                        ledger.claim(&key, &format!("relay-{racer}"), "sha").await
                    })
                })
                .collect();
            let mut won = 0;
            for racer in racers {
                match racer.await.unwrap().expect("claim") {
                    Claim::Won(_) => won += 1,
                    Claim::HeldByOther => {}
                    other => panic!("{key}: a fresh claim race gave {other:?}"),
                }
            }
            (key, won)
        }
    });
    let winners: HashMap<String, usize> = rounds.buffer_unordered(4).collect().await;
    let total: usize = winners.values().sum();
    let doubled: Vec<_> = winners.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "rows claimed twice: {doubled:?}");
    assert_eq!(total, KEYS, "every row has exactly one winner");
}

/// A fresh FIFO queue.
async fn fifo_queue(sqs: &aws_sdk_sqs::Client) -> String {
    let name = format!("{}.fifo", common::unique("dedup"));
    common::create_queue(sqs, &name, &[]).await
}

/// Sends one message of group `g` with the deduplication id `dedup`.
async fn send(sqs: &aws_sdk_sqs::Client, url: &str, dedup: &str) {
    let entry = SendMessageBatchRequestEntry::builder()
        .id("0")
        .message_body("body")
        .message_group_id("g")
        .message_deduplication_id(dedup)
        .build()
        .unwrap();
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .entries(entry)
        .send()
        .await
        .expect("send");
    assert!(out.failed.is_empty(), "send failed: {:?}", out.failed);
}

/// Receives what is on the queue (waiting a second for it) and deletes
/// it; returns how many messages that was.
async fn receive_and_delete(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let messages = common::receive_some(sqs, url, 1).await;
    for m in &messages {
        common::delete(sqs, url, m).await;
    }
    messages.len()
}

/// A resend in the send → mark SENT window is dropped by SQS only if the
/// queue remembers the deduplication id for five minutes, consumed or not
/// (moto forgets it once the message is deleted).
#[tokio::test]
async fn a_fifo_queue_drops_a_resend_after_the_first_copy_was_consumed() {
    let sqs = aws_sdk_sqs::Client::new(&common::aws().await);
    let url = fifo_queue(&sqs).await;
    send(&sqs, &url, "outbox-1").await;
    assert_eq!(receive_and_delete(&sqs, &url).await, 1);
    send(&sqs, &url, "outbox-1").await;
    assert_eq!(
        receive_and_delete(&sqs, &url).await,
        0,
        "the resend within five minutes is deduplicated"
    );
    send(&sqs, &url, "outbox-2").await;
    assert_eq!(receive_and_delete(&sqs, &url).await, 1, "a new id is not");
}
