//! The relay end to end against real PostgreSQL / MariaDB and the AWS stand-ins: the
//! protocol, the crash table of docs/design.md, concurrency, FIFO and poison rows.

use crate::common;

use common::{Db, Fixture, Opts, counts, now_ms, sha};
use outbox_relay::event::PassRequest;

both_databases!(
    every_row_becomes_one_message_and_leaves_the_table,
    a_live_claim_of_another_relay_is_left_alone_until_it_expires,
    an_expired_claim_is_taken_over_and_sent_once,
    a_row_already_sent_is_deleted_without_a_resend,
    a_reused_id_with_a_new_payload_is_sent_not_dropped,
    a_crash_between_send_and_mark_resends_with_the_same_key,
    two_relays_at_once_send_every_row_exactly_once,
    poison_rows_go_to_the_dead_letter_table_and_the_rest_flow,
    a_dry_run_reports_and_changes_nothing,
    max_rows_stops_a_backfill_slice,
    fifo_messages_carry_group_and_dedup_ids_and_resends_are_dropped,
    invalid_fifo_group_ids_are_poison,
    a_poison_row_the_dead_letter_table_refuses_stays_while_the_rest_flow,
    a_statement_stuck_on_a_locked_table_fails_the_pass_in_bounded_time,
);

async fn every_row_becomes_one_message_and_leaves_the_table(db: Db) {
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(7),
            ..Opts::default()
        },
    )
    .await
    else {
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
    f.pool
        .exec(format!(
            "INSERT INTO {} (id, payload) VALUES ({}, 'body')",
            f.table, ids[0]
        ))
        .await;
    f.seed_ledger(&ids[0], "CLAIMED", "crashed", now_ms() - 1, &sha("body"))
        .await;
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
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(20),
            ..Opts::default()
        },
    )
    .await
    else {
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

async fn poison_rows_go_to_the_dead_letter_table_and_the_rest_flow(db: Db) {
    let Some(f) = Fixture::new(
        db,
        Opts {
            max_message_bytes: Some(1024),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let big = "x".repeat(2000);
    let ids = f
        .insert(&[
            (Some("good 1"), None),
            (None, None),
            (Some(""), None),
            (Some(&big), None),
            (Some("bad \u{1} char"), None),
            (Some("good 2"), None),
        ])
        .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.quarantined, s.deleted), (2, 4, 2));
    assert!(!s.remaining);
    assert_eq!(f.rows_left().await, 0);
    let dl = f.dead_letters().await;
    let reasons: Vec<&str> = dl.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        dl.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids[1..5].to_vec()
    );
    assert!(reasons[0].contains("NULL"), "{reasons:?}");
    assert!(reasons[1].contains("empty"), "{reasons:?}");
    assert!(reasons[2].contains("at most 1024"), "{reasons:?}");
    assert!(reasons[3].contains("U+0001"), "{reasons:?}");
    let mut bodies: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(bodies, vec!["good 1", "good 2"]);
    // Poison rows were never claimed.
    assert!(f.ledger(&ids[1]).await.is_none());
}

async fn a_poison_row_the_dead_letter_table_refuses_stays_while_the_rest_flow(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let ids = f
        .insert(&[(Some("good 1"), None), (None, None), (Some("good 2"), None)])
        .await;
    // The dead-letter table already holds that id (say, a reused id that was
    // poison before): the copy is refused by its primary key.
    f.pool
        .exec(format!(
            "INSERT INTO {} (id, reason) VALUES ({}, 'an earlier poison row')",
            f.dead_letter, ids[1]
        ))
        .await;
    for _ in 0..2 {
        let s = f.drain().await;
        assert_eq!((s.quarantined, s.skipped), (0, 1), "{s:?}");
        assert!(s.remaining, "a row is left: {s:?}");
        assert_eq!(f.rows_left().await, 1, "only the refused poison row stays");
    }
    let mut bodies: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(bodies, vec!["good 1", "good 2"], "the rest flowed, once");
    assert_eq!(f.dead_letters().await.len(), 1, "nothing was overwritten");

    // Once the operator clears the way, the row moves over.
    f.pool
        .exec(format!(
            "DELETE FROM {} WHERE id = {}",
            f.dead_letter, ids[1]
        ))
        .await;
    let s = f.drain().await;
    assert_eq!((s.quarantined, s.skipped, s.sent), (1, 0, 0), "{s:?}");
    assert_eq!(f.rows_left().await, 0);
    assert!(f.dead_letters().await[0].1.contains("NULL"));
}

