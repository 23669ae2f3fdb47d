//! `outbox-relay`: the Lambda function and the CLI, one binary. Wiring only;
//! see the library for everything else.

use std::process::ExitCode;

use outbox_relay::args::{self, Command};
use outbox_relay::cli;
use outbox_relay::{config, lambda, logging};

// One thread: a pass is I/O-bound (its concurrency is futures in flight, not
// threads), and a multi-threaded runtime spent more CPU handing wake-ups
// between its workers (futex calls) than the relay's own work: measured with
// `make bench`, about 20 % less CPU per row on one thread. Lambda's small
// functions get a fraction of one vCPU anyway.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args::parse(&args, config::in_lambda()) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            cli::EXIT_OK
        }
        Ok(Command::Drain(request, options)) => {
            // stdout carries the summary; logs go to stderr.
            logging::init(std::io::stderr, &config::log_settings());
            cli::drain(request, options).await
        }
        Ok(Command::Follow(request, options)) => {
            logging::init(std::io::stderr, &config::log_settings());
            cli::follow(request, options).await
        }
        Ok(Command::Ops(command)) => {
            logging::init(std::io::stderr, &config::log_settings());
            outbox_relay::ops::run(command).await
        }
        Ok(Command::Lambda) => {
            logging::init(std::io::stdout, &config::log_settings());
            lambda::main().await
        }
        Err(message) => {
            eprintln!("outbox-relay: {message}");
            cli::EXIT_USAGE
        }
    };
    ExitCode::from(code)
}
