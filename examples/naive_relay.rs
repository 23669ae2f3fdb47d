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
use aws_sdk_sqs::error::BuildError;
use aws_sdk_sqs::types::MessageAttributeValue;
use outbox_relay::config::{Config, DatabaseLocator};
use outbox_relay::ledger::{Claim, Ledger, Mark};
use outbox_relay::message::{ATTR_ID, ATTR_SOURCE, dedup_id};
use outbox_relay::queue::Receipt;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

/// The naive relay: its clients, its owner token and its two statements,
/// set up once before the clock starts.
struct Naive {
    config: Config,
    pool: sqlx::PgPool,
    sqs: aws_sdk_sqs::Client,
    ledger: Ledger,
    source: String,
    owner: String,
    select: String,
    delete: String,
}

/// What one pass over the table did.
enum Pass {
    /// The select found no row: the table is empty.
    Empty,
    /// A row was sent, marked and deleted.
    Sent,
    /// Another owner holds the row's claim: left alone, rolled back.
    Skipped,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let naive = Naive::connect(config).await?;

    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        match naive.relay_one().await? {
            Pass::Empty => break,
            Pass::Sent => sent += 1,
            Pass::Skipped => {}
        }
    }
    println!(
        "{{\"sent\":{sent},\"elapsed_ms\":{}}}",
        started.elapsed().as_millis()
    );
    Ok(())
}

impl Naive {
    /// Connects to PostgreSQL, SQS and the ledger, and prepares the
    /// statements.
    async fn connect(config: Config) -> anyhow::Result<Naive> {
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
        Ok(Naive {
            source: config.table.to_string(),
            owner: format!("naive-{}", uuid::Uuid::new_v4()),
            select: select_statement(&config),
            delete: delete_statement(&config),
            config,
            pool,
            sqs,
            ledger,
        })
    }

    /// One row, each step waiting for the one before: select, claim, send,
    /// mark, delete, commit.
    async fn relay_one(&self) -> anyhow::Result<Pass> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(AssertSqlSafe(self.select.clone()))
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Pass::Empty);
        };
        let (key, body, group): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        let pk = format!("{}#{key}", self.source);
        match self.ledger.claim(&pk, &self.owner, &sha).await? {
            Claim::Won(_) | Claim::TookOverReused(_) => {}
            Claim::AlreadySent => {}
            Claim::HeldByOther => return Ok(Pass::Skipped),
        }
        let receipt = self.send(&key, &body, group, &sha).await?;
        if self.ledger.mark_sent(&pk, &self.owner, &receipt).await? != Mark::Marked {
            anyhow::bail!("{pk}: mark fenced");
        }
        sqlx::query(AssertSqlSafe(self.delete.clone()))
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Pass::Sent)
    }

    /// `SendMessage` with the relay's message attributes and, on a FIFO
    /// queue, its group and deduplication ids.
    async fn send(
        &self,
        key: &str,
        body: &str,
        group: Option<String>,
        sha: &str,
    ) -> anyhow::Result<Receipt> {
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.config.queue_url)
            .message_body(body)
            .message_attributes(ATTR_ID, string_attribute(key)?)
            .message_attributes(ATTR_SOURCE, string_attribute(&self.source)?);
        if self.config.is_fifo() {
            send = send
                .message_group_id(group.unwrap_or_else(|| self.source.clone()))
                .message_deduplication_id(dedup_id(&self.source, key, sha));
        }
        let out = send.send().await.context("SendMessage")?;
        Ok(Receipt {
            message_id: out.message_id.unwrap_or_default(),
            sequence_number: out.sequence_number,
        })
    }
}

/// A `String` message attribute, as the relay sets them.
fn string_attribute(value: &str) -> Result<MessageAttributeValue, BuildError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
}

/// The one-row select. Identifiers come validated from Config; quoted as
/// the relay quotes them.
fn select_statement(config: &Config) -> String {
    let group = config
        .group_column
        .as_ref()
        .map_or("NULL".to_owned(), |g| format!("\"{g}\"::text"));
    format!(
        "SELECT \"{id}\"::text, \"{payload}\"::text, {group} FROM {table} \
         ORDER BY \"{id}\" LIMIT 1 FOR UPDATE SKIP LOCKED",
        id = config.id_column,
        payload = config.payload_column,
        table = quoted(config),
    )
}

/// The delete of the claimed row, in the transaction that locked it.
fn delete_statement(config: &Config) -> String {
    format!(
        "DELETE FROM {} WHERE \"{}\"::text = $1",
        quoted(config),
        config.id_column
    )
}

fn quoted(config: &Config) -> String {
    match &config.table.schema {
        Some(schema) => format!("\"{schema}\".\"{}\"", config.table.table),
        None => format!("\"{}\"", config.table.table),
    }
}
