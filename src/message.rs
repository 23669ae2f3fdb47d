//! From an outbox row to the SQS message the contract describes, or to the
//! reason it can never be one (a poison row).
//!
//! Everything here is pure: the same row always gives the same body hash,
//! group id and deduplication id, which is what makes a resend recognisable
//! (by the ledger and by FIFO deduplication).

use sha2::{Digest, Sha256};

use crate::shaping::{Routes, Shape, Shaped, shape};

/// The `outbox-id` message attribute: the row key.
pub const ATTR_ID: &str = "outbox-id";
/// The `outbox-source` message attribute: the table name.
pub const ATTR_SOURCE: &str = "outbox-source";

/// DynamoDB's limit on a partition key, which the ledger key
/// `"<table>#<row key>"` must fit.
pub const MAX_LEDGER_KEY_BYTES: usize = 2048;

/// One row as read from the outbox table, every column as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The row key, rendered as text (integers, UUIDs and strings alike).
    pub key: String,
    /// The payload column: `None` when NULL, `Err` when it is not UTF-8 text.
    pub payload: Option<Result<String, NotText>>,
    /// The group column, when configured and not NULL.
    pub group: Option<String>,
    /// The optional shaping columns (route, attributes, trace).
    pub shape: Shape,
}

/// A payload column whose bytes are not UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotText;

/// A message ready to send, with the values the ledger records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The row key (`outbox-id`).
    pub key: String,
    /// The body: the payload column's text.
    pub body: String,
    /// Hex SHA-256 of the body, as stored in the ledger.
    pub payload_sha256: String,
    /// FIFO only: `MessageGroupId`.
    pub group_id: Option<String>,
    /// FIFO only: `MessageDeduplicationId`.
    pub dedup_id: Option<String>,
    /// Size as SQS counts it: body plus attribute names, types and values.
    pub size: usize,
    /// The queue (index in the relay's list; 0 is `QUEUE_URL`), the
    /// attributes beyond the relay's own, and the X-Ray trace header.
    pub shaped: Shaped,
}

impl Message {
    /// Bytes this message adds to a `SendMessageBatch` request: its size,
    /// plus the trace header, which SQS leaves out of the message size.
    pub fn request_bytes(&self) -> usize {
        self.size
            + self
                .shaped
                .trace_header
                .as_ref()
                .map_or(0, |t| "AWSTraceHeader".len() + "String".len() + t.len())
    }
}

/// The row's payload as a message body, or why it cannot be one.
fn checked_body(row: &OutboxRow) -> Result<&str, String> {
    let body = match &row.payload {
        None => return Err("payload is NULL".to_owned()),
        Some(Err(NotText)) => return Err("payload is not UTF-8 text".to_owned()),
        Some(Ok(body)) => body,
    };
    if body.is_empty() {
        return Err("payload is empty; SQS needs at least one character".to_owned());
    }
    Ok(body)
}

/// Refuses text with a character SQS does not accept, saying where.
fn check_chars(what: &str, text: &str) -> Result<(), String> {
    match text.char_indices().find(|(_, c)| !sqs_allows(*c)) {
        Some((at, c)) => Err(format!(
            "{what} has a character SQS does not accept (U+{:04X} at byte {at})",
            c as u32
        )),
        None => Ok(()),
    }
}

/// What the message builder needs to know about the target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table name as configured (`outbox-source`, ledger key prefix).
    pub source: String,
    /// FIFO queue: group and deduplication ids are required.
    pub fifo: bool,
    /// Each queue's `MaximumMessageSize` in bytes (0: `QUEUE_URL`, then
    /// the routes' queues).
    pub max_message_bytes: Vec<usize>,
    /// Route names to queues.
    pub routes: Routes,
}

impl Target {
    /// Builds the message for `row`, or says why the row is poison.
    pub fn message(&self, row: &OutboxRow) -> Result<Message, String> {
        let body = checked_body(row)?;
        self.check_key(&row.key)?;
        check_chars("payload", body)?;
        let shaped = shape(&row.shape, &self.routes)?;
        let size = self.message_bytes(row, body, &shaped);
        let max = self.max_message_bytes[shaped.queue];
        if size > max {
            return Err(format!(
                "message is {size} bytes; the queue accepts at most {max}"
            ));
        }
        let payload_sha256 = hex::encode(Sha256::digest(body.as_bytes()));
        let (group_id, dedup_id) = if self.fifo {
            (
                Some(self.group_of(row)?),
                Some(dedup_id(&self.source, &row.key, &payload_sha256)),
            )
        } else {
            (None, None)
        };
        Ok(Message {
            key: row.key.clone(),
            body: body.to_owned(),
            payload_sha256,
            group_id,
            dedup_id,
            size,
            shaped,
        })
    }

    /// Refuses a key SQS or the ledger could not carry.
    fn check_key(&self, key: &str) -> Result<(), String> {
        // The key travels as the `outbox-id` attribute, which SQS checks
        // like the body, and which it refuses empty.
        if key.is_empty() {
            return Err("row key is empty; SQS refuses an empty outbox-id attribute".to_owned());
        }
        check_chars("row key", key)?;
        // Such a row could never be claimed: quarantined, its group moves on.
        let pk_bytes = self.ledger_key(key).len();
        if pk_bytes > MAX_LEDGER_KEY_BYTES {
            return Err(format!(
                "row key is {} bytes; with the \"{}#\" prefix its ledger key is {pk_bytes} bytes, over DynamoDB's {MAX_LEDGER_KEY_BYTES}-byte partition key limit",
                key.len(),
                self.source
            ));
        }
        Ok(())
    }

