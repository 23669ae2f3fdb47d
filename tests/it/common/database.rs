//! The source databases: which one a test runs against, the test database
//! on its server, and a pool for seeding and checking.

use sqlx::{AssertSqlSafe, Row};

/// The start-up warning of a database connection that is not verified:
/// the local test servers speak plaintext, so every pass has it
/// (tests/it/tls.rs checks when it appears and when not).
pub const TLS_WARNING: &str = "DATABASE_SSL_MODE is ";

/// Which source database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    MySql,
}

/// Admin URL of the test database server, with the test database created.
pub(super) async fn database_url(db: Db) -> Option<String> {
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
        }
    }
    replace_db(admin, "outbox_relay_test")
}

/// `url` with its database replaced by `db`.
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

/// A pool on the source database, for seeding and checking.
#[derive(Clone)]
pub enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
}

/// Evaluates `$body` with `$p` bound to whichever pool this is: the arms
/// differ only in the pool's type, which sqlx needs at compile time.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Pg($p) => $body,
            Pool::My($p) => $body,
        }
    };
}

impl Pool {
    /// A small pool (four connections) on the database of `url`.
    pub async fn connect(db: Db, url: &str) -> Pool {
        match db {
            Db::Postgres => Pool::Pg(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect(url)
                    .await
                    .unwrap(),
            ),
            Db::MySql => Pool::My(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(4)
                    .connect(url)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs a statement; panics if it fails.
    pub async fn exec(&self, sql: String) {
        on_pool!(self, p => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()))
            .unwrap_or_else(|e| panic!("SQL failed: {e}"));
    }

    /// The one integer a query returns (a `COUNT(*)`).
    pub async fn count(&self, sql: String) -> i64 {
        on_pool!(self, p => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
    }

    /// Rows of text columns (NULL as None).
    pub async fn rows(&self, sql: String) -> Vec<Vec<Option<String>>> {
        let sql = AssertSqlSafe(sql);
        match self {
            Pool::Pg(p) => {
                let rows = sqlx::query(sql).fetch_all(p).await.unwrap();
                rows.iter()
                    .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
            // MySQL hands some text (a CAST, say) over as binary: decode
            // bytes, not strings.
            Pool::My(p) => {
                let rows = sqlx::query(sql).fetch_all(p).await.unwrap();
                let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<Vec<u8>>, _>(i).map(text))
                            .collect()
                    })
                    .collect()
            }
        }
    }
}
