//! Throwaway database servers for tests/tls.rs, started once per test
//! binary: PostgreSQL and MariaDB each with TLS (a certificate for
//! `localhost` only, signed by a CA made here) and each without TLS.
//!
//! Certificates come from the openssl CLI into a temp dir. A watchdog shell
//! stops the servers and removes the dir once this test process is gone
//! (statics are never dropped, so nothing else could).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{free_port, wait_port};

/// The servers and the files a test needs.
pub struct Servers {
    /// The CA that signed the servers' certificate.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the servers show.
    pub other_ca: PathBuf,
    /// PostgreSQL with `ssl=on`.
    pub pg_tls: u16,
    /// PostgreSQL with `ssl=off`.
    pub pg_plain: u16,
    /// MariaDB with `--ssl-cert`; `None` when mariadbd is not installed.
    pub my_tls: Option<u16>,
    /// MariaDB with `--skip-ssl`.
    pub my_plain: Option<u16>,
}

/// The user and password of the MariaDB servers (the secret's login).
pub const MY_USER: &str = "relay";
pub const MY_PASSWORD: &str = "tls-test-secret-pw";

static SERVERS: OnceLock<Servers> = OnceLock::new();

/// The servers, started on first use.
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(start)
}

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A server tool as `user` (when we are root, as `make test` runs here).
fn as_user(user: &str, program: &str) -> Command {
    if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run(c, &format!("openssl {}", args[0]));
}

/// `openssl req` for a new P-256 key written to `key`, then `rest`.
fn new_key_request(dir: &Path, key: &str, rest: &[&str]) {
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ];
    args.extend_from_slice(rest);
    openssl(dir, &args);
}

