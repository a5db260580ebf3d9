//! How Manifold reaches PostgreSQL, once for everything that does: the
//! switch's store (`manifold_switch::store::PgStore`) and the providers'
//! shared state (`manifold_provider_sdk::shared`).
//!
//! - [`pool`]: a `deadpool-postgres` pool whose connections use TLS
//!   (rustls, ring) when the URL says `sslmode=require`, the server's
//!   certificate checked against the public roots or the host's CA file;
//!   a URL that would reach another machine in clear is refused unless the
//!   host waived that ([`Options::insecure_plaintext`]), since the password
//!   and every transaction would cross the network readable.
//! - [`check_durable_commits`]: refuses a server running with `fsync` or
//!   `synchronous_commit` off, whose acknowledged commits a crash can lose.
//! - [`migrate`]: numbered, append-only schema migrations, run once under an
//!   advisory lock and recorded in a table of their own; a database a newer
//!   build upgraded is refused rather than misread.
//!
//! Errors are [`PgError`], in words a host can act on, never with the URL
//! (which may hold a password).

use std::error::Error as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the PostgreSQL URL: {0}")]
    Url(String),
    #[error(
        "the PostgreSQL URL names a host other than this machine without sslmode=require: the \
         password and every transaction would cross the network in clear. Add sslmode=require (the \
         server's certificate is checked against the public roots, or the CA file given), or waive \
         it explicitly (insecure_plaintext)"
    )]
    Plaintext,
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("{0}")]
    Database(String),
    #[error(
        "PostgreSQL runs with {0} = off, so a commit it acknowledges can be lost in a crash, and \
         Manifold acknowledges nothing that is not durable: set it on"
    )]
    NotDurable(&'static str),
    #[error(
        "the database's {what} schema is at version {found}, and this build knows versions up to \
         {latest}: a newer Manifold upgraded it, which is what must run on it"
    )]
    NewerSchema {
        what: &'static str,
        found: i32,
        latest: i32,
    },
}

/// The database's error in words: tokio-postgres' own `Display` says only
/// "db error", the server's message is its source.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(error: tokio_postgres::Error) -> Self {
        PgError::Database(describe(&error))
    }
}

impl From<PoolError> for PgError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Backend(error) => error.into(),
            PoolError::Timeout(_) => {
                PgError::Database("no connection to PostgreSQL within the timeout".into())
            }
            other => PgError::Database(format!("the PostgreSQL pool: {other}")),
        }
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct Options {
    /// A `postgres://` URL or libpq `key=value` string; it may hold a
    /// password, so it is never printed (`Debug` withholds it).
    pub url: String,
    pub pool_size: usize,
    /// How long one statement may run (`None`: no limit, for connections
    /// that wait on locks, which `lock_timeout` bounds instead).
    pub statement_timeout: Option<Duration>,
    /// With `statement_timeout = None`: how long a lock may be waited for.
    pub lock_timeout: Option<Duration>,
    /// How long a call waits for a connection, opening one included.
    pub connect_timeout: Duration,
    /// PEM certificates the server's must chain to, instead of the public
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// Allows a URL without `sslmode=require` to another machine.
    pub insecure_plaintext: bool,
    /// What the server's `pg_stat_activity` shows, unless the URL says.
    pub application_name: &'static str,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &"(withheld)")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .finish()
    }
}

/// Whether every host `config` may connect to is this machine (a loopback
/// address, `localhost`, or a Unix socket).
fn only_this_machine(config: &tokio_postgres::Config) -> bool {
    let hosts_local = config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    });
    hosts_local && config.get_hostaddrs().iter().all(IpAddr::is_loopback)
}

/// Refuses a URL that would reach another machine without TLS.
fn check_transport(
    config: &tokio_postgres::Config,
    insecure_plaintext: bool,
) -> Result<(), PgError> {
    if config.get_ssl_mode() == SslMode::Require || insecure_plaintext || only_this_machine(config)
    {
        return Ok(());
    }
    Err(PgError::Plaintext)
}

