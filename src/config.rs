//! Settings, read once from the environment (the contract's table in docs/design.md).
//!
//! This is the only module that reads environment variables, so every other
//! part takes its settings as values and tests can build a [`Config`] from a
//! map. A bad or missing value is a [`ConfigError`] that names the variable
//! in one line; nothing is connected or changed before all of them are valid.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::ident::{Ident, TableName};
use crate::tls::{DatabaseTls, ModeOrigin, RootCerts, SslMode};

/// Where the database credentials come from.
#[derive(Clone, Debug)]
pub enum DatabaseLocator {
    /// `DATABASE_URL`: a `postgres://` or `mysql://` URL, credentials
    /// included; a [`SecretString`], so `Debug` and logs never show it.
    Url(SecretString),
    /// `DATABASE_SECRET_ARN`: a Secrets Manager secret in the RDS JSON shape,
    /// resolved at the first pass and cached for the life of the process.
    SecretArn(String),
}

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

        let database = match (get("DATABASE_URL"), get("DATABASE_SECRET_ARN")) {
            // Neither may silently win: the other was set for a reason.
            (Some(_), Some(_)) => {
                return Err(bad(
                    "DATABASE_URL",
                    "and DATABASE_SECRET_ARN are both set; set only one",
                ));
            }
            (Some(url), None) => DatabaseLocator::Url(check_database_url(url)?),
            (None, Some(arn)) => {
                if !arn.starts_with("arn:") || !arn.contains(":secretsmanager:") {
                    return Err(bad(
                        "DATABASE_SECRET_ARN",
                        "must be a Secrets Manager ARN (arn:aws:secretsmanager:…)",
                    ));
                }
                DatabaseLocator::SecretArn(arn)
            }
            (None, None) => {
                return Err(bad(
                    "DATABASE_URL",
                    "is not set (set DATABASE_URL or DATABASE_SECRET_ARN)",
                ));
            }
        };

        let tls = database_tls(&get, &database)?;

        let table_var = |var: &'static str, default: &str| {
            let raw = get(var).unwrap_or_else(|| default.to_owned());
            TableName::parse(raw.trim()).map_err(|e| bad(var, e.to_string()))
        };
        let column_var = |var: &'static str, default: Option<&str>| match get(var)
            .or(default.map(str::to_owned))
        {
            None => Ok(None),
            Some(raw) => Ident::parse(raw.trim())
                .map(Some)
                .map_err(|e| bad(var, e.to_string())),
        };

        let table = table_var("OUTBOX_TABLE", "outbox")?;
        let dead_letter_table = table_var("OUTBOX_DEAD_LETTER_TABLE", "outbox_dead_letter")?;
        if dead_letter_table == table {
            return Err(bad(
                "OUTBOX_DEAD_LETTER_TABLE",
                "must differ from OUTBOX_TABLE",
            ));
        }
        let id_column = column_var("OUTBOX_ID_COLUMN", Some("id"))?.expect("has a default");
        let payload_column =
            column_var("OUTBOX_PAYLOAD_COLUMN", Some("payload"))?.expect("has a default");
        let group_column = column_var("OUTBOX_GROUP_COLUMN", None)?;

        let queue_url = get("QUEUE_URL").ok_or_else(|| bad("QUEUE_URL", "is not set"))?;
        let queue_url = queue_url.trim().to_owned();
        if !(queue_url.starts_with("https://") || queue_url.starts_with("http://"))
            || queue_url.split('/').filter(|s| !s.is_empty()).count() < 4
        {
            return Err(bad(
                "QUEUE_URL",
                "must be a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME",
            ));
        }

        let claims_table = get("CLAIMS_TABLE").ok_or_else(|| bad("CLAIMS_TABLE", "is not set"))?;
        let claims_table = claims_table.trim().to_owned();
        let valid_ddb_name = (3..=255).contains(&claims_table.len())
            && claims_table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_ddb_name {
            return Err(bad(
                "CLAIMS_TABLE",
                "must be a DynamoDB table name: 3-255 characters of [A-Za-z0-9_.-]",
            ));
        }

        let batch_size = number(&get, "BATCH_SIZE", 100, 1, 1000)?;
        let lease_secs = number(&get, "LEASE_SECONDS", 60, 30, 3600)?;
        // A send whose outcome is unknown is retried only after its lease.
        // SQS FIFO drops a resend with the same deduplication id for five
        // minutes; a longer lease (plus the next pass's start) would let the
        // resend through as a second delivery.
        if queue_url.ends_with(".fifo") && lease_secs > MAX_FIFO_LEASE_SECONDS {
            return Err(bad(
                "LEASE_SECONDS",
                format!(
                    "must be at most {MAX_FIFO_LEASE_SECONDS} on a FIFO queue: SQS deduplicates a resend for 5 minutes only"
                ),
            ));
        }
        let retention_days = number(&get, "LEDGER_RETENTION_DAYS", 7, 1, 365)?;
        let max_pass = match get("MAX_PASS_SECONDS") {
            None => None,
            Some(_) => Some(Duration::from_secs(
                number(&get, "MAX_PASS_SECONDS", 0, 1, 86_400)?.into(),
            )),
        };

        let replay_table = table_var("OUTBOX_REPLAY_TABLE", "outbox_replay")?;
        let shaping = crate::shaping::ShapingConfig::from_lookup(&get, &queue_url)?;
        let (follow, notify_channel, poll_interval) = follow_settings(&get, &database, max_pass)?;

        Ok(Config {
            database,
            tls,
            table,
            id_column,
            payload_column,
            group_column,
            dead_letter_table,
            queue_url,
            claims_table,
            batch_size,
            lease: Duration::from_secs(lease_secs.into()),
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            max_pass,
            replay_table,
            shaping,
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

/// The longest lease on a FIFO queue: a resend after the lease, plus up
/// to a minute for the next scheduled pass, stays inside SQS's five-minute
/// deduplication window.
pub const MAX_FIFO_LEASE_SECONDS: u32 = 240;

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

/// Lambda's longest timeout less the reserve a pass keeps before the
/// deadline (`lambda::pass_budget`): the longest follow a function allows.
pub const MAX_LAMBDA_FOLLOW_SECONDS: u32 = 900 - 35;

/// `FOLLOW_SECONDS`, `OUTBOX_NOTIFY_CHANNEL` and `POLL_INTERVAL_MS`.
fn follow_settings(
    get: &impl Fn(&str) -> Option<String>,
    database: &DatabaseLocator,
    max_pass: Option<Duration>,
) -> Result<(Duration, Option<Ident>, Duration), ConfigError> {
    let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
    let max_follow = if in_lambda {
        MAX_LAMBDA_FOLLOW_SECONDS
    } else {
        86_400
    };
    let follow = number(get, "FOLLOW_SECONDS", 0, 0, max_follow)?;
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
    let default_poll = if channel.is_some() { 1000 } else { 250 };
    let poll = number(get, "POLL_INTERVAL_MS", default_poll, 1, 3_600_000)?;
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

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    let n: u32 = raw
        .trim()
        .parse()
        .map_err(|_| bad(var, format!("must be a whole number, got {:?}", raw.trim())))?;
    if !(min..=max).contains(&n) {
        return Err(bad(
            var,
            format!("must be between {min} and {max}, got {n}"),
        ));
    }
    Ok(n)
}

/// Checks the scheme only: the URL carries a password, so it is never echoed.
fn check_database_url(url: String) -> Result<SecretString, ConfigError> {
    let url = SecretString::from(url.trim());
    let scheme_ok = ["postgres://", "postgresql://", "mysql://", "mariadb://"]
        .iter()
        .any(|s| url.expose_secret().starts_with(s));
    if !scheme_ok {
        return Err(bad(
            "DATABASE_URL",
            "must start with postgres://, postgresql://, mysql:// or mariadb://",
        ));
    }
    Ok(url)
}

/// Resolves `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT`. Defaults:
/// `verify-full` for a secret (production), the URL's own `sslmode` or
/// `ssl-mode`, else `prefer` (sqlx's own default) for a URL.
fn database_tls(
    get: &impl Fn(&str) -> Option<String>,
    database: &DatabaseLocator,
) -> Result<DatabaseTls, ConfigError> {
    let url_param = |names: &[&str]| match database {
        DatabaseLocator::Url(url) => url_parameter(url.expose_secret(), names),
        DatabaseLocator::SecretArn(_) => None,
    };
    let (mode, origin) = match (
        get("DATABASE_SSL_MODE"),
        url_param(&["sslmode", "ssl-mode"]),
    ) {
        (Some(raw), _) => (
            SslMode::parse(&raw).ok_or_else(|| {
                bad(
                    "DATABASE_SSL_MODE",
                    format!(
                        "must be disable, prefer, require, verify-ca or verify-full, got {:?}",
                        raw.trim()
                    ),
                )
            })?,
            ModeOrigin::Variable,
        ),
        (None, Some(raw)) => (
            SslMode::parse(&raw).ok_or_else(|| {
                bad(
                    "DATABASE_URL",
                    "has an sslmode that is not disable, prefer, require, verify-ca or verify-full",
                )
            })?,
            ModeOrigin::UrlParameter,
        ),
        (None, None) => match database {
            DatabaseLocator::SecretArn(_) => (SslMode::VerifyFull, ModeOrigin::Default),
            DatabaseLocator::Url(_) => (SslMode::Prefer, ModeOrigin::Default),
        },
    };
    let roots = match get("DATABASE_SSL_ROOT_CERT") {
        Some(path) => {
            let path = std::path::PathBuf::from(path.trim());
            let pem = std::fs::read(&path).map_err(|e| {
                bad(
                    "DATABASE_SSL_ROOT_CERT",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(bad(
                    "DATABASE_SSL_ROOT_CERT",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            RootCerts::File { path, pem }
        }
        None if url_param(&["sslrootcert", "ssl-root-cert", "ssl-ca", "sslca"]).is_some() => {
            RootCerts::UrlParameter
        }
        None => RootCerts::Bundled,
    };
    Ok(DatabaseTls {
        mode,
        origin,
        roots,
    })
}

/// The value of the first of `names` in a URL's query, if any. Values are
/// mode names and paths: no percent-decoding beyond what they need.
fn url_parameter(url: &str, names: &[&str]) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        names
            .contains(&key)
            .then(|| value.replace("%2F", "/").replace("%2f", "/"))
    })
}

/// Every variable the relay reads, with its meaning and default: the source
/// of `--help` so the two cannot drift apart.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://… or mysql://… of the source database",
        "-",
    ),
    (
        "DATABASE_SECRET_ARN",
        "Secrets Manager secret (RDS JSON shape); set it or DATABASE_URL, not both",
        "-",
    ),
    (
        "DATABASE_SSL_MODE",
        "disable|prefer|require|verify-ca|verify-full (warned at start unless verify-*)",
        "secret: verify-full; URL: its sslmode, else prefer",
    ),
    (
        "DATABASE_SSL_ROOT_CERT",
        "PEM bundle of the CAs verify-ca/verify-full trust, besides the usual roots",
        "the Amazon RDS CAs (built in)",
    ),
    (
        "OUTBOX_TABLE",
        "source table, optionally schema.table",
        "outbox",
    ),
    ("OUTBOX_ID_COLUMN", "row key column", "id"),
    ("OUTBOX_PAYLOAD_COLUMN", "message body column", "payload"),
    (
        "OUTBOX_GROUP_COLUMN",
        "FIFO MessageGroupId column (NULL or unset: the table name)",
        "-",
    ),
    (
        "OUTBOX_DEAD_LETTER_TABLE",
        "where poison rows go, with the reason",
        "outbox_dead_letter",
    ),
    ("QUEUE_URL", "target SQS queue (standard or .fifo)", "-"),
    (
        "CLAIMS_TABLE",
        "DynamoDB claim ledger (partition key pk, string)",
        "-",
    ),
    ("BATCH_SIZE", "rows per select (1-1000)", "100"),
    (
        "LEASE_SECONDS",
        "claim lease (30-3600; at most 240 on a FIFO queue)",
        "60",
    ),
    (
        "LEDGER_RETENTION_DAYS",
        "how long SENT ledger items are kept (TTL on expires_at)",
        "7",
    ),
    (
        "MAX_PASS_SECONDS",
        "longest pass when no Lambda deadline is known (CLI: unlimited unless set)",
        "Lambda: 600",
    ),
    (
        "OUTBOX_REPLAY_TABLE",
        "audit of dead-letters replay (replay_count, last_replayed_at per id)",
        "outbox_replay",
    ),
    (
        "OUTBOX_QUEUE_COLUMN",
        "route column: a key of QUEUE_ROUTES per row (NULL: QUEUE_URL)",
        "-",
    ),
    (
        "QUEUE_ROUTES",
        "JSON object {\"route\": \"queue URL\", ...} for OUTBOX_QUEUE_COLUMN",
        "-",
    ),
    (
        "OUTBOX_ATTRIBUTES_COLUMN",
        "JSON object of string message attributes per row (10 in all with outbox-id, outbox-source)",
        "-",
    ),
    (
        "OUTBOX_TRACE_COLUMN",
        "X-Ray trace header (AWSTraceHeader) or W3C traceparent (attribute traceparent)",
        "-",
    ),
    (
        "OUTBOX_NOT_BEFORE_COLUMN",
        "timestamp: a row is not sent before it (FIFO: later rows of its group wait)",
        "-",
    ),
    (
        "FOLLOW_SECONDS",
        "keep relaying new rows this long: Lambda, per scheduled invocation (0: one drain; needs Timeout >= FOLLOW_SECONDS + 35); follow command, then exit (0: until SIGTERM/SIGINT)",
        "0",
    ),
    (
        "OUTBOX_NOTIFY_CHANNEL",
        "PostgreSQL only: LISTEN on this channel to wake a follower at once (see infra/sql/postgres-notify.sql)",
        "-",
    ),
    (
        "POLL_INTERVAL_MS",
        "a follower looks for rows this often without a notification (1-3600000)",
        "1000 with a channel, 250 without",
    ),
    (
        "AWS_REGION",
        "AWS region of the queue and ledger",
        "from the AWS profile",
    ),
    (
        "AWS_ENDPOINT_URL[_SQS|_DYNAMODB|_SECRETS_MANAGER]",
        "SDK endpoint overrides (local emulators)",
        "-",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://u:secretpw@localhost/db"),
            ("QUEUE_URL", "http://localhost:5000/123456789012/q"),
            ("CLAIMS_TABLE", "claims"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = with(&[]).unwrap();
        assert_eq!(c.table.to_string(), "outbox");
        assert_eq!(c.id_column.as_str(), "id");
        assert_eq!(c.payload_column.as_str(), "payload");
        assert_eq!(c.dead_letter_table.to_string(), "outbox_dead_letter");
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.lease, Duration::from_secs(60));
        assert!(c.group_column.is_none());
        assert!(!c.is_fifo());
    }

    #[test]
    fn each_bad_setting_names_its_variable() {
        let cases = [
            ("QUEUE_URL", ""),
            ("QUEUE_URL", "not a url"),
            ("CLAIMS_TABLE", "a"),
            ("BATCH_SIZE", "ten"),
            ("BATCH_SIZE", "0"),
            ("LEASE_SECONDS", "1"),
            ("OUTBOX_TABLE", "x; drop table y"),
            ("OUTBOX_ID_COLUMN", "id\""),
            ("OUTBOX_DEAD_LETTER_TABLE", "outbox"),
            ("DATABASE_URL", "sqlite://x"),
        ];
        for (var, value) in cases {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "for {var}={value:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn a_fifo_queue_refuses_a_lease_longer_than_its_deduplication_window() {
        let fifo = ("QUEUE_URL", "http://127.0.0.1:5000/123456789012/q.fifo");
        assert!(with(&[fifo, ("LEASE_SECONDS", "240")]).is_ok());
        let err = with(&[fifo, ("LEASE_SECONDS", "241")]).unwrap_err();
        assert_eq!(err.variable, "LEASE_SECONDS");
        assert!(
            with(&[("LEASE_SECONDS", "3600")]).is_ok(),
            "standard queues keep the full range"
        );
    }

    #[test]
    fn follow_settings_default_to_one_drain_and_a_poll_that_suits_the_channel() {
        let c = with(&[]).unwrap();
        assert_eq!(c.follow, Duration::ZERO);
        assert_eq!(c.notify_channel, None);
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        let c = with(&[
            ("OUTBOX_NOTIFY_CHANNEL", "outbox_relay"),
            ("FOLLOW_SECONDS", "55"),
        ])
        .unwrap();
        assert_eq!(c.follow, Duration::from_secs(55));
        assert_eq!(c.notify_channel.unwrap().as_str(), "outbox_relay");
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
    }

    #[test]
    fn each_bad_follow_setting_names_its_variable() {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("POLL_INTERVAL_MS", "0")], "POLL_INTERVAL_MS"),
            (&[("POLL_INTERVAL_MS", "soon")], "POLL_INTERVAL_MS"),
            (
                &[("OUTBOX_NOTIFY_CHANNEL", "new rows")],
                "OUTBOX_NOTIFY_CHANNEL",
            ),
            (
                &[("OUTBOX_NOTIFY_CHANNEL", "x\"; NOTIFY y")],
                "OUTBOX_NOTIFY_CHANNEL",
            ),
            (
                &[
                    ("OUTBOX_NOTIFY_CHANNEL", "c"),
                    ("DATABASE_URL", "mysql://u:p@h/db"),
                ],
                "OUTBOX_NOTIFY_CHANNEL",
            ),
            (&[("FOLLOW_SECONDS", "-1")], "FOLLOW_SECONDS"),
            (&[lambda, ("FOLLOW_SECONDS", "866")], "FOLLOW_SECONDS"),
            (
                &[
                    lambda,
                    ("FOLLOW_SECONDS", "100"),
                    ("MAX_PASS_SECONDS", "60"),
                ],
                "FOLLOW_SECONDS",
            ),
        ];
        for (pairs, var) in cases {
            let err = with(pairs).unwrap_err();
            assert_eq!(err.variable, *var, "for {pairs:?}");
            assert!(!err.to_string().contains('\n'));
        }
        assert!(with(&[lambda, ("FOLLOW_SECONDS", "865")]).is_ok());
        assert!(
            with(&[("FOLLOW_SECONDS", "3600")]).is_ok(),
            "the CLI follows longer"
        );
    }

    #[test]
    fn the_database_password_is_never_shown() {
        let c = with(&[]).unwrap();
        assert!(!format!("{c:?}").contains("secretpw"));
        let err = with(&[("DATABASE_URL", "sqlite://u:secretpw@x")]).unwrap_err();
        assert!(!err.to_string().contains("secretpw"));
    }

    #[test]
    fn a_url_and_a_secret_together_are_refused_naming_both() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db";
        let err = with(&[("DATABASE_SECRET_ARN", arn)]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let line = err.to_string();
        assert!(
            line.contains("DATABASE_URL") && line.contains("DATABASE_SECRET_ARN"),
            "{line}"
        );
    }

    #[test]
    fn the_tls_mode_defaults_to_verified_for_a_secret_and_to_the_url_otherwise() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db";
        let secret = with(&[("DATABASE_URL", ""), ("DATABASE_SECRET_ARN", arn)]).unwrap();
        assert_eq!(secret.tls.mode, SslMode::VerifyFull);
        assert_eq!(secret.tls.roots, RootCerts::Bundled);
        assert!(secret.tls.warning().is_none());
        let plain = with(&[]).unwrap();
        assert_eq!(
            (plain.tls.mode, plain.tls.origin),
            (SslMode::Prefer, ModeOrigin::Default)
        );
        assert!(plain.tls.warning().unwrap().contains("DATABASE_SSL_MODE"));
        let own = with(&[("DATABASE_URL", "mysql://u:p@h/db?ssl-mode=VERIFY_IDENTITY")]).unwrap();
        assert_eq!(
            (own.tls.mode, own.tls.origin),
            (SslMode::VerifyFull, ModeOrigin::UrlParameter)
        );
        let over = with(&[
            ("DATABASE_URL", "postgres://u:p@h/db?sslmode=disable"),
            ("DATABASE_SSL_MODE", "require"),
        ])
        .unwrap();
        assert_eq!(
            (over.tls.mode, over.tls.origin),
            (SslMode::Require, ModeOrigin::Variable)
        );
        let with_ca = with(&[(
            "DATABASE_URL",
            "postgres://u:p@h/db?sslrootcert=/etc/ca.pem",
        )])
        .unwrap();
        assert_eq!(with_ca.tls.roots, RootCerts::UrlParameter);
    }

    #[test]
    fn a_bad_tls_setting_names_its_variable_and_never_the_password() {
        for (var, value) in [
            ("DATABASE_SSL_MODE", "verify"),
            ("DATABASE_SSL_ROOT_CERT", "/nonexistent/ca.pem"),
            ("DATABASE_SSL_ROOT_CERT", "/etc/hostname"),
        ] {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{var}={value}");
        }
        let err = with(&[("DATABASE_URL", "postgres://u:secretpw@h/db?sslmode=on")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("secretpw"));
    }
}
