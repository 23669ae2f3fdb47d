//! Pointing the relay at tables users already have: their own names and
//! column types (UUID, text and integer ids; JSON payloads; keyword column
//! names; a schema-qualified table), and hostile names that must change
//! nothing.

use crate::common;

mod shapes;

use std::collections::BTreeMap;

use common::{Db, Fixture, Opts};

/// A fixture whose outbox is replaced by a table of the user's shape.
struct Custom {
    f: Fixture,
    env: BTreeMap<String, String>,
}

impl Custom {
    /// Asserts the messages received, as (row key, body) in key order.
    async fn assert_received(&self, expected: &[(&str, &str)]) {
        let mut got: Vec<(String, String)> = (self.f.receive_all().await.into_iter())
            .map(|m| (m.outbox_id, m.body))
            .collect();
        got.sort();
        let expected: Vec<(String, String)> = (expected.iter())
            .map(|&(k, b)| (k.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(got, expected);
    }

    /// The error a relay gets at start-up with this environment.
    async fn start_error(&self) -> String {
        start_error_with(self.env.clone()).await
    }

    async fn run(&self) -> outbox_relay::summary::Summary {
        let env = self.env.clone();
        let cfg = outbox_relay::config::Config::from_lookup(|k| env.get(k).cloned())
            .expect("valid config");
        let app = outbox_relay::app::App::new(cfg).await.unwrap();
        let s = app
            .run(&Default::default(), None, None, &|_| {})
            .await
            .expect("pass succeeds");
        app.close().await;
        s
    }
}

/// The error a relay gets at start-up with `env`.
async fn start_error_with(env: BTreeMap<String, String>) -> String {
    let cfg =
        outbox_relay::config::Config::from_lookup(|k| env.get(k).cloned()).expect("valid config");
    let app = outbox_relay::app::App::new(cfg).await.unwrap();
    match app.run(&Default::default(), None, None, &|_| {}).await {
        Ok(s) => panic!("the relay started and ran a pass: {s:?}"),
        Err(e) => e.to_string(),
    }
}

async fn custom(db: Db, ddl: &[String], env: &[(&str, &str)]) -> Option<Custom> {
    let f = Fixture::new(
        db,
        Opts {
            fifo: env.iter().any(|(k, _)| *k == "FIFO"),
            ..Opts::default()
        },
    )
    .await?;
    for stmt in ddl {
        f.pool.exec(stmt.replace("{T}", &f.table)).await;
    }
    let mut map = f.env();
    for (k, v) in env {
        if *k != "FIFO" {
            map.insert((*k).to_owned(), v.replace("{T}", &f.table));
        }
    }
    Some(Custom { f, env: map })
}

both_databases!(
    uuid_ids_and_json_payloads_with_custom_column_names_work,
    text_ids_and_a_keyword_column_work,
    ids_that_do_not_round_trip_as_text_or_do_not_fit_the_dead_letter_table_are_refused_at_start,
    binary_payloads_go_out_as_their_bytes_and_non_utf8_ones_are_quarantined,
    payload_types_that_are_not_text_json_or_bytes_are_refused_at_start,
    an_id_column_that_is_not_a_key_is_refused_at_start,
    a_key_too_long_for_the_ledger_is_quarantined_and_its_group_moves_on,
);

async fn binary_payloads_go_out_as_their_bytes_and_non_utf8_ones_are_quarantined(db: Db) {
    let (ddl, insert) = match db {
        Db::Postgres => (
            "CREATE TABLE {T}_bin (id BIGINT PRIMARY KEY, payload BYTEA)",
            "INSERT INTO {T}_bin VALUES (1, convert_to('{\"a\":\"é\"}', 'UTF8')), (2, '\\xff00fe'::bytea), (3, convert_to('plain', 'UTF8'))",
        ),
        Db::MySql => (
            "CREATE TABLE {T}_bin (id BIGINT PRIMARY KEY, payload BLOB)",
            "INSERT INTO {T}_bin VALUES (1, CONVERT('{\"a\":\"é\"}' USING utf8mb4)), (2, X'ff00fe'), (3, 'plain')",
        ),
    };
    let Some(c) = custom(
        db,
        &[ddl.to_owned(), insert.to_owned()],
        &[("OUTBOX_TABLE", "{T}_bin")],
    )
    .await
    else {
        return;
    };
    let s = c.run().await;
    assert_eq!((s.sent, s.quarantined, s.remaining), (2, 1, false), "{s:?}");
    c.assert_received(&[("1", "{\"a\":\"é\"}"), ("3", "plain")])
        .await;
    let dl = c.f.dead_letters().await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0].0, "2");
    assert!(dl[0].1.contains("not UTF-8"), "{dl:?}");
    let copy =
        c.f.pool
            .rows(format!("SELECT payload FROM {}", c.f.dead_letter))
            .await;
    assert_eq!(
        copy[0][0]
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("ff00fe"),
        "the dead-letter copy is the bytes in hex"
    );
}