/// The TLS connector: the server's certificate must chain to `ca_file`'s
/// certificates when given, to the public (webpki) roots otherwise.
fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable =
                |reason: String| PgError::Tls(format!("the CA file {}: {reason}", path.display()));
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|error| unreadable(error.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|error| unreadable(error.to_string()))?;
            if certificates.is_empty() {
                return Err(unreadable("holds no PEM certificate".into()));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| unreadable(error.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| PgError::Tls(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A pool for `options`; connects lazily (see [`connect`]).
pub fn pool(options: &Options) -> Result<Pool, PgError> {
    let mut config: tokio_postgres::Config = options
        .url
        .parse()
        .map_err(|error: tokio_postgres::Error| PgError::Url(describe(&error)))?;
    check_transport(&config, options.insecure_plaintext)?;
    if config.get_application_name().is_none() {
        config.application_name(options.application_name);
    }
    config.connect_timeout(options.connect_timeout);
    let millis = |limit: Option<Duration>| limit.map_or(0, |d| d.as_millis().max(1));
    config.options(format!(
        "-c statement_timeout={} -c lock_timeout={}",
        millis(options.statement_timeout),
        millis(options.lock_timeout)
    ));
    let manager = Manager::from_config(
        config,
        tls(options.ca_file.as_deref())?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let waits = options
        .connect_timeout
        .max(options.lock_timeout.unwrap_or_default());
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(waits))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|error| PgError::Database(format!("the PostgreSQL pool: {error}")))
}

/// A first connection from `pool`, with the reason in words when there is
/// none (an unreachable server, a refused password, a failed handshake).
pub async fn connect(pool: &Pool) -> Result<Object, PgError> {
    pool.get().await.map_err(|error| {
        PgError::Connect(match PgError::from(error) {
            PgError::Database(reason) => reason,
            other => other.to_string(),
        })
    })
}

/// Refuses a server that may lose a commit it acknowledged.
pub async fn check_durable_commits(client: &Object) -> Result<(), PgError> {
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await?
            .get(0);
        if value == "off" {
            return Err(PgError::NotDurable(setting));
        }
    }
    Ok(())
}

/// One step of a schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// A schema: its migrations in order, the table that records them, and
/// the advisory lock every migrating process takes.
pub struct Schema {
    /// For messages: "Manifold", "provider state".
    pub what: &'static str,
    pub table: &'static str,
    pub lock: i64,
    pub migrations: &'static [Migration],
}

impl Schema {
    pub fn latest(&self) -> i32 {
        self.migrations.last().map_or(0, |m| m.version)
    }
}

/// Brings `schema` up to date in one SQL transaction, under its advisory
/// lock, or refuses a database a newer build upgraded; returns the version
/// found.
pub async fn migrate(client: &mut Object, schema: &Schema) -> Result<i32, PgError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&schema.lock])
        .await?;
    transaction
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
            schema.table
        ))
        .await?;
    let found: i32 = transaction
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {}", schema.table),
            &[],
        )
        .await?
        .get(0);
    if found > schema.latest() {
        return Err(PgError::NewerSchema {
            what: schema.what,
            found,
            latest: schema.latest(),
        });
    }
    for migration in schema.migrations.iter().filter(|m| m.version > found) {
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(|error| {
                PgError::Database(format!(
                    "{} schema migration {} ({}) failed: {}",
                    schema.what,
                    migration.version,
                    migration.name,
                    describe(&error)
                ))
            })?;
        transaction
            .execute(
                &format!(
                    "INSERT INTO {} (version, name) VALUES ($1, $2)",
                    schema.table
                ),
                &[&migration.version, &migration.name],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn only_tls_this_machine_or_an_explicit_waiver_reach_a_database() {
        for local in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
            "host=/var/run/postgresql user=u",
        ] {
            assert!(check_transport(&config(local), false).is_ok(), "{local}");
        }
        let remote = config("postgres://u:pw-4417@db.internal:5432/db");
        let refused = check_transport(&remote, false).unwrap_err().to_string();
        assert!(refused.contains("sslmode=require"), "{refused}");
        assert!(!refused.contains("pw-4417"), "{refused}");
        assert!(check_transport(&remote, true).is_ok());
        assert!(check_transport(
            &config("postgres://u@db.internal:5432/db?sslmode=require"),
            false
        )
        .is_ok());
        // `prefer`, tokio-postgres' default, may fall back to clear.
        assert!(
            check_transport(&config("postgres://u@10.0.0.5/db?sslmode=prefer"), false).is_err()
        );
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = tls(Some(&path)).err().unwrap().to_string();
        assert!(
            error.contains("CA file") && error.contains("no PEM certificate"),
            "{error}"
        );
        let missing = tls(Some(&dir.path().join("absent.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("absent.pem"), "{missing}");
        assert!(tls(None).is_ok());
    }

    #[test]
    fn options_never_print_the_url() {
        let options = Options {
            url: "postgres://u:pw-9921@127.0.0.1/db".into(),
            pool_size: 1,
            statement_timeout: None,
            lock_timeout: None,
            connect_timeout: Duration::from_secs(1),
            ca_file: None,
            insecure_plaintext: false,
            application_name: "test",
        };
        assert!(!format!("{options:?}").contains("pw-9921"));
    }
}
