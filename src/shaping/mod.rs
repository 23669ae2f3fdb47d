//! Message shaping: the optional columns that say where a row goes and what
//! travels with it (docs/design.md, "message shaping").
//!
//! - `OUTBOX_QUEUE_COLUMN` + `QUEUE_ROUTES`: the queue, by route name;
//!   NULL means `QUEUE_URL`.
//! - `OUTBOX_ATTRIBUTES_COLUMN`: a JSON object of strings, sent as SQS
//!   String message attributes beside `outbox-id` and `outbox-source`.
//! - `OUTBOX_TRACE_COLUMN`: an X-Ray trace header (the `AWSTraceHeader`
//!   system attribute) or a W3C `traceparent` (a message attribute).
//! - `OUTBOX_NOT_BEFORE_COLUMN`: rows are not selected before it (SQL only,
//!   see [`crate::dialect`]).
//!
//! Each unset column is today's behaviour. A value SQS would refuse, or
//! that names no queue, makes the row poison with the reason: it goes to
//! the dead-letter table, never to the wrong queue.

use std::collections::BTreeMap;

use crate::config::{ConfigError, bad};
use crate::ident::Ident;

mod shape;
pub use shape::{Routes, Shape, Shaped, shape};

/// SQS's limit on message attributes per message.
pub const MAX_ATTRIBUTES: usize = 10;
/// The message attribute a W3C trace context travels in.
pub const ATTR_TRACEPARENT: &str = "traceparent";

/// The shaping settings, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapingConfig {
    /// `OUTBOX_QUEUE_COLUMN`.
    pub queue_column: Option<Ident>,
    /// `QUEUE_ROUTES`: route name → queue URL, in name order.
    pub routes: Vec<(String, String)>,
    /// `OUTBOX_ATTRIBUTES_COLUMN`.
    pub attributes_column: Option<Ident>,
    /// `OUTBOX_TRACE_COLUMN`.
    pub trace_column: Option<Ident>,
    /// `OUTBOX_NOT_BEFORE_COLUMN`.
    pub not_before_column: Option<Ident>,
}

impl ShapingConfig {
    /// Reads the shaping variables; `queue_url` is the default queue, whose
    /// kind (FIFO or standard) every route must share.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        queue_url: &str,
    ) -> Result<Self, ConfigError> {
        let column = |var: &'static str| match get(var) {
            None => Ok(None),
            Some(raw) => Ident::parse(raw.trim())
                .map(Some)
                .map_err(|e| bad(var, e.to_string())),
        };
        let queue_column = column("OUTBOX_QUEUE_COLUMN")?;
        let routes = match get("QUEUE_ROUTES") {
            None => Vec::new(),
            Some(raw) => parse_routes(&raw, queue_url)?,
        };
        match (&queue_column, routes.is_empty()) {
            (Some(_), true) => {
                return Err(bad(
                    "QUEUE_ROUTES",
                    "is not set, but OUTBOX_QUEUE_COLUMN is: give the routes as {\"route\": \"queue URL\"}",
                ));
            }
            (None, false) => {
                return Err(bad(
                    "QUEUE_ROUTES",
                    "is set, but OUTBOX_QUEUE_COLUMN is not: name the column holding each row's route",
                ));
            }
            _ => {}
        }
        Ok(ShapingConfig {
            queue_column,
            routes,
            attributes_column: column("OUTBOX_ATTRIBUTES_COLUMN")?,
            trace_column: column("OUTBOX_TRACE_COLUMN")?,
            not_before_column: column("OUTBOX_NOT_BEFORE_COLUMN")?,
        })
    }

    /// Every configured shaping column (what a dead letter keeps and a
    /// replay restores, where the dead-letter table has a column of the
    /// same name).
    pub fn columns(&self) -> Vec<&Ident> {
        [
            &self.queue_column,
            &self.attributes_column,
            &self.trace_column,
            &self.not_before_column,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Every queue URL the relay sends to: `QUEUE_URL` first, then the routes'.
    pub fn queue_urls<'a>(&'a self, default: &'a str) -> Vec<&'a str> {
        let mut urls = vec![default];
        for (_, url) in &self.routes {
            if !urls.contains(&url.as_str()) {
                urls.push(url);
            }
        }
        urls
    }
}

fn parse_routes(raw: &str, queue_url: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let v = "QUEUE_ROUTES";
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(raw).map_err(|e| {
        bad(
            v,
            format!("must be a JSON object {{\"route\": \"queue URL\"}}: {e}"),
        )
    })?;
    if map.is_empty() {
        return Err(bad(v, "has no routes"));
    }
    let fifo = queue_url.ends_with(".fifo");
    let mut routes = Vec::with_capacity(map.len());
    for (route, url) in map {
        let Some(url) = url.as_str().map(str::trim) else {
            return Err(bad(
                v,
                format!("route {route:?}: the queue URL must be a string"),
            ));
        };
        if route.is_empty() {
            return Err(bad(v, "a route name is empty"));
        }
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.split('/').filter(|s| !s.is_empty()).count() < 4
        {
            return Err(bad(
                v,
                format!("route {route:?}: {url:?} is not a queue URL"),
            ));
        }
        if url.ends_with(".fifo") != fifo {
            return Err(bad(
                v,
                format!(
                    "route {route:?}: every queue must be {} like QUEUE_URL",
                    if fifo { "FIFO" } else { "standard" }
                ),
            ));
        }
        routes.push((route, url.to_owned()));
    }
    Ok(routes)
}

/// A row's shaping columns as read, each NULL (`None`), text, or not text.
pub fn shape_columns(
    cfg: &crate::config::Config,
    outbox: &[(String, String)],
    dead_letter: &[(String, String)],
    dialect: crate::dialect::Dialect,
) -> anyhow::Result<crate::dialect::ShapeColumns> {
    let sh = &cfg.shaping;
    let check = |c: &Option<Ident>, var: &str| -> anyhow::Result<Option<String>> {
        match c {
            None => Ok(None),
            Some(c) => {
                let found = outbox
                    .iter()
                    .find(|(n, _)| crate::schema::same_name(n, c.as_str(), dialect))
                    .map(|(_, t)| t.to_ascii_lowercase());
                match found {
                    Some(t) => Ok(Some(t)),
                    None => anyhow::bail!("{var}: table {} has no column {c}", cfg.table),
                }
            }
        }
    };
    check(&sh.queue_column, "OUTBOX_QUEUE_COLUMN")?;
    check(&sh.attributes_column, "OUTBOX_ATTRIBUTES_COLUMN")?;
    check(&sh.trace_column, "OUTBOX_TRACE_COLUMN")?;
    if let Some(t) = check(&sh.not_before_column, "OUTBOX_NOT_BEFORE_COLUMN")?
        && !(t.starts_with("timestamp") || t.starts_with("datetime"))
    {
        anyhow::bail!(
            "OUTBOX_NOT_BEFORE_COLUMN: column {} of {} is {t}; it must be a timestamp",
            sh.not_before_column.as_ref().expect("checked"),
            cfg.table
        );
    }
    let dead_letter_copies = sh
        .columns()
        .into_iter()
        .filter(|c| {
            dead_letter
                .iter()
                .any(|(n, _)| crate::schema::same_name(n, c.as_str(), dialect))
        })
        .cloned()
        .collect();
    Ok(crate::dialect::ShapeColumns {
        route: sh.queue_column.clone(),
        attributes: sh.attributes_column.clone(),
        trace: sh.trace_column.clone(),
        not_before: sh.not_before_column.clone(),
        dead_letter_copies,
    })
}
