//! A row's shaping columns become what travels with its message: the
//! queue index, message attributes and the trace header, or the reason
//! the row is poison.

use std::collections::HashMap;

use super::{ATTR_TRACEPARENT, MAX_ATTRIBUTES, ShapingConfig};
use crate::message::{ATTR_ID, ATTR_SOURCE, NotText};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// The route column.
    pub route: Option<Result<String, NotText>>,
    /// The attributes column (JSON text).
    pub attributes: Option<Result<String, NotText>>,
    /// The trace column.
    pub trace: Option<Result<String, NotText>>,
}

impl Shape {
    /// Columns 3-5 of a PostgreSQL select (see [`crate::dialect`]).
    pub fn of_pg(r: &sqlx::postgres::PgRow) -> Shape {
        use sqlx::Row;
        // Unreadable as text: poison, never a panic.
        let t = |i: usize| {
            r.try_get::<Option<String>, _>(i)
                .map(|v| v.map(Ok))
                .unwrap_or(Some(Err(NotText)))
        };
        Shape {
            route: t(3),
            attributes: t(4),
            trace: t(5),
        }
    }

    /// Columns 3-5 of a MySQL select, as bytes: text that is not UTF-8
    /// makes the row poison instead of failing the batch.
    pub fn of_my(r: &sqlx::mysql::MySqlRow) -> Shape {
        use sqlx::Row;
        let t = |i: usize| {
            r.try_get::<Option<Vec<u8>>, _>(i)
                .map(|v| v.map(|b| String::from_utf8(b).map_err(|_| NotText)))
                .unwrap_or(Some(Err(NotText)))
        };
        Shape {
            route: t(3),
            attributes: t(4),
            trace: t(5),
        }
    }
}

/// Checks the configured shaping columns against the outbox's and the
/// dead-letter table's columns: each must exist in the outbox (an error
/// naming its variable otherwise), the not-before column must be a time,
/// and those the dead-letter table has too are copied into it.
/// What shaping adds to a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shaped {
    /// Index of the queue in the relay's queue list (0: `QUEUE_URL`).
    pub queue: usize,
    /// Message attributes beyond `outbox-id` and `outbox-source`, by name.
    pub attributes: Vec<(String, String)>,
    /// The `AWSTraceHeader` system attribute.
    pub trace_header: Option<String>,
}

/// Route names to queue indexes, as the relay opened the queues.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    index: HashMap<String, usize>,
}

impl Routes {
    /// The routes of `cfg`, indexed like [`ShapingConfig::queue_urls`].
    pub fn new(cfg: &ShapingConfig, default_url: &str) -> Self {
        let urls = cfg.queue_urls(default_url);
        let index = cfg
            .routes
            .iter()
            .map(|(route, url)| {
                let at = urls.iter().position(|u| u == url).expect("listed");
                (route.clone(), at)
            })
            .collect();
        Routes { index }
    }
}

fn text(v: &Option<Result<String, NotText>>, what: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Ok(s)) => Ok(Some(s.clone())),
        Some(Err(NotText)) => Err(format!("{what} is not UTF-8 text")),
    }
}

