//! A switch with the demo provider, either compiled in or as its own process,
//! so every flow runs against both and must give the same answers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use manifold_demo_provider::{DemoProvider, DemoSettings};
use manifold_e2e::*;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{GroupCommit, Provider};
use manifold_provider_sdk::Sweeper;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    InProcess,
    Remote,
}

pub const MODES: [Mode; 2] = [Mode::InProcess, Mode::Remote];

pub struct Rig {
    pub switch: InProcessSwitch,
    pub outbox: PathBuf,
    pub provider_dir: PathBuf,
    remote: Option<ProviderProcess>,
    local: Option<Arc<CountingProvider<DemoProvider>>>,
    settings: DemoSettings,
    _sweeper: Option<Sweeper>,
    _dir: TempDir,
}

/// The `demo-provider` flags that give a separate process `settings`.
fn provider_flags(settings: &DemoSettings) -> Vec<String> {
    [
        ("--opening-balance", settings.opening_balance),
        ("--step-up-amount", settings.step_up_amount),
        ("--otp-ttl-secs", settings.otp.ttl.as_secs()),
        ("--otp-attempts", u64::from(settings.otp.attempts)),
        (
            "--resend-interval-secs",
            settings.otp.resend_interval.as_secs(),
        ),
        (
            "--sweep-interval-ms",
            settings.sweep_interval.as_millis() as u64,
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
    .collect()
}

impl Rig {
    pub async fn start(mode: Mode) -> Rig {
        Rig::start_with(mode, DemoSettings::default()).await
    }

    /// A rig whose demo provider runs with `settings`, in either mode.
    pub async fn start_with(mode: Mode, settings: DemoSettings) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox.jsonl");
        let provider_dir = dir.path().join("provider");
        let mut implementations: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        let (spec, remote, local) = match mode {
            Mode::InProcess => {
                let db = sled::open(&provider_dir).unwrap();
                let demo = manifold_demo_provider::open(
                    &db,
                    GroupCommit::start(db.clone()).unwrap(),
                    // Where the `demo-provider` binary keeps it by default.
                    &provider_dir.join("upstream-ledger"),
                    Arc::new(OutboxNotifier::new(outbox.clone())),
                    settings.clone(),
                )
                .unwrap();
                let counting = Arc::new(CountingProvider::new(Arc::new(demo)));
                implementations.insert("counted-demo".into(), counting.clone());
                (
                    ProviderSpec::InProcess {
                        name: "demo",
                        implementation: "counted-demo",
                    },
                    None,
                    Some(counting),
                )
            }
            Mode::Remote => {
                let process = ProviderProcess::start_with(
                    &provider_dir,
                    &outbox,
                    "127.0.0.1:0",
                    &provider_flags(&settings),
                );
                (
                    ProviderSpec::Remote {
                        name: "demo",
                        url: process.url(),
                    },
                    Some(process),
                    None,
                )
            }
        };
        let config = parse_config(&config_text(dir.path(), &[spec], 5_000));
        let switch = InProcessSwitch::start(&config, implementations).await;
        // A remote provider sweeps in its own process; a local one here.
        let sweeper = local
            .as_ref()
            .map(|counting| Sweeper::start(counting.inner.clone()));
        Rig {
            switch,
            outbox,
            provider_dir,
            remote,
            local,
            settings,
            _sweeper: sweeper,
            _dir: dir,
        }
    }

    /// Kills a remote provider process with SIGKILL and starts it again on
    /// the same address and data directory.
    pub fn restart_provider(&mut self) {
        let old = self.remote.take().expect("only a remote provider restarts");
        let listen = old.addr.to_string();
        old.kill();
        self.remote = Some(ProviderProcess::start_with(
            &self.provider_dir,
            &self.outbox,
            &listen,
            &provider_flags(&self.settings),
        ));
    }

    /// The base URL of the remote provider process.
    pub fn remote_url(&self) -> String {
        self.remote.as_ref().expect("a remote provider").url()
    }

    pub fn app(&self, app: (&str, &str, &str)) -> AppClient {
        AppClient::new(&self.switch.url(), app, "demo")
    }

    /// How many `/transact` calls reached the provider.
    pub async fn provider_transact_calls(&self) -> u64 {
        match (&self.local, &self.remote) {
            (Some(local), _) => local.transact_count(),
            (_, Some(remote)) => remote.stats().await["transact"].as_u64().unwrap(),
            _ => unreachable!(),
        }
    }

    /// Pending-OTP entries the provider holds; stops a remote provider to read its store.
    pub async fn provider_pending(mut self) -> usize {
        if let Some(local) = &self.local {
            return local.inner.pending_count().await.unwrap();
        }
        self.remote.take().unwrap().kill();
        pending_in(&self.provider_dir)
    }

    /// A bank balance as the provider's ledger has it (via get_balance with
    /// OTP skipped).
    pub async fn balance(&self, account: &str, tag: &str) -> u64 {
        let reply = self
            .app(QUICK_APP)
            .get_balance(&format!("bal-{tag}"), &format!("bal-{tag}"), account)
            .await;
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
        reply.body["data"]["provider_response"]["avialable_balance"]
            .as_u64()
            .unwrap()
    }
}
