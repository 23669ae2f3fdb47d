//! A scenario's frame: its start (one scenario at a time, a fixture, the
//! fault proxy if any, the rows, a consumer), the heal that drains what
//! the faults left, and the closing checks every scenario shares.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::{Mutex, MutexGuard};

use super::LEASE_SECONDS;
use super::consumer::Consumer;
use super::processes::{two_relays, unsure_rows};
use crate::checker::Verdict;
use crate::common::{Db, Fixture, Opts};
use crate::proxy::{FaultPlan, FaultProxy};

/// One scenario at a time: each runs up to eight relay processes against
/// the stand-ins on a two-core machine; two at once would turn overload
/// into timeouts (ambiguous sends) that say nothing about the relay.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Which rows a scenario inserts before its relays start.
pub(super) enum Rows {
    /// Interleaved, as real traffic is: row i belongs to group i % groups.
    Grouped { groups: usize, per_group: usize },
    /// Without a group.
    Plain(usize),
    /// None: the scenario's own producer inserts them while relays run.
    Later,
}

/// What a scenario runs against.
pub(super) struct Setup {
    pub db: Db,
    pub opts: Opts,
    pub rows: Rows,
    /// Routes the relays through the fault proxy with this plan.
    pub faults: Option<FaultPlan>,
}

/// A started scenario: its rows are in, the consumer is draining.
pub(super) struct Scenario {
    pub f: Fixture,
    pub inserted: Vec<String>,
    /// When the relays could first have claimed rows (the leases they
    /// leave end at the latest a lease after this).
    pub started: Instant,
    pub consumer: Consumer,
    pub proxy: Option<FaultProxy>,
    _turn: MutexGuard<'static, ()>,
}

impl Setup {
    /// Takes the scenario's turn and starts it; None when its database is
    /// not configured (MariaDB skipped).
    pub async fn start(self) -> Option<Scenario> {
        let turn = SERIAL.lock().await;
        let mut f = Fixture::new(self.db, self.opts).await?;
        let proxy = match self.faults {
            Some(plan) => {
                let proxy = FaultProxy::for_stack().await;
                proxy.faults().set_plan(plan);
                f.extra_env.extend(proxy.endpoint_env());
                Some(proxy)
            }
            None => None,
        };
        let inserted = match self.rows {
            Rows::Grouped { groups, per_group } => insert_grouped(&f, groups, per_group).await,
            Rows::Plain(n) => f.insert_many(n).await,
            Rows::Later => Vec::new(),
        };
        Some(Scenario {
            started: Instant::now(),
            consumer: Consumer::start(&f),
            f,
            inserted,
            proxy,
            _turn: turn,
        })
    }
}

impl Scenario {
    /// The fault proxy of a scenario set up with faults.
    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("a scenario with faults")
    }

    /// "FIFO" or "standard", for the scenario's name.
    pub fn queue_kind(&self) -> &'static str {
        if self.f.opts.fifo { "FIFO" } else { "standard" }
    }

    /// Turns the proxy's faults off and drains the table with clean
    /// relays; the rows the healing passes logged as not surely sent.
    pub async fn heal(&self) -> BTreeSet<String> {
        if let Some(proxy) = &self.proxy {
            proxy.faults().heal();
        }
        heal(&self.f, self.started).await
    }

    /// The closing checks (see [`check_end`]) against every inserted row.
    pub async fn end(self, name: &str, allowed_duplicates: &BTreeSet<String>) -> Verdict {
        check_end(
            &self.f,
            name,
            &self.inserted,
            allowed_duplicates,
            self.consumer,
        )
        .await
    }
}

async fn insert_grouped(f: &Fixture, groups: usize, per_group: usize) -> Vec<String> {
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
    f.row_ids().await
}

/// Every ledger item of the fixture's table: key → state.
pub(super) async fn ledger_states(f: &Fixture) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
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

/// The rows whose ledger item says CLAIMED: claimed, maybe sent, not
/// marked. After a crash, the only ones a standard queue may see twice
/// (the send→mark window).
pub(super) fn claimed(states: &BTreeMap<String, String>) -> BTreeSet<String> {
    states
        .iter()
        .filter(|(_, s)| *s == "CLAIMED")
        .map(|(k, _)| k.clone())
        .collect()
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
        let exits = two_relays(f).await;
        unsure.extend(unsure_rows(&exits));
        let left = f.rows_left().await;
        if left == 0 {
            return unsure;
        }
        let why: Vec<_> = exits.iter().map(|e| e.why()).collect();
        eprintln!("heal round {round}: {left} rows left; exits {why:?}");
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
pub(super) async fn check_end(
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
    msgs.extend(receive_the_rest(f).await);
    let v = Verdict::check(inserted, &msgs);
    println!("{}", v.line(name));
    v.assert_holds(name, allowed_duplicates);
    if f.opts.fifo {
        // What the consumer received, after SQS's own deduplication: a
        // FIFO queue carries every row exactly once.
        v.assert_fifo(name, &msgs);
    }
    v
}

/// Whatever is still on the queue. Messages a consumer's failed receive
/// left in flight come back after their visibility timeout: waits (up to
/// 90 s) for the queue to be truly empty.
async fn receive_the_rest(f: &Fixture) -> Vec<crate::common::Received> {
    let mut msgs = f.receive_all().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while f.queue_depth().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        msgs.extend(f.receive_all().await);
    }
    msgs
}
