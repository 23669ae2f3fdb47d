//! One batch's transaction: lock rows, quarantine poison ones, delete sent
//! ones, commit.

use std::sync::Arc;

use anyhow::bail;
use sqlx::{AssertSqlSafe, MySql, Postgres, Transaction};

use super::Quarantine;
use super::rows::outbox_rows;
use crate::dialect::{Delete, Statements};
use crate::message::OutboxRow;
use crate::stats::sql_round_trip;

/// One batch's transaction; dropped without [`Batch::commit`] it rolls back.
pub enum Batch {
    /// A PostgreSQL transaction.
    Pg(Transaction<'static, Postgres>, Arc<Statements>),
    /// A MySQL/MariaDB transaction.
    My(Transaction<'static, MySql>, Arc<Statements>),
}

/// Expands one body for whichever driver the batch runs on, with `$tx`
/// the transaction and `$sql` the statements.
macro_rules! on_batch {
    ($batch:expr, $tx:ident, $sql:ident => $body:expr) => {
        match $batch {
            Batch::Pg($tx, $sql) => $body,
            Batch::My($tx, $sql) => $body,
        }
    };
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
        on_batch!(self, tx, sql => {
            let text = match after {
                Some(_) => &sql.lock_after,
                None => &sql.lock_first,
            };
            let q = sqlx::query(AssertSqlSafe(text.as_str()));
            let q = if let Some(k) = after { q.bind(k) } else { q };
            outbox_rows(&q.bind(i64::from(limit)).fetch_all(&mut **tx).await?)
        })
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
        let copied = on_batch!(self, tx, sql => {
            sqlx::query("SAVEPOINT quarantine").execute(&mut **tx).await?;
            let r = sqlx::query(AssertSqlSafe(sql.quarantine.as_str()))
                .bind(reason)
                .bind(key)
                .execute(&mut **tx)
                .await;
            let end = match r {
                Ok(_) => "RELEASE SAVEPOINT quarantine",
                Err(_) => "ROLLBACK TO SAVEPOINT quarantine",
            };
            sqlx::query(end).execute(&mut **tx).await?;
            r.map(|done| done.rows_affected())
        });
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

    /// Runs the delete [`Statements::delete`] plans, returning the rows
    /// removed.
    async fn delete_unchecked(&mut self, keys: &[String]) -> anyhow::Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let plan = on_batch!(&*self, _tx, sql => sql.delete(keys));
        let n = match (self, plan) {
            // Only PostgreSQL binds arrays (and only it is given this plan).
            (Batch::Pg(tx, _), Delete::Array(text)) => {
                sql_round_trip(1);
                sqlx::query(AssertSqlSafe(text))
                    .bind(keys)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            (batch, Delete::Script(text)) => {
                sql_round_trip(1);
                on_batch!(batch, tx, _sql => sqlx::raw_sql(AssertSqlSafe(text))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected())
            }
            (batch, Delete::EachRow(text)) => {
                sql_round_trip(keys.len() as u64);
                let mut n = 0;
                for k in keys {
                    n += on_batch!(&mut *batch, tx, _sql => sqlx::query(AssertSqlSafe(text.as_str()))
                        .bind(k)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected());
                }
                n
            }
            (_, other) => bail!("unexpected delete plan {other:?} for this database"),
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
        let rows = on_batch!(self, tx, sql => outbox_rows(
            &sqlx::query(AssertSqlSafe(sql.up_to.as_str()))
                .bind(last)
                .fetch_all(&mut **tx)
                .await?,
        )?);
        Ok(rows.into_iter().map(|r| (r.key, r.group)).collect())
    }

    /// Commits the deletes and quarantines of this batch.
    pub async fn commit(self) -> anyhow::Result<()> {
        sql_round_trip(1);
        on_batch!(self, tx, _sql => tx.commit().await?);
        Ok(())
    }
}
