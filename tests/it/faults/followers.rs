//! Scenario 7: two followers while a producer inserts; one is killed with
//! SIGKILL mid-stream (no cleanup at all), the other keeps following and,
//! once the dead one's leases end, takes its rows over.

use std::time::{Duration, Instant};

use tokio::process::Child;

use super::processes::{spawn_follower, terminate, unsure_rows};
use super::scenario::{Rows, Scenario, Setup, claimed, ledger_states};
use super::{LEASE_SECONDS, scale};
use crate::common::{Db, Opts};

async fn a_follower_killed_mid_stream(db: Db) {
    let Some(mut s) = (Setup {
        db,
        opts: Opts::batches_of(10),
        rows: Rows::Later,
        faults: None,
    })
    .start()
    .await
    else {
        return;
    };
    let victim = spawn_follower(&s.f);
    let survivor = spawn_follower(&s.f);
    produce_and_kill(&mut s, victim).await;
    // What the victim left claimed but unmarked may reach a standard
    // queue twice (the send→mark window); the survivor's own claims in
    // flight are in this set too, which only widens what is allowed.
    let mut allowed = claimed(&ledger_states(&s.f).await);
    wait_for_takeover(&s).await;
    let exit = terminate(survivor).await;
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);
    allowed.extend(unsure_rows(&[exit]));
    if s.f.rows_left().await > 0 {
        allowed.extend(s.heal().await);
    }
    let name = format!(
        "{db:?} follower killed mid-stream, {} rows",
        s.inserted.len()
    );
    s.end(&name, &allowed).await;
}

/// The producer: waves of 10 rows, 50 ms apart; halfway through, the
/// victim is killed with SIGKILL.
async fn produce_and_kill(s: &mut Scenario, mut victim: Child) {
    let waves = 20 * scale();
    for wave in 0..waves {
        let rows: Vec<String> = (0..10)
            .map(|i| format!("{{\"n\":{}}}", wave * 10 + i))
            .collect();
        let refs: Vec<(Option<&str>, Option<&str>)> =
            rows.iter().map(|p| (Some(p.as_str()), None)).collect();
        s.inserted.extend(s.f.insert(&refs).await);
        if wave == waves / 2 {
            victim.start_kill().expect("SIGKILL the follower");
            let _ = victim.wait().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (a lease and a minute at most) for the survivor to empty the
/// table: it takes the victim's rows over once their lease ends.
async fn wait_for_takeover(s: &Scenario) {
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS + 60);
    while s.f.rows_left().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_stream_loses_nothing_on_postgres() {
    a_follower_killed_mid_stream(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_stream_loses_nothing_on_mariadb() {
    a_follower_killed_mid_stream(Db::MySql).await;
}
