//! What the runs exercised, summed over all cases, so a model that stopped
//! reaching the interesting states fails loudly instead of passing vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::ledger::Item;
use crate::relay::Job;
use crate::step::{Outcome, Step};
use crate::world::World;

/// Cases that reached each situation, by label.
static COVERAGE: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

/// Every situation a full run (300 cases or more) must reach.
const SITUATIONS: [&str; 11] = [
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
];

/// The situation a step reached, if it is one worth counting.
pub fn label(before: &World, step: &Step, after: &World) -> Option<&'static str> {
    let label = match *step {
        Step::Claim(r, row) => match (before.ledger.get(&row), after.job(r, row)) {
            (_, Some(Job::Recovered { .. })) => "recovered: SENT with the same hash",
            (_, None) => "live claim of another left alone",
            (Some(Item::Sent { .. }), Some(_)) => "reused id taken over",
            (Some(Item::Claimed { .. }), Some(_)) => "expired claim taken over",
            (None, Some(_)) => return None,
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
        Step::Crash(_) if after.window_count() > before.window_count() => {
            "crash in the send→mark window"
        }
        Step::Delete(..) if after.table == before.table => "delete failed: connection lost",
        Step::Insert(_) => "id reused",
        _ => return None,
    };
    Some(label)
}

/// The situation a healed case reached as a whole, if any.
pub fn healed_label(healed: &World) -> Option<&'static str> {
    (healed.queue.len() > healed.inserted.len()).then_some("duplicate delivered")
}

/// Counts one case's situations, each once.
pub fn record(seen: BTreeSet<&'static str>) {
    let mut coverage = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    for label in seen {
        *coverage.entry(label).or_default() += 1;
    }
}

/// Prints what the run reached and, for a full run, asserts it reached
/// every situation.
pub fn assert_reached(cases: u32) {
    let coverage = COVERAGE.lock().unwrap().clone();
    println!("cases exercising each situation (of {cases}): {coverage:#?}");
    if cases < 300 {
        // Too few cases to expect every rare situation (a fenced mark needs
        // a dropped connection, a clock jump and a takeover in one case).
        return;
    }
    for label in SITUATIONS {
        assert!(
            coverage.get(label).copied().unwrap_or(0) > 0,
            "no case exercised {label:?}: the model no longer reaches it"
        );
    }
}
