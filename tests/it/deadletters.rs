//! The operator commands as a user runs them: `dead-letters list`,
//! `dead-letters replay` and `status`, the real binary against the local
//! stack, on PostgreSQL and MariaDB.

use crate::common;

use std::collections::BTreeMap;
use std::process::Output;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use common::{Db, Fixture, Opts};
use serde_json::Value;

fn relay(env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    common::relay_command(env)
        .args(args)
        .output()
        .expect("run outbox-relay")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr, but for the TLS warning of the plaintext test servers.
fn stderr(out: &Output) -> String {
    common::stderr_lines(&out.stderr).join("\n")
}

fn last_json(out: &Output) -> Value {
    let text = stdout(out);
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(out)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

/// A fixture with its replay audit table (`OUTBOX_REPLAY_TABLE`), as
/// infra/sql/ creates it.
async fn fixture(db: Db, opts: Opts) -> Option<Fixture> {
    let mut f = Fixture::new(db, opts).await?;
    let audit = format!("{}_replay", f.table);
    f.pool
        .exec(match db {
            Db::Postgres => format!(
                "CREATE TABLE {audit} (id TEXT PRIMARY KEY, replay_count INTEGER NOT NULL, \
                 last_replayed_at TIMESTAMPTZ NOT NULL)"
            ),
            Db::MySql => format!(
                "CREATE TABLE {audit} (id VARCHAR(255) PRIMARY KEY, replay_count INT NOT NULL, \
                 last_replayed_at TIMESTAMP(6) NOT NULL) ENGINE=InnoDB"
            ),
        })
        .await;
    f.extra_env.insert("OUTBOX_REPLAY_TABLE".into(), audit);
    Some(f)
}

async fn replays_of(f: &Fixture, id: &str) -> Option<String> {
    f.pool
        .rows(format!(
            "SELECT {} FROM {}_replay WHERE id = '{id}'",
            if f.db == Db::Postgres {
                "replay_count::text"
            } else {
                "CAST(replay_count AS CHAR)"
            },
            f.table
        ))
        .await
        .into_iter()
        .next()
        .and_then(|r| r[0].clone())
}

async fn a_listing_shows_reason_and_size_but_the_payload_only_when_asked(db: Db) {
    let Some(f) = fixture(db, Opts::default()).await else {
        return;
    };
    let ids = f
        .insert(&[
            (Some("secret\u{1}value"), None),
            (None, None),
            (Some("ok"), None),
        ])
        .await;
    assert_eq!(f.drain().await.quarantined, 2);

    let out = relay(&f.env(), &["dead-letters", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("U+0001") && text.contains("payload is NULL"),
        "{text}"
    );
    assert!(text.contains(&ids[0]) && text.contains(&ids[1]), "{text}");
    assert!(text.contains("2 dead letter(s)"), "{text}");
    assert!(!text.contains("secret"), "the payload was shown: {text}");

    let out = relay(&f.env(), &["dead-letters", "list", "--json"]);
    let list = last_json(&out);
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], ids[0].as_str());
    assert_eq!(list[0]["payload_bytes"], "secret\u{1}value".len());
    assert_eq!(list[1]["payload_bytes"], Value::Null);
    assert_eq!(list[0]["replay_count"], 0);
    assert!(
        list[0]["failed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(list[0].get("payload").is_none());

    let out = relay(
        &f.env(),
        &["dead-letters", "list", "--json", "--show-payload"],
    );
    assert_eq!(last_json(&out)[0]["payload"], "secret\u{1}value");
}

async fn a_replayed_row_is_sent_by_the_next_pass_and_counted_in_the_audit(db: Db) {
    let Some(f) = fixture(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(Some("bad\u{1}"), None)]).await;
    let id = ids[0].as_str();
    assert_eq!(f.drain().await.quarantined, 1);
    // The operator fixes the cause, then replays.
    f.pool
        .exec(format!(
            "UPDATE {} SET payload = 'fixed' WHERE id = {id}",
            f.dead_letter
        ))
        .await;

    let dry = relay(
        &f.env(),
        &["dead-letters", "replay", "--id", id, "--dry-run"],
    );
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert_eq!(last_json(&dry)["replayed"][0], id);
    assert_eq!(last_json(&dry)["dry_run"], true);
    assert_eq!(
        (f.rows_left().await, f.dead_letters().await.len()),
        (0, 1),
        "a dry run changed nothing"
    );

    let out = relay(&f.env(), &["dead-letters", "replay", "--id", id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["replayed"], serde_json::json!([id]));
    assert_eq!(report["refused"], serde_json::json!([]));
    assert!(stderr(&out).contains(&format!("replayed {id}")));
    assert_eq!((f.rows_left().await, f.dead_letters().await.len()), (1, 0));
    assert_eq!(replays_of(&f, id).await.as_deref(), Some("1"));

    let s = f.drain().await;
    assert_eq!((s.sent, s.deleted), (1, 1));
    let got = f.receive_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].body.as_str(), got[0].outbox_id.as_str()),
        ("fixed", id)
    );

    // Gone from the dead-letter table now: refused, exit 3.
    let again = relay(&f.env(), &["dead-letters", "replay", "--id", id]);
    assert_eq!(again.status.code(), Some(3));
    assert_eq!(
        last_json(&again)["refused"][0]["reason"],
        "not in the dead-letter table"
    );
}

