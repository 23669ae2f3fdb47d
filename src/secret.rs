//! Database credentials from Secrets Manager (`DATABASE_SECRET_ARN`).
//!
//! The secret is the JSON that RDS and Secrets Manager rotation write:
//! `{"engine", "host", "port", "username", "password", "dbname"}`. It is read
//! once per process (Lambda: once per execution environment) and its fields
//! go straight into the driver's connect options ([`crate::database`]): the
//! password is never formatted into a URL or any other string. Errors name
//! the missing field, never a value.

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde_json::Value;

use crate::dialect::Dialect;

/// The fields of an RDS secret, validated. The password is a
/// [`SecretString`]: `Debug` shows it as redacted, and reading it takes an
/// explicit `expose_secret()` (only the driver's connect options do).
#[derive(Clone, Debug)]
pub struct DatabaseSecret {
    /// The database's dialect, from `engine`.
    pub dialect: Dialect,
    /// `host`: a host name or address.
    pub host: String,
    /// `port`, else the engine's default.
    pub port: u16,
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: SecretString,
    /// `dbname`, when the secret has one.
    pub dbname: Option<String>,
}

/// Fetches the secret and reads its fields.
pub async fn read(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> anyhow::Result<DatabaseSecret> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .with_context(|| format!("DATABASE_SECRET_ARN: cannot read secret {arn}"))?;
    let Some(text) = out.secret_string() else {
        bail!(
            "DATABASE_SECRET_ARN: secret {arn} has no string value (binary secrets are not supported)"
        );
    };
    parse(text).with_context(|| format!("DATABASE_SECRET_ARN: secret {arn}"))
}

/// Reads the RDS secret JSON.
pub fn parse(text: &str) -> anyhow::Result<DatabaseSecret> {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        bail!("is not JSON in the RDS shape {{engine, host, port, username, password, dbname}}");
    };
    let field = |name: &str| -> anyhow::Result<String> {
        match json.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => bail!(
                "has no {name:?} field (expected the RDS shape {{engine, host, port, username, password, dbname}})"
            ),
        }
    };
    let engine = field("engine")?;
    let dialect = match engine.as_str() {
        "postgres" | "postgresql" | "aurora-postgresql" => Dialect::Postgres,
        "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Dialect::MySql,
        _ => bail!(
            "has engine {engine:?}; supported: postgres, aurora-postgresql, mysql, mariadb, aurora-mysql"
        ),
    };
    let host = field("host")?;
    let port = match json.get("port") {
        None => match dialect {
            Dialect::Postgres => 5432,
            Dialect::MySql => 3306,
        },
        Some(_) => field("port")?
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .context("has a \"port\" that is not a port number")?,
    };
    if host.contains(['/', '@', '?', '#', ' ']) {
        bail!("has a \"host\" that is not a host name");
    }
    let dbname = match json.get("dbname") {
        None => None,
        Some(_) => Some(field("dbname")?),
    };
    Ok(DatabaseSecret {
        dialect,
        host,
        port,
        username: field("username")?,
        password: SecretString::from(field("password")?),
        dbname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn an_rds_secret_gives_its_fields_with_the_credentials_untouched() {
        let s = parse(
            r#"{"engine":"postgres","host":"db.example","port":5432,"username":"relay","password":"p@ss/w:rd","dbname":"app"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.dialect, s.host.as_str(), s.port, s.username.as_str()),
            (Dialect::Postgres, "db.example", 5432, "relay")
        );
        assert_eq!(
            (s.password.expose_secret(), s.dbname.as_deref()),
            ("p@ss/w:rd", Some("app"))
        );
        assert!(
            !format!("{s:?}").contains("p@ss"),
            "Debug shows the password"
        );
        let my =
            parse(r#"{"engine":"mariadb","host":"h","port":"3306","username":"u","password":"p"}"#)
                .unwrap();
        assert_eq!(
            (my.dialect, my.port, my.dbname),
            (Dialect::MySql, 3306, None)
        );
    }

    #[test]
    fn a_malformed_secret_names_the_field_and_never_the_password() {
        let err = parse(r#"{"engine":"postgres","username":"u","password":"hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"host\""), "{err}");
        assert!(!err.contains("hunter2"));
        assert!(
            parse("hunter2")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let err = parse(r#"{"engine":"oracle","host":"h","username":"u","password":"p"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("oracle"));
        let err =
            parse(r#"{"engine":"mysql","host":"h","port":70000,"username":"u","password":"p"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("port"), "{err}");
    }
}
