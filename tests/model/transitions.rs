//! What each step does to the world: `World::step` dispatches to one
//! function a step. Each function may assume its step is enabled (see
//! `step`): the dispatcher has checked.

use crate::ledger::{Claim, Item, Mark};
use crate::relay::Job;
use crate::step::{Outcome, Step};
use crate::world::{Payload, Window, World};
use crate::{LEASE, MARGIN, RelayId, RowId, SEND_TIMEOUT};

impl World {
    /// Applies one step. Steps the protocol does not allow now change
    /// nothing (shrinking may offer them).
    pub fn step(mut self, step: &Step) -> World {
        if !self.enabled(step) {
            return self;
        }
        match *step {
            Step::Insert(row) => self.insert(row),
            Step::Claim(r, row) => self.select_and_claim(r, row),
            Step::Throttle(r, row) => self.throttle(r, row),
            Step::LostReply(r, row) => self.lose_reply(r, row),
            Step::Send(r, row, outcome) => self.start_send(r, row, outcome),
            Step::Land(r, row) => self.land(r, row),
            Step::BatchMark(r, row) => self.batch_mark(r, row),
            Step::Mark(r, row) => self.mark(r, row),
            Step::Delete(r, row) => self.delete(r, row),
            Step::DropConnection(r) => self.relays[r].locks.clear(),
            Step::Crash(r) => self.crash(r),
            Step::AdvanceClock(ms) => self.advance_clock(ms),
        }
        self
    }

    /// Whether a lease surely outlives a call started now: the send's
    /// timeout and the margin are left before it ends.
    fn outlives_a_call(&self, lease_until: u64) -> bool {
        lease_until >= self.now + SEND_TIMEOUT + MARGIN
    }

    fn insert(&mut self, row: RowId) {
        let p = Payload { row, generation: 1 };
        self.table.insert(row, p);
        self.inserted.push(p);
    }

    fn select_and_claim(&mut self, r: RelayId, row: RowId) {
        self.relays[r].locks.insert(row);
        let hash = self.table[&row];
        let lease_until = self.now + LEASE;
        match self.write_claim(self.owner(r), row, hash) {
            Claim::Won | Claim::TookOverReused => {
                self.relays[r]
                    .jobs
                    .insert(row, Job::Claimed { hash, lease_until });
            }
            Claim::AlreadySent => {
                self.relays[r].jobs.insert(row, Job::Recovered { hash });
            }
            Claim::HeldByOther => self.end_job(r, row, None),
        }
    }

    fn throttle(&mut self, r: RelayId, row: RowId) {
        if let Some(Job::Sent { .. }) = self.job(r, row) {
            // Sent but not marked: resent after the lease.
            self.end_job(r, row, Some(Window::MarkFailed));
        }
        // A throttled claim: the row is skipped, nothing changed.
    }

    fn lose_reply(&mut self, r: RelayId, row: RowId) {
        let owner = self.owner(r);
        if let Some(Job::Sent { .. }) = self.job(r, row) {
            let window = match self.write_mark(owner, row) {
                Mark::Marked => None,
                Mark::Fenced => Some(Window::MarkFenced),
            };
            self.end_job(r, row, window);
        } else {
            // The claim was written; the relay saw an error and
            // skips the row, which waits for the lease to end.
            let hash = self.table[&row];
            self.write_claim(owner, row, hash);
        }
    }

    fn start_send(&mut self, r: RelayId, row: RowId, outcome: Outcome) {
        let Some(Job::Claimed { hash, lease_until }) = self.job(r, row) else {
            unreachable!("enabled")
        };
        if self.outlives_a_call(lease_until) {
            let deadline = self.now + SEND_TIMEOUT;
            let job = Job::InFlight {
                hash,
                lease_until,
                outcome,
                deadline,
            };
            self.relays[r].jobs.insert(row, job);
        } else {
            // "lease too short to start a send": wait for it to end.
            self.end_job(r, row, None);
        }
    }

    fn land(&mut self, r: RelayId, row: RowId) {
        let Some(Job::InFlight {
            hash,
            outcome,
            lease_until,
            ..
        }) = self.job(r, row)
        else {
            unreachable!("enabled")
        };
        match outcome {
            Outcome::Ok => {
                self.enqueue(r, hash);
                self.relays[r]
                    .jobs
                    .insert(row, Job::Sent { hash, lease_until });
            }
            Outcome::Fail => self.end_job(r, row, None),
            Outcome::Ambiguous => {
                self.enqueue(r, hash);
                self.end_job(r, row, Some(Window::Ambiguous));
            }
        }
    }

    fn batch_mark(&mut self, r: RelayId, row: RowId) {
        let Some(Job::Sent { hash, lease_until }) = self.job(r, row) else {
            unreachable!("enabled")
        };
        if self.outlives_a_call(lease_until) {
            // BatchWriteItem takes no condition: the item is replaced.
            let owner = self.owner(r);
            self.ledger.insert(row, Item::Sent { hash, by: owner });
            self.relays[r].jobs.insert(row, Job::Marked { hash });
        } else {
            // A Mark is enabled wherever a BatchMark is.
            self.mark(r, row);
        }
    }

    fn mark(&mut self, r: RelayId, row: RowId) {
        let hash = self.job(r, row).expect("enabled").hash();
        match self.write_mark(self.owner(r), row) {
            Mark::Marked => {
                self.relays[r].jobs.insert(row, Job::Marked { hash });
            }
            Mark::Fenced => self.end_job(r, row, Some(Window::MarkFenced)),
        }
    }

    fn delete(&mut self, r: RelayId, row: RowId) {
        // The delete runs in the relay's transaction: only while it
        // still holds the row's lock; after a dropped connection it
        // fails and the row stays for a later pass.
        if self.relays[r].locks.contains(&row) {
            self.table.remove(&row);
        }
        self.end_job(r, row, None);
    }

    fn crash(&mut self, r: RelayId) {
        let jobs = std::mem::take(&mut self.relays[r].jobs);
        for (_, job) in jobs {
            let sent = match job {
                // A request already on the wire still reaches SQS.
                Job::InFlight {
                    hash,
                    outcome: Outcome::Ok | Outcome::Ambiguous,
                    ..
                } => {
                    self.enqueue(r, hash);
                    Some(hash)
                }
                Job::Sent { hash, .. } => Some(hash),
                _ => None,
            };
            if let Some(hash) = sent {
                self.record_window(hash, Window::CrashAfterSend);
            }
        }
        let relay = &mut self.relays[r];
        relay.locks.clear();
        relay.epoch += 1;
    }

    fn advance_clock(&mut self, ms: u64) {
        // A call in flight returns by its timeout: time waits for it.
        let deadline = self
            .relays
            .iter()
            .flat_map(|x| x.jobs.values())
            .filter_map(|j| match j {
                Job::InFlight { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min();
        let to = deadline.map_or(self.now + ms, |d| d.min(self.now + ms));
        self.now = self.now.max(to);
    }
}
