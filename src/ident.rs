//! SQL identifiers taken from configuration: validated, then quoted per dialect.
//!
//! Table and column names cannot be bound as parameters, so they end up in SQL
//! text. Two locks keep that safe: the allow-list below (nothing but ASCII
//! letters, digits and `_`, at most 64 characters, which is also MySQL's limit)
//! and quoting for the dialect on top of it, so a valid name that happens to be
//! a keyword (`order`, `group`) still works.

use std::fmt;

/// Longest identifier accepted: MySQL's limit. PostgreSQL's is 63 bytes and
/// it silently truncates a longer name, so a 64-byte name is not checked
/// against it here: a column of that name is then missing from the catalog
/// (which holds the truncated name), and the start-up checks refuse it with
/// "has no column"; a table of that name resolves, consistently, to the
/// truncated one.
const MAX_LEN: usize = 64;

/// A single validated identifier (`[A-Za-z_][A-Za-z0-9_]*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Nothing between the dots, or an empty value.
    #[error("is empty")]
    Empty,
    /// Longer than any supported database allows.
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9_]`, or a leading digit.
    #[error("must match [A-Za-z_][A-Za-z0-9_]* (optionally schema.table), got {0:?}")]
    Invalid(String),
}

impl Ident {
    /// Validates one identifier against the allow-list.
    pub fn parse(raw: &str) -> Result<Self, IdentError> {
        if raw.is_empty() {
            return Err(IdentError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(IdentError::TooLong);
        }
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(IdentError::Invalid(printable(raw)));
        }
        Ok(Ident(raw.to_owned()))
    }

    /// The identifier as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table name with an optional schema (`schema.table`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The schema (PostgreSQL) or database (MySQL), when given.
    pub schema: Option<Ident>,
    /// The table itself.
    pub table: Ident,
}

impl TableName {
    /// Parses `table` or `schema.table`; each part must be a valid [`Ident`].
    pub fn parse(raw: &str) -> Result<Self, IdentError> {
        match raw.split_once('.') {
            None => Ok(TableName {
                schema: None,
                table: Ident::parse(raw)?,
            }),
            Some((schema, table)) => {
                if table.contains('.') {
                    return Err(IdentError::Invalid(printable(raw)));
                }
                Ok(TableName {
                    schema: Some(Ident::parse(schema)?),
                    table: Ident::parse(table)?,
                })
            }
        }
    }
}

impl fmt::Display for TableName {
    /// The name as configured: this is also the `outbox-source` attribute and
    /// the prefix of ledger keys, so it must not change with quoting.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => write!(f, "{}", self.table),
        }
    }
}

/// Shows a rejected name safely in an error line: control characters and
/// anything past 80 characters would garble a log line or hide the point.
fn printable(raw: &str) -> String {
    let mut shown: String = raw.chars().take(80).collect();
    if raw.chars().count() > 80 {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_are_accepted() {
        assert_eq!(TableName::parse("outbox").unwrap().to_string(), "outbox");
        let t = TableName::parse("app.outbox_2").unwrap();
        assert_eq!(t.schema.unwrap().as_str(), "app");
        assert_eq!(t.table.as_str(), "outbox_2");
        assert!(Ident::parse("_x9").is_ok());
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "a`b",
            "a;drop table x",
            "x--",
            "a\0b",
            "é",
            "a.b.c",
            ".a",
            "a.",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Ident::parse(&"a".repeat(65)), Err(IdentError::TooLong));
    }

    /// The allow-list, written out plainly to check the parser against.
    fn allowed(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_LEN
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    }

    use proptest::prelude::*;

    /// Names built from valid pieces with hostile ones spliced in: quotes,
    /// backticks, `;`, comments, NUL, whitespace, Unicode look-alikes.
    fn hostile() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[A-Za-z_][A-Za-z0-9_]{0,10}",
            Just("\"".to_owned()),
            Just("`".to_owned()),
            Just("'".to_owned()),
            Just(";".to_owned()),
            Just("--".to_owned()),
            Just("/*".to_owned()),
            Just("\0".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just(".".to_owned()),
            Just("é".to_owned()),
            Just("\u{0430}".to_owned()), // Cyrillic a
            Just("\u{FF1B}".to_owned()), // fullwidth semicolon
            Just("\\".to_owned()),
            "[0-9]{1,3}",
            ".{1,4}",
        ];
        prop::collection::vec(piece, 1..8).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn no_hostile_identifier_gets_through(raw in hostile()) {
            match Ident::parse(&raw) {
                Ok(id) => {
                    prop_assert!(allowed(&raw), "accepted {raw:?}");
                    prop_assert_eq!(id.as_str(), raw.as_str());
                }
                Err(_) => prop_assert!(!allowed(&raw), "refused a valid name {raw:?}"),
            }
            match TableName::parse(&raw) {
                Ok(t) => {
                    let parts: Vec<&str> = raw.split('.').collect();
                    prop_assert!(parts.len() <= 2 && parts.iter().all(|p| allowed(p)), "accepted {raw:?}");
                    prop_assert_eq!(t.to_string(), raw);
                }
                Err(_) => {
                    let parts: Vec<&str> = raw.split('.').collect();
                    prop_assert!(!(parts.len() <= 2 && parts.iter().all(|p| allowed(p))), "refused {raw:?}");
                }
            }
        }

        #[test]
        fn over_length_names_are_refused(n in 65usize..400) {
            prop_assert_eq!(Ident::parse(&"x".repeat(n)), Err(IdentError::TooLong));
        }
    }
}
