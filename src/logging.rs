//! The process's log subscriber: Lambda's level and format controls
//! (`AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`; `AWS_LAMBDA_LOG_FORMAT=JSON`),
//! as `lambda_runtime`'s default subscriber reads them, with the AWS SDK's
//! and the HTTP stack's own targets capped.
//!
//! At DEBUG and TRACE the SDK logs whole requests and responses: the
//! `SendMessageBatch` bodies (the payloads), the signed headers with the
//! session token. The caps below apply at every level, whatever `RUST_LOG`
//! says, so no setting shows them.

use lambda_runtime::tracing::subscriber::filter::{Directive, EnvFilter, LevelFilter};
use lambda_runtime::tracing::subscriber::fmt::MakeWriter;

/// Targets (prefixes) that may log request or response contents, or
/// credentials, below INFO.
const CAPPED: &[&str] = &[
    "aws_smithy",
    "aws_sdk",
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "aws_credential_types",
    "aws_types",
    "hyper",
    "h2",
    "rustls",
    "tower",
];

/// The filter: the level asked for, and at most INFO for [`CAPPED`].
pub fn filter(level: Option<&str>) -> EnvFilter {
    let default: LevelFilter = level
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(LevelFilter::INFO);
    // A directive of the setting on a capped target would be more specific
    // than the cap, and win: those are left out.
    let asked: Vec<&str> = level
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !CAPPED.iter().any(|t| d.starts_with(t)))
        .collect();
    let mut filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .parse_lossy(asked.join(","));
    for target in CAPPED {
        let cap: Directive = format!("{target}=info").parse().expect("a valid directive");
        filter = filter.add_directive(cap);
    }
    filter
}

/// Installs the subscriber, writing to `writer` (stderr for the CLI,
/// whose stdout carries the summary).
pub fn init<W>(writer: W, settings: &crate::config::LogSettings)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let collector = lambda_runtime::tracing::subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter(settings.level.as_deref()))
        .with_writer(writer);
    if settings.json {
        collector.json().init()
    } else {
        collector.init()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_is_capped_at_info_whatever_the_level() {
        for level in [Some("trace"), Some("aws_smithy_runtime=trace,trace"), None] {
            let f = filter(level).to_string();
            for target in CAPPED {
                assert!(f.contains(&format!("{target}=info")), "{level:?}: {f}");
            }
            assert!(
                !f.contains("aws_smithy_runtime=trace"),
                "{level:?}: the cap lost to the setting: {f}"
            );
        }
    }
}
