//! The guarantee under faults: relays as real processes, crashed
//! (SIGABRT, no cleanup) at every step boundary, paused past their lease,
//! cut off from the database, and fed faults by the proxy, then healed and
//! drained. Every scenario ends with the checker: lost = 0,
//! unexpected = 0, table empty, every ledger item SENT, and duplicates only
//! where docs/design.md allows them.
//!
//! Sizes scale with `CHAOS_SCALE` (1 in `make test`, 10 in `make chaos`).
//! Needs the binary built with `--features faults`.
//!
//! The shared machinery: [`processes`] (relay processes and what their
//! stderr says), [`consumer`] (the queue's consumer while relays run),
//! [`scenario`] (a scenario's start, heal and closing checks). The
//! scenarios: [`load`], [`crashes`], [`connections`], [`proxy_faults`],
//! [`followers`].

mod consumer;
mod processes;
mod scenario;

mod connections;
mod crashes;
mod followers;
mod load;
mod proxy_faults;

/// The lease every relay of these scenarios takes: short, so a crashed
/// relay's rows come free within a test, long enough that a live relay
/// never loses its rows under load.
const LEASE_SECONDS: u64 = 30;

/// `CHAOS_SCALE`: the factor on every scenario's size.
fn scale() -> usize {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}
