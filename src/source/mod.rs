//! The outbox table: connect, check the schema, lock a batch, quarantine,
//! delete.
//!
//! A batch lives in one database transaction: rows are selected `FOR UPDATE
//! SKIP LOCKED`, so concurrent relays take disjoint rows, and they stay
//! locked while the batch is claimed, sent and marked. The delete of sent
//! rows and the move of poison rows commit together at the end. If the relay
//! dies, the transaction rolls back and the rows are simply there again; the
//! ledger then tells the next pass what was already sent.
//!
//! - `pool`: the pool, opened with the session settings (shared with the
//!   operator commands of [`crate::admin`]).
//! - `checks`: the start-up checks of the tables.
//! - `batch`: [`Batch`], the transaction.
//! - `rows`: reading a row, per driver.

mod batch;
mod checks;
pub(crate) mod pool;
pub(crate) mod rows;

use std::sync::Arc;

use anyhow::Context;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use batch::Batch;
pub use pool::STATEMENT_TIMEOUT;

use crate::config::Config;
use crate::database::ConnectOptions;
use crate::dialect::{Dialect, Statements};
use crate::message::OutboxRow;
use crate::stats::sql_round_trip;
use pool::{ACQUIRE_TIMEOUT, Pool, Sizing, on_pool};
use rows::{ReadRow, outbox_rows};

/// Connections per relay process: a pass on a standard queue on PostgreSQL
/// holds two batches' transactions at once (see `PIPELINE_DEPTH` in
/// `crate::relay`); the third covers a slow rollback overlapping the next batch.
const POOL_SIZE: u32 = 3;

/// What became of a poison row sent to the dead-letter table.
#[derive(Debug)]
pub enum Quarantine {
    /// Copied there; it leaves the outbox with the batch's delete.
    Moved,
    /// The dead-letter table refused it: the row stays in the outbox.
    Refused(anyhow::Error),
}

/// Rows held back behind a transaction still running (PostgreSQL FIFO).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBack {
    /// Rows waiting (counted up to a cap).
    pub rows: u64,
    /// The oldest running transaction's id.
    pub oldest_xid: String,
    /// How long it has been open, when the server shows it to this role.
    pub open_seconds: Option<f64>,
}

/// A connection pool to the source database, made once per process.
#[derive(Clone)]
pub struct Source {
    pool: Pool,
    sql: Arc<Statements>,
    /// The dialect of the database, for messages and tests.
    pub dialect: Dialect,
}

impl Source {
    /// Connects and checks that the table, the columns and the dead-letter
    /// table exist, naming whatever is missing.
    pub async fn connect(options: ConnectOptions, cfg: &Config) -> anyhow::Result<Self> {
        let dialect = options.dialect();
        let host = options.host().to_owned();
        let address = options.address();
        let sizing = Sizing {
            connections: POOL_SIZE,
            idle_limit: cfg.lease,
        };
        let pool = Pool::open(options, sizing).await.map_err(|e| {
            // A TLS failure says which setting to look at; anything else
            // keeps the driver's own words (which never carry the password).
            match cfg.tls.explain(&e, &host) {
                Some(why) => anyhow::anyhow!("cannot connect to the database at {address}: {why}"),
                None => e,
            }
        })?;
        let checked = checks::tables(&pool, cfg).await?;
        let sql = dialect.statements(
            &cfg.table,
            &cfg.dead_letter_table,
            &checked.columns,
            checked.id_type,
        );
        Ok(Source {
            pool,
            sql: Arc::new(sql),
            dialect,
        })
    }

    /// Starts a batch transaction.
    pub async fn begin(&self) -> anyhow::Result<Batch> {
        sql_round_trip(1);
        Ok(match &self.pool {
            Pool::Pg(p) => Batch::Pg(p.begin().await?, self.sql.clone()),
            Pool::My(p) => Batch::My(p.begin().await?, self.sql.clone()),
        })
    }

    /// Reads the next page after `after` without locking or changing
    /// anything (dry runs).
    pub async fn peek(&self, after: Option<&str>, limit: u32) -> anyhow::Result<Vec<OutboxRow>> {
        sql_round_trip(1);
        let sql = match after {
            None => &self.sql.peek_first,
            Some(_) => &self.sql.peek_after,
        };
        on_pool!(&self.pool, p => {
            let q = sqlx::query(AssertSqlSafe(sql.as_str()));
            let q = if let Some(k) = after { q.bind(k) } else { q };
            outbox_rows(&q.bind(i64::from(limit)).fetch_all(p).await?)
        })
    }

