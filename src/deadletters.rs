//! The dead-letter table for operators: list what is there, and replay
//! rows into the outbox once their cause is fixed.
//!
//! A replay moves rows in one transaction: each row is copied back into the
//! outbox (id, payload, group and every shaping column both tables have),
//! deleted from the dead-letter table, and counted in the replay audit
//! table (`OUTBOX_REPLAY_TABLE`: `replay_count`, `last_replayed_at` per
//! id). A row whose id is already in the outbox again, or that the outbox
//! refuses, is refused with the reason (a savepoint undoes only its part)
//! and the others go on. The next pass sends the replayed rows like any
//! other: the ledger never marked them SENT, so nothing is skipped.

use std::collections::HashSet;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::admin::{Db, column_type, epoch_seconds, has_column, key_type, rfc3339_text};
use crate::config::Config;
use crate::dialect::Dialect;
use crate::source::pool::on_pool;
use crate::source::rows::ReadRow;

/// One dead letter as `dead-letters list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The row key.
    pub id: String,
    /// Why the row was quarantined.
    pub reason: String,
    /// When (RFC 3339 UTC), if the table has `failed_at`.
    pub failed_at: Option<String>,
    /// Payload size in bytes (`None`: NULL).
    pub payload_bytes: Option<u64>,
    /// Replays so far, from the audit table (0 without one).
    pub replay_count: u64,
    /// The last replay (RFC 3339 UTC).
    pub last_replayed_at: Option<String>,
    /// The payload, only when asked for (`--show-payload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<String>),
    /// Every row of the dead-letter table.
    All,
}

/// A row a replay left where it was, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The row key.
    pub id: String,
    /// Why it was not replayed.
    pub reason: String,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Ids moved back into the outbox.
    pub replayed: Vec<String>,
    /// Ids left in place, with the reason.
    pub refused: Vec<Refusal>,
    /// True when nothing was changed.
    pub dry_run: bool,
}

/// The SQL of a replay, built from the catalog.
struct ReplaySql {
    all_ids: String,
    lock_dead_letter: String,
    in_outbox: String,
    copy: String,
    delete: String,
    audit: String,
}

/// Lists the dead-letter table in id order.
pub async fn list(db: &Db, cfg: &Config, show_payload: bool) -> anyhow::Result<Vec<Entry>> {
    let d = db.dialect();
    let dl_table = &cfg.dead_letter_table;
    let dl_cols = db.columns(dl_table).await?;
    let dl = d.quote_table(dl_table);
    column_type(
        &dl_cols,
        &ident("reason"),
        dl_table,
        "OUTBOX_DEAD_LETTER_TABLE",
        d,
    )?;
    let failed = match has_column(&dl_cols, "failed_at", d) {
        true => epoch_seconds(d, "d.failed_at"),
        false => "NULL".to_owned(),
    };
    let audit_cols = db.columns(&cfg.replay_table).await?;
    let (count, last, join) = if has_column(&audit_cols, "replay_count", d) {
        (
            d.as_text("h.replay_count"),
            epoch_seconds(d, "h.last_replayed_at"),
            format!(
                "LEFT JOIN {} h ON h.id = {}",
                d.quote_table(&cfg.replay_table),
                d.as_text("d.id")
            ),
        )
    } else {
        ("NULL".to_owned(), "NULL".to_owned(), String::new())
    };
    let length = match d {
        Dialect::Postgres => "octet_length(d.payload)::text",
        Dialect::MySql => "CAST(OCTET_LENGTH(d.payload) AS CHAR)",
    };
    let payload = if show_payload {
        d.as_text("d.payload")
    } else {
        "NULL".to_owned()
    };
    let sql = format!(
        "SELECT {}, d.reason, {failed}, {length}, {count}, {last}, {payload} \
         FROM {dl} d {join} ORDER BY d.id",
        d.as_text("d.id")
    );
    let rows = db.text_rows(&sql, &[]).await?;
    Ok(rows
        .into_iter()
        .map(|r| Entry {
            id: r[0].clone().unwrap_or_default(),
            reason: r[1].clone().unwrap_or_default(),
            failed_at: rfc3339_text(r[2].as_deref()),
            payload_bytes: r[3].as_deref().and_then(|n| n.parse().ok()),
            replay_count: r[4].as_deref().and_then(|n| n.parse().ok()).unwrap_or(0),
            last_replayed_at: rfc3339_text(r[5].as_deref()),
            payload: r[6].clone(),
        })
        .collect())
}

