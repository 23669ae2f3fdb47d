//! Per-group order on FIFO queues when producers commit out of id order:
//! a row whose transaction is still open must not be overtaken by a later
//! row of its group that committed first.

use crate::common;

use common::{Db, Fixture, Opts, Pool};
use sqlx::AssertSqlSafe;

both_databases!(a_row_committed_after_a_later_row_of_its_group_is_still_sent_first,);

async fn a_row_committed_after_a_later_row_of_its_group_is_still_sent_first(db: Db) {
    let Some(f) = Fixture::new(db, Opts::fifo_grouped()).await else {
        return;
    };
    let insert = |p: &str| {
        format!(
            "INSERT INTO {} (payload, group_key) VALUES ('{p}', 'g')",
            f.table
        )
    };
    // Producer A inserts row N and keeps its transaction open; producer B
    // inserts row N+1 of the same group and commits; a pass runs; then A
    // commits. (The same steps on either pool type.)
    macro_rules! a_stays_open_during_a_pass {
        ($p:expr) => {{
            let mut a = $p.begin().await.unwrap();
            sqlx::query(AssertSqlSafe(insert("N")))
                .execute(&mut *a)
                .await
                .unwrap();
            f.pool.exec(insert("N+1")).await;
            let first = f.drain().await;
            a.commit().await.unwrap();
            first
        }};
    }
    let first = match &f.pool {
        Pool::Pg(p) => a_stays_open_during_a_pass!(p),
        Pool::My(p) => a_stays_open_during_a_pass!(p),
    };
    assert_eq!(
        first.sent, 0,
        "N+1 went out while N was uncommitted: {first:?}"
    );
    assert_eq!(f.queue_depth().await, 0);
    // On PostgreSQL any transaction of the cluster that began writing
    // before these rows' transactions holds them back until it ends (other
    // tests share the server): pass again until they went, as the next
    // scheduled pass would.
    let mut second = f.drain().await;
    for _ in 0..50 {
        if f.rows_left().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        second = f.drain().await;
    }
    let bodies: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies,
        vec!["N".to_owned(), "N+1".to_owned()],
        "first pass {first:?}, second pass {second:?}"
    );
    assert_eq!(f.rows_left().await, 0);
}

/// A writing transaction left open holds later rows back on PostgreSQL;
/// the relay says so on stderr, without keys or payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_held_back_by_a_long_transaction_are_logged_without_keys_or_payloads() {
    let f = Fixture::new(Db::Postgres, Opts::fifo_grouped())
        .await
        .unwrap();
    let Pool::Pg(p) = &f.pool else { unreachable!() };
    // A producer's transaction that has inserted a row and stays open.
    let mut long = p.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (payload, group_key) VALUES ('secret-payload-0815', 'g')",
        f.table
    )))
    .execute(&mut *long)
    .await
    .unwrap();
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *long)
        .await
        .unwrap();
    // The warning waits for 5 s of holding (shorter waits are routine).
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    f.insert(&[(Some("secret-payload-4711"), Some("g"))]).await;

    let out = common::relay_command(&f.env())
        .arg("drain")
        .output()
        .unwrap();
    long.rollback().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("rows wait for an older transaction still running"))
        .unwrap_or_else(|| panic!("no held-back warning (our xid {xid}): {stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("rows=1") || line.contains("\"rows\":1"),
        "{line}"
    );
    assert!(line.contains(&xid), "the open producer is named: {line}");
    assert!(!stderr.contains("secret-payload"), "{stderr}");
    assert_eq!(f.rows_left().await, 1, "the row waited");
    assert_eq!(f.queue_depth().await, 0);
}
