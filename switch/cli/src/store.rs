//! Opening the store a switch's configuration names, for the commands that
//! read it without going through a running switch; and `manifold store
//! migrate`, which copies a sled store into PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use manifold_config::{StorageBackend, SwitchConfig};
use manifold_switch::store::{
    migrate, PgStore, PostgresOptions, SledStore, Store, StoreError, StoreOptions,
};

use super::progress::Progress;
use super::Failure;

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped switch's sled store into the PostgreSQL database a configuration names
    /// (`[storage] backend = "postgres"`), which must hold no transactions yet.
    ///
    /// Every transaction, every request_ref it answered and every metered call is copied in one
    /// database transaction (a copy that fails leaves nothing; run it again), then checked: the
    /// counts, and a thousand records spread over the store read back and compared. Records are
    /// sealed again under the configuration's current data key; its previous keys must open what
    /// the sled store holds.
    Migrate {
        /// The sled store's directory (the old configuration's `storage.path`). Stop its switch
        /// first: sled lets one process open a store.
        #[arg(long)]
        from: PathBuf,
        /// The configuration whose `[storage.postgres]` receives the copy.
        #[arg(long, default_value = "fixtures/manifold.toml")]
        config: PathBuf,
    },
}

impl StoreCommand {
    pub fn run(self) -> Result<ExitCode, Failure> {
        match self {
            StoreCommand::Migrate { from, config } => copy_to_postgres(&from, &config),
        }
    }
}

fn copy_to_postgres(from: &Path, config_path: &Path) -> Result<ExitCode, Failure> {
    let config = SwitchConfig::load(config_path)?;
    let StorageBackend::Postgres(postgres) = &config.storage.backend else {
        anyhow::bail!(
            "{} keeps its store in sled; migrating needs a configuration with \
             `[storage] backend = \"postgres\"` and its `[storage.postgres]`",
            config_path.display()
        );
    };
    let sled = Arc::new(open_stopped(&config, Some(from))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let migrated = runtime.block_on(async {
        let target = PgStore::connect(&PostgresOptions::from_config(&config, postgres))
            .await
            .context("opening the PostgreSQL store")?;
        let mut progress = Progress::new("migrate", "of the transactions copied");
        let mut total = 0;
        let migrated = migrate::sled_to_postgres(sled, &target, &mut |step| match step {
            migrate::Step::Counted {
                transactions,
                metered_calls,
            } => {
                total = transactions;
                eprintln!(
                    "migrate: {transactions} transactions and {metered_calls} metered calls to copy"
                );
            }
            migrate::Step::Copied(copied) => {
                progress.reached(copied.transactions, total);
            }
            migrate::Step::Checking => {}
        })
        .await;
        progress.finish("copied; checking the copy");
        migrated.context("copying the store")
    })?;
    println!(
        "copied {} transactions and {} metered calls from {} into PostgreSQL; {} records read \
         back and identical",
        migrated.transactions,
        migrated.metered_calls,
        from.display(),
        migrated.checked
    );
    Ok(ExitCode::SUCCESS)
}

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
            let store = PgStore::connect(&PostgresOptions::from_config(config, postgres))
                .await
                .map_err(|error| {
                    anyhow::Error::new(error).context("opening the PostgreSQL store")
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// The sled store of the stopped switch `config` configures (or the one
/// in `data`).
pub fn open_stopped(config: &SwitchConfig, data: Option<&Path>) -> Result<SledStore, Failure> {
    let path = data.map_or_else(|| config.storage.path.clone(), Path::to_owned);
    let options = StoreOptions::configured(config);
    SledStore::open_existing(&path, &options).map_err(|error| match error {
        StoreError::InUse(_) => anyhow::anyhow!(
            "{error}; while it runs, ask its admin API instead (--admin http://127.0.0.1:9090)"
        ),
        error => {
            anyhow::Error::new(error).context(format!("opening the store in {}", path.display()))
        }
    })
}
