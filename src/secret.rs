//! Database credentials from Secrets Manager (`DATABASE_SECRET_ARN`).
//!
//! The secret is the JSON that RDS and Secrets Manager rotation write:
//! `{"engine", "host", "port", "username", "password", "dbname"}`. It is read
//! once per process (Lambda: once per execution environment) and turned into
//! a connection URL that is never logged. Errors name the missing field,
//! never a value.

use anyhow::{Context, bail};
use serde_json::Value;

/// Fetches the secret and builds the database URL from it.
pub async fn database_url(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> anyhow::Result<String> {
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
    url_from_secret(text).with_context(|| format!("DATABASE_SECRET_ARN: secret {arn}"))
}

/// Builds a `postgres://` or `mysql://` URL from the RDS secret JSON.
pub fn url_from_secret(text: &str) -> anyhow::Result<String> {
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
    let scheme = match engine.as_str() {
        "postgres" | "postgresql" | "aurora-postgresql" => "postgres",
        "mysql" | "mariadb" | "aurora-mysql" | "aurora" => "mysql",
        _ => bail!(
            "has engine {engine:?}; supported: postgres, aurora-postgresql, mysql, mariadb, aurora-mysql"
        ),
    };
    let host = field("host")?;
    let port = match json.get("port") {
        None => {
            if scheme == "postgres" {
                "5432".to_owned()
            } else {
                "3306".to_owned()
            }
        }
        Some(_) => field("port")?,
    };
    if !port.chars().all(|c| c.is_ascii_digit()) {
        bail!("has a \"port\" that is not a number");
    }
    if host.contains(['/', '@', '?', '#', ' ']) {
        bail!("has a \"host\" that is not a host name");
    }
    let user = field("username")?;
    let password = field("password")?;
    let db = match json.get("dbname") {
        None => String::new(),
        Some(_) => field("dbname")?,
    };
    Ok(format!(
        "{scheme}://{}:{}@{host}:{port}/{}",
        encode(&user),
        encode(&password),
        encode(&db)
    ))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), so a
/// password with `@`, `/` or `:` cannot change the URL's meaning.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rds_secret_becomes_a_url_with_escaped_credentials() {
        let url = url_from_secret(
            r#"{"engine":"postgres","host":"db.example","port":5432,"username":"relay","password":"p@ss/w:rd","dbname":"app"}"#,
        )
        .unwrap();
        assert_eq!(url, "postgres://relay:p%40ss%2Fw%3Ard@db.example:5432/app");
        let my = url_from_secret(
            r#"{"engine":"mariadb","host":"h","port":"3306","username":"u","password":"p"}"#,
        )
        .unwrap();
        assert_eq!(my, "mysql://u:p@h:3306/");
    }

    #[test]
    fn a_malformed_secret_names_the_field_and_never_the_password() {
        let err = url_from_secret(r#"{"engine":"postgres","username":"u","password":"hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"host\""), "{err}");
        assert!(!err.contains("hunter2"));
        assert!(
            url_from_secret("hunter2")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let err =
            url_from_secret(r#"{"engine":"oracle","host":"h","username":"u","password":"p"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("oracle"));
    }
}
