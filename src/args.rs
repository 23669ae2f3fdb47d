//! The command line, declared once with `clap`: commands, flags, their
//! ranges and their help. `--help` prints every command's help with the exit
//! codes and the environment table ([`crate::config::VARIABLES`]); a bad
//! argument is one line on stderr and exit code 2.
//!
//! The settings themselves stay environment variables read by
//! [`crate::config`], not clap `env` arguments: Lambda has no command line,
//! and a bad setting must fail as one line naming the variable.

use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};

use crate::config::VARIABLES;
use crate::deadletters::Selection;
use crate::event::PassRequest;
use crate::ops::OpsCommand;

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// One pass, as an invocation does; `stats` prints the request counts.
    Drain(PassRequest, DrainOptions),
    /// `dead-letters …` or `status …` (see [`crate::ops`]).
    Ops(OpsCommand),
    /// Pass after pass, woken by new rows, until a signal (or
    /// `FOLLOW_SECONDS`, or `max_rows` rows relayed).
    Follow(PassRequest, DrainOptions),
    /// Serve Lambda invocations (no arguments, inside Lambda).
    Lambda,
    /// Print this text (the complete help, a command's help, the version)
    /// on stdout and exit 0.
    Print(String),
}

/// Flags of `drain` and `follow` that are not part of the pass request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOptions {
    /// Print SQL round trips and AWS requests per operation as JSON on
    /// stderr after the pass (`make bench` reads it).
    pub stats: bool,
}

