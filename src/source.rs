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
use crate::database::ConnectOptions;
use crate::dialect::{Columns, Delete, Dialect, Statements};
use crate::ident::{Ident, TableName};
use crate::message::{NotText, OutboxRow};
use crate::schema::{PayloadKind, accepted_payloads, my_id_is_a_key, pg_id_is_a_key};
use crate::stats::sql_round_trip;

/// Connections per relay process: a pass on a standard queue on PostgreSQL
/// holds two batches' transactions at once (see `PIPELINE_DEPTH` in
/// relay.rs); the third covers a slow rollback overlapping the next batch.
const POOL_SIZE: u32 = 3;
/// How long to wait for a connection before the pass fails (and is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any SQL statement may run (the backlog query included): the
/// server cancels it and the pass fails, to be retried, well inside the
/// time Lambda keeps free before its deadline (`BATCH_RESERVE`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The kinds of row key the relay accepts, read from the column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdKind {
    Integer,
    Uuid,
    Text,
}

impl IdKind {
    /// The kind of a type as PostgreSQL's `format_type` or MySQL's
    /// `COLUMN_TYPE` spells it; `None` for anything else.
    fn of(sql_type: &str) -> Option<IdKind> {
        let t = sql_type.trim().to_ascii_lowercase();
        let base = t.split(['(', ' ']).next().unwrap_or_default();
        match base {
            "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint" => {
                Some(IdKind::Integer)
            }
            "uuid" => Some(IdKind::Uuid),
            "text" | "varchar" | "char" | "character" | "tinytext" | "mediumtext" | "longtext" => {
                Some(IdKind::Text)
            }
            _ => None,
        }
    }

    /// Whether a dead-letter `id` of kind `dl` can hold every key of this kind.
    fn fits_in(self, dl: IdKind) -> bool {
        self == dl || dl == IdKind::Text
    }
}

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

/// Bounds every statement on a MySQL/MariaDB session: MariaDB's
/// `max_statement_time` (seconds, every statement), else MySQL's
/// `max_execution_time` (milliseconds, SELECTs only; MySQL bounds row lock
/// waits by `innodb_lock_wait_timeout`, and `SKIP LOCKED` never waits).
async fn set_mysql_statement_timeout(conn: &mut sqlx::MySqlConnection) -> sqlx::Result<()> {
    let secs = STATEMENT_TIMEOUT.as_secs();
    let mariadb = format!("SET SESSION max_statement_time = {secs}");
    if sqlx::query(AssertSqlSafe(mariadb))
        .execute(&mut *conn)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let mysql = format!("SET SESSION max_execution_time = {}", secs * 1000);
    sqlx::query(AssertSqlSafe(mysql)).execute(conn).await?;
    Ok(())
}

/// Opens the pool with the session settings every connection needs.
async fn open_pool(options: ConnectOptions, cfg: &Config) -> anyhow::Result<Pool> {
    let lease_secs = cfg.lease.as_secs();
    Ok(match options {
        ConnectOptions::Pg(o) => Pool::Pg(
            PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // A relay frozen mid-batch (paused VM, stopped process)
                // must not keep its rows locked for ever: the server ends
                // its session once the transaction idles past the lease.
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        let set =
                            format!("SET idle_in_transaction_session_timeout = '{lease_secs}s'");
                        sqlx::query(AssertSqlSafe(set)).execute(&mut *conn).await?;
                        // A slow database fails the pass (retried later)
                        // well before Lambda's deadline, never hangs it.
                        let set =
                            format!("SET statement_timeout = '{}s'", STATEMENT_TIMEOUT.as_secs());
                        sqlx::query(AssertSqlSafe(set)).execute(conn).await?;
                        Ok(())
                    })
                })
                .connect_with(o)
                .await
                .context("cannot connect to the PostgreSQL database")?,
        ),
        ConnectOptions::My(o) => Pool::My(
            MySqlPoolOptions::new()
                .max_connections(POOL_SIZE)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // InnoDB's default REPEATABLE READ takes gap locks on the
                // range a batch scans, and concurrent relays deadlock on
                // them; READ COMMITTED locks only the rows selected.
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .execute(&mut *conn)
                            .await?;
                        // MySQL has no idle-in-transaction timeout: a relay
                        // frozen mid-batch would hold its row locks for
                        // wait_timeout (8 h by default). The server ends a
                        // session idle past the lease, so its transaction
                        // rolls back and the rows come free, as on
                        // PostgreSQL. (A pooled connection it ends while
                        // idle is replaced on acquire.)
                        let set = format!("SET SESSION wait_timeout = {lease_secs}");
                        sqlx::query(AssertSqlSafe(set)).execute(&mut *conn).await?;
                        set_mysql_statement_timeout(conn).await?;
                        Ok(())
                    })
                })
                .connect_with(o)
                .await
                .context("cannot connect to the MySQL/MariaDB database")?,
        ),
    })
}

