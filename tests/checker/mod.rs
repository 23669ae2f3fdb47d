//! A total-queue checker in the manner of Jepsen's: what was inserted
//! against what reached the queue, keyed by `outbox-id`.
//!
//! On a FIFO queue it first applies SQS's deduplication rule, which moto
//! only half keeps: a message whose `MessageDeduplicationId` SQS accepted
//! less than five minutes earlier is accepted again but never delivered.
//! moto forgets an id as soon as its message is deleted, so a consumer that
//! deletes as it goes would see resends real SQS swallows. The checker
//! drops those (counted in [`Verdict::absorbed`]); a resend with another
//! id, or later than the window, still counts as a duplicate.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use crate::common::Received;

/// The verdict over one run.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Inserted rows with no message at all.
    pub lost: BTreeSet<String>,
    /// Messages whose key was never inserted.
    pub unexpected: BTreeSet<String>,
    /// Keys delivered more than once, with their count.
    pub duplicated: BTreeMap<String, usize>,
    /// Messages read.
    pub delivered: usize,
    /// FIFO resends SQS would have accepted without delivering (same
    /// deduplication id within [`DEDUP_WINDOW_MS`] of the first copy).
    pub absorbed: usize,
}

/// SQS FIFO's deduplication interval.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Message ids of the FIFO resends real SQS would not have delivered.
fn absorbed_by_dedup(messages: &[Received]) -> BTreeSet<&str> {
    // Distinct SQS messages per deduplication id (a consumer's redelivery
    // repeats a message id; it is one copy), with when SQS accepted each.
    let mut copies: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for m in messages {
        if let Some(d) = m.dedup_id.as_deref() {
            let sent = m.sent_ms.expect("FIFO messages carry SentTimestamp");
            copies.entry(d).or_default().insert(&m.message_id, sent);
        }
    }
    let mut absorbed = BTreeSet::new();
    for of_one_id in copies.values() {
        let mut by_time: Vec<(u64, &str)> = of_one_id.iter().map(|(id, t)| (*t, *id)).collect();
        by_time.sort();
        let mut window_start = None;
        for (sent, id) in by_time {
            match window_start {
                Some(start) if sent < start + DEDUP_WINDOW_MS => {
                    absorbed.insert(id);
                }
                _ => window_start = Some(sent),
            }
        }
    }
    absorbed
}

impl Verdict {
    /// Compares the inserted keys with the messages read off the queue.
    pub fn check(inserted: &[String], messages: &[Received]) -> Verdict {
        let inserted: BTreeSet<&String> = inserted.iter().collect();
        // A duplicate is a second SQS message for a row. The same message
        // received twice (a consumer's delete or receive that failed) is
        // the consumer's redelivery, not the relay's doing.
        let absorbed = absorbed_by_dedup(messages);
        let mut distinct: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in messages {
            if absorbed.contains(m.message_id.as_str()) {
                continue;
            }
            if distinct.insert((m.outbox_id.as_str(), m.message_id.as_str())) {
                *seen.entry(m.outbox_id.clone()).or_default() += 1;
            }
        }
        Verdict {
            lost: inserted
                .iter()
                .filter(|k| !seen.contains_key(k.as_str()))
                .map(|k| k.to_string())
                .collect(),
            unexpected: seen
                .keys()
                .filter(|k| !inserted.contains(k))
                .cloned()
                .collect(),
            duplicated: seen
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            delivered: messages.len(),
            absorbed: absorbed.len(),
        }
    }

    /// One line for the test log and the README's table.
    pub fn line(&self, name: &str) -> String {
        format!(
            "CHECK {name}: delivered={} lost={} unexpected={} duplicated={} absorbed_by_fifo_dedup={}",
            self.delivered,
            self.lost.len(),
            self.unexpected.len(),
            self.duplicated.len(),
            self.absorbed
        )
    }
}

/// Per FIFO group, whether the first deliveries came in strictly
/// increasing row id order; returns the groups that broke it.
pub fn out_of_order_groups(messages: &[Received]) -> Vec<String> {
    let mut first_seen: BTreeSet<&str> = BTreeSet::new();
    let mut last_first: BTreeMap<&str, i64> = BTreeMap::new();
    let mut broken = BTreeSet::new();
    for m in messages {
        if !first_seen.insert(m.outbox_id.as_str()) {
            continue; // a redelivery: only first deliveries count
        }
        let group = m.group_id.as_deref().unwrap_or_default();
        let id: i64 = m.outbox_id.parse().expect("integer ids in these tests");
        if last_first.insert(group, id).is_some_and(|prev| prev >= id) {
            broken.insert(group.to_owned());
        }
    }
    broken.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &str, message_id: &str, dedup: Option<&str>, sent_ms: u64) -> Received {
        Received {
            body: String::new(),
            outbox_id: key.to_owned(),
            outbox_source: "t".to_owned(),
            message_id: message_id.to_owned(),
            group_id: dedup.map(|_| "g".to_owned()),
            dedup_id: dedup.map(str::to_owned),
            sent_ms: Some(sent_ms),
        }
    }

    #[test]
    fn fifo_resends_inside_the_window_are_absorbed_and_later_ones_are_duplicates() {
        let t = 1_000_000;
        let msgs = [
            msg("1", "a", Some("d1"), t),
            msg("1", "a", Some("d1"), t), // the consumer's redelivery
            msg("1", "b", Some("d1"), t + 10_000),
            msg("2", "c", Some("d2"), t),
            msg("2", "d", Some("d2"), t + DEDUP_WINDOW_MS),
            msg("3", "e", Some("d3"), t),
            msg("3", "f", Some("other"), t + 1),
        ];
        let v = Verdict::check(&["1".into(), "2".into(), "3".into(), "4".into()], &msgs);
        assert_eq!(v.absorbed, 1);
        assert_eq!(v.lost, BTreeSet::from(["4".to_owned()]));
        assert_eq!(
            v.duplicated,
            BTreeMap::from([("2".to_owned(), 2), ("3".to_owned(), 2)])
        );
    }

    #[test]
    fn standard_queues_absorb_nothing() {
        let msgs = [msg("1", "a", None, 1), msg("1", "b", None, 2)];
        let v = Verdict::check(&["1".into()], &msgs);
        assert_eq!(v.absorbed, 0);
        assert_eq!(v.duplicated, BTreeMap::from([("1".to_owned(), 2)]));
    }
}