async fn an_id_already_back_in_the_outbox_is_refused_while_the_others_go_on(db: Db) {
    let Some(f) = fixture(db, Opts::default()).await else {
        return;
    };
    let ids = f.insert(&[(None, None), (None, None)]).await;
    assert_eq!(f.drain().await.quarantined, 2);
    f.pool
        .exec(format!("UPDATE {} SET payload = 'fixed'", f.dead_letter))
        .await;
    // The first id is in use again (put back by hand).
    f.pool
        .exec(format!(
            "INSERT INTO {} (id, payload) VALUES ({}, 'by hand')",
            f.table, ids[0]
        ))
        .await;

    let out = relay(&f.env(), &["dead-letters", "replay", "--all"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["replayed"], serde_json::json!([ids[1]]));
    assert_eq!(report["refused"][0]["id"], ids[0].as_str());
    assert!(
        report["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("already in the outbox")
    );
    assert!(stderr(&out).contains(&format!("refused {}: already in the outbox", ids[0])));
    // The refused row stays a dead letter; the other is in the outbox.
    let left: Vec<String> = f
        .dead_letters()
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![ids[0].clone()]);
    assert_eq!(f.rows_left().await, 2);
    assert_eq!(replays_of(&f, &ids[0]).await, None);
}

async fn replay_without_its_audit_table_changes_nothing_and_says_which_variable(db: Db) {
    let Some(mut f) = Fixture::new(db, Opts::default()).await else {
        return;
    };
    f.insert(&[(None, None)]).await;
    f.drain().await;
    f.extra_env
        .insert("OUTBOX_REPLAY_TABLE".into(), "no_such_audit".into());
    let out = relay(&f.env(), &["dead-letters", "replay", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("OUTBOX_REPLAY_TABLE") && err.contains("no_such_audit"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(f.dead_letters().await.len(), 1);
}

async fn status_tells_where_a_row_is_and_what_the_ledger_knows(db: Db) {
    let opts = Opts::fifo_grouped();
    let Some(f) = fixture(db, opts).await else {
        return;
    };
    let ids = f
        .insert(&[(Some("hello"), Some("g1")), (None, Some("g1"))])
        .await;
    let waiting = relay(&f.env(), &["status", &ids[0], "--json"]);
    assert_eq!(waiting.status.code(), Some(0), "{}", stderr(&waiting));
    let st = last_json(&waiting);
    assert_eq!(
        (st["in_outbox"].clone(), st["ledger"].clone()),
        (Value::Bool(true), Value::Null)
    );

    f.drain().await;
    let got = f
        .sqs
        .receive_message()
        .queue_url(&f.queue_url)
        .message_system_attribute_names(MessageSystemAttributeName::SequenceNumber)
        .send()
        .await
        .unwrap();
    let m = &got.messages()[0];
    let seq = m.attributes().unwrap()[&MessageSystemAttributeName::SequenceNumber].clone();

    let out = relay(&f.env(), &["status", &ids[0], "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let st = last_json(&out);
    assert_eq!(st["in_outbox"], false);
    assert_eq!(st["dead_letter"], Value::Null);
    let l = &st["ledger"];
    assert_eq!(l["state"], "SENT");
    assert_eq!(l["message_id"], m.message_id().unwrap());
    assert_eq!(l["sequence_number"], seq.as_str());
    assert_eq!(l["attempts"], 1);
    assert!(l["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(l["owner"].as_str().is_some_and(|o| !o.is_empty()));

    let text = stdout(&relay(&f.env(), &["status", &ids[0]]));
    assert!(text.contains("sent, and deleted from the outbox"), "{text}");
    assert!(text.contains(&seq), "{text}");

    let poison = last_json(&relay(&f.env(), &["status", &ids[1], "--json"]));
    assert_eq!(poison["dead_letter"]["reason"], "payload is NULL");
    assert_eq!(poison["in_outbox"], false);

    let unknown = relay(&f.env(), &["status", "999999"]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(stdout(&unknown).contains("unknown"));
}

both_databases!(
    a_listing_shows_reason_and_size_but_the_payload_only_when_asked,
    a_replayed_row_is_sent_by_the_next_pass_and_counted_in_the_audit,
    an_id_already_back_in_the_outbox_is_refused_while_the_others_go_on,
    replay_without_its_audit_table_changes_nothing_and_says_which_variable,
    status_tells_where_a_row_is_and_what_the_ledger_knows,
);

#[test]
fn the_operator_commands_refuse_bad_arguments_with_exit_two() {
    let env = BTreeMap::new();
    for args in [
        &["dead-letters"][..],
        &["dead-letters", "replay"],
        &["dead-letters", "replay", "--all", "--id", "1"],
        &["dead-letters", "replay", "--id"],
        &["dead-letters", "list", "--csv"],
        &["status"],
        &["status", "1", "2"],
    ] {
        let out = relay(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{args:?}");
    }
    let help = stdout(&relay(&env, &["--help"]));
    for word in [
        "dead-letters list",
        "dead-letters replay",
        "--show-payload",
        "status ID",
        "OUTBOX_REPLAY_TABLE",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
}
