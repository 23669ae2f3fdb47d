//! The start-up checks of the outbox and dead-letter tables: each names
//! the variable to look at when it fails, before any row is touched.

use anyhow::bail;
use sqlx::mysql::MySqlPool;

use super::pool::Pool;
use crate::config::Config;
use crate::dialect::{Columns, Dialect};
use crate::ident::{Ident, TableName};
use crate::schema::{
    IdKind, IdType, PayloadKind, accepted_payloads, columns, id_is_a_key, safe_cast_target, type_of,
};

/// What the checks found: the columns the relay reads and the id's type.
pub(super) struct Checked {
    pub columns: Columns,
    pub id_type: IdType,
}

/// The outbox's columns, with the id column's type and the payload's kind.
struct Outbox {
    cols: Vec<(String, String)>,
    id_type: String,
    payload: PayloadKind,
}

/// Runs every check, in the order their messages are documented.
pub(super) async fn tables(pool: &Pool, cfg: &Config) -> anyhow::Result<Checked> {
    if let Pool::My(p) = pool {
        check_mysql_version(p).await?;
    }
    let outbox = outbox(pool, cfg).await?;
    let (dl_cols, dl_id_type) = dead_letter(pool, cfg).await?;
    let kind = id_kind(cfg, &outbox.id_type)?;
    // Every row must have its own key: the ledger, the deletes and the
    // dead-letter table all go by it.
    if !id_is_a_key(pool, &cfg.table, &cfg.id_column).await? {
        bail!(
            "OUTBOX_ID_COLUMN: column {} of {} is neither the primary key nor a UNIQUE NOT NULL column; the relay needs one key per row",
            cfg.id_column,
            cfg.table
        );
    }
    // A poison row whose id does not fit the dead-letter table could not
    // be moved there; better said now than at the first poison row.
    if !IdKind::of(&dl_id_type).is_some_and(|dl| kind.fits_in(dl)) {
        bail!(
            "OUTBOX_DEAD_LETTER_TABLE: column id of {} is {dl_id_type} but {}.{} is {}; give it the id column's type",
            cfg.dead_letter_table,
            cfg.table,
            cfg.id_column,
            outbox.id_type
        );
    }
    let columns = relay_columns(cfg, pool.dialect(), &outbox, &dl_cols)?;
    // The type name goes into the SQL text as a cast target: only the
    // catalog's own spelling of an accepted type gets there.
    if !safe_cast_target(&outbox.id_type) {
        bail!(
            "OUTBOX_ID_COLUMN: column {} of {} has an unsupported type {:?}",
            cfg.id_column,
            cfg.table,
            outbox.id_type
        );
    }
    let id_type = IdType {
        sql: outbox.id_type,
        kind: Some(kind),
    };
    Ok(Checked { columns, id_type })
}

/// The outbox table: it exists and has the id, payload (of an accepted
/// type) and group columns.
async fn outbox(pool: &Pool, cfg: &Config) -> anyhow::Result<Outbox> {
    let dialect = pool.dialect();
    let cols = table_columns(pool, &cfg.table, "OUTBOX_TABLE").await?;
    let column =
        |want: &Ident, variable: &str| find_column(&cols, want, &cfg.table, variable, dialect);
    let id_type = column(&cfg.id_column, "OUTBOX_ID_COLUMN")?;
    let payload_type = column(&cfg.payload_column, "OUTBOX_PAYLOAD_COLUMN")?;
    let Some(payload) = PayloadKind::of(dialect, &payload_type) else {
        bail!(
            "OUTBOX_PAYLOAD_COLUMN: column {} of {} has type {payload_type}; the relay sends {} payloads",
            cfg.payload_column,
            cfg.table,
            accepted_payloads(dialect)
        );
    };
    if let Some(g) = &cfg.group_column {
        column(g, "OUTBOX_GROUP_COLUMN")?;
    }
    Ok(Outbox {
        cols,
        id_type,
        payload,
    })
}