    /// The message's size as SQS counts it: body and message attributes.
    fn message_bytes(&self, row: &OutboxRow, body: &str, shaped: &Shaped) -> usize {
        let attribute = |name: &str, value: &str| name.len() + "String".len() + value.len();
        body.len()
            + attribute(ATTR_ID, &row.key)
            + attribute(ATTR_SOURCE, &self.source)
            + shaped
                .attributes
                .iter()
                .map(|(n, v)| attribute(n, v))
                .sum::<usize>()
    }

    /// The FIFO `MessageGroupId` of a row: its group, else the table name.
    fn group_of(&self, row: &OutboxRow) -> Result<String, String> {
        let group = row.group.clone().unwrap_or_else(|| self.source.clone());
        if !valid_fifo_id(&group) {
            return Err(format!(
                "group value is not a valid MessageGroupId (1-128 characters of \
                 letters, digits and ASCII punctuation; {} characters given)",
                group.chars().count()
            ));
        }
        Ok(group)
    }

    /// The ledger key of a row: `"<table>#<row key>"`.
    pub fn ledger_key(&self, row_key: &str) -> String {
        format!("{}#{row_key}", self.source)
    }
}

/// `MessageDeduplicationId`: a stable function of table, row key and body
/// hash, so a resend of the same row is dropped by SQS while a new row under
/// a reused id is not. Hex SHA-256 is 64 characters, within SQS's 128.
pub fn dedup_id(source: &str, key: &str, payload_sha256: &str) -> String {
    let mut h = Sha256::new();
    // Length-prefixed, so ("a#b", "c") and ("a", "b#c") cannot collide.
    for part in [source, key, payload_sha256] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// SQS accepts #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
pub(crate) fn sqs_allows(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// FIFO group and deduplication ids: 1-128 of alphanumerics and punctuation.
fn valid_fifo_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(fifo: bool) -> Target {
        Target {
            source: "outbox".into(),
            fifo,
            max_message_bytes: vec![1024],
            routes: Routes::default(),
        }
    }

    fn row(payload: Option<&str>, group: Option<&str>) -> OutboxRow {
        OutboxRow {
            key: "42".into(),
            payload: payload.map(|p| Ok(p.to_owned())),
            group: group.map(str::to_owned),
            shape: Shape::default(),
        }
    }

    #[test]
    fn a_standard_message_has_no_fifo_ids() {
        let m = target(false).message(&row(Some("{}"), None)).unwrap();
        assert_eq!(m.body, "{}");
        assert_eq!(m.group_id, None);
        assert_eq!(m.dedup_id, None);
        assert_eq!(m.payload_sha256.len(), 64);
    }

    #[test]
    fn fifo_ids_are_stable_and_change_with_the_payload() {
        let t = target(true);
        let a = t.message(&row(Some("a"), Some("g1"))).unwrap();
        let a2 = t.message(&row(Some("a"), Some("g1"))).unwrap();
        let b = t.message(&row(Some("b"), Some("g1"))).unwrap();
        assert_eq!(a.dedup_id, a2.dedup_id);
        assert_ne!(a.dedup_id, b.dedup_id);
        assert_eq!(a.group_id.as_deref(), Some("g1"));
        let no_group = t.message(&row(Some("a"), None)).unwrap();
        assert_eq!(no_group.group_id.as_deref(), Some("outbox"));
        assert!(a.dedup_id.unwrap().len() <= 128);
    }

    #[test]
    fn poison_rows_say_why() {
        let t = target(true);
        assert!(t.message(&row(None, None)).unwrap_err().contains("NULL"));
        assert!(
            t.message(&row(Some(""), None))
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            t.message(&row(Some("a\u{1}b"), None))
                .unwrap_err()
                .contains("U+0001")
        );
        assert!(
            t.message(&row(Some(&"x".repeat(2000)), None))
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(
            t.message(&row(Some("a"), Some("has space")))
                .unwrap_err()
                .contains("MessageGroupId")
        );
        assert!(
            t.message(&row(Some("a"), Some(&"g".repeat(129))))
                .unwrap_err()
                .contains("MessageGroupId")
        );
        let empty_key = OutboxRow {
            key: String::new(),
            ..row(Some("a"), None)
        };
        assert!(t.message(&empty_key).unwrap_err().contains("key is empty"));
        let long = OutboxRow {
            key: "k".repeat(2048 - "outbox#".len() + 1),
            ..row(Some("a"), None)
        };
        assert!(t.message(&long).unwrap_err().contains("2048-byte"));
        let longest = OutboxRow {
            key: "k".repeat(2048 - "outbox#".len()),
            ..row(Some("a"), None)
        };
        let roomy = Target {
            max_message_bytes: vec![262_144],
            ..target(true)
        };
        assert!(roomy.message(&longest).is_ok());
        let not_text = OutboxRow {
            key: "1".into(),
            payload: Some(Err(NotText)),
            group: None,
            shape: Shape::default(),
        };
        assert!(t.message(&not_text).unwrap_err().contains("UTF-8"));
    }
}
