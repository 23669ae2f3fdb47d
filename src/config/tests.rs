//! The settings' contract: defaults, and one line naming the variable for
//! every bad value.

use super::*;
use crate::tls::{ModeOrigin, RootCerts, SslMode};
use std::collections::HashMap;

fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://u:secretpw@localhost/db"),
        ("QUEUE_URL", "http://localhost:5000/123456789012/q"),
        ("CLAIMS_TABLE", "claims"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| env.get(k).cloned())
}

#[test]
fn defaults_follow_the_contract() {
    let c = with(&[]).unwrap();
    assert_eq!(c.table.to_string(), "outbox");
    assert_eq!(c.id_column.as_str(), "id");
    assert_eq!(c.payload_column.as_str(), "payload");
    assert_eq!(c.dead_letter_table.to_string(), "outbox_dead_letter");
    assert_eq!(c.batch_size, 100);
    assert_eq!(c.lease, Duration::from_secs(60));
    assert!(c.group_column.is_none());
    assert!(!c.is_fifo());
}

#[test]
fn each_bad_setting_names_its_variable() {
    let cases = [
        ("QUEUE_URL", ""),
        ("QUEUE_URL", "not a url"),
        ("CLAIMS_TABLE", "a"),
        ("BATCH_SIZE", "ten"),
        ("BATCH_SIZE", "0"),
        ("LEASE_SECONDS", "1"),
        ("OUTBOX_TABLE", "x; drop table y"),
        ("OUTBOX_ID_COLUMN", "id\""),
        ("OUTBOX_DEAD_LETTER_TABLE", "outbox"),
        ("DATABASE_URL", "sqlite://x"),
    ];
    for (var, value) in cases {
        let err = with(&[(var, value)]).unwrap_err();
        assert_eq!(err.variable, var, "for {var}={value:?}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn a_fifo_queue_refuses_a_lease_longer_than_its_deduplication_window() {
    let fifo = ("QUEUE_URL", "http://127.0.0.1:5000/123456789012/q.fifo");
    assert!(with(&[fifo, ("LEASE_SECONDS", "240")]).is_ok());
    let err = with(&[fifo, ("LEASE_SECONDS", "241")]).unwrap_err();
    assert_eq!(err.variable, "LEASE_SECONDS");
    assert!(
        with(&[("LEASE_SECONDS", "3600")]).is_ok(),
        "standard queues keep the full range"
    );
}

#[test]
fn follow_settings_default_to_one_drain_and_a_poll_that_suits_the_channel() {
    let c = with(&[]).unwrap();
    assert_eq!(c.follow, Duration::ZERO);
    assert_eq!(c.notify_channel, None);
    assert_eq!(c.poll_interval, Duration::from_millis(250));
    let c = with(&[
        ("OUTBOX_NOTIFY_CHANNEL", "outbox_relay"),
        ("FOLLOW_SECONDS", "55"),
    ])
    .unwrap();
    assert_eq!(c.follow, Duration::from_secs(55));
    assert_eq!(c.notify_channel.unwrap().as_str(), "outbox_relay");
    assert_eq!(c.poll_interval, Duration::from_millis(1000));
}

#[test]
fn each_bad_follow_setting_names_its_variable() {
    let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("POLL_INTERVAL_MS", "0")], "POLL_INTERVAL_MS"),
        (&[("POLL_INTERVAL_MS", "soon")], "POLL_INTERVAL_MS"),
        (
            &[("OUTBOX_NOTIFY_CHANNEL", "new rows")],
            "OUTBOX_NOTIFY_CHANNEL",
        ),
        (
            &[("OUTBOX_NOTIFY_CHANNEL", "x\"; NOTIFY y")],
            "OUTBOX_NOTIFY_CHANNEL",
        ),
        (
            &[
                ("OUTBOX_NOTIFY_CHANNEL", "c"),
                ("DATABASE_URL", "mysql://u:p@h/db"),
            ],
            "OUTBOX_NOTIFY_CHANNEL",
        ),
        (&[("FOLLOW_SECONDS", "-1")], "FOLLOW_SECONDS"),
        (&[lambda, ("FOLLOW_SECONDS", "866")], "FOLLOW_SECONDS"),
        (
            &[
                lambda,
                ("FOLLOW_SECONDS", "100"),
                ("MAX_PASS_SECONDS", "60"),
            ],
            "FOLLOW_SECONDS",
        ),
    ];
    for (pairs, var) in cases {
        let err = with(pairs).unwrap_err();
        assert_eq!(err.variable, *var, "for {pairs:?}");
        assert!(!err.to_string().contains('\n'));
    }
    assert!(with(&[lambda, ("FOLLOW_SECONDS", "865")]).is_ok());
    assert!(
        with(&[("FOLLOW_SECONDS", "3600")]).is_ok(),
        "the CLI follows longer"
    );
}

