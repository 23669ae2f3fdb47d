//! The whole system: the truth (the outbox table, the ledger, the queue and
//! the clock), each relay's local view, and the record of every send→mark
//! window a duplicate may come from.

use std::collections::BTreeMap;

use crate::ledger::Item;
use crate::relay::{Job, Relay};
use crate::{ROWS, RelayId, RowId};

/// A row's payload, standing in for its hash: the id, and how many rows
/// used the id before (a reused id has a new payload, so a new hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Payload {
    pub row: RowId,
    pub generation: u8,
}

/// A relay's owner token: a restarted relay is a new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub relay: RelayId,
    pub epoch: u32,
}

/// A message on the queue, with who sent it and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub hash: Payload,
    pub sender: Owner,
    pub at: u64,
}

/// How a message went out without its sender's mark SENT: the send → mark
/// window of the crash table, the only place a duplicate may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
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
pub struct World {
    pub now: u64,
    pub table: BTreeMap<RowId, Payload>,
    pub inserted: Vec<Payload>,
    pub ledger: BTreeMap<RowId, Item>,
    pub queue: Vec<Enqueued>,
    pub relays: Vec<Relay>,
    pub windows: BTreeMap<Payload, Vec<Window>>,
}

impl World {
    pub fn new(relays: usize) -> World {
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

    pub fn owner(&self, r: RelayId) -> Owner {
        Owner {
            relay: r,
            epoch: self.relays[r].epoch,
        }
    }

    pub fn job(&self, r: RelayId, row: RowId) -> Option<Job> {
        self.relays
            .get(r)
            .and_then(|relay| relay.jobs.get(&row).copied())
    }

    /// The relay's select would return the row: present, not locked by any
    /// transaction (SKIP LOCKED), not already in this relay's batch.
    pub fn selectable(&self, r: RelayId, row: RowId) -> bool {
        r < self.relays.len()
            && self.table.contains_key(&row)
            && self.relays.iter().all(|x| !x.locks.contains(&row))
            && self.job(r, row).is_none()
    }

    /// How many send→mark windows the world has recorded, over all payloads.
    pub fn window_count(&self) -> usize {
        self.windows.values().map(Vec::len).sum()
    }

    /// Records a send→mark window of a payload: a duplicate it may explain.
    pub fn record_window(&mut self, hash: Payload, window: Window) {
        self.windows.entry(hash).or_default().push(window);
    }

    pub fn enqueue(&mut self, r: RelayId, hash: Payload) {
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
    pub fn end_job(&mut self, r: RelayId, row: RowId, window: Option<Window>) {
        if let Some(job) = self.relays[r].jobs.remove(&row)
            && let Some(w) = window
        {
            self.record_window(job.hash(), w);
        }
        self.relays[r].locks.remove(&row);
    }
}
