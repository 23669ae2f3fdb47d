//! What one relay knows: its local state. The relay acts on this alone;
//! the world (see `world`) holds the truth it may disagree with.

use std::collections::{BTreeMap, BTreeSet};

use crate::RowId;
use crate::step::Outcome;
use crate::world::Payload;

/// A relay's local state for one row it holds in its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
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
    pub fn hash(&self) -> Payload {
        match *self {
            Job::Claimed { hash, .. }
            | Job::InFlight { hash, .. }
            | Job::Sent { hash, .. }
            | Job::Marked { hash }
            | Job::Recovered { hash } => hash,
        }
    }

    /// The lease this relay believes it holds, while it may still send.
    pub fn believed_lease(&self) -> Option<u64> {
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
pub struct Relay {
    pub epoch: u32,
    pub jobs: BTreeMap<RowId, Job>,
    pub locks: BTreeSet<RowId>,
}
