//! A total-queue checker in the manner of Jepsen's: what was inserted
//! against what reached the queue, keyed by `outbox-id`.
//!
//! What counts is what the consumer received: on a FIFO queue, SQS's own
//! deduplication (LocalStack keeps it as AWS does, for five minutes,
//! consumed or not) has already dropped a resend of the same row, so every
//! second SQS message for a row is a duplicate the consumer really saw.

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
}

impl Verdict {
    /// Compares the inserted keys with the messages read off the queue.
    pub fn check(inserted: &[String], messages: &[Received]) -> Verdict {
        let inserted: BTreeSet<&String> = inserted.iter().collect();
        // A duplicate is a second SQS message for a row. The same message
        // received twice (a consumer's delete or receive that failed) is
        // the consumer's redelivery, not the relay's doing.
        let mut distinct: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in messages {
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
        }
    }

    /// One line for the test log and the README's table.
    pub fn line(&self, name: &str) -> String {
        format!(
            "CHECK {name}: delivered={} lost={} unexpected={} duplicated={}",
            self.delivered,
            self.lost.len(),
            self.unexpected.len(),
            self.duplicated.len(),
        )
    }

    /// Panics on a lost row, an unexpected message, or a duplicate of a
    /// row outside `allowed_duplicates` (the rows a relay may have sent
    /// twice: those it reported as sent but not surely marked).
    pub fn assert_holds(&self, name: &str, allowed_duplicates: &BTreeSet<String>) {
        assert!(self.lost.is_empty(), "{name}: LOST {:?}", self.lost);
        assert!(
            self.unexpected.is_empty(),
            "{name}: unexpected {:?}",
            self.unexpected
        );
        let bad: Vec<_> = self
            .duplicated
            .keys()
            .filter(|k| !allowed_duplicates.contains(*k))
            .collect();
        assert!(
            bad.is_empty(),
            "{name}: duplicates outside the send→mark window: {bad:?}"
        );
    }

    /// Panics unless a FIFO queue's `messages` (this verdict's) carried
    /// every row once and every group in order.
    pub fn assert_fifo(&self, name: &str, messages: &[Received]) {
        assert!(
            self.duplicated.is_empty(),
            "{name}: FIFO duplicates {:?}",
            self.duplicated
        );
        let broken = out_of_order_groups(messages);
        assert!(broken.is_empty(), "{name}: groups out of order: {broken:?}");
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

    fn msg(key: &str, message_id: &str, dedup: Option<&str>) -> Received {
        Received {
            body: String::new(),
            outbox_id: key.to_owned(),
            outbox_source: "t".to_owned(),
            message_id: message_id.to_owned(),
            group_id: dedup.map(|_| "g".to_owned()),
            dedup_id: dedup.map(str::to_owned),
        }
    }

    #[test]
    fn a_second_sqs_message_for_a_row_is_a_duplicate_and_a_redelivery_is_not() {
        let msgs = [
            msg("1", "a", Some("d1")),
            msg("1", "a", Some("d1")), // the consumer's redelivery
            msg("2", "b", Some("d2")),
            msg("2", "c", Some("d2")), // a resend SQS delivered
        ];
        let v = Verdict::check(&["1".into(), "2".into(), "3".into()], &msgs);
        assert_eq!(v.lost, BTreeSet::from(["3".to_owned()]));
        assert_eq!(v.duplicated, BTreeMap::from([("2".to_owned(), 2)]));
        assert_eq!(v.delivered, 4);
    }

    #[test]
    fn a_message_with_an_unknown_key_is_unexpected() {
        let msgs = [
            msg("1", "a", None),
            msg("1", "b", None),
            msg("9", "z", None),
        ];
        let v = Verdict::check(&["1".into()], &msgs);
        assert_eq!(v.unexpected, BTreeSet::from(["9".to_owned()]));
        assert_eq!(v.duplicated, BTreeMap::from([("1".to_owned(), 2)]));
    }
}
