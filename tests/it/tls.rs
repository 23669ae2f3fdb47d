//! Database TLS against real servers: throwaway PostgreSQL and MariaDB with
//! a certificate for `localhost` signed by a CA the test makes, and the
//! same servers without TLS (see tls_servers.rs). A verifying mode with the
//! right CA relays; an unknown CA, a host name the certificate does not
//! carry, or a server without TLS is refused with a line that says which,
//! and nothing is sent. The secret path verifies by default.

use crate::common;
use crate::tls_servers;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{Db, Fixture, Opts};
use outbox_relay::app::App;
use outbox_relay::config::Config;
use outbox_relay::summary::Summary;
use outbox_relay::tls::SslMode;
use tls_servers::{MY_PASSWORD, MY_USER, servers};

/// A fixture on a throwaway server (`tls`: the one with TLS) holding one
/// row; None when MariaDB is not installed.
async fn fixture(db: Db, tls: bool) -> Option<Fixture> {
    let s = servers();
    let port = match (db, tls) {
        (Db::Postgres, true) => Some(s.pg_tls),
        (Db::Postgres, false) => Some(s.pg_plain),
        (Db::MySql, true) => s.my_tls,
        (Db::MySql, false) => s.my_plain,
    };
    let Some(port) = port else {
        println!("SKIPPED(mysql): mariadbd is not installed");
        return None;
    };
    let admin = match db {
        Db::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        Db::MySql => format!("mysql://{MY_USER}:{MY_PASSWORD}@127.0.0.1:{port}/mysql"),
    };
    let url = common::test_database(db, &admin).await;
    let f = Fixture::at(db, url, Opts::default()).await;
    f.insert(&[(Some("over tls"), None)]).await;
    Some(f)
}

/// The fixture's database URL with another host name for the server.
fn url_at(f: &Fixture, host: &str) -> String {
    f.url.replacen("@127.0.0.1:", &format!("@{host}:"), 1)
}

fn port_of(f: &Fixture) -> String {
    let rest = f.url.rsplit_once("127.0.0.1:").unwrap().1;
    rest.split('/').next().unwrap().to_owned()
}

fn env(f: &Fixture, pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut env = f.env();
    for (k, v) in pairs {
        env.insert((*k).to_owned(), v.clone());
    }
    env
}

/// One pass in-process with these settings; the error as the CLI and the
/// Lambda response show it.
async fn pass(env: &BTreeMap<String, String>) -> Result<Summary, String> {
    let cfg = Config::from_lookup(|k| env.get(k).cloned()).expect("valid config");
    let app = App::new(cfg).await.expect("app");
    let result = app
        .run(&Default::default(), None, None, &|_| {})
        .await
        .map_err(|e| e.to_string());
    app.close().await;
    result
}

/// The real binary with only these variables and what the SDK needs.
fn relay(env: &BTreeMap<String, String>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    cmd.env_clear();
    for (var, value) in std::env::vars() {
        let sdk = var.starts_with("AWS_ENDPOINT_URL")
            || matches!(
                var.as_str(),
                "AWS_REGION"
                    | "AWS_ACCESS_KEY_ID"
                    | "AWS_SECRET_ACCESS_KEY"
                    | "AWS_EC2_METADATA_DISABLED"
            );
        if sdk || var == "PATH" || var == "HOME" {
            cmd.env(var, value);
        }
    }
    cmd.envs(env)
        .arg("drain")
        .output()
        .expect("run outbox-relay")
}

/// Asserts that nothing left the outbox and nothing reached the queue.
async fn nothing_sent(f: &Fixture) {
    assert_eq!(f.rows_left().await, 1, "the row left the outbox");
    assert_eq!(f.queue_depth().await, 0, "a message was sent");
}

fn ca() -> String {
    servers().ca.display().to_string()
}

