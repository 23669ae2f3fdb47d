//! The system under test: the checker. It sees each generated step's world
//! before and after and checks the invariants; at the end of a case it
//! heals the world (every step of healing checked too) and checks that
//! nothing was lost.

use std::collections::BTreeSet;

use proptest_state_machine::StateMachineTest;

use crate::invariants::{check_healed, check_state, check_step};
use crate::protocol::Protocol;
use crate::relay::Job;
use crate::step::{Outcome, Step};
use crate::world::World;
use crate::{LEASE, ROWS, RelayId, RowId, coverage};

/// The checker: the world before the step, and what it saw happen.
pub struct Checker {
    before: World,
    seen: BTreeSet<&'static str>,
    /// Healing steps are checked but not counted as coverage: what matters
    /// is what the generated interleavings reach.
    healing: bool,
}

impl Checker {
    /// Applies a step of healing and checks it, as a generated one.
    fn apply_checked(&mut self, step: Step) {
        let after = self.before.clone().step(&step);
        self.observe(&step, &after);
    }

    fn observe(&mut self, step: &Step, after: &World) {
        check_step(&self.before, step, after);
        check_state(after);
        if !self.healing
            && let Some(label) = coverage::label(&self.before, step, after)
        {
            self.seen.insert(label);
        }
        self.before = after.clone();
    }

    /// Heals the world: every call in flight returns, the clock moves past
    /// every lease, and then relays run passes, with every call succeeding,
    /// until there is nothing left to do. Every step is checked.
    fn heal(&mut self) {
        let relays = self.before.relays.len();
        for r in 0..relays {
            for &row in &ROWS {
                if let Some(Job::InFlight { .. }) = self.before.job(r, row) {
                    self.apply_checked(Step::Land(r, row));
                }
            }
        }
        self.apply_checked(Step::AdvanceClock(10 * LEASE));
        // Each relay finishes what it holds (stale claims are given up, stale
        // marks fenced, deletes without a connection fail).
        for r in 0..relays {
            for &row in &ROWS {
                self.drive(r, row);
            }
        }
        // Passes until quiescent: with nothing failing, one round is enough;
        // more would mean the protocol is stuck.
        for _round in 0..3 {
            for r in 0..relays {
                for &row in &ROWS {
                    if self.before.selectable(r, row) {
                        self.apply_checked(Step::Claim(r, row));
                        self.drive(r, row);
                    }
                }
            }
            if self.before.table.is_empty() {
                break;
            }
        }
    }

    /// Takes the relay's job for the row through to its end, every call
    /// succeeding.
    fn drive(&mut self, r: RelayId, row: RowId) {
        while let Some(job) = self.before.job(r, row) {
            let step = match job {
                Job::Claimed { .. } => Step::Send(r, row, Outcome::Ok),
                Job::InFlight { .. } => Step::Land(r, row),
                Job::Sent { .. } => Step::Mark(r, row),
                Job::Marked { .. } | Job::Recovered { .. } => Step::Delete(r, row),
            };
            self.apply_checked(step);
        }
    }
}

impl StateMachineTest for Checker {
    type SystemUnderTest = Checker;
    type Reference = Protocol;

    fn init_test(world: &World) -> Checker {
        check_state(world);
        Checker {
            before: world.clone(),
            seen: BTreeSet::new(),
            healing: false,
        }
    }

    fn apply(mut checker: Checker, after: &World, step: Step) -> Checker {
        checker.observe(&step, after);
        checker
    }

    fn teardown(mut checker: Checker, _world: World) {
        checker.healing = true;
        checker.heal();
        check_healed(&checker.before);
        checker.seen.extend(coverage::healed_label(&checker.before));
        coverage::record(checker.seen);
    }
}