fn ident(name: &str) -> crate::ident::Ident {
    crate::ident::Ident::parse(name).expect("a valid literal")
}

/// Builds the replay statements, checking the three tables on the way.
async fn replay_sql(db: &Db, cfg: &Config) -> anyhow::Result<ReplaySql> {
    let d = db.dialect();
    let (t, dl_t, audit_t) = (&cfg.table, &cfg.dead_letter_table, &cfg.replay_table);
    let out_cols = db.columns(t).await?;
    let dl_cols = db.columns(dl_t).await?;
    let audit_cols = db.columns(audit_t).await?;
    let id_type = key_type(&out_cols, &cfg.id_column, t, "OUTBOX_ID_COLUMN", d)?;
    let dl_id_type = key_type(&dl_cols, &ident("id"), dl_t, "OUTBOX_DEAD_LETTER_TABLE", d)?;
    for c in ["id", "replay_count", "last_replayed_at"] {
        column_type(&audit_cols, &ident(c), audit_t, "OUTBOX_REPLAY_TABLE", d)?;
    }
    let (into, from) = copied_columns(cfg, d, &out_cols, &dl_cols)?;
    let (q_out, q_dl) = (d.quote_table(t), d.quote_table(dl_t));
    let (id, dl_key) = (d.quote(&cfg.id_column), d.key_param(1, &dl_id_type));
    Ok(ReplaySql {
        all_ids: format!("SELECT {} FROM {q_dl} ORDER BY id", d.as_text("id")),
        lock_dead_letter: format!(
            "SELECT {} FROM {q_dl} WHERE id = {dl_key} FOR UPDATE",
            d.as_text("id")
        ),
        in_outbox: format!(
            "SELECT {} FROM {q_out} WHERE {id} = {}",
            d.as_text(&id),
            d.key_param(1, &id_type)
        ),
        copy: format!("INSERT INTO {q_out} ({into}) SELECT {from} FROM {q_dl} WHERE id = {dl_key}"),
        delete: format!("DELETE FROM {q_dl} WHERE id = {dl_key}"),
        audit: audit_sql(d, &d.quote_table(audit_t)),
    })
}

/// The outbox columns a replay fills and the dead-letter expressions it
/// fills them from (joined with commas): id, payload, group, then each
/// shaping column the dead-letter table keeps under the same name.
fn copied_columns(
    cfg: &Config,
    d: Dialect,
    out_cols: &[(String, String)],
    dl_cols: &[(String, String)],
) -> anyhow::Result<(String, String)> {
    let mut pairs = vec![
        (cfg.id_column.clone(), ident("id")),
        (cfg.payload_column.clone(), ident("payload")),
    ];
    if let Some(g) = &cfg.group_column {
        pairs.push((g.clone(), ident("group_key")));
    }
    for c in cfg.shaping.columns() {
        if has_column(dl_cols, c.as_str(), d) {
            pairs.push((c.clone(), c.clone()));
        }
    }
    let mut into = Vec::new();
    let mut from = Vec::new();
    for (out, dl) in &pairs {
        let ty = column_type(out_cols, out, &cfg.table, "OUTBOX_TABLE", d)?;
        into.push(d.quote(out));
        // PostgreSQL casts text to jsonb, uuid, timestamptz only when asked.
        from.push(match d {
            Dialect::Postgres => format!("CAST({} AS {ty})", d.quote(dl)),
            Dialect::MySql => d.quote(dl),
        });
    }
    Ok((into.join(", "), from.join(", ")))
}

