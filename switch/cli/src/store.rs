//! Opening a stopped switch's store for the commands that read it.

use std::path::Path;

use manifold_config::SwitchConfig;
use manifold_switch::store::{SledStore, StoreError, StoreOptions};

use super::Failure;

/// The store of the switch `config` configures (or the one in `data`),
/// which must not be running: sled lets one process open a store. A store
/// in use is refused with the way round it (`--admin`).
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
