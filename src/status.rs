//! "Where is my event?": everything the relay knows of one row key, from
//! the ledger item and from the two tables.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::admin::{Db, epoch_seconds, has_column, key_type, rfc3339_ms, rfc3339_text};
use crate::config::Config;

/// The ledger item of a row, as stored (times also as RFC 3339 UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerView {
    /// `CLAIMED` or `SENT`.
    pub state: String,
    /// The relay pass that claimed it.
    pub owner: Option<String>,
    /// Claims made on the row.
    pub attempts: Option<u64>,
    /// End of the claim's lease.
    pub lease_until: Option<String>,
    /// True while the lease of a CLAIMED item runs.
    pub lease_live: bool,
    /// SQS `MessageId` (once SENT).
    pub message_id: Option<String>,
    /// FIFO `SequenceNumber` (once SENT on a FIFO queue).
    pub sequence_number: Option<String>,
    /// When it was marked SENT.
    pub sent_at: Option<String>,
    /// Hex SHA-256 of the body as sent.
    pub payload_sha256: Option<String>,
    /// When DynamoDB's TTL may remove the item.
    pub expires_at: Option<String>,
}

/// A row's dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Why it was quarantined.
    pub reason: String,
    /// When.
    pub failed_at: Option<String>,
}

/// Everything known of one row key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The row key.
    pub id: String,
    /// The outbox table.
    pub table: String,
    /// True while the row is in the outbox (not sent yet, or sent and not
    /// yet deleted).
    pub in_outbox: bool,
    /// The dead letter, when the row is in the dead-letter table.
    pub dead_letter: Option<DeadLetterView>,
    /// The ledger item, when there is one.
    pub ledger: Option<LedgerView>,
}

impl Status {
    /// True when nothing anywhere knows the id.
    pub fn unknown(&self) -> bool {
        !self.in_outbox && self.dead_letter.is_none() && self.ledger.is_none()
    }

    /// The lines `outbox-relay status` prints.
    pub fn to_text(&self) -> String {
        let mut s = format!("row {} of {}\n", self.id, self.table);
        let verdict = match (&self.ledger, self.in_outbox, &self.dead_letter) {
            (_, _, Some(_)) => "quarantined: in the dead-letter table",
            (Some(l), false, None) if l.state == crate::ledger::SENT => {
                "sent, and deleted from the outbox"
            }
            (Some(l), true, None) if l.state == crate::ledger::SENT => {
                "sent; the next pass deletes it from the outbox"
            }
            (Some(l), true, None) if l.lease_live => "being relayed: claimed, lease running",
            (_, true, None) => "waiting in the outbox",
            (Some(_), false, None) => {
                "claimed but no longer in the outbox (deleted by hand, or replayed later)"
            }
            (None, false, None) => {
                "unknown: not in the outbox, the dead-letter table or the ledger"
            }
        };
        s += &format!("  status:          {verdict}\n");
        s += &format!(
            "  in outbox:       {}\n",
            if self.in_outbox { "yes" } else { "no" }
        );
        match &self.dead_letter {
            Some(d) => {
                s += &format!("  dead letter:     {}\n", d.reason);
                if let Some(at) = &d.failed_at {
                    s += &format!("  failed at:       {at}\n");
                }
            }
            None => s += "  dead letter:     no\n",
        }
        let Some(l) = &self.ledger else {
            s += "  ledger:          no item (never claimed, or expired by TTL)\n";
            return s;
        };
        s += &format!("  ledger state:    {}\n", l.state);
        let mut line = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                s += &format!("  {name:<16} {v}\n");
            }
        };
        line("owner:", &l.owner);
        line("attempts:", &l.attempts.map(|a| a.to_string()));
        line("lease until:", &l.lease_until);
        line("message id:", &l.message_id);
        line("sequence number:", &l.sequence_number);
        line("sent at:", &l.sent_at);
        line("payload sha256:", &l.payload_sha256);
        line("expires at:", &l.expires_at);
        s
    }
}

/// Looks `id` up in the ledger and both tables.
pub async fn lookup(
    db: &Db,
    ddb: &aws_sdk_dynamodb::Client,
    cfg: &Config,
    id: &str,
) -> anyhow::Result<Status> {
    let in_outbox = in_outbox(db, cfg, id).await?;
    let dead_letter = dead_letter(db, cfg, id).await?;
    let pk = format!("{}#{id}", cfg.table);
    let item = ddb
        .get_item()
        .table_name(&cfg.claims_table)
        .key("pk", AttributeValue::S(pk))
        .consistent_read(true)
        .send()
        .await
        .with_context(|| format!("cannot read the ledger {}", cfg.claims_table))?;
    Ok(Status {
        id: id.to_owned(),
        table: cfg.table.to_string(),
        in_outbox,
        dead_letter,
        ledger: item.item().map(ledger_view),
    })
}

/// Whether the outbox holds a row with key `id`.
async fn in_outbox(db: &Db, cfg: &Config, id: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let out_cols = db.columns(&cfg.table).await?;
    let id_type = key_type(&out_cols, &cfg.id_column, &cfg.table, "OUTBOX_ID_COLUMN", d)?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = {}",
        d.as_text(&d.quote(&cfg.id_column)),
        d.quote_table(&cfg.table),
        d.quote(&cfg.id_column),
        d.key_param(1, &id_type)
    );
    Ok(!db.text_rows(&sql, &[id]).await?.is_empty())
}

/// The dead letter of key `id`, if the dead-letter table holds one.
async fn dead_letter(db: &Db, cfg: &Config, id: &str) -> anyhow::Result<Option<DeadLetterView>> {
    let d = db.dialect();
    let dl_cols = db.columns(&cfg.dead_letter_table).await?;
    let dl_id_type = key_type(
        &dl_cols,
        &crate::ident::Ident::parse("id").expect("valid"),
        &cfg.dead_letter_table,
        "OUTBOX_DEAD_LETTER_TABLE",
        d,
    )?;
    let failed = match has_column(&dl_cols, "failed_at", d) {
        true => epoch_seconds(d, "failed_at"),
        false => "NULL".to_owned(),
    };
    let sql = format!(
        "SELECT reason, {failed} FROM {} WHERE id = {}",
        d.quote_table(&cfg.dead_letter_table),
        d.key_param(1, &dl_id_type)
    );
    Ok(db
        .text_rows(&sql, &[id])
        .await?
        .into_iter()
        .next()
        .map(|r| DeadLetterView {
            reason: r[0].clone().unwrap_or_default(),
            failed_at: rfc3339_text(r[1].as_deref()),
        }))
}

fn ledger_view(item: &HashMap<String, AttributeValue>) -> LedgerView {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let state = text("state").unwrap_or_default();
    let lease = num("lease_until_ms");
    LedgerView {
        lease_live: state == crate::ledger::CLAIMED
            && lease.is_some_and(|l| l > crate::ledger::now_ms()),
        state,
        owner: text("owner"),
        attempts: num("attempts"),
        lease_until: lease.map(rfc3339_ms),
        message_id: text("message_id"),
        sequence_number: text("sequence_number"),
        sent_at: num("sent_at_ms").map(rfc3339_ms),
        payload_sha256: text("payload_sha256"),
        expires_at: num("expires_at").map(|s| rfc3339_ms(s * 1000)),
    }
}
