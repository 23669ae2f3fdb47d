//! The Python consumer recipe (examples/python-consumer): the real
//! `aws-lambda-powertools` package (installed into .venv by
//! scripts/tools.sh), its DynamoDB persistence on the local stand-in, fed
//! the messages the relay really sent, including a row sent twice.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use common::{Db, Fixture, Opts, now_ms, sha};
use serde_json::{Value, json};

async fn table(f: &Fixture, key: &str) -> String {
    let name = format!("py_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    f.ddb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// Every message on the queue, as the records of Lambda's SQS event.
async fn records(f: &Fixture) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let got = f
            .sqs
            .receive_message()
            .queue_url(&f.queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .visibility_timeout(300)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
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
    f.pool
        .exec(format!(
            "INSERT INTO {} (id, payload) VALUES ({}, 'body')",
            f.table, ids[0]
        ))
        .await;
    f.seed_ledger(&ids[0], "CLAIMED", "crashed", now_ms() - 1, &sha("body"))
        .await;
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

    let idempotency = table(&f, "id").await;
    let effects = table(&f, "row").await;
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