impl Source {
    /// Connects and checks that the table, the columns and the dead-letter
    /// table exist, naming whatever is missing.
    pub async fn connect(options: ConnectOptions, cfg: &Config) -> anyhow::Result<Self> {
        let dialect = options.dialect();
        let host = options.host().to_owned();
        let address = options.address();
        let pool = open_pool(options, cfg).await.map_err(|e| {
            // A TLS failure says which setting to look at; anything else
            // keeps the driver's own words (which never carry the password).
            match cfg.tls.explain(&e, &host) {
                Some(why) => anyhow::anyhow!("cannot connect to the database at {address}: {why}"),
                None => e,
            }
        })?;
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
        let payload_type = find_column(
            &source_cols,
            &cfg.payload_column,
            &cfg.table,
            "OUTBOX_PAYLOAD_COLUMN",
            dialect,
        )?;
        let Some(payload_kind) = PayloadKind::of(dialect, &payload_type) else {
            bail!(
                "OUTBOX_PAYLOAD_COLUMN: column {} of {} has type {payload_type}; the relay sends {} payloads",
                cfg.payload_column,
                cfg.table,
                accepted_payloads(dialect)
            );
        };
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
        let dl_column = |name: &str| {
            let ident = Ident::parse(name).expect("a valid literal");
            find_column(
                &dl_cols,
                &ident,
                &cfg.dead_letter_table,
                "OUTBOX_DEAD_LETTER_TABLE",
                dialect,
            )
        };
        let dl_id_type = dl_column("id")?;
        for needed in ["payload", "group_key", "reason"] {
            dl_column(needed)?;
        }
        // Keys travel as text and are cast back to the column's type, so
        // only types whose text form round-trips exactly are accepted: a
        // DECIMAL compared through a double, or a BINARY key that is not
        // UTF-8, could make a delete hit another row than the one sent.
        let Some(id_kind) = IdKind::of(&id_type) else {
            bail!(
                "OUTBOX_ID_COLUMN: column {} of {} has type {id_type}; the relay supports integer, UUID and text ids",
                cfg.id_column,
                cfg.table
            );
        };
        // Every row must have its own key: the ledger, the deletes and the
        // dead-letter table all go by it.
        let id_is_a_key = match &pool {
            Pool::Pg(p) => {
                pg_id_is_a_key(p, &dialect.quote_table(&cfg.table), cfg.id_column.as_str()).await?
            }
            Pool::My(p) => {
                my_id_is_a_key(
                    p,
                    cfg.table.schema.as_ref().map(Ident::as_str),
                    cfg.table.table.as_str(),
                    cfg.id_column.as_str(),
                )
                .await?
            }
        };
        if !id_is_a_key {
            bail!(
                "OUTBOX_ID_COLUMN: column {} of {} is neither the primary key nor a UNIQUE NOT NULL column; the relay needs one key per row",
                cfg.id_column,
                cfg.table
            );
        }
        // A poison row whose id does not fit the dead-letter table could not
        // be moved there; better said now than at the first poison row.
        if !IdKind::of(&dl_id_type).is_some_and(|dl| id_kind.fits_in(dl)) {
            bail!(
                "OUTBOX_DEAD_LETTER_TABLE: column id of {} is {dl_id_type} but {}.{} is {id_type}; give it the id column's type",
                cfg.dead_letter_table,
                cfg.table,
                cfg.id_column
            );
        }
        let created = Ident::parse("created_at").expect("a valid literal");
        let has = |cols: &[(String, String)]| cols.iter().any(|(n, _)| same(n, &created, dialect));
        let columns = Columns {
            id: cfg.id_column.clone(),
            payload: cfg.payload_column.clone(),
            group: cfg.group_column.clone(),
            copy_created_at: has(&source_cols) && has(&dl_cols),
            created_at: has(&source_cols).then_some(created),
            payload_bytes: payload_kind == PayloadKind::Bytes,
            // Order matters on FIFO queues only; MySQL needs no filter (see
            // `Source::rows_up_to`).
            settled_only: cfg.is_fifo(),
            shape: crate::shaping::shape_columns(cfg, &source_cols, &dl_cols, dialect)?,
        };
        // The type name goes into the SQL text as a cast target: only the
        // catalog's own spelling of an accepted type gets there.
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
                    .collect::<anyhow::Result<_>>()?
            }
            Pool::My(p) => {
                let q = sqlx::query(AssertSqlSafe(sql.as_str()));
                let q = if let Some(k) = after { q.bind(k) } else { q };
                q.bind(i64::from(limit))
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(my_row)
                    .collect::<anyhow::Result<_>>()?
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
                .map(|r| {
                    let row = my_row(r)?;
                    Ok((row.key, row.group))
                })
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
        let found = match &self.pool {
            Pool::Pg(p) => sqlx::query(sql).fetch_optional(p).await?.is_some(),
            Pool::My(p) => sqlx::query(sql).fetch_optional(p).await?.is_some(),
        };
        Ok(found)
    }

