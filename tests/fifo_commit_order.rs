//! Per-group order on FIFO queues when producers commit out of id order:
//! a row whose transaction is still open must not be overtaken by a later
//! row of its group that committed first.

mod common;

use common::{Db, Fixture, Opts, Pool};
use sqlx::AssertSqlSafe;

both_databases!(a_row_committed_after_a_later_row_of_its_group_is_still_sent_first,);

async fn a_row_committed_after_a_later_row_of_its_group_is_still_sent_first(db: Db) {
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
