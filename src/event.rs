//! Invocation events: what a pass is asked to do.
//!
//! Three shapes are accepted (docs/design.md, "invocation events"): an EventBridge
//! scheduled event, an EventBridge Scheduler payload, and the manual backfill
//! payload `{"max_rows": N, "dry_run": bool}`. Anything else is an error
//! response, never a guess: a typo in a backfill payload (`"max_row"`) must
//! not silently become a full drain.

use serde::Deserialize;
use serde_json::Value;

use crate::deadletters::Selection;

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

/// What an invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// A relay pass (scheduled, or the manual backfill payload).
    Pass(PassRequest),
    /// `{"replay_dead_letters": {"ids": [...]} | {"all": true}, "dry_run"?}`:
    /// move dead letters back into the outbox (see [`crate::deadletters`]).
    ReplayDeadLetters {
        /// Which rows.
        selection: Selection,
        /// Change nothing.
        dry_run: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    #[serde(default, deserialize_with = "no_null")]
    ids: Option<Vec<RowKey>>,
    #[serde(default, deserialize_with = "no_null")]
    all: Option<bool>,
    #[serde(default, deserialize_with = "no_null")]
    dry_run: Option<bool>,
}

/// A row key as JSON: a string, or a whole number (integer ids).
#[derive(Deserialize)]
#[serde(untagged)]
enum RowKey {
    Text(String),
    Number(u64),
    Negative(i64),
}

/// A field that is present must not be `null`: `{"ids": null}` is a
/// mistake, not "no ids".
fn no_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Parses an invocation event: a pass, or a dead-letter replay.
pub fn parse_invocation(event: &Value) -> Result<Invocation, EventError> {
    let Some(replay) = event.as_object().and_then(|o| o.get("replay_dead_letters")) else {
        return parse(event).map(Invocation::Pass);
    };
    let usage = "{\"replay_dead_letters\": {\"ids\": [...]}} or {\"replay_dead_letters\": {\"all\": true}}, with an optional \"dry_run\": bool inside";
    if event.as_object().is_some_and(|o| o.len() > 1) {
        return Err(EventError(format!(
            "replay_dead_letters takes no other field beside it; send {usage}"
        )));
    }
    let r: Replay = serde_json::from_value(replay.clone())
        .map_err(|e| EventError(format!("replay_dead_letters: {e}; send {usage}")))?;
    let selection = match (r.ids, r.all) {
        (Some(ids), None) => {
            let ids: Vec<String> = ids
                .into_iter()
                .map(|k| match k {
                    RowKey::Text(s) => s,
                    RowKey::Number(n) => n.to_string(),
                    RowKey::Negative(n) => n.to_string(),
                })
                .collect();
            crate::deadletters::check_ids(&ids)
                .map_err(|e| EventError(format!("replay_dead_letters.ids: {e}")))?;
            Selection::Ids(ids)
        }
        (None, Some(true)) => Selection::All,
        _ => return Err(EventError(format!("replay_dead_letters: send {usage}"))),
    };
    Ok(Invocation::ReplayDeadLetters {
        selection,
        dry_run: r.dry_run.unwrap_or(false),
    })
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
    // serde reads a null as "absent": `{"dry_run": null}` would run a real
    // pass and `{"max_rows": null}` drain everything. A null is a mistake.
    if let Some(key) = ["max_rows", "dry_run"]
        .into_iter()
        .find(|k| obj.get(*k).is_some_and(Value::is_null))
    {
        return Err(EventError(format!(
            "{key} is null; give a value or leave the field out"
        )));
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
            json!({"dry_run": null}),
            json!({"max_rows": null}),
            json!({"max_rows": null, "dry_run": true}),
            json!({"detail-type": "Object Created", "source": "aws.s3"}),
            json!({"source": "aws.scheduler", "detail-type": "Scheduled Event", "dry_run": true}),
            json!({"detail-type": "Scheduled Event", "max_rows": 10}),
            json!([1, 2]),
            json!("drain"),
        ] {
            assert!(parse(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_replay_payload_names_ids_or_all_and_nothing_else() {
        assert_eq!(
            parse_invocation(&json!({"replay_dead_letters": {"ids": [7, "8"]}})),
            Ok(Invocation::ReplayDeadLetters {
                selection: Selection::Ids(vec!["7".into(), "8".into()]),
                dry_run: false
            })
        );
        assert_eq!(
            parse_invocation(&json!({"replay_dead_letters": {"all": true, "dry_run": true}})),
            Ok(Invocation::ReplayDeadLetters {
                selection: Selection::All,
                dry_run: true
            })
        );
        assert_eq!(
            parse_invocation(&json!({"max_rows": 5})),
            Ok(Invocation::Pass(PassRequest {
                max_rows: Some(5),
                dry_run: false
            }))
        );
        for bad in [
            json!({"replay_dead_letters": null}),
            json!({"replay_dead_letters": {}}),
            json!({"replay_dead_letters": {"ids": null}}),
            json!({"replay_dead_letters": {"all": null}}),
            json!({"replay_dead_letters": {"all": false}}),
            json!({"replay_dead_letters": {"ids": []}}),
            json!({"replay_dead_letters": {"ids": [""]}}),
            json!({"replay_dead_letters": {"ids": [1.5]}}),
            json!({"replay_dead_letters": {"ids": [1], "all": true}}),
            json!({"replay_dead_letters": {"id": [1]}}),
            json!({"replay_dead_letters": {"all": true, "dry_run": null}}),
            json!({"replay_dead_letters": {"all": true}, "max_rows": 5}),
        ] {
            assert!(parse_invocation(&bad).is_err(), "{bad} was accepted");
        }
    }
}
