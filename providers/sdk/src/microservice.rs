//! Running a connector as its own provider microservice.
//!
//! [`run`] is what a provider's `main.rs` calls after parsing its arguments:
//! it serves the switch→provider protocol on the listener (with `/health`
//! and `/stats`), verifying the switch's signature on every call, sweeps
//! expired confirmations in the background, and on shutdown lets in-flight
//! calls finish and flushes the store.
//!
//! [`open_state_db`] opens the provider's own state where only its user can
//! read it.
//!
//! [`ServeArgs`] is the part of a provider binary's command line that every
//! provider shares — the secret and key id it shares with the switch, the
//! signature window, TLS, the data key its state is sealed under and the
//! retention period — so the demo, the template and every provider
//! copied from it start the same way and cannot forget to verify.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::{DataKey, DataKeys, SecretString};
use manifold_edge::AuthFailureLimits;
use manifold_provider::notify::Notifier;
use manifold_provider::outbound::OutboundOptions;
use manifold_provider::server::{serve_provider, ProviderServer};
use manifold_provider::{GroupCommit, HopSigner, HopVerifier, Provider};
use tokio::net::TcpListener;
use zeroize::Zeroize;

use crate::connector::Connector;
use crate::service::{ProviderService, ServiceError, ServiceSettings, StateDurability};
use crate::shared::{SharedState, SharedStateOptions};
use crate::sweeper::Sweeper;

/// What a provider binary does first: the files it creates from now on are
/// its user's alone, and logs go to stderr (`RUST_LOG`, `info` by default),
/// so stdout carries only the `listening on` line scripts and tests read.
pub fn start_process() {
    manifold_edge::private_files::restrict_new_files();
    manifold_edge::init_logs();
}

/// Opens (or creates) the provider's state database in `dir`, private to
/// this user: the directory 0700 and its files 0600, with a warning when the
/// host made the directory looser. Call
/// [`manifold_edge::private_files::restrict_new_files`] first thing in
/// `main`, so the files sled creates later are private too.
pub fn open_state_db(dir: &Path) -> std::io::Result<sled::Db> {
    manifold_edge::private_files::secure_data_dir_or_warn(dir)?;
    let db = sled::open(dir).map_err(std::io::Error::from)?;
    manifold_edge::private_files::secure_data_dir(dir)?;
    Ok(db)
}

/// Where a provider microservice keeps its state: sled in its own data
/// directory, or the PostgreSQL database every instance of it shares
/// (`--state-url`).
pub enum StateHome {
    Own { db: sled::Db, commit: GroupCommit },
    Shared(SharedState),
}

impl StateHome {
    /// The shared state when `args` name one (`--state-url`), the sled
    /// database in `dir` otherwise.
    pub async fn open(args: &ServeArgs, dir: &Path) -> Result<StateHome, ServeArgsError> {
        match &args.state_url {
            Some(url) => {
                let options = SharedStateOptions {
                    url: url.0.expose().to_owned(),
                    pool_size: args.state_pool_size,
                    timeout: Duration::from_millis(args.state_timeout_ms.max(1)),
                    ca_file: args.state_ca_file.clone(),
                    insecure_plaintext: args.state_insecure_plaintext,
                };
                SharedState::connect(&options)
                    .await
                    .map(StateHome::Shared)
                    .map_err(|error| ServeArgsError::Invalid {
                        what: "--state-url",
                        reason: error.to_string(),
                    })
            }
            None => {
                let io = |error: std::io::Error| ServeArgsError::Invalid {
                    what: "--data",
                    reason: format!("opening {}: {error}", dir.display()),
                };
                let db = open_state_db(dir).map_err(io)?;
                let commit = GroupCommit::start(db.clone()).map_err(io)?;
                Ok(StateHome::Own { db, commit })
            }
        }
    }

    /// The provider `connector` makes, its state here.
    pub async fn provider<C: Connector>(
        &self,
        notifier: Arc<dyn Notifier>,
        connector: C,
        settings: ServiceSettings,
    ) -> Result<ProviderService<C>, ServiceError> {
        match self {
            StateHome::Own { db, commit } => {
                ProviderService::open(db, commit.clone(), notifier, connector, settings)
            }
            StateHome::Shared(state) => {
                ProviderService::open_shared(state.clone(), notifier, connector, settings).await
            }
        }
    }

