//! Relays as real processes (`outbox-relay drain` and `follow`), and what
//! their exits say: a crash must be a real one, with no cleanup, which
//! only a process of its own gives.

use std::collections::BTreeSet;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::LEASE_SECONDS;
use crate::common::Fixture;

/// A relay's `subcommand` with the fixture's environment, the scenarios'
/// lease and `extra`, its output captured.
fn relay(f: &Fixture, subcommand: &str, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.arg(subcommand)
        .envs(f.env())
        .env("LEASE_SECONDS", LEASE_SECONDS.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn outbox-relay {subcommand}: {e}"))
}

/// Starts `outbox-relay drain` with the fixture's environment plus `extra`.
pub(super) fn spawn(f: &Fixture, extra: &[(&str, String)]) -> Child {
    relay(f, "drain", extra)
}

/// Starts `outbox-relay follow`, polling every 100 ms.
pub(super) fn spawn_follower(f: &Fixture) -> Child {
    relay(f, "follow", &[("POLL_INTERVAL_MS", "100".to_owned())])
}

/// How a relay process ended.
pub(super) struct Exit {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Exit {
    /// Whether the pass failed (Lambda would retry it).
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }

    /// The exit code and the last line of stderr, which says why a pass
    /// failed.
    pub fn why(&self) -> (Option<i32>, String) {
        let last = self.stderr.lines().last().unwrap_or_default();
        (self.code, last.chars().take(200).collect())
    }
}

/// Waits for every child; their exits in the same order.
pub(super) async fn finish(children: Vec<Child>) -> Vec<Exit> {
    let mut out = Vec::new();
    for c in children {
        let o = c.wait_with_output().await.unwrap();
        out.push(Exit {
            code: o.status.code(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    out
}

/// One scheduled pass as production runs it: two relays at once.
pub(super) async fn two_relays(f: &Fixture) -> Vec<Exit> {
    finish(vec![spawn(f, &[]), spawn(f, &[])]).await
}

/// Runs [`two_relays`] up to `rounds` times while the scenario's fault goes
/// on, stopping early once the table is empty; every exit.
pub(super) async fn passes(f: &Fixture, rounds: usize) -> Vec<Exit> {
    let mut exits = Vec::new();
    for _ in 0..rounds {
        exits.extend(two_relays(f).await);
        if f.rows_left().await == 0 {
            break;
        }
    }
    exits
}

/// Ends a follower gracefully (SIGTERM) and waits for it.
pub(super) async fn terminate(follower: Child) -> Exit {
    let pid = follower.id().expect("the follower runs").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    finish(vec![follower]).await.remove(0)
}

/// Rows a relay reported as sent-or-maybe-sent but not marked: a timeout
/// or broken reply on the send, or a mark that failed. These, and only
/// these, may reach a standard queue twice.
pub(super) fn unsure_rows(exits: &[Exit]) -> BTreeSet<String> {
    exits
        .iter()
        .flat_map(|e| e.stderr.lines())
        .filter(|l| {
            l.contains("not sent") || l.contains("sent but not marked") || l.contains("taken over")
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("row="))
                .map(str::to_owned)
        })
        .collect()
}
