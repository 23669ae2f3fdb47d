//! How to reach the source database: the driver's connect options, built
//! from `DATABASE_URL` or from the fields of the Secrets Manager secret,
//! with the TLS settings of [`crate::tls`] applied.
//!
//! The options are built in code, field by field: the password goes from
//! the secret into the driver and nowhere else (no URL is formatted that a
//! log line or an error could show).

use std::str::FromStr;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

use crate::dialect::Dialect;
use crate::secret::DatabaseSecret;
use crate::tls::DatabaseTls;

/// Connect options for one of the two databases. `Debug` shows the
/// address only: the driver's own `Debug` prints the password.
#[derive(Clone)]
pub enum ConnectOptions {
    /// PostgreSQL.
    Pg(PgConnectOptions),
    /// MySQL or MariaDB.
    My(MySqlConnectOptions),
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnectOptions({:?}, {})",
            self.dialect(),
            self.address()
        )
    }
}

impl ConnectOptions {
    /// Parses `DATABASE_URL` (its scheme already checked by the config) and
    /// applies the TLS settings over its own parameters.
    pub fn from_url(url: &str, tls: &DatabaseTls) -> anyhow::Result<Self> {
        // sqlx's parse errors describe the URL's syntax, never its text.
        let options = match Dialect::of_url(url) {
            Dialect::Postgres => ConnectOptions::Pg(
                PgConnectOptions::from_str(url).context("DATABASE_URL: not a valid URL")?,
            ),
            Dialect::MySql => ConnectOptions::My(
                MySqlConnectOptions::from_str(url).context("DATABASE_URL: not a valid URL")?,
            ),
        };
        Ok(options.with_tls(tls))
    }

    /// Builds the options from the secret's fields.
    pub fn from_secret(secret: &DatabaseSecret, tls: &DatabaseTls) -> Self {
        // The same fields on either driver's options.
        macro_rules! with_fields {
            ($options:expr) => {{
                let o = $options
                    .host(&secret.host)
                    .port(secret.port)
                    .username(&secret.username)
                    .password(secret.password.expose_secret());
                match &secret.dbname {
                    Some(db) => o.database(db),
                    None => o,
                }
            }};
        }
        let options = match secret.dialect {
            // Without the pgpass file: the secret is the only source of
            // credentials, as it is in Lambda.
            Dialect::Postgres => {
                ConnectOptions::Pg(with_fields!(PgConnectOptions::new_without_pgpass()))
            }
            Dialect::MySql => ConnectOptions::My(with_fields!(MySqlConnectOptions::new())),
        };
        options.with_tls(tls)
    }

    fn with_tls(self, tls: &DatabaseTls) -> Self {
        let roots = tls.root_pem();
        match self {
            ConnectOptions::Pg(mut o) => {
                o = o.ssl_mode(tls.mode.pg());
                if let Some(pem) = roots {
                    o = o.ssl_root_cert_from_pem(pem);
                }
                ConnectOptions::Pg(o)
            }
            ConnectOptions::My(mut o) => {
                o = o.ssl_mode(tls.mode.mysql());
                if let Some(pem) = roots {
                    o = o.ssl_ca_from_pem(pem);
                }
                ConnectOptions::My(o)
            }
        }
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self {
            ConnectOptions::Pg(_) => Dialect::Postgres,
            ConnectOptions::My(_) => Dialect::MySql,
        }
    }

    /// `host:port`, for messages (never the credentials).
    pub fn address(&self) -> String {
        match self {
            ConnectOptions::Pg(o) => format!("{}:{}", o.get_host(), o.get_port()),
            ConnectOptions::My(o) => format!("{}:{}", o.get_host(), o.get_port()),
        }
    }

    /// The host name a verifying mode checks the certificate against.
    pub fn host(&self) -> &str {
        match self {
            ConnectOptions::Pg(o) => o.get_host(),
            ConnectOptions::My(o) => o.get_host(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ModeOrigin, RootCerts, SslMode};

    fn tls(mode: SslMode) -> DatabaseTls {
        DatabaseTls {
            mode,
            origin: ModeOrigin::Variable,
            roots: RootCerts::Bundled,
        }
    }

    #[test]
    fn the_tls_mode_in_force_reaches_the_driver() {
        let secret = crate::secret::parse(
            r#"{"engine":"postgres","host":"db.example","port":6543,"username":"u","password":"p@ss"}"#,
        )
        .unwrap();
        let ConnectOptions::Pg(o) = ConnectOptions::from_secret(&secret, &tls(SslMode::VerifyFull))
        else {
            panic!("a PostgreSQL secret gives PostgreSQL options");
        };
        assert!(matches!(
            o.get_ssl_mode(),
            sqlx::postgres::PgSslMode::VerifyFull
        ));
        assert_eq!((o.get_host(), o.get_port()), ("db.example", 6543));
        let my = ConnectOptions::from_url(
            "mysql://u:p@h:3307/db?ssl-mode=disabled",
            &tls(SslMode::VerifyCa),
        )
        .unwrap();
        let ConnectOptions::My(o) = &my else {
            panic!("a mysql URL gives MySQL options")
        };
        assert!(matches!(
            o.get_ssl_mode(),
            sqlx::mysql::MySqlSslMode::VerifyCa
        ));
        assert_eq!(my.address(), "h:3307");
    }

    #[test]
    fn the_options_never_show_the_password() {
        let secret = crate::secret::parse(
            r#"{"engine":"mysql","host":"h","username":"u","password":"hunter2-secret"}"#,
        )
        .unwrap();
        let o = ConnectOptions::from_secret(&secret, &tls(SslMode::VerifyFull));
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
    }
}
