//! One test's world: its outbox and dead-letter tables, queue and ledger
//! table (random names, so tests run in parallel without seeing each
//! other), the relay's configuration for them, and the rows in them.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use outbox_relay::app::App;
use outbox_relay::config::Config;
use outbox_relay::event::PassRequest;
use outbox_relay::summary::Summary;
use sqlx::AssertSqlSafe;

use super::database::database_url;
use super::{Db, Pool, aws, create_queue, pk_table, skip_mysql, unique};

/// Options of a fixture.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub fifo: bool,
    pub group_column: bool,
    pub max_message_bytes: Option<usize>,
    pub batch_size: Option<u32>,
}

impl Opts {
    /// A FIFO queue and a group column, as the FIFO tests want them.
    pub fn fifo_grouped() -> Opts {
        Opts {
            fifo: true,
            group_column: true,
            ..Opts::default()
        }
    }

    /// A standard queue, `n` rows a batch.
    pub fn batches_of(n: u32) -> Opts {
        Opts {
            batch_size: Some(n),
            ..Opts::default()
        }
    }
}

/// One test's tables, queue and ledger.
pub struct Fixture {
    pub db: Db,
    pub url: String,
    pub pool: Pool,
    pub table: String,
    pub dead_letter: String,
    pub queue_url: String,
    pub claims_table: String,
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub opts: Opts,
    pub extra_env: BTreeMap<String, String>,
}

impl Fixture {
    /// A fresh fixture, or None when the database is not available (MySQL
    /// skipped; the notice is printed).
    pub async fn new(db: Db, opts: Opts) -> Option<Fixture> {
        let url = database_url(db).await;
        if skip_mysql(db, &url) {
            return None;
        }
        Some(Fixture::at(db, url.expect("a database URL"), opts).await)
    }

    /// A fresh fixture in the database of `url` (another server than the
    /// stack's, e.g. the TLS servers of tests/it/tls.rs).
    pub async fn at(db: Db, url: String, opts: Opts) -> Fixture {
        let table = unique("outbox");
        let dead_letter = format!("{table}_dl");
        let pool = Pool::connect(db, &url).await;
        for ddl in outbox_ddl(db, &table, &dead_letter) {
            pool.exec(ddl).await;
        }
        let aws = aws().await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let queue_url = fixture_queue(&sqs, &opts).await;
        let claims_table = pk_table(&ddb, "claims").await;
        Fixture {
            db,
            url,
            pool,
            table,
            dead_letter,
            queue_url,
            claims_table,
            sqs,
            ddb,
            opts,
            extra_env: BTreeMap::new(),
        }
    }

