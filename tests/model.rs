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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

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

/// A row's payload, standing in for its hash: the id, and how many rows
/// used the id before (a reused id has a new payload, so a new hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Payload {
    row: RowId,
    generation: u8,
}

/// A relay's owner token: a restarted relay is a new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    relay: RelayId,
    epoch: u32,
}

/// The ledger item of a row (the contract's `state`, `owner`,
/// `lease_until_ms`, `payload_sha256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Claimed {
        owner: Owner,
        lease_until: u64,
        hash: Payload,
    },
    Sent {
        hash: Payload,
        by: Owner,
    },
}

impl Item {
    fn hash(&self) -> Payload {
        match *self {
            Item::Claimed { hash, .. } | Item::Sent { hash, .. } => hash,
        }
    }
}

/// What a claim write found (the relay's `Claim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    Won,
    AlreadySent,
    TookOverReused,
    HeldByOther,
}

/// What a mark write found (the relay's `Mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Marked,
    Fenced,
}

/// How an SQS send ends: enqueued and known, not enqueued, or enqueued
/// while the relay sees a timeout or a 5xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Ambiguous,
}

/// A relay's local state for one row it holds in its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// Claimed (won, or a reused id taken over): to send.
    Claimed { hash: Payload, lease_until: u64 },
    /// The send call is on its way; it returns by `deadline`.
    InFlight {
        hash: Payload,
        lease_until: u64,
        outcome: Outcome,
        deadline: u64,
    },
    /// SQS accepted the message: to mark SENT.
    Sent { hash: Payload, lease_until: u64 },
    /// Marked SENT: to delete.
    Marked { hash: Payload },
    /// The ledger said SENT with this hash: to delete without sending.
    Recovered { hash: Payload },
}

impl Job {
    fn hash(&self) -> Payload {
        match *self {
            Job::Claimed { hash, .. }
            | Job::InFlight { hash, .. }
            | Job::Sent { hash, .. }
            | Job::Marked { hash }
            | Job::Recovered { hash } => hash,
        }
    }

    /// The lease this relay believes it holds, while it may still send.
    fn believed_lease(&self) -> Option<u64> {
        match *self {
            Job::Claimed { lease_until, .. } | Job::InFlight { lease_until, .. } => {
                Some(lease_until)
            }
            _ => None,
        }
    }
}

/// One relay process: what it holds in its current batch, and the row
/// locks of its database transaction (`FOR UPDATE SKIP LOCKED`).
#[derive(Clone, Debug, Default)]
struct Relay {
    epoch: u32,
    jobs: BTreeMap<RowId, Job>,
    locks: BTreeSet<RowId>,
}

/// A message on the queue, with who sent it and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Enqueued {
    hash: Payload,
    sender: Owner,
    at: u64,
}

/// How a message went out without its sender's mark SENT: the send → mark
/// window of the crash table, the only place a duplicate may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// The send's outcome was unknown to the relay (it was enqueued).
    Ambiguous,
    /// The relay crashed after the send, before the mark.
    CrashAfterSend,
    /// The mark write failed (throttled): the row is left for a resend.
    MarkFailed,
    /// The relay stalled past its lease between send and mark; the fence
    /// refused its mark because the row was taken over.
    MarkFenced,
}

/// The whole system: the truth, and each relay's local view.
#[derive(Clone, Debug)]
struct World {
    now: u64,
    table: BTreeMap<RowId, Payload>,
    inserted: Vec<Payload>,
    ledger: BTreeMap<RowId, Item>,
    queue: Vec<Enqueued>,
    relays: Vec<Relay>,
    windows: BTreeMap<Payload, Vec<Window>>,
}

