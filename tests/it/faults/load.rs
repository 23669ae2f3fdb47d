//! Scenario 1: eight relays at once and no fault injected. Only the load
//! itself can make a send ambiguous (the stand-ins answer late), and only
//! the rows the relays reported so may repeat.

use super::processes::{finish, spawn, unsure_rows};
use super::scale;
use super::scenario::{Rows, Setup};
use crate::common::{Db, Opts};

async fn concurrent_relays_without_faults(fifo: bool) {
    // make test: 1,000 rows (FIFO 400); make chaos: 10,000.
    let rows = if fifo && scale() == 1 {
        400
    } else {
        1000 * scale()
    };
    let s = Setup {
        db: Db::Postgres,
        opts: Opts {
            fifo,
            group_column: fifo,
            batch_size: Some(50),
            ..Opts::default()
        },
        rows: Rows::Grouped {
            groups: 100,
            per_group: rows / 100,
        },
        faults: None,
    }
    .start()
    .await
    .expect("PostgreSQL is configured");
    let exits = finish((0..8).map(|_| spawn(&s.f, &[])).collect()).await;
    // A pass may fail on an emulator timeout (Lambda would retry it): the
    // check below is what matters, after the next passes have run.
    let failed = exits.iter().filter(|e| e.failed()).count();
    println!("passes failed on emulator timeouts: {failed}");
    let mut unsure = unsure_rows(&exits);
    println!("rows with an emulator timeout: {}", unsure.len());
    if s.f.rows_left().await > 0 {
        unsure.extend(s.heal().await);
    }
    let name = format!("8 relays x {rows} rows, {}", s.queue_kind());
    s.end(&name, &unsure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_relays_at_once_lose_and_double_nothing_on_a_standard_queue() {
    concurrent_relays_without_faults(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_relays_at_once_lose_and_double_nothing_on_a_fifo_queue() {
    concurrent_relays_without_faults(true).await;
}
