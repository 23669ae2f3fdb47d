//! The statement builders behind [`Dialect::statements`]: the pieces every
//! statement of one table shares, one small builder per statement, and
//! PostgreSQL's FIFO filter for rows a running transaction may still
//! precede.

use super::{BACKLOG_CAP, Columns, Dialect};
use crate::ident::{Ident, TableName};
use crate::schema::IdType;

/// The pieces every statement of one table shares, and a builder per
/// statement.
pub(super) struct Builder<'a> {
    d: Dialect,
    cols: &'a Columns,
    pub(super) id_type: IdType,
    /// The quoted table.
    pub(super) t: String,
    /// The quoted id column.
    pub(super) id: String,
    /// The group as text, or `NULL`.
    group: String,
    /// The `WHERE` conditions every page of rows meets.
    conditions: Vec<String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(d: Dialect, source: &TableName, cols: &'a Columns, id_type: IdType) -> Self {
        let t = d.quote_table(source);
        let mut b = Builder {
            d,
            cols,
            id_type,
            id: d.quote(&cols.id),
            group: d.text_or_null(cols.group.as_ref()),
            conditions: Vec::new(),
            t,
        };
        b.conditions = b.due().into_iter().chain(b.settled()).collect();
        b
    }

    /// The select list and table of a page of rows.
    pub(super) fn select(&self) -> String {
        let (d, sh) = (self.d, &self.cols.shape);
        format!(
            "SELECT {} AS k, {} AS p, {} AS g, {} AS r, {} AS a, {} AS tr FROM {}",
            d.as_text(&self.id),
            self.payload_read(),
            self.group,
            d.text_or_null(sh.route.as_ref()),
            d.text_or_null(sh.attributes.as_ref()),
            d.text_or_null(sh.trace.as_ref()),
            self.t,
        )
    }

    /// A binary payload is read as its bytes (the text cast would give
    /// hex); its dead-letter copy is hex, which a text column holds
    /// whatever the bytes.
    fn payload_read(&self) -> String {
        let payload = self.d.quote(&self.cols.payload);
        match self.cols.payload_bytes {
            false => self.d.as_text(&payload),
            true => payload,
        }
    }

    /// The payload as the dead-letter table gets it (see [`Self::payload_read`]).
    fn payload_copy(&self) -> String {
        let payload = self.d.quote(&self.cols.payload);
        match (self.cols.payload_bytes, self.d) {
            (false, d) => d.as_text(&payload),
            (true, Dialect::Postgres) => format!("encode({payload}, 'hex')"),
            (true, Dialect::MySql) => format!("HEX({payload})"),
        }
    }

    /// A row whose not-before time is ahead (by the database's clock) is
    /// not selected yet; on FIFO queues the order check then finds it
    /// "elsewhere" and holds back the later rows of its group.
    fn due(&self) -> Option<String> {
        let c = self.d.quote(self.cols.shape.not_before.as_ref()?);
        Some(match self.d {
            Dialect::Postgres => format!("({c} IS NULL OR {c} <= now())"),
            Dialect::MySql => format!("({c} IS NULL OR {c} <= NOW(6))"),
        })
    }

    /// PostgreSQL FIFO: only settled rows (see [`pg_settled`]).
    fn settled(&self) -> Option<String> {
        (self.d == Dialect::Postgres && self.cols.settled_only).then(|| pg_settled(&self.t))
    }

    /// The first page. The row limit is a bind, so `max_rows` can shorten
    /// the last batch.
    pub(super) fn first_page(&self) -> String {
        let (id, limit) = (&self.id, self.d.bind(1));
        match self.conditions.is_empty() {
            true => format!("ORDER BY {id} LIMIT {limit}"),
            false => format!(
                "WHERE {} ORDER BY {id} LIMIT {limit}",
                self.conditions.join(" AND ")
            ),
        }
    }

    /// The page after a key (keyset pagination; binds key, limit).
    pub(super) fn next_page(&self) -> String {
        let id = &self.id;
        format!(
            "WHERE {id} > {}{} ORDER BY {id} LIMIT {}",
            self.d.key_param(1, &self.id_type),
            self.conditions
                .iter()
                .map(|c| format!(" AND {c}"))
                .collect::<String>(),
            self.d.bind(2)
        )
    }

    /// Every row up to a key, for the FIFO order check.
    pub(super) fn up_to(&self) -> String {
        let id = &self.id;
        format!(
            "SELECT {} AS k, '' AS p, {} AS g, NULL AS r, NULL AS a, NULL AS tr \
             FROM {} WHERE {id} <= {} ORDER BY {id}",
            self.d.as_text(id),
            self.group,
            self.t,
            self.d.key_param(1, &self.id_type)
        )
    }

    /// Rows held back, the oldest open writer's xid, and how long it has
    /// been open (NULL where pg_stat_activity hides it from us).
    pub(super) fn held_back(&self) -> Option<String> {
        let c = self.settled()?;
        let t = &self.t;
        let depth = pg_writers_depth(t);
        let oldest = format!(
            "((pg_snapshot_xmax(pg_current_snapshot())::text::bigint - {depth}) & 4294967295)"
        );
        Some(format!(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM {t} WHERE NOT ({c}) LIMIT {BACKLOG_CAP}) held), \
             {oldest}::text, \
             (SELECT EXTRACT(EPOCH FROM now() - a.xact_start)::float8 FROM pg_stat_activity a \
              WHERE a.backend_xid::text::bigint = {oldest} LIMIT 1)"
        ))
    }

    /// Copy one row to the dead-letter table. Binds in order of appearance
    /// (MySQL's `?` are positional): reason, key.
    pub(super) fn quarantine(&self, dead_letter: &TableName) -> String {
        let (d, cols) = (self.d, self.cols);
        let (created_col, created_val) =
            match cols.created_at.as_ref().filter(|_| cols.copy_created_at) {
                Some(c) => (", created_at".to_owned(), format!(", {}", d.quote(c))),
                None => (String::new(), String::new()),
            };
        let copies: String = cols
            .shape
            .dead_letter_copies
            .iter()
            .map(|c| format!(", {}", d.quote(c)))
            .collect();
        format!(
            "INSERT INTO {} (id, payload, group_key{created_col}{copies}, reason) \
             SELECT {}, {}, {}{created_val}{copies}, {} FROM {} WHERE {} = {}",
            d.quote_table(dead_letter),
            self.id,
            self.payload_copy(),
            self.group,
            d.bind(1),
            self.t,
            self.id,
            d.key_param(2, &self.id_type),
        )
    }

    /// PostgreSQL: the whole delete (one text-array bind); MySQL: the
    /// statement up to the key (see [`Statements::delete`]).
    pub(super) fn delete_head(&self) -> String {
        let (t, id) = (&self.t, &self.id);
        match self.d {
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE {id} = ANY(CAST($1 AS text[])::{}[])",
                self.id_type.sql
            ),
            Dialect::MySql => format!("DELETE FROM {t} WHERE {id} = "),
        }
    }

    /// Counting a huge backlog exactly would scan it every minute; past
    /// the cap the number only says "very large". The oldest row is the
    /// one with the lowest id, found through the primary key: `created_at`
    /// usually has no index, and MIN() over it would scan the table.
    pub(super) fn backlog(&self) -> String {
        let (t, id) = (&self.t, &self.id);
        let age = match (&self.cols.created_at, self.d) {
            (None, _) => "NULL".to_owned(),
            (Some(c), Dialect::Postgres) => format!(
                "(SELECT EXTRACT(EPOCH FROM now() - {})::float8 FROM {t} ORDER BY {id} LIMIT 1)",
                self.d.quote(c)
            ),
            (Some(c), Dialect::MySql) => format!(
                "(SELECT CAST(TIMESTAMPDIFF(MICROSECOND, {}, NOW(6)) / 1e6 AS DOUBLE) FROM {t} ORDER BY {id} LIMIT 1)",
                self.d.quote(c)
            ),
        };
        format!(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM {t} LIMIT {BACKLOG_CAP}) capped), {age}"
        )
    }
}

