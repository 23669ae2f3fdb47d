//! The Lambda entry point: event in, summary out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

use crate::app::App;
use crate::config::ConfigError;
use crate::deadletters::{ReplayReport, Selection};
use crate::error::RelayError;
use crate::event::Invocation;
use crate::ledger::now_ms;
use crate::summary::Summary;

/// Pass length when the invocation's deadline is unknown.
pub const DEFAULT_MAX_PASS: Duration = Duration::from_secs(600);
/// Time kept free before the deadline: a batch's worst case (claim, send
/// and mark each up to the SDK's operation timeout, plus SQL). Sends are
/// bounded by the deadline itself (no send starts unless it and the mark
/// after it fit before it), so a batch cut off there has only claims to
/// wait out.
const BATCH_RESERVE: Duration = Duration::from_secs(35);
/// Lambda's longest timeout; a deadline further away than this is bogus.
const LAMBDA_MAX: Duration = Duration::from_secs(15 * 60);

/// Reads the settings, then serves invocations until the runtime stops.
/// A bad setting ends the process at init with one line naming it, which
/// Lambda reports as the init error.
pub async fn main() -> u8 {
    let config = match crate::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outbox-relay: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let app = match App::new(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("outbox-relay: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    match serve(app).await {
        Ok(()) => crate::cli::EXIT_OK,
        Err(e) => {
            eprintln!("outbox-relay: Lambda runtime stopped: {e}");
            crate::cli::EXIT_FAILED
        }
    }
}

/// Serves invocations until the runtime stops.
pub async fn serve(app: App) -> Result<(), lambda_runtime::Error> {
    let app = Arc::new(app);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { handle(&app, event).await }
    }))
    .await
}

/// The response of an invocation: a pass's summary, or a replay's report.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Response {
    /// What a pass did.
    Pass(Summary),
    /// What a dead-letter replay did.
    Replay(ReplayReport),
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Response, RelayError> {
    match crate::event::parse_invocation(&event.payload)? {
        Invocation::Pass(request) => pass(app, event, request).await.map(Response::Pass),
        Invocation::ReplayDeadLetters { selection, dry_run } => {
            let report = replay(app, &selection, dry_run)
                .await
                .map_err(RelayError::Setup)?;
            tracing::info!(
                replayed = report.replayed.len(),
                refused = report.refused.len(),
                dry_run,
                "dead-letter replay done"
            );
            Ok(Response::Replay(report))
        }
    }
}

/// A dead-letter replay on a connection of its own (replays are rare).
async fn replay(app: &App, selection: &Selection, dry_run: bool) -> anyhow::Result<ReplayReport> {
    let db = crate::admin::Db::connect(app.database_options().await?).await?;
    let report = crate::deadletters::replay(&db, app.config(), selection, dry_run).await;
    db.close().await;
    report
}

async fn pass(
    app: &App,
    event: LambdaEvent<Value>,
    request: crate::event::PassRequest,
) -> Result<Summary, RelayError> {
    let fallback = app.config().max_pass.unwrap_or(DEFAULT_MAX_PASS);
    let now = now_ms();
    let budget = pass_budget(event.context.deadline, now, fallback);
    let stop_at = Instant::now() + budget;
    let deadline = hard_deadline(event.context.deadline, now).map(|left| Instant::now() + left);
    let follow = app.config().follow;
    let result = if crate::event::is_scheduled(&event.payload) && !follow.is_zero() {
        follow_budget(follow, budget)?;
        let plan = crate::follow::Plan {
            until: Some(Instant::now() + follow.min(budget)),
            deadline,
            max_rows: None,
            shutdown: None,
        };
        crate::follow::follow(app, &plan, &|_| {}).await
    } else {
        app.run(&request, Some(stop_at), deadline, &|_| {}).await
    };
    // One metrics line per invocation, a follow's included: its counts are
    // those of every pass it ran.
    emit_metrics(app, &result).await;
    match &result {
        Ok(s) => tracing::info!(summary = %s.to_json(), "pass done"),
        Err(RelayError::Pass { done, error }) => {
            tracing::error!(summary = %done.to_json(), error = %format!("{error:#}"), "pass failed")
        }
        Err(e) => tracing::error!(error = %e, "pass not started"),
    }
    result
}