/// One step of one relay, or of the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
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
    /// invariants below (never two live owners, SENT final) prove that the
    /// unfenced write then replaces nothing but our own claim.
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
    fn new(relays: usize) -> World {
        let rows: Vec<Payload> = ROWS
            .iter()
            .map(|&row| Payload { row, generation: 0 })
            .collect();
        World {
            now: 0,
            table: rows.iter().map(|p| (p.row, *p)).collect(),
            inserted: rows,
            ledger: BTreeMap::new(),
            queue: Vec::new(),
            relays: vec![Relay::default(); relays],
            windows: BTreeMap::new(),
        }
    }

    fn owner(&self, r: RelayId) -> Owner {
        Owner {
            relay: r,
            epoch: self.relays[r].epoch,
        }
    }

    fn job(&self, r: RelayId, row: RowId) -> Option<Job> {
        self.relays
            .get(r)
            .and_then(|relay| relay.jobs.get(&row).copied())
    }

    /// The relay's select would return the row: present, not locked by any
    /// transaction (SKIP LOCKED), not already in this relay's batch.
    fn selectable(&self, r: RelayId, row: RowId) -> bool {
        r < self.relays.len()
            && self.table.contains_key(&row)
            && self.relays.iter().all(|x| !x.locks.contains(&row))
            && self.job(r, row).is_none()
    }

    /// Whether the protocol lets this step happen now.
    fn enabled(&self, step: &Step) -> bool {
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
    fn steps(&self) -> Vec<Step> {
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

    /// The claim write: `attribute_not_exists(pk) OR (state = CLAIMED AND
    /// lease_until_ms < :now)`, and on failure the old item (ALL_OLD)
    /// decides. The reused-id takeover is conditioned on the old hash; one
    /// atomic step here, as the item cannot change in between but through
    /// another conditional write.
    fn claim(&mut self, owner: Owner, row: RowId, hash: Payload) -> Claim {
        let mine = Item::Claimed {
            owner,
            lease_until: self.now + LEASE,
            hash,
        };
        match self.ledger.get(&row).copied() {
            None => {
                self.ledger.insert(row, mine);
                Claim::Won
            }
            Some(Item::Claimed { lease_until, .. }) if lease_until < self.now => {
                self.ledger.insert(row, mine);
                Claim::Won
            }
            Some(Item::Sent { hash: old, .. }) if old == hash => Claim::AlreadySent,
            Some(Item::Sent { .. }) => {
                self.ledger.insert(row, mine);
                Claim::TookOverReused
            }
            Some(Item::Claimed { .. }) => Claim::HeldByOther,
        }
    }

    /// The mark write: `owner = :me AND state = CLAIMED`.
    fn mark(&mut self, owner: Owner, row: RowId) -> Mark {
        match self.ledger.get(&row).copied() {
            Some(Item::Claimed { owner: o, hash, .. }) if o == owner => {
                self.ledger.insert(row, Item::Sent { hash, by: owner });
                Mark::Marked
            }
            _ => Mark::Fenced,
        }
    }

    fn enqueue(&mut self, r: RelayId, hash: Payload) {
        let sender = self.owner(r);
        self.queue.push(Enqueued {
            hash,
            sender,
            at: self.now,
        });
    }

    /// The relay is done with the row in this batch (its transaction
    /// commits without deleting it). `window` says the message went out
    /// and the relay never marked it.
    fn end_job(&mut self, r: RelayId, row: RowId, window: Option<Window>) {
        if let Some(job) = self.relays[r].jobs.remove(&row)
            && let Some(w) = window
        {
            self.windows.entry(job.hash()).or_default().push(w);
        }
        self.relays[r].locks.remove(&row);
    }

    /// Applies one step. Steps the protocol does not allow now change
    /// nothing (shrinking may offer them).
    fn step(mut self, step: &Step) -> World {
        if !self.enabled(step) {
            return self;
        }
        match *step {
            Step::Insert(row) => {
                let p = Payload { row, generation: 1 };
                self.table.insert(row, p);
                self.inserted.push(p);
            }
            Step::Claim(r, row) => {
                self.relays[r].locks.insert(row);
                let hash = self.table[&row];
                let lease_until = self.now + LEASE;
                match self.claim(self.owner(r), row, hash) {
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
            Step::Throttle(r, row) => {
                if let Some(Job::Sent { .. }) = self.job(r, row) {
                    // Sent but not marked: resent after the lease.
                    self.end_job(r, row, Some(Window::MarkFailed));
                }
                // A throttled claim: the row is skipped, nothing changed.
            }
            Step::LostReply(r, row) => {
                let owner = self.owner(r);
                if let Some(Job::Sent { .. }) = self.job(r, row) {
                    let window = match self.mark(owner, row) {
                        Mark::Marked => None,
                        Mark::Fenced => Some(Window::MarkFenced),
                    };
                    self.end_job(r, row, window);
                } else {
                    // The claim was written; the relay saw an error and
                    // skips the row, which waits for the lease to end.
                    let hash = self.table[&row];
                    self.claim(owner, row, hash);
                }
            }
            Step::Send(r, row, outcome) => {
                let Some(Job::Claimed { hash, lease_until }) = self.job(r, row) else {
                    unreachable!("enabled")
                };
                if lease_until >= self.now + SEND_TIMEOUT + MARGIN {
                    self.relays[r].jobs.insert(
                        row,
                        Job::InFlight {
                            hash,
                            lease_until,
                            outcome,
                            deadline: self.now + SEND_TIMEOUT,
                        },
                    );
                } else {
                    // "lease too short to start a send": wait for it to end.
                    self.end_job(r, row, None);
                }
            }
            Step::Land(r, row) => {
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
            Step::BatchMark(r, row) => {
                let Some(Job::Sent { hash, lease_until }) = self.job(r, row) else {
                    unreachable!("enabled")
                };
                if lease_until >= self.now + SEND_TIMEOUT + MARGIN {
                    // BatchWriteItem takes no condition: the item is replaced.
                    let owner = self.owner(r);
                    self.ledger.insert(row, Item::Sent { hash, by: owner });
                    self.relays[r].jobs.insert(row, Job::Marked { hash });
                } else {
                    return self.step(&Step::Mark(r, row));
                }
            }
            Step::Mark(r, row) => {
                let hash = self.job(r, row).expect("enabled").hash();
                match self.mark(self.owner(r), row) {
                    Mark::Marked => {
                        self.relays[r].jobs.insert(row, Job::Marked { hash });
                    }
                    Mark::Fenced => self.end_job(r, row, Some(Window::MarkFenced)),
                }
            }
            Step::Delete(r, row) => {
                // The delete runs in the relay's transaction: only while it
                // still holds the row's lock; after a dropped connection it
                // fails and the row stays for a later pass.
                if self.relays[r].locks.contains(&row) {
                    self.table.remove(&row);
                }
                self.end_job(r, row, None);
            }
            Step::DropConnection(r) => self.relays[r].locks.clear(),
            Step::Crash(r) => {
                let jobs = std::mem::take(&mut self.relays[r].jobs);
                for (_, job) in jobs {
                    let window = match job {
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
                    if let Some(hash) = window {
                        self.windows
                            .entry(hash)
                            .or_default()
                            .push(Window::CrashAfterSend);
                    }
                }
                let relay = &mut self.relays[r];
                relay.locks.clear();
                relay.epoch += 1;
            }
            Step::AdvanceClock(ms) => {
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
        self
    }
}

/// The reference state machine: the model itself.
struct Protocol;

impl ReferenceStateMachine for Protocol {
    type State = World;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<World> {
        (2usize..=3).prop_map(World::new).boxed()
    }

    fn transitions(state: &World) -> BoxedStrategy<Step> {
        // Progress outweighs faults, or rows would rarely get through all
        // five steps (and ids would rarely be reused) within a sequence.
        let weighted: Vec<(u32, BoxedStrategy<Step>)> = state
            .steps()
            .into_iter()
            .map(|step| {
                let weight = match step {
                    Step::Claim(..)
                    | Step::Send(_, _, Outcome::Ok)
                    | Step::Land(..)
                    | Step::Mark(..)
                    | Step::BatchMark(..)
                    | Step::Delete(..) => 10,
                    Step::Insert(_) => 5,
                    Step::AdvanceClock(_) => 3,
                    Step::DropConnection(_) => 3,
                    Step::Send(..) => 2,
                    Step::Throttle(..) | Step::LostReply(..) | Step::Crash(_) => 1,
                };
                (weight, Just(step).boxed())
            })
            .collect();
        Union::new_weighted(weighted).boxed()
    }

    fn apply(state: World, step: &Step) -> World {
        state.step(step)
    }

    fn preconditions(state: &World, step: &Step) -> bool {
        state.enabled(step)
    }
}

/// What the runs exercised, summed over all cases, so a model that stopped
/// reaching the interesting states fails loudly instead of passing vacuously.
static COVERAGE: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

/// The checker: the world before the step, and what it saw happen.
struct Checker {
    before: World,
    seen: BTreeSet<&'static str>,
    /// Healing steps are checked but not counted as coverage: what matters
    /// is what the generated interleavings reach.
    healing: bool,
}

impl Checker {
    /// Applies a step (healing uses this too) and checks it.
    fn apply(&mut self, step: Step) -> World {
        let after = self.before.clone().step(&step);
        self.observe(&step, &after);
        after
    }

    fn observe(&mut self, step: &Step, after: &World) {
        check_step(&self.before, step, after);
        check_state(after);
        if !self.healing {
            self.note(step, after);
        }
        self.before = after.clone();
    }

    fn note(&mut self, step: &Step, after: &World) {
        let before = &self.before;
        let label = match *step {
            Step::Claim(r, row) => match (before.ledger.get(&row), after.job(r, row)) {
                (_, Some(Job::Recovered { .. })) => "recovered: SENT with the same hash",
                (_, None) => "live claim of another left alone",
                (Some(Item::Sent { .. }), Some(_)) => "reused id taken over",
                (Some(Item::Claimed { .. }), Some(_)) => "expired claim taken over",
                (None, Some(_)) => return,
            },
            Step::Send(r, row, _) if after.job(r, row).is_none() => "send refused: lease too short",
            Step::Mark(r, row) if after.job(r, row).is_none() => "mark fenced",
            Step::Land(r, row)
                if matches!(
                    before.job(r, row),
                    Some(Job::InFlight {
                        outcome: Outcome::Ambiguous,
                        ..
                    })
                ) =>
            {
                "ambiguous send"
            }
            Step::Crash(_) if window_count(after) > window_count(before) => {
                "crash in the send→mark window"
            }
            Step::Delete(..) if after.table == before.table => "delete failed: connection lost",
            Step::Insert(_) => "id reused",
            _ => return,
        };
        self.seen.insert(label);
    }
}

fn window_count(w: &World) -> usize {
    w.windows.values().map(Vec::len).sum()
}

/// Invariants across one step.
fn check_step(before: &World, step: &Step, after: &World) {
    // The ledger: never two live owners; SENT is final for its hash.
    for (row, old) in &before.ledger {
        let new = after
            .ledger
            .get(row)
            .unwrap_or_else(|| panic!("{step:?}: the ledger item of row {row} vanished"));
        if new == old {
            continue;
        }
        match *old {
            Item::Claimed {
                owner, lease_until, ..
            } => {
                let owner_marked = matches!(*new, Item::Sent { by, .. } if by == owner);
                assert!(
                    owner_marked || lease_until < after.now,
                    "{step:?}: row {row}'s live claim {old:?} was replaced by {new:?} at {}: \
                     two live owners",
                    after.now
                );
            }
            Item::Sent { hash, .. } => assert!(
                new.hash() != hash,
                "{step:?}: row {row} went from {old:?} back to {new:?}: SENT must be final \
                 for its hash"
            ),
        }
    }
    // The table: a row leaves only once the ledger says SENT with its hash;
    // rows appear only by an insert.
    for (row, payload) in &before.table {
        if after.table.get(row) != Some(payload) {
            let item = after.ledger.get(row);
            assert!(
                matches!(item, Some(Item::Sent { hash, .. }) if hash == payload),
                "{step:?}: row {payload:?} was deleted while its ledger item is {item:?}"
            );
        }
    }
    for (row, payload) in &after.table {
        assert!(
            before.table.get(row) == Some(payload) || matches!(step, Step::Insert(_)),
            "{step:?}: row {payload:?} appeared"
        );
    }
    // The queue: append-only, and a message is enqueued only by the live
    // owner of its row's claim, for the claimed payload.
    assert!(
        after.queue.starts_with(&before.queue),
        "{step:?}: the queue lost messages"
    );
    for m in &after.queue[before.queue.len()..] {
        let item = after.ledger.get(&m.hash.row);
        assert!(
            matches!(item, Some(Item::Claimed { owner, lease_until, hash })
                if *owner == m.sender && *hash == m.hash && *lease_until >= m.at),
            "{step:?}: {m:?} was enqueued while the ledger item is {item:?}: sent without \
             a live claim"
        );
    }
}

/// Invariants of any state.
fn check_state(w: &World) {
    for m in &w.queue {
        assert!(
            w.ledger.contains_key(&m.hash.row),
            "{m:?} is on the queue without a ledger item for its row"
        );
    }
    for &row in &ROWS {
        // At most one relay believes it holds a live claim on a row, and
        // the ledger agrees that it does.
        let believers: Vec<(RelayId, Job)> = (0..w.relays.len())
            .filter_map(|r| w.job(r, row).map(|j| (r, j)))
            .filter(|(_, j)| j.believed_lease().is_some_and(|l| l >= w.now))
            .collect();
        assert!(
            believers.len() <= 1,
            "row {row}: relays {believers:?} all believe they hold a live claim"
        );
        for (r, job) in believers {
            let item = w.ledger.get(&row);
            assert!(
                matches!(item, Some(Item::Claimed { owner, hash, .. })
                    if *owner == w.owner(r) && *hash == job.hash()),
                "row {row}: relay {r} believes it holds {job:?} but the ledger says {item:?}"
            );
        }
        let lockers = w.relays.iter().filter(|x| x.locks.contains(&row)).count();
        assert!(
            lockers <= 1,
            "row {row} is locked by {lockers} transactions"
        );
        assert!(
            lockers == 0 || w.table.contains_key(&row),
            "row {row} is locked but not in the table"
        );
    }
}

/// Heals the world: every call in flight returns, the clock moves past
/// every lease, and then relays run passes, with every call succeeding,
/// until there is nothing left to do. Every step is checked.
fn heal(checker: &mut Checker) {
    let relays = checker.before.relays.len();
    let mut world = checker.before.clone();
    for r in 0..relays {
        for &row in &ROWS {
            if let Some(Job::InFlight { .. }) = world.job(r, row) {
                world = checker.apply(Step::Land(r, row));
            }
        }
    }
    world = checker.apply(Step::AdvanceClock(10 * LEASE));
    let drive = |checker: &mut Checker, mut world: World, r: RelayId, row: RowId| {
        while let Some(job) = world.job(r, row) {
            let step = match job {
                Job::Claimed { .. } => Step::Send(r, row, Outcome::Ok),
                Job::InFlight { .. } => Step::Land(r, row),
                Job::Sent { .. } => Step::Mark(r, row),
                Job::Marked { .. } | Job::Recovered { .. } => Step::Delete(r, row),
            };
            world = checker.apply(step);
        }
        world
    };
    // Each relay finishes what it holds (stale claims are given up, stale
    // marks fenced, deletes without a connection fail).
    for r in 0..relays {
        for &row in &ROWS {
            world = drive(checker, world, r, row);
        }
    }
    // Passes until quiescent: with nothing failing, one round is enough;
    // more would mean the protocol is stuck.
    for _round in 0..3 {
        for r in 0..relays {
            for &row in &ROWS {
                if world.selectable(r, row) {
                    world = checker.apply(Step::Claim(r, row));
                    world = drive(checker, world, r, row);
                }
            }
        }
        if world.table.is_empty() {
            break;
        }
    }
}

/// After healing: nothing lost, and every duplicate has a cause.
fn check_healed(w: &World) {
    assert!(
        w.table.is_empty(),
        "rows {:?} are still in the table after healing",
        w.table
    );
    for p in &w.inserted {
        let copies = w.queue.iter().filter(|m| m.hash == *p).count();
        assert!(
            copies >= 1,
            "row {p:?} was lost: deleted, never on the queue"
        );
        let windows = w.windows.get(p).map_or(&[][..], Vec::as_slice);
        assert!(
            copies <= 1 + windows.len(),
            "row {p:?} is on the queue {copies} times, but only {} send→mark windows \
             ({windows:?}) explain a duplicate",
            windows.len()
        );
    }
    for (row, item) in &w.ledger {
        let last = w.inserted.iter().filter(|p| p.row == *row).max();
        assert!(
            matches!(item, Item::Sent { hash, .. } if Some(hash) == last),
            "row {row}: the ledger item is {item:?} after healing; the last payload was {last:?}"
        );
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
        heal(&mut checker);
        check_healed(&checker.before);
        if checker.before.queue.len() > checker.before.inserted.len() {
            checker.seen.insert("duplicate delivered");
        }
        let mut coverage = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
        for label in checker.seen {
            *coverage.entry(label).or_default() += 1;
        }
    }
}

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

    let coverage = COVERAGE.lock().unwrap().clone();
    println!("cases exercising each situation (of {cases}): {coverage:#?}");
    if cases < 300 {
        // Too few cases to expect every rare situation (a fenced mark needs
        // a dropped connection, a clock jump and a takeover in one case).
        return;
    }
    for label in [
        "recovered: SENT with the same hash",
        "live claim of another left alone",
        "reused id taken over",
        "expired claim taken over",
        "send refused: lease too short",
        "mark fenced",
        "ambiguous send",
        "crash in the send→mark window",
        "delete failed: connection lost",
        "id reused",
        "duplicate delivered",
    ] {
        assert!(
            coverage.get(label).copied().unwrap_or(0) > 0,
            "no case exercised {label:?}: the model no longer reaches it"
        );
    }
}
