//! A dry run's batch: reads the rows and the ledger, writes nothing, and
//! counts what a real batch would have done.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::{BatchResult, Relay, Selected, batch_counts};
use crate::ledger::Peek;
use crate::message::{OutboxRow, Target};
use crate::summary::Summary;

/// A page of rows as a dry run sees it before asking the ledger.
struct DryPage {
    /// Ledger key and body hash of each row that would be sent.
    keys: Vec<(String, String)>,
    /// The counts so far: the batch, and the poison rows.
    counts: Summary,
}

impl DryPage {
    /// Sorts the rows into messages (by ledger key) and poison rows.
    fn of(rows: &[OutboxRow], target: &Target) -> Self {
        let mut page = DryPage {
            keys: Vec::new(),
            counts: batch_counts(rows, true),
        };
        for row in rows {
            match target.message(row) {
                Ok(m) => page
                    .keys
                    .push((target.ledger_key(&m.key), m.payload_sha256)),
                Err(_) => page.counts.quarantined += 1,
            }
        }
        page
    }

    /// What a real batch would have done, given the ledger's view.
    fn tally(self, peeks: &HashMap<String, Peek>) -> Summary {
        let mut counts = self.counts;
        for (pk, _) in &self.keys {
            match peeks.get(pk) {
                Some(Peek::Free | Peek::Reused) | None => counts.sent += 1,
                Some(Peek::Sent) => counts.recovered += 1,
                Some(Peek::Held) => counts.skipped += 1,
            }
        }
        counts
    }
}

impl Relay {
    /// One dry-run page: reads the rows and the ledger, writes nothing.
    pub(super) async fn dry_batch(
        &self,
        after: Option<&str>,
        limit: u32,
        selected: oneshot::Sender<Selected>,
    ) -> anyhow::Result<BatchResult> {
        let rows = self.source.peek(after, limit).await?;
        let _ = selected.send(Selected::of(&rows));
        let page = DryPage::of(&rows, &self.target);
        let peeks = self.ledger.peek(&page.keys).await?;
        Ok(BatchResult {
            counts: page.tally(&peeks),
            trouble: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::{Routes, Shape};

    fn target() -> Target {
        Target {
            source: "outbox".to_owned(),
            fifo: false,
            max_message_bytes: vec![262_144],
            routes: Routes::default(),
        }
    }

    fn row(key: &str, payload: Option<&str>) -> OutboxRow {
        OutboxRow {
            key: key.to_owned(),
            payload: payload.map(|p| Ok(p.to_owned())),
            group: None,
            shape: Shape::default(),
        }
    }

    #[test]
    fn an_empty_page_is_no_batch() {
        let counts = DryPage::of(&[], &target()).tally(&HashMap::new());
        assert_eq!(
            counts,
            Summary {
                dry_run: true,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn a_page_counts_as_the_real_batch_would() {
        let rows = [
            row("1", Some("a")),
            row("2", None),
            row("3", Some("c")),
            row("4", Some("d")),
            row("5", Some("e")),
        ];
        let peeks = HashMap::from([
            ("outbox#3".to_owned(), Peek::Sent),
            ("outbox#4".to_owned(), Peek::Held),
            ("outbox#5".to_owned(), Peek::Reused),
        ]);
        let counts = DryPage::of(&rows, &target()).tally(&peeks);
        assert_eq!(
            (
                counts.batches,
                counts.sent,
                counts.recovered,
                counts.skipped,
                counts.quarantined
            ),
            (1, 2, 1, 1, 1)
        );
        assert_eq!((counts.claimed, counts.deleted), (0, 0));
        assert!(counts.dry_run);
    }
}
