//! The stack's AWS side: the SDK configuration, unique names, and the
//! DynamoDB tables and SQS queues tests make for themselves.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// The AWS SDK configuration the relay itself uses (the stack's endpoints).
pub async fn aws() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the tests with `make test`"
    );
    outbox_relay::aws::sdk_config().await.expect("AWS config")
}

/// `<prefix>_<12 random hex digits>`: a name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh DynamoDB table keyed on `pk` (string), as the ledger and the
/// consumer guard need, named `<prefix>_<random>`.
pub async fn pk_table(ddb: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    super::hash_key_table(ddb, prefix, "pk").await
}

/// A fresh DynamoDB table keyed on the string attribute `key` (a
/// consumer's own dedup table, say), named `<prefix>_<random>`.
pub async fn hash_key_table(ddb: &aws_sdk_dynamodb::Client, prefix: &str, key: &str) -> String {
    let table = unique(prefix);
    let created = ddb
        .create_table()
        .table_name(&table)
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
        .await;
    match created {
        Ok(_) => {}
        // The stand-in is shared with other tests and can stall past an
        // attempt timeout; the SDK's retry then finds the table its first
        // attempt made.
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) => {}
        Err(e) => panic!("create table: {e:?}"),
    }
    table
}

/// The item of `pk` in `table`, read consistently.
pub async fn get_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    ddb.get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

/// Creates the queue `name` with `attributes` and returns its URL. A name
/// ending in `.fifo` makes a FIFO queue (SQS wants both, name and
/// attribute).
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut create = sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    for (attribute, value) in attributes {
        create = create.attributes(attribute.clone(), value);
    }
    create
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .unwrap()
        .to_owned()
}
