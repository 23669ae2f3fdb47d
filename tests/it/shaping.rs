//! Message shaping on the real stack: routes to other queues, message
//! attributes, trace headers and not-before times, on PostgreSQL and
//! MariaDB; and what a quarantined shaped row keeps for its replay.

use crate::common;

use std::collections::HashMap;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use common::{Db, Fixture, Opts};
use outbox_relay::deadletters::{self, Selection};

const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A fixture whose outbox and dead-letter tables have every shaping
/// column (infra/sql/ shows them), and the variables naming them.
async fn shaped(db: Db, opts: Opts) -> Option<Fixture> {
    let mut f = Fixture::new(db, opts).await?;
    let (json, time, audit) = match db {
        Db::Postgres => ("JSONB", "TIMESTAMPTZ", "TIMESTAMPTZ"),
        Db::MySql => ("JSON", "TIMESTAMP(6) NULL", "TIMESTAMP(6)"),
    };
    f.pool
        .exec(format!(
            "ALTER TABLE {} ADD COLUMN route VARCHAR(255), ADD COLUMN attributes {json}, \
             ADD COLUMN trace_header VARCHAR(1024), ADD COLUMN not_before {time}",
            f.table
        ))
        .await;
    f.pool
        .exec(format!(
            "ALTER TABLE {} ADD COLUMN route VARCHAR(255), ADD COLUMN attributes TEXT, \
             ADD COLUMN trace_header VARCHAR(1024), ADD COLUMN not_before {time}",
            f.dead_letter
        ))
        .await;
    let replay = format!("{}_replay", f.table);
    f.pool
        .exec(format!(
            "CREATE TABLE {replay} (id VARCHAR(255) PRIMARY KEY, replay_count INT NOT NULL, \
             last_replayed_at {audit} NOT NULL)"
        ))
        .await;
    for (var, col) in [
        ("OUTBOX_ATTRIBUTES_COLUMN", "attributes"),
        ("OUTBOX_TRACE_COLUMN", "trace_header"),
        ("OUTBOX_NOT_BEFORE_COLUMN", "not_before"),
        ("OUTBOX_REPLAY_TABLE", replay.as_str()),
    ] {
        f.extra_env.insert(var.into(), col.into());
    }
    Some(f)
}

async fn new_queue(f: &Fixture, name: &str) -> String {
    let fifo = f.opts.fifo;
    let mut create = f.sqs.create_queue().queue_name(format!(
        "{name}_{}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8],
        if fifo { ".fifo" } else { "" }
    ));
    if fifo {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    create.send().await.unwrap().queue_url().unwrap().to_owned()
}

fn route_to(f: &mut Fixture, routes: &[(&str, &str)]) {
    let map: HashMap<&str, &str> = routes.iter().copied().collect();
    f.extra_env
        .insert("OUTBOX_QUEUE_COLUMN".into(), "route".into());
    f.extra_env
        .insert("QUEUE_ROUTES".into(), serde_json::to_string(&map).unwrap());
}

/// A message as received with every attribute: body, message attributes
/// (name → string value), the trace header.
#[derive(Debug)]
struct Got {
    body: String,
    attributes: HashMap<String, String>,
    trace_header: Option<String>,
}

/// Every message on the queue at `url`, deleted as received, by body.
async fn receive(f: &Fixture, url: &str) -> Vec<Got> {
    let mut out: Vec<Got> = (common::drain(&f.sqs, url).await.iter())
        .map(|m| Got {
            body: m.body().unwrap_or_default().to_owned(),
            attributes: m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                .collect(),
            trace_header: m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader))
                .cloned(),
        })
        .collect();
    out.sort_by(|a, b| a.body.cmp(&b.body));
    out
}

fn sql_str(v: Option<&str>) -> String {
    v.map_or("NULL".to_owned(), |s| {
        format!("'{}'", s.replace('\'', "''"))
    })
}