#[test]
fn the_database_password_is_never_shown() {
    let c = with(&[]).unwrap();
    assert!(!format!("{c:?}").contains("secretpw"));
    let err = with(&[("DATABASE_URL", "sqlite://u:secretpw@x")]).unwrap_err();
    assert!(!err.to_string().contains("secretpw"));
}

#[test]
fn a_url_and_a_secret_together_are_refused_naming_both() {
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db";
    let err = with(&[("DATABASE_SECRET_ARN", arn)]).unwrap_err();
    assert_eq!(err.variable, "DATABASE_URL");
    let line = err.to_string();
    assert!(
        line.contains("DATABASE_URL") && line.contains("DATABASE_SECRET_ARN"),
        "{line}"
    );
}

#[test]
fn the_tls_mode_defaults_to_verified_for_a_secret_and_to_the_url_otherwise() {
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db";
    let secret = with(&[("DATABASE_URL", ""), ("DATABASE_SECRET_ARN", arn)]).unwrap();
    assert_eq!(secret.tls.mode, SslMode::VerifyFull);
    assert_eq!(secret.tls.roots, RootCerts::Bundled);
    assert!(secret.tls.warning().is_none());
    let plain = with(&[]).unwrap();
    assert_eq!(
        (plain.tls.mode, plain.tls.origin),
        (SslMode::Prefer, ModeOrigin::Default)
    );
    assert!(plain.tls.warning().unwrap().contains("DATABASE_SSL_MODE"));
    let own = with(&[("DATABASE_URL", "mysql://u:p@h/db?ssl-mode=VERIFY_IDENTITY")]).unwrap();
    assert_eq!(
        (own.tls.mode, own.tls.origin),
        (SslMode::VerifyFull, ModeOrigin::UrlParameter)
    );
    let over = with(&[
        ("DATABASE_URL", "postgres://u:p@h/db?sslmode=disable"),
        ("DATABASE_SSL_MODE", "require"),
    ])
    .unwrap();
    assert_eq!(
        (over.tls.mode, over.tls.origin),
        (SslMode::Require, ModeOrigin::Variable)
    );
    let with_ca = with(&[(
        "DATABASE_URL",
        "postgres://u:p@h/db?sslrootcert=/etc/ca.pem",
    )])
    .unwrap();
    assert_eq!(with_ca.tls.roots, RootCerts::UrlParameter);
}

#[test]
fn a_bad_tls_setting_names_its_variable_and_never_the_password() {
    for (var, value) in [
        ("DATABASE_SSL_MODE", "verify"),
        ("DATABASE_SSL_ROOT_CERT", "/nonexistent/ca.pem"),
        ("DATABASE_SSL_ROOT_CERT", "/etc/hostname"),
    ] {
        let err = with(&[(var, value)]).unwrap_err();
        assert_eq!(err.variable, var, "{var}={value}");
    }
    let err = with(&[("DATABASE_URL", "postgres://u:secretpw@h/db?sslmode=on")]).unwrap_err();
    assert_eq!(err.variable, "DATABASE_URL");
    assert!(!err.to_string().contains("secretpw"));
}

#[test]
fn each_number_accepts_exactly_its_declared_range() {
    use super::vars::{BATCH_SIZE, LEASE_SECONDS, LEDGER_RETENTION_DAYS, POLL_INTERVAL_MS};
    for n in [
        &BATCH_SIZE,
        &LEASE_SECONDS,
        &LEDGER_RETENTION_DAYS,
        &POLL_INTERVAL_MS,
    ] {
        for ok in [n.min, n.max] {
            assert!(
                with(&[(n.name, &ok.to_string())]).is_ok(),
                "{}={ok}",
                n.name
            );
        }
        for refused in [n.min.checked_sub(1), n.max.checked_add(1)]
            .into_iter()
            .flatten()
        {
            let err = with(&[(n.name, &refused.to_string())]).unwrap_err();
            assert_eq!(err.variable, n.name, "{}={refused}", n.name);
        }
    }
    let c = with(&[]).unwrap();
    assert_eq!(c.batch_size, BATCH_SIZE.default);
    assert_eq!(c.lease.as_secs(), u64::from(LEASE_SECONDS.default));
}
