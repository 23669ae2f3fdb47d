//! The relay's DynamoDB ledger as a test sees it: reading a row's item,
//! seeding one as another relay would have left it, and the values the
//! ledger stores (payload hashes, milliseconds since the epoch).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Fixture, get_item};

impl Fixture {
    /// The ledger's key of a row key: `<outbox table>#<key>`.
    fn ledger_key(&self, key: &str) -> String {
        format!("{}#{key}", self.table)
    }

    /// The ledger item of a row key.
    pub async fn ledger(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        get_item(&self.ddb, &self.claims_table, &self.ledger_key(key)).await
    }

    /// The `state` of a row's ledger item, if it has one.
    pub async fn ledger_state(&self, key: &str) -> Option<String> {
        self.ledger(key)
            .await
            .and_then(|i| i.get("state").and_then(|v| v.as_s().ok()).cloned())
    }

    /// Seeds a ledger item, as a crashed or concurrent relay would leave it.
    pub async fn seed_ledger(
        &self,
        key: &str,
        state: &str,
        owner: &str,
        lease_until_ms: u64,
        sha: &str,
    ) {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        self.ddb
            .put_item()
            .table_name(&self.claims_table)
            .item("pk", s(&self.ledger_key(key)))
            .item("state", s(state))
            .item("owner", s(owner))
            .item(
                "lease_until_ms",
                AttributeValue::N(lease_until_ms.to_string()),
            )
            .item("payload_sha256", s(sha))
            .item("attempts", AttributeValue::N("1".into()))
            .send()
            .await
            .unwrap();
    }

    /// Puts a sent row back as a crash between send and mark leaves it:
    /// the message is out, the row is in the table again (with `group` in
    /// the group column, if given), and its claim has expired.
    pub async fn crash_between_send_and_mark(&self, key: &str, payload: &str, group: Option<&str>) {
        let (columns, values) = match group {
            Some(g) => (
                "id, payload, group_key",
                format!("{key}, '{payload}', '{g}'"),
            ),
            None => ("id, payload", format!("{key}, '{payload}'")),
        };
        self.pool
            .exec(format!(
                "INSERT INTO {} ({columns}) VALUES ({values})",
                self.table
            ))
            .await;
        self.seed_ledger(key, "CLAIMED", "crashed", now_ms() - 1, &sha(payload))
            .await;
    }
}

/// Hex SHA-256 of a body, as the ledger stores it.
pub fn sha(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// Milliseconds since the epoch, by the relay's own clock function.
pub fn now_ms() -> u64 {
    outbox_relay::ledger::now_ms()
}
