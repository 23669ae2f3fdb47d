//! The operator's side of the database: what `dead-letters` and `status`
//! read and change, outside any relay pass.
//!
//! A pass holds its own pool and prepared statements ([`crate::source`]);
//! operator commands are rare and short, so they open a one-connection pool
//! of their own, with the relay's session settings (statement timeout,
//! MySQL's READ COMMITTED, the idle limits), and build their SQL here,
//! from the same validated identifiers and with every value bound.

use std::time::Duration;

use anyhow::bail;
use sqlx::AssertSqlSafe;

use crate::database::ConnectOptions;
use crate::dialect::Dialect;
use crate::ident::{Ident, TableName};
use crate::schema::{IdType, safe_cast_target, type_of};
use crate::source::pool::{Pool, Sizing, on_pool};
use crate::source::rows::ReadRow;

/// How long an operator's session may idle (in a transaction, on
/// PostgreSQL) before the server ends it: the relay's default lease. A
/// replay never idles between its statements; one frozen mid-replay must
/// not keep its rows locked (on a PostgreSQL FIFO outbox, an open writer
/// holds back every later row) for longer than a relay would.
const OPERATOR_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// A small pool on the source database for one operator command.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// Connects with one connection (an operator command runs one statement
    /// at a time).
    pub async fn connect(options: ConnectOptions) -> anyhow::Result<Db> {
        let sizing = Sizing {
            connections: 1,
            idle_limit: OPERATOR_IDLE_LIMIT,
        };
        Ok(Db {
            pool: Pool::open(options, sizing).await?,
        })
    }

    /// The SQL dialect of this database.
    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// The driver's pool, for a transaction.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Columns of a table, as the catalog names them, with their SQL types;
    /// empty when the table does not exist.
    pub async fn columns(&self, table: &TableName) -> anyhow::Result<Vec<(String, String)>> {
        crate::schema::columns(&self.pool, table).await
    }

    /// Rows of a query whose columns are all text (or NULL), values bound
    /// in order as text.
    pub async fn text_rows(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        Ok(on_pool!(&self.pool, p => {
            let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
            for b in binds {
                q = q.bind(b.to_string());
            }
            q.fetch_all(p).await?.iter().map(ReadRow::texts).collect()
        }))
    }
}

/// The type of `column` in `cols`, or an error naming the variable.
pub fn column_type<'c>(
    cols: &'c [(String, String)],
    column: &Ident,
    table: &TableName,
    variable: &str,
    dialect: Dialect,
) -> anyhow::Result<&'c str> {
    match type_of(cols, column.as_str(), dialect) {
        Some(ty) if safe_cast_target(ty) => Ok(ty),
        Some(ty) => {
            bail!("{variable}: column {column} of {table} has an unsupported type {ty:?}")
        }
        None if cols.is_empty() => {
            bail!("{variable}: table {table} does not exist (create it with infra/sql/)")
        }
        None => bail!("{variable}: table {table} has no column {column}"),
    }
}

/// The type of a key column (see [`column_type`]), its kind decided.
pub fn key_type(
    cols: &[(String, String)],
    column: &Ident,
    table: &TableName,
    variable: &str,
    dialect: Dialect,
) -> anyhow::Result<IdType> {
    column_type(cols, column, table, variable, dialect).map(IdType::of)
}

/// True when `cols` has `column`.
pub fn has_column(cols: &[(String, String)], column: &str, dialect: Dialect) -> bool {
    type_of(cols, column, dialect).is_some()
}

/// An expression giving `column` as seconds since the epoch (a float).
pub fn epoch_seconds(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("CAST(EXTRACT(EPOCH FROM {column}) AS TEXT)"),
        Dialect::MySql => format!("CAST(UNIX_TIMESTAMP({column}) AS CHAR)"),
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-12-03T13:30:53.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        ms % 1000
    )
}

/// An epoch-seconds text (as [`epoch_seconds`] renders it) as RFC 3339.
pub fn rfc3339_text(epoch: Option<&str>) -> Option<String> {
    let secs: f64 = epoch?.trim().parse().ok()?;
    (secs >= 0.0).then(|| rfc3339_ms((secs * 1000.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_milliseconds_render_as_utc_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_304_653_000), "2026-12-03T13:30:53.000Z");
        assert_eq!(
            rfc3339_text(Some("1796304653.5")).as_deref(),
            Some("2026-12-03T13:30:53.500Z")
        );
        assert_eq!(rfc3339_text(None), None);
    }
}
