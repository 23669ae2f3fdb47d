//! The relay end to end against real PostgreSQL / MariaDB and the AWS
//! stand-ins: every row becomes one message, and each state of the crash
//! table of docs/design.md (a live or expired claim, a row already sent, a
//! reused id, a crash between send and mark) resolves as it says; two
//! relays at once send every row once.

mod fifo;
mod limits;
mod poison;

use crate::common;

use common::{Db, Fixture, Opts, counts, now_ms, sha};

both_databases!(
    every_row_becomes_one_message_and_leaves_the_table,
    a_live_claim_of_another_relay_is_left_alone_until_it_expires,
    an_expired_claim_is_taken_over_and_sent_once,
    a_row_already_sent_is_deleted_without_a_resend,
    a_reused_id_with_a_new_payload_is_sent_not_dropped,
    a_crash_between_send_and_mark_resends_with_the_same_key,
    two_relays_at_once_send_every_row_exactly_once,
);

async fn every_row_becomes_one_message_and_leaves_the_table(db: Db) {
    let Some(f) = Fixture::new(db, Opts::batches_of(7)).await else {
        return;
    };
    let payloads: Vec<String> = (0..25)
        .map(|i| format!("{{\"order\":{i},\"text\":\"é ✓\"}}"))
        .collect();
    let rows: Vec<(Option<&str>, Option<&str>)> =
        payloads.iter().map(|p| (Some(p.as_str()), None)).collect();
    let ids = f.insert(&rows).await;

    let s = f.drain().await;
    assert_eq!(
        (s.claimed, s.sent, s.deleted, s.recovered, s.skipped),
        (25, 25, 25, 0, 0)
    );
    assert!(!s.remaining);
    assert_eq!(s.batches, 4, "25 rows in batches of 7");
    assert_eq!(f.rows_left().await, 0);

    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 25);
    for m in &msgs {
        let i = ids
            .iter()
            .position(|id| *id == m.outbox_id)
            .expect("outbox-id is a row id");
        assert_eq!(m.body, payloads[i]);
        assert_eq!(m.outbox_source, f.table);
        assert_eq!(m.group_id, None);
    }
    assert_eq!(counts(&msgs).len(), 25);
    // The ledger item of the contract, whichever way it was marked (the
    // batched mark writes the whole item back).
    for (i, id) in ids.iter().enumerate() {
        let item = f.ledger(id).await.expect("a ledger item per row");
        assert_eq!(item["state"].as_s().unwrap(), "SENT");
        let sent = msgs.iter().find(|m| m.outbox_id == *id).unwrap();
        assert_eq!(item["message_id"].as_s().unwrap(), &sent.message_id);
        assert_eq!(item["payload_sha256"].as_s().unwrap(), &sha(&payloads[i]));
        assert_eq!(item["attempts"].as_n().unwrap(), "1");
        assert!(!item["owner"].as_s().unwrap().is_empty());
        let lease: u64 = item["lease_until_ms"].as_n().unwrap().parse().unwrap();
        assert!(lease > now_ms(), "the claim's lease is kept: {lease}");
        let expires: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(
            expires > now_ms() / 1000 + 6 * 86_400,
            "kept 7 days: {expires}"
        );
    }
    // A second pass finds nothing to do.
    let again = f.drain().await;
    assert_eq!((again.claimed, again.sent, again.deleted), (0, 0, 0));
}

