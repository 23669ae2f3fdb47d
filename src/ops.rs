//! The operator commands: `dead-letters list`, `dead-letters replay` and
//! `status`, run (parsed by [`crate::args`]) (the shapes of [`crate::cli`]: arguments in,
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
