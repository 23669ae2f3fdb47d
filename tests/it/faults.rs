//! The guarantee under faults: relays as real processes, crashed
//! (SIGABRT, no cleanup) at every step boundary, paused past their lease,
//! and cut off from the database, then healed and drained. Every scenario
//! ends with the checker: lost = 0, unexpected = 0, table empty, every
//! ledger item SENT, and duplicates only where docs/design.md allows them.
//!
//! Sizes scale with `CHAOS_SCALE` (1 in `make test`, 10 in `make chaos`).
//! Needs the binary built with `--features faults`.

use crate::checker;
use crate::common;
use crate::proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use checker::{Verdict, out_of_order_groups};
use common::{Db, Fixture, Opts};
use outbox_relay::fault::POINTS;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::process::{Child, Command};

const LEASE_SECONDS: u64 = 30;

/// One scenario at a time: each runs up to eight relay processes against
/// the stand-ins on a two-core machine; two at once would turn overload
/// into timeouts (ambiguous sends) that say nothing about the relay.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scale() -> usize {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Starts `outbox-relay drain` as its own process with the fixture's
/// environment plus `extra`.
fn spawn(f: &Fixture, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.arg("drain")
        .envs(f.env())
        .env("LEASE_SECONDS", LEASE_SECONDS.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn outbox-relay")
}

struct Exit {
    code: Option<i32>,
    stderr: String,
}

/// Rows a relay reported as sent-or-maybe-sent but not marked: a timeout
/// or broken reply on the send, or a mark that failed. These, and only
/// these, may reach a standard queue twice.
fn unsure_rows(exits: &[Exit]) -> BTreeSet<String> {
    exits
        .iter()
        .flat_map(|e| e.stderr.lines())
        .filter(|l| {
            l.contains("not sent") || l.contains("sent but not marked") || l.contains("taken over")
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("row="))
                .map(str::to_owned)
        })
        .collect()
}

