//! DynamoDB attribute values, both ways, and the names behind expression
//! placeholders, for the ledger and the consumer guard. Their writes are
//! update expressions with conditions, built from placeholders, so a serde
//! mapping of whole items (`serde_dynamo`) would serve only the batch mark;
//! these small functions serve all.

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

/// Each `#x` placeholder the ledger's and the guard's expressions use, and
/// the item attribute it stands for: written once, for every expression.
const NAMES: &[(&str, &str)] = &[
    ("#s", "state"),
    ("#o", "owner"),
    ("#l", "lease_until_ms"),
    ("#h", "payload_sha256"),
    ("#e", "expires_at"),
    ("#a", "attempts"),
    ("#m", "message_id"),
    ("#q", "sequence_number"),
    ("#t", "sent_at_ms"),
];

/// The `ExpressionAttributeNames` of these expressions: exactly the
/// placeholders they use (DynamoDB refuses a name no expression uses).
///
/// # Panics
/// On a placeholder missing from [`NAMES`]: a mistake in the expression
/// text, which every test that writes would find.
pub fn names(expressions: &[&str]) -> HashMap<String, String> {
    expressions
        .iter()
        .flat_map(|e| e.split(|c: char| !(c == '#' || c.is_ascii_alphanumeric() || c == '_')))
        .filter(|token| token.starts_with('#'))
        .map(|token| {
            let (_, name) = NAMES
                .iter()
                .find(|(p, _)| *p == token)
                .unwrap_or_else(|| panic!("expression placeholder {token} has no name"));
            (token.to_owned(), (*name).to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_exactly_the_placeholders_used() {
        let names = super::names(&["SET #s = :x, #o = :me REMOVE #t", "#s = :y"]);
        assert_eq!(names.len(), 3);
        assert_eq!(names["#s"], "state");
        assert_eq!(names["#t"], "sent_at_ms");
    }
}
