//! A provider's state on PostgreSQL, shared by every instance of it, so a
//! provider microservice scales out as the switch does: an OTP issued by one
//! instance is checked by another, and its attempts are counted once.
//!
//! **One table**, `manifold_provider_state (tree, key, value)`, holds what
//! sled keeps in the provider's trees (`<namespace>/pending`,
//! `<namespace>/outcomes`, `<namespace>/meta`), values sealed exactly as
//! in sled. It is created by numbered migrations at connect, under an
//! advisory lock, and recorded in `manifold_provider_schema`; a database a
//! newer SDK upgraded is refused.
//!
//! **One transaction at a time, across instances.** The service changes a
//! transaction's state only while holding its lock; on PostgreSQL that lock
//! is a session advisory lock (`pg_advisory_lock`, keyed by a SHA-256 of the
//! provider and the transaction) on a connection of its own, held across the
//! upstream call and released when the service lets go (or by the server,
//! when an instance dies and its session ends). Locks have a pool of their
//! own, so instances waiting for locks can never take every connection the
//! holders need to write.
//!
//! **Durable when committed**: every write commits before it returns, and a
//! server that runs with `fsync` or `synchronous_commit` off is refused.

use std::error::Error as _;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::ServiceError;

/// Every migration of the provider state's schema, in order.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE manifold_provider_state (
         tree  text  NOT NULL,
         key   bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (tree, key)
     )",
)];

/// The advisory lock migrations take ("mfldprov").
const MIGRATION_LOCK: i64 = 0x6d66_6c64_7072_6f76;

/// How long a call waits for another instance to let go of a transaction
/// (the holder is calling the upstream, which its own timeout bounds).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Where a provider's shared state is and how it is reached.
#[derive(Clone)]
pub struct SharedStateOptions {
    /// A `postgres://` URL; it may hold a password, so it is never printed.
    pub url: String,
    /// Connections for reads and writes; as many again are kept for locks.
    pub pool_size: usize,
    /// How long one statement may run, and a call wait for a connection.
    pub timeout: Duration,
}

impl std::fmt::Debug for SharedStateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStateOptions")
            .field("url", &"(redacted)")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A connected shared state: cheap to clone (two pools).
#[derive(Clone)]
pub struct SharedState {
    pub(crate) data: Pool,
    locks: Pool,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("data", &self.data.status())
            .field("locks", &self.locks.status())
            .finish()
    }
}

/// The database's error in words (tokio-postgres' `Display` says only "db
/// error"; the server's message is its source).
pub(crate) fn database(error: tokio_postgres::Error) -> ServiceError {
    ServiceError::Database(match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    })
}

pub(crate) fn pool_error(error: PoolError) -> ServiceError {
    match error {
        PoolError::Backend(error) => database(error),
        PoolError::Timeout(_) => {
            ServiceError::Database("no connection to PostgreSQL within the timeout".into())
        }
        other => ServiceError::Database(format!("the PostgreSQL pool: {other}")),
    }
}

fn pool(
    mut config: tokio_postgres::Config,
    size: usize,
    timeout: Duration,
    statement_timeout: Option<Duration>,
) -> Result<Pool, ServiceError> {
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        config.application_name("manifold-provider");
    }
    config.options(match statement_timeout {
        Some(limit) => format!("-c statement_timeout={}", limit.as_millis().max(1)),
        None => format!(
            "-c statement_timeout=0 -c lock_timeout={}",
            LOCK_WAIT.as_millis()
        ),
    });
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout.max(LOCK_WAIT)))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|error| ServiceError::Database(format!("the PostgreSQL pool: {error}")))
}

impl SharedState {
    /// Connects, refuses a server that may lose commits, and brings the
    /// schema up to date.
    pub async fn connect(options: &SharedStateOptions) -> Result<SharedState, ServiceError> {
        let config: tokio_postgres::Config = options.url.parse().map_err(|error| {
            ServiceError::Database(format!(
                "the PostgreSQL URL: {}",
                match database(error) {
                    ServiceError::Database(reason) => reason,
                    other => other.to_string(),
                }
            ))
        })?;
        let state = SharedState {
            data: pool(
                config.clone(),
                options.pool_size,
                options.timeout,
                Some(options.timeout),
            )?,
            locks: pool(config, options.pool_size, options.timeout, None)?,
        };
        let mut client = state.data.get().await.map_err(|error| {
            ServiceError::Database(format!(
                "cannot connect to PostgreSQL: {}",
                match pool_error(error) {
                    ServiceError::Database(reason) => reason,
                    other => other.to_string(),
                }
            ))
        })?;
        for setting in ["fsync", "synchronous_commit"] {
            let value: String = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .map_err(database)?
                .get(0);
            if value == "off" {
                return Err(ServiceError::Database(format!(
                    "PostgreSQL runs with {setting} = off, so a commit it acknowledges can be lost \
                     in a crash, and a provider answers nothing that is not durable: set it on"
                )));
            }
        }
        migrate(&mut client).await?;
        Ok(state)
    }

    /// Holds `key`'s lock (of provider `namespace`) against every instance
    /// until the guard drops.
    pub(crate) async fn lock(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<SharedLock, ServiceError> {
        let id = lock_id(namespace, key);
        let client = self.locks.get().await.map_err(pool_error)?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&id])
            .await
            .map_err(database)?;
        Ok(SharedLock {
            client: Some(client),
            id,
        })
    }
}

async fn migrate(client: &mut Object) -> Result<(), ServiceError> {
    let transaction = client.transaction().await.map_err(database)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(database)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS manifold_provider_schema (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(database)?;
    let found: i32 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM manifold_provider_schema",
            &[],
        )
        .await
        .map_err(database)?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if found > latest {
        return Err(ServiceError::Database(format!(
            "the provider state's schema is at version {found}, and this build knows versions up \
             to {latest}: a newer Manifold upgraded it, which is what must run on it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        transaction.batch_execute(sql).await.map_err(database)?;
        transaction
            .execute(
                "INSERT INTO manifold_provider_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(database)?;
    }
    transaction.commit().await.map_err(database)
}

/// The advisory lock's id of `key` in `namespace`: the same in every
/// instance and every build (a hash the standard library may change would
/// let two builds hold "one" lock at once).
fn lock_id(namespace: &str, key: &[u8]) -> i64 {
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// One transaction's lock across instances; released when dropped.
pub(crate) struct SharedLock {
    client: Option<Object>,
    id: i64,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            // Unlocked before the connection goes back to the pool, so the
            // next user of it holds nothing it did not take.
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client
                        .execute("SELECT pg_advisory_unlock($1)", &[&id])
                        .await
                        .is_err()
                    {
                        // Closing the session releases every lock it held.
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock_id;

    #[test]
    fn lock_ids_are_fixed_by_provider_and_transaction() {
        // A change here would let instances of two builds run one
        // transaction at once: it must never change.
        assert_eq!(
            lock_id("demo", b"app\x1ft-1"),
            lock_id("demo", b"app\x1ft-1")
        );
        assert_ne!(
            lock_id("demo", b"app\x1ft-1"),
            lock_id("other", b"app\x1ft-1")
        );
        assert_ne!(
            lock_id("demo", b"app\x1ft-1"),
            lock_id("demo", b"app\x1ft-2")
        );
        // SHA-256 of "demo\0app\x1ft-1", its first 8 bytes big-endian (computed apart, in Python).
        assert_eq!(lock_id("demo", b"app\x1ft-1"), -3_592_939_037_611_174_363);
    }
}