    /// What a provider binary does once it has its connector: opens the
    /// provider on this state, then with `--reseal` seals every value under
    /// the current data key and says how many; otherwise serves it on
    /// `listen` as `name` ([`listen_and_run`]) until a shutdown signal.
    #[allow(clippy::too_many_arguments)]
    pub async fn reseal_or_serve<C: Connector>(
        &self,
        name: &str,
        args: &ServeArgs,
        listen: &str,
        notifier: Arc<dyn Notifier>,
        connector: C,
        settings: ServiceSettings,
        server: ProviderServer,
    ) -> Result<(), RunError> {
        let provider = self.provider(notifier, connector, settings).await?;
        if args.reseal {
            let resealed = provider.reseal().await?;
            eprintln!(
                "{resealed} values sealed under data key `{}`",
                args.data_key_id
            );
            return Ok(());
        }
        listen_and_run(name, listen, Arc::new(provider), self.durability(), server).await?;
        Ok(())
    }

    /// The sled database, when the state is there (for what a connector
    /// keeps of its own beside the SDK's trees).
    pub fn sled_db(&self) -> Option<&sled::Db> {
        match self {
            StateHome::Own { db, .. } => Some(db),
            StateHome::Shared(_) => None,
        }
    }

    /// What makes the state durable, for [`run`]'s final flush.
    pub fn durability(&self) -> StateDurability {
        match self {
            StateHome::Own { commit, .. } => StateDurability::GroupCommit(commit.clone()),
            StateHome::Shared(_) => StateDurability::Shared,
        }
    }
}

/// What every provider binary ends with: binds `listen`, prints
/// `<name> listening on <address>` on stdout (scripts and tests read that
/// line to learn the port), and [`run`]s until SIGINT or SIGTERM.
pub async fn listen_and_run<C: Connector>(
    name: &str,
    listen: &str,
    service: Arc<ProviderService<C>>,
    commit: impl Into<StateDurability>,
    server: ProviderServer,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("binding {listen}: {error}")))?;
    println!("{name} listening on {}", listener.local_addr()?);
    run(
        listener,
        service,
        commit,
        server,
        manifold_edge::shutdown_signal(),
    )
    .await;
    Ok(())
}

/// Serves `service` on `listener` until `shutdown` completes, verifying every
/// call with `server.hop`.
pub async fn run<C: Connector>(
    listener: TcpListener,
    service: Arc<ProviderService<C>>,
    commit: impl Into<StateDurability>,
    server: ProviderServer,
    shutdown: impl Future<Output = ()>,
) {
    let commit = commit.into();
    let sweeper = Sweeper::start(service.clone());
    serve_provider(listener, service as Arc<dyn Provider>, server, shutdown).await;
    drop(sweeper);
    if let Err(error) = commit.durable().await {
        tracing::error!(%error, "final flush failed");
    }
}

/// The environment variable a provider binary reads the shared secret from
/// when `--secret-file` is not given.
pub const SECRET_ENV: &str = "MANIFOLD_PROVIDER_SECRET";

/// The environment variable a provider binary reads its data key from when
/// `--data-key-file` is not given.
pub const DATA_KEY_ENV: &str = "MANIFOLD_PROVIDER_DATA_KEY";

/// The shortest shared secret accepted, as in the switch's configuration.
pub const MIN_SECRET_LEN: usize = 32;

