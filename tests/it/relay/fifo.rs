//! FIFO queues: group and deduplication ids on every message, a resend
//! dropped by SQS, order kept within a group, invalid group ids as poison.

use crate::common;

use common::{Db, Fixture, Opts, sha};

both_databases!(
    fifo_messages_carry_group_and_dedup_ids_and_resends_are_dropped,
    invalid_fifo_group_ids_are_poison,
);

async fn fifo_messages_carry_group_and_dedup_ids_and_resends_are_dropped(db: Db) {
    let Some(f) = Fixture::new(db, Opts::fifo_grouped()).await else {
        return;
    };
    let ids = f
        .insert(&[
            (Some("a1"), Some("alpha")),
            (Some("b1"), Some("beta")),
            (Some("n1"), None),
            (Some("a2"), Some("alpha")),
        ])
        .await;
    let s = f.drain().await;
    assert_eq!(s.sent, 4);
    assert_eq!(f.queue_depth().await, 4);

    // Crash between send and mark for the first row: it is sent again
    // within the deduplication window, and SQS drops it.
    f.crash_between_send_and_mark(&ids[0], "a1", Some("alpha"))
        .await;
    let s = f.drain().await;
    assert_eq!(
        (s.sent, s.deleted),
        (1, 1),
        "SQS accepted the resend: {s:?}"
    );
    assert_eq!(f.queue_depth().await, 4, "the resend was deduplicated");

    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 4);
    let by_id = |id: &str| msgs.iter().find(|m| m.outbox_id == id).unwrap().clone();
    assert_eq!(by_id(&ids[0]).group_id.as_deref(), Some("alpha"));
    assert_eq!(by_id(&ids[1]).group_id.as_deref(), Some("beta"));
    assert_eq!(
        by_id(&ids[2]).group_id.as_deref(),
        Some(f.table.as_str()),
        "NULL group: the table name"
    );
    let dedup = by_id(&ids[0]).dedup_id.unwrap();
    assert_eq!(
        dedup,
        outbox_relay::message::dedup_id(&f.table, &ids[0], &sha("a1"))
    );
    // Within a group, row order is kept.
    let alpha: Vec<String> = msgs
        .iter()
        .filter(|m| m.group_id.as_deref() == Some("alpha"))
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(alpha, vec!["a1", "a2"]);
}

async fn invalid_fifo_group_ids_are_poison(db: Db) {
    let Some(f) = Fixture::new(db, Opts::fifo_grouped()).await else {
        return;
    };
    let long = "g".repeat(129);
    let ids = f
        .insert(&[
            (Some("ok"), Some("g1")),
            (Some("bad"), Some("has space")),
            (Some("bad2"), Some(&long)),
        ])
        .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.quarantined), (1, 2));
    let dl = f.dead_letters().await;
    assert_eq!(dl.len(), 2);
    assert!(dl.iter().all(|(_, r)| r.contains("MessageGroupId")));
    assert_eq!(dl[0].0, ids[1]);
    assert_eq!(f.receive_all().await.len(), 1);
}
