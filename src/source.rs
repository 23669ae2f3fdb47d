//! The outbox table: connect, check the schema, lock a batch, quarantine,
//! delete.
//!
//! A batch lives in one database transaction: rows are selected `FOR UPDATE
//! SKIP LOCKED`, so concurrent relays take disjoint rows, and they stay
//! locked while the batch is claimed, sent and marked. The delete of sent
//! rows and the move of poison rows commit together at the end. If the relay
//! dies, the transaction rolls back and the rows are simply there again; the
//! ledger then tells the next pass what was already sent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, MySql, Postgres, Row, Transaction};

use crate::config::Config;
use crate::dialect::{Columns, Delete, Dialect, Statements};
use crate::ident::{Ident, TableName};
use crate::message::{NotText, OutboxRow};
use crate::stats::sql_round_trip;

/// Connections per relay process: a pass uses one at a time; the second
/// covers a dry run or a slow rollback overlapping the next batch.
const POOL_SIZE: u32 = 2;
/// How long to wait for a connection before the pass fails (and is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection pool to the source database, made once per process.
#[derive(Clone)]
pub struct Source {
    pool: Pool,
    sql: Arc<Statements>,
    /// The dialect of the database, for messages and tests.
    pub dialect: Dialect,
}

#[derive(Clone)]
enum Pool {
    Pg(PgPool),
    My(MySqlPool),
}

