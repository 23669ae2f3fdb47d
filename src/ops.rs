//! The operator commands: `dead-letters list`, `dead-letters replay` and
//! `status`, parsed and run (the shapes of [`crate::cli`]: arguments in,
//! an exit code out, results on stdout, one-line errors on stderr).

use crate::admin::Db;
use crate::app::App;
use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE};
use crate::config::Config;
use crate::deadletters::{self, Selection};

/// An operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsCommand {
    /// `dead-letters list [--json] [--show-payload]`.
    List {
        /// One JSON array instead of a table.
        json: bool,
        /// Include each payload.
        show_payload: bool,
    },
    /// `dead-letters replay (--id ID ... | --all) [--dry-run]`.
    Replay {
        /// Which rows.
        selection: Selection,
        /// Change nothing, say what would happen.
        dry_run: bool,
    },
    /// `status ID [--json]`.
    Status {
        /// The row key.
        id: String,
        /// JSON instead of lines.
        json: bool,
    },
}

/// The help text of these commands (part of `--help`).
pub const HELP: &str = "\
dead-letters list prints the dead-letter table: id, failed_at, payload bytes,\n\
replays so far and reason (never the payload unless --show-payload).\n\
\x20 --json          one JSON array of {id, reason, failed_at, payload_bytes,\n\
\x20                 replay_count, last_replayed_at[, payload]}\n\
\x20 --show-payload  include each payload\n\
\n\
dead-letters replay moves dead letters back into the outbox, in one transaction,\n\
counting each in OUTBOX_REPLAY_TABLE (infra/sql/); the next pass sends them. An id\n\
already in the outbox, or not in the dead-letter table, is refused with the\n\
reason; the others go on. Prints a line per id on stderr and the JSON report\n\
{\"replayed\": [...], \"refused\": [{\"id\", \"reason\"}], \"dry_run\"} on stdout.\n\
\x20 --id ID         a row key (repeat for more)\n\
\x20 --all           every row of the dead-letter table\n\
\x20 --dry-run       report what would be replayed; change nothing\n\
\n\
status ID shows what the ledger knows of a row (state, owner, lease, attempts,\n\
SQS message id, FIFO sequence number, sent time) and whether it is in the\n\
outbox or the dead-letter table.\n\
\x20 --json          one JSON object instead of lines\n";

/// Parses the arguments after `dead-letters`.
pub fn parse_dead_letters<'a>(mut it: impl Iterator<Item = &'a str>) -> Result<OpsCommand, String> {
    match it.next() {
        Some("list") => {
            let (mut json, mut show_payload) = (false, false);
            for arg in it {
                match arg {
                    "--json" => json = true,
                    "--show-payload" => show_payload = true,
                    _ => {
                        return Err(format!(
                            "unknown argument {arg:?} for dead-letters list; see --help"
                        ));
                    }
                }
            }
            Ok(OpsCommand::List { json, show_payload })
        }
        Some("replay") => {
            let (mut ids, mut all, mut dry_run) = (Vec::new(), false, false);
            while let Some(arg) = it.next() {
                match arg.split_once('=') {
                    Some(("--id", v)) => ids.push(v.to_owned()),
                    _ => match arg {
                        "--id" => ids.push(it.next().ok_or("--id needs a row key")?.to_owned()),
                        "--all" => all = true,
                        "--dry-run" => dry_run = true,
                        _ => {
                            return Err(format!(
                                "unknown argument {arg:?} for dead-letters replay; see --help"
                            ));
                        }
                    },
                }
            }
            let selection = match (all, ids.is_empty()) {
                (true, true) => Selection::All,
                (false, false) => {
                    deadletters::check_ids(&ids).map_err(|e| format!("--id: {e}"))?;
                    Selection::Ids(ids)
                }
                (true, false) => return Err("give --id or --all, not both".into()),
                (false, true) => {
                    return Err("dead-letters replay needs --id ID (repeatable) or --all".into());
                }
            };
            Ok(OpsCommand::Replay { selection, dry_run })
        }
        Some(other) => Err(format!(
            "unknown dead-letters command {other:?}; use list or replay"
        )),
        None => Err("dead-letters needs a command: list or replay".into()),
    }
}

/// Parses the arguments after `status`.
pub fn parse_status<'a>(it: impl Iterator<Item = &'a str>) -> Result<OpsCommand, String> {
    let (mut id, mut json) = (None, false);
    for arg in it {
        match arg {
            "--json" => json = true,
            a if a.starts_with("--") => {
                return Err(format!("unknown argument {a:?} for status; see --help"));
            }
            a if id.is_none() && !a.trim().is_empty() => id = Some(a.to_owned()),
            a => return Err(format!("status takes one row key; {a:?} is one too many")),
        }
    }
    let id = id.ok_or("status needs a row key: outbox-relay status ID")?;
    Ok(OpsCommand::Status { id, json })
}

/// Runs an operator command and returns the exit code.
pub async fn run(cmd: OpsCommand) -> u8 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let app = match App::new(config.clone()).await {
        Ok(a) => a,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let db = match app.database_options().await {
        Ok(options) => Db::connect(options).await,
        Err(e) => Err(e),
    };
    let db = match db {
        Ok(db) => db,
        Err(e) => return fail(EXIT_FAILED, &format!("{e:#}")),
    };
    let code = match run_with(&app, &db, &config, cmd).await {
        Ok(code) => code,
        Err(e) => fail(EXIT_FAILED, &format!("{e:#}")),
    };
    db.close().await;
    code
}

async fn run_with(app: &App, db: &Db, cfg: &Config, cmd: OpsCommand) -> anyhow::Result<u8> {
    match cmd {
        OpsCommand::List { json, show_payload } => {
            let entries = deadletters::list(db, cfg, show_payload).await?;
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                print!("{}", list_table(&entries));
            }
            Ok(EXIT_OK)
        }
        OpsCommand::Replay { selection, dry_run } => {
            let report = deadletters::replay(db, cfg, &selection, dry_run).await?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            for id in &report.replayed {
                eprintln!("{verb} {id}");
            }
            for r in &report.refused {
                eprintln!("refused {}: {}", r.id, r.reason);
            }
            println!("{}", serde_json::to_string(&report)?);
            Ok(if report.refused.is_empty() {
                EXIT_OK
            } else {
                EXIT_PARTIAL
            })
        }
        OpsCommand::Status { id, json } => {
            let ddb = aws_sdk_dynamodb::Client::new(app.aws());
            let status = crate::status::lookup(db, &ddb, cfg, &id).await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", status.to_text());
            }
            Ok(if status.unknown() {
                EXIT_PARTIAL
            } else {
                EXIT_OK
            })
        }
    }
}

fn list_table(entries: &[deadletters::Entry]) -> String {
    let id_w = entries.iter().map(|e| e.id.len()).max().unwrap_or(0).max(2);
    let mut s = format!(
        "{:<id_w$}  {:<24}  {:>9}  {:>7}  REASON\n",
        "ID", "FAILED_AT", "BYTES", "REPLAYS"
    );
    for e in entries {
        let bytes = e.payload_bytes.map_or("NULL".to_owned(), |b| b.to_string());
        s += &format!(
            "{:<id_w$}  {:<24}  {bytes:>9}  {:>7}  {}\n",
            e.id,
            e.failed_at.as_deref().unwrap_or("-"),
            e.replay_count,
            e.reason.replace('\n', " ")
        );
        if let Some(p) = &e.payload {
            s += &format!("{:<id_w$}  payload: {p}\n", "");
        }
    }
    s += &format!("{} dead letter(s)\n", entries.len());
    s
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("outbox-relay: {e}");
    code
}
