//! The shared AWS SDK configuration: one HTTP client, explicit timeouts.
//!
//! The SDK has no operation timeout by default, and the protocol depends on
//! one: a send may only start while the claim's lease outlives the send's
//! worst case (see [`OPERATION_TIMEOUT`]). The HTTP client is rustls with
//! ring, wired in by hand so the build compiles one TLS stack, not two.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::config::ConfigError;

/// Longest any AWS call may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt may take before the SDK retries it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Connection set-up, well below an attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Loads region, credentials and endpoint overrides the standard way
/// (`AWS_REGION`, `AWS_ENDPOINT_URL[_SERVICE]`, profile, container or
/// Lambda credentials) and fixes the timeouts and retries.
pub async fn sdk_config() -> Result<SdkConfig, ConfigError> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        // Stalled-stream protection watches the throughput of every body
        // (a future and a time-source read per poll, per request) to catch
        // uploads or downloads that stall for its 20 s grace period. Our
        // bodies are small JSON documents, and the attempt timeout above
        // already ends any attempt after 4 s: the check can never fire
        // first, so it is pure per-request cost.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await;
    if config.region().is_none() {
        return Err(ConfigError {
            variable: "AWS_REGION",
            problem: "is not set and no region is configured in the AWS profile".to_owned(),
        });
    }
    Ok(config)
}