/// One batch's transaction; dropped without [`Batch::commit`] it rolls back.
pub enum Batch {
    /// A PostgreSQL transaction.
    Pg(Transaction<'static, Postgres>, Arc<Statements>),
    /// A MySQL/MariaDB transaction.
    My(Transaction<'static, MySql>, Arc<Statements>),
}

impl Source {
    /// Connects and checks that the table, the columns and the dead-letter
    /// table exist, naming whatever is missing.
    pub async fn connect(url: &str, cfg: &Config) -> anyhow::Result<Self> {
        let dialect = Dialect::of_url(url);
        let lease_secs = cfg.lease.as_secs();
        let pool = match dialect {
            Dialect::Postgres => Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // A relay frozen mid-batch (paused VM, stopped process)
                    // must not keep its rows locked for ever: the server ends
                    // its session once the transaction idles past the lease.
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            let set = format!(
                                "SET idle_in_transaction_session_timeout = '{lease_secs}s'"
                            );
                            sqlx::query(AssertSqlSafe(set)).execute(conn).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .context("cannot connect to the PostgreSQL database")?,
            ),
            Dialect::MySql => Pool::My(
                MySqlPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // InnoDB's default REPEATABLE READ takes gap locks on the
                    // range a batch scans, and concurrent relays deadlock on
                    // them; READ COMMITTED locks only the rows selected.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .context("cannot connect to the MySQL/MariaDB database")?,
            ),
        };
        if let Pool::My(p) = &pool {
            check_mysql_version(p).await?;
        }

        let source_cols = columns_of(&pool, dialect, &cfg.table, "OUTBOX_TABLE").await?;
        let id_type = find_column(
            &source_cols,
            &cfg.id_column,
            &cfg.table,
            "OUTBOX_ID_COLUMN",
            dialect,
        )?;
        find_column(
            &source_cols,
            &cfg.payload_column,
            &cfg.table,
            "OUTBOX_PAYLOAD_COLUMN",
            dialect,
        )?;
        if let Some(g) = &cfg.group_column {
            find_column(&source_cols, g, &cfg.table, "OUTBOX_GROUP_COLUMN", dialect)?;
        }
        let dl_cols = columns_of(
            &pool,
            dialect,
            &cfg.dead_letter_table,
            "OUTBOX_DEAD_LETTER_TABLE",
        )
        .await?;
        for needed in ["id", "payload", "group_key", "reason"] {
            let ident = Ident::parse(needed).expect("a valid literal");
            find_column(
                &dl_cols,
                &ident,
                &cfg.dead_letter_table,
                "OUTBOX_DEAD_LETTER_TABLE",
                dialect,
            )?;
        }
        let created = Ident::parse("created_at").expect("a valid literal");
        let has = |cols: &[(String, String)]| cols.iter().any(|(n, _)| same(n, &created, dialect));
        let columns = Columns {
            id: cfg.id_column.clone(),
            payload: cfg.payload_column.clone(),
            group: cfg.group_column.clone(),
            copy_created_at: has(&source_cols) && has(&dl_cols),
            created_at: has(&source_cols).then_some(created),
        };
        if !id_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
        {
            bail!(
                "OUTBOX_ID_COLUMN: column {} of {} has an unsupported type {id_type:?}",
                cfg.id_column,
                cfg.table
            );
        }
        let sql = dialect.statements(&cfg.table, &cfg.dead_letter_table, &columns, &id_type);
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
        let rows = match &self.pool {
            Pool::Pg(p) => {
                let q = sqlx::query(AssertSqlSafe(sql.as_str()));
                let q = if let Some(k) = after { q.bind(k) } else { q };
                q.bind(i64::from(limit))
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
            Pool::My(p) => {
                let q = sqlx::query(AssertSqlSafe(sql.as_str()));
                let q = if let Some(k) = after { q.bind(k) } else { q };
                q.bind(i64::from(limit))
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(my_row)
                    .collect()
            }
        };
        Ok(rows)
    }

    /// Rows waiting and the oldest one's age, for the metrics.
    pub async fn backlog(&self) -> anyhow::Result<crate::metrics::Backlog> {
        sql_round_trip(1);
        let (rows, age): (i64, Option<f64>) = match &self.pool {
            Pool::Pg(p) => {
                sqlx::query_as(AssertSqlSafe(self.sql.backlog.as_str()))
                    .fetch_one(p)
                    .await?
            }
            Pool::My(p) => {
                sqlx::query_as(AssertSqlSafe(self.sql.backlog.as_str()))
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(crate::metrics::Backlog {
            rows: rows.max(0) as u64,
            oldest_age_seconds: age.map(|a| a.max(0.0)),
        })
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
        }
    }
}

impl Batch {
    /// Locks up to a batch of rows after `after` (keyset pagination), in id
    /// order, skipping rows other relays hold.
    pub async fn lock_next(
        &mut self,
        after: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        sql_round_trip(1);
        let rows = match self {
            Batch::Pg(tx, sql) => {
                let text = if after.is_some() {
                    &sql.lock_after
                } else {
                    &sql.lock_first
                };
                let q = sqlx::query(AssertSqlSafe(text.as_str()));
                let q = if let Some(k) = after { q.bind(k) } else { q };
                let q = q.bind(i64::from(limit));
                q.fetch_all(&mut **tx).await?.iter().map(pg_row).collect()
            }
            Batch::My(tx, sql) => {
                let text = if after.is_some() {
                    &sql.lock_after
                } else {
                    &sql.lock_first
                };
                let q = sqlx::query(AssertSqlSafe(text.as_str()));
                let q = if let Some(k) = after { q.bind(k) } else { q };
                let q = q.bind(i64::from(limit));
                q.fetch_all(&mut **tx).await?.iter().map(my_row).collect()
            }
        };
        Ok(rows)
    }

    /// Copies a poison row to the dead-letter table with its reason; the
    /// row itself goes with the batch's delete, in the same transaction.
    pub async fn quarantine(&mut self, key: &str, reason: &str) -> anyhow::Result<()> {
        sql_round_trip(1);
        let copied = match self {
            Batch::Pg(tx, sql) => sqlx::query(AssertSqlSafe(sql.quarantine.as_str()))
                .bind(reason)
                .bind(key)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Batch::My(tx, sql) => sqlx::query(AssertSqlSafe(sql.quarantine.as_str()))
                .bind(reason)
                .bind(key)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        };
        if copied != 1 {
            bail!("quarantine of row {key} copied {copied} rows, expected 1");
        }
        Ok(())
    }

    /// Deletes the rows with these keys; returns how many went.
    pub async fn delete(&mut self, keys: &[String]) -> anyhow::Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let n = match self {
            Batch::Pg(tx, sql) => match sql.delete(keys) {
                Delete::Array(text) => {
                    sql_round_trip(1);
                    sqlx::query(AssertSqlSafe(text))
                        .bind(keys)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected()
                }
                other => bail!("unexpected PostgreSQL delete plan {other:?}"),
            },
            Batch::My(tx, sql) => match sql.delete(keys) {
                Delete::Script(text) => {
                    sql_round_trip(1);
                    sqlx::raw_sql(AssertSqlSafe(text))
                        .execute(&mut **tx)
                        .await?
                        .rows_affected()
                }
                Delete::EachRow(text) => {
                    sql_round_trip(keys.len() as u64);
                    let mut n = 0;
                    for k in keys {
                        n += sqlx::query(AssertSqlSafe(text.as_str()))
                            .bind(k)
                            .execute(&mut **tx)
                            .await?
                            .rows_affected();
                    }
                    n
                }
                other => bail!("unexpected MySQL delete plan {other:?}"),
            },
        };
        Ok(n)
    }

    /// Keys and groups of every row up to `last` (inclusive), in id order,
    /// without locking: ours and those other relays hold. A plain read
    /// sees rows locked by others (MVCC / consistent read), which is the point.
    pub async fn rows_up_to(
        &mut self,
        last: &str,
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let rows: Vec<OutboxRow> = match self {
            Batch::Pg(tx, sql) => sqlx::query(AssertSqlSafe(sql.up_to.as_str()))
                .bind(last)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(pg_row)
                .collect(),
            Batch::My(tx, sql) => sqlx::query(AssertSqlSafe(sql.up_to.as_str()))
                .bind(last)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(my_row)
                .collect(),
        };
        Ok(rows.into_iter().map(|r| (r.key, r.group)).collect())
    }

    /// Commits the deletes and quarantines of this batch.
    pub async fn commit(self) -> anyhow::Result<()> {
        sql_round_trip(1);
        match self {
            Batch::Pg(tx, _) => tx.commit().await?,
            Batch::My(tx, _) => tx.commit().await?,
        }
        Ok(())
    }
}

fn pg_row(r: &sqlx::postgres::PgRow) -> OutboxRow {
    OutboxRow {
        key: r.get::<String, _>(0),
        payload: r.get::<Option<String>, _>(1).map(Ok),
        group: r.get::<Option<String>, _>(2),
    }
}

fn my_row(r: &sqlx::mysql::MySqlRow) -> OutboxRow {
    // Bytes, not String: a BLOB payload that is not UTF-8 must become a
    // poison row with a reason, not a decode error that stalls the batch.
    let text = |i: usize| {
        r.get::<Option<Vec<u8>>, _>(i)
            .map(|b| String::from_utf8(b).map_err(|_| NotText))
    };
    OutboxRow {
        key: text(0).and_then(Result::ok).unwrap_or_default(),
        payload: text(1),
        group: text(2).and_then(Result::ok),
    }
}

/// Unquoted MySQL column names compare case-insensitively; PostgreSQL
/// names are quoted by the relay, so they compare exactly.
fn same(name: &str, ident: &Ident, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Postgres => name == ident.as_str(),
        Dialect::MySql => name.eq_ignore_ascii_case(ident.as_str()),
    }
}

fn find_column(
    cols: &[(String, String)],
    want: &Ident,
    table: &TableName,
    variable: &str,
    dialect: Dialect,
) -> anyhow::Result<String> {
    match cols.iter().find(|(n, _)| same(n, want, dialect)) {
        Some((_, ty)) => Ok(ty.clone()),
        None => bail!("{variable}: table {table} has no column {want}"),
    }
}

/// The columns of a table with their SQL types; an error naming the table
/// when it does not exist.
async fn columns_of(
    pool: &Pool,
    dialect: Dialect,
    table: &TableName,
    variable: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let missing =
        || anyhow::anyhow!("{variable}: table {table} does not exist (create it with infra/sql/)");
    let cols: Vec<(String, String)> = match pool {
        Pool::Pg(p) => {
            let qualified = dialect.quote_table(table);
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(&qualified)
                .fetch_one(p)
                .await
                .context("cannot read the PostgreSQL catalog")?;
            if exists.is_none() {
                return Err(missing());
            }
            sqlx::query_as(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(&qualified)
            .fetch_all(p)
            .await?
        }
        Pool::My(p) => {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            )
            .bind(table.schema.as_ref().map(Ident::as_str))
            .bind(table.table.as_str())
            .fetch_all(p)
            .await
            .context("cannot read information_schema")?;
            let cols: Vec<(String, String)> = rows
                .into_iter()
                .map(|(n, t)| {
                    (
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&t).into_owned(),
                    )
                })
                .collect();
            if cols.is_empty() {
                return Err(missing());
            }
            cols
        }
    };
    Ok(cols)
}

/// `SKIP LOCKED` needs MySQL 8.0.1+ or MariaDB 10.6+; older servers would
/// make concurrent relays block on each other's rows, so refuse to start.
async fn check_mysql_version(pool: &MySqlPool) -> anyhow::Result<()> {
    let v: Vec<u8> = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(pool)
        .await?;
    let v = String::from_utf8_lossy(&v).into_owned();
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (major, minor) = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    );
    let mariadb = v.to_ascii_lowercase().contains("mariadb");
    let ok = if mariadb {
        (major, minor) >= (10, 6)
    } else {
        major >= 8
    };
    if !ok {
        bail!(
            "database server {v} is too old: FOR UPDATE SKIP LOCKED needs MySQL 8.0.1+ or MariaDB 10.6+"
        );
    }
    Ok(())
}