    /// Rows waiting and the oldest one's age, for the metrics.
    pub async fn backlog(&self) -> anyhow::Result<crate::metrics::Backlog> {
        sql_round_trip(1);
        let sql = AssertSqlSafe(self.sql.backlog.as_str());
        let (rows, age): (i64, Option<f64>) =
            on_pool!(&self.pool, p => sqlx::query_as(sql).fetch_one(p).await?);
        Ok(crate::metrics::Backlog {
            rows: rows.max(0) as u64,
            oldest_age_seconds: age.map(|a| a.max(0.0)),
        })
    }

    /// PostgreSQL FIFO: the rows a running transaction holds back, if any
    /// (`None` when nothing waits, or on a database that needs no filter).
    pub async fn held_back(&self) -> anyhow::Result<Option<HeldBack>> {
        let (Pool::Pg(p), Some(sql)) = (&self.pool, &self.sql.held_back) else {
            return Ok(None);
        };
        sql_round_trip(1);
        let (rows, xid, open_seconds): (i64, Option<String>, Option<f64>) =
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .fetch_one(p)
                .await?;
        Ok((rows > 0).then_some(HeldBack {
            rows: rows as u64,
            oldest_xid: xid.unwrap_or_default(),
            open_seconds,
        }))
    }

    /// Keys and groups of every row up to `last` (inclusive), in id order,
    /// for the FIFO order check: ours and every other row that may come
    /// before one of ours.
    ///
    /// PostgreSQL reads them in the batch's transaction: the rows a running
    /// transaction may still commit before ours are already kept out of the
    /// batch (see `dialect::pg_settled`). InnoDB's consistent read would
    /// miss a row inserted by a transaction still open (and SKIP LOCKED
    /// passed over it), so MySQL/MariaDB read with READ UNCOMMITTED on a
    /// connection of their own: an uncommitted earlier row then holds its
    /// group back, as a row of another relay does.
    pub async fn rows_up_to(
        &self,
        batch: &mut Batch,
        last: &str,
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let Pool::My(p) = &self.pool else {
            sql_round_trip(1);
            return batch.rows_up_to(last).await;
        };
        sql_round_trip(2);
        let mut conn = p.acquire().await?;
        // SET TRANSACTION (no SESSION) applies to the next transaction
        // only: the autocommit SELECT that follows.
        let read = async {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
                .execute(&mut *conn)
                .await?;
            sqlx::query(AssertSqlSafe(self.sql.up_to.as_str()))
                .bind(last)
                .fetch_all(&mut *conn)
                .await
        }
        .await;
        match read {
            Ok(rows) => rows
                .iter()
                .map(|r| r.outbox_row().map(|row| (row.key, row.group)))
                .collect(),
            Err(e) => {
                // The isolation level may still be pending on it: never
                // hand this connection to a batch.
                conn.detach();
                Err(e).context("cannot read the rows before the batch")
            }
        }
    }

    /// True when at least one row is waiting (locked ones included): the
    /// follower's idle probe, [`Statements::probe`](crate::dialect::Statements).
    pub async fn probe(&self) -> anyhow::Result<bool> {
        sql_round_trip(1);
        let sql = AssertSqlSafe(self.sql.probe.as_str());
        Ok(on_pool!(&self.pool, p => sqlx::query(sql).fetch_optional(p).await?.is_some()))
    }

    /// PostgreSQL: a pool of one connection, with the relay's connection
    /// settings, for a `LISTEN` that holds its connection for good and so
    /// must not take one of the pool's batch connections. None on MySQL.
    pub fn listen_pool(&self) -> Option<PgPool> {
        let Pool::Pg(p) = &self.pool else {
            return None;
        };
        let options = (*p.connect_options())
            .clone()
            .application_name("outbox-relay-listen");
        Some(
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(options),
        )
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// True when `error` comes from the database refusing the login
/// (SQLSTATE class 28: invalid authorization, e.g. a rotated password).
pub fn refused_credentials(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|db| db.code())
            .is_some_and(|code| code.starts_with("28"))
    })
}
