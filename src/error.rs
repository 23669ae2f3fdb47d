//! The errors callers see: one enum at the edge, each variant saying
//! whether a retry can help.

use crate::config::ConfigError;
use crate::event::EventError;
use crate::summary::Summary;

/// Why a pass did not run, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A setting is missing or wrong; fix the environment.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The invocation event is not one the relay accepts.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The relay could not get ready: database unreachable, table or column
    /// missing, queue or secret unusable. The message says which.
    #[error("{0:#}")]
    Setup(anyhow::Error),
    /// The pass started and stopped on a failure; `done` is what it had
    /// done. Nothing is lost: the rows left are retried by the next pass.
    #[error("pass failed after {done_rows} rows: {error:#}", done_rows = done.deleted + done.quarantined)]
    Pass {
        /// What the pass completed before failing.
        done: Summary,
        /// The failure.
        error: anyhow::Error,
    },
}

impl RelayError {
    /// True when the same request may succeed later without a change by
    /// an operator (the Lambda's retries and the next schedule).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RelayError::Pass { .. } | RelayError::Setup(_))
    }

    /// A short name for the kind of failure (the Lambda `errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::Config(_) => "ConfigError",
            RelayError::Event(_) => "InvalidEvent",
            RelayError::Setup(_) => "SetupError",
            RelayError::Pass { .. } => "PassFailed",
        }
    }
}

impl From<RelayError> for lambda_runtime::Diagnostic {
    fn from(e: RelayError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.kind().to_owned(),
            error_message: e.to_string(),
        }
    }
}
