//! The command line: `outbox-relay drain [--max-rows N] [--dry-run] [--stats]`
//! and `outbox-relay follow [--max-rows N] [--stats]`.
//!
//! Exit codes: 0 the pass succeeded; 1 the pass failed (rows are safe and a
//! rerun continues); 2 usage or configuration error (fix and rerun).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::config::{Config, VARIABLES};
use crate::error::RelayError;
use crate::event::PassRequest;
use crate::summary::Summary;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The pass failed; nothing was lost and a rerun continues.
pub const EXIT_FAILED: u8 = 1;
/// Bad arguments or settings.
pub const EXIT_USAGE: u8 = 2;
/// An operator command ran but did not do or find everything asked: a
/// replay refused some ids, a status lookup found the id nowhere.
pub const EXIT_PARTIAL: u8 = 3;

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// One pass, as an invocation does; `stats` prints the request counts.
    Drain(PassRequest, DrainOptions),
    /// `dead-letters …` or `status …` (see [`crate::ops`]).
    Ops(crate::ops::OpsCommand),
    /// Pass after pass, woken by new rows, until a signal (or
    /// `FOLLOW_SECONDS`, or `max_rows` rows relayed).
    Follow(PassRequest, DrainOptions),
    /// Serve Lambda invocations (no arguments, inside Lambda).
    Lambda,
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// Flags of `drain` that are not part of the pass request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOptions {
    /// Print SQL round trips and AWS requests per operation as JSON on
    /// stderr after the pass (`make bench` reads it).
    pub stats: bool,
}

/// Parses the arguments after the program name. `in_lambda` says whether
/// the Lambda runtime API is present, where no arguments means "serve".
pub fn parse(args: &[String], in_lambda: bool) -> Result<Command, String> {
    let mut it = args.iter().map(String::as_str);
    match it.next() {
        None if in_lambda => Ok(Command::Lambda),
        None => Err("no command given; try `outbox-relay drain` or `outbox-relay --help`".into()),
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("lambda") if in_lambda => Ok(Command::Lambda),
        // The runtime client would panic on the missing variable.
        Some("lambda") => Err(
            "lambda: not inside AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set); use `outbox-relay drain` here"
                .into(),
        ),
        Some("dead-letters" | "status") if args.iter().any(|a| a == "-h" || a == "--help") => {
            Ok(Command::Help)
        }
        Some("dead-letters") => crate::ops::parse_dead_letters(it).map(Command::Ops),
        Some("status") => crate::ops::parse_status(it).map(Command::Ops),
        Some(command @ ("drain" | "follow")) => {
            let mut req = PassRequest::default();
            let mut opts = DrainOptions::default();
            while let Some(arg) = it.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) => (f, Some(v)),
                    None => (arg, None),
                };
                match flag {
                    "--dry-run" if inline.is_none() && command == "drain" => req.dry_run = true,
                    "--stats" if inline.is_none() => opts.stats = true,
                    "--max-rows" => {
                        let v = inline
                            .or_else(|| it.next())
                            .ok_or("--max-rows needs a number")?;
                        let n: u64 = v.parse().map_err(|_| {
                            format!("--max-rows must be a positive whole number, got {v:?}")
                        })?;
                        if n == 0 {
                            return Err("--max-rows must be at least 1".into());
                        }
                        req.max_rows = Some(n);
                    }
                    "-h" | "--help" => return Ok(Command::Help),
                    _ => {
                        return Err(format!(
                            "unknown argument {arg:?} for {command}; see --help"
                        ));
                    }
                }
            }
            Ok(match command {
                "follow" => Command::Follow(req, opts),
                _ => Command::Drain(req, opts),
            })
        }
        Some(other) => Err(format!("unknown command {other:?}; see --help")),
    }
}

