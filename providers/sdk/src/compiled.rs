//! Providers compiled into the switch: what a connector crate offers so that
//! a host can run it inside the switch's process with
//! `implementation = "<name>"`, on the switch's own database.
//!
//! A connector crate exports one [`CompiledProvider`]; the `manifold` binary
//! registers it under its name (the switch library depends on no connector).
//! At start-up the switch hands it the route's `[providers.settings]` table,
//! once, and gets back a [`ConfiguredProvider`] or a message naming what is
//! wrong; it then opens that on every storage generation (the first, and each
//! reopen after a disk error) with a [`Host`]: the database, the switch's
//! write-ahead log to make state durable with the switch's own commits, and
//! the notifier. What it opens is a [`HostedProvider`], which every
//! [`ProviderService`] is: the switch calls it, reseals its state and runs
//! its expiry sweep.
//!
//! [`SdkProvider`] covers the usual case — a connector built from its
//! settings, wrapped in a `ProviderService` — so that a connector crate only
//! writes how its settings become a connector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::DataKeys;
use manifold_provider::{Notifier, Provider};
use serde_json::Value;

use crate::connector::Connector;
use crate::service::{AnswerDurability, ProviderService, ServiceError, ServiceSettings};
use crate::sweeper::Sweeper;
use crate::StateDurability;

/// A route's `[providers.settings]` table read as `T`. `missing` is the
/// message when the host gave no table (say which settings are needed); a
/// table that does not fit is refused with serde's message, its values
/// withheld (a value in the wrong place may be a secret).
pub fn read_settings<T: serde::de::DeserializeOwned>(
    settings: &Value,
    missing: &str,
) -> Result<T, String> {
    if settings.is_null() {
        return Err(missing.to_owned());
    }
    T::deserialize(settings)
        .map_err(|error| manifold_crypto::secret::withhold_values(&error.to_string()))
}

/// What the host's configuration says about every in-process provider.
#[derive(Clone)]
pub struct HostSettings {
    /// The switch's `[data_at_rest]` keys: in-process state is sealed under them.
    pub data_keys: Arc<DataKeys>,
    /// `[data_at_rest] retention_days`.
    pub retention: Duration,
}

/// What one storage generation lends an in-process provider.
pub struct Host<'a> {
    /// The switch's database; the provider's trees live in it.
    pub db: &'a sled::Db,
    /// The switch's write-ahead log in front of `db`.
    pub durability: StateDurability,
    /// The switch's data directory, for a provider's own files (see
    /// [`ConfiguredProvider::own_dir`]).
    pub data_dir: &'a Path,
    pub notifier: Arc<dyn Notifier>,
}

/// A provider the switch can run in its own process.
pub trait CompiledProvider: Send + Sync {
    /// Reads and checks the route's `settings` (JSON `null` when the host
    /// gave none). The message names the setting and never quotes a value.
    fn configure(
        &self,
        settings: &Value,
        host: &HostSettings,
    ) -> Result<Box<dyn ConfiguredProvider>, String>;
}

/// A compiled provider with its settings checked, ready to open.
pub trait ConfiguredProvider: Send + Sync {
    fn open(&self, host: &Host<'_>) -> Result<Arc<dyn HostedProvider>, String>;

    /// A directory under the switch's data directory that this provider
    /// opens as its own (a database sled locks): two routes may not share
    /// one. `None` when it keeps everything in the switch's database.
    fn own_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// An in-process provider as the switch holds it.
#[async_trait]
pub trait HostedProvider: Send + Sync {
    fn provider(self: Arc<Self>) -> Arc<dyn Provider>;

    /// Seals every value not sealed under the current data key; how many.
    async fn reseal(&self) -> Result<usize, ServiceError>;

    /// Starts the background sweep of expired confirmations and of data
    /// past its retention; it stops when the guard is dropped.
    fn sweep(self: Arc<Self>) -> Sweeper;
}

#[async_trait]
impl<C: Connector> HostedProvider for ProviderService<C> {
    fn provider(self: Arc<Self>) -> Arc<dyn Provider> {
        self
    }

    async fn reseal(&self) -> Result<usize, ServiceError> {
        ProviderService::reseal(self).await
    }

    fn sweep(self: Arc<Self>) -> Sweeper {
        Sweeper::start(self)
    }
}

/// The usual [`CompiledProvider`]: `build` turns the settings into a
/// connector and the service settings it runs with (its namespace, OTP
/// policy); the switch's keys, retention and log are filled in here.
pub struct SdkProvider<C> {
    #[allow(clippy::type_complexity)]
    build: Arc<dyn Fn(&Value) -> Result<(C, ServiceSettings), String> + Send + Sync>,
}

impl<C: Connector> SdkProvider<C> {
    pub fn new(
        build: impl Fn(&Value) -> Result<(C, ServiceSettings), String> + Send + Sync + 'static,
    ) -> Self {
        SdkProvider {
            build: Arc::new(build),
        }
    }
}

impl<C: Connector> CompiledProvider for SdkProvider<C> {
    fn configure(
        &self,
        settings: &Value,
        host: &HostSettings,
    ) -> Result<Box<dyn ConfiguredProvider>, String> {
        // Built once here so that a bad setting stops start-up; each
        // generation builds its own from the same table.
        (self.build)(settings)?;
        Ok(Box::new(ConfiguredSdkProvider {
            build: self.build.clone(),
            settings: settings.clone(),
            host: host.clone(),
        }))
    }
}

struct ConfiguredSdkProvider<C> {
    #[allow(clippy::type_complexity)]
    build: Arc<dyn Fn(&Value) -> Result<(C, ServiceSettings), String> + Send + Sync>,
    settings: Value,
    host: HostSettings,
}

impl<C: Connector> ConfiguredProvider for ConfiguredSdkProvider<C> {
    fn open(&self, host: &Host<'_>) -> Result<Arc<dyn HostedProvider>, String> {
        let (connector, mut settings) = (self.build)(&self.settings)?;
        // Its state is in the switch's database: sealed under the switch's
        // keys, kept as long, and durable with the switch's commits.
        settings.answer_durability = AnswerDurability::ByCaller;
        settings.data_keys = Some(self.host.data_keys.clone());
        settings.retention = Some(self.host.retention);
        let service = ProviderService::open(
            host.db,
            host.durability.clone(),
            host.notifier.clone(),
            connector,
            settings,
        )
        .map_err(|error| error.to_string())?;
        Ok(Arc::new(service))
    }
}
