//! Test fixtures against the real local stack that `make test` starts:
//! PostgreSQL / MariaDB on loopback, DynamoDB Local, LocalStack's SQS and
//! moto for Secrets Manager.
//!
//! Every fixture gets its own outbox and dead-letter tables, queue and
//! ledger table (random names), so tests run in parallel without seeing
//! each other.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use outbox_relay::app::App;
use outbox_relay::config::Config;
use outbox_relay::event::PassRequest;
use outbox_relay::summary::Summary;
use sqlx::{AssertSqlSafe, Row};

/// Which source database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    MySql,
}

/// Options of a fixture.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub fifo: bool,
    pub group_column: bool,
    pub max_message_bytes: Option<usize>,
    pub batch_size: Option<u32>,
}

/// Admin URL of the test database server, with the test database created.
async fn database_url(db: Db) -> Option<String> {
    let admin = match db {
        Db::Postgres => std::env::var("TEST_DATABASE_URL")
            .expect("TEST_DATABASE_URL is not set: run the tests with `make test`"),
        Db::MySql => std::env::var("TEST_MYSQL_URL")
            .expect("TEST_MYSQL_URL is not set: run the tests with `make test`"),
    };
    if admin == "skip" {
        return None;
    }
    Some(test_database(db, &admin).await)
}

/// Creates the test database on the server of `admin` (an admin URL) and
/// returns its URL.
pub async fn test_database(db: Db, admin: &str) -> String {
    match db {
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(admin)
                .await
                .expect("connect to PostgreSQL");
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'outbox_relay_test'")
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            if exists.is_none() {
                // Two test threads may race here; the loser's error is harmless.
                let _ = sqlx::query("CREATE DATABASE outbox_relay_test")
                    .execute(&pool)
                    .await;
            }
            pool.close().await;
            replace_db(admin, "outbox_relay_test")
        }
        Db::MySql => {
            let pool = sqlx::MySqlPool::connect(admin)
                .await
                .expect("connect to MySQL");
            sqlx::query("CREATE DATABASE IF NOT EXISTS outbox_relay_test")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            replace_db(admin, "outbox_relay_test")
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// Prints the skip notice `make test` looks for, and says whether to skip.
pub fn skip_mysql(db: Db, url: &Option<String>) -> bool {
    if db == Db::MySql && url.is_none() {
        println!("SKIPPED(mysql): no MySQL/MariaDB server reachable; see `make test` output");
        return true;
    }
    false
}

/// A fresh DynamoDB table keyed on `pk` (string), as the ledger and the
/// consumer guard need, named `<prefix>_<random>`.
pub async fn pk_table(ddb: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    let table = unique(prefix);
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
    table
}

/// The real binary with only `env` and what the SDK needs from the test's
/// own environment (the stack's endpoints, region, credentials): nothing
/// leaks in from the developer's shell.
pub fn relay_command(env: &BTreeMap<String, String>) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.env_clear();
    for var in [
        "PATH",
        "HOME",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(env);
    cmd
}

/// The start-up warning of a database connection that is not verified:
/// the local test servers speak plaintext, so every pass has it
/// (tests/tls.rs checks when it appears and when not).
pub const TLS_WARNING: &str = "DATABASE_SSL_MODE is ";

/// Lines of a process's stderr, but for [`TLS_WARNING`].
pub fn stderr_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.contains(TLS_WARNING))
        .map(str::to_owned)
        .collect()
}

/// The AWS SDK configuration the relay itself uses (the stack's endpoints).
pub async fn aws() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the tests with `make test`"
    );
    outbox_relay::aws::sdk_config().await.expect("AWS config")
}

/// A pool on the source database, for seeding and checking.
#[derive(Clone)]
pub enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
}

