//! The Python consumer recipe (examples/python-consumer): the real
//! `aws-lambda-powertools` package (installed into .venv by
//! scripts/tools.sh), its DynamoDB persistence on the local stand-in, fed
//! the messages the relay really sent, including a row sent twice.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{Db, Fixture, Opts};
use serde_json::{Value, json};

/// Every message on the queue, as the records of Lambda's SQS event.
async fn records(f: &Fixture) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let got = common::receive_some(&f.sqs, &f.queue_url, 0).await;
        for m in &got {
            let attrs: serde_json::Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let value = json!({
                        "stringValue": v.string_value(),
                        "dataType": v.data_type(),
                        "stringListValues": [], "binaryListValues": []
                    });
                    (k.clone(), value)
                })
                .collect();
            out.push(json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0",
                               "SenderId": "local", "ApproximateFirstReceiveTimestamp": "0"},
                "messageAttributes": attrs,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:outbox",
                "awsRegion": "us-east-1",
            }));
        }
    }
    out
}

fn run_consumer(event: &Value, idempotency: &str, effects: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python-consumer");
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let mut child = Command::new(python)
        .arg("run_event.py")
        .current_dir(dir)
        .env("IDEMPOTENCY_TABLE", idempotency)
        .env("EFFECTS_TABLE", effects)
        .env("POWERTOOLS_SERVICE_NAME", "outbox-consumer")
        // boto3 reads the region from AWS_DEFAULT_REGION.
        .env(
            "AWS_DEFAULT_REGION",
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (scripts/tools.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("consumer output is not JSON ({e}): {text}"))
}

async fn applied(f: &Fixture, effects: &str, row: &str) -> Option<String> {
    f.ddb
        .get_item()
        .table_name(effects)
        .key("row", AttributeValue::S(row.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .and_then(|i| i.get("applied"))
        .and_then(|v| v.as_n().ok())
        .cloned()
}

async fn a_row_the_relay_sent_twice_has_its_effect_once_in_the_python_consumer(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f
        .insert(&[(Some("body"), None), (Some("other"), None)])
        .await;
    f.drain().await;
    // The crash between send and mark, as in tests/relay.rs: the row is
    // back, its claim expired, and the relay sends it a second time.
    f.crash_between_send_and_mark(&ids[0], "body", None).await;
    assert_eq!(f.drain().await.sent, 1);

    let records = records(&f).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let twice: Vec<&Value> = records
        .iter()
        .filter(|r| r["messageAttributes"]["outbox-id"]["stringValue"] == ids[0].as_str())
        .collect();
    assert_eq!(twice.len(), 2);
    assert_ne!(
        twice[0]["messageId"], twice[1]["messageId"],
        "two deliveries, two SQS message ids"
    );

    let idempotency = common::hash_key_table(&f.ddb, "py", "id").await;
    let effects = common::hash_key_table(&f.ddb, "py", "row").await;
    // First the one delivery of each row, then the duplicate on its own
    // (a later invocation, as SQS would bring it).
    let first = json!({"Records": [twice[0], records.iter().find(|r| r["messageAttributes"]["outbox-id"]["stringValue"] == ids[1].as_str()).unwrap()]});
    assert_eq!(
        run_consumer(&first, &idempotency, &effects),
        json!({"batchItemFailures": []})
    );
    let again = json!({"Records": [twice[1]]});
    assert_eq!(
        run_consumer(&again, &idempotency, &effects),
        json!({"batchItemFailures": []})
    );
    assert_eq!(applied(&f, &effects, &ids[0]).await.as_deref(), Some("1"));
    assert_eq!(applied(&f, &effects, &ids[1]).await.as_deref(), Some("1"));
}

both_databases!(a_row_the_relay_sent_twice_has_its_effect_once_in_the_python_consumer);
