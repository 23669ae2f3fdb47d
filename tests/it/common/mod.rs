//! Test fixtures against the real local stack that `make test` starts:
//! PostgreSQL / MariaDB on loopback, DynamoDB Local, LocalStack's SQS and
//! moto for Secrets Manager.
//!
//! Every fixture gets its own outbox and dead-letter tables, queue and
//! ledger table (random names), so tests run in parallel without seeing
//! each other.
//!
//! The parts: [`database`] (the source databases and a pool on them),
//! [`aws`] (the SDK configuration, tables and queues), [`fixture`] (one
//! test's tables, queue and ledger, and its rows), [`queue`] (receiving
//! as a consumer), [`ledger`] (the relay's ledger items) and [`process`]
//! (the relay binary as a child process). Everything is re-exported here,
//! so suites name it `common::Name`.

mod aws;
mod database;
mod fixture;
mod ledger;
mod process;
mod queue;

pub use aws::{aws, create_queue, get_item, hash_key_table, pk_table, unique};
pub use database::{Db, Pool, TLS_WARNING, skip_mysql, test_database};
pub use fixture::{Fixture, Opts};
pub use ledger::{now_ms, sha};
pub use process::{free_port, relay_command, stderr_lines, wait_port};
pub use queue::{Received, counts, delete, drain, receive_some};

/// Runs a test body against PostgreSQL and MySQL/MariaDB, as two tests.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::MySql).await
                }
            )*
        }
    };
}
