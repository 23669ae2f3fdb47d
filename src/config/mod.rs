//! Settings, read once from the environment (the contract's table in docs/design.md).
//!
//! This is the only module that reads environment variables, so every other
//! part takes its settings as values and tests can build a [`Config`] from a
//! map. A bad or missing value is a [`ConfigError`] that names the variable
//! in one line; nothing is connected or changed before all of them are valid.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::ident::{Ident, TableName};
use crate::tls::DatabaseTls;

mod database;
pub mod vars;

pub use database::DatabaseLocator;
use vars::{
    BATCH_SIZE, FOLLOW_SECONDS, LEASE_SECONDS, LEDGER_RETENTION_DAYS, MAX_PASS_SECONDS,
    OUTBOX_DEAD_LETTER_TABLE, OUTBOX_GROUP_COLUMN, OUTBOX_ID_COLUMN, OUTBOX_PAYLOAD_COLUMN,
    OUTBOX_REPLAY_TABLE, OUTBOX_TABLE, POLL_INTERVAL_MS, POLL_WITH_CHANNEL_MS,
};
pub use vars::{MAX_FIFO_LEASE_SECONDS, MAX_LAMBDA_FOLLOW_SECONDS, VARIABLES};

/// Everything the relay needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The source database.
    pub database: DatabaseLocator,
    /// `DATABASE_SSL_MODE`, `DATABASE_SSL_ROOT_CERT`: how its connection is
    /// protected.
    pub tls: DatabaseTls,
    /// `OUTBOX_TABLE`: the table rows are relayed from.
    pub table: TableName,
    /// `OUTBOX_ID_COLUMN`: the row key (ordering, ledger key, `outbox-id`).
    pub id_column: Ident,
    /// `OUTBOX_PAYLOAD_COLUMN`: the message body.
    pub payload_column: Ident,
    /// `OUTBOX_GROUP_COLUMN`: FIFO `MessageGroupId` per row, when set.
    pub group_column: Option<Ident>,
    /// `OUTBOX_DEAD_LETTER_TABLE`: where poison rows are moved.
    pub dead_letter_table: TableName,
    /// `QUEUE_URL`: the target queue; a `.fifo` suffix makes it FIFO.
    pub queue_url: String,
    /// `CLAIMS_TABLE`: the DynamoDB ledger.
    pub claims_table: String,
    /// `BATCH_SIZE`: rows per select.
    pub batch_size: u32,
    /// `LEASE_SECONDS`: how long a claim keeps other relays away.
    pub lease: Duration,
    /// `LEDGER_RETENTION_DAYS`: how long SENT ledger items are kept (TTL).
    pub retention: Duration,
    /// `MAX_PASS_SECONDS`: the longest pass when the Lambda deadline is
    /// unknown (local emulators) and for the CLI when set.
    pub max_pass: Option<Duration>,
    /// `OUTBOX_REPLAY_TABLE`: the audit of dead-letter replays.
    pub replay_table: TableName,
    /// Optional message shaping columns and routes (see [`crate::shaping`]).
    pub shaping: crate::shaping::ShapingConfig,
    /// `FOLLOW_SECONDS`: how long a scheduled invocation (or `outbox-relay
    /// follow`) keeps relaying new rows; zero is a single drain (Lambda) or
    /// "until a signal" (the CLI's follow).
    pub follow: Duration,
    /// `OUTBOX_NOTIFY_CHANNEL`: the PostgreSQL channel whose `NOTIFY`
    /// wakes a follower (the trigger of infra/sql/postgres-notify.sql).
    pub notify_channel: Option<Ident>,
    /// `POLL_INTERVAL_MS`: how often a follower looks for rows without a
    /// notification (a missed `NOTIFY`, or no channel at all).
    pub poll_interval: Duration,
}

/// A setting that is missing or wrong; displays as one line naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable} {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it, without echoing secrets.
    pub problem: String,
}

/// A [`ConfigError`] for `variable`.
pub fn bad(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the settings from any lookup, e.g. a map in tests.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty value counts as unset: `FOO= cmd` is a common way to clear one.
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let database = database::database_locator(&get)?;
        let tls = database::database_tls(&get, &database)?;
        let table = OUTBOX_TABLE.table(&get)?;
        let dead_letter_table = OUTBOX_DEAD_LETTER_TABLE.table(&get)?;
        if dead_letter_table == table {
            return Err(bad(
                OUTBOX_DEAD_LETTER_TABLE.name,
                "must differ from OUTBOX_TABLE",
            ));
        }
        let queue_url = queue_url(&get)?;
        let lease_secs = lease_seconds(&get, &queue_url)?;
        let max_pass = MAX_PASS_SECONDS
            .read_if_set(&get)?
            .map(|s| Duration::from_secs(s.into()));
        let (follow, notify_channel, poll_interval) = follow_settings(&get, &database, max_pass)?;
        Ok(Config {
            tls,
            table,
            id_column: OUTBOX_ID_COLUMN.required_column(&get)?,
            payload_column: OUTBOX_PAYLOAD_COLUMN.required_column(&get)?,
            group_column: OUTBOX_GROUP_COLUMN.column(&get)?,
            dead_letter_table,
            claims_table: claims_table(&get)?,
            batch_size: BATCH_SIZE.read(&get)?,
            lease: Duration::from_secs(lease_secs.into()),
            retention: Duration::from_secs(u64::from(LEDGER_RETENTION_DAYS.read(&get)?) * 86_400),
            max_pass,
            replay_table: OUTBOX_REPLAY_TABLE.table(&get)?,
            shaping: crate::shaping::ShapingConfig::from_lookup(&get, &queue_url)?,
            queue_url,
            database,
            follow,
            notify_channel,
            poll_interval,
        })
    }

    /// True for a FIFO queue (`.fifo` suffix, as SQS requires).
    pub fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }
}

