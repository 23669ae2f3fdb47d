//! The JSON summary a pass returns: the Lambda response and the CLI's last
//! line of stdout.

use serde::{Deserialize, Serialize};

/// Counts of one pass. In a dry run the counts say what a real pass would
/// have done (`sent` = would send, …) and `claimed` and `deleted` stay 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Claims won in the ledger (new rows, expired claims, reused ids).
    pub claimed: u64,
    /// Messages SQS accepted in this pass.
    pub sent: u64,
    /// Rows found already SENT (a crash before the delete): deleted unsent.
    pub recovered: u64,
    /// Rows deleted from the outbox after being sent or recovered.
    pub deleted: u64,
    /// Rows left for a later pass: another relay's live claim, a transient
    /// failure, a lease too short to start a send.
    pub skipped: u64,
    /// Poison rows moved to the dead-letter table.
    pub quarantined: u64,
    /// True when rows may be left: skipped rows, `max_rows` or the deadline
    /// reached before the table was empty.
    pub remaining: bool,
    /// Wall time of the pass.
    pub elapsed_ms: u64,
    /// True for a dry run, which changes nothing.
    pub dry_run: bool,
    /// Batches in the pass: selects that returned at least one row (select
    /// + claim + send + mark + delete rounds), counted alike in dry runs.
    pub batches: u64,
}

impl Summary {
    /// Adds another batch's counts to this pass.
    pub fn add(&mut self, other: &Summary) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.recovered += other.recovered;
        self.deleted += other.deleted;
        self.skipped += other.skipped;
        self.quarantined += other.quarantined;
        self.batches += other.batches;
    }

    /// Folds in a pass that ran just before this one in the same
    /// invocation (a retry after a rotated secret): counts and time add up.
    pub fn merge_earlier(&mut self, earlier: &Summary) {
        self.add(earlier);
        self.elapsed_ms += earlier.elapsed_ms;
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serialises")
    }
}
