//! The bounds of a pass: a dry run changes nothing, `max_rows` stops a
//! backfill slice, and a statement stuck on a locked table fails the pass
//! in bounded time.

use crate::common;

use common::{Db, Fixture, Opts, now_ms, sha};
use outbox_relay::event::PassRequest;

both_databases!(
    a_dry_run_reports_and_changes_nothing,
    max_rows_stops_a_backfill_slice,
    a_statement_stuck_on_a_locked_table_fails_the_pass_in_bounded_time,
);

async fn a_dry_run_reports_and_changes_nothing(db: Db) {
    let Some(f) = Fixture::new(db, Opts::batches_of(2)).await else {
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
    let Some(f) = Fixture::new(db, Opts::batches_of(4)).await else {
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

/// Every SQL statement is bounded (`STATEMENT_TIMEOUT`): a table locked by
/// someone else fails the pass with the server's timeout error in bounded
/// time, before Lambda's deadline, instead of hanging it; nothing is sent.
async fn a_statement_stuck_on_a_locked_table_fails_the_pass_in_bounded_time(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    f.insert(&[(Some("waits"), None)]).await;
    let lock = TableLock::hold(&f).await;
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
    lock.release().await;
    app.close().await;
    assert_eq!(f.rows_left().await, 1);
    assert_eq!(f.queue_depth().await, 0);
}

/// Another session's lock on a fixture's table, one every relay statement
/// on it must wait for, held until [`TableLock::release`].
struct TableLock {
    release: tokio::sync::oneshot::Sender<()>,
    holder: tokio::task::JoinHandle<()>,
}

impl TableLock {
    /// Takes the lock and returns once it is held.
    async fn hold(f: &Fixture) -> TableLock {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (locked_tx, locked) = tokio::sync::oneshot::channel::<()>();
        let pool = f.pool.clone();
        let table = f.table.clone();
        let holder = tokio::spawn(async move {
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
        });
        locked.await.unwrap();
        TableLock { release, holder }
    }

    /// Lets go of the lock and waits for its session to finish.
    async fn release(self) {
        self.release.send(()).unwrap();
        self.holder.await.unwrap();
    }
}
