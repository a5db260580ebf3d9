//! Test helper: a fresh PostgreSQL database per test, on the server the
//! suite was given.
//!
//! The suite never starts PostgreSQL behind the tester's back and never
//! mocks it: `MANIFOLD_TEST_POSTGRES` names a real server (`.ci/run` starts
//! a throwaway one with `tests/postgres/start`). Without it, every
//! PostgreSQL test returns early and this crate says so on the terminal,
//! past the test harness' output capture, so a green run that skipped them
//! cannot pass for one that ran them.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// The environment variable naming the server (a `postgres://` URL of a
/// role that may create databases).
pub const SERVER_VARIABLE: &str = "MANIFOLD_TEST_POSTGRES";

/// The server's URL, if the suite was given one.
pub fn server_url() -> Option<String> {
    std::env::var(SERVER_VARIABLE)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Says, once per test binary, that the PostgreSQL tests are skipped, on
/// the process's stderr (which `cargo test` shows, unlike a test's own
/// prints).
fn say_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let rule = "*".repeat(72);
        let _ = writeln!(
            std::io::stderr(),
            "\n{rule}\n\
             SKIPPED: the PostgreSQL tests of this binary ran nothing.\n\
             Set {SERVER_VARIABLE} to a server's URL to run them, for example:\n\
             \x20 eval \"$(tests/postgres/start)\"; cargo test --workspace\n\
             {rule}"
        );
    });
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let Some(scheme_end) = base.find("://") else {
        // A key=value connection string: a later key wins.
        return format!("{url} dbname={database}");
    };
    let authority_start = scheme_end + 3;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Connects to `url`, driving the connection on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to the test server: {error}"));
    tokio::spawn(connection);
    client
}

/// A database made for one test, dropped (with its connections) when this
/// is.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new, empty database named after `test`; `None`, said loudly, when
    /// the suite was given no server.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let Some(server) = server_url() else {
            say_skipped();
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let label: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "mt_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&server).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("creating the test database {name}: {error:?}"));
        let url = with_database(&server, &name);
        Some(TestDatabase { server, name, url })
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to this database, for a test to look at what the code
    /// under test wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot block on another: a
        // thread of its own does it, best effort (the server is throwaway).
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

/// A PostgreSQL server of one test's own (`tests/postgres/start`), which
/// the test may stop and start again; stopped and removed when dropped.
/// Started only when the suite was given a server (so PostgreSQL's
/// binaries are known to be there); `None`, said loudly, otherwise.
#[derive(Debug)]
pub struct TestServer {
    dir: String,
    url: String,
}

fn script(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl TestServer {
    pub fn start() -> Option<TestServer> {
        TestServer::start_with(&[])
    }

    /// As [`TestServer::start`], serving TLS with the certificate chain and
    /// key in these PEM files too.
    pub fn start_with_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<TestServer> {
        TestServer::start_with(&[
            ("MANIFOLD_TEST_POSTGRES_TLS_CERT", cert),
            ("MANIFOLD_TEST_POSTGRES_TLS_KEY", key),
        ])
    }

    fn start_with(env: &[(&str, &std::path::Path)]) -> Option<TestServer> {
        if server_url().is_none() {
            say_skipped();
            return None;
        }
        Some(TestServer::launch(env).unwrap_or_else(|error| panic!("{error}")))
    }

    /// Starts a server whether or not the suite was given one (the
    /// benchmark's), with `env` for `tests/postgres/start`; why not, in
    /// words, when PostgreSQL's binaries are missing or it fails.
    pub fn launch(env: &[(&str, &std::path::Path)]) -> Result<TestServer, String> {
        let output = std::process::Command::new(script("start"))
            .envs(env.iter().copied())
            .output()
            .map_err(|error| format!("tests/postgres/start did not run: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "tests/postgres/start failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|value| value.trim_matches('\'').to_owned())
                .ok_or_else(|| format!("tests/postgres/start printed no {name}: {text}"))
        };
        Ok(TestServer {
            url: value("MANIFOLD_TEST_POSTGRES")?,
            dir: value("MANIFOLD_TEST_POSTGRES_DIR")?,
        })
    }

    /// A new, empty database on this server; its URL.
    pub async fn create_database(&self, name: &str) -> String {
        connect(&self.url)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("creating the database {name}: {error:?}"));
        with_database(&self.url, name)
    }

    /// The server's URL (its `postgres` database, superuser).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn ctl(&self, action: &str) {
        let status = std::process::Command::new(script("ctl"))
            .args([action, &self.dir])
            .status()
            .expect("tests/postgres/ctl runs");
        assert!(status.success(), "tests/postgres/ctl {action} failed");
    }

    /// Stops the server at once, as a crash would (`pg_ctl -m immediate`).
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts it again, on the same port and files.
    pub fn start_again(&self) {
        self.ctl("start");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script("stop"))
            .env("MANIFOLD_TEST_POSTGRES_DIR", &self.dir)
            .env(
                "MANIFOLD_TEST_POSTGRES_BIN",
                std::fs::read_to_string(format!("{}/bindir", self.dir))
                    .unwrap_or_default()
                    .trim(),
            )
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_parameters_kept() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/postgres", "t1"),
            "postgres://u@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u@h/db?sslmode=disable", "t1"),
            "postgresql://u@h/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("host=127.0.0.1 user=u", "t1"),
            "host=127.0.0.1 user=u dbname=t1"
        );
    }
}
