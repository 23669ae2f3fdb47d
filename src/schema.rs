//! What the relay accepts of a user's table, decided from the catalog at
//! start: the payload column's type and whether the id column is a key.
//!
//! Anything not accepted here is refused at start with one line naming the
//! variable, rather than relayed wrongly (a `bytea` sent as its hex text,
//! two rows sharing a key, a NULL key).

use anyhow::Context;
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;

use crate::dialect::Dialect;

/// How a payload column's value becomes a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Text of any length, `CHAR(n)` (without its padding), JSON (its JSON
    /// text): the body is the text.
    Text,
    /// `bytea`, `BLOB`s, `VARBINARY(n)`: the body is the bytes when they
    /// are UTF-8, else the row is poison ("payload is not UTF-8 text").
    Bytes,
}

/// The payload types the relay accepts, for the refusal message.
pub fn accepted_payloads(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "text, varchar, char, citext, json, jsonb and bytea",
        Dialect::MySql => "TEXT, VARCHAR, CHAR, JSON, BLOB and VARBINARY",
    }
}

impl PayloadKind {
    /// The kind of a payload column as PostgreSQL's `format_type` or
    /// MySQL's `COLUMN_TYPE` spells its type; `None` when it is refused.
    ///
    /// Refused on purpose: numbers, dates, booleans, enums, arrays (their
    /// text form is not a message anyone wrote), and MySQL's fixed-length
    /// `BINARY(n)`, which pads every value with zero bytes SQS refuses.
    pub fn of(dialect: Dialect, sql_type: &str) -> Option<PayloadKind> {
        let t = sql_type.trim().to_ascii_lowercase();
        if t.ends_with("[]") {
            return None;
        }
        let base = t.split(['(', ' ']).next().unwrap_or_default();
        match (dialect, base) {
            (Dialect::Postgres, "bytea") => Some(PayloadKind::Bytes),
            (Dialect::Postgres, "text" | "citext" | "json" | "jsonb" | "character") => {
                Some(PayloadKind::Text)
            }
            (Dialect::MySql, "tinyblob" | "blob" | "mediumblob" | "longblob" | "varbinary") => {
                Some(PayloadKind::Bytes)
            }
            (
                Dialect::MySql,
                "tinytext" | "text" | "mediumtext" | "longtext" | "varchar" | "char" | "json",
            ) => Some(PayloadKind::Text),
            _ => None,
        }
    }
}

/// Whether `column` of the PostgreSQL table `qualified` (quoted, as for
/// `to_regclass`) is its primary key or carries a unique, non-partial,
/// single-column index and is NOT NULL.
pub async fn pg_id_is_a_key(pool: &PgPool, qualified: &str, column: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i \
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
           WHERE i.indrelid = to_regclass($1) AND a.attname = $2 \
             AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 \
             AND i.indpred IS NULL AND i.indexprs IS NULL \
             AND (i.indisprimary OR a.attnotnull))",
    )
    .bind(qualified)
    .bind(column)
    .fetch_one(pool)
    .await
    .context("cannot read the PostgreSQL catalog")
}

/// As [`pg_id_is_a_key`], from MySQL's `information_schema`: a unique
/// index of that one column, and the column NOT NULL.
pub async fn my_id_is_a_key(
    pool: &MySqlPool,
    schema: Option<&str>,
    table: &str,
    column: &str,
) -> anyhow::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.STATISTICS s \
         JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA \
           AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
         WHERE s.TABLE_SCHEMA = COALESCE(?, DATABASE()) AND s.TABLE_NAME = ? \
           AND s.COLUMN_NAME = ? AND s.NON_UNIQUE = 0 AND c.IS_NULLABLE = 'NO' \
           AND (SELECT COUNT(*) FROM information_schema.STATISTICS s2 \
                WHERE s2.TABLE_SCHEMA = s.TABLE_SCHEMA AND s2.TABLE_NAME = s.TABLE_NAME \
                  AND s2.INDEX_NAME = s.INDEX_NAME) = 1",
    )
    .bind(schema)
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .context("cannot read information_schema")?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_binary_payloads_are_accepted_and_nothing_else() {
        use Dialect::{MySql, Postgres};
        for (d, ty, kind) in [
            (Postgres, "text", PayloadKind::Text),
            (Postgres, "character varying(200)", PayloadKind::Text),
            (Postgres, "character(10)", PayloadKind::Text),
            (Postgres, "jsonb", PayloadKind::Text),
            (Postgres, "json", PayloadKind::Text),
            (Postgres, "bytea", PayloadKind::Bytes),
            (MySql, "longtext", PayloadKind::Text),
            (MySql, "varchar(255)", PayloadKind::Text),
            (MySql, "json", PayloadKind::Text),
            (MySql, "blob", PayloadKind::Bytes),
            (MySql, "varbinary(1000)", PayloadKind::Bytes),
        ] {
            assert_eq!(PayloadKind::of(d, ty), Some(kind), "{ty}");
        }
        for (d, ty) in [
            (Postgres, "integer"),
            (Postgres, "text[]"),
            (Postgres, "timestamp with time zone"),
            (Postgres, "boolean"),
            (Postgres, "character varying(20)[]"),
            (MySql, "binary(16)"),
            (MySql, "int(11)"),
            (MySql, "enum('a','b')"),
            (MySql, "datetime"),
        ] {
            assert_eq!(PayloadKind::of(d, ty), None, "{ty}");
        }
    }
}
