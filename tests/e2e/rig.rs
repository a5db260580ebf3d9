//! A switch with the demo provider, either compiled in or as its own process,
//! so every flow runs against both and must give the same answers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use manifold_demo_provider::{DemoProvider, DemoSettings};
use manifold_e2e::*;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{GroupCommit, Provider};
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
    _dir: TempDir,
}

impl Rig {
    pub async fn start(mode: Mode) -> Rig {
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
                    Arc::new(OutboxNotifier::new(outbox.clone())),
                    DemoSettings::default(),
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
                let process = ProviderProcess::start(&provider_dir, &outbox);
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
        Rig {
            switch,
            outbox,
            provider_dir,
            remote,
            local,
            _dir: dir,
        }
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
            return local.inner.pending_count();
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