/// Shapes a row's message, or says why the row is poison.
pub fn shape(row: &Shape, routes: &Routes) -> Result<Shaped, String> {
    let queue = match text(&row.route, "route")? {
        None => 0,
        Some(r) => *routes
            .index
            .get(&r)
            .ok_or_else(|| format!("route {:?} is not in QUEUE_ROUTES", truncate(&r, 64)))?,
    };
    let mut attributes = match text(&row.attributes, "attributes")? {
        None => Vec::new(),
        Some(json) => parse_attributes(&json)?,
    };
    let mut trace_header = None;
    if let Some(t) = text(&row.trace, "trace")? {
        let t = t.trim();
        match Trace::of(t) {
            Trace::XRay => trace_header = Some(t.to_owned()),
            Trace::W3c => attributes.push((ATTR_TRACEPARENT.to_owned(), t.to_owned())),
            Trace::Neither => {
                return Err(format!(
                    "trace {:?} is neither an X-Ray trace header (Root=1-…) nor a W3C traceparent",
                    truncate(t, 64)
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &attributes {
        if name == ATTR_ID || name == ATTR_SOURCE || !seen.insert(name.as_str()) {
            return Err(format!(
                "message attribute {name:?} is given twice or is the relay's own"
            ));
        }
    }
    if attributes.len() + 2 > MAX_ATTRIBUTES {
        return Err(format!(
            "{} message attributes with outbox-id and outbox-source; SQS allows {MAX_ATTRIBUTES}",
            attributes.len() + 2
        ));
    }
    Ok(Shaped {
        queue,
        attributes,
        trace_header,
    })
}

fn parse_attributes(json: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("attributes are not JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("attributes are not a JSON object of strings".to_owned());
    };
    let mut out = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        let Some(v) = v.as_str() else {
            return Err(format!(
                "attribute {:?} is not a string",
                truncate(name, 64)
            ));
        };
        if let Some(why) = bad_attribute_name(name) {
            return Err(format!("attribute name {:?} {why}", truncate(name, 64)));
        }
        if v.is_empty() {
            return Err(format!("attribute {name:?} is empty; SQS needs a value"));
        }
        if v.chars().any(|c| !crate::message::sqs_allows(c)) {
            return Err(format!(
                "attribute {name:?} has a character SQS does not accept"
            ));
        }
        out.push((name.clone(), v.to_owned()));
    }
    Ok(out)
}

/// Why SQS would refuse a message attribute name, if it would.
fn bad_attribute_name(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() > 256 {
        Some("must be 1-256 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("may hold only letters, digits, '-', '_' and '.'")
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Some("must not start or end with '.' or hold '..'")
    } else if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        Some("uses a prefix SQS reserves (AWS., Amazon.)")
    } else {
        None
    }
}

/// The kinds of trace context a trace column may hold.
#[derive(Debug, PartialEq, Eq)]
enum Trace {
    XRay,
    W3c,
    Neither,
}

impl Trace {
    fn of(t: &str) -> Trace {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let parts: Vec<&str> = t.split('-').collect();
        if parts.len() == 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
        {
            return Trace::W3c;
        }
        // Root=1-{8 hex}-{24 hex}, then optional Parent=, Sampled=, and
        // more key=value fields, separated by ';' (SQS checks the format).
        let root_ok = t.split(';').any(|f| {
            f.trim()
                .strip_prefix("Root=1-")
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(a, b)| hex(a, 8) && hex(b, 24))
        });
        let fields_ok = t.split(';').all(|f| {
            f.split_once('=')
                .is_some_and(|(k, v)| !k.trim().is_empty() && !v.is_empty())
        });
        if root_ok && fields_ok && t.len() <= 1024 && t.is_ascii() {
            Trace::XRay
        } else {
            Trace::Neither
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let cfg = ShapingConfig {
            routes: vec![("billing".into(), "http://h/1/billing".into())],
            ..ShapingConfig::default()
        };
        Routes::new(&cfg, "http://h/1/default")
    }

    fn row(route: Option<&str>, attrs: Option<&str>, trace: Option<&str>) -> Shape {
        let t = |v: Option<&str>| v.map(|s| Ok(s.to_owned()));
        Shape {
            route: t(route),
            attributes: t(attrs),
            trace: t(trace),
        }
    }

    #[test]
    fn an_unshaped_row_goes_to_the_default_queue_as_before() {
        assert_eq!(
            shape(&row(None, None, None), &routes()),
            Ok(Shaped::default())
        );
        assert_eq!(
            shape(&row(Some("billing"), None, None), &routes())
                .unwrap()
                .queue,
            1
        );
        let e = shape(&row(Some("nope"), None, None), &routes()).unwrap_err();
        assert!(e.contains("not in QUEUE_ROUTES"), "{e}");
    }

    #[test]
    fn attributes_sqs_would_refuse_make_the_row_poison() {
        for (attrs, why) in [
            ("[1]", "JSON object"),
            ("{\"a\": 1}", "not a string"),
            ("{\"AWS.x\": \"v\"}", "reserves"),
            ("{\"a b\": \"v\"}", "only letters"),
            ("{\"a..b\": \"v\"}", "'..'"),
            ("{\"a\": \"\"}", "empty"),
            ("{\"outbox-id\": \"1\"}", "relay's own"),
            ("not json", "not JSON"),
        ] {
            let e = shape(&row(None, Some(attrs), None), &routes()).unwrap_err();
            assert!(e.contains(why), "{attrs}: {e}");
        }
        let nine: String = (0..9)
            .map(|i| format!("\"a{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        let e = shape(&row(None, Some(&format!("{{{nine}}}")), None), &routes()).unwrap_err();
        assert!(e.contains("SQS allows 10"), "{e}");
        let eight: String = (0..8)
            .map(|i| format!("\"a{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        assert!(shape(&row(None, Some(&format!("{{{eight}}}")), None), &routes()).is_ok());
    }

    #[test]
    fn a_trace_column_becomes_the_trace_header_or_a_traceparent_attribute() {
        let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let s = shape(&row(None, None, Some(xray)), &routes()).unwrap();
        assert_eq!(s.trace_header.as_deref(), Some(xray));
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let s = shape(&row(None, None, Some(w3c)), &routes()).unwrap();
        assert_eq!(
            s.attributes,
            vec![("traceparent".to_owned(), w3c.to_owned())]
        );
        assert!(shape(&row(None, None, Some("hello")), &routes()).is_err());
    }

    #[test]
    fn routes_must_be_queue_urls_of_the_default_queues_kind() {
        let get = |routes: &'static str| {
            move |k: &str| match k {
                "OUTBOX_QUEUE_COLUMN" => Some("route".to_owned()),
                "QUEUE_ROUTES" => Some(routes.to_owned()),
                _ => None,
            }
        };
        let ok =
            ShapingConfig::from_lookup(&get(r#"{"b":"http://h/1/b"}"#), "http://h/1/q").unwrap();
        assert_eq!(
            ok.queue_urls("http://h/1/q"),
            vec!["http://h/1/q", "http://h/1/b"]
        );
        for bad in [
            r#"{"b":"http://h/1/b.fifo"}"#,
            r#"{"b":1}"#,
            "{}",
            "[]",
            r#"{"b":"x"}"#,
        ] {
            let e = ShapingConfig::from_lookup(&get(bad), "http://h/1/q").unwrap_err();
            assert_eq!(e.variable, "QUEUE_ROUTES", "{bad}");
        }
    }
}