/// The dead-letter table: it exists and has the columns a quarantine
/// writes. Its columns and the type of its `id`.
async fn dead_letter(pool: &Pool, cfg: &Config) -> anyhow::Result<(Vec<(String, String)>, String)> {
    const VARIABLE: &str = "OUTBOX_DEAD_LETTER_TABLE";
    let table = &cfg.dead_letter_table;
    let cols = table_columns(pool, table, VARIABLE).await?;
    let column = |name: &str| {
        let ident = Ident::parse(name).expect("a valid literal");
        find_column(&cols, &ident, table, VARIABLE, pool.dialect())
    };
    let id_type = column("id")?;
    for needed in ["payload", "group_key", "reason"] {
        column(needed)?;
    }
    Ok((cols, id_type))
}

/// The kind of the id column's type, if the relay accepts it.
///
/// Keys travel as text and are cast back to the column's type, so only
/// types whose text form round-trips exactly are accepted: a DECIMAL
/// compared through a double, or a BINARY key that is not UTF-8, could
/// make a delete hit another row than the one sent.
fn id_kind(cfg: &Config, id_type: &str) -> anyhow::Result<IdKind> {
    match IdKind::of(id_type) {
        Some(kind) => Ok(kind),
        None => bail!(
            "OUTBOX_ID_COLUMN: column {} of {} has type {id_type}; the relay supports integer, UUID and text ids",
            cfg.id_column,
            cfg.table
        ),
    }
}

/// The columns the statements read and copy.
fn relay_columns(
    cfg: &Config,
    dialect: Dialect,
    outbox: &Outbox,
    dl_cols: &[(String, String)],
) -> anyhow::Result<Columns> {
    let created = Ident::parse("created_at").expect("a valid literal");
    let has = |cols: &[(String, String)]| type_of(cols, created.as_str(), dialect).is_some();
    Ok(Columns {
        id: cfg.id_column.clone(),
        payload: cfg.payload_column.clone(),
        group: cfg.group_column.clone(),
        copy_created_at: has(&outbox.cols) && has(dl_cols),
        created_at: has(&outbox.cols).then_some(created),
        payload_bytes: outbox.payload == PayloadKind::Bytes,
        // Order matters on FIFO queues only; MySQL needs no filter (see
        // `Source::rows_up_to`).
        settled_only: cfg.is_fifo(),
        shape: crate::shaping::shape_columns(cfg, &outbox.cols, dl_cols, dialect)?,
    })
}

/// The columns of a table with their SQL types; an error naming the table
/// when it does not exist.
async fn table_columns(
    pool: &Pool,
    table: &TableName,
    variable: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let cols = columns(pool, table).await?;
    if cols.is_empty() {
        bail!("{variable}: table {table} does not exist (create it with infra/sql/)");
    }
    Ok(cols)
}

/// The type of column `want`, or an error naming the variable.
fn find_column(
    cols: &[(String, String)],
    want: &Ident,
    table: &TableName,
    variable: &str,
    dialect: Dialect,
) -> anyhow::Result<String> {
    match type_of(cols, want.as_str(), dialect) {
        Some(ty) => Ok(ty.to_owned()),
        None => bail!("{variable}: table {table} has no column {want}"),
    }
}

/// `SKIP LOCKED` needs MySQL 8.0.1+ or MariaDB 10.6+; older servers would
/// make concurrent relays block on each other's rows, so refuse to start.
async fn check_mysql_version(pool: &MySqlPool) -> anyhow::Result<()> {
    let v: Vec<u8> = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(pool)
        .await?;
    let v = String::from_utf8_lossy(&v).into_owned();
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (major, minor) = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    );
    let mariadb = v.to_ascii_lowercase().contains("mariadb");
    let ok = if mariadb {
        (major, minor) >= (10, 6)
    } else {
        major >= 8
    };
    if !ok {
        bail!(
            "database server {v} is too old: FOR UPDATE SKIP LOCKED needs MySQL 8.0.1+ or MariaDB 10.6+"
        );
    }
    Ok(())
}
