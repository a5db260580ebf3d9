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

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use manifold_postgres::{Migration, PgError, Schema};
use sha2::{Digest, Sha256};

use crate::ServiceError;

/// The provider state's schema.
const SCHEMA: Schema = Schema {
    what: "provider state",
    table: "manifold_provider_schema",
    // "mfldprov".
    lock: 0x6d66_6c64_7072_6f76,
    migrations: &[Migration {
        version: 1,
        name: "the provider state",
        sql: "CREATE TABLE manifold_provider_state (
                  tree  text  NOT NULL,
                  key   bytea NOT NULL,
                  value bytea NOT NULL,
                  PRIMARY KEY (tree, key)
              )",
    }],
};

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
    /// PEM certificates the server's must chain to over TLS
    /// (`sslmode=require`), instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Allows a URL to another machine without TLS.
    pub insecure_plaintext: bool,
}

impl std::fmt::Debug for SharedStateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStateOptions")
            .field("url", &"(redacted)")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
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

pub(crate) fn database(error: tokio_postgres::Error) -> ServiceError {
    ServiceError::Database(manifold_postgres::describe(&error))
}

pub(crate) fn pool_error(error: PoolError) -> ServiceError {
    ServiceError::Database(PgError::from(error).to_string())
}

fn pg(error: PgError) -> ServiceError {
    ServiceError::Database(error.to_string())
}

impl SharedState {
    /// Connects, refuses a server that may lose commits, and brings the
    /// schema up to date.
    pub async fn connect(options: &SharedStateOptions) -> Result<SharedState, ServiceError> {
        let pool = |statement_timeout, lock_timeout| {
            manifold_postgres::pool(&manifold_postgres::Options {
                url: options.url.clone(),
                pool_size: options.pool_size,
                statement_timeout,
                lock_timeout,
                connect_timeout: options.timeout,
                ca_file: options.ca_file.clone(),
                insecure_plaintext: options.insecure_plaintext,
                application_name: "manifold-provider",
            })
            .map_err(pg)
        };
        let state = SharedState {
            data: pool(Some(options.timeout), None)?,
            // A lock is waited for as long as another instance's upstream
            // call may hold it.
            locks: pool(None, Some(LOCK_WAIT))?,
        };
        let mut client = manifold_postgres::connect(&state.data).await.map_err(pg)?;
        manifold_postgres::check_durable_commits(&client)
            .await
            .map_err(pg)?;
        manifold_postgres::migrate(&mut client, &SCHEMA)
            .await
            .map_err(pg)?;
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
