//! The relay as a process: its command line with a clean environment, and
//! its stderr without the noise every pass has; ports for the servers a
//! test starts itself.

use std::collections::BTreeMap;

use super::TLS_WARNING;

/// The real binary with only `env` and what the SDK needs from the test's
/// own environment (the stack's endpoints, region, credentials): nothing
/// leaks in from the developer's shell.
pub fn relay_command(env: &BTreeMap<String, String>) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.env_clear();
    for var in [
        "PATH",
        "HOME",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(env);
    cmd
}

/// Lines of a process's stderr, but for [`TLS_WARNING`].
pub fn stderr_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.contains(TLS_WARNING))
        .map(str::to_owned)
        .collect()
}

/// A loopback port free at the moment of asking, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`; panics naming `what` after `limit`.
pub fn wait_port(port: u16, what: &str, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
