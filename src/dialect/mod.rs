//! The SQL text for each supported database, built once at start-up.
//!
//! PostgreSQL and MySQL/MariaDB differ in quoting (`"x"` vs `` `x` ``),
//! placeholders (`$1` vs `?`), casts to text, and array binding (MySQL has
//! none, so a delete there is a script of single-row deletes with integer
//! literals, or one bound statement per key; see [`Statements::delete`]).
//! All of that is decided here; the relay only ever sees [`Statements`].

mod build;

use crate::ident::{Ident, TableName};
use crate::schema::{IdKind, IdType};
use build::Builder;
pub use build::pg_settled;

/// Backlog counts stop here (see [`Statements::backlog`]).
pub const BACKLOG_CAP: u64 = 1_000_000;

/// Which SQL dialect the source database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 9.5+ (`FOR UPDATE SKIP LOCKED`).
    Postgres,
    /// MySQL 8+ or MariaDB 10.6+ (`FOR UPDATE SKIP LOCKED`).
    MySql,
}

/// The columns the relay reads, as configured.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Row key.
    pub id: Ident,
    /// Message body.
    pub payload: Ident,
    /// FIFO group, when configured.
    pub group: Option<Ident>,
    /// The source's `created_at` column, when it has one (oldest-row age).
    pub created_at: Option<Ident>,
    /// Whether the dead-letter table has `created_at` too, to copy it.
    pub copy_created_at: bool,
    /// The payload is binary (`bytea`, `BLOB`, `VARBINARY`): selected as
    /// its bytes, copied to the dead-letter table as hex text.
    pub payload_bytes: bool,
    /// PostgreSQL, FIFO queues: select only rows whose inserting
    /// transaction is older than every open transaction that wrote to the
    /// table (see [`pg_settled`]).
    pub settled_only: bool,
    /// The optional message shaping columns.
    pub shape: ShapeColumns,
}

/// The message shaping columns of the outbox (see [`crate::shaping`]).
#[derive(Debug, Clone, Default)]
pub struct ShapeColumns {
    /// `OUTBOX_QUEUE_COLUMN`.
    pub route: Option<Ident>,
    /// `OUTBOX_ATTRIBUTES_COLUMN`.
    pub attributes: Option<Ident>,
    /// `OUTBOX_TRACE_COLUMN`.
    pub trace: Option<Ident>,
    /// `OUTBOX_NOT_BEFORE_COLUMN`.
    pub not_before: Option<Ident>,
    /// Shaping columns the dead-letter table has too (same name): a
    /// quarantined row keeps them, so a replay sends it as it was meant.
    pub dead_letter_copies: Vec<Ident>,
}

/// Every statement of a pass, as text ready to prepare.
#[derive(Debug, Clone)]
pub struct Statements {
    /// Lock the first batch: `… ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED`.
    pub lock_first: String,
    /// Lock the next batch after a key (keyset pagination; binds key, limit).
    pub lock_after: String,
    /// Read without locking (dry runs), first page.
    pub peek_first: String,
    /// Read without locking after a key.
    pub peek_after: String,
    /// FIFO order check: every row up to a key, without locking, in id
    /// order (one bind: the key).
    pub up_to: String,
    /// Backlog: rows (counted up to a cap) and the oldest row's age in
    /// seconds (NULL without a `created_at` column).
    pub backlog: String,
    /// Is any row waiting? The key of the first row through the primary
    /// key alone (an index-only probe: one index page on an empty table, no
    /// lock, no write), which a follower runs at every poll.
    pub probe: String,
    /// Copy one row to the dead-letter table (binds: reason, key).
    pub quarantine: String,
    /// PostgreSQL FIFO: rows held back behind a running transaction
    /// (counted up to a cap), the oldest running transaction's xid, and
    /// how long it has been open when the server lets us see it.
    pub held_back: Option<String>,
    /// PostgreSQL: delete by a text array of keys (one bind). MySQL: the
    /// statement up to the key; see [`Statements::delete`].
    delete_head: String,
    /// MySQL: the key's placeholder ([`Dialect::key_param`]).
    mysql_key: String,
    /// MySQL: integer keys, which may go into a script as literals.
    integer_keys: bool,
    dialect: Dialect,
}