/// `QUEUE_URL`, which must look like a queue URL.
fn queue_url(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let url = get("QUEUE_URL").ok_or_else(|| bad("QUEUE_URL", "is not set"))?;
    let url = url.trim().to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.split('/').filter(|s| !s.is_empty()).count() < 4
    {
        return Err(bad(
            "QUEUE_URL",
            "must be a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME",
        ));
    }
    Ok(url)
}

/// `CLAIMS_TABLE`, which must be a valid DynamoDB table name.
fn claims_table(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let name = get("CLAIMS_TABLE").ok_or_else(|| bad("CLAIMS_TABLE", "is not set"))?;
    let name = name.trim().to_owned();
    let valid = (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(bad(
            "CLAIMS_TABLE",
            "must be a DynamoDB table name: 3-255 characters of [A-Za-z0-9_.-]",
        ));
    }
    Ok(name)
}

/// `LEASE_SECONDS`, within its range and, on a FIFO queue, within SQS's
/// deduplication window: a send whose outcome is unknown is retried only
/// after its lease, and SQS FIFO drops a resend with the same
/// deduplication id for five minutes only; a longer lease (plus the next
/// pass's start) would let the resend through as a second delivery.
fn lease_seconds(
    get: &impl Fn(&str) -> Option<String>,
    queue_url: &str,
) -> Result<u32, ConfigError> {
    let secs = LEASE_SECONDS.read(get)?;
    if queue_url.ends_with(".fifo") && secs > MAX_FIFO_LEASE_SECONDS {
        return Err(bad(
            LEASE_SECONDS.name,
            format!(
                "must be at most {MAX_FIFO_LEASE_SECONDS} on a FIFO queue: SQS deduplicates a resend for 5 minutes only"
            ),
        ));
    }
    Ok(secs)
}

/// How logs are written: Lambda's advanced logging controls, else `RUST_LOG`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG` (a level or directives).
    pub level: Option<String>,
    /// `AWS_LAMBDA_LOG_FORMAT=JSON`: one JSON object per line.
    pub json: bool,
}

/// Reads the log settings (before anything else, so a bad setting is logged).
pub fn log_settings() -> LogSettings {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    LogSettings {
        level: get("AWS_LAMBDA_LOG_LEVEL").or_else(|| get("RUST_LOG")),
        json: get("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json")),
    }
}

/// `FOLLOW_SECONDS`, `OUTBOX_NOTIFY_CHANNEL` and `POLL_INTERVAL_MS`.
fn follow_settings(
    get: &impl Fn(&str) -> Option<String>,
    database: &DatabaseLocator,
    max_pass: Option<Duration>,
) -> Result<(Duration, Option<Ident>, Duration), ConfigError> {
    let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
    let follow = FOLLOW_SECONDS.read(get)?;
    if in_lambda && follow > MAX_LAMBDA_FOLLOW_SECONDS {
        return Err(bad(
            FOLLOW_SECONDS.name,
            format!(
                "must be between 0 and {MAX_LAMBDA_FOLLOW_SECONDS} inside Lambda, got {follow}"
            ),
        ));
    }
    // Where the deadline is unknown (local emulators) MAX_PASS_SECONDS is
    // the invocation's budget, and a follow cannot outlast it.
    if let Some(max) = max_pass.filter(|m| in_lambda && u64::from(follow) > m.as_secs()) {
        return Err(bad(
            "FOLLOW_SECONDS",
            format!("must not exceed MAX_PASS_SECONDS ({}s)", max.as_secs()),
        ));
    }
    let channel = match get("OUTBOX_NOTIFY_CHANNEL") {
        None => None,
        Some(raw) => {
            let ident = Ident::parse(raw.trim())
                .map_err(|e| bad("OUTBOX_NOTIFY_CHANNEL", e.to_string()))?;
            if ident.as_str().len() > 63 {
                return Err(bad(
                    "OUTBOX_NOTIFY_CHANNEL",
                    "is longer than PostgreSQL's 63 bytes",
                ));
            }
            if let DatabaseLocator::Url(url) = database
                && crate::dialect::Dialect::of_url(url.expose_secret())
                    != crate::dialect::Dialect::Postgres
            {
                return Err(bad(
                    "OUTBOX_NOTIFY_CHANNEL",
                    "is PostgreSQL only: MySQL/MariaDB followers poll (POLL_INTERVAL_MS)",
                ));
            }
            Some(ident)
        }
    };
    let poll = match channel {
        Some(_) => POLL_INTERVAL_MS.read_or(get, POLL_WITH_CHANNEL_MS)?,
        None => POLL_INTERVAL_MS.read(get)?,
    };
    Ok((
        Duration::from_secs(follow.into()),
        channel,
        Duration::from_millis(poll.into()),
    ))
}

/// True inside Lambda (or an emulator of it): the runtime API is announced.
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

#[cfg(test)]
mod tests;
