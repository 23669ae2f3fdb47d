//! The steps: one call of one relay, or one event of the environment, and
//! which of them the protocol allows in a given world. What each step does
//! is in `transitions`.

use crate::relay::Job;
use crate::world::World;
use crate::{CLOCK_STEPS, ROWS, RelayId, RowId};

/// How an SQS send ends: enqueued and known, not enqueued, or enqueued
/// while the relay sees a timeout or a 5xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Ambiguous,
}

/// One step of one relay, or of the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The id is used again, with a new payload (a sequence reset).
    Insert(RowId),
    /// Select the row (locking it) and claim it in the ledger.
    Claim(RelayId, RowId),
    /// Start the SQS send of a claimed row, if the lease allows.
    Send(RelayId, RowId, Outcome),
    /// The send call returns.
    Land(RelayId, RowId),
    /// Mark SENT, fenced on the owner.
    Mark(RelayId, RowId),
    /// Mark SENT in a `BatchWriteItem`, unfenced, as `relay.rs` does while
    /// the lease surely outlives the write; otherwise the fenced mark. The
    /// invariants (`invariants::check_ledger`: never two live owners, SENT
    /// final) prove that the unfenced write then replaces nothing but our
    /// own claim.
    BatchMark(RelayId, RowId),
    /// Delete the row (commit) after a mark or a recovery.
    Delete(RelayId, RowId),
    /// The relay's next ledger write for the row (claim or mark) is
    /// throttled: nothing written, the relay sees an error.
    Throttle(RelayId, RowId),
    /// The relay's next ledger write is applied but its reply is lost.
    LostReply(RelayId, RowId),
    /// The database connection is terminated: the relay's row locks go,
    /// and its delete will fail, but it does not know yet.
    DropConnection(RelayId),
    /// The relay process dies: all its local state is gone.
    Crash(RelayId),
    /// Time passes (but never past a send call's timeout).
    AdvanceClock(u64),
}

impl World {
    /// Whether the protocol lets this step happen now.
    pub fn enabled(&self, step: &Step) -> bool {
        let job = |r, row| self.job(r, row);
        match *step {
            Step::Insert(row) => {
                !self.table.contains_key(&row)
                    && !self
                        .inserted
                        .iter()
                        .any(|p| p.row == row && p.generation > 0)
            }
            Step::Claim(r, row) => self.selectable(r, row),
            Step::Throttle(r, row) | Step::LostReply(r, row) => {
                self.selectable(r, row) || matches!(job(r, row), Some(Job::Sent { .. }))
            }
            Step::Send(r, row, _) => matches!(job(r, row), Some(Job::Claimed { .. })),
            Step::Land(r, row) => matches!(job(r, row), Some(Job::InFlight { .. })),
            Step::Mark(r, row) | Step::BatchMark(r, row) => {
                matches!(job(r, row), Some(Job::Sent { .. }))
            }
            Step::Delete(r, row) => {
                matches!(
                    job(r, row),
                    Some(Job::Marked { .. } | Job::Recovered { .. })
                )
            }
            Step::DropConnection(r) => self.relays.get(r).is_some_and(|x| !x.locks.is_empty()),
            Step::Crash(r) => self.relays.get(r).is_some_and(|x| !x.jobs.is_empty()),
            Step::AdvanceClock(_) => true,
        }
    }

    /// Every step the protocol allows now.
    pub fn steps(&self) -> Vec<Step> {
        let mut all = Vec::new();
        for &row in &ROWS {
            all.push(Step::Insert(row));
            for r in 0..self.relays.len() {
                all.extend([
                    Step::Claim(r, row),
                    Step::Send(r, row, Outcome::Ok),
                    Step::Send(r, row, Outcome::Fail),
                    Step::Send(r, row, Outcome::Ambiguous),
                    Step::Land(r, row),
                    Step::Mark(r, row),
                    Step::BatchMark(r, row),
                    Step::Delete(r, row),
                    Step::Throttle(r, row),
                    Step::LostReply(r, row),
                ]);
            }
        }
        for r in 0..self.relays.len() {
            all.extend([Step::DropConnection(r), Step::Crash(r)]);
        }
        all.extend(CLOCK_STEPS.map(Step::AdvanceClock));
        all.retain(|s| self.enabled(s));
        all
    }
}
