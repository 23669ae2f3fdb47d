//! The command line as a user's scripts drive it: the real binary, the
//! contract's environment, stdout's last line, stderr and exit codes.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{Db, Fixture, Opts};
use outbox_relay::summary::Summary;

fn relay(env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    common::relay_command(env)
        .args(args)
        .output()
        .expect("run outbox-relay")
}

fn stdout_summary(out: &Output) -> Summary {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no stdout; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not the summary ({e}): {last}"))
}

fn stderr_lines(out: &Output) -> Vec<String> {
    common::stderr_lines(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_prints_the_summary_as_its_last_line_and_exits_zero() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert(&[(Some("one"), None), (Some("two"), None)]).await;
    let out = relay(&f.env(), &["drain"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stdout_summary(&out);
    assert_eq!((s.sent, s.deleted, s.remaining), (2, 2, false));
    assert_eq!(f.rows_left().await, 0);
    // Not a terminal: no progress display, nothing on stderr but the
    // warning that the (local, plaintext) database is not verified.
    assert!(
        stderr_lines(&out).is_empty(),
        "stderr in a pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.receive_all().await.len(), 2);
}

/// The cost per row the relay counts itself (`--stats`, what `make bench`
/// reports): full SQS batches, one DynamoDB request per row (the claim;
/// marks go 25 to a `BatchWriteItem`), a few SQL round trips per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_one_ledger_request_per_row_and_full_batches() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    let rows = f.insert_many(200).await.len() as f64;
    let out = relay(&f.env(), &["drain", "--stats"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_summary(&out).deleted, 200);
    let line = stderr_lines(&out).pop().expect("the --stats line");
    let stats: serde_json::Value = serde_json::from_str(&line).expect("--stats is JSON");
    let count = |op: &str| stats["aws_requests"][op].as_f64().unwrap_or(0.0);
    let ddb: f64 = stats["aws_requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(op, _)| op.starts_with("DynamoDB."))
        .map(|(_, n)| n.as_f64().unwrap())
        .sum();
    assert_eq!(
        count("DynamoDB.UpdateItem"),
        rows,
        "one claim per row: {line}"
    );
    assert!(ddb / rows <= 1.1, "DynamoDB requests per row: {line}");
    assert_eq!(
        stats["aws_batch_items"]["DynamoDB.BatchWriteItem"].as_f64(),
        Some(rows),
        "every row marked in a batch: {line}"
    );
    assert!(count("SQS.SendMessageBatch") / rows <= 0.11, "{line}");
    assert!(
        stats["sql_round_trips"].as_f64().unwrap() / rows <= 0.1,
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_max_rows_and_dry_run_behaves_like_the_manual_invocation() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert_many(5).await;
    let out = relay(&f.env(), &["drain", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let s = stdout_summary(&out);
    assert!(s.dry_run);
    assert_eq!((s.sent, s.deleted), (5, 0));
    assert_eq!(f.rows_left().await, 5);

    let out = relay(&f.env(), &["drain", "--max-rows", "3"]);
    let s = stdout_summary(&out);
    assert_eq!((s.sent, s.remaining), (3, true));
    assert_eq!(f.rows_left().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_setting_fails_at_start_with_one_line_naming_it_and_changes_nothing() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert(&[(Some("keep me"), None)]).await;
    let cases: Vec<(&str, Option<&str>, i32)> = vec![
        ("QUEUE_URL", None, 2),
        ("CLAIMS_TABLE", None, 2),
        ("DATABASE_URL", None, 2),
        ("BATCH_SIZE", Some("lots"), 2),
        ("LEASE_SECONDS", Some("5"), 2),
        ("OUTBOX_TABLE", Some("outbox; DROP TABLE x"), 2),
        ("OUTBOX_TABLE", Some("no_such_table"), 1),
        ("OUTBOX_PAYLOAD_COLUMN", Some("no_such_column"), 1),
        ("OUTBOX_GROUP_COLUMN", Some("nope"), 1),
        ("OUTBOX_DEAD_LETTER_TABLE", Some("no_such_dl"), 1),
    ];
    for (var, value, code) in cases {
        let mut env = f.env();
        match value {
            Some(v) => env.insert(var.to_owned(), v.to_owned()),
            None => env.remove(var),
        };
        let out = relay(&env, &["drain"]);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(code), "{var}={value:?}: {lines:?}");
        assert_eq!(
            lines.len(),
            1,
            "{var}={value:?}: one line expected, got {lines:?}"
        );
        assert!(lines[0].contains(var), "{var}={value:?}: {lines:?}");
    }
    // A queue that does not exist is named too.
    let mut env = f.env();
    env.insert("QUEUE_URL".into(), format!("{}-missing", f.queue_url));
    let out = relay(&env, &["drain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_lines(&out)[0].contains("QUEUE_URL"),
        "{:?}",
        stderr_lines(&out)
    );

    assert_eq!(f.rows_left().await, 1, "a failed start changed the table");
    assert_eq!(f.queue_depth().await, 0);
}

#[test]
fn help_documents_every_command_flag_and_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "drain",
        "--max-rows",
        "--dry-run",
        "EXIT CODES",
        "DATABASE_URL",
        "DATABASE_SECRET_ARN",
        "DATABASE_SSL_MODE",
        "DATABASE_SSL_ROOT_CERT",
        "verify-full",
        "OUTBOX_TABLE",
        "OUTBOX_ID_COLUMN",
        "OUTBOX_PAYLOAD_COLUMN",
        "OUTBOX_GROUP_COLUMN",
        "OUTBOX_DEAD_LETTER_TABLE",
        "QUEUE_URL",
        "CLAIMS_TABLE",
        "BATCH_SIZE",
        "LEASE_SECONDS",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}");
    }
}

#[test]
fn bad_arguments_exit_two_with_one_line() {
    for args in [
        vec!["drain", "--max-rows"],
        vec!["drain", "--max-rows", "-3"],
        vec!["drain", "--frobnicate"],
        vec!["launch"],
        vec![],
        // Outside Lambda the runtime cannot start: one line, not a panic.
        vec!["lambda"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr_lines(&out).len(),
            1,
            "{args:?}: {:?}",
            stderr_lines(&out)
        );
    }
}

/// Creates a secret in the RDS JSON shape in moto's Secrets Manager.
async fn put_secret(name: &str, value: &str) -> String {
    let aws = common::aws().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    sm.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_secrets_manager_secret_in_the_rds_shape_work() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert(&[(Some("via secret"), None)]).await;
    // postgres://user@host:port/db → the RDS secret JSON.
    let rest = f.url.strip_prefix("postgres://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let name = format!("relay-db-{}", &f.table[7..]);
    let secret = format!(
        r#"{{"engine":"postgres","host":"{host}","port":{port},"username":"{user}","password":"not-needed-with-trust","dbname":"{db}"}}"#
    );
    let arn = put_secret(&name, &secret).await;
    let mut env = f.env();
    env.remove("DATABASE_URL");
    env.insert("DATABASE_SECRET_ARN".into(), arn);
    // The local server speaks plaintext; the secret's default, verify-full,
    // is tested against a TLS server in tests/tls.rs.
    env.insert("DATABASE_SSL_MODE".into(), "disable".into());
    let out = relay(&env, &["drain"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_summary(&out).sent, 1);
    assert_eq!(f.rows_left().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_secret_is_one_clear_line_and_nothing_is_relayed() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    f.insert(&[(Some("stays"), None)]).await;
    let malformed = put_secret(
        &format!("bad-{}", &f.table[7..]),
        r#"{"engine":"postgres","username":"u","password":"hunter2-secret"}"#,
    )
    .await;
    let missing = format!("{}-does-not-exist", malformed);
    for (arn, expect) in [
        (malformed.clone(), "\"host\""),
        (missing, "cannot read secret"),
    ] {
        let mut env = f.env();
        env.remove("DATABASE_URL");
        env.insert("DATABASE_SECRET_ARN".into(), arn.clone());
        let out = relay(&env, &["drain"]);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "{lines:?}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("DATABASE_SECRET_ARN") && lines[0].contains(expect),
            "{lines:?}"
        );
        assert!(
            !lines[0].contains("hunter2"),
            "the password leaked: {lines:?}"
        );
    }
    assert_eq!(f.rows_left().await, 1);
    assert_eq!(f.queue_depth().await, 0);
}

/// A warm execution environment whose secret is rotated to another database
/// user (the "alternating users" rotation), the old user disabled and its
/// connections closed: the next pass reads the secret again and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_read_again_when_the_database_refuses_the_old_login() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    let rest = f.url.strip_prefix("postgres://").unwrap();
    let (_, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let suffix = &f.table[7..];
    let (old_user, new_user) = (format!("relay_a_{suffix}"), format!("relay_b_{suffix}"));
    for user in [&old_user, &new_user] {
        f.pool
            .exec(format!("CREATE ROLE {user} LOGIN PASSWORD 'pw'"))
            .await;
        f.pool
            .exec(format!(
                "GRANT SELECT, INSERT, DELETE, UPDATE ON {}, {} TO {user}",
                f.table, f.dead_letter
            ))
            .await;
    }
    let secret = |user: &str| {
        format!(
            r#"{{"engine":"postgres","host":"{host}","port":{port},"username":"{user}","password":"pw","dbname":"{db}"}}"#
        )
    };
    let name = format!("rotated-{suffix}");
    let arn = put_secret(&name, &secret(&old_user)).await;
    let mut env = f.env();
    env.remove("DATABASE_URL");
    env.insert("DATABASE_SECRET_ARN".into(), arn.clone());
    env.insert("DATABASE_SSL_MODE".into(), "disable".into());
    let cfg = outbox_relay::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let app = outbox_relay::app::App::new(cfg).await.unwrap();

    f.insert(&[(Some("before rotation"), None)]).await;
    let s = app
        .run(&Default::default(), None, None, &|_| {})
        .await
        .unwrap();
    assert_eq!(s.sent, 1);

    // Rotate: the secret now names the other user; the old one may no
    // longer log in, and its open connections are gone.
    let sm = aws_sdk_secretsmanager::Client::new(&common::aws().await);
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(secret(&new_user))
        .send()
        .await
        .unwrap();
    f.pool.exec(format!("ALTER ROLE {old_user} NOLOGIN")).await;
    f.pool
        .exec(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{old_user}'"
        ))
        .await;

    f.insert(&[(Some("after rotation"), None)]).await;
    let s = app
        .run(&Default::default(), None, None, &|_| {})
        .await
        .expect("the pass reads the rotated secret and succeeds");
    assert_eq!((s.sent, s.deleted), (1, 1), "{s:?}");
    assert_eq!(f.rows_left().await, 0);
    let by_new_user = f
        .pool
        .count(format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{new_user}'"
        ))
        .await;
    assert!(by_new_user >= 1, "the new pool logs in as the rotated user");
    app.close().await;
    let mut bodies: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(bodies, vec!["after rotation", "before rotation"]);
}

/// At the most verbose setting the logs of a pass show neither a payload
/// nor the session token: the AWS SDK's own targets (which dump requests
/// and signed headers below INFO) are capped whatever RUST_LOG says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_a_pass_show_no_payload_and_no_session_token() {
    let f = Fixture::new(Db::Postgres, Opts::default()).await.unwrap();
    let payload = format!("payload-{}", uuid::Uuid::new_v4());
    let token = format!("session-token-{}", uuid::Uuid::new_v4());
    f.insert(&[(Some(payload.as_str()), None)]).await;
    let mut env = f.env();
    env.insert("RUST_LOG".into(), "trace".into());
    env.insert("AWS_SESSION_TOKEN".into(), token.clone());
    // The SDK's own switch to print signed request bodies: even with it
    // the capped targets print nothing below INFO.
    env.insert("LOG_SIGNABLE_BODY".into(), "true".into());
    let out = relay(&env, &["drain"]);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    assert_eq!(stdout_summary(&out).sent, 1);
    assert!(
        logs.lines()
            .filter(|l| l.contains("TRACE") || l.contains("DEBUG"))
            .count()
            > 10,
        "RUST_LOG=trace did not take effect: {logs}"
    );
    // As text, and as the SDK prints a body it signs: a list of byte values.
    let as_bytes = |s: &str| {
        s.bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for secret in [&payload, &token] {
        assert!(!logs.contains(secret.as_str()), "logged: {secret}");
        assert!(
            !logs.contains(&as_bytes(secret)),
            "logged as bytes: {secret}"
        );
    }
    let msgs = f.receive_all().await;
    assert_eq!(msgs[0].body, payload);
}

/// Neither a URL nor a secret may silently win over the other.
#[test]
fn a_url_and_a_secret_both_set_stop_the_start_with_one_line_naming_both() {
    let env = BTreeMap::from([
        (
            "DATABASE_URL".to_owned(),
            "postgres://u:hunter2pw@127.0.0.1/db".to_owned(),
        ),
        (
            "DATABASE_SECRET_ARN".to_owned(),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".to_owned(),
        ),
        (
            "QUEUE_URL".to_owned(),
            "http://127.0.0.1:1/123456789012/q".to_owned(),
        ),
        ("CLAIMS_TABLE".to_owned(), "claims".to_owned()),
    ]);
    let out = relay(&env, &["drain"]);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("DATABASE_URL") && lines[0].contains("DATABASE_SECRET_ARN"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("hunter2pw"));
}