/// The command-line options every provider microservice shares.
/// (Parsed with clap when the `cli` feature is on, as provider binaries
/// turn it on; the library itself needs no command-line parser.)
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// A file holding the secret this provider shares with the switch (the
    /// switch's `[[providers]] secret`). Without it, the secret is read from
    /// the MANIFOLD_PROVIDER_SECRET environment variable; it is never taken
    /// from the command line, where other users could read it.
    #[cfg_attr(feature = "cli", arg(long))]
    pub secret_file: Option<PathBuf>,
    /// The key id both sides sign with (the switch's `[[providers]] key_id`,
    /// by default the provider's name there).
    #[cfg_attr(feature = "cli", arg(long, env = "MANIFOLD_PROVIDER_KEY_ID"))]
    pub key_id: String,
    /// How far the switch's signature time may be from this clock.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 60))]
    pub signature_max_skew_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[cfg_attr(feature = "cli", arg(long, requires = "tls_key"))]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[cfg_attr(feature = "cli", arg(long, requires = "tls_cert"))]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) to trust, instead of the public roots, for the
    /// switch's certificate when this provider calls it (`/notify/*`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub switch_ca_file: Option<PathBuf>,
    /// Accept an `http://` switch URL to a host other than this machine
    /// (OTP texts then travel unencrypted; logged as a warning).
    #[cfg_attr(feature = "cli", arg(long))]
    pub insecure_http: bool,
    /// Lock out (HTTP 429, 60 s) a client address after this many refused
    /// signatures within 60 s; 0, the default, never locks anyone out (the
    /// switch is the one client, and its address may be shared).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub auth_failure_limit: u32,
    /// The id of the data key this provider's state is sealed under at rest
    /// (named in every sealed value, so keys can be rotated).
    #[cfg_attr(feature = "cli", arg(long, env = "MANIFOLD_PROVIDER_DATA_KEY_ID"))]
    pub data_key_id: String,
    /// A file holding the data key: 64 hexadecimal digits (`openssl rand
    /// -hex 32`), kept outside the data directory. Without it, the key is
    /// read from MANIFOLD_PROVIDER_DATA_KEY; never from the command line.
    #[cfg_attr(feature = "cli", arg(long))]
    pub data_key_file: Option<PathBuf>,
    /// A previous data key, `ID=FILE`, which opens what it sealed and seals
    /// nothing (repeat for several). After `--reseal`, it can go.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ID=FILE"))]
    pub previous_data_key: Vec<String>,
    /// Days a final transaction keeps its customer data (the upstream's
    /// answer, what a reversal needs); its status and code stay.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 365))]
    pub retention_days: u64,
    /// Seal every stored value not sealed under the current data key, print
    /// how many, and exit (on a stopped provider); then previous keys can go.
    #[cfg_attr(feature = "cli", arg(long))]
    pub reseal: bool,
    /// Keep the state (pending conversations, outcomes) in this PostgreSQL
    /// database instead of sled in the data directory, shared by every
    /// instance of the provider: `postgres://user@host:port/database`. It
    /// may hold a password: give it through MANIFOLD_PROVIDER_STATE_URL.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MANIFOLD_PROVIDER_STATE_URL", hide_env_values = true)
    )]
    pub state_url: Option<StateUrl>,
    /// Connections to the shared state (as many again for its locks).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8))]
    pub state_pool_size: usize,
    /// How long one statement on the shared state may run.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 5_000))]
    pub state_timeout_ms: u64,
    /// PEM certificates the shared state's server must present a chain to
    /// (TLS: `sslmode=require` in the URL), instead of the public roots.
    #[cfg_attr(feature = "cli", arg(long))]
    pub state_ca_file: Option<PathBuf>,
    /// Allow a `--state-url` to another machine without TLS (the password
    /// and the state then cross the network in clear).
    #[cfg_attr(feature = "cli", arg(long))]
    pub state_insecure_plaintext: bool,
}

/// `--state-url`: a secret (it may hold a password), never printed.
#[derive(Clone)]
pub struct StateUrl(SecretString);

impl std::str::FromStr for StateUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(StateUrl(SecretString::new(text.to_owned())))
    }
}

impl std::fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(redacted)")
    }
}

/// Why [`StateHome::reseal_or_serve`] stopped: the provider's state, or
/// its listener.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a provider cannot start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeArgsError {
    #[error("the shared secret is missing: give --secret-file or set {SECRET_ENV}")]
    NoSecret,
    #[error("the secret file {path} cannot be read: {reason}")]
    SecretFile { path: String, reason: String },
    #[error("the shared secret must be at least {MIN_SECRET_LEN} characters")]
    ShortSecret,
    #[error("--key-id must be 1-64 letters, digits, `_`, `-` or `.`")]
    BadKeyId,
    #[error("--signature-max-skew-secs must be between 1 and 3600")]
    BadSkew,
    #[error("the data key is missing: give --data-key-file or set {DATA_KEY_ENV}")]
    NoDataKey,
    #[error("the data key file {path} cannot be read: {reason}")]
    DataKeyFile { path: String, reason: String },
    #[error("{flag}: {problem}")]
    BadDataKey { flag: String, problem: String },
    #[error("--retention-days must be between 1 and 36500")]
    BadRetention,
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Tls(#[from] manifold_edge::TlsError),
}

/// Logs a warning when users other than the owner may read `path`, a file
/// holding a secret: it should be its user's alone, but the provider still
/// starts, as the switch does (the host may have reasons).
pub fn warn_if_others_may_read(path: &Path) {
    #[cfg(unix)]
    if let Some(mode) = std::fs::metadata(path)
        .ok()
        .and_then(|metadata| manifold_edge::private_files::loose_mode(&metadata))
    {
        tracing::warn!(
            "{} can be read by other users (mode {mode:o}); `chmod 600` it",
            path.display()
        );
    }
}

