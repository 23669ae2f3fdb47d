//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! One JSON line per pass on stdout; CloudWatch Logs turns it into metrics
//! without an API call (no `cloudwatch:PutMetricData` permission, no extra
//! latency). Namespace `OutboxRelay`, one dimension `Table` = the
//! `OUTBOX_TABLE` value as configured, which is what the template's
//! "oldest row" alarm watches.

use serde_json::{Map, Value, json};

use crate::summary::Summary;

/// The metrics namespace the template's alarms use.
pub const NAMESPACE: &str = "OutboxRelay";

/// What is waiting in the outbox after a pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows in the table (counted up to a cap; see `Source::backlog`).
    pub rows: u64,
    /// Age of the oldest row, when the table has a `created_at` column.
    pub oldest_age_seconds: Option<f64>,
}

/// The EMF document for one pass.
pub fn emf(table: &str, s: &Summary, backlog: Option<&Backlog>, timestamp_ms: u64) -> Value {
    let mut values: Vec<(&str, &str, Value)> = vec![
        ("Sent", "Count", json!(s.sent)),
        ("Recovered", "Count", json!(s.recovered)),
        ("Quarantined", "Count", json!(s.quarantined)),
        ("Skipped", "Count", json!(s.skipped)),
        ("PassDurationMs", "Milliseconds", json!(s.elapsed_ms)),
    ];
    if let Some(b) = backlog {
        values.push(("Backlog", "Count", json!(b.rows)));
        if let Some(age) = b.oldest_age_seconds {
            values.push(("OldestRowAgeSeconds", "Seconds", json!(age)));
        }
    }
    let definitions: Vec<Value> = values
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Table"]],
                "Metrics": definitions,
            }]
        }),
    );
    doc.insert("Table".into(), json!(table));
    for (name, _, value) in values {
        doc.insert(name.into(), value);
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_a_value() {
        let s = Summary {
            sent: 7,
            recovered: 1,
            quarantined: 2,
            skipped: 3,
            elapsed_ms: 120,
            ..Summary::default()
        };
        let b = Backlog {
            rows: 5,
            oldest_age_seconds: Some(42.5),
        };
        let doc = emf("app.outbox", &s, Some(&b), 1_700_000_000_000);
        let decl = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(decl["Namespace"], "OutboxRelay");
        assert_eq!(decl["Dimensions"], json!([["Table"]]));
        assert_eq!(doc["Table"], "app.outbox");
        for m in decl["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(
                doc.get(name).is_some_and(Value::is_number),
                "{name} has no value"
            );
        }
        assert_eq!(doc["Sent"], 7);
        assert_eq!(doc["OldestRowAgeSeconds"], 42.5);
        let without = emf("t", &s, None, 0);
        assert!(without.get("Backlog").is_none());
    }
}
