//! Every variable the relay reads, declared once: its name, default and
//! accepted range. The parser ([`super::Config::from_lookup`]) reads values
//! through these declarations and `--help` prints them from [`VARIABLES`],
//! so a default or a range cannot say one thing in the help and do another.

use super::{ConfigError, bad};
use crate::ident::{Ident, TableName};

/// A whole-number setting.
#[derive(Debug)]
pub struct Number {
    /// The environment variable.
    pub name: &'static str,
    /// Its value when unset.
    pub default: u32,
    /// The smallest value accepted.
    pub min: u32,
    /// The largest value accepted.
    pub max: u32,
    /// A lower maximum in some context, and which (the parser checks it
    /// where it knows the context; `--help` shows it).
    pub tighter: Option<(u32, &'static str)>,
}

/// A table or column name setting, with its default when it has one.
#[derive(Debug)]
pub struct Name {
    /// The environment variable.
    pub name: &'static str,
    /// Its value when unset; `None` when unset means "not used".
    pub default: Option<&'static str>,
}

/// `BATCH_SIZE`: rows per select.
pub const BATCH_SIZE: Number = Number::new("BATCH_SIZE", 100, 1, 1000);
/// `LEASE_SECONDS`: how long a claim keeps other relays away.
pub const LEASE_SECONDS: Number =
    Number::new("LEASE_SECONDS", 60, 30, 3600).at_most(MAX_FIFO_LEASE_SECONDS, "on a FIFO queue");
/// The longest lease on a FIFO queue: a resend after the lease, plus up
/// to a minute for the next scheduled pass, stays inside SQS's five-minute
/// deduplication window.
pub const MAX_FIFO_LEASE_SECONDS: u32 = 240;
/// `LEDGER_RETENTION_DAYS`: how long SENT ledger items are kept.
pub const LEDGER_RETENTION_DAYS: Number = Number::new("LEDGER_RETENTION_DAYS", 7, 1, 365);
/// `MAX_PASS_SECONDS`: unset means no limit (the CLI) or the Lambda
/// fallback (`lambda::DEFAULT_MAX_PASS`); `default` is never used.
pub const MAX_PASS_SECONDS: Number = Number::new("MAX_PASS_SECONDS", 0, 1, 86_400);
/// `FOLLOW_SECONDS`.
pub const FOLLOW_SECONDS: Number =
    Number::new("FOLLOW_SECONDS", 0, 0, 86_400).at_most(MAX_LAMBDA_FOLLOW_SECONDS, "inside Lambda");
/// Lambda's longest timeout less the reserve a pass keeps before the
/// deadline (`lambda::pass_budget`): the longest follow a function allows.
pub const MAX_LAMBDA_FOLLOW_SECONDS: u32 = 900 - 35;
/// `POLL_INTERVAL_MS`: the default is [`POLL_WITH_CHANNEL_MS`] when a
/// notification channel is set.
pub const POLL_INTERVAL_MS: Number = Number::new("POLL_INTERVAL_MS", 250, 1, 3_600_000);
/// `POLL_INTERVAL_MS` by default when `OUTBOX_NOTIFY_CHANNEL` is set: the
/// poll then only covers a missed notification.
pub const POLL_WITH_CHANNEL_MS: u32 = 1000;

/// `OUTBOX_TABLE`.
pub const OUTBOX_TABLE: Name = Name::new("OUTBOX_TABLE", Some("outbox"));
/// `OUTBOX_DEAD_LETTER_TABLE`.
pub const OUTBOX_DEAD_LETTER_TABLE: Name =
    Name::new("OUTBOX_DEAD_LETTER_TABLE", Some("outbox_dead_letter"));
/// `OUTBOX_REPLAY_TABLE`.
pub const OUTBOX_REPLAY_TABLE: Name = Name::new("OUTBOX_REPLAY_TABLE", Some("outbox_replay"));
/// `OUTBOX_ID_COLUMN`.
pub const OUTBOX_ID_COLUMN: Name = Name::new("OUTBOX_ID_COLUMN", Some("id"));
/// `OUTBOX_PAYLOAD_COLUMN`.
pub const OUTBOX_PAYLOAD_COLUMN: Name = Name::new("OUTBOX_PAYLOAD_COLUMN", Some("payload"));
/// `OUTBOX_GROUP_COLUMN`.
pub const OUTBOX_GROUP_COLUMN: Name = Name::new("OUTBOX_GROUP_COLUMN", None);

impl Number {
    /// A whole number between `min` and `max`, `default` when unset.
    pub const fn new(name: &'static str, default: u32, min: u32, max: u32) -> Number {
        Number {
            name,
            default,
            min,
            max,
            tighter: None,
        }
    }

