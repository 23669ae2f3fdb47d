//! Send order on FIFO queues: no row overtakes an earlier row of its group
//! (docs/guarantee.md, "Order on FIFO queues").
//!
//! Three rules, applied by the batch in turn: a row waits while an earlier
//! row of its group is elsewhere (the order check before the claims,
//! [`GroupOrder::wait_behind_others`]); a row that cannot be claimed or
//! sent holds back the later rows of its group in this batch
//! ([`GroupOrder::block`]); and a group's rows go out one per round
//! ([`fifo_rounds`]).

use std::collections::{HashMap, HashSet};

use crate::message::{Message, OutboxRow};

/// Per-group send order on FIFO queues: which rows must not go yet.
#[derive(Debug, Default)]
pub(super) struct GroupOrder {
    /// Our rows behind an earlier row of their group that is elsewhere.
    waiting: HashSet<String>,
    /// Group → batch position from which its rows are held back, because
    /// the row there could not be claimed or sent in this batch.
    blocked: HashMap<String, usize>,
    /// Batch position (id order) of each of our keys.
    position: HashMap<String, usize>,
}

impl GroupOrder {
    /// The order of a batch's rows (in id order, as selected); nothing held
    /// back yet.
    pub(super) fn new(rows: &[OutboxRow]) -> Self {
        GroupOrder {
            position: rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.key.clone(), i))
                .collect(),
            ..GroupOrder::default()
        }
    }

    /// The order check: given every row up to our batch's last one, in id
    /// order, ours interleaved with the rest (other relays' rows, rows not
    /// due yet, MySQL's uncommitted ones), as `(key, group)`: once a row
    /// that is not ours appears in a group, our later rows of it wait.
    /// A row without a group is in `source_group`, as its message is.
    pub(super) fn wait_behind_others(
        &mut self,
        listing: impl IntoIterator<Item = (String, Option<String>)>,
        source_group: &str,
    ) {
        let mut elsewhere: HashSet<String> = HashSet::new();
        for (key, group) in listing {
            let group = group.unwrap_or_else(|| source_group.to_owned());
            if !self.position.contains_key(&key) {
                elsewhere.insert(group);
            } else if elsewhere.contains(&group) {
                self.waiting.insert(key);
            }
        }
    }

    /// True when `m` must not be claimed: it waits behind a row elsewhere,
    /// or its group is blocked at or before it.
    pub(super) fn is_stopped(&self, m: &Message) -> bool {
        self.waiting.contains(&m.key) || self.is_blocked(m)
    }

    /// Holds back `m` and the rows of its group after it in this batch.
    pub(super) fn block(&mut self, m: &Message) {
        if let (Some(g), Some(&at)) = (&m.group_id, self.position.get(&m.key)) {
            let from = self.blocked.entry(g.clone()).or_insert(at);
            *from = (*from).min(at);
        }
    }

    /// True when a row of `m`'s group at or before it was blocked.
    pub(super) fn is_blocked(&self, m: &Message) -> bool {
        match (&m.group_id, self.position.get(&m.key)) {
            (Some(g), Some(at)) => self.blocked.get(g).is_some_and(|from| from <= at),
            _ => false,
        }
    }
}

