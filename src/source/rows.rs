//! Reading a selected row, per driver: the one place that knows how each
//! driver hands back keys, payloads and groups.

use anyhow::Context;
use sqlx::Row;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;

use crate::message::{NotText, OutboxRow};

/// A driver's row, read as the relay needs it.
pub(crate) trait ReadRow {
    /// Reads one selected row: key, payload, group, shaping columns.
    ///
    /// Nothing here panics: a key that cannot be read fails the batch with
    /// an error saying where (the id column is checked at start to be
    /// unique and NOT NULL, so this means a type the checks missed), and a
    /// payload that cannot be read as UTF-8 text makes the row poison.
    fn outbox_row(&self) -> anyhow::Result<OutboxRow>;

    /// Every column as text (or NULL), for operator queries whose columns
    /// are all text.
    fn texts(&self) -> Vec<Option<String>>;
}

/// Reads every selected row (see [`ReadRow::outbox_row`]).
pub(crate) fn outbox_rows<R: ReadRow>(rows: &[R]) -> anyhow::Result<Vec<OutboxRow>> {
    rows.iter().map(R::outbox_row).collect()
}

impl ReadRow for PgRow {
    fn outbox_row(&self) -> anyhow::Result<OutboxRow> {
        use sqlx::{Column, TypeInfo};
        let r = self;
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

    fn texts(&self) -> Vec<Option<String>> {
        (0..self.len())
            .map(|i| self.get::<Option<String>, _>(i))
            .collect()
    }
}

/// Bytes, not String: a BLOB payload that is not UTF-8 must become a
/// poison row with a reason, not a decode error that stalls the batch.
impl ReadRow for MySqlRow {
    fn outbox_row(&self) -> anyhow::Result<OutboxRow> {
        let bytes = |i: usize| self.try_get::<Option<Vec<u8>>, _>(i);
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
            shape: crate::shaping::Shape::of_my(self),
            key,
        })
    }

    /// Bytes first, so no column type can fail it.
    fn texts(&self) -> Vec<Option<String>> {
        (0..self.len())
            .map(|i| {
                self.get::<Option<Vec<u8>>, _>(i)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .collect()
    }
}
