//! Relays that stop mid-pass without any cleanup: killed (SIGABRT) at
//! every step boundary, or frozen past their lease. Nothing is lost, no
//! row leaves the table before its ledger item says SENT, and a frozen
//! relay's late mark is refused by the fence.

use std::collections::BTreeSet;
use std::time::Duration;

use outbox_relay::fault::POINTS;

use super::processes::{finish, spawn};
use super::scenario::{Rows, Scenario, Setup, claimed, ledger_states};
use super::{LEASE_SECONDS, scale};
use crate::common::{Db, Opts};

/// Scenario 2: relays killed at each fault point in turn, four at a time.
async fn relays_crashed_at_every_step(db: Db, fifo: bool) {
    // FIFO: 50 groups of 4 rows (make chaos: 50 x 40 = 2,000);
    // standard: 400 rows (make chaos: 4,000).
    let (groups, per_group) = if fifo {
        (50, 4 * scale())
    } else {
        (20, 20 * scale())
    };
    let Some(s) = (Setup {
        db,
        opts: Opts {
            fifo,
            group_column: true,
            batch_size: Some(20),
            ..Opts::default()
        },
        rows: Rows::Grouped { groups, per_group },
        faults: None,
    })
    .start()
    .await
    else {
        return;
    };
    let crashed = crash_at_every_point(&s).await;
    assert!(crashed >= 4, "only {crashed} relays crashed");
    let mut allowed = crash_leftovers(&s).await;
    allowed.extend(s.heal().await);
    let name = format!(
        "{db:?} {} crash at every step, {} rows",
        s.queue_kind(),
        s.inserted.len()
    );
    s.end(&name, &allowed).await;
}

/// Runs relays that abort at each fault point (the n-th time they reach
/// it, n = 2..=5, so they get some work done first), four at a time; how
/// many did crash.
async fn crash_at_every_point(s: &Scenario) -> usize {
    let mut crashed = 0;
    for wave in POINTS.chunks(4) {
        let children = wave
            .iter()
            .enumerate()
            .map(|(i, point)| {
                spawn(
                    &s.f,
                    &[("OUTBOX_FAULTS", format!("{point}=abort@{}", i + 2))],
                )
            })
            .collect();
        for e in finish(children).await {
            if e.code.is_none() || e.stderr.contains("fault: abort") {
                crashed += 1;
            }
        }
    }
    crashed
}

/// Checks that no row left the table unless its ledger item says SENT;
/// returns the rows the crashes left claimed but not SENT, the only ones
/// a standard queue may see twice (the send→mark window).
async fn crash_leftovers(s: &Scenario) -> BTreeSet<String> {
    let states = ledger_states(&s.f).await;
    let present: BTreeSet<String> = s.f.row_ids().await.into_iter().collect();
    for k in s.inserted.iter().filter(|k| !present.contains(*k)) {
        assert_eq!(
            states.get(k).map(String::as_str),
            Some("SENT"),
            "row {k} deleted before SENT"
        );
    }
    claimed(&states)
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
    let Some(s) = (Setup {
        db,
        opts: Opts::batches_of(10),
        rows: Rows::Plain(10),
        faults: None,
    })
    .start()
    .await
    else {
        return;
    };
    let pause = (LEASE_SECONDS + 8) * 1000;
    let frozen = spawn(
        &s.f,
        &[("OUTBOX_FAULTS", format!("after-send=pause({pause})"))],
    );
    // Past the lease, the server ends the frozen relay's idle transaction
    // (PostgreSQL: idle_in_transaction_session_timeout; MySQL/MariaDB: the
    // session's wait_timeout), so its rows unlock.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 2)).await;
    let rescuer = finish(vec![spawn(&s.f, &[])]).await;
    assert_eq!(rescuer[0].code, Some(0), "{}", rescuer[0].stderr);
    assert_eq!(s.f.rows_left().await, 0, "the rescuer took the rows over");
    let frozen = finish(vec![frozen]).await.remove(0);
    assert!(
        frozen.stderr.contains("taken over"),
        "the fence did not refuse the stale mark: {}",
        frozen.stderr
    );
    let states = ledger_states(&s.f).await;
    assert!(s.inserted.iter().all(|k| states[k] == "SENT"));
    let _ = s.heal().await;
    // Every row may have gone twice: sent by the frozen relay, then by the
    // rescuer.
    let all = s.inserted.iter().cloned().collect();
    s.end("paused past the lease", &all).await;
}