/// Splits FIFO messages into rounds holding at most one message per group,
/// in row order. A round's calls run in parallel (different groups); the
/// next round starts after it, so a message is never in flight beside an
/// earlier one of its group, and a failure can stop its group before
/// anything after it goes out. SQS documents no order for the entries of
/// one group within a partly failed batch call, so this is the price of
/// "never overtaken": more calls when a batch holds many rows of one group.
pub(super) fn fifo_rounds<'m>(messages: &[&'m Message]) -> Vec<Vec<&'m Message>> {
    let mut rounds: Vec<Vec<&Message>> = Vec::new();
    let mut next_round: HashMap<&str, usize> = HashMap::new();
    for m in messages {
        let group = m.group_id.as_deref().unwrap_or_default();
        let r = next_round.entry(group).or_insert(0);
        if rounds.len() <= *r {
            rounds.push(Vec::new());
        }
        rounds[*r].push(m);
        *r += 1;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Target;
    use crate::shaping::{Routes, Shape};

    /// The table name, and so the group of rows without one.
    const SOURCE: &str = "outbox";

    fn row(key: &str, group: Option<&str>) -> OutboxRow {
        OutboxRow {
            key: key.to_owned(),
            payload: Some(Ok(format!("{{\"row\":\"{key}\"}}"))),
            group: group.map(str::to_owned),
            shape: Shape::default(),
        }
    }

    /// The FIFO message of a row, built as the relay builds it.
    fn message(r: &OutboxRow) -> Message {
        let target = Target {
            source: SOURCE.to_owned(),
            fifo: true,
            max_message_bytes: vec![262_144],
            routes: Routes::default(),
        };
        target.message(r).expect("a valid row")
    }

    /// A batch: its rows and their messages.
    fn batch(rows: &[(&str, Option<&str>)]) -> (Vec<OutboxRow>, Vec<Message>) {
        let rows: Vec<OutboxRow> = rows.iter().map(|(k, g)| row(k, *g)).collect();
        let messages = rows.iter().map(message).collect();
        (rows, messages)
    }

    fn keys(round: &[&Message]) -> Vec<String> {
        round.iter().map(|m| m.key.clone()).collect()
    }

    fn listing(rows: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        rows.iter()
            .map(|(k, g)| (k.to_string(), g.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn each_round_holds_one_message_per_group_in_row_order() {
        let (_, ms) = batch(&[
            ("1", Some("a")),
            ("2", Some("a")),
            ("3", Some("b")),
            ("4", Some("a")),
            ("5", Some("c")),
            ("6", Some("b")),
        ]);
        let refs: Vec<&Message> = ms.iter().collect();
        let rounds: Vec<Vec<String>> = fifo_rounds(&refs).iter().map(|r| keys(r)).collect();
        assert_eq!(rounds, vec![vec!["1", "3", "5"], vec!["2", "6"], vec!["4"]]);
    }

    #[test]
    fn rows_without_a_group_share_the_source_group() {
        let (_, ms) = batch(&[
            ("1", None),
            ("2", Some(SOURCE)),
            ("3", None),
            ("4", Some("a")),
        ]);
        assert_eq!(ms[0].group_id.as_deref(), Some(SOURCE));
        let refs: Vec<&Message> = ms.iter().collect();
        let rounds: Vec<Vec<String>> = fifo_rounds(&refs).iter().map(|r| keys(r)).collect();
        assert_eq!(rounds, vec![vec!["1", "4"], vec!["2"], vec!["3"]]);
    }

    #[test]
    fn no_messages_no_rounds() {
        assert!(fifo_rounds(&[]).is_empty());
    }

    #[test]
    fn a_blocked_row_holds_back_later_rows_of_its_group_only() {
        let (rows, ms) = batch(&[
            ("1", Some("a")),
            ("2", Some("b")),
            ("3", Some("a")),
            ("4", Some("a")),
            ("5", Some("b")),
        ]);
        let mut order = GroupOrder::new(&rows);
        assert!(ms.iter().all(|m| !order.is_stopped(m)));
        order.block(&ms[2]);
        let blocked: Vec<bool> = ms.iter().map(|m| order.is_blocked(m)).collect();
        // Row 1 (earlier, same group) and group b are free; 3 and 4 are held.
        assert_eq!(blocked, vec![false, false, true, true, false]);
        assert_eq!(
            ms.iter().map(|m| order.is_stopped(m)).collect::<Vec<_>>(),
            blocked
        );
        // Blocking a later row of the group keeps the earlier block.
        order.block(&ms[3]);
        assert!(order.is_blocked(&ms[2]));
        // Blocking an earlier one moves the block back.
        order.block(&ms[0]);
        assert!(order.is_blocked(&ms[0]));
        assert!(!order.is_blocked(&ms[1]));
    }

    #[test]
    fn a_row_that_is_not_in_the_batch_blocks_nothing() {
        let (rows, ms) = batch(&[("1", Some("a")), ("2", Some("a"))]);
        let mut order = GroupOrder::new(&rows[1..]);
        order.block(&ms[0]);
        assert!(!order.is_blocked(&ms[1]));
        assert!(!order.is_blocked(&ms[0]));
    }

    #[test]
    fn our_rows_wait_behind_an_earlier_row_of_their_group_held_elsewhere() {
        // Ours: 2, 3, 5, 6, 8. Elsewhere: 1 (group a), 4 (group b, listed
        // without a group value: the source group), 7 (group c).
        let (rows, ms) = batch(&[
            ("2", Some("a")),
            ("3", Some("b")),
            ("5", None),
            ("6", Some("b")),
            ("8", Some("c")),
        ]);
        let mut order = GroupOrder::new(&rows);
        order.wait_behind_others(
            listing(&[
                ("1", Some("a")),
                ("2", Some("a")),
                ("3", Some("b")),
                ("4", None),
                ("5", None),
                ("6", Some("b")),
                ("7", Some("c")),
                ("8", Some("c")),
            ]),
            SOURCE,
        );
        let stopped: Vec<bool> = ms.iter().map(|m| order.is_stopped(m)).collect();
        // 2: behind 1 (a). 3: nothing of b before it. 5: behind 4 (the
        // source group). 6: b's earlier row 3 is ours. 8: behind 7 (c).
        assert_eq!(stopped, vec![true, false, true, false, true]);
        // Waiting is not blocking: it holds only the row itself.
        assert!(ms.iter().all(|m| !order.is_blocked(m)));
    }

    #[test]
    fn a_row_elsewhere_in_another_group_holds_nothing_back() {
        let (rows, ms) = batch(&[("1", Some("a")), ("3", Some("a"))]);
        let mut order = GroupOrder::new(&rows);
        order.wait_behind_others(
            listing(&[("1", Some("a")), ("2", Some("b")), ("3", Some("a"))]),
            SOURCE,
        );
        assert!(ms.iter().all(|m| !order.is_stopped(m)));
        // Only ours in the listing: nothing waits either.
        let mut order = GroupOrder::new(&rows);
        order.wait_behind_others(listing(&[("1", Some("a")), ("3", Some("a"))]), SOURCE);
        assert!(ms.iter().all(|m| !order.is_stopped(m)));
    }
}
