//! Self-tests of the loopback fault proxy (`tests/it/proxy/`) against
//! the local stack, through the AWS SDK clients configured exactly as the relay
//! configures them (`outbox_relay::aws::sdk_config`: 4 s attempts, 10 s
//! operations, 3 attempts), so what the SDK reports here is what the relay
//! will see under the same faults.
//!
//! Run with the local stack's environment (`make test`, or
//! the variables scripts/stack.sh exports).

use crate::{common, proxy};

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use proxy::{AmbiguousMode, FaultProxy, Faults, Service, classify};

/// How a DynamoDB write through the proxy fails.
type PutError = aws_sdk_dynamodb::error::SdkError<PutItemError>;
/// Likewise for an update.
type UpdateError = aws_sdk_dynamodb::error::SdkError<UpdateItemError>;

/// SQS and DynamoDB clients through the proxy. The environment's endpoint
/// is process-global, so the proxy's is set per client instead.
fn via_proxy(
    sdk: &SdkConfig,
    proxy: &FaultProxy,
) -> (aws_sdk_sqs::Client, aws_sdk_dynamodb::Client) {
    let sqs = aws_sdk_sqs::config::Builder::from(sdk)
        .endpoint_url(proxy.url())
        .build();
    let ddb = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(proxy.url())
        .build();
    (
        aws_sdk_sqs::Client::from_conf(sqs),
        aws_sdk_dynamodb::Client::from_conf(ddb),
    )
}

/// Every message now visible on the queue, read straight from the stack.
async fn bodies_on_queue(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let messages = common::receive_some(sqs, queue_url, 0).await;
        if messages.is_empty() {
            return bodies;
        }
        bodies.extend(messages.into_iter().filter_map(|m| m.body));
    }
}

/// A fresh queue, named for this suite.
async fn queue(sqs: &aws_sdk_sqs::Client) -> String {
    common::create_queue(sqs, &common::unique("proxy_selftest"), &[]).await
}

/// A fresh table keyed on `pk`, named for this suite.
async fn table(ddb: &aws_sdk_dynamodb::Client) -> String {
    common::pk_table(ddb, "proxy_selftest").await
}

/// Writes the item `pk`.
async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Result<(), PutError> {
    ddb.put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.to_owned()))
        .send()
        .await
        .map(|_| ())
}

