//! The baseline of `make bench`: the per-row outbox relay of the blog posts
//! this project started from, on the same contract and the same stack, so
//! the relay's figures can be read as a ratio over it.
//!
//! One row at a time, each step waiting for the one before: select one row
//! (`FOR UPDATE SKIP LOCKED`), claim it in the ledger (one conditional
//! write), `SendMessage`, mark it SENT, delete it, commit. It keeps the
//! relay's promises for the happy path (claim key, message attributes, FIFO
//! ids) and none of its speed: no batches, no concurrency, no pipelining.
//! PostgreSQL only (the bench's database); no poison-row handling.
//!
//! `cargo run --release --example naive_relay` with the relay's environment
//! (`DATABASE_URL`, `QUEUE_URL`, `CLAIMS_TABLE`, `OUTBOX_*`); prints
//! `{"sent":N,"elapsed_ms":M}` when the table is empty.

use std::time::Instant;

use anyhow::Context;
use aws_sdk_sqs::types::MessageAttributeValue;
use outbox_relay::config::{Config, DatabaseLocator};
use outbox_relay::ledger::{Claim, Ledger, Mark};
use outbox_relay::message::{ATTR_ID, ATTR_SOURCE, dedup_id};
use outbox_relay::queue::Receipt;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let DatabaseLocator::Url(url) = &config.database else {
        anyhow::bail!("naive_relay: set DATABASE_URL");
    };
    let pool = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(url))
        .await
        .context("connect")?;
    let aws = outbox_relay::aws::sdk_config()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let ledger = Ledger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.claims_table.clone(),
        config.lease,
        config.retention,
    );
    let source = config.table.to_string();
    let owner = format!("naive-{}", uuid::Uuid::new_v4());
    // Identifiers come validated from Config; quoted as the relay quotes them.
    let group = config
        .group_column
        .as_ref()
        .map_or("NULL".to_owned(), |g| format!("\"{g}\"::text"));
    let select = format!(
        "SELECT \"{id}\"::text, \"{payload}\"::text, {group} FROM {table} \
         ORDER BY \"{id}\" LIMIT 1 FOR UPDATE SKIP LOCKED",
        id = config.id_column,
        payload = config.payload_column,
        table = quoted(&config),
    );
    let delete = format!(
        "DELETE FROM {} WHERE \"{}\"::text = $1",
        quoted(&config),
        config.id_column
    );

    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let Some(row) = sqlx::query(AssertSqlSafe(select.clone()))
            .fetch_optional(&mut *tx)
            .await?
        else {
            break;
        };
        let (key, body, group): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        let pk = format!("{source}#{key}");
        match ledger.claim(&pk, &owner, &sha).await? {
            Claim::Won(_) | Claim::TookOverReused(_) => {}
            Claim::AlreadySent => {}
            Claim::HeldByOther => continue,
        }
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let mut send = sqs
            .send_message()
            .queue_url(&config.queue_url)
            .message_body(&body)
            .message_attributes(ATTR_ID, attr(&key)?)
            .message_attributes(ATTR_SOURCE, attr(&source)?);
        if config.is_fifo() {
            send = send
                .message_group_id(group.unwrap_or_else(|| source.clone()))
                .message_deduplication_id(dedup_id(&source, &key, &sha));
        }
        let out = send.send().await.context("SendMessage")?;
        let receipt = Receipt {
            message_id: out.message_id.unwrap_or_default(),
            sequence_number: out.sequence_number,
        };
        if ledger.mark_sent(&pk, &owner, &receipt).await? != Mark::Marked {
            anyhow::bail!("{pk}: mark fenced");
        }
        sqlx::query(AssertSqlSafe(delete.clone()))
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sent += 1;
    }
    println!(
        "{{\"sent\":{sent},\"elapsed_ms\":{}}}",
        started.elapsed().as_millis()
    );
    Ok(())
}

fn quoted(config: &Config) -> String {
    match &config.table.schema {
        Some(schema) => format!("\"{schema}\".\"{}\"", config.table.table),
        None => format!("\"{}\"", config.table.table),
    }
}
