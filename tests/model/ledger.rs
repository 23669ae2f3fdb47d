//! The ledger: one item a row, and the two conditional writes the relay
//! makes on it. Each write is one atomic step, as a DynamoDB conditional
//! write is on its item.

use crate::world::{Owner, Payload, World};
use crate::{LEASE, RowId};

/// The ledger item of a row (the contract's `state`, `owner`,
/// `lease_until_ms`, `payload_sha256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
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
    pub fn hash(&self) -> Payload {
        match *self {
            Item::Claimed { hash, .. } | Item::Sent { hash, .. } => hash,
        }
    }
}

/// What a claim write found (the relay's `Claim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Won,
    AlreadySent,
    TookOverReused,
    HeldByOther,
}

/// What a mark write found (the relay's `Mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Marked,
    Fenced,
}

impl World {
    /// The claim write: `attribute_not_exists(pk) OR (state = CLAIMED AND
    /// lease_until_ms < :now)`, and on failure the old item (ALL_OLD)
    /// decides. The reused-id takeover is conditioned on the old hash; one
    /// atomic step here, as the item cannot change in between but through
    /// another conditional write.
    pub fn write_claim(&mut self, owner: Owner, row: RowId, hash: Payload) -> Claim {
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
    pub fn write_mark(&mut self, owner: Owner, row: RowId) -> Mark {
        match self.ledger.get(&row).copied() {
            Some(Item::Claimed { owner: o, hash, .. }) if o == owner => {
                self.ledger.insert(row, Item::Sent { hash, by: owner });
                Mark::Marked
            }
            _ => Mark::Fenced,
        }
    }
}
