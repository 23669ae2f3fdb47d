//! Poison rows: a row that can never be sent goes to the dead-letter table
//! with its reason while the rest flow; a row the dead-letter table refuses
//! stays where it is; what SQS itself refuses is quarantined with SQS's reason.

use crate::common;

use common::{Db, Fixture, Opts};
use outbox_relay::event::PassRequest;

both_databases!(
    poison_rows_go_to_the_dead_letter_table_and_the_rest_flow,
    a_poison_row_the_dead_letter_table_refuses_stays_while_the_rest_flow,
);

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
