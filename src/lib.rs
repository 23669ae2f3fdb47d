//! outbox-relay: rows of a SQL outbox table become Amazon SQS messages,
//! exactly once, through a DynamoDB claim ledger.
//!
//! # Layout
//!
//! The protocol (docs/design.md) lives in [`relay`]; everything else is an
//! adapter it calls, or a way in:
//!
//! - [`config`]: the environment, validated once; the only reader of it.
//! - [`ident`], [`dialect`]: safe SQL identifiers and each database's SQL,
//!   one small builder per statement.
//! - [`schema`]: what the relay accepts of a table, read from the catalog
//!   (columns, payload types, the id's kind, keys).
//! - [`source`]: the outbox table (PostgreSQL, MySQL/MariaDB): the pool and
//!   its session settings, the start-up checks, and the batch transaction
//!   (lock, quarantine poison rows, delete sent rows), each query written
//!   once for both drivers.
//! - [`message`]: a row as an SQS message (body, attributes, FIFO ids) or
//!   the reason it is poison.
//! - [`shaping`]: the optional per-row queue route, message attributes,
//!   trace header and not-before time.
//! - [`ledger`]: the DynamoDB claim ledger: claim, mark SENT, peek
//!   ([`attr`]: its attribute values, shared with the guard).
//! - [`queue`]: `SendMessageBatch` with every entry's result checked.
//! - [`guard`]: the consumer's side, for library users: a DynamoDB guard
//!   that lets each row's message take effect once despite duplicates.
//! - [`relay`]: one pass, batch by batch: select → claim → send → mark →
//!   delete (`src/relay/`: the pass loop, a function per step of a batch,
//!   FIFO order, the lease window, dry runs).
//! - [`follow`], [`wake`], [`stop`]: following: pass after pass, woken by
//!   PostgreSQL `NOTIFY` or a poll, until a time, a row count or a signal.
//! - [`app`]: a process's long-lived state: clients and a relay connected
//!   on first use.
//! - [`event`], [`lambda`]: invocation events and the Lambda handler.
//! - [`args`]: the command line (clap): commands, flags, `--help`.
//! - [`cli`]: running `outbox-relay drain` and `outbox-relay follow`.
//! - [`ops`], [`deadletters`], [`status`], [`admin`]: the operator
//!   commands (`dead-letters list|replay`, `status`) and their SQL.
//! - [`secret`]: database credentials from Secrets Manager.
//! - [`database`], [`tls`]: the driver's connect options, built from the
//!   URL or the secret's fields; TLS modes, the bundled Amazon RDS CAs,
//!   and errors that say which check failed.
//! - [`aws`]: the SDK configuration (HTTP client, timeouts, retries).
//! - [`summary`], [`error`]: what a pass returns, and how it fails.
//! - [`logging`]: the log subscriber, with the AWS SDK's own (request
//!   and credential dumping) targets capped at INFO.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines per pass.
//! - [`stats`]: SQL round trips and AWS requests counted (for `make bench`).
//! - [`fault`]: fault points for the crash tests (`faults` feature only).

pub mod admin;
pub mod app;
pub mod args;
pub mod attr;
pub mod aws;
pub mod cli;
pub mod config;
pub mod database;
pub mod deadletters;
pub mod dialect;
pub mod error;
pub mod event;
pub mod fault;
pub mod follow;
pub mod guard;
pub mod ident;
pub mod lambda;
pub mod ledger;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod ops;
pub mod queue;
pub mod relay;
pub mod schema;
pub mod secret;
pub mod shaping;
pub mod source;
pub mod stats;
pub mod status;
pub mod stop;
pub mod summary;
pub mod tls;
pub mod wake;