async fn payload_types_that_are_not_text_json_or_bytes_are_refused_at_start(db: Db) {
    let types: &[&str] = match db {
        Db::Postgres => &["INTEGER", "TIMESTAMPTZ", "TEXT[]", "BOOLEAN"],
        Db::MySql => &["INT", "DATETIME", "BINARY(16)", "ENUM('a','b')"],
    };
    let ddl: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("CREATE TABLE {{T}}_p{i} (id BIGINT PRIMARY KEY, payload {ty})"))
        .collect();
    let Some(c) = custom(db, &ddl, &[]).await else {
        return;
    };
    for (i, ty) in types.iter().enumerate() {
        let mut env = c.env.clone();
        env.insert("OUTBOX_TABLE".into(), format!("{}_p{i}", c.f.table));
        let err = start_error_with(env).await;
        assert!(err.starts_with("OUTBOX_PAYLOAD_COLUMN:"), "{ty}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

async fn an_id_column_that_is_not_a_key_is_refused_at_start(db: Db) {
    let Some(c) = custom(
        db,
        &[
            "CREATE TABLE {T}_nokey (id BIGINT, payload TEXT)".to_owned(),
            "CREATE TABLE {T}_nullable (id BIGINT UNIQUE, payload TEXT)".to_owned(),
            "CREATE TABLE {T}_pair (id BIGINT NOT NULL, n INT NOT NULL, payload TEXT, UNIQUE (id, n))"
                .to_owned(),
            // A NULL id used to panic the process; now the table is refused.
            "INSERT INTO {T}_nullable (id, payload) VALUES (NULL, 'x'), (1, 'y')".to_owned(),
            "INSERT INTO {T}_nokey (id, payload) VALUES (1, 'x'), (1, 'y')".to_owned(),
        ],
        &[],
    )
    .await
    else {
        return;
    };
    for t in ["nokey", "nullable", "pair"] {
        let mut env = c.env.clone();
        env.insert("OUTBOX_TABLE".into(), format!("{}_{t}", c.f.table));
        let err = start_error_with(env).await;
        assert!(err.starts_with("OUTBOX_ID_COLUMN:"), "{t}: {err}");
        assert!(err.contains("UNIQUE NOT NULL"), "{t}: {err}");
    }
    let left =
        c.f.pool
            .count(format!("SELECT COUNT(*) FROM {}_nullable", c.f.table))
            .await;
    assert_eq!(left, 2, "nothing was relayed");
}

async fn a_key_too_long_for_the_ledger_is_quarantined_and_its_group_moves_on(db: Db) {
    let (ddl, dl) = match db {
        Db::Postgres => (
            "CREATE TABLE {T}_long (k TEXT PRIMARY KEY, payload TEXT, group_key TEXT)",
            "CREATE TABLE {T}_long_dl (id TEXT PRIMARY KEY, payload TEXT, group_key TEXT, reason TEXT NOT NULL)",
        ),
        Db::MySql => (
            "CREATE TABLE {T}_long (k VARCHAR(700) PRIMARY KEY, payload TEXT, group_key VARCHAR(64)) DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE {T}_long_dl (id VARCHAR(700) PRIMARY KEY, payload TEXT, group_key VARCHAR(64), reason TEXT NOT NULL) DEFAULT CHARSET=utf8mb4",
        ),
    };
    // 'a' sorts first: the long key is the group's first row. 600 four-byte
    // characters: 2,400 bytes, over the limit with any prefix.
    let long = format!("a{}", "😀".repeat(600));
    let Some(c) = custom(
        db,
        &[
            ddl.to_owned(),
            dl.to_owned(),
            format!("INSERT INTO {{T}}_long VALUES ('{long}', 'first', 'g'), ('b', 'second', 'g')"),
        ],
        &[
            ("FIFO", ""),
            ("OUTBOX_TABLE", "{T}_long"),
            ("OUTBOX_DEAD_LETTER_TABLE", "{T}_long_dl"),
            ("OUTBOX_ID_COLUMN", "k"),
            ("OUTBOX_GROUP_COLUMN", "group_key"),
        ],
    )
    .await
    else {
        return;
    };
    let s = c.run().await;
    assert_eq!((s.sent, s.quarantined, s.remaining), (1, 1, false), "{s:?}");
    let got = c.f.receive_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].outbox_id.as_str(), got[0].body.as_str()),
        ("b", "second")
    );
    let dl =
        c.f.pool
            .rows(format!("SELECT id, reason FROM {}_long_dl", c.f.table))
            .await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0][0].as_deref(), Some(long.as_str()));
    let reason = dl[0][1].clone().unwrap();
    assert!(reason.contains("2048-byte partition key"), "{reason}");
}