/// Counts one replay of an id (bind: the id) in the audit table `q_audit`.
fn audit_sql(d: Dialect, q_audit: &str) -> String {
    match d {
        Dialect::Postgres => format!(
            "INSERT INTO {q_audit} AS h (id, replay_count, last_replayed_at) VALUES ($1, 1, now()) \
             ON CONFLICT (id) DO UPDATE SET replay_count = h.replay_count + 1, last_replayed_at = now()"
        ),
        Dialect::MySql => format!(
            "INSERT INTO {q_audit} (id, replay_count, last_replayed_at) VALUES (?, 1, NOW(6)) \
             ON DUPLICATE KEY UPDATE replay_count = replay_count + 1, last_replayed_at = NOW(6)"
        ),
    }
}

/// What became of one id inside the replay transaction.
enum Step {
    Replayed,
    Refused(String),
}

/// Replays one id inside the transaction `$tx`, as a [`Step`]: `Err` only
/// when the transaction itself is lost. The copy runs in a savepoint, so a
/// row the outbox refuses undoes only its own part.
macro_rules! replay_one {
    ($tx:expr, $sql:expr, $id:expr) => {{
        let q = |text: &str| sqlx::query(AssertSqlSafe(text.to_owned())).bind($id.to_owned());
        let found = q(&$sql.lock_dead_letter).fetch_optional(&mut *$tx).await?;
        if found.is_none() {
            Step::Refused("not in the dead-letter table".to_owned())
        } else if q(&$sql.in_outbox)
            .fetch_optional(&mut *$tx)
            .await?
            .is_some()
        {
            Step::Refused(
                "already in the outbox (replayed before, or the id is in use again)".to_owned(),
            )
        } else {
            sqlx::query("SAVEPOINT replay").execute(&mut *$tx).await?;
            match q(&$sql.copy).execute(&mut *$tx).await {
                Ok(_) => {
                    q(&$sql.delete).execute(&mut *$tx).await?;
                    q(&$sql.audit).execute(&mut *$tx).await?;
                    sqlx::query("RELEASE SAVEPOINT replay")
                        .execute(&mut *$tx)
                        .await?;
                    Step::Replayed
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT replay")
                        .execute(&mut *$tx)
                        .await?;
                    Step::Refused(format!("the outbox refused the row: {e}"))
                }
            }
        }
    }};
}

/// Replays the selected dead letters in one transaction (rolled back for a
/// dry run). `Err` means nothing was changed.
pub async fn replay(
    db: &Db,
    cfg: &Config,
    selection: &Selection,
    dry_run: bool,
) -> anyhow::Result<ReplayReport> {
    let sql = replay_sql(db, cfg).await?;
    let mut report = ReplayReport {
        dry_run,
        ..ReplayReport::default()
    };
    on_pool!(db.pool(), p => {
        let mut tx = p
            .begin()
            .await
            .context("cannot start the replay transaction")?;
        let ids: Vec<String> = match selection {
            Selection::Ids(ids) => ids.clone(),
            Selection::All => sqlx::query(AssertSqlSafe(sql.all_ids.as_str()))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.texts().into_iter().next().flatten().unwrap_or_default())
                .collect(),
        };
        let mut seen = HashSet::new();
        for id in ids.into_iter().filter(|id| seen.insert(id.clone())) {
            match replay_one!(tx, sql, id) {
                Step::Replayed => report.replayed.push(id),
                Step::Refused(reason) => report.refused.push(Refusal { id, reason }),
            }
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit()
                .await
                .context("the replay did not commit; nothing was changed")?;
        }
    });
    Ok(report)
}

/// Checks the ids of a replay request: at least one, none empty.
pub fn check_ids(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        bail!("give at least one id");
    }
    if ids.iter().any(|i| i.trim().is_empty()) {
        bail!("an id is empty");
    }
    Ok(())
}