#[derive(Parser, Debug)]
#[command(
    name = "outbox-relay",
    version,
    about = "outbox-relay: relays rows of a SQL outbox table to Amazon SQS exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Run one pass, exactly what an invocation does.
    ///
    /// Select rows, claim each in the DynamoDB ledger, send to SQS, mark SENT,
    /// delete, until the table is empty. The JSON summary is the last line of
    /// stdout; logs go to stderr (RUST_LOG=debug for more). On a terminal it
    /// shows progress on stderr.
    #[command(verbatim_doc_comment)]
    Drain {
        #[command(flatten)]
        pass: PassArgs,
        /// Report what would be sent, recovered, skipped and quarantined;
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep relaying: drain, wait for new rows, drain again.
    ///
    /// For containers, ECS and systemd. A PostgreSQL NOTIFY on
    /// OUTBOX_NOTIFY_CHANNEL (the trigger of infra/sql/postgres-notify.sql) wakes
    /// it at once; otherwise it looks for rows every POLL_INTERVAL_MS
    /// (MySQL/MariaDB: polling only). SIGTERM or SIGINT stops it gracefully: no new
    /// batch starts, the batch in flight finishes send, mark and delete, then it
    /// prints the JSON summary of the whole run as the last line of stdout and
    /// exits 0 (a second signal exits at once, 130). It also stops after
    /// FOLLOW_SECONDS when that is not 0, or once --max-rows N rows were relayed.
    #[command(verbatim_doc_comment)]
    Follow {
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List or replay the dead-letter table.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Show what the ledger knows of a row and where the row is.
    ///
    /// status ID shows what the ledger knows of a row (state, owner, lease,
    /// attempts, SQS message id, FIFO sequence number, sent time) and whether it
    /// is in the outbox or the dead-letter table.
    #[command(verbatim_doc_comment)]
    Status {
        /// The row key.
        #[arg(value_name = "ID")]
        id: String,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Serve Lambda invocations (the default inside Lambda).
    Lambda,
}

#[derive(Args, Debug)]
struct PassArgs {
    /// Stop after N rows (a backfill in slices); default: until empty.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_rows: Option<u64>,
    /// After the pass, print SQL round trips and AWS requests per operation
    /// as one JSON line on stderr (benchmarks).
    #[arg(long)]
    stats: bool,
}

#[derive(Subcommand, Debug)]
enum DeadLetters {
    /// Print the dead-letter table.
    ///
    /// dead-letters list prints the dead-letter table: id, failed_at, payload
    /// bytes, replays so far and reason (never the payload unless --show-payload).
    #[command(verbatim_doc_comment)]
    List {
        /// One JSON array of {id, reason, failed_at, payload_bytes,
        /// replay_count, last_replayed_at[, payload]}.
        #[arg(long)]
        json: bool,
        /// Include each payload.
        #[arg(long)]
        show_payload: bool,
    },
    /// Move dead letters back into the outbox.
    ///
    /// dead-letters replay moves dead letters back into the outbox, in one
    /// transaction, counting each in OUTBOX_REPLAY_TABLE (infra/sql/); the next
    /// pass sends them. An id already in the outbox, or not in the dead-letter
    /// table, is refused with the reason; the others go on. Prints a line per id
    /// on stderr and the JSON report {"replayed": [...], "refused": [{"id",
    /// "reason"}], "dry_run"} on stdout.
    #[command(verbatim_doc_comment)]
    #[command(group = clap::ArgGroup::new("which").required(true).args(["id", "all"]))]
    Replay {
        /// A row key (repeat for more).
        #[arg(long, value_name = "ID")]
        id: Vec<String>,
        /// Every row of the dead-letter table.
        #[arg(long)]
        all: bool,
        /// Report what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The exit codes, for `--help`.
const EXIT_CODES: &str = "\
EXIT CODES:
  0  the command succeeded (drain, follow: \"remaining\": true means rows are left for another pass)
  1  it failed; no row was lost (a replay changed nothing), rerun to continue
  2  bad arguments or configuration
  3  replay: some ids were refused (the others were replayed); status: the id is
     in none of the outbox, the dead-letter table and the ledger
";

/// Parses the arguments after the program name. `in_lambda` says whether
/// the Lambda runtime API is present, where no arguments means "serve".
/// `Err` is the one line to print before exiting 2.
pub fn parse(args: &[String], in_lambda: bool) -> Result<Command, String> {
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) && args.len() == 1
    {
        return Ok(Command::Print(help()));
    }
    let argv = std::iter::once("outbox-relay").chain(args.iter().map(String::as_str));
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Command::Print(e.render().to_string()));
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return Err(format!(
                "`outbox-relay {}` needs a command; see --help",
                args.join(" ")
            ));
        }
        Err(e) => return Err(one_line(&e)),
    };
    match cli.command {
        None if in_lambda => Ok(Command::Lambda),
        None => Err("no command given; try `outbox-relay drain` or `outbox-relay --help`".into()),
        Some(Sub::Lambda) if in_lambda => Ok(Command::Lambda),
        // The runtime client would panic on the missing variable.
        Some(Sub::Lambda) => Err(
            "lambda: not inside AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set); use `outbox-relay drain` here"
                .into(),
        ),
        Some(Sub::Drain { pass, dry_run }) => Ok(Command::Drain(
            PassRequest {
                max_rows: pass.max_rows,
                dry_run,
            },
            DrainOptions { stats: pass.stats },
        )),
        Some(Sub::Follow { pass }) => Ok(Command::Follow(
            PassRequest {
                max_rows: pass.max_rows,
                dry_run: false,
            },
            DrainOptions { stats: pass.stats },
        )),
        Some(Sub::DeadLetters(DeadLetters::List { json, show_payload })) => {
            Ok(Command::Ops(OpsCommand::List { json, show_payload }))
        }
        Some(Sub::DeadLetters(DeadLetters::Replay { id, all, dry_run })) => {
            let selection = if all {
                Selection::All
            } else {
                crate::deadletters::check_ids(&id).map_err(|e| format!("--id: {e}"))?;
                Selection::Ids(id)
            };
            Ok(Command::Ops(OpsCommand::Replay { selection, dry_run }))
        }
        Some(Sub::Status { id, json }) => {
            if id.trim().is_empty() {
                return Err("status needs a row key: outbox-relay status ID".into());
            }
            Ok(Command::Ops(OpsCommand::Status { id, json }))
        }
    }
}

/// clap's error as one line: its first paragraph (the message, and the
/// arguments it names on the lines below), without the `error: ` prefix.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    format!(
        "{}; see --help",
        message.join(" ").trim_start_matches("error: ")
    )
}

