//! Following (`outbox-relay follow`, the real binary): rows inserted while
//! it runs are delivered without a new pass being started from outside,
//! woken by PostgreSQL `NOTIFY` or by the poll alone; SIGTERM lets the
//! batch in flight finish and starts no new one; two followers share the
//! table without sending a row twice. The binary needs `--features faults`
//! for the SIGTERM tests (a batch paused at a step boundary).

use crate::checker;
use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Db, Fixture, Opts, Pool};
use outbox_relay::summary::Summary;

/// A running `outbox-relay follow`, its stderr collected line by line.
struct Follower {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn follow(f: &Fixture, extra: &[(&str, &str)], args: &[&str]) -> Follower {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .arg("follow")
        .args(args)
        .envs(f.env())
        .envs(extra.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outbox-relay follow");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    Follower {
        child,
        stderr,
        stdout: Some(stdout),
    }
}

impl Follower {
    /// Waits until a stderr line contains `text`.
    async fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(text)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {text:?}; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Sends SIGTERM and asserts a graceful stop (exit 0); the summary
    /// (stdout's last line).
    async fn terminate(mut self) -> Summary {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "follow did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let last = stdout.lines().last().unwrap_or_else(|| {
            panic!(
                "no summary on stdout; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            )
        });
        let summary = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("last stdout line is not a summary ({e}): {last}"));
        assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
        summary
    }
}

