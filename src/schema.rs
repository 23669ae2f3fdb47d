//! What the relay accepts of a user's table, decided from the catalog at
//! start: the columns and their types, the payload column's type, the id
//! column's kind and whether it is a key.
//!
//! Anything not accepted here is refused at start with one line naming the
//! variable, rather than relayed wrongly (a `bytea` sent as its hex text,
//! two rows sharing a key, a NULL key).

use anyhow::Context;

use crate::dialect::Dialect;
use crate::ident::{Ident, TableName};
use crate::source::pool::Pool;

/// The kinds of row key the relay accepts, read from the column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Any integer type; `unsigned` for MySQL's `… UNSIGNED`.
    Integer {
        /// Whether MySQL spells the type `UNSIGNED` (cast as such).
        unsigned: bool,
    },
    /// PostgreSQL's `uuid`.
    Uuid,
    /// Text of any length.
    Text,
}

impl IdKind {
    /// The kind of a type as PostgreSQL's `format_type` or MySQL's
    /// `COLUMN_TYPE` spells it; `None` for anything else.
    pub fn of(sql_type: &str) -> Option<IdKind> {
        let t = sql_type.trim().to_ascii_lowercase();
        let base = t.split(['(', ' ']).next().unwrap_or_default();
        match base {
            "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint" => {
                Some(IdKind::Integer {
                    unsigned: t.contains("unsigned"),
                })
            }
            "uuid" => Some(IdKind::Uuid),
            "text" | "varchar" | "char" | "character" | "tinytext" | "mediumtext" | "longtext" => {
                Some(IdKind::Text)
            }
            _ => None,
        }
    }

    /// Whether a dead-letter `id` of kind `dl` can hold every key of this
    /// kind (any integer holds any integer, as the dead-letter DDL has it).
    pub fn fits_in(self, dl: IdKind) -> bool {
        match (self, dl) {
            (IdKind::Integer { .. }, IdKind::Integer { .. }) => true,
            (_, IdKind::Text) => true,
            (a, b) => a == b,
        }
    }
}

/// A key column's type: the catalog's spelling (the cast target keys are
/// converted back to) and its kind, decided once from that spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdType {
    /// The type as the catalog spells it (`bigint`, `int(10) unsigned`, …).
    pub sql: String,
    /// Its kind, `None` for a type the relay does not accept as a key
    /// (operator commands still look such keys up, bound as text).
    pub kind: Option<IdKind>,
}

impl IdType {
    /// The type the catalog names `sql`.
    pub fn of(sql: &str) -> IdType {
        IdType {
            sql: sql.to_owned(),
            kind: IdKind::of(sql),
        }
    }
}

impl From<&str> for IdType {
    fn from(sql: &str) -> IdType {
        IdType::of(sql)
    }
}

/// A catalog type name that may go into SQL text as a cast target: only
/// the catalog's own spelling of a type gets there, never anything that
/// could end the cast.
pub fn safe_cast_target(ty: &str) -> bool {
    ty.chars()
        .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
}

/// Unquoted MySQL column names compare case-insensitively; PostgreSQL
/// names are quoted by the relay, so they compare exactly.
pub fn same_name(name: &str, want: &str, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Postgres => name == want,
        Dialect::MySql => name.eq_ignore_ascii_case(want),
    }
}

/// The type of column `want` among `cols` (names compared as
/// [`same_name`] does).
pub fn type_of<'c>(cols: &'c [(String, String)], want: &str, dialect: Dialect) -> Option<&'c str> {
    cols.iter()
        .find(|(n, _)| same_name(n, want, dialect))
        .map(|(_, ty)| ty.as_str())
}

/// The columns of a table with their SQL types, names as the catalog
/// spells them; empty when the table does not exist.
pub(crate) async fn columns(
    pool: &Pool,
    table: &TableName,
) -> anyhow::Result<Vec<(String, String)>> {
    match pool {
        Pool::Pg(p) => sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(Dialect::Postgres.quote_table(table))
        .fetch_all(p)
        .await
        .context("cannot read the PostgreSQL catalog"),
        Pool::My(p) => {
            // Read as bytes: information_schema's collation varies by server.
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
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            Ok(rows.into_iter().map(|(n, t)| (text(n), text(t))).collect())
        }
    }
}

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

/// Whether `column` of `table` is its primary key or carries a unique,
/// non-partial, single-column index and is NOT NULL: every row then has
/// its own key, which the ledger, the deletes and the dead-letter table
/// all go by.
pub(crate) async fn id_is_a_key(
    pool: &Pool,
    table: &TableName,
    column: &Ident,
) -> anyhow::Result<bool> {
    match pool {
        Pool::Pg(p) => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
               WHERE i.indrelid = to_regclass($1) AND a.attname = $2 \
                 AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 \
                 AND i.indpred IS NULL AND i.indexprs IS NULL \
                 AND (i.indisprimary OR a.attnotnull))",
        )
        .bind(Dialect::Postgres.quote_table(table))
        .bind(column.as_str())
        .fetch_one(p)
        .await
        .context("cannot read the PostgreSQL catalog"),
        // From information_schema: a unique index of that one column, and
        // the column NOT NULL.
        Pool::My(p) => {
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
            .bind(table.schema.as_ref().map(Ident::as_str))
            .bind(table.table.as_str())
            .bind(column.as_str())
            .fetch_one(p)
            .await
            .context("cannot read information_schema")?;
            Ok(n > 0)
        }
    }
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

    #[test]
    fn only_ids_whose_text_round_trips_are_accepted() {
        let int = IdKind::Integer { unsigned: false };
        for (ty, kind) in [
            ("bigint", int),
            ("integer", int),
            ("int(10) unsigned", IdKind::Integer { unsigned: true }),
            ("bigint(20)", int),
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
        let int = IdKind::Integer { unsigned: false };
        assert!(int.fits_in(int));
        assert!(IdKind::Integer { unsigned: true }.fits_in(int));
        assert!(IdKind::Uuid.fits_in(IdKind::Text));
        assert!(!IdKind::Uuid.fits_in(int));
        assert!(!IdKind::Text.fits_in(IdKind::Uuid));
    }
}