/// The complete help: every command with its flags, the exit codes and
/// every variable.
pub fn help() -> String {
    let mut cli = Cli::command();
    // Built, so each command's usage line carries its full name.
    cli.build();
    let mut s = cli.render_help().to_string();
    let paths: [&[&str]; 6] = [
        &["drain"],
        &["follow"],
        &["dead-letters", "list"],
        &["dead-letters", "replay"],
        &["status"],
        &["lambda"],
    ];
    for path in paths {
        let mut cmd = &mut cli;
        for name in path {
            cmd = cmd.find_subcommand_mut(name).expect("a declared command");
        }
        s.push('\n');
        s.push_str(&cmd.render_long_help().to_string());
    }
    s.push('\n');
    s.push_str(EXIT_CODES);
    s.push_str("\nENVIRONMENT:\n");
    for v in VARIABLES {
        s.push_str(&format!(
            "  {:<28} {} [default: {}]\n",
            v.name,
            v.described(),
            v.default_text()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn drain_takes_its_flags() {
        assert_eq!(
            parse(&args(&["drain", "--max-rows", "5", "--dry-run"]), false),
            Ok(Command::Drain(
                PassRequest {
                    max_rows: Some(5),
                    dry_run: true
                },
                DrainOptions::default()
            ))
        );
        assert_eq!(
            parse(&args(&["drain", "--max-rows=7"]), false),
            Ok(Command::Drain(
                PassRequest {
                    max_rows: Some(7),
                    dry_run: false
                },
                DrainOptions { stats: false }
            ))
        );
        assert!(parse(&args(&["drain", "--max-rows", "x"]), false).is_err());
        assert!(parse(&args(&["drain", "--max-rows", "0"]), false).is_err());
        assert!(parse(&args(&["drain", "--force"]), false).is_err());
        assert_eq!(
            parse(&args(&["follow", "--max-rows", "9"]), false),
            Ok(Command::Follow(
                PassRequest {
                    max_rows: Some(9),
                    dry_run: false
                },
                DrainOptions::default()
            ))
        );
        assert!(
            parse(&args(&["follow", "--dry-run"]), false).is_err(),
            "a dry run changes nothing, so it cannot follow"
        );
        assert!(parse(&args(&[]), false).is_err());
        assert_eq!(parse(&args(&[]), true), Ok(Command::Lambda));
        assert_eq!(parse(&args(&["lambda"]), true), Ok(Command::Lambda));
        assert!(parse(&args(&["lambda"]), false).is_err());
    }

    #[test]
    fn the_operator_commands_take_their_flags() {
        assert_eq!(
            parse(
                &args(&["dead-letters", "replay", "--id", "7", "--id=8"]),
                false
            ),
            Ok(Command::Ops(OpsCommand::Replay {
                selection: Selection::Ids(vec!["7".into(), "8".into()]),
                dry_run: false
            }))
        );
        assert_eq!(
            parse(&args(&["status", "42", "--json"]), false),
            Ok(Command::Ops(OpsCommand::Status {
                id: "42".into(),
                json: true
            }))
        );
        for bad in [
            &["dead-letters"][..],
            &["dead-letters", "replay"],
            &["dead-letters", "replay", "--all", "--id", "1"],
            &["status", "1", "2"],
        ] {
            let err = parse(&args(bad), false).unwrap_err();
            assert!(!err.contains('\n'), "{bad:?}: {err}");
        }
    }

    #[test]
    fn help_lists_every_command_flag_and_variable() {
        let h = help();
        for v in VARIABLES {
            assert!(h.contains(v.name));
        }
        for needle in [
            "--max-rows",
            "--dry-run",
            "--stats",
            "--show-payload",
            "--all",
            "outbox-relay follow",
            "outbox-relay dead-letters replay",
            "SIGTERM",
            "EXIT CODES",
        ] {
            assert!(h.contains(needle), "--help lacks {needle}");
        }
        assert!(matches!(
            parse(&args(&["drain", "--help"]), false),
            Ok(Command::Print(t)) if t.contains("--max-rows") && !t.contains("ENVIRONMENT")
        ));
    }
}