/// A row to insert: payload, route, attributes, trace.
type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Inserts rows.
async fn insert(f: &Fixture, rows: &[Row<'_>]) {
    for (payload, route, attrs, trace) in rows {
        f.pool
            .exec(format!(
                "INSERT INTO {} (payload, route, attributes, trace_header) VALUES ({}, {}, {}, {})",
                f.table,
                sql_str(Some(payload)),
                sql_str(*route),
                sql_str(*attrs),
                sql_str(*trace)
            ))
            .await;
    }
}

async fn rows_go_to_their_routes_with_their_attributes_and_trace_context(db: Db) {
    let Some(mut f) = shaped(db, Opts::default()).await else {
        return;
    };
    let billing = new_queue(&f, "billing").await;
    route_to(&mut f, &[("billing", &billing)]);
    let nine: Vec<String> = (0..9).map(|i| format!("\"a{i}\": \"v\"")).collect();
    let nine = format!("{{{}}}", nine.join(", "));
    insert(
        &f,
        &[
            (
                "a-default",
                None,
                Some(r#"{"tenant": "acme", "kind": "order.created"}"#),
                Some(XRAY),
            ),
            (
                "b-billing",
                Some("billing"),
                Some(r#"{"tenant": "beta"}"#),
                Some(W3C),
            ),
            (
                "c-nowhere",
                Some("nowhere"),
                Some(r#"{"tenant": "gamma"}"#),
                Some(XRAY),
            ),
            ("d-reserved", None, Some(r#"{"AWS.thing": "x"}"#), None),
            ("e-too-many", None, Some(&nine), None),
            ("f-not-object", None, Some(r#"["x"]"#), None),
        ],
    )
    .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.quarantined, s.deleted), (2, 4, 2));

    let default = receive(&f, &f.queue_url).await;
    assert_eq!(default.len(), 1);
    let a = &default[0];
    assert_eq!(a.body, "a-default");
    assert_eq!(a.attributes["tenant"], "acme");
    assert_eq!(a.attributes["kind"], "order.created");
    assert_eq!(a.attributes["outbox-source"], f.table);
    assert!(a.attributes.contains_key("outbox-id"));
    assert_eq!(a.trace_header.as_deref(), Some(XRAY));

    let routed = receive(&f, &billing).await;
    assert_eq!(routed.len(), 1);
    let b = &routed[0];
    assert_eq!(b.body, "b-billing");
    assert_eq!(b.attributes["tenant"], "beta");
    assert_eq!(b.attributes["traceparent"], W3C);
    assert_eq!(b.trace_header, None);

    let reasons: Vec<String> = f.dead_letters().await.into_iter().map(|(_, r)| r).collect();
    assert!(
        reasons[0].contains("route \"nowhere\" is not in QUEUE_ROUTES"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("reserves"), "{reasons:?}");
    assert!(reasons[2].contains("SQS allows 10"), "{reasons:?}");
    assert!(reasons[3].contains("not a JSON object"), "{reasons:?}");
}

async fn a_quarantined_row_keeps_its_shaping_so_a_replay_sends_it_as_meant(db: Db) {
    let Some(mut f) = shaped(db, Opts::default()).await else {
        return;
    };
    let billing = new_queue(&f, "billing").await;
    route_to(&mut f, &[("billing", &billing)]);
    insert(
        &f,
        &[(
            "late",
            Some("audit"),
            Some(r#"{"tenant": "acme"}"#),
            Some(XRAY),
        )],
    )
    .await;
    assert_eq!(f.drain().await.quarantined, 1);
    let kept = f
        .pool
        .rows(format!(
            "SELECT route, attributes, trace_header FROM {}",
            f.dead_letter
        ))
        .await;
    assert_eq!(kept[0][0].as_deref(), Some("audit"));
    assert!(kept[0][1].as_deref().unwrap().contains("acme"));
    assert_eq!(kept[0][2].as_deref(), Some(XRAY));

    // The operator adds the missing route, then replays.
    let audit = new_queue(&f, "audit").await;
    route_to(&mut f, &[("billing", &billing), ("audit", &audit)]);
    let db_handle =
        outbox_relay::admin::Db::connect(f.app().await.database_options().await.unwrap())
            .await
            .unwrap();
    let report = deadletters::replay(&db_handle, &f.config(), &Selection::All, false)
        .await
        .unwrap();
    db_handle.close().await;
    assert_eq!(
        (report.replayed.len(), report.refused.len()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(f.drain().await.sent, 1);
    let got = receive(&f, &audit).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["tenant"], "acme");
    assert_eq!(got[0].trace_header.as_deref(), Some(XRAY));
}

async fn every_attribute_byte_counts_against_the_queue_size_limit(db: Db) {
    let opts = Opts {
        max_message_bytes: Some(1024),
        ..Opts::default()
    };
    let Some(f) = shaped(db, opts).await else {
        return;
    };
    let body = "x".repeat(900);
    let big = format!(r#"{{"note": "{}"}}"#, "y".repeat(100));
    insert(
        &f,
        &[(&body, None, None, None), (&body, None, Some(&big), None)],
    )
    .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.quarantined), (1, 1));
    let reason = &f.dead_letters().await[0].1;
    assert!(
        reason.contains("the queue accepts at most 1024"),
        "{reason}"
    );
}

async fn a_row_is_not_sent_before_its_not_before_time(db: Db) {
    let Some(f) = shaped(db, Opts::default()).await else {
        return;
    };
    let (later, earlier) = match db {
        Db::Postgres => ("now() + interval '1 hour'", "now() - interval '1 second'"),
        Db::MySql => ("NOW(6) + INTERVAL 1 HOUR", "NOW(6) - INTERVAL 1 SECOND"),
    };
    f.pool
        .exec(format!(
            "INSERT INTO {} (payload, not_before) VALUES ('due', {earlier}), ('later', {later}), ('always', NULL)",
            f.table
        ))
        .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.deleted), (2, 2));
    assert_eq!(f.rows_left().await, 1);
    let bodies: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    assert!(bodies.contains(&"due".into()) && bodies.contains(&"always".into()));

    f.pool
        .exec(format!("UPDATE {} SET not_before = {earlier}", f.table))
        .await;
    assert_eq!(f.drain().await.sent, 1);
    assert_eq!(f.receive_all().await[0].body, "later");
}

async fn on_fifo_a_row_not_yet_due_holds_back_the_later_rows_of_its_group(db: Db) {
    let opts = Opts::fifo_grouped();
    let Some(f) = shaped(db, opts).await else {
        return;
    };
    let later = match db {
        Db::Postgres => "now() + interval '1 hour'",
        Db::MySql => "NOW(6) + INTERVAL 1 HOUR",
    };
    f.pool
        .exec(format!(
            "INSERT INTO {} (payload, group_key, not_before) VALUES \
             ('g1-first', 'g1', {later}), ('g1-second', 'g1', NULL), ('g2-only', 'g2', NULL)",
            f.table
        ))
        .await;
    let s = f.drain().await;
    assert_eq!((s.sent, s.skipped), (1, 1));
    assert_eq!(f.receive_all().await[0].body, "g2-only");

    f.pool
        .exec(format!("UPDATE {} SET not_before = NULL", f.table))
        .await;
    assert_eq!(f.drain().await.sent, 2);
    let order: Vec<String> = f.receive_all().await.into_iter().map(|m| m.body).collect();
    assert_eq!(order, vec!["g1-first", "g1-second"]);
}

async fn a_shaping_column_the_table_lacks_fails_the_start_naming_its_variable(db: Db) {
    let Some(mut f) = shaped(db, Opts::default()).await else {
        return;
    };
    f.extra_env
        .insert("OUTBOX_TRACE_COLUMN".into(), "no_such_column".into());
    let app = f.app().await;
    let err = app
        .run(&Default::default(), None, None, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("OUTBOX_TRACE_COLUMN:") && err.contains("no_such_column"),
        "{err}"
    );

    f.extra_env
        .insert("OUTBOX_TRACE_COLUMN".into(), "trace_header".into());
    f.extra_env
        .insert("OUTBOX_NOT_BEFORE_COLUMN".into(), "route".into());
    let err = f
        .app()
        .await
        .run(&Default::default(), None, None, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OUTBOX_NOT_BEFORE_COLUMN") && err.contains("timestamp"),
        "{err}"
    );
}

both_databases!(
    rows_go_to_their_routes_with_their_attributes_and_trace_context,
    a_quarantined_row_keeps_its_shaping_so_a_replay_sends_it_as_meant,
    every_attribute_byte_counts_against_the_queue_size_limit,
    a_row_is_not_sent_before_its_not_before_time,
    on_fifo_a_row_not_yet_due_holds_back_the_later_rows_of_its_group,
    a_shaping_column_the_table_lacks_fails_the_start_naming_its_variable,
);