impl Pool {
    pub async fn exec(&self, sql: String) {
        match self {
            Pool::Pg(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
            Pool::My(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("SQL failed: {e}"));
    }

    pub async fn count(&self, sql: String) -> i64 {
        match self {
            Pool::Pg(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(p)
                .await
                .unwrap(),
            Pool::My(p) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(p)
                .await
                .unwrap(),
        }
    }

    /// Rows of text columns (NULL as None).
    pub async fn rows(&self, sql: String) -> Vec<Vec<Option<String>>> {
        match self {
            Pool::Pg(p) => sqlx::query(AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<Option<String>, _>(i))
                        .collect()
                })
                .collect(),
            Pool::My(p) => sqlx::query(AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.get::<Option<Vec<u8>>, _>(i)
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// A message as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub outbox_id: String,
    pub outbox_source: String,
    pub message_id: String,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

impl Received {
    /// Reads a received SQS message (asked for with all message and
    /// system attributes).
    pub fn from_sqs(m: &aws_sdk_sqs::types::Message) -> Received {
        let attr = |name: &str| {
            m.message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_owned()
        };
        let sys =
            |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
        Received {
            body: m.body().unwrap_or_default().to_owned(),
            outbox_id: attr("outbox-id"),
            outbox_source: attr("outbox-source"),
            message_id: m.message_id().unwrap_or_default().to_owned(),
            group_id: sys(MessageSystemAttributeName::MessageGroupId),
            dedup_id: sys(MessageSystemAttributeName::MessageDeduplicationId),
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

/// `<prefix>_<12 random hex digits>`: a name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
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
    /// stack's, e.g. the TLS servers of tests/tls.rs).
    pub async fn at(db: Db, url: String, opts: Opts) -> Fixture {
        let table = unique("outbox");
        let dead_letter = format!("{table}_dl");
        let pool = match db {
            Db::Postgres => Pool::Pg(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .unwrap(),
            ),
            Db::MySql => Pool::My(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .unwrap(),
            ),
        };
        match db {
            Db::Postgres => {
                pool.exec(format!(
                    "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, payload TEXT, group_key TEXT, \
                     created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ))
                .await;
                pool.exec(format!(
                    "CREATE TABLE {dead_letter} (id BIGINT PRIMARY KEY, payload TEXT, group_key TEXT, \
                     created_at TIMESTAMPTZ, reason TEXT NOT NULL, failed_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ))
                .await;
            }
            Db::MySql => {
                pool.exec(format!(
                    "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload LONGTEXT NULL, \
                     group_key VARCHAR(255) NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                ))
                .await;
                pool.exec(format!(
                    "CREATE TABLE {dead_letter} (id BIGINT PRIMARY KEY, payload LONGTEXT NULL, \
                     group_key VARCHAR(255) NULL, created_at TIMESTAMP(6) NULL, reason TEXT NOT NULL, \
                     failed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                ))
                .await;
            }
        }

        let aws = aws().await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let mut queue_name = unique("q");
        let mut create = sqs.create_queue();
        if opts.fifo {
            queue_name.push_str(".fifo");
            create = create.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(max) = opts.max_message_bytes {
            create = create.attributes(QueueAttributeName::MaximumMessageSize, max.to_string());
        }
        let queue_url = create
            .queue_name(&queue_name)
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap()
            .to_owned();
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
        let mut ids = Vec::with_capacity(n);
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
        for r in self
            .pool
            .rows(
                format!(
                    "SELECT CAST(id AS CHAR(20)) FROM {} ORDER BY id",
                    self.table
                )
                .replace(
                    "CHAR(20)",
                    if self.db == Db::Postgres {
                        "TEXT"
                    } else {
                        "CHAR"
                    },
                ),
            )
            .await
        {
            ids.push(r[0].clone().unwrap());
        }
        ids
    }

    pub async fn rows_left(&self) -> i64 {
        self.pool
            .count(format!("SELECT COUNT(*) FROM {}", self.table))
            .await
    }

    /// (id, reason) of every dead letter, by id.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        let cast = if self.db == Db::Postgres {
            "id::text"
        } else {
            "CAST(id AS CHAR)"
        };
        self.pool
            .rows(format!(
                "SELECT {cast}, reason FROM {} ORDER BY id",
                self.dead_letter
            ))
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect()
    }

    /// Number of messages on the queue, by the queue's own count.
    pub async fn queue_depth(&self) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().unwrap();
        let get = |n: QueueAttributeName| -> u64 {
            attrs.get(&n).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }

    /// Receives every message on the queue and deletes it (FIFO groups
    /// only release the next message once the previous one is deleted).
    pub async fn receive_all(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .visibility_timeout(300)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let msgs = got.messages();
            if msgs.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            for m in msgs {
                out.push(Received::from_sqs(m));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        out
    }

    /// The ledger item of a row key.
    pub async fn ledger(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(&self.claims_table)
            .key("pk", AttributeValue::S(format!("{}#{key}", self.table)))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item()
            .cloned()
    }

    pub async fn ledger_state(&self, key: &str) -> Option<String> {
        self.ledger(key)
            .await
            .and_then(|i| i.get("state").and_then(|v| v.as_s().ok()).cloned())
    }

    /// Seeds a ledger item, as a crashed or concurrent relay would leave it.
    pub async fn seed_ledger(
        &self,
        key: &str,
        state: &str,
        owner: &str,
        lease_until_ms: u64,
        sha: &str,
    ) {
        self.ddb
            .put_item()
            .table_name(&self.claims_table)
            .item("pk", AttributeValue::S(format!("{}#{key}", self.table)))
            .item("state", AttributeValue::S(state.into()))
            .item("owner", AttributeValue::S(owner.into()))
            .item(
                "lease_until_ms",
                AttributeValue::N(lease_until_ms.to_string()),
            )
            .item("payload_sha256", AttributeValue::S(sha.into()))
            .item("attempts", AttributeValue::N("1".into()))
            .send()
            .await
            .unwrap();
    }
}

/// Hex SHA-256 of a body, as the ledger stores it.
pub fn sha(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

pub fn now_ms() -> u64 {
    outbox_relay::ledger::now_ms()
}

/// Counts per outbox-id of received messages.
pub fn counts(msgs: &[Received]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for m in msgs {
        *c.entry(m.outbox_id.clone()).or_default() += 1;
    }
    c
}

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
