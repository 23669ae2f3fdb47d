//! Running `outbox-relay drain` and `outbox-relay follow` (parsed by
//! [`crate::args`]): progress on a terminal, the summary on stdout.
//!
//! Exit codes: 0 the pass succeeded; 1 the pass failed (rows are safe and a
//! rerun continues); 2 usage or configuration error (fix and rerun).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::args::DrainOptions;
use crate::config::Config;
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
        print_stats();
    }
    report(result)
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