    /// The relay's environment for this fixture (contract variables).
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("DATABASE_URL".to_owned(), self.url.clone()),
            ("OUTBOX_TABLE".to_owned(), self.table.clone()),
            (
                "OUTBOX_DEAD_LETTER_TABLE".to_owned(),
                self.dead_letter.clone(),
            ),
            ("QUEUE_URL".to_owned(), self.queue_url.clone()),
            ("CLAIMS_TABLE".to_owned(), self.claims_table.clone()),
        ]);
        if self.opts.group_column {
            env.insert("OUTBOX_GROUP_COLUMN".into(), "group_key".into());
        }
        if let Some(b) = self.opts.batch_size {
            env.insert("BATCH_SIZE".into(), b.to_string());
        }
        env.extend(self.extra_env.clone());
        env
    }

    /// The relay's configuration, read from [`Fixture::env`].
    pub fn config(&self) -> Config {
        let env = self.env();
        Config::from_lookup(|k| env.get(k).cloned()).expect("valid config")
    }

    /// A relay process's state, as the Lambda or the CLI would build it.
    pub async fn app(&self) -> App {
        App::new(self.config()).await.expect("app")
    }

    /// Runs one pass in-process and returns its summary.
    pub async fn pass(&self, req: PassRequest) -> Summary {
        let app = self.app().await;
        let s = app
            .run(&req, None, None, &|_| {})
            .await
            .expect("pass succeeds");
        app.close().await;
        s
    }

    /// Runs one default pass (the whole outbox, as far as one pass goes).
    pub async fn drain(&self) -> Summary {
        self.pass(PassRequest::default()).await
    }

    /// Inserts rows (payload, group) and returns their ids in order.
    pub async fn insert(&self, rows: &[(Option<&str>, Option<&str>)]) -> Vec<String> {
        let mut ids = Vec::new();
        for (payload, group) in rows {
            let id: i64 = match &self.pool {
                Pool::Pg(p) => sqlx::query_scalar(AssertSqlSafe(format!(
                    "INSERT INTO {} (payload, group_key) VALUES ($1, $2) RETURNING id",
                    self.table
                )))
                .bind(payload)
                .bind(group)
                .fetch_one(p)
                .await
                .unwrap(),
                Pool::My(p) => sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (payload, group_key) VALUES (?, ?)",
                    self.table
                )))
                .bind(payload)
                .bind(group)
                .execute(p)
                .await
                .unwrap()
                .last_insert_id() as i64,
            };
            ids.push(id.to_string());
        }
        ids
    }

    /// Inserts `n` rows with payloads `{"n":i}` in one statement; returns ids.
    pub async fn insert_many(&self, n: usize) -> Vec<String> {
        for chunk_start in (0..n).step_by(1000) {
            let end = (chunk_start + 1000).min(n);
            let values: Vec<String> = (chunk_start..end)
                .map(|i| format!("('{{\"n\":{i}}}')"))
                .collect();
            self.pool
                .exec(format!(
                    "INSERT INTO {} (payload) VALUES {}",
                    self.table,
                    values.join(",")
                ))
                .await;
        }
        self.row_ids().await
    }

    /// The ids of the rows still in the outbox, in order.
    pub async fn row_ids(&self) -> Vec<String> {
        let select = format!("SELECT {} FROM {} ORDER BY id", self.id_text(), self.table);
        let rows = self.pool.rows(select).await;
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    /// The `id` column as text, which [`Pool::rows`] reads.
    fn id_text(&self) -> &'static str {
        match self.db {
            Db::Postgres => "CAST(id AS TEXT)",
            Db::MySql => "CAST(id AS CHAR)",
        }
    }

    /// Rows still in the outbox.
    pub async fn rows_left(&self) -> i64 {
        self.pool
            .count(format!("SELECT COUNT(*) FROM {}", self.table))
            .await
    }

    /// (id, reason) of every dead letter, by id.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        self.pool
            .rows(format!(
                "SELECT {}, reason FROM {} ORDER BY id",
                self.id_text(),
                self.dead_letter
            ))
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect()
    }
}

/// The outbox and dead-letter tables of a fixture, in each database's
/// dialect.
fn outbox_ddl(db: Db, table: &str, dead_letter: &str) -> [String; 2] {
    match db {
        Db::Postgres => [
            format!(
                "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, payload TEXT, group_key TEXT, \
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ),
            format!(
                "CREATE TABLE {dead_letter} (id BIGINT PRIMARY KEY, payload TEXT, group_key TEXT, \
                 created_at TIMESTAMPTZ, reason TEXT NOT NULL, failed_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ),
        ],
        Db::MySql => [
            format!(
                "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload LONGTEXT NULL, \
                 group_key VARCHAR(255) NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            format!(
                "CREATE TABLE {dead_letter} (id BIGINT PRIMARY KEY, payload LONGTEXT NULL, \
                 group_key VARCHAR(255) NULL, created_at TIMESTAMP(6) NULL, reason TEXT NOT NULL, \
                 failed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
        ],
    }
}

/// The fixture's queue: FIFO or standard, and with the message size limit
/// the options ask for.
async fn fixture_queue(sqs: &aws_sdk_sqs::Client, opts: &Opts) -> String {
    let mut name = unique("q");
    if opts.fifo {
        name.push_str(".fifo");
    }
    let attributes: Vec<_> = opts
        .max_message_bytes
        .map(|max| (QueueAttributeName::MaximumMessageSize, max.to_string()))
        .into_iter()
        .collect();
    create_queue(sqs, &name, &attributes).await
}