/// The complete help text: commands, flags, exit codes and every variable.
pub fn help() -> String {
    let mut s = String::from(
        "outbox-relay: relays rows of a SQL outbox table to Amazon SQS exactly once\n\
         \n\
         USAGE:\n\
         \x20 outbox-relay drain [--max-rows N] [--dry-run] [--stats]\n\
         \x20 outbox-relay dead-letters list [--json] [--show-payload]\n\
         \x20 outbox-relay dead-letters replay (--id ID ... | --all) [--dry-run]\n\
         \x20 outbox-relay status ID [--json]\n\
         \x20 outbox-relay follow [--max-rows N] [--stats]\n\
         \x20 outbox-relay lambda          serve Lambda invocations (the default inside Lambda)\n\
         \x20 outbox-relay --help | --version\n\
         \n\
         drain runs one pass, exactly what an invocation does: select rows, claim each\n\
         in the DynamoDB ledger, send to SQS, mark SENT, delete. It prints the JSON\n\
         summary as the last line of stdout; logs go to stderr (RUST_LOG=debug for more).\n\
         On a terminal it shows progress on stderr.\n\
         \n\
         \x20 --max-rows N   stop after N rows (a backfill in slices); default: until empty\n\
         \x20 --dry-run      report what would be sent, recovered, skipped and quarantined;\n\
         \x20                change nothing\n\
         \x20 --stats        after the pass, print SQL round trips and AWS requests per\n\
         \x20                operation as one JSON line on stderr (benchmarks)\n\
         \n\
         follow keeps relaying, for containers, ECS and systemd: drain, wait for new rows,\n\
         drain again. A PostgreSQL NOTIFY on OUTBOX_NOTIFY_CHANNEL (the trigger of\n\
         infra/sql/postgres-notify.sql) wakes it at once; otherwise it looks for rows every\n\
         POLL_INTERVAL_MS (MySQL/MariaDB: polling only). SIGTERM or SIGINT stops it\n\
         gracefully: no new batch starts, the batch in flight finishes send, mark and\n\
         delete, then it prints the JSON summary of the whole run as the last line of\n\
         stdout and exits 0 (a second signal exits at once, 130). It also stops after\n\
         FOLLOW_SECONDS when that is not 0, or once --max-rows N rows were relayed.\n\
         \n",
    );
    s.push_str(crate::ops::HELP);
    s.push_str(
        "\n\
         EXIT CODES:\n\
         \x20 0  the command succeeded (drain, follow: \"remaining\": true means rows are left for another pass)\n\
         \x20 1  it failed; no row was lost (a replay changed nothing), rerun to continue\n\
         \x20 2  bad arguments or configuration\n\
         \x20 3  replay: some ids were refused (the others were replayed); status: the id is\n\
         \x20    in none of the outbox, the dead-letter table and the ledger\n\
         \n\
         ENVIRONMENT:\n",
    );
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

/// Runs `drain`: prints progress on a terminal, the summary on stdout, and
/// returns the exit code.
pub async fn drain(req: PassRequest, opts: DrainOptions) -> u8 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(&RelayError::from(e)),
    };
    let app = match crate::app::App::new(config.clone()).await {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let stop_at = config.max_pass.map(|d| Instant::now() + d);
    let progress = Progress::new();
    // No hard deadline outside Lambda: nothing ends the process mid-send.
    let result = app.run(&req, stop_at, None, &|s| progress.show(s)).await;
    progress.finish();
    app.close().await;
    if opts.stats {
        let s = crate::stats::snapshot();
        eprintln!(
            "{}",
            serde_json::json!({
                "sql_round_trips": s.sql_round_trips,
                "aws_requests": s.aws_requests,
                "aws_batch_items": s.aws_batch_items,
            })
        );
    }
    match result {
        Ok(summary) => {
            println!("{}", summary.to_json());
            EXIT_OK
        }
        Err(e) => {
            if let RelayError::Pass { done, .. } = &e {
                println!("{}", done.to_json());
            }
            fail(&e)
        }
    }
}

/// Runs `follow`: relays until a signal, `FOLLOW_SECONDS` or `--max-rows`,
/// then prints the summary of the whole run on stdout and returns the exit
/// code.
pub async fn follow(req: PassRequest, opts: DrainOptions) -> u8 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(&RelayError::from(e)),
    };
    // Signals are caught before anything connects: a SIGTERM during the
    // start-up is a graceful stop too.
    let shutdown = crate::stop::Shutdown::new();
    if let Err(e) = crate::stop::on_signals(shutdown.clone()) {
        eprintln!("outbox-relay: cannot catch SIGTERM/SIGINT: {e}");
        return EXIT_FAILED;
    }
    let app = match crate::app::App::new(config.clone()).await {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let plan = crate::follow::Plan {
        until: (!config.follow.is_zero()).then(|| Instant::now() + config.follow),
        deadline: None,
        max_rows: req.max_rows,
        shutdown: Some(shutdown),
    };
    let progress = Progress::new();
    let result = crate::follow::follow(&app, &plan, &|s| progress.show(s)).await;
    progress.finish();
    app.close().await;
    if opts.stats {
        print_stats();
    }
    report(result)
}

/// The request counters as one JSON line on stderr (`--stats`).
fn print_stats() {
    let s = crate::stats::snapshot();
    eprintln!(
        "{}",
        serde_json::json!({
            "sql_round_trips": s.sql_round_trips,
            "aws_requests": s.aws_requests,
            "aws_batch_items": s.aws_batch_items,
        })
    );
}

/// Prints the summary as the last line of stdout; returns the exit code.
fn report(result: Result<Summary, RelayError>) -> u8 {
    match result {
        Ok(summary) => {
            println!("{}", summary.to_json());
            EXIT_OK
        }
        Err(e) => {
            if let RelayError::Pass { done, .. } = &e {
                println!("{}", done.to_json());
            }
            fail(&e)
        }
    }
}

fn fail(e: &RelayError) -> u8 {
    eprintln!("outbox-relay: {e}");
    if e.is_retryable() {
        EXIT_FAILED
    } else {
        EXIT_USAGE
    }
}

/// A one-line progress display on stderr, only when it is a terminal.
struct Progress {
    on: bool,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            on: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn show(&self, s: &Summary) {
        if !self.on {
            return;
        }
        let secs = self
            .started
            .elapsed()
            .max(Duration::from_millis(1))
            .as_secs_f64();
        let done = s.deleted + s.quarantined;
        eprint!(
            "\r\x1b[2K{} rows done ({} sent, {} recovered, {} quarantined, {} skipped) {:.0} rows/s",
            done,
            s.sent,
            s.recovered,
            s.quarantined,
            s.skipped,
            done as f64 / secs
        );
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
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
    fn help_lists_every_variable() {
        let h = help();
        for v in VARIABLES {
            assert!(h.contains(v.name));
        }
        assert!(h.contains("--max-rows") && h.contains("--dry-run"));
        assert!(h.contains("outbox-relay follow") && h.contains("SIGTERM"));
    }
}
