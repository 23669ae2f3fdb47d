//! Where the database is and how its connection is protected:
//! `DATABASE_URL` or `DATABASE_SECRET_ARN`, `DATABASE_SSL_MODE`,
//! `DATABASE_SSL_ROOT_CERT`. The URL carries a password: it is held as a
//! [`SecretString`] and never echoed in an error.

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, bad};
use crate::tls::{DatabaseTls, ModeOrigin, RootCerts, SslMode};

/// Where the database credentials come from.
#[derive(Clone, Debug)]
pub enum DatabaseLocator {
    /// `DATABASE_URL`: a `postgres://` or `mysql://` URL, credentials
    /// included; a [`SecretString`], so `Debug` and logs never show it.
    Url(SecretString),
    /// `DATABASE_SECRET_ARN`: a Secrets Manager secret in the RDS JSON shape,
    /// resolved at the first pass and cached for the life of the process.
    SecretArn(String),
}

/// `DATABASE_URL` or `DATABASE_SECRET_ARN`: exactly one must be set.
pub(super) fn database_locator(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<DatabaseLocator, ConfigError> {
    match (get("DATABASE_URL"), get("DATABASE_SECRET_ARN")) {
        // Neither may silently win: the other was set for a reason.
        (Some(_), Some(_)) => Err(bad(
            "DATABASE_URL",
            "and DATABASE_SECRET_ARN are both set; set only one",
        )),
        (Some(url), None) => Ok(DatabaseLocator::Url(check_database_url(url)?)),
        (None, Some(arn)) => {
            if !arn.starts_with("arn:") || !arn.contains(":secretsmanager:") {
                return Err(bad(
                    "DATABASE_SECRET_ARN",
                    "must be a Secrets Manager ARN (arn:aws:secretsmanager:…)",
                ));
            }
            Ok(DatabaseLocator::SecretArn(arn))
        }
        (None, None) => Err(bad(
            "DATABASE_URL",
            "is not set (set DATABASE_URL or DATABASE_SECRET_ARN)",
        )),
    }
}

/// Checks the scheme only: the URL carries a password, so it is never echoed.
fn check_database_url(url: String) -> Result<SecretString, ConfigError> {
    let url = SecretString::from(url.trim());
    let scheme_ok = ["postgres://", "postgresql://", "mysql://", "mariadb://"]
        .iter()
        .any(|s| url.expose_secret().starts_with(s));
    if !scheme_ok {
        return Err(bad(
            "DATABASE_URL",
            "must start with postgres://, postgresql://, mysql:// or mariadb://",
        ));
    }
    Ok(url)
}

/// Resolves `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT`. Defaults:
/// `verify-full` for a secret (production), the URL's own `sslmode` or
/// `ssl-mode`, else `prefer` (sqlx's own default) for a URL.
pub(super) fn database_tls(
    get: &impl Fn(&str) -> Option<String>,
    database: &DatabaseLocator,
) -> Result<DatabaseTls, ConfigError> {
    let url_param = |names: &[&str]| match database {
        DatabaseLocator::Url(url) => url_parameter(url.expose_secret(), names),
        DatabaseLocator::SecretArn(_) => None,
    };
    let (mode, origin) = match (
        get("DATABASE_SSL_MODE"),
        url_param(&["sslmode", "ssl-mode"]),
    ) {
        (Some(raw), _) => (
            SslMode::parse(&raw).ok_or_else(|| {
                bad(
                    "DATABASE_SSL_MODE",
                    format!(
                        "must be disable, prefer, require, verify-ca or verify-full, got {:?}",
                        raw.trim()
                    ),
                )
            })?,
            ModeOrigin::Variable,
        ),
        (None, Some(raw)) => (
            SslMode::parse(&raw).ok_or_else(|| {
                bad(
                    "DATABASE_URL",
                    "has an sslmode that is not disable, prefer, require, verify-ca or verify-full",
                )
            })?,
            ModeOrigin::UrlParameter,
        ),
        (None, None) => match database {
            DatabaseLocator::SecretArn(_) => (SslMode::VerifyFull, ModeOrigin::Default),
            DatabaseLocator::Url(_) => (SslMode::Prefer, ModeOrigin::Default),
        },
    };
    let roots = match get("DATABASE_SSL_ROOT_CERT") {
        Some(path) => {
            let path = std::path::PathBuf::from(path.trim());
            let pem = std::fs::read(&path).map_err(|e| {
                bad(
                    "DATABASE_SSL_ROOT_CERT",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(bad(
                    "DATABASE_SSL_ROOT_CERT",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            RootCerts::File { path, pem }
        }
        None if url_param(&["sslrootcert", "ssl-root-cert", "ssl-ca", "sslca"]).is_some() => {
            RootCerts::UrlParameter
        }
        None => RootCerts::Bundled,
    };
    Ok(DatabaseTls {
        mode,
        origin,
        roots,
    })
}

/// The value of the first of `names` in a URL's query, if any. Values are
/// mode names and paths: no percent-decoding beyond what they need.
fn url_parameter(url: &str, names: &[&str]) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        names
            .contains(&key)
            .then(|| value.replace("%2F", "/").replace("%2f", "/"))
    })
}
