//! A model of the relay protocol (docs/design.md, "the relay protocol" and its
//! crash table), checked by a state-machine property test: 2–3 relays
//! interleave their steps on a few rows, with crashes, failed, ambiguous and
//! throttled calls, lost replies, dropped database connections and clock
//! jumps, and the invariants hold after every step; after healing, every
//! row inserted went out and left the table.
//!
//! The model is pure Rust, no AWS and no database. One step is one call of
//! the relay (a ledger write, an SQS send, a row delete), atomic, as a
//! DynamoDB conditional write is on its item. What a relay knows is its own
//! local state (its claims, their lease deadlines, what it sent); the world
//! holds the truth: the outbox table, the ledger, the queue and the clock.
//!
//! In `proptest-state-machine` terms, the reference state machine *is* the
//! model: it generates only steps a relay could take in the current state
//! (its local state decides: it sends only rows it claimed, deletes only
//! rows it marked or recovered) and applies them. The "system under test"
//! is the checker: it sees each step's world before and after, asserts the
//! invariants, and at the end heals the world and checks that nothing was
//! lost and every duplicate has a cause docs/design.md allows.
//!
//! The modules, in the order a step flows through them:
//! - [`world`]: the truth (table, queue, clock, the send→mark windows) and
//!   [`ledger`]: the ledger items and their conditional writes;
//! - [`relay`]: what one relay holds locally;
//! - [`step`]: the steps, and which the protocol allows now;
//! - [`transitions`]: what each step does to the world;
//! - [`protocol`]: the reference state machine that generates the steps;
//! - [`checker`]: the system under test, which checks every step and heals;
//! - [`invariants`]: the checks themselves;
//! - [`coverage`]: which situations the cases reached.

mod checker;
mod coverage;
mod invariants;
mod ledger;
mod protocol;
mod relay;
mod step;
mod transitions;
mod world;

use proptest::test_runner::{Config, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use crate::checker::Checker;
use crate::protocol::Protocol;

/// Claim lease, in model milliseconds.
const LEASE: u64 = 100;
/// Longest an SQS send can take (the SDK's operation timeout).
const SEND_TIMEOUT: u64 = 20;
/// Lease a send must have left beyond its timeout before it may start.
const MARGIN: u64 = 10;
/// Clock jumps the generator picks from: within a send, within a lease,
/// past a lease.
const CLOCK_STEPS: [u64; 4] = [5, 25, 60, 150];
/// Row ids of the outbox table.
const ROWS: [RowId; 3] = [1, 2, 3];

type RelayId = usize;
type RowId = u8;

#[test]
fn the_protocol_never_loses_a_row_under_any_interleaving() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let config = Config {
        cases,
        // The failing sequence is printed; no regression file in the tree.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &Protocol::sequential_strategy(1..100),
        |(world, steps, seen)| {
            Checker::test_sequential(config.clone(), world, steps, seen);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    coverage::assert_reached(cases);
}
