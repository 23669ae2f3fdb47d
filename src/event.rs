//! Invocation events: what a pass is asked to do.
//!
//! Three shapes are accepted (docs/design.md, "invocation events"): an EventBridge
//! scheduled event, an EventBridge Scheduler payload, and the manual backfill
//! payload `{"max_rows": N, "dry_run": bool}`. Anything else is an error
//! response, never a guess: a typo in a backfill payload (`"max_row"`) must
//! not silently become a full drain.

use serde::Deserialize;
use serde_json::Value;

/// What one pass should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassRequest {
    /// Stop after this many rows have been handled (backfills in slices).
    pub max_rows: Option<u64>,
    /// Report what would happen and change nothing.
    pub dry_run: bool,
}

/// An event the relay does not accept, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {0}")]
pub struct EventError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manual {
    max_rows: Option<u64>,
    dry_run: Option<bool>,
}

/// True for the schedule's events (EventBridge, EventBridge Scheduler),
/// which follow for `FOLLOW_SECONDS`; a manual invocation is one pass.
/// Call it on an event [`parse`] accepted.
pub fn is_scheduled(event: &Value) -> bool {
    event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("source").and_then(Value::as_str) == Some("aws.scheduler")
}

/// Parses an invocation event into a [`PassRequest`].
pub fn parse(event: &Value) -> Result<PassRequest, EventError> {
    let Some(obj) = event.as_object() else {
        return match event {
            // `cargo lambda invoke` and the console may send nothing at all.
            Value::Null => Ok(PassRequest::default()),
            _ => Err(EventError(
                "expected a JSON object: a scheduled event or {\"max_rows\": N, \"dry_run\": bool}"
                    .to_owned(),
            )),
        };
    };
    let detail_type = obj.get("detail-type").and_then(Value::as_str);
    let source = obj.get("source").and_then(Value::as_str);
    if obj.contains_key("detail-type") || source.is_some() {
        return match (detail_type, source) {
            // A scheduled event drains everything; backfill fields next to
            // it are a mistake (a hand-edited schedule input), not a request
            // to guess which was meant.
            _ if obj.contains_key("max_rows") || obj.contains_key("dry_run") => Err(EventError(
                "a scheduled event takes no max_rows or dry_run; send {\"max_rows\": N, \"dry_run\": bool} alone for a manual pass"
                    .to_owned(),
            )),
            (Some("Scheduled Event"), _) | (_, Some("aws.scheduler")) => Ok(PassRequest::default()),
            _ => Err(EventError(format!(
                "unsupported event (detail-type {:?}, source {:?}); expected a scheduled event",
                detail_type.unwrap_or(""),
                source.unwrap_or("")
            ))),
        };
    }
    let manual: Manual = serde_json::from_value(event.clone()).map_err(|e| {
        EventError(format!(
            "{e}; a manual invocation takes {{\"max_rows\": N, \"dry_run\": bool}}"
        ))
    })?;
    if manual.max_rows == Some(0) {
        return Err(EventError("max_rows must be at least 1".to_owned()));
    }
    Ok(PassRequest {
        max_rows: manual.max_rows,
        dry_run: manual.dry_run.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduled_events_drain_everything() {
        let rule = json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2015-10-08T16:53:06Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"],
            "detail": {}
        });
        assert_eq!(parse(&rule), Ok(PassRequest::default()));
        let scheduler = json!({"source": "aws.scheduler", "detail-type": "Scheduled Event"});
        assert_eq!(parse(&scheduler), Ok(PassRequest::default()));
        assert_eq!(parse(&json!({})), Ok(PassRequest::default()));
    }

    #[test]
    fn manual_payloads_are_strict() {
        assert_eq!(
            parse(&json!({"max_rows": 5, "dry_run": true})),
            Ok(PassRequest {
                max_rows: Some(5),
                dry_run: true
            })
        );
        for bad in [
            json!({"max_row": 5}),
            json!({"max_rows": -1}),
            json!({"max_rows": "5"}),
            json!({"max_rows": 0}),
            json!({"dry_run": "yes"}),
            json!({"detail-type": "Object Created", "source": "aws.s3"}),
            json!({"source": "aws.scheduler", "detail-type": "Scheduled Event", "dry_run": true}),
            json!({"detail-type": "Scheduled Event", "max_rows": 10}),
            json!([1, 2]),
            json!("drain"),
        ] {
            assert!(parse(&bad).is_err(), "{bad} was accepted");
        }
    }
}