    /// The same, with a lower maximum in `context`.
    pub const fn at_most(self, max: u32, context: &'static str) -> Number {
        Number {
            tighter: Some((max, context)),
            ..self
        }
    }

    /// The value of the variable, or `default` when unset.
    pub fn read_or(
        &self,
        get: &impl Fn(&str) -> Option<String>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let Some(raw) = get(self.name) else {
            return Ok(default);
        };
        let n: u32 = raw.trim().parse().map_err(|_| {
            bad(
                self.name,
                format!("must be a whole number, got {:?}", raw.trim()),
            )
        })?;
        if !(self.min..=self.max).contains(&n) {
            return Err(bad(
                self.name,
                format!("must be between {} and {}, got {n}", self.min, self.max),
            ));
        }
        Ok(n)
    }

    /// The value of the variable, or its declared default.
    pub fn read(&self, get: &impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
        self.read_or(get, self.default)
    }

    /// The value when the variable is set at all.
    pub fn read_if_set(
        &self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<u32>, ConfigError> {
        match get(self.name) {
            None => Ok(None),
            Some(_) => self.read(get).map(Some),
        }
    }
}

impl Name {
    /// A name setting, `default` when unset.
    pub const fn new(name: &'static str, default: Option<&'static str>) -> Name {
        Name { name, default }
    }