impl ServeArgs {
    /// `settings` with this command line's data keys and retention: the
    /// provider's state sealed and kept as the host says.
    pub fn apply_to(
        &self,
        mut settings: crate::ServiceSettings,
    ) -> Result<crate::ServiceSettings, ServeArgsError> {
        settings.data_keys = Some(self.data_keys()?);
        settings.retention = Some(self.retention()?);
        Ok(settings)
    }

    /// The shared secret, from the file or the environment.
    pub fn secret(&self) -> Result<SecretString, ServeArgsError> {
        let mut raw = match &self.secret_file {
            Some(path) => {
                warn_if_others_may_read(path);
                std::fs::read_to_string(path).map_err(|error| ServeArgsError::SecretFile {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?
            }
            None => std::env::var(SECRET_ENV).map_err(|_| ServeArgsError::NoSecret)?,
        };
        // A trailing newline, in a file or a variable, would otherwise be a
        // silent 401 on every call.
        let secret = SecretString::new(raw.trim().to_owned());
        raw.zeroize();
        if secret.len() < MIN_SECRET_LEN {
            return Err(ServeArgsError::ShortSecret);
        }
        Ok(secret)
    }

    fn checked_key_id(&self) -> Result<&str, ServeArgsError> {
        let id = self.key_id.as_str();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if valid {
            Ok(id)
        } else {
            Err(ServeArgsError::BadKeyId)
        }
    }

    /// The server: provider edge defaults, TLS if asked, and a verifier of
    /// the switch's signatures.
    pub fn server(&self) -> Result<ProviderServer, ServeArgsError> {
        if !(1..=3600).contains(&self.signature_max_skew_secs) {
            return Err(ServeArgsError::BadSkew);
        }
        let verifier = HopVerifier::new(
            &self.secret()?,
            self.checked_key_id()?,
            Duration::from_secs(self.signature_max_skew_secs),
        );
        let mut server = ProviderServer::new(verifier);
        if self.auth_failure_limit > 0 {
            server.auth_failures = AuthFailureLimits {
                max_failures: self.auth_failure_limit,
                ..AuthFailureLimits::default()
            };
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            server.edge.tls = Some(manifold_edge::tls::server_config(cert, key)?);
        }
        Ok(server)
    }

    /// The data keys: `--data-key-id` with the key from `--data-key-file`
    /// or the environment, and every `--previous-data-key`.
    pub fn data_keys(&self) -> Result<Arc<DataKeys>, ServeArgsError> {
        let read_file = |path: &Path| -> Result<SecretString, ServeArgsError> {
            warn_if_others_may_read(path);
            std::fs::read_to_string(path)
                .map(SecretString::new)
                .map_err(|error| ServeArgsError::DataKeyFile {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })
        };
        let bad = |flag: &str, problem: String| ServeArgsError::BadDataKey {
            flag: flag.to_owned(),
            problem,
        };
        let text = match &self.data_key_file {
            Some(path) => read_file(path)?,
            None => SecretString::new(
                std::env::var(DATA_KEY_ENV).map_err(|_| ServeArgsError::NoDataKey)?,
            ),
        };
        let current = DataKey::from_hex(&self.data_key_id, &text)
            .map_err(|error| bad("--data-key-id/--data-key-file", error.to_string()))?;
        let mut previous = Vec::new();
        for given in &self.previous_data_key {
            let Some((id, path)) = given.split_once('=') else {
                return Err(bad("--previous-data-key", "must be ID=FILE".into()));
            };
            let text = read_file(Path::new(path))?;
            previous.push(
                DataKey::from_hex(id, &text)
                    .map_err(|error| bad("--previous-data-key", error.to_string()))?,
            );
        }
        DataKeys::new(current, previous)
            .map(Arc::new)
            .map_err(|error| bad("--previous-data-key", error.to_string()))
    }

    /// `--retention-days` as a period.
    pub fn retention(&self) -> Result<Duration, ServeArgsError> {
        if !(1..=36_500).contains(&self.retention_days) {
            return Err(ServeArgsError::BadRetention);
        }
        Ok(Duration::from_secs(self.retention_days * 86_400))
    }

    /// A signer for this provider's own calls to the switch (`/notify/*`).
    pub fn signer(&self) -> Result<HopSigner, ServeArgsError> {
        Ok(HopSigner::new(&self.secret()?, self.checked_key_id()?))
    }

    /// The client options for calls to the switch, each bounded by `timeout`.
    pub fn switch_client_options(&self, timeout: Duration) -> OutboundOptions {
        OutboundOptions {
            insecure_http: self.insecure_http,
            ..OutboundOptions::with_timeout(timeout).ca_file(self.switch_ca_file.as_deref())
        }
    }
}
