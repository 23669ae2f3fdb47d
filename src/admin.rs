//! The operator's side of the database: what `dead-letters` and `status`
//! read and change, outside any relay pass.
//!
//! A pass holds its own pool and prepared statements ([`crate::source`]);
//! operator commands are rare and short, so they open a one-connection pool
//! of their own and build their SQL here, from the same validated
//! identifiers and with every value bound.

use anyhow::{Context, bail};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use crate::database::ConnectOptions;
use crate::dialect::Dialect;
use crate::ident::{Ident, TableName};

/// A small pool on the source database for one operator command.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL.
    Pg(PgPool),
    /// MySQL / MariaDB.
    My(MySqlPool),
}

impl Db {
    /// Connects with one connection (an operator command runs one statement
    /// at a time).
    pub async fn connect(options: ConnectOptions) -> anyhow::Result<Db> {
        Ok(match options {
            ConnectOptions::Pg(o) => Db::Pg(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(o)
                    .await
                    .context("cannot connect to the PostgreSQL database")?,
            ),
            ConnectOptions::My(o) => Db::My(
                MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect_with(o)
                    .await
                    .context("cannot connect to the MySQL/MariaDB database")?,
            ),
        })
    }

    /// The SQL dialect of this database.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(_) => Dialect::Postgres,
            Db::My(_) => Dialect::MySql,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Pg(p) => p.close().await,
            Db::My(p) => p.close().await,
        }
    }

    /// Columns of a table, lower-cased names on MySQL (its names compare
    /// case-insensitively), with their SQL types; empty when the table
    /// does not exist.
    pub async fn columns(&self, table: &TableName) -> anyhow::Result<Vec<(String, String)>> {
        match self {
            Db::Pg(p) => {
                let qualified = Dialect::Postgres.quote_table(table);
                Ok(sqlx::query_as(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                     FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                )
                .bind(&qualified)
                .fetch_all(p)
                .await
                .context("cannot read the PostgreSQL catalog")?)
            }
            Db::My(p) => {
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
                Ok(rows
                    .into_iter()
                    .map(|(n, t)| {
                        (
                            String::from_utf8_lossy(&n).to_ascii_lowercase(),
                            String::from_utf8_lossy(&t).into_owned(),
                        )
                    })
                    .collect())
            }
        }
    }

    /// Rows of a query whose columns are all text (or NULL), values bound
    /// in order as text.
    pub async fn text_rows(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        match self {
            Db::Pg(p) => {
                let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                Ok(q.fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect())
            }
            Db::My(p) => {
                let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                Ok(q.fetch_all(p).await?.iter().map(my_text_row).collect())
            }
        }
    }
}

/// A MySQL row read as text: bytes first, so no column type can fail it.
pub fn my_text_row(r: &sqlx::mysql::MySqlRow) -> Vec<Option<String>> {
    (0..r.len())
        .map(|i| {
            r.get::<Option<Vec<u8>>, _>(i)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .collect()
}

/// The type of `column` in `cols`, or an error naming the variable.
pub fn column_type<'c>(
    cols: &'c [(String, String)],
    column: &Ident,
    table: &TableName,
    variable: &str,
    dialect: Dialect,
) -> anyhow::Result<&'c str> {
    let want = match dialect {
        Dialect::Postgres => column.as_str().to_owned(),
        Dialect::MySql => column.as_str().to_ascii_lowercase(),
    };
    match cols.iter().find(|(n, _)| *n == want) {
        Some((_, ty)) if safe_type(ty) => Ok(ty),
        Some((_, ty)) => {
            bail!("{variable}: column {column} of {table} has an unsupported type {ty:?}")
        }
        None if cols.is_empty() => {
            bail!("{variable}: table {table} does not exist (create it with infra/sql/)")
        }
        None => bail!("{variable}: table {table} has no column {column}"),
    }
}

/// True when `cols` has `column`.
pub fn has_column(cols: &[(String, String)], column: &str, dialect: Dialect) -> bool {
    cols.iter().any(|(n, _)| match dialect {
        Dialect::Postgres => n == column,
        Dialect::MySql => n.eq_ignore_ascii_case(column),
    })
}

/// A catalog type name that may go into SQL text as a cast target.
fn safe_type(ty: &str) -> bool {
    ty.chars()
        .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
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