    /// PostgreSQL: a pool of one connection, with the relay's connection
    /// settings, for a `LISTEN` that holds its connection for good and so
    /// must not take one of the pool's batch connections. None on MySQL.
    pub fn listen_pool(&self) -> Option<PgPool> {
        match &self.pool {
            Pool::Pg(p) => {
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
            Pool::My(_) => None,
        }
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
                q.fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(pg_row)
                    .collect::<anyhow::Result<_>>()?
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
                q.fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(my_row)
                    .collect::<anyhow::Result<_>>()?
            }
        };
        Ok(rows)
    }

    /// Copies a poison row to the dead-letter table with its reason; the
    /// row itself goes with the batch's delete, in the same transaction.
    ///
    /// The copy runs inside a savepoint: if the dead-letter table refuses
    /// it (a duplicate id, a value too long for a column), only the copy is
    /// undone and the row stays where it is, while the batch's sent rows
    /// are still deleted. Failing the whole batch instead would stall the
    /// relay on that row for good, and resend the batch's rows once their
    /// ledger items expire. `Err` means the transaction itself is lost.
    pub async fn quarantine(&mut self, key: &str, reason: &str) -> anyhow::Result<Quarantine> {
        sql_round_trip(3);
        // The same statements on either transaction type.
        macro_rules! copy_in_savepoint {
            ($tx:expr, $sql:expr) => {{
                sqlx::query("SAVEPOINT quarantine")
                    .execute(&mut **$tx)
                    .await?;
                let r = sqlx::query(AssertSqlSafe($sql.quarantine.as_str()))
                    .bind(reason)
                    .bind(key)
                    .execute(&mut **$tx)
                    .await;
                let end = match r {
                    Ok(_) => "RELEASE SAVEPOINT quarantine",
                    Err(_) => "ROLLBACK TO SAVEPOINT quarantine",
                };
                sqlx::query(end).execute(&mut **$tx).await?;
                r.map(|done| done.rows_affected())
            }};
        }
        let copied = match self {
            Batch::Pg(tx, sql) => copy_in_savepoint!(tx, sql),
            Batch::My(tx, sql) => copy_in_savepoint!(tx, sql),
        };
        Ok(match copied {
            Ok(1) => Quarantine::Moved,
            Ok(n) => bail!("quarantine of row {key} copied {n} rows, expected 1"),
            Err(e) => Quarantine::Refused(
                anyhow::Error::new(e).context("the dead-letter table refused the row"),
            ),
        })
    }

    /// Deletes the rows with these keys, which this batch holds locked.
    ///
    /// Exactly one row per key must go: the rows are locked by this
    /// transaction, so any other count means a key matched a row it should
    /// not (or none), and the batch is refused rather than committed.
    pub async fn delete(&mut self, keys: &[String]) -> anyhow::Result<u64> {
        let n = self.delete_unchecked(keys).await?;
        if n != keys.len() as u64 {
            bail!(
                "deleting {} sent rows removed {n}; the batch is rolled back",
                keys.len()
            );
        }
        Ok(n)
    }

    async fn delete_unchecked(&mut self, keys: &[String]) -> anyhow::Result<u64> {
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
                .collect::<anyhow::Result<_>>()?,
            Batch::My(tx, sql) => sqlx::query(AssertSqlSafe(sql.up_to.as_str()))
                .bind(last)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(my_row)
                .collect::<anyhow::Result<_>>()?,
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

/// Reads one selected row: key, payload, group.
///
/// Nothing here panics: a key that cannot be read fails the batch with an
/// error saying where (the id column is checked at start to be unique and
/// NOT NULL, so this means a type the checks missed), and a payload that
/// cannot be read as UTF-8 text makes the row poison.
fn pg_row(r: &sqlx::postgres::PgRow) -> anyhow::Result<OutboxRow> {
    use sqlx::{Column, TypeInfo};
    let key: Option<String> = r.try_get(0).context("cannot read a row's key as text")?;
    let key = key.context("a selected row has a NULL key")?;
    // A bytea payload is selected as itself: its bytes are the body when
    // they are UTF-8 (`::text` would give its hex form, `\x7b…`).
    let payload = if r.column(1).type_info().name() == "BYTEA" {
        r.try_get::<Option<Vec<u8>>, _>(1)
            .map(|p| p.map(|b| String::from_utf8(b).map_err(|_| NotText)))
    } else {
        r.try_get::<Option<String>, _>(1).map(|p| p.map(Ok))
    };
    Ok(OutboxRow {
        payload: payload.unwrap_or(Some(Err(NotText))),
        group: r
            .try_get::<Option<String>, _>(2)
            .with_context(|| format!("row {key}: cannot read its group as text"))?,
        shape: crate::shaping::Shape::of_pg(r),
        key,
    })
}

/// As [`pg_row`], for MySQL/MariaDB. Bytes, not String: a BLOB payload
/// that is not UTF-8 must become a poison row with a reason, not a decode
/// error that stalls the batch.
fn my_row(r: &sqlx::mysql::MySqlRow) -> anyhow::Result<OutboxRow> {
    let bytes = |i: usize| r.try_get::<Option<Vec<u8>>, _>(i);
    let key = bytes(0)
        .context("cannot read a row's key")?
        .context("a selected row has a NULL key")?;
    let key = String::from_utf8(key).context("a row's key is not UTF-8 text")?;
    // A group that is not UTF-8 gets U+FFFD, which no MessageGroupId
    // accepts: the row becomes poison instead of failing every pass.
    let group = bytes(2)
        .with_context(|| format!("row {key}: cannot read its group"))?
        .map(|g| String::from_utf8_lossy(&g).into_owned());
    Ok(OutboxRow {
        payload: match bytes(1) {
            Ok(p) => p.map(|b| String::from_utf8(b).map_err(|_| NotText)),
            Err(_) => Some(Err(NotText)),
        },
        group,
        shape: crate::shaping::Shape::of_my(r),
        key,
    })
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

#[cfg(test)]
mod tests {
    use super::IdKind;

    #[test]
    fn only_ids_whose_text_round_trips_are_accepted() {
        for (ty, kind) in [
            ("bigint", IdKind::Integer),
            ("integer", IdKind::Integer),
            ("int(10) unsigned", IdKind::Integer),
            ("bigint(20)", IdKind::Integer),
            ("uuid", IdKind::Uuid),
            ("text", IdKind::Text),
            ("character varying(64)", IdKind::Text),
            ("varchar(36)", IdKind::Text),
            ("char(36)", IdKind::Text),
        ] {
            assert_eq!(IdKind::of(ty), Some(kind), "{ty}");
        }
        for ty in [
            "numeric(20,0)",
            "decimal(20,0)",
            "binary(16)",
            "bytea",
            "double precision",
        ] {
            assert_eq!(IdKind::of(ty), None, "{ty}");
        }
    }

    #[test]
    fn a_dead_letter_id_must_hold_every_key() {
        assert!(IdKind::Integer.fits_in(IdKind::Integer));
        assert!(IdKind::Uuid.fits_in(IdKind::Text));
        assert!(!IdKind::Uuid.fits_in(IdKind::Integer));
        assert!(!IdKind::Text.fits_in(IdKind::Uuid));
    }
}