impl Dialect {
    /// A column as text, or `NULL` when not configured.
    fn text_or_null(self, c: Option<&Ident>) -> String {
        match c {
            Some(c) => self.as_text(&self.quote(c)),
            None => "NULL".to_owned(),
        }
    }
}

/// PostgreSQL: how far back (in transaction ids, from the next one) the
/// oldest transaction reaches that is still open and has written to table
/// `t` (quoted), or may have: NULL when there is none.
///
/// Writers are the transactions holding `RowExclusiveLock` on the table
/// (an INSERT takes it before its row gets an id from the sequence), with
/// every transaction id they hold (`pg_locks` lists each running xid as an
/// `ExclusiveLock` on itself, subtransactions included). `pg_locks` is read
/// live while rows are seen through the statement's snapshot, so a writer
/// that ended in between would be missed: every xid the snapshot still saw
/// running but that has ended since counts as a writer too. Distances are
/// taken modulo 2^32 from the snapshot's next xid, so the comparison holds
/// across wraparound (`xmin` is a 32-bit xid, the snapshot's are 64-bit).
fn pg_writers_depth(t: &str) -> String {
    let next = "(pg_snapshot_xmax(pg_current_snapshot())::text::bigint)";
    format!(
        "(SELECT max(({next} - w.x) & 4294967295) FROM ( \
           SELECT x.transactionid::text::bigint FROM pg_locks r JOIN pg_locks x \
             ON x.virtualtransaction = r.virtualtransaction AND x.locktype = 'transactionid' \
             AND x.mode = 'ExclusiveLock' AND x.granted \
           WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.granted \
             AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND r.relation = '{t}'::regclass \
           UNION ALL \
           SELECT s::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) s \
           WHERE (s::text::bigint & 4294967295) NOT IN (SELECT l.transactionid::text::bigint \
             FROM pg_locks l WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted) \
         ) w(x))"
    )
}

/// PostgreSQL: true for a row whose inserting transaction (`xmin`) is older
/// than every transaction still open that has written to the table (see
/// [`pg_writers_depth`]): no such transaction can then commit a row that
/// an earlier-writing producer began before this one.
///
/// A frozen row keeps its raw `xmin`; should that ever look younger than a
/// writer after wraparound, the row waits only until that writer ends.
/// `SELECT … FOR UPDATE` by a relay sets `xmax`, never `xmin`; a row
/// UPDATEd by a producer counts from that update. The subqueries are
/// uncorrelated: evaluated once per statement.
pub fn pg_settled(t: &str) -> String {
    format!(
        "COALESCE(((pg_snapshot_xmax(pg_current_snapshot())::text::bigint - xmin::text::bigint) & 4294967295) > {}, true)",
        pg_writers_depth(t)
    )
}
