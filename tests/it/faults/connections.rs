//! Scenario 6: the relays' database connections are terminated every
//! 200 ms while they run. A lost connection costs a pass, never a resend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::processes::{passes, unsure_rows};
use super::scale;
use super::scenario::{Rows, Setup};
use crate::common::{Db, Opts, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_database_connections_lose_nothing() {
    let mut s = Setup {
        db: Db::Postgres,
        opts: Opts::batches_of(25),
        rows: Rows::Plain(500 * scale()),
        faults: None,
    }
    .start()
    .await
    .expect("PostgreSQL is configured");
    // The relays name their sessions, so the killer finds theirs alone.
    let app = format!("relay_{}", &s.f.table[7..]);
    let url = format!("{}?application_name={app}", s.f.url);
    s.f.extra_env.insert("DATABASE_URL".into(), url);
    let killer = Killer::start(s.f.pool.clone(), app);
    let exits = passes(&s.f, 40).await;
    let failed_passes = exits.iter().filter(|e| e.failed()).count();
    let kills = killer.stop().await;
    println!("terminated {kills} connections; {failed_passes} passes failed");
    assert!(
        kills > 0,
        "no connection was terminated: the scenario did not run"
    );
    let mut unsure = unsure_rows(&exits);
    unsure.extend(s.heal().await);
    // The database is not in the send→mark window, so only sends the
    // relays themselves reported as unsure (an emulator timeout) may
    // repeat.
    let v = s
        .end("database connections terminated every 200 ms", &unsure)
        .await;
    println!("duplicates under connection loss: {}", v.duplicated.len());
}

/// Terminates every session named `app` every 200 ms until stopped.
struct Killer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<i64>,
}

impl Killer {
    fn start(pool: Pool, app: String) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut kills = 0;
            while !stopped.load(Ordering::Relaxed) {
                kills += pool
                    .count(format!(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = '{app}'"
                    ))
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            kills
        });
        Killer { stop, task }
    }

    /// Stops; how many sessions it terminated.
    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