/// Sets `v = 1` on the item `pk`.
async fn update(ddb: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Result<(), UpdateError> {
    ddb.update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .update_expression("SET v = :v")
        .expression_attribute_values(":v", AttributeValue::N("1".into()))
        .send()
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_forwards_and_counts_operations() {
    let sdk = common::aws().await;
    let proxy = FaultProxy::for_stack().await;
    let (sqs, ddb) = via_proxy(&sdk, &proxy);

    let queue_url = queue(&sqs).await;
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("hello through the proxy")
        .send()
        .await
        .expect("send via proxy");
    let received = common::receive_some(&sqs, &queue_url, 1).await;
    let bodies: Vec<_> = received.into_iter().filter_map(|m| m.body).collect();
    assert_eq!(bodies, ["hello through the proxy"]);

    let table = table(&ddb).await;
    put(&ddb, &table, "k").await.expect("put via proxy");

    let targets = proxy.raw_targets();
    eprintln!("wire targets seen: {targets:?}");
    // The SDK speaks awsJson1_0 to both services: the operation is in
    // X-Amz-Target, never in an Action= form field.
    assert!(targets.contains("AmazonSQS.SendMessage"), "{targets:?}");
    assert!(targets.contains("DynamoDB_20120810.PutItem"), "{targets:?}");
    assert!(!targets.iter().any(|t| t.starts_with("Action=")));

    let counts = proxy.counts();
    eprintln!("counts: {counts:?}");
    for op in [
        "CreateQueue",
        "SendMessage",
        "ReceiveMessage",
        "CreateTable",
        "PutItem",
    ] {
        // One request each, unless a stall of the shared stack made the SDK
        // retry an attempt.
        let c = proxy.count(op);
        assert!(c.seen >= 1 && c.faulted == 0, "{op}: {c:?}");
        assert_eq!(c.forwarded, c.seen, "{op}: {c:?}");
    }
    proxy.reset_counts();
    assert!(proxy.counts().is_empty());
}

/// Checks that an SDK call failed the way an ambiguous send should: by a
/// broken connection, fast, not by the 4 s attempt timeout (a proxy that
/// hangs instead of dropping would show up as a `TimeoutError`).
fn broken_connection<E: std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> String {
    assert!(
        matches!(e, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)),
        "expected a broken connection, got {e:?}"
    );
    format!("{e:?}")
}

/// Sends "ambiguous" once, alone or in a batch; the error, if the SDK
/// reports one, must be a broken connection.
async fn send_one(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batch: bool,
) -> (Result<(), String>, &'static str) {
    if batch {
        let entry = SendMessageBatchRequestEntry::builder()
            .id("0")
            .message_body("ambiguous")
            .build()
            .unwrap();
        let r = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .entries(entry)
            .send()
            .await;
        (r.map(|_| ()).map_err(broken_connection), "SendMessageBatch")
    } else {
        let r = sqs
            .send_message()
            .queue_url(queue_url)
            .message_body("ambiguous")
            .send()
            .await;
        (r.map(|_| ()).map_err(broken_connection), "SendMessage")
    }
}

/// Sends through the proxy with every send made ambiguous, then checks that
/// the SDK failed, fast, and that the queue holds the message all the same; then
/// heals and sends once more.
async fn ambiguous_send(mode: AmbiguousMode, batch: bool) {
    let sdk = common::aws().await;
    let direct = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = queue(&direct).await;
    let proxy = FaultProxy::for_stack().await;
    let (sqs, _) = via_proxy(&sdk, &proxy);
    proxy.faults().set_ambiguous_mode(mode);
    proxy.faults().set_ambiguous_send_rate(1.0);

    let started = Instant::now();
    let (result, op) = send_one(&sqs, &queue_url, batch).await;
    let elapsed = started.elapsed();
    let err = result.expect_err("an ambiguous send must fail on the client");
    eprintln!("{mode:?}: SDK error after {elapsed:?}: {err}");

    let count = proxy.count(op);
    eprintln!("{mode:?}: {op} {count:?}");
    assert!(count.seen >= 1 && count.forwarded == count.seen && count.faulted == count.seen);
    // Every attempt was enqueued although the SDK saw none succeed (the
    // SDK retries a broken connection, so one call leaves up to 3).
    let bodies = bodies_on_queue(&direct, &queue_url).await;
    assert_eq!(bodies.len() as u64, count.forwarded, "{bodies:?}");
    assert!(bodies.iter().all(|b| b == "ambiguous"));

    // Healed mid-run, the same client and proxy work again.
    proxy.faults().heal();
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("healed")
        .send()
        .await
        .expect("send after heal");
    assert_eq!(bodies_on_queue(&direct, &queue_url).await, ["healed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_send_close_enqueues_but_fails() {
    ambiguous_send(AmbiguousMode::Close, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_send_reset_enqueues_but_fails() {
    ambiguous_send(AmbiguousMode::Reset, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_send_truncate_enqueues_but_fails() {
    ambiguous_send(AmbiguousMode::Truncate, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_send_batch_enqueues_but_fails() {
    ambiguous_send(AmbiguousMode::Close, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddb_throttle_fails_writes_after_retries_without_writing() {
    let sdk = common::aws().await;
    let direct = aws_sdk_dynamodb::Client::new(&sdk);
    let table = table(&direct).await;
    let proxy = FaultProxy::for_stack().await;
    let (_, ddb) = via_proxy(&sdk, &proxy);
    proxy.faults().set_ddb_throttle_rate(1.0);

    let err = update(&ddb, &table, "throttled")
        .await
        .expect_err("a throttled write must fail");
    assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
    assert!(
        matches!(
            err.as_service_error(),
            Some(UpdateItemError::ProvisionedThroughputExceededException(_))
        ),
        "{err:?}"
    );
    let count = proxy.count("UpdateItem");
    eprintln!("throttled UpdateItem: {count:?}");
    // The SDK retried (throttling is retryable) and every attempt was refused.
    assert_eq!((count.seen, count.forwarded, count.faulted), (3, 0, 3));

    // Reads pass while writes are throttled, and nothing was written.
    let got = ddb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("throttled".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("reads are not throttled");
    assert!(got.item.is_none());
    assert_eq!(proxy.count("GetItem").forwarded, 1);

    // 500s instead of throttling.
    proxy.faults().set_ddb_throttle_rate(0.0);
    proxy.faults().set_ddb_error_rate(1.0);
    let err = put(&ddb, &table, "errored")
        .await
        .expect_err("a failed write must fail");
    assert_eq!(err.code(), Some("InternalServerError"));
    assert!(
        matches!(
            err.as_service_error(),
            Some(PutItemError::InternalServerError(_))
        ),
        "{err:?}"
    );
    assert_eq!(proxy.count("PutItem").forwarded, 0);

    proxy.faults().heal();
    put(&ddb, &table, "healed").await.expect("write after heal");
    let scan = direct.scan().table_name(&table).send().await.unwrap();
    assert_eq!(scan.count, 1, "only the healed write landed: {scan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_every_request() {
    let sdk = common::aws().await;
    let proxy = FaultProxy::for_stack().await;
    let (sqs, _) = via_proxy(&sdk, &proxy);
    // Warm the connection so the measurement is the delay, not set-up.
    sqs.list_queues().send().await.expect("list via proxy");

    let latency = Duration::from_millis(300);
    proxy.faults().set_latency(latency);
    for _ in 0..2 {
        let started = Instant::now();
        sqs.list_queues().send().await.expect("list via proxy");
        let elapsed = started.elapsed();
        assert!(elapsed >= latency, "{elapsed:?} < {latency:?}");
    }
    assert_eq!(proxy.count("ListQueues").seen, 3);
}

#[tokio::test]
async fn drop_stops_the_proxy() {
    let proxy = FaultProxy::for_stack().await;
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(&addr)
        .await
        .expect("the proxy listens");
    drop(proxy);
    // The abort lands when the runtime next polls the accept task.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn same_seed_same_faults() {
    let draws = |seed| {
        let proxy_faults = Faults::for_seed(seed);
        (0..64).map(|_| proxy_faults.roll(0.3)).collect::<Vec<_>>()
    };
    assert_eq!(draws(7), draws(7));
    assert_ne!(draws(7), draws(8));
    let hits = draws(7).iter().filter(|&&hit| hit).count();
    assert!((5..=35).contains(&hits), "{hits} of 64 at rate 0.3");
    // Rates 0 and 1 are certain and draw nothing.
    let faults = Faults::for_seed(1);
    assert!(!faults.roll(0.0) && faults.roll(1.0));
}

#[test]
fn classify_json_and_query_protocols() {
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        "x-amz-target",
        "DynamoDB_20120810.UpdateItem".parse().unwrap(),
    );
    let op = classify(&headers, None, b"{}").unwrap();
    assert_eq!(
        (op.service, op.name.as_str()),
        (Service::DynamoDb, "UpdateItem")
    );

    headers.insert(
        "x-amz-target",
        "AmazonSQS.SendMessageBatch".parse().unwrap(),
    );
    let op = classify(&headers, None, b"{}").unwrap();
    assert_eq!(
        (op.service, op.name.as_str()),
        (Service::Sqs, "SendMessageBatch")
    );

    let none = hyper::HeaderMap::new();
    let body = b"QueueUrl=http%3A%2F%2Fq&Action=SendMessage&Version=2012-11-05";
    let op = classify(&none, None, body).unwrap();
    assert_eq!(
        (op.service, op.name.as_str()),
        (Service::Sqs, "SendMessage")
    );
    assert_eq!(op.raw, "Action=SendMessage");
    let op = classify(&none, Some("Action=ListQueues"), b"").unwrap();
    assert_eq!(op.name, "ListQueues");
    assert!(classify(&none, None, b"{}").is_none());
}