async fn ids_that_do_not_round_trip_as_text_or_do_not_fit_the_dead_letter_table_are_refused_at_start(
    db: Db,
) {
    let (decimal, uuid_like, dl_bigint) = match db {
        Db::Postgres => (
            "CREATE TABLE {T}_dec (id NUMERIC(20,0) PRIMARY KEY, payload TEXT)",
            "CREATE TABLE {T}_uuid (id UUID PRIMARY KEY, payload TEXT)",
            "CREATE TABLE {T}_dlb (id BIGINT PRIMARY KEY, payload TEXT, group_key TEXT, reason TEXT NOT NULL)",
        ),
        Db::MySql => (
            "CREATE TABLE {T}_dec (id DECIMAL(20,0) PRIMARY KEY, payload TEXT)",
            "CREATE TABLE {T}_uuid (id CHAR(36) PRIMARY KEY, payload TEXT)",
            "CREATE TABLE {T}_dlb (id BIGINT PRIMARY KEY, payload TEXT, group_key VARCHAR(64), reason TEXT NOT NULL)",
        ),
    };
    let Some(c) = custom(
        db,
        &[decimal.to_owned(), uuid_like.to_owned(), dl_bigint.to_owned(),
          "INSERT INTO {T}_uuid (id, payload) VALUES ('6f1c1a52-3c1e-4f43-9d0e-5b8a1b1b2c3d', 'kept')".to_owned()],
        &[("OUTBOX_TABLE", "{T}_dec")],
    )
    .await
    else {
        return;
    };
    let err = c.start_error().await;
    assert!(err.starts_with("OUTBOX_ID_COLUMN:"), "{err}");
    assert!(err.contains("integer, UUID and text"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");

    let mut env = c.env.clone();
    env.insert("OUTBOX_TABLE".into(), format!("{}_uuid", c.f.table));
    env.insert(
        "OUTBOX_DEAD_LETTER_TABLE".into(),
        format!("{}_dlb", c.f.table),
    );
    let c2 = Custom { env, f: c.f };
    let err = c2.start_error().await;
    assert!(err.starts_with("OUTBOX_DEAD_LETTER_TABLE:"), "{err}");
    assert!(err.contains("give it the id column's type"), "{err}");
    let left =
        c2.f.pool
            .count(format!("SELECT COUNT(*) FROM {}_uuid", c2.f.table))
            .await;
    assert_eq!(left, 1, "nothing was relayed");
}

async fn uuid_ids_and_json_payloads_with_custom_column_names_work(db: Db) {
    let ddl = match db {
        Db::Postgres => vec![
            "CREATE SCHEMA IF NOT EXISTS app".to_owned(),
            "CREATE TABLE app.{T}_events (event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(), body JSONB NOT NULL, aggregate TEXT)".to_owned(),
            "CREATE TABLE app.{T}_events_dl (id UUID PRIMARY KEY, payload TEXT, group_key TEXT, reason TEXT NOT NULL)".to_owned(),
            "INSERT INTO app.{T}_events (body, aggregate) SELECT jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b')), 'agg' || (g % 3) FROM generate_series(1, 12) g".to_owned(),
        ],
        Db::MySql => vec![
            "CREATE TABLE {T}_events (event_id CHAR(36) PRIMARY KEY, body JSON NOT NULL, aggregate VARCHAR(64))".to_owned(),
            "CREATE TABLE {T}_events_dl (id CHAR(36) PRIMARY KEY, payload LONGTEXT, group_key VARCHAR(64), reason TEXT NOT NULL)".to_owned(),
            "INSERT INTO {T}_events (event_id, body, aggregate) SELECT UUID(), JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', 'b')), CONCAT('agg', seq % 3) FROM seq_1_to_12".to_owned(),
        ],
    };
    let (table, dl) = match db {
        Db::Postgres => ("app.{T}_events", "app.{T}_events_dl"),
        // MySQL: the schema is the database.
        Db::MySql => ("outbox_relay_test.{T}_events", "{T}_events_dl"),
    };
    let Some(c) = custom(
        db,
        &ddl,
        &[
            ("OUTBOX_TABLE", table),
            ("OUTBOX_DEAD_LETTER_TABLE", dl),
            ("OUTBOX_ID_COLUMN", "event_id"),
            ("OUTBOX_PAYLOAD_COLUMN", "body"),
            ("OUTBOX_GROUP_COLUMN", "aggregate"),
            ("BATCH_SIZE", "5"),
        ],
    )
    .await
    else {
        return;
    };
    let s = c.run().await;
    assert_eq!((s.sent, s.deleted, s.remaining), (12, 12, false), "{s:?}");
    let msgs = c.f.receive_all().await;
    assert_eq!(msgs.len(), 12);
    let mut ns: Vec<i64> = Vec::new();
    for m in &msgs {
        // The JSON column arrives as its JSON text.
        let v: serde_json::Value = serde_json::from_str(&m.body).expect("body is JSON text");
        assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
        ns.push(v["n"].as_i64().unwrap());
        assert_eq!(m.outbox_id.len(), 36, "a UUID key: {}", m.outbox_id);
        assert_eq!(m.outbox_source, table.replace("{T}", &c.f.table));
    }
    ns.sort();
    assert_eq!(ns, (1..=12).collect::<Vec<_>>());
    let left =
        c.f.pool
            .count(format!(
                "SELECT COUNT(*) FROM {}",
                table.replace("{T}", &c.f.table)
            ))
            .await;
    assert_eq!(left, 0);
}

async fn text_ids_and_a_keyword_column_work(db: Db) {
    let (q, ddl) = match db {
        Db::Postgres => ('"', vec![
            "CREATE TABLE {T}_kw (k VARCHAR(64) PRIMARY KEY, \"order\" TEXT)".to_owned(),
            "CREATE TABLE {T}_kw_dl (id VARCHAR(64) PRIMARY KEY, payload TEXT, group_key TEXT, reason TEXT NOT NULL)".to_owned(),
        ]),
        Db::MySql => ('`', vec![
            "CREATE TABLE {T}_kw (k VARCHAR(64) PRIMARY KEY, `order` TEXT)".to_owned(),
            "CREATE TABLE {T}_kw_dl (id VARCHAR(64) PRIMARY KEY, payload TEXT, group_key TEXT, reason TEXT NOT NULL)".to_owned(),
        ]),
    };
    let mut ddl = ddl;
    ddl.push(format!(
        "INSERT INTO {{T}}_kw (k, {q}order{q}) VALUES ('b-key', 'second'), ('a-key', 'first'), ('c''quote', 'third'), ('d-null', NULL)"
    ));
    let Some(c) = custom(
        db,
        &ddl,
        &[
            ("OUTBOX_TABLE", "{T}_kw"),
            ("OUTBOX_DEAD_LETTER_TABLE", "{T}_kw_dl"),
            ("OUTBOX_ID_COLUMN", "k"),
            ("OUTBOX_PAYLOAD_COLUMN", "order"),
            ("BATCH_SIZE", "2"),
        ],
    )
    .await
    else {
        return;
    };
    let s = c.run().await;
    assert_eq!((s.sent, s.quarantined, s.remaining), (3, 1, false), "{s:?}");
    c.assert_received(&[
        ("a-key", "first"),
        ("b-key", "second"),
        ("c'quote", "third"),
    ])
    .await;
    let dl =
        c.f.pool
            .rows(format!("SELECT id, reason FROM {}_kw_dl", c.f.table))
            .await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0][0].as_deref(), Some("d-null"));
}

