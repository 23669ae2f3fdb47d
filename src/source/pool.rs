//! The connection pool to the source database, opened with the session
//! settings every connection needs, for the relay and the operator
//! commands alike.

use std::time::Duration;

use anyhow::Context;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::postgres::{PgConnection, PgPool};

use crate::database::ConnectOptions;
use crate::dialect::Dialect;

/// How long to wait for a connection before the pass fails (and is retried).
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any SQL statement may run (the backlog query included): the
/// server cancels it and the pass fails, to be retried, well inside the
/// time Lambda keeps free before its deadline (`BATCH_RESERVE`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool on one of the two databases.
#[derive(Clone)]
pub(crate) enum Pool {
    /// PostgreSQL.
    Pg(PgPool),
    /// MySQL / MariaDB.
    My(MySqlPool),
}

/// Expands one body for whichever driver `$pool` holds, with `$p` bound to
/// the driver's pool: a query is written once and type-checks against
/// each driver (each expansion picks its own row reader by type).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::source::pool::Pool::Pg($p) => $body,
            $crate::source::pool::Pool::My($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// What a pool is opened for: how many connections, and how long a
/// session may idle inside a transaction before the server ends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizing {
    /// Connections in the pool.
    pub connections: u32,
    /// How long a session may idle inside a transaction (PostgreSQL) or
    /// at all (MySQL) before the server ends it: the relay's lease.
    pub idle_limit: Duration,
}

impl Pool {
    /// Opens the pool; every connection gets the session settings before
    /// its first use.
    pub(crate) async fn open(options: ConnectOptions, sizing: Sizing) -> anyhow::Result<Pool> {
        let idle_secs = sizing.idle_limit.as_secs();
        // The same pool on either driver, with that driver's session.
        macro_rules! open_with {
            ($options:expr, $session:ident, $database:literal) => {
                sqlx::pool::PoolOptions::new()
                    .max_connections(sizing.connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(move |conn, _| {
                        Box::pin(async move { $session(conn, idle_secs).await })
                    })
                    .connect_with($options)
                    .await
                    .context(concat!("cannot connect to the ", $database, " database"))?
            };
        }
        Ok(match options {
            ConnectOptions::Pg(o) => Pool::Pg(open_with!(o, pg_session, "PostgreSQL")),
            ConnectOptions::My(o) => Pool::My(open_with!(o, mysql_session, "MySQL/MariaDB")),
        })
    }

    /// The SQL dialect of this database.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Pool::Pg(_) => Dialect::Postgres,
            Pool::My(_) => Dialect::MySql,
        }
    }

    /// Closes the pool, waiting for connections to return.
    pub(crate) async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// PostgreSQL's session settings.
async fn pg_session(conn: &mut PgConnection, idle_secs: u64) -> sqlx::Result<()> {
    // A relay frozen mid-batch (paused VM, stopped process) must not keep
    // its rows locked for ever: the server ends its session once the
    // transaction idles past the lease.
    let set = format!("SET idle_in_transaction_session_timeout = '{idle_secs}s'");
    sqlx::query(AssertSqlSafe(set)).execute(&mut *conn).await?;
    // A slow database fails the pass (retried later) well before Lambda's
    // deadline, never hangs it.
    let set = format!("SET statement_timeout = '{}s'", STATEMENT_TIMEOUT.as_secs());
    sqlx::query(AssertSqlSafe(set)).execute(conn).await?;
    Ok(())
}

/// MySQL/MariaDB's session settings.
async fn mysql_session(conn: &mut MySqlConnection, idle_secs: u64) -> sqlx::Result<()> {
    // InnoDB's default REPEATABLE READ takes gap locks on the range a
    // batch scans, and concurrent relays deadlock on them; READ COMMITTED
    // locks only the rows selected.
    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *conn)
        .await?;
    // MySQL has no idle-in-transaction timeout: a relay frozen mid-batch
    // would hold its row locks for wait_timeout (8 h by default). The
    // server ends a session idle past the lease, so its transaction rolls
    // back and the rows come free, as on PostgreSQL. (A pooled connection
    // it ends while idle is replaced on acquire.)
    let set = format!("SET SESSION wait_timeout = {idle_secs}");
    sqlx::query(AssertSqlSafe(set)).execute(&mut *conn).await?;
    set_mysql_statement_timeout(conn).await
}

/// Bounds every statement on a MySQL/MariaDB session: MariaDB's
/// `max_statement_time` (seconds, every statement), else MySQL's
/// `max_execution_time` (milliseconds, SELECTs only; MySQL bounds row lock
/// waits by `innodb_lock_wait_timeout`, and `SKIP LOCKED` never waits).
async fn set_mysql_statement_timeout(conn: &mut MySqlConnection) -> sqlx::Result<()> {
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