async fn a_dry_run_reports_and_changes_nothing(db: Db) {
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(2),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let ids = f
        .insert(&[
            (Some("a"), None),
            (Some("b"), None),
            (None, None),
            (Some("c"), None),
            (Some("d"), None),
        ])
        .await;
    f.seed_ledger(&ids[0], "SENT", "old", now_ms() - 1, &sha("a"))
        .await;
    f.seed_ledger(&ids[1], "CLAIMED", "busy", now_ms() + 60_000, &sha("b"))
        .await;
    let s = f
        .pass(PassRequest {
            max_rows: None,
            dry_run: true,
        })
        .await;
    assert!(s.dry_run);
    assert_eq!(
        (s.sent, s.recovered, s.skipped, s.quarantined),
        (2, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!((s.claimed, s.deleted), (0, 0));
    assert_eq!(f.rows_left().await, 5);
    assert_eq!(f.queue_depth().await, 0);
    assert!(f.dead_letters().await.is_empty());
    assert!(f.ledger(&ids[3]).await.is_none());
    assert_eq!(f.ledger_state(&ids[1]).await.as_deref(), Some("CLAIMED"));
}

async fn max_rows_stops_a_backfill_slice(db: Db) {
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(4),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    f.insert_many(10).await;
    let s = f
        .pass(PassRequest {
            max_rows: Some(6),
            dry_run: false,
        })
        .await;
    assert_eq!((s.sent, s.deleted), (6, 6));
    assert!(s.remaining);
    assert_eq!(f.rows_left().await, 4);
    let s = f
        .pass(PassRequest {
            max_rows: Some(100),
            dry_run: false,
        })
        .await;
    assert_eq!(s.sent, 4);
    assert!(!s.remaining);
}

async fn fifo_messages_carry_group_and_dedup_ids_and_resends_are_dropped(db: Db) {
    let Some(f) = Fixture::new(
        db,
        Opts {
            fifo: true,
            group_column: true,
            ..Opts::default()
        },
    )
    .await
    else {
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
    f.pool
        .exec(format!(
            "INSERT INTO {} (id, payload, group_key) VALUES ({}, 'a1', 'alpha')",
            f.table, ids[0]
        ))
        .await;
    f.seed_ledger(&ids[0], "CLAIMED", "crashed", now_ms() - 1, &sha("a1"))
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
    let Some(f) = Fixture::new(
        db,
        Opts {
            fifo: true,
            group_column: true,
            ..Opts::default()
        },
    )
    .await
    else {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sqs_rejects_as_invalid_is_quarantined_with_the_sqs_reason() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let f = Fixture::new(
        Db::Postgres,
        Opts {
            max_message_bytes: Some(4096),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    // A warm relay has read the queue's size limit at its first pass...
    let app = f.app().await;
    app.run(&PassRequest::default(), None, None, &|_| {})
        .await
        .unwrap();
    // ...then the limit is lowered: only SQS itself can refuse the row now.
    f.sqs
        .set_queue_attributes()
        .queue_url(&f.queue_url)
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .unwrap();
    let big = "y".repeat(3000);
    let ids = f
        .insert(&[
            (Some("fits"), None),
            (Some(&big), None),
            (Some("fits too"), None),
        ])
        .await;
    let s = app
        .run(&PassRequest::default(), None, None, &|_| {})
        .await
        .unwrap();
    app.close().await;
    assert_eq!((s.sent, s.quarantined, s.deleted), (2, 1, 2), "{s:?}");
    let dl = f.dead_letters().await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].0, ids[1]);
    assert!(
        dl[0].1.starts_with("SQS refused the message"),
        "{}",
        dl[0].1
    );
    assert_eq!(f.rows_left().await, 0);
    assert_eq!(f.receive_all().await.len(), 2);
}

/// Every SQL statement is bounded (`STATEMENT_TIMEOUT`): a table locked by
/// someone else fails the pass with the server's timeout error in bounded
/// time, before Lambda's deadline, instead of hanging it; nothing is sent.
async fn a_statement_stuck_on_a_locked_table_fails_the_pass_in_bounded_time(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    f.insert(&[(Some("waits"), None)]).await;
    // Another session holds the table with a lock every relay statement on
    // it must wait for.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (locked_tx, locked) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let pool = f.pool.clone();
        let table = f.table.clone();
        tokio::spawn(async move {
            match pool {
                common::Pool::Pg(p) => {
                    let mut tx = p.begin().await.unwrap();
                    let lock = format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE");
                    sqlx::query(sqlx::AssertSqlSafe(lock))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = released.await;
                    tx.rollback().await.unwrap();
                }
                common::Pool::My(p) => {
                    let mut conn = p.acquire().await.unwrap();
                    let lock = format!("LOCK TABLES {table} WRITE");
                    sqlx::query(sqlx::AssertSqlSafe(lock))
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = released.await;
                    sqlx::query("UNLOCK TABLES")
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                }
            }
        })
    };
    locked.await.unwrap();
    let app = f.app().await;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        outbox_relay::source::STATEMENT_TIMEOUT * 3,
        app.run(&PassRequest::default(), None, None, &|_| {}),
    )
    .await
    .expect("the pass hung on the locked table");
    let err = result
        .expect_err("the pass cannot succeed on a locked table")
        .to_string();
    assert!(
        started.elapsed() >= outbox_relay::source::STATEMENT_TIMEOUT / 2,
        "failed before any statement could time out: {err}"
    );
    assert!(
        err.contains("statement timeout") || err.contains("max_statement_time"),
        "{err}"
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    app.close().await;
    assert_eq!(f.rows_left().await, 1);
    assert_eq!(f.queue_depth().await, 0);
}