/// Hostile names through the real binary: each is refused at start with a
/// line naming the variable, and no table of the database changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_the_schema_is_unchanged() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert(&[(Some("still here"), None)]).await;
    // This test's tables (others run at the same time and add their own).
    let tables = || async {
        f.pool
            .rows(format!(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables \
                 WHERE table_name LIKE '{}%' ORDER BY 1",
                f.table
            ))
            .await
    };
    let before = tables().await;
    let victim = &f.table;
    let hostile = [
        format!("{victim}; DROP TABLE {victim}"),
        format!("{victim}\"; DROP TABLE {victim}; --"),
        format!("{victim}` ; DROP TABLE {victim}"),
        format!("{victim}' OR '1'='1"),
        format!("{victim}\0"),
        format!("{victim} -- comment"),
        format!("{victim}/**/"),
        "ｏｕｔｂｏｘ".to_owned(),
        "a".repeat(200),
        format!("a.b.{victim}"),
    ];
    for var in [
        "OUTBOX_TABLE",
        "OUTBOX_ID_COLUMN",
        "OUTBOX_PAYLOAD_COLUMN",
        "OUTBOX_GROUP_COLUMN",
        "OUTBOX_DEAD_LETTER_TABLE",
    ] {
        for name in &hostile {
            if name.contains('\0') {
                continue; // an environment variable cannot hold NUL; the unit tests cover it
            }
            let mut env = f.env();
            env.insert(var.to_owned(), name.clone());
            let out = common::relay_command(&env).arg("drain").output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{var}={name:?} was not refused: {stderr}"
            );
            assert!(stderr.contains(var), "{var}={name:?}: {stderr}");
        }
    }
    assert_eq!(before.len(), 2, "the outbox and its dead-letter table");
    assert_eq!(tables().await, before, "the schema changed");
    assert_eq!(f.rows_left().await, 1);
}