/// Receives (and deletes) messages until `n` have arrived or `within`
/// has passed; what arrived.
async fn receive_up_to(f: &Fixture, n: usize, within: Duration) -> Vec<common::Received> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(f.receive_all().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

/// Inserts one row while the follower runs and waits (up to a minute) for
/// its message, which it returns.
async fn deliver_one(f: &Fixture, body: &str) -> common::Received {
    let ids = f.insert(&[(Some(body), None)]).await;
    let mut got = receive_up_to(f, 1, Duration::from_secs(60)).await;
    assert!(
        !got.is_empty(),
        "the row inserted as {body:?} did not arrive"
    );
    assert_eq!(got[0].outbox_id, ids[0]);
    got.remove(0)
}

/// Installs the shipped trigger (infra/sql/postgres-notify.sql) on the
/// fixture's table, notifying `channel`.
async fn install_trigger(f: &Fixture, channel: &str) {
    let sql = include_str!("../../infra/sql/postgres-notify.sql")
        .replace("ON outbox", &format!("ON {}", f.table))
        .replace("'outbox_relay'", &format!("'{channel}'"));
    let Pool::Pg(pool) = &f.pool else {
        panic!("PostgreSQL only")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .expect("the shipped trigger installs");
}

fn channel() -> String {
    format!("relay_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A follower woken by the shipped trigger's notifications alone (an hour
/// between polls), once it listens; and the channel it listens on.
async fn notified_follower(f: &Fixture) -> (Follower, String) {
    let channel = channel();
    install_trigger(f, &channel).await;
    let p = follow(
        f,
        &[
            ("OUTBOX_NOTIFY_CHANNEL", &channel),
            ("POLL_INTERVAL_MS", "3600000"),
        ],
        &[],
    );
    p.wait_for("listening for new rows").await;
    (p, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_while_following_is_woken_by_notify_without_waiting_for_a_poll() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    // An hour between polls: only the notification can deliver the row.
    let (p, _) = notified_follower(&f).await;
    assert_eq!(deliver_one(&f, "woken").await.body, "woken");
    let s = p.terminate().await;
    assert_eq!((s.sent, s.deleted), (1, 1));
    assert_eq!(f.rows_left().await, 0);
}

async fn a_row_inserted_while_following_is_found_by_the_poll(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    // No trigger, no channel: the poll alone.
    let p = follow(&f, &[("POLL_INTERVAL_MS", "100")], &[]);
    p.wait_for("following: waiting for new rows").await;
    deliver_one(&f, "polled").await;
    // A second row, later: still one follower, still delivered.
    deliver_one(&f, "again").await;
    let s = p.terminate().await;
    assert_eq!((s.sent, s.deleted, s.remaining), (2, 2, false));
    assert_eq!(f.rows_left().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_while_following_is_found_by_the_poll_alone_on_postgres() {
    a_row_inserted_while_following_is_found_by_the_poll(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_while_following_is_found_by_the_poll_alone_on_mariadb() {
    a_row_inserted_while_following_is_found_by_the_poll(Db::MySql).await;
}

async fn sigterm_during_a_batch(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    let first = f.insert(&[(Some("in flight"), None)]).await;
    // The first batch stops for 3 s once its row is claimed.
    let p = follow(
        &f,
        &[
            ("OUTBOX_FAULTS", "after-claim=pause(3000)@1"),
            ("POLL_INTERVAL_MS", "50"),
        ],
        &[],
    );
    p.wait_for("fault: pause").await;
    // Inserted while the batch is in flight: no new batch may take it.
    let second = f.insert(&[(Some("after the signal"), None)]).await;
    let s = p.terminate().await;
    assert_eq!((s.claimed, s.sent, s.deleted), (1, 1, 1), "{s:?}");
    assert_eq!(f.ledger_state(&first[0]).await.as_deref(), Some("SENT"));
    assert_eq!(
        f.ledger_state(&second[0]).await,
        None,
        "no new batch started"
    );
    assert_eq!(f.rows_left().await, 1);
    let got = f.receive_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].outbox_id, first[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_batch_finishes_it_starts_no_new_one_and_exits_zero_on_postgres() {
    sigterm_during_a_batch(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_batch_finishes_it_starts_no_new_one_and_exits_zero_on_mariadb() {
    sigterm_during_a_batch(Db::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listen_connection_is_reconnected_and_wakes_the_follower_again() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    let (p, channel) = notified_follower(&f).await;
    // The server ends the LISTEN session (a failover, a reaper).
    let killed = f
        .pool
        .count(format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = 'LISTEN \"{channel}\"'"
        ))
        .await;
    assert_eq!(killed, 1, "one LISTEN session");
    p.wait_for("LISTEN connection dropped").await;
    deliver_one(&f, "after the drop").await;
    assert_eq!(p.terminate().await.sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_at_once_send_every_row_once_in_group_order() {
    let f = Fixture::new(
        Db::Postgres,
        Opts {
            fifo: true,
            group_column: true,
            batch_size: Some(10),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    let channel = channel();
    install_trigger(&f, &channel).await;
    let env = [
        ("OUTBOX_NOTIFY_CHANNEL", channel.as_str()),
        ("POLL_INTERVAL_MS", "200"),
    ];
    let a = follow(&f, &env, &[]);
    let b = follow(&f, &env, &[]);
    a.wait_for("following").await;
    b.wait_for("following").await;
    let inserted = produce(&f).await;
    // What has not arrived within two minutes, the checker calls lost.
    let mut got = receive_up_to(&f, inserted.len(), Duration::from_secs(120)).await;
    let sa = a.terminate().await;
    let sb = b.terminate().await;
    got.extend(f.receive_all().await);
    assert_eq!(f.rows_left().await, 0);
    let v = checker::Verdict::check(&inserted, &got);
    let name = "two followers";
    // No duplicate allowed at all, and every group in order.
    v.assert_holds(name, &Default::default());
    v.assert_fifo(name, &got);
    assert_eq!(sa.sent + sb.sent, inserted.len() as u64);
}

/// A producer: 20 statements of 10 rows over 4 groups, 50 ms apart; the
/// ids in insertion order.
async fn produce(f: &Fixture) -> Vec<String> {
    let mut inserted = Vec::new();
    for wave in 0..20 {
        let rows: Vec<(String, String)> = (0..10)
            .map(|i| {
                (
                    format!("{{\"n\":{}}}", wave * 10 + i),
                    format!("g{}", i % 4),
                )
            })
            .collect();
        let refs: Vec<(Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|(p, g)| (Some(p.as_str()), Some(g.as_str())))
            .collect();
        inserted.extend(f.insert(&refs).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inserted
}

/// The probe an idle follower runs at every poll, as the relay builds it.
fn probe_sql(f: &Fixture) -> String {
    use outbox_relay::dialect::{Columns, Dialect};
    use outbox_relay::ident::{Ident, TableName};
    let dialect = match f.db {
        Db::Postgres => Dialect::Postgres,
        Db::MySql => Dialect::MySql,
    };
    let cols = Columns {
        id: Ident::parse("id").unwrap(),
        payload: Ident::parse("payload").unwrap(),
        group: None,
        created_at: None,
        copy_created_at: false,
        payload_bytes: false,
        settled_only: false,
        shape: Default::default(),
    };
    dialect
        .statements(
            &TableName::parse(&f.table).unwrap(),
            &TableName::parse(&f.dead_letter).unwrap(),
            &cols,
            "bigint",
        )
        .probe
}

async fn the_idle_probe_reads_the_primary_key_alone(db: Db) {
    let Some(f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    f.insert_many(2000).await;
    let explain = match db {
        Db::Postgres => {
            f.pool.exec(format!("ANALYZE {}", f.table)).await;
            "EXPLAIN"
        }
        Db::MySql => "EXPLAIN FORMAT=JSON",
    };
    let plan = f
        .pool
        .rows(format!("{explain} {}", probe_sql(&f)))
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    match db {
        Db::Postgres => assert!(
            plan.contains("Index Only Scan using") && plan.contains("_pkey"),
            "{plan}"
        ),
        // InnoDB: the clustered primary key, read from its first entry.
        Db::MySql => assert!(plan.contains("PRIMARY"), "{plan}"),
    }
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("filesort"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_probe_reads_the_primary_key_alone_on_postgres() {
    the_idle_probe_reads_the_primary_key_alone(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_probe_reads_the_primary_key_alone_on_mariadb() {
    the_idle_probe_reads_the_primary_key_alone(Db::MySql).await;
}