async fn finish(children: Vec<Child>) -> Vec<Exit> {
    let mut out = Vec::new();
    for c in children {
        let o = c.wait_with_output().await.unwrap();
        out.push(Exit {
            code: o.status.code(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    out
}

/// Every ledger item of the fixture's table: key → state.
async fn ledger_states(f: &Fixture) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let out = f
            .ddb
            .scan()
            .table_name(&f.claims_table)
            .set_exclusive_start_key(start.take())
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        for item in out.items() {
            let pk = item["pk"].as_s().unwrap();
            let key = pk.rsplit_once('#').unwrap().1.to_owned();
            states.insert(key, item["state"].as_s().unwrap().clone());
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    states
}

/// Heals: waits out the leases crashed relays left, then runs clean relays
/// until the table is empty.
/// Returns the rows the healing passes themselves logged as not surely
/// sent (an emulator timeout during a heal is an ambiguous send like any
/// other, and may repeat).
async fn heal(f: &Fixture, waited_since: Instant) -> BTreeSet<String> {
    let lease = Duration::from_secs(LEASE_SECONDS + 1);
    let waited = waited_since.elapsed();
    if waited < lease {
        tokio::time::sleep(lease - waited).await;
    }
    let mut last_left = f.rows_left().await;
    let mut unsure = BTreeSet::new();
    for round in 0..12 {
        let exits = finish(vec![spawn(f, &[]), spawn(f, &[])]).await;
        unsure.extend(unsure_rows(&exits));
        let left = f.rows_left().await;
        if left == 0 {
            return unsure;
        }
        // The last line of each relay's stderr says why a pass failed.
        eprintln!(
            "heal round {round}: {left} rows left; exits {:?}",
            exits
                .iter()
                .map(|e| (
                    e.code,
                    e.stderr
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect::<String>()
                ))
                .collect::<Vec<_>>()
        );
        // No progress: the rows are under leases of failed attempts (or
        // wait behind such rows in their FIFO group); the next scheduled
        // pass would find them free once the lease is over.
        let pause = if left == last_left {
            lease
        } else {
            Duration::from_secs(2)
        };
        last_left = left;
        tokio::time::sleep(pause).await;
    }
    panic!(
        "the table did not drain after healing: {} rows left",
        f.rows_left().await
    );
}

/// The closing checks every scenario shares: stops the scenario's consumer,
/// reads what is left on the queue, and judges it all.
async fn check_end(
    f: &Fixture,
    name: &str,
    inserted: &[String],
    allowed_duplicates: &BTreeSet<String>,
    consumer: Consumer,
) -> Verdict {
    let mut msgs = consumer.stop().await;
    assert_eq!(f.rows_left().await, 0, "{name}: table not empty");
    let states = ledger_states(f).await;
    let not_sent: Vec<_> = inserted
        .iter()
        .filter(|k| states.get(*k).map(String::as_str) != Some("SENT"))
        .collect();
    assert!(
        not_sent.is_empty(),
        "{name}: ledger items not SENT: {not_sent:?}"
    );
    msgs.extend(f.receive_all().await);
    // Messages a consumer's failed receive left in flight come back after
    // their visibility timeout: wait for the queue to be truly empty.
    let deadline = Instant::now() + Duration::from_secs(90);
    while f.queue_depth().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        msgs.extend(f.receive_all().await);
    }
    let v = Verdict::check(inserted, &msgs);
    println!("{}", v.line(name));
    assert!(v.lost.is_empty(), "{name}: LOST {:?}", v.lost);
    assert!(
        v.unexpected.is_empty(),
        "{name}: unexpected {:?}",
        v.unexpected
    );
    let bad: Vec<_> = v
        .duplicated
        .keys()
        .filter(|k| !allowed_duplicates.contains(*k))
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: duplicates outside the send→mark window: {bad:?}"
    );
    if f.opts.fifo {
        // What the consumer received, after SQS's own deduplication: a
        // FIFO queue carries every row exactly once.
        assert!(
            v.duplicated.is_empty(),
            "{name}: FIFO duplicates {:?}",
            v.duplicated
        );
        let broken = out_of_order_groups(&msgs);
        assert!(broken.is_empty(), "{name}: groups out of order: {broken:?}");
    }
    v
}

async fn insert_grouped(f: &Fixture, groups: usize, per_group: usize) -> Vec<String> {
    // Interleaved, as real traffic is: row i belongs to group i % groups.
    let n = groups * per_group;
    for start in (0..n).step_by(500) {
        let values: Vec<String> = (start..(start + 500).min(n))
            .map(|i| format!("('{{\"n\":{i}}}', 'g{}')", i % groups))
            .collect();
        f.pool
            .exec(format!(
                "INSERT INTO {} (payload, group_key) VALUES {}",
                f.table,
                values.join(",")
            ))
            .await;
    }
    let cast = if f.db == Db::Postgres {
        "id::text"
    } else {
        "CAST(id AS CHAR)"
    };
    f.pool
        .rows(format!("SELECT {cast} FROM {} ORDER BY id", f.table))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// A consumer draining the queue while relays run, as production has, so
/// what the checker judges is what a consumer received, FIFO deduplication
/// included. Several receivers, so eight relays' sends never outrun them;
/// short polls, so stopping them is prompt.
struct Consumer {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    got: Inbox,
}

/// What the receivers took, numbered in arrival order.
type Inbox = Arc<std::sync::Mutex<Vec<(u64, common::Received)>>>;

/// Receivers per consumer.
const RECEIVERS: usize = 4;

impl Consumer {
    fn start(f: &Fixture) -> Consumer {
        let stop = Arc::new(AtomicBool::new(false));
        let got: Inbox = Arc::default();
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks = (0..RECEIVERS)
            .map(|_| receive_loop(f, stop.clone(), got.clone(), seq.clone()))
            .collect();
        Consumer { stop, tasks, got }
    }

    /// Stops once the queue looks empty; what it received, in delivery
    /// order.
    async fn stop(self) -> Vec<common::Received> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut got = std::mem::take(&mut *self.got.lock().unwrap());
        got.sort_by_key(|(seq, _)| *seq);
        got.into_iter().map(|(_, m)| m).collect()
    }
}

/// One receiver: receive, record, batch-delete, until stopped and idle.
/// Messages are numbered as they arrive. A FIFO group's next message is
/// only handed out after the previous one is deleted, which is after it
/// was numbered: sorting by number keeps every group's delivery order.
fn receive_loop(
    f: &Fixture,
    stop: Arc<AtomicBool>,
    got: Inbox,
    seq: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (sqs, url) = (f.sqs.clone(), f.queue_url.clone());
    tokio::spawn(async move {
        loop {
            let out = match sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                // Short: a receive whose reply is lost must not hide its
                // messages from the final count for long.
                .visibility_timeout(20)
                .wait_time_seconds(0)
                .send()
                .await
            {
                Ok(out) => out,
                // The stand-in busy or a reply lost: the messages come back after
                // their visibility timeout.
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if out.messages().is_empty() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // One batch delete per receive: one request instead of ten.
            let mut entries = Vec::new();
            {
                let mut got = got.lock().unwrap();
                for (i, m) in out.messages().iter().enumerate() {
                    got.push((
                        seq.fetch_add(1, Ordering::SeqCst),
                        common::Received::from_sqs(m),
                    ));
                    entries.push(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .unwrap(),
                    );
                }
            }
            if !entries.is_empty() {
                // A failed delete only means a redelivery, which the
                // checker tells apart by message id.
                let _ = sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
            }
        }
    })
}

async fn concurrent_relays_without_faults(fifo: bool) {
    let _one_at_a_time = SERIAL.lock().await;
    let f = Fixture::new(
        Db::Postgres,
        Opts {
            fifo,
            group_column: fifo,
            batch_size: Some(50),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    // make test: 1,000 rows (FIFO 400); make chaos: 10,000.
    let rows = if fifo && scale() == 1 {
        400
    } else {
        1000 * scale()
    };
    let inserted = insert_grouped(&f, 100, rows / 100).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let exits = finish((0..8).map(|_| spawn(&f, &[])).collect()).await;
    // A pass may fail on an emulator timeout (Lambda would retry it): the
    // check below is what matters, after the next passes have run.
    let failed = exits.iter().filter(|e| e.code != Some(0)).count();
    println!("passes failed on emulator timeouts: {failed}");
    // Nothing was injected, but the stand-ins under eight relays can answer
    // late: a send that timed out is a real ambiguous send, and only rows
    // the relays reported so may repeat on a standard queue.
    let mut unsure = unsure_rows(&exits);
    println!("rows with an emulator timeout: {}", unsure.len());
    if f.rows_left().await > 0 {
        unsure.extend(heal(&f, started).await);
    }
    let name = format!(
        "8 relays x {rows} rows, {}",
        if fifo { "FIFO" } else { "standard" }
    );
    check_end(&f, &name, &inserted, &unsure, consumer).await;
}

/// Scenario 3: 10 % of sends are ambiguous: SQS enqueues them, the relay
/// sees a broken connection.
async fn ambiguous_sends(fifo: bool) {
    let _one_at_a_time = SERIAL.lock().await;
    let mut f = Fixture::new(
        Db::Postgres,
        Opts {
            fifo,
            group_column: fifo,
            batch_size: Some(20),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    let proxy = proxy::FaultProxy::for_stack().await;
    proxy.faults().set_ambiguous_send_rate(0.10);
    f.extra_env.extend(proxy.endpoint_env());
    // make test: 400 rows; make chaos: 2,000.
    let per_group = (20 * scale()).min(100);
    let inserted = insert_grouped(&f, 20, per_group).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    finish((0..4).map(|_| spawn(&f, &[])).collect::<Vec<_>>()).await;
    let faulted = proxy.count("SendMessageBatch").faulted;
    assert!(
        faulted > 0,
        "no send was made ambiguous: the scenario did not run"
    );
    proxy.faults().heal();
    let _ = heal(&f, started).await;
    let name = format!(
        "{} ambiguous sends 10 %, {} rows ({faulted} sends broken)",
        if fifo { "FIFO" } else { "standard" },
        inserted.len()
    );
    // On FIFO every resend falls in the deduplication window: check_end
    // asserts no duplicate at all. Standard: any row may have gone twice
    // through the SDK's own retry of a broken send.
    let all: BTreeSet<String> = inserted.iter().cloned().collect();
    check_end(&f, &name, &inserted, &all, consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_sends_lose_nothing_on_a_standard_queue() {
    ambiguous_sends(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_sends_lose_and_double_nothing_on_a_fifo_queue() {
    ambiguous_sends(true).await;
}

/// Scenario 5: 20 % of DynamoDB writes throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_ledger_writes_lose_and_double_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let mut f = Fixture::new(
        Db::Postgres,
        Opts {
            batch_size: Some(25),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    let proxy = proxy::FaultProxy::for_stack().await;
    proxy.faults().set_ddb_throttle_rate(0.20);
    f.extra_env.extend(proxy.endpoint_env());
    let inserted = f.insert_many(400 * scale()).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let mut exits = Vec::new();
    // The schedule's next passes, while the throttling goes on.
    for _ in 0..5 {
        exits.extend(finish(vec![spawn(&f, &[]), spawn(&f, &[])]).await);
        if f.rows_left().await == 0 {
            break;
        }
    }
    // Claims (and fenced marks) are UpdateItems; batched marks BatchWriteItems.
    let throttled = proxy.count("UpdateItem").faulted + proxy.count("BatchWriteItem").faulted;
    assert!(
        throttled > 0,
        "nothing was throttled: the scenario did not run"
    );
    // No claim outlives its lease: every CLAIMED item's lease ends within
    // LEASE_SECONDS of now (retries are bounded by the operation timeout).
    let horizon = common::now_ms() + LEASE_SECONDS * 1000;
    for (key, state) in ledger_states(&f).await {
        if state == "CLAIMED" {
            let lease = f.ledger(&key).await.unwrap()["lease_until_ms"]
                .as_n()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            assert!(lease <= horizon, "claim of {key} outlives its lease");
        }
    }
    proxy.faults().heal();
    let healed = heal(&f, started).await;
    let mut unsure = unsure_rows(&exits);
    unsure.extend(healed);
    let name = format!(
        "20 % throttled DynamoDB writes, {} rows ({throttled} writes throttled)",
        inserted.len()
    );
    let v = check_end(&f, &name, &inserted, &unsure, consumer).await;
    println!("rows sent but not marked despite retries: {}", unsure.len());
    assert!(v.duplicated.len() <= unsure.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_relays_at_once_lose_and_double_nothing_on_a_standard_queue() {
    concurrent_relays_without_faults(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_relays_at_once_lose_and_double_nothing_on_a_fifo_queue() {
    concurrent_relays_without_faults(true).await;
}

/// Scenario 2: relays killed at each fault point in turn, four at a time.
async fn relays_crashed_at_every_step(db: Db, fifo: bool) {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(f) = Fixture::new(
        db,
        Opts {
            fifo,
            group_column: true,
            batch_size: Some(20),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    // FIFO: 50 groups of 4 rows (make chaos: 50 x 40 = 2,000);
    // standard: 400 rows (make chaos: 4,000).
    let (groups, per_group) = if fifo {
        (50, 4 * scale())
    } else {
        (20, 20 * scale())
    };
    let inserted = insert_grouped(&f, groups, per_group).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let mut crashed = 0;
    for wave in POINTS.chunks(4) {
        let children = wave
            .iter()
            .enumerate()
            .map(|(i, point)| spawn(&f, &[("OUTBOX_FAULTS", format!("{point}=abort@{}", i + 2))]))
            .collect();
        for e in finish(children).await {
            if e.code.is_none() || e.stderr.contains("fault: abort") {
                crashed += 1;
            }
        }
    }
    assert!(crashed >= 4, "only {crashed} relays crashed");
    // Rows the crashes left claimed but not SENT: the only ones a
    // standard queue may see twice (the send→mark window).
    let before = ledger_states(&f).await;
    let mut claimed: BTreeSet<String> = before
        .iter()
        .filter(|(_, s)| *s == "CLAIMED")
        .map(|(k, _)| k.clone())
        .collect();
    // No row left the table unless its ledger item says SENT.
    let present: BTreeSet<String> = {
        let cast = if f.db == Db::Postgres {
            "id::text"
        } else {
            "CAST(id AS CHAR)"
        };
        f.pool
            .rows(format!("SELECT {cast} FROM {}", f.table))
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    };
    for k in inserted.iter().filter(|k| !present.contains(*k)) {
        assert_eq!(
            before.get(k).map(String::as_str),
            Some("SENT"),
            "row {k} deleted before SENT"
        );
    }
    claimed.extend(heal(&f, started).await);
    let name = format!(
        "{db:?} {} crash at every step, {} rows",
        if fifo { "FIFO" } else { "standard" },
        inserted.len()
    );
    check_end(&f, &name, &inserted, &claimed, consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_at_every_step_lose_nothing_on_a_standard_queue() {
    relays_crashed_at_every_step(Db::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_at_every_step_lose_nothing_and_keep_group_order_on_fifo() {
    relays_crashed_at_every_step(Db::Postgres, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_at_every_step_lose_nothing_and_keep_group_order_on_mariadb() {
    relays_crashed_at_every_step(Db::MySql, true).await;
}

/// Scenario 4: a relay frozen past its lease after sending; another takes
/// the rows over; the frozen one's mark is refused by the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_paused_past_its_lease_is_fenced_off_when_it_resumes() {
    paused_past_its_lease(Db::Postgres).await;
}

/// The same on MariaDB, which has no idle-in-transaction timeout: the
/// relay's session `wait_timeout` (the lease) ends the frozen session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_paused_past_its_lease_on_mariadb_frees_its_rows_after_the_lease() {
    paused_past_its_lease(Db::MySql).await;
}

async fn paused_past_its_lease(db: Db) {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(10),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let inserted = f.insert_many(10).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let pause = (LEASE_SECONDS + 8) * 1000;
    let frozen = spawn(
        &f,
        &[("OUTBOX_FAULTS", format!("after-send=pause({pause})"))],
    );
    // Past the lease, the server ends the frozen relay's idle transaction
    // (PostgreSQL: idle_in_transaction_session_timeout; MySQL/MariaDB: the
    // session's wait_timeout), so its rows unlock.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 2)).await;
    let rescuer = finish(vec![spawn(&f, &[])]).await;
    assert_eq!(rescuer[0].code, Some(0), "{}", rescuer[0].stderr);
    assert_eq!(f.rows_left().await, 0, "the rescuer took the rows over");
    let frozen = finish(vec![frozen]).await.remove(0);
    assert!(
        frozen.stderr.contains("taken over"),
        "the fence did not refuse the stale mark: {}",
        frozen.stderr
    );
    let states = ledger_states(&f).await;
    assert!(inserted.iter().all(|k| states[k] == "SENT"));
    let _ = heal(&f, started).await;
    check_end(
        &f,
        "paused past the lease",
        &inserted,
        &inserted.iter().cloned().collect(),
        consumer,
    )
    .await;
}

/// Scenario 6: the relays' database connections are terminated every
/// 200 ms while they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_database_connections_lose_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let mut f = Fixture::new(
        Db::Postgres,
        Opts {
            batch_size: Some(25),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    let app = format!("relay_{}", &f.table[7..]);
    let url = format!("{}?application_name={app}", f.url);
    f.extra_env.insert("DATABASE_URL".into(), url);
    let inserted = f.insert_many(500 * scale()).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let killer_pool = f.pool.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let killer = tokio::spawn(async move {
        let mut kills = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            kills += killer_pool
                .count(format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"))
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        kills
    });
    let mut failed_passes = 0;
    let mut unsure = BTreeSet::new();
    for _ in 0..40 {
        let exits = finish(vec![spawn(&f, &[]), spawn(&f, &[])]).await;
        failed_passes += exits.iter().filter(|e| e.code != Some(0)).count();
        unsure.extend(unsure_rows(&exits));
        if f.rows_left().await == 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.unwrap();
    println!("terminated {kills} connections; {failed_passes} passes failed");
    assert!(
        kills > 0,
        "no connection was terminated: the scenario did not run"
    );
    unsure.extend(heal(&f, started).await);
    // A lost connection costs a pass, never a resend: the database is not
    // in the send→mark window, so only sends the relays themselves
    // reported as unsure (an emulator timeout) may repeat.
    let v = check_end(
        &f,
        "database connections terminated every 200 ms",
        &inserted,
        &unsure,
        consumer,
    )
    .await;
    println!("duplicates under connection loss: {}", v.duplicated.len());
}

/// What a proxy-fault scenario found, beyond [`check_end`]'s verdict.
struct ProxyRun {
    verdict: Verdict,
    /// Dead letters (row key, reason).
    quarantined: Vec<(String, String)>,
    /// Requests the proxy faulted, per operation.
    faulted: BTreeMap<String, u64>,
}

/// A fault no stand-in produces, injected by the proxy while two relays
/// run a few passes; then healed and drained. Nothing is lost, and a row
/// is quarantined only for a fault that blames the message: `quarantinable`
/// says which reasons may appear in the dead-letter table (none if empty).
async fn under_proxy_fault(fifo: bool, plan: proxy::FaultPlan, quarantinable: &str) -> ProxyRun {
    let _one_at_a_time = SERIAL.lock().await;
    let mut f = Fixture::new(
        Db::Postgres,
        Opts {
            fifo,
            group_column: fifo,
            batch_size: Some(20),
            ..Opts::default()
        },
    )
    .await
    .unwrap();
    let proxy = proxy::FaultProxy::for_stack().await;
    proxy.faults().set_plan(plan);
    f.extra_env.extend(proxy.endpoint_env());
    let inserted = insert_grouped(&f, 10, 20 * scale()).await;
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let mut exits = Vec::new();
    for _ in 0..3 {
        exits.extend(finish(vec![spawn(&f, &[]), spawn(&f, &[])]).await);
        if f.rows_left().await == 0 {
            break;
        }
    }
    let faulted: BTreeMap<String, u64> = proxy
        .counts()
        .into_iter()
        .filter(|(_, c)| c.faulted > 0)
        .map(|(op, c)| (op, c.faulted))
        .collect();
    assert!(
        !faulted.is_empty(),
        "no request was faulted: the scenario did not run"
    );
    proxy.faults().heal();
    let mut unsure = unsure_rows(&exits);
    unsure.extend(heal(&f, started).await);
    let quarantined = f.dead_letters().await;
    for (key, reason) in &quarantined {
        assert!(
            !quarantinable.is_empty() && reason.contains(quarantinable),
            "row {key} quarantined for a fault that does not blame it: {reason}"
        );
    }
    let gone: BTreeSet<&String> = quarantined.iter().map(|(k, _)| k).collect();
    let expected: Vec<String> = inserted
        .iter()
        .filter(|k| !gone.contains(k))
        .cloned()
        .collect();
    let name = format!(
        "{} {faulted:?}, {} rows, {} quarantined",
        if fifo { "FIFO" } else { "standard" },
        inserted.len(),
        quarantined.len()
    );
    let verdict = check_end(&f, &name, &expected, &unsure, consumer).await;
    ProxyRun {
        verdict,
        quarantined,
        faulted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_applied_whose_replies_were_lost_lose_and_double_nothing() {
    let run = under_proxy_fault(
        false,
        proxy::FaultPlan {
            claim_reply_lost_rate: 0.2,
            ..Default::default()
        },
        "",
    )
    .await;
    // No message had gone out when a claim's reply was lost.
    assert!(run.verdict.duplicated.is_empty(), "{:?}", run.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_applied_whose_replies_were_lost_lose_nothing_on_fifo() {
    let run = under_proxy_fault(
        true,
        proxy::FaultPlan {
            mark_reply_lost_rate: 0.2,
            ..Default::default()
        },
        "",
    )
    .await;
    assert!(run.faulted.contains_key("BatchWriteItem") || run.faulted.contains_key("UpdateItem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_batch_marks_fall_back_to_fenced_marks_and_lose_nothing() {
    let run = under_proxy_fault(
        false,
        proxy::FaultPlan {
            batch_unprocessed_rate: 1.0,
            ..Default::default()
        },
        "",
    )
    .await;
    assert!(run.faulted.contains_key("BatchWriteItem"));
    // The fenced mark of each row stands in for the unprocessed batch.
    assert!(run.verdict.duplicated.is_empty(), "{:?}", run.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_failed_by_sqs_itself_are_retried_never_quarantined_and_keep_fifo_order() {
    under_proxy_fault(
        true,
        proxy::FaultPlan {
            entry_failure_rate: 0.2,
            entry_failure: proxy::EntryFailure {
                code: "InternalError",
                sender_fault: false,
            },
            ..Default::default()
        },
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_sqs_refuses_as_the_senders_fault_are_quarantined_with_the_reason() {
    let run = under_proxy_fault(
        false,
        proxy::FaultPlan {
            entry_failure_rate: 0.1,
            entry_failure: proxy::EntryFailure {
                code: "InvalidParameterValue",
                sender_fault: true,
            },
            ..Default::default()
        },
        "InvalidParameterValue",
    )
    .await;
    assert!(
        !run.quarantined.is_empty(),
        "a refused message is a poison row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_failures_of_entries_are_retried_never_quarantined() {
    under_proxy_fault(
        false,
        proxy::FaultPlan {
            entry_failure_rate: 0.3,
            entry_failure: proxy::EntryFailure {
                code: "KMS.ThrottlingException",
                sender_fault: true,
            },
            ..Default::default()
        },
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sends_are_retried_never_quarantined() {
    for code in ["ThrottlingException", "RequestThrottled"] {
        under_proxy_fault(
            false,
            proxy::FaultPlan {
                sqs_throttle_rate: 0.3,
                sqs_throttle_code: code,
                ..Default::default()
            },
            "",
        )
        .await;
    }
}

/// Starts `outbox-relay follow` (polling every 100 ms) as its own process.
fn spawn_follower(f: &Fixture) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.arg("follow")
        .envs(f.env())
        .env("LEASE_SECONDS", LEASE_SECONDS.to_string())
        .env("POLL_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn outbox-relay follow")
}

/// Two followers while a producer inserts; one is killed with SIGKILL
/// mid-stream (no cleanup at all), the other keeps following and, once
/// the dead one's leases end, takes its rows over.
async fn a_follower_killed_mid_stream(db: Db) {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(f) = Fixture::new(
        db,
        Opts {
            batch_size: Some(10),
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let consumer = Consumer::start(&f);
    let mut victim = spawn_follower(&f);
    let survivor = spawn_follower(&f);
    let mut inserted = Vec::new();
    let waves = 20 * scale();
    for wave in 0..waves {
        let rows: Vec<String> = (0..10)
            .map(|i| format!("{{\"n\":{}}}", wave * 10 + i))
            .collect();
        let refs: Vec<(Option<&str>, Option<&str>)> =
            rows.iter().map(|p| (Some(p.as_str()), None)).collect();
        inserted.extend(f.insert(&refs).await);
        if wave == waves / 2 {
            victim.start_kill().expect("SIGKILL the follower");
            let _ = victim.wait().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the victim left claimed but unmarked may reach a standard
    // queue twice (the send→mark window); the survivor's own claims in
    // flight are in this set too, which only widens what is allowed.
    let claimed: BTreeSet<String> = ledger_states(&f)
        .await
        .into_iter()
        .filter(|(_, s)| s == "CLAIMED")
        .map(|(k, _)| k)
        .collect();
    // The survivor takes the victim's rows over once their lease ends.
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS + 60);
    while f.rows_left().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pid = survivor.id().expect("the survivor runs").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exits = finish(vec![survivor]).await;
    assert_eq!(exits[0].code, Some(0), "stderr: {}", exits[0].stderr);
    let mut allowed = claimed;
    allowed.extend(unsure_rows(&exits));
    if f.rows_left().await > 0 {
        allowed.extend(heal(&f, started).await);
    }
    let name = format!("{db:?} follower killed mid-stream, {} rows", inserted.len());
    check_end(&f, &name, &inserted, &allowed, consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_stream_loses_nothing_on_postgres() {
    a_follower_killed_mid_stream(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_stream_loses_nothing_on_mariadb() {
    a_follower_killed_mid_stream(Db::MySql).await;
}