/// A CA, another CA, and a server certificate for `localhost` (a DNS
/// name only: no IP address) signed by the first.
fn make_certs(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        new_key_request(
            dir,
            &format!("{ca}.key"),
            &[
                "-x509",
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=outbox-relay test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    new_key_request(
        dir,
        "server.key",
        &["-out", "server.csr", "-subj", "/CN=localhost"],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Copies the server's key and certificate where `user` may read them
/// (PostgreSQL refuses a key others can read).
fn server_files(dir: &Path, name: &str, user: &str) -> (PathBuf, PathBuf) {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    let (key, cert) = (own.join("server.key"), own.join("server.pem"));
    std::fs::copy(dir.join("server.key"), &key).unwrap();
    std::fs::copy(dir.join("server.pem"), &cert).unwrap();
    let mut c = Command::new("chmod");
    c.arg("600").arg(&key);
    run(c, "chmod");
    if root() {
        let mut c = Command::new("chown");
        c.arg("-R").arg(user).arg(&own);
        run(c, "chown");
    }
    (key, cert)
}

/// Copies a data directory, owned by `user` like the original.
fn copy_for(user: &str, from: &Path, to: &Path) {
    let mut c = Command::new("cp");
    c.arg("-a").arg(from).arg(to);
    run(c, "cp");
    if root() {
        let mut c = Command::new("chown");
        c.arg("-R").arg(user).arg(to);
        run(c, "chown");
    }
}

// The watchdog and mariadbd outlive this process on purpose (the
// watchdog stops the servers once it is gone): nothing here waits on them.
#[allow(clippy::zombie_processes)]
fn start() -> Servers {
    let dir = std::env::temp_dir().join(format!("outbox-relay-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new("chmod");
    c.arg("755").arg(&dir);
    run(c, "chmod");
    make_certs(&dir);
    let mut cleanup = String::new();
    let (pg_tls, pg_plain) = start_postgres(&dir, &mut cleanup);
    let mariadb = start_mariadb(&dir, &mut cleanup);
    // The watchdog: once this process is gone, stop the servers.
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; {cleanup} rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watchdog");
    Servers {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        pg_tls,
        pg_plain,
        my_tls: mariadb.map(|m| m.0),
        my_plain: mariadb.map(|m| m.1),
    }
}

fn pg_bin(tool: &str) -> String {
    let which = Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || ls /usr/lib/postgresql/*/bin/{tool}"),
        ])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&which.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !path.is_empty(),
        "{tool} is not installed (apt-get install postgresql)"
    );
    path
}

/// Creates `dir` for `user`'s server to write into (its owner when we are
/// root, since the servers refuse to run as root).
fn dir_for(user: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    if root() {
        let mut c = Command::new("chown");
        c.arg(user).arg(dir);
        run(c, "chown");
    }
    dir.to_path_buf()
}

/// Two clusters from one initdb: one with TLS, one without.
fn start_postgres(dir: &Path, cleanup: &mut String) -> (u16, u16) {
    let (key, cert) = server_files(dir, "pg-certs", "postgres");
    let base = dir_for("postgres", &dir.join("pg-init"));
    let mut c = as_user("postgres", &pg_bin("initdb"));
    c.arg("-D")
        .arg(base.join("data"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
    run(c, "initdb");
    let pg_ctl = pg_bin("pg_ctl");
    let mut ports = Vec::new();
    for (name, tls) in [("pg-tls", true), ("pg-plain", false)] {
        let data = dir.join(name);
        copy_for("postgres", &base.join("data"), &data);
        let port = free_port();
        let ssl = if tls {
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            )
        } else {
            "-c ssl=off".to_owned()
        };
        let mut c = as_user("postgres", &pg_ctl);
        c.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("log"))
            .args(["-w", "-t", "30", "-o"]);
        c.arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {ssl}",
            data.display()
        ));
        c.arg("start").stdout(Stdio::null());
        run(c, &format!("pg_ctl start ({name})"));
        cleanup.push_str(&format!(
            "runuser -u postgres -- {pg_ctl} -D '{}' -m immediate stop || {pg_ctl} -D '{}' -m immediate stop;",
            data.display(),
            data.display()
        ));
        ports.push(port);
    }
    (ports[0], ports[1])
}

/// Two MariaDB servers from one install: one with TLS, one without; each
/// with a user that logs in with a password.
#[allow(clippy::zombie_processes)] // see start()
fn start_mariadb(dir: &Path, cleanup: &mut String) -> Option<(u16, u16)> {
    let find = |names: &str| {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("for n in {names}; do command -v $n && break; done"),
            ])
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!p.is_empty()).then_some(p)
    };
    let mariadbd = find("mariadbd mysqld /usr/sbin/mariadbd")?;
    let install = find("mariadb-install-db mysql_install_db")?;
    let client = find("mariadb mysql")?;
    let (key, cert) = server_files(dir, "my-certs", "mysql");
    let base = dir_for("mysql", &dir.join("my-init"));
    let mut c = as_user("mysql", &install);
    c.arg(format!("--datadir={}", base.join("data").display()))
        .arg("--auth-root-authentication-method=normal");
    run(c, "mariadb-install-db");
    let mut ports = Vec::new();
    for (name, tls) in [("my-tls", true), ("my-plain", false)] {
        let data = dir.join(name);
        copy_for("mysql", &base.join("data"), &data);
        let port = free_port();
        let pid_file = data.join("mariadbd.pid");
        let mut c = as_user("mysql", &mariadbd);
        c.arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", data.join("sock").display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg("--innodb-flush-log-at-trx-commit=0");
        if tls {
            c.arg(format!("--ssl-cert={}", cert.display()))
                .arg(format!("--ssl-key={}", key.display()))
                .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()));
        } else {
            c.arg("--skip-ssl");
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        c.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        c.spawn().expect("mariadbd");
        wait_port(port, name, Duration::from_secs(60));
        let mut c = Command::new(&client);
        c.args(["-uroot", "-h127.0.0.1", &format!("-P{port}"), "-e"])
            .arg(format!(
                "CREATE USER '{MY_USER}'@'%' IDENTIFIED BY '{MY_PASSWORD}'; \
             CREATE DATABASE IF NOT EXISTS outbox_relay_test; \
             GRANT ALL ON *.* TO '{MY_USER}'@'%';"
            ));
        run(c, "create the relay user");
        cleanup.push_str(&format!(
            "kill $(cat '{}') 2>/dev/null; i=0; while [ -e '{}' ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done;",
            pid_file.display(),
            pid_file.display()
        ));
        ports.push(port);
    }
    Some((ports[0], ports[1]))
}
