//! The invariants: across each step (the ledger, the table, the queue), of
//! every state (one live owner a row, one lock a row), and after healing
//! (nothing lost, every duplicate explained). Each panics with the step and
//! what it broke; proptest then shrinks the sequence.

use crate::ledger::Item;
use crate::relay::Job;
use crate::step::Step;
use crate::world::World;
use crate::{ROWS, RelayId, RowId};

/// Invariants across one step.
pub fn check_step(before: &World, step: &Step, after: &World) {
    check_ledger(before, step, after);
    check_table(before, step, after);
    check_queue(before, step, after);
}

/// The ledger: never two live owners; SENT is final for its hash.
fn check_ledger(before: &World, step: &Step, after: &World) {
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
}

/// The table: a row leaves only once the ledger says SENT with its hash;
/// rows appear only by an insert.
fn check_table(before: &World, step: &Step, after: &World) {
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
}

/// The queue: append-only, and a message is enqueued only by the live
/// owner of its row's claim, for the claimed payload.
fn check_queue(before: &World, step: &Step, after: &World) {
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
pub fn check_state(w: &World) {
    for m in &w.queue {
        assert!(
            w.ledger.contains_key(&m.hash.row),
            "{m:?} is on the queue without a ledger item for its row"
        );
    }
    for &row in &ROWS {
        check_believers(w, row);
        check_locks(w, row);
    }
}

/// At most one relay believes it holds a live claim on a row, and the
/// ledger agrees that it does.
fn check_believers(w: &World, row: RowId) {
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
}

/// One transaction at most locks a row, and only a row in the table.
fn check_locks(w: &World, row: RowId) {
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

/// After healing: nothing lost, and every duplicate has a cause.
pub fn check_healed(w: &World) {
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