async fn verify_full_with_the_right_ca_relays_a_row_end_to_end(db: Db) {
    let Some(f) = fixture(db, true).await else {
        return;
    };
    let out = relay(&env(
        &f,
        &[
            ("DATABASE_URL", url_at(&f, "localhost")),
            ("DATABASE_SSL_MODE", "verify-full".into()),
            ("DATABASE_SSL_ROOT_CERT", ca()),
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.is_empty(),
        "a verified connection is not warned about: {stderr}"
    );
    let msgs = f.receive_all().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, "over tls");
    assert_eq!(f.rows_left().await, 0);
}

async fn a_certificate_from_an_unknown_ca_is_refused_and_nothing_is_sent(db: Db) {
    let Some(f) = fixture(db, true).await else {
        return;
    };
    let other = servers().other_ca.display().to_string();
    let url = ("DATABASE_URL", url_at(&f, "localhost"));
    let mode = ("DATABASE_SSL_MODE", "verify-full".to_owned());
    let err = pass(&env(
        &f,
        &[url.clone(), mode.clone(), ("DATABASE_SSL_ROOT_CERT", other)],
    ))
    .await
    .unwrap_err();
    assert!(
        err.contains("unknown certificate authority") && err.contains("DATABASE_SSL_ROOT_CERT"),
        "{err}"
    );
    // Without DATABASE_SSL_ROOT_CERT: the built-in RDS CAs do not know it either.
    let err = pass(&env(&f, &[url, mode])).await.unwrap_err();
    assert!(
        err.contains("unknown certificate authority") && err.contains("Amazon RDS"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    nothing_sent(&f).await;
}

async fn a_host_name_the_certificate_does_not_carry_is_refused_and_verify_ca_skips_it(db: Db) {
    let Some(f) = fixture(db, true).await else {
        return;
    };
    // The certificate is for localhost; 127.0.0.1 is not in it.
    let by_ip = |mode: &str| {
        env(
            &f,
            &[
                ("DATABASE_URL", url_at(&f, "127.0.0.1")),
                ("DATABASE_SSL_MODE", mode.to_owned()),
                ("DATABASE_SSL_ROOT_CERT", ca()),
            ],
        )
    };
    let err = pass(&by_ip("verify-full")).await.unwrap_err();
    assert!(
        err.contains("DATABASE_SSL_MODE=verify-full")
            && err.contains("not valid for the host name 127.0.0.1"),
        "{err}"
    );
    nothing_sent(&f).await;
    let s = pass(&by_ip("verify-ca"))
        .await
        .expect("verify-ca checks the CA only");
    assert_eq!((s.sent, s.deleted), (1, 1));
}

async fn a_server_without_tls_is_refused_when_tls_is_asked_for(db: Db) {
    let Some(f) = fixture(db, false).await else {
        return;
    };
    for mode in ["require", "verify-ca", "verify-full"] {
        let err = pass(&env(
            &f,
            &[
                ("DATABASE_URL", url_at(&f, "localhost")),
                ("DATABASE_SSL_MODE", mode.to_owned()),
                ("DATABASE_SSL_ROOT_CERT", ca()),
            ],
        ))
        .await
        .unwrap_err();
        assert!(
            err.contains(&format!("DATABASE_SSL_MODE={mode}"))
                && err.contains("does not offer TLS"),
            "{mode}: {err}"
        );
    }
    nothing_sent(&f).await;
    // prefer falls back to plaintext, which is what it is warned for.
    let s = pass(&env(&f, &[("DATABASE_SSL_MODE", "prefer".into())]))
        .await
        .expect("prefer accepts plaintext");
    assert_eq!(s.sent, 1);
}

/// Creates a secret in the RDS JSON shape in the stack's Secrets Manager.
async fn put_secret(name: &str, value: &str) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(&common::aws().await);
    let out = sm
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await;
    out.unwrap().arn().unwrap().to_owned()
}

/// The relay's environment with the database from a secret naming `host`.
async fn secret_env(f: &Fixture, host: &str, name: &str) -> BTreeMap<String, String> {
    let (engine, user) = match f.db {
        Db::Postgres => ("postgres", "postgres"),
        Db::MySql => ("mariadb", MY_USER),
    };
    let port = port_of(f);
    let secret = format!(
        r#"{{"engine":"{engine}","host":"{host}","port":{port},"username":"{user}","password":"{MY_PASSWORD}","dbname":"outbox_relay_test"}}"#
    );
    let arn = put_secret(&format!("{name}-{}", &f.table[7..]), &secret).await;
    let mut env = env(
        f,
        &[
            ("DATABASE_SECRET_ARN", arn),
            ("DATABASE_SSL_ROOT_CERT", ca()),
        ],
    );
    env.remove("DATABASE_URL");
    env
}

async fn the_secret_path_verifies_the_certificate_and_host_name_by_default(db: Db) {
    let Some(f) = fixture(db, true).await else {
        return;
    };
    let by_ip = secret_env(&f, "127.0.0.1", "tls-ip").await;
    let cfg = Config::from_lookup(|k| by_ip.get(k).cloned()).unwrap();
    assert_eq!(cfg.tls.mode, SslMode::VerifyFull);
    // require or verify-ca would accept this server: only verify-full refuses.
    let err = pass(&by_ip).await.unwrap_err();
    assert!(
        err.contains("not valid for the host name 127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains(MY_PASSWORD), "the password leaked: {err}");
    nothing_sent(&f).await;

    let by_name = secret_env(&f, "localhost", "tls-name").await;
    let out = relay(&by_name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(f.receive_all().await.len(), 1);
    assert_eq!(f.rows_left().await, 0);
}

both_databases!(
    verify_full_with_the_right_ca_relays_a_row_end_to_end,
    a_certificate_from_an_unknown_ca_is_refused_and_nothing_is_sent,
    a_host_name_the_certificate_does_not_carry_is_refused_and_verify_ca_skips_it,
    a_server_without_tls_is_refused_when_tls_is_asked_for,
    the_secret_path_verifies_the_certificate_and_host_name_by_default,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_that_does_not_verify_is_warned_about_at_start_naming_the_variable() {
    let f = fixture(Db::Postgres, true).await.unwrap();
    // No sslmode in the URL and no DATABASE_SSL_MODE: prefer, warned.
    let out = relay(&env(&f, &[("DATABASE_URL", url_at(&f, "localhost"))]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("DATABASE_SSL_MODE is prefer") && lines[0].contains("not verified"),
        "{stderr}"
    );
    assert_eq!(f.rows_left().await, 0);
}
