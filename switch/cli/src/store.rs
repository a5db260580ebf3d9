//! Opening the store a switch's configuration names, for the commands that
//! read it without going through a running switch.

use std::path::Path;
use std::sync::Arc;

use manifold_config::{StorageBackend, SwitchConfig};
use manifold_switch::store::{
    PgStore, PostgresOptions, SledStore, Store, StoreError, StoreOptions,
};

use super::Failure;

/// The store of the switch `config` configures. A sled store (the one in
/// `data`, if given) must not be running: sled lets one process open a
/// store, and one in use is refused with the way round it (`--admin`). A
/// PostgreSQL store is shared, so it is read while switches run.
pub async fn open_store(
    config: &SwitchConfig,
    data: Option<&Path>,
) -> Result<Arc<dyn Store>, Failure> {
    match &config.storage.backend {
        StorageBackend::Sled => Ok(Arc::new(open_stopped(config, data)?)),
        StorageBackend::Postgres(postgres) => {
            if data.is_some() {
                anyhow::bail!(
                    "--data names a sled store; this configuration's store is PostgreSQL"
                );
            }
            let store = PgStore::connect(&postgres_options(config, postgres))
                .await
                .map_err(|error| {
                    anyhow::Error::new(error).context("opening the PostgreSQL store")
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// The PostgreSQL store's options from `[storage.postgres]`.
pub fn postgres_options(
    config: &SwitchConfig,
    postgres: &manifold_config::PostgresConfig,
) -> PostgresOptions {
    PostgresOptions {
        url: postgres.url.expose().to_owned(),
        pool_size: postgres.pool_size,
        statement_timeout: postgres.statement_timeout,
        connect_timeout: postgres.connect_timeout,
        data_keys: Some(config.data_at_rest.keys.clone()),
    }
}

/// The sled store of the stopped switch `config` configures (or the one
/// in `data`).
pub fn open_stopped(config: &SwitchConfig, data: Option<&Path>) -> Result<SledStore, Failure> {
    let path = data.map_or_else(|| config.storage.path.clone(), Path::to_owned);
    let options = StoreOptions {
        cache_capacity_bytes: config.storage.cache_capacity_bytes,
        data_keys: Some(config.data_at_rest.keys.clone()),
        ..Default::default()
    };
    SledStore::open_existing(&path, &options).map_err(|error| match error {
        StoreError::InUse(_) => anyhow::anyhow!(
            "{error}; while it runs, ask its admin API instead (--admin http://127.0.0.1:9090)"
        ),
        error => {
            anyhow::Error::new(error).context(format!("opening the store in {}", path.display()))
        }
    })
}