    /// The variable (or its default) as a column name.
    pub fn column(
        &self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Ident>, ConfigError> {
        match get(self.name).or(self.default.map(str::to_owned)) {
            None => Ok(None),
            Some(raw) => Ident::parse(raw.trim())
                .map(Some)
                .map_err(|e| bad(self.name, e.to_string())),
        }
    }

    /// The variable (or its default) as a column name that always has one.
    pub fn required_column(
        &self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Ident, ConfigError> {
        self.column(get)?
            .ok_or_else(|| bad(self.name, "is not set"))
    }

    /// The variable (or its default) as a table name, `schema.table` or
    /// `table`.
    pub fn table(&self, get: &impl Fn(&str) -> Option<String>) -> Result<TableName, ConfigError> {
        let raw = get(self.name)
            .or(self.default.map(str::to_owned))
            .ok_or_else(|| bad(self.name, "is not set"))?;
        TableName::parse(raw.trim()).map_err(|e| bad(self.name, e.to_string()))
    }
}

/// What `--help` shows as a variable's default.
#[derive(Debug)]
pub enum Default {
    /// No default: unset means "not used" (or, for a required one, an error).
    None,
    /// A name or a sentence.
    Text(&'static str),
    /// The number's own default.
    Number(&'static Number),
    /// Worked out from other constants.
    Computed(fn() -> String),
    /// A name setting's own default.
    Name(&'static Name),
}

/// One line of the environment table of `--help`.
#[derive(Debug)]
pub struct Variable {
    /// The environment variable.
    pub name: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// Its default.
    pub default: Default,
}

impl Variable {
    /// The meaning, with the accepted range of a number.
    pub fn described(&self) -> String {
        let number = match &self.default {
            Default::Number(n) => Some(*n),
            _ => [&POLL_INTERVAL_MS, &MAX_PASS_SECONDS]
                .into_iter()
                .find(|n| n.name == self.name),
        };
        match number {
            Some(n) => match n.tighter {
                Some((max, context)) => format!(
                    "{} ({}-{}; at most {max} {context})",
                    self.meaning, n.min, n.max
                ),
                None => format!("{} ({}-{})", self.meaning, n.min, n.max),
            },
            None => self.meaning.to_owned(),
        }
    }

    /// The default as `--help` prints it.
    pub fn default_text(&self) -> String {
        match &self.default {
            Default::None => "-".to_owned(),
            Default::Text(t) => (*t).to_owned(),
            Default::Number(n) => n.default.to_string(),
            Default::Computed(f) => f(),
            Default::Name(n) => n.default.unwrap_or("-").to_owned(),
        }
    }
}

const fn var(name: &'static str, meaning: &'static str, default: Default) -> Variable {
    Variable {
        name,
        meaning,
        default,
    }
}

/// Every variable the relay reads, with its meaning and default: the
/// environment table of `--help`.
pub const VARIABLES: &[Variable] = &[
    var(
        "DATABASE_URL",
        "postgres://… or mysql://… of the source database",
        Default::None,
    ),
    var(
        "DATABASE_SECRET_ARN",
        "Secrets Manager secret (RDS JSON shape); set it or DATABASE_URL, not both",
        Default::None,
    ),
    var(
        "DATABASE_SSL_MODE",
        "disable|prefer|require|verify-ca|verify-full (warned at start unless verify-*)",
        Default::Text("secret: verify-full; URL: its sslmode, else prefer"),
    ),
    var(
        "DATABASE_SSL_ROOT_CERT",
        "PEM bundle of the CAs verify-ca/verify-full trust, besides the usual roots",
        Default::Text("the Amazon RDS CAs (built in)"),
    ),
    var(
        OUTBOX_TABLE.name,
        "source table, optionally schema.table",
        Default::Name(&OUTBOX_TABLE),
    ),
    var(
        OUTBOX_ID_COLUMN.name,
        "row key column",
        Default::Name(&OUTBOX_ID_COLUMN),
    ),
    var(
        OUTBOX_PAYLOAD_COLUMN.name,
        "message body column",
        Default::Name(&OUTBOX_PAYLOAD_COLUMN),
    ),
    var(
        OUTBOX_GROUP_COLUMN.name,
        "FIFO MessageGroupId column (NULL or unset: the table name)",
        Default::Name(&OUTBOX_GROUP_COLUMN),
    ),
    var(
        OUTBOX_DEAD_LETTER_TABLE.name,
        "where poison rows go, with the reason",
        Default::Name(&OUTBOX_DEAD_LETTER_TABLE),
    ),
    var(
        "QUEUE_URL",
        "target SQS queue (standard or .fifo)",
        Default::None,
    ),
    var(
        "CLAIMS_TABLE",
        "DynamoDB claim ledger (partition key pk, string)",
        Default::None,
    ),
    var(
        BATCH_SIZE.name,
        "rows per select",
        Default::Number(&BATCH_SIZE),
    ),
    var(
        LEASE_SECONDS.name,
        "claim lease",
        Default::Number(&LEASE_SECONDS),
    ),
    var(
        LEDGER_RETENTION_DAYS.name,
        "how long SENT ledger items are kept (TTL on expires_at)",
        Default::Number(&LEDGER_RETENTION_DAYS),
    ),
    var(
        MAX_PASS_SECONDS.name,
        "longest pass when no Lambda deadline is known (CLI: unlimited unless set)",
        Default::Computed(|| format!("Lambda: {}", crate::lambda::DEFAULT_MAX_PASS.as_secs())),
    ),
    var(
        OUTBOX_REPLAY_TABLE.name,
        "audit of dead-letters replay (replay_count, last_replayed_at per id)",
        Default::Name(&OUTBOX_REPLAY_TABLE),
    ),
    var(
        "OUTBOX_QUEUE_COLUMN",
        "route column: a key of QUEUE_ROUTES per row (NULL: QUEUE_URL)",
        Default::None,
    ),
    var(
        "QUEUE_ROUTES",
        "JSON object {\"route\": \"queue URL\", ...} for OUTBOX_QUEUE_COLUMN",
        Default::None,
    ),
    var(
        "OUTBOX_ATTRIBUTES_COLUMN",
        "JSON object of string message attributes per row (10 in all with outbox-id, outbox-source)",
        Default::None,
    ),
    var(
        "OUTBOX_TRACE_COLUMN",
        "X-Ray trace header (AWSTraceHeader) or W3C traceparent (attribute traceparent)",
        Default::None,
    ),
    var(
        "OUTBOX_NOT_BEFORE_COLUMN",
        "timestamp: a row is not sent before it (FIFO: later rows of its group wait)",
        Default::None,
    ),
    var(
        FOLLOW_SECONDS.name,
        "keep relaying new rows this long: Lambda, per scheduled invocation (0: one drain; needs Timeout >= FOLLOW_SECONDS + 35); follow command, then exit (0: until SIGTERM/SIGINT)",
        Default::Number(&FOLLOW_SECONDS),
    ),
    var(
        "OUTBOX_NOTIFY_CHANNEL",
        "PostgreSQL only: LISTEN on this channel to wake a follower at once (see infra/sql/postgres-notify.sql)",
        Default::None,
    ),
    var(
        POLL_INTERVAL_MS.name,
        "a follower looks for rows this often without a notification",
        Default::Computed(|| {
            format!(
                "{POLL_WITH_CHANNEL_MS} with a channel, {} without",
                POLL_INTERVAL_MS.default
            )
        }),
    ),
    var(
        "AWS_REGION",
        "AWS region of the queue and ledger",
        Default::Text("from the AWS profile"),
    ),
    var(
        "AWS_ENDPOINT_URL[_SQS|_DYNAMODB|_SECRETS_MANAGER]",
        "SDK endpoint overrides (local emulators)",
        Default::None,
    ),
];
