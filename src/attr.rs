//! DynamoDB attribute values, both ways, for the ledger and the consumer
//! guard. Their writes are update expressions with conditions, built from
//! placeholders, so a serde mapping of whole items (`serde_dynamo`) would
//! serve only the batch mark; these four small functions serve all.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// A string attribute.
pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// A number attribute.
pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A string attribute of an item, when it is there and a string.
pub fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A number attribute of an item, when it is there and a whole number.
pub fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