impl Dialect {
    /// The dialect of a `DATABASE_URL` scheme.
    pub fn of_url(url: &str) -> Dialect {
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Dialect::MySql
        } else {
            Dialect::Postgres
        }
    }

    /// Quotes a validated identifier. The allow-list already excludes quote
    /// characters; quoting keeps keywords such as `order` usable as names.
    pub fn quote(self, ident: &Ident) -> String {
        match self {
            Dialect::Postgres => format!("\"{ident}\""),
            Dialect::MySql => format!("`{ident}`"),
        }
    }

    /// Quotes `schema.table` part by part.
    pub fn quote_table(self, t: &TableName) -> String {
        match &t.schema {
            Some(s) => format!("{}.{}", self.quote(s), self.quote(&t.table)),
            None => self.quote(&t.table),
        }
    }

    /// The expression that renders a column as text.
    pub fn as_text(self, column: &str) -> String {
        match self {
            Dialect::Postgres => format!("{column}::text"),
            Dialect::MySql => format!("CAST({column} AS CHAR)"),
        }
    }

    /// The placeholder for the n-th (1-based) bind.
    pub fn bind(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::MySql => "?".to_owned(),
        }
    }

    /// Builds every statement for one source table.
    ///
    /// `id_type` is the id column's SQL type as the catalog names it
    /// (`bigint`, `uuid`, `int(10) unsigned`, …), with its kind; keys travel
    /// as text and are converted back to it so comparisons use the
    /// primary-key index (see [`Dialect::key_param`]).
    pub fn statements(
        self,
        source: &TableName,
        dead_letter: &TableName,
        cols: &Columns,
        id_type: impl Into<IdType>,
    ) -> Statements {
        let b = Builder::new(self, source, cols, id_type.into());
        let (select, first, next) = (b.select(), b.first_page(), b.next_page());
        let lock = "FOR UPDATE SKIP LOCKED";
        Statements {
            probe: format!("SELECT {} FROM {} ORDER BY {} LIMIT 1", b.id, b.t, b.id),
            backlog: b.backlog(),
            lock_first: format!("{select} {first} {lock}"),
            lock_after: format!("{select} {next} {lock}"),
            peek_first: format!("{select} {first}"),
            peek_after: format!("{select} {next}"),
            up_to: b.up_to(),
            quarantine: b.quarantine(dead_letter),
            held_back: b.held_back(),
            delete_head: b.delete_head(),
            mysql_key: self.key_param(1, &b.id_type),
            integer_keys: matches!(b.id_type.kind, Some(IdKind::Integer { .. })),
            dialect: self,
        }
    }

    /// A key bound as text, converted to the id column's type. MySQL needs
    /// this as much as PostgreSQL: compared with a string, an integer column
    /// is compared as a double, the primary key index is not used, and the
    /// scan waits on rows other relays hold. (MySQL converts a string
    /// compared with a text column by itself, index included.)
    pub fn key_param(self, n: usize, id_type: &IdType) -> String {
        match (self, id_type.kind) {
            (Dialect::Postgres, _) => format!("CAST({} AS {})", self.bind(n), id_type.sql),
            (Dialect::MySql, Some(IdKind::Integer { unsigned: true })) => {
                "CAST(? AS UNSIGNED)".to_owned()
            }
            (Dialect::MySql, Some(IdKind::Integer { unsigned: false })) => {
                "CAST(? AS SIGNED)".to_owned()
            }
            (Dialect::MySql, _) => "?".to_owned(),
        }
    }
}

impl Statements {
    /// How to delete `keys`.
    ///
    /// PostgreSQL binds one text array. MySQL cannot bind arrays, and a
    /// multi-key delete (`IN (…)`, or a join) is planned by InnoDB as a
    /// range or table scan that waits on rows other relays hold, so
    /// concurrent relays deadlock. Single-row deletes by primary key lock
    /// only their row: integer keys go as one script of such statements (one
    /// round trip; each key was parsed as an integer here, so nothing but
    /// digits and a sign reaches the SQL text), other keys one bound
    /// statement each.
    pub fn delete(&self, keys: &[String]) -> Delete {
        match self.dialect {
            Dialect::Postgres => Delete::Array(self.delete_head.clone()),
            Dialect::MySql => {
                let literals: Option<Vec<String>> = if !self.integer_keys {
                    None
                } else {
                    keys.iter()
                        .map(|k| k.parse::<i128>().ok().map(|n| n.to_string()))
                        .collect()
                };
                match literals {
                    Some(l) => Delete::Script(
                        l.iter()
                            .map(|k| format!("{}{k};", self.delete_head))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    None => Delete::EachRow(format!("{}{}", self.delete_head, self.mysql_key)),
                }
            }
        }
    }
}

/// A delete of a batch's rows, as [`Statements::delete`] plans it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delete {
    /// One statement, the keys bound as one text array.
    Array(String),
    /// A script of single-row deletes with literal integer keys, no binds.
    Script(String),
    /// One statement to run per key, the key bound.
    EachRow(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Columns {
        Columns {
            id: Ident::parse("id").unwrap(),
            payload: Ident::parse("order").unwrap(),
            group: None,
            created_at: None,
            copy_created_at: false,
            payload_bytes: false,
            settled_only: false,
            shape: ShapeColumns::default(),
        }
    }

    #[test]
    fn postgres_statements_quote_and_cast() {
        let t = TableName::parse("app.outbox").unwrap();
        let dl = TableName::parse("dl").unwrap();
        let s = Dialect::Postgres.statements(&t, &dl, &cols(), "bigint");
        assert_eq!(
            s.lock_after,
            "SELECT \"id\"::text AS k, \"order\"::text AS p, NULL AS g, NULL AS r, NULL AS a, NULL AS tr FROM \"app\".\"outbox\" \
             WHERE \"id\" > CAST($1 AS bigint) ORDER BY \"id\" LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        assert!(
            matches!(s.delete(&[]), Delete::Array(sql) if sql.contains("ANY(CAST($1 AS text[])::bigint[])"))
        );
    }

    #[test]
    fn mysql_statements_use_backticks_and_one_bind_per_key() {
        let t = TableName::parse("outbox").unwrap();
        let dl = TableName::parse("dl").unwrap();
        let s = Dialect::MySql.statements(&t, &dl, &cols(), "bigint(20)");
        assert!(s.lock_first.starts_with("SELECT CAST(`id` AS CHAR) AS k"));
        let keys = ["7".to_owned(), "-9".to_owned()];
        assert_eq!(
            s.delete(&keys),
            Delete::Script(
                "DELETE FROM `outbox` WHERE `id` = 7; DELETE FROM `outbox` WHERE `id` = -9;"
                    .to_owned()
            )
        );
        let hostile = ["7".to_owned(), "1 OR 1=1".to_owned()];
        assert_eq!(
            s.delete(&hostile),
            Delete::EachRow("DELETE FROM `outbox` WHERE `id` = CAST(? AS SIGNED)".to_owned())
        );
        assert!(s.lock_after.contains("WHERE `id` > CAST(? AS SIGNED)"));
    }
}
