//! `manifold [serve]`: run the switch, or (`--dump`, `--reseal`) work on its
//! stopped store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use manifold_config::{StorageBackend, SwitchConfig};
use manifold_switch::admin::Admin;
use manifold_switch::store::{PgStore, PostgresOptions};
use manifold_switch::{ReloadError, Reloader, Switch};

use super::Failure;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The host configuration file (TOML).
    #[arg(long, default_value = "fixtures/manifold.toml")]
    config: PathBuf,
    /// Listen here instead of the configured address; port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep the store here instead of the configured `storage.path`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print every stored transaction as one JSON line on stdout, then exit.
    /// Run it on a stopped switch: sled lets one process open a store.
    #[arg(long)]
    dump: bool,
    /// Seal every stored record not sealed under the current data key
    /// (`[data_at_rest] key_id`), then exit; afterwards the previous keys can
    /// be removed from the configuration. Run it on a stopped switch.
    #[arg(long, conflicts_with = "dump")]
    reseal: bool,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Failure> {
    // Whatever the switch writes (its store, the outbox) is its user's alone.
    manifold_edge::private_files::restrict_new_files();
    // Logs go to stderr: stdout carries only the "listening on" line that
    // scripts and tests read.
    manifold_edge::init_logs();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let mut config = SwitchConfig::load(&args.config)?;
    for warning in &config.warnings {
        tracing::warn!(
            "{}: {}: {}",
            config.source.display(),
            warning.key,
            warning.problem
        );
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.storage.path = data;
    }
    let options = manifold_switch::store::StoreOptions::configured(&config);
    if args.reseal {
        // Opened whole (not served), so the in-process providers' state on
        // the same database is resealed too.
        let resealed =
            Switch::open_with_registry(&config, &super::compiled_providers(), HashMap::new())
                .await?
                .reseal()
                .await
                .with_context(|| {
                    format!("resealing the store in {}", config.storage.path.display())
                })?;
        eprintln!(
            "{resealed} records sealed under data key `{}`",
            config.data_at_rest.keys.current_id()
        );
        return Ok(());
    }
    if args.dump {
        let mut out = std::io::BufWriter::new(std::io::stdout());
        let dumped = match &config.storage.backend {
            StorageBackend::Sled => manifold_switch::store::SledStore::dump_directory(
                &config.storage.path,
                &options,
                &mut out,
            )
            .with_context(|| format!("dumping the store in {}", config.storage.path.display()))?,
            StorageBackend::Postgres(postgres) => {
                let store = PgStore::connect(&PostgresOptions::from_config(&config, postgres))
                    .await
                    .context("opening the PostgreSQL store")?;
                store
                    .dump(&mut out)
                    .await
                    .context("dumping the PostgreSQL store")?
            }
        };
        std::io::Write::flush(&mut out)?;
        eprintln!("{dumped} transactions");
        return Ok(());
    }
    let switch =
        Switch::open_with_registry(&config, &super::compiled_providers(), HashMap::new()).await?;
    reload_on_sighup(switch.reloader(), args.config.clone())?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = match &config.admin {
        Some(admin_config) => {
            let admin = Admin::new(&switch, admin_config, args.config.clone())?;
            let listener = tokio::net::TcpListener::bind(admin_config.listen)
                .await
                .with_context(|| format!("binding the admin listener {}", admin_config.listen))?;
            // Before the app listener's line, which scripts wait for.
            println!("manifold admin listening on {}", listener.local_addr()?);
            Some(tokio::spawn(admin.serve(listener, async move {
                let _ = admin_stopped.await;
            })))
        }
        None => {
            tracing::info!("no [admin] table: the admin API (invoices, /metrics, reload) is off");
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    // Scripts and tests read this line to learn the port.
    println!("manifold listening on {}", listener.local_addr()?);
    switch
        .serve(listener, manifold_edge::shutdown_signal())
        .await;
    let _ = stop_admin.send(());
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}

/// On every SIGHUP, reads the configuration file again and applies its apps
/// (keys, secrets, grants, limits). A file with any problem, or one that
/// changes the providers, is refused with its errors in the log, and the
/// apps of before keep serving.
#[cfg(unix)]
fn reload_on_sighup(reloader: Reloader, path: PathBuf) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reloader.reload_file(&path) {
                Ok(changes) => tracing::info!(
                    added = ?changes.added,
                    changed = ?changes.changed,
                    removed = ?changes.removed,
                    unchanged = changes.unchanged,
                    "reloaded the apps and fees of {}; other settings take effect at a restart",
                    path.display()
                ),
                Err(ReloadError::Config(error)) => {
                    tracing::error!(
                        "reload refused, the configuration of before still serves:\n{error}"
                    )
                }
                Err(ReloadError::Refused(refused)) => tracing::error!(
                    "reload of {} refused, the configuration of before still serves: {refused}",
                    path.display()
                ),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_reloader: Reloader, _path: PathBuf) -> Result<(), Failure> {
    Ok(())
}