async fn a_live_claim_of_another_relay_is_left_alone_until_it_expires(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(Some("a"), None), (Some("b"), None)]).await;
    f.seed_ledger(
        &ids[0],
        "CLAIMED",
        "other-relay",
        now_ms() + 60_000,
        &sha("a"),
    )
    .await;

    let s = f.drain().await;
    assert_eq!((s.sent, s.skipped, s.deleted), (1, 1, 1));
    assert!(s.remaining, "a skipped row means rows remain");
    assert_eq!(f.rows_left().await, 1);
    assert_eq!(
        f.ledger(&ids[0]).await.unwrap()["owner"].as_s().unwrap(),
        "other-relay"
    );

    // The other relay died: once its lease is over, the row goes, once.
    f.seed_ledger(&ids[0], "CLAIMED", "other-relay", now_ms() - 1, &sha("a"))
        .await;
    let s = f.drain().await;
    assert_eq!((s.claimed, s.sent, s.deleted, s.skipped), (1, 1, 1, 0));
    let msgs = f.receive_all().await;
    assert_eq!(
        counts(&msgs).values().copied().collect::<Vec<_>>(),
        vec![1, 1]
    );
}

async fn an_expired_claim_is_taken_over_and_sent_once(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(Some("x"), None)]).await;
    f.seed_ledger(&ids[0], "CLAIMED", "crashed", now_ms() - 5_000, &sha("x"))
        .await;
    let s = f.drain().await;
    assert_eq!((s.claimed, s.sent, s.deleted), (1, 1, 1));
    let item = f.ledger(&ids[0]).await.unwrap();
    assert_eq!(item["state"].as_s().unwrap(), "SENT");
    assert_eq!(
        item["attempts"].as_n().unwrap(),
        "2",
        "the takeover counts as an attempt"
    );
    assert_eq!(f.receive_all().await.len(), 1);
}

async fn a_row_already_sent_is_deleted_without_a_resend(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f
        .insert(&[(Some("sent before"), None), (Some("new"), None)])
        .await;
    // A relay crashed after marking SENT, before its delete committed.
    f.seed_ledger(
        &ids[0],
        "SENT",
        "crashed",
        now_ms() - 1,
        &sha("sent before"),
    )
    .await;
    let s = f.drain().await;
    assert_eq!((s.recovered, s.sent, s.deleted), (1, 1, 2));
    assert_eq!(f.rows_left().await, 0);
    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].outbox_id, ids[1]);
}

async fn a_reused_id_with_a_new_payload_is_sent_not_dropped(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(Some("second life"), None)]).await;
    // The id was used before (sequence reset / InnoDB restart) by another row.
    f.seed_ledger(
        &ids[0],
        "SENT",
        "long-gone",
        now_ms() - 1,
        &sha("first life"),
    )
    .await;
    let s = f.drain().await;
    assert_eq!((s.claimed, s.sent, s.deleted, s.recovered), (1, 1, 1, 0));
    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, "second life");
    let item = f.ledger(&ids[0]).await.unwrap();
    assert_eq!(item["state"].as_s().unwrap(), "SENT");
    assert_eq!(item["payload_sha256"].as_s().unwrap(), &sha("second life"));
}

async fn a_crash_between_send_and_mark_resends_with_the_same_key(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(Some("body"), None)]).await;
    f.drain().await;
    // Put the world back as a crash after the send and before the mark
    // leaves it: the message is out, the row is there, the claim expired.
    f.crash_between_send_and_mark(&ids[0], "body", None).await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.deleted), (1, 1));
    let msgs = f.receive_all().await;
    // Standard queue: the documented duplicate, carrying the same key.
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .all(|m| m.outbox_id == ids[0] && m.body == "body")
    );
    assert_eq!(f.rows_left().await, 0);
}

async fn two_relays_at_once_send_every_row_exactly_once(db: Db) {
    let Some(f) = Fixture::new(db, Opts::batches_of(20)).await else {
        return;
    };
    let ids = f.insert_many(400).await;
    let (a, b) = tokio::join!(f.drain(), f.drain());
    assert_eq!(a.sent + b.sent, 400, "{a:?} {b:?}");
    assert_eq!(a.deleted + b.deleted, 400);
    assert_eq!(f.rows_left().await, 0);
    let msgs = f.receive_all().await;
    let c = counts(&msgs);
    assert_eq!(c.len(), 400);
    assert!(c.values().all(|n| *n == 1), "a row was sent twice");
    assert!(ids.iter().all(|id| c.contains_key(id)));
}