/// Prints the pass's EMF line (stdout, where Lambda's log capture reads it).
/// A failed backlog query only drops the backlog metrics: metrics must
/// never fail a pass.
async fn emit_metrics(app: &App, result: &Result<Summary, RelayError>) {
    let summary = match result {
        Ok(s) if !s.dry_run => s,
        Err(RelayError::Pass { done, .. }) => done,
        _ => return,
    };
    let backlog = match app.relay().await {
        Ok(relay) => relay.source().backlog().await.ok(),
        Err(_) => None,
    };
    let table = app.config().table.to_string();
    let doc = crate::metrics::emf(&table, summary, backlog.as_ref(), now_ms());
    println!("{doc}");
}

/// Refuses a follow the invocation's deadline cannot hold: the function's
/// Timeout must be at least `FOLLOW_SECONDS` plus the batch reserve (the
/// template's rule says the same). A second of slack covers the time the
/// invocation spent before its handler ran.
pub fn follow_budget(follow: Duration, budget: Duration) -> Result<(), ConfigError> {
    if follow > budget + Duration::from_secs(1) {
        return Err(ConfigError {
            variable: "FOLLOW_SECONDS",
            problem: format!(
                "is {}s but this invocation leaves {}s before its deadline reserve: set the function's Timeout to at least FOLLOW_SECONDS + {}",
                follow.as_secs(),
                budget.as_secs(),
                BATCH_RESERVE.as_secs()
            ),
        });
    }
    Ok(())
}

/// Time left before Lambda ends the invocation, when the deadline is real
/// (see [`pass_budget`] for the bogus ones local emulators send).
pub fn hard_deadline(deadline_ms: u64, now_ms: u64) -> Option<Duration> {
    let max = now_ms + LAMBDA_MAX.as_millis() as u64;
    (deadline_ms > now_ms && deadline_ms <= max)
        .then(|| Duration::from_millis(deadline_ms - now_ms))
}

/// How long a pass may run, from the invocation deadline (ms since epoch).
///
/// Local emulators send a deadline in the past or absurdly far away
/// (`cargo lambda watch` sends a fixed 600000, in 1970), so a deadline not
/// within Lambda's 15 minutes from now counts as unknown and `fallback`
/// applies. Otherwise the pass stops a batch's worst case before the
/// deadline, or halfway there for short timeouts.
pub fn pass_budget(deadline_ms: u64, now_ms: u64, fallback: Duration) -> Duration {
    match hard_deadline(deadline_ms, now_ms) {
        None => fallback,
        Some(left) => left - BATCH_RESERVE.min(left / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_in_the_past_or_far_future_means_unknown() {
        let now = 1_800_000_000_000;
        let fb = Duration::from_secs(600);
        assert_eq!(pass_budget(600_000, now, fb), fb);
        assert_eq!(pass_budget(now + 3_600_000, now, fb), fb);
    }

    #[test]
    fn only_a_real_deadline_bounds_sends() {
        let now = 1_800_000_000_000;
        assert_eq!(hard_deadline(600_000, now), None);
        assert_eq!(hard_deadline(now + 3_600_000, now), None);
        assert_eq!(
            hard_deadline(now + 120_000, now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn a_follow_longer_than_the_deadline_allows_is_refused_naming_its_variable() {
        let now = 1_800_000_000_000;
        let fb = Duration::from_secs(600);
        let s = |secs| Duration::from_secs(secs);
        // Timeout 90 holds a 55 s follow; 60 does not.
        assert!(follow_budget(s(55), pass_budget(now + 90_000, now, fb)).is_ok());
        let err = follow_budget(s(55), pass_budget(now + 60_000, now, fb)).unwrap_err();
        assert_eq!(err.variable, "FOLLOW_SECONDS");
        assert!(!err.to_string().contains('\n'));
        // An unknown deadline (cargo lambda watch): the fallback decides.
        assert!(follow_budget(s(55), pass_budget(600_000, now, fb)).is_ok());
    }

    #[test]
    fn a_real_deadline_keeps_a_reserve() {
        let now = 1_800_000_000_000;
        let fb = Duration::from_secs(600);
        assert_eq!(
            pass_budget(now + 300_000, now, fb),
            Duration::from_secs(265)
        );
        assert_eq!(pass_budget(now + 20_000, now, fb), Duration::from_secs(10));
    }
}
