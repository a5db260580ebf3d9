//! The switch configuration every benchmark switch runs with.
//!
//! It is TOML text parsed by `manifold_config`, exactly as the `manifold`
//! binary reads its file: two apps, [`QUICK_APP`] (`otp_override = true`) and
//! [`OTP_APP`] (`otp_override = false`), both granted `get_balance` through the
//! one provider `demo`, which is either compiled in or a remote microservice.

use std::path::Path;

use crate::workload::{BenchApp, OTP_APP, PROVIDER, QUICK_APP};

/// Where the switch's `demo` provider lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderMode {
    /// `mode = "in_process"`, `implementation = "demo"`: sharing the switch's
    /// sled database and group commit.
    InProcess,
    /// `mode = "remote"`: the demo provider microservice at this URL.
    Remote(String),
}

/// `[storage] cache_capacity_mb` of every benchmark switch: sled's page
/// cache, written out explicitly so that the report states what the switch
/// read. The switch's default.
pub const STORE_CACHE_MB: u64 = manifold_config::DEFAULT_CACHE_CAPACITY_MB;

/// `[storage] commit_window_us` of every benchmark switch, written out for
/// the same reason. The switch's default.
pub const COMMIT_WINDOW_US: u64 = manifold_config::DEFAULT_COMMIT_WINDOW_US;

/// The switch's PostgreSQL pool in the benchmark, and baseline (p)'s: the
/// configuration's default.
pub const POSTGRES_POOL: usize = manifold_config::DEFAULT_POSTGRES_POOL_SIZE;
/// The secret the switch and the remote demo provider sign their calls with.
pub const HOP_SECRET: &str = "bench-provider-hop-secret-0123456789-abcdef";

/// How long the switch waits for the provider. Generous: a benchmark that
/// overloads the provider must see slow answers, not `Pending` ones.
const PROVIDER_TIMEOUT_MS: u64 = 30_000;

/// The benchmark measures how fast the switch can go, so its limits are
/// set as high as the configuration allows.
const MAX_RATE: u32 = manifold_config::MAX_REQUESTS_PER_SECOND;
const MAX_BURST: u32 = 2 * MAX_RATE;
const MAX_CALLS: u32 = manifold_config::MAX_MAX_CONCURRENT_CALLS;
/// Every code of the OTP flows goes to the demo bank's one holder on
/// record, thousands a second: no hourly send limit may stop them.
const UNLIMITED_SENDS: &str =
    "otp_sends_per_destination_per_hour = 4000000000\notp_sends_per_app_per_hour = 4000000000\n";

/// The demo bank's settings for the benchmark's own provider process: its
/// defaults, with `UNLIMITED_SENDS`.
pub fn demo_settings() -> manifold_demo_provider::DemoSettings {
    let config: manifold_demo_provider::DemoConfig =
        toml::from_str(UNLIMITED_SENDS).expect("the bench's demo settings parse");
    let key = manifold_crypto::DataKey::from_hex(
        "bench",
        &manifold_crypto::SecretString::from(BENCH_DATA_KEY),
    )
    .expect("the bench's data key is valid");
    manifold_demo_provider::DemoSettings {
        // Sealed and kept as the `demo-provider` binary does.
        data_keys: Some(std::sync::Arc::new(
            manifold_crypto::DataKeys::new(key, Vec::new()).expect("one key"),
        )),
        retention: Some(std::time::Duration::from_secs(365 * 86_400)),
        ..manifold_demo_provider::DemoSettings::default()
    }
    .with_config(&config)
    .expect("the bench's demo settings are valid")
}

/// The data key of every benchmark server (a public, fixed key: the bench
/// measures the sealing, not the secrecy).
const BENCH_DATA_KEY: &str = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87";

fn quoted(path: &Path) -> String {
    // TOML basic strings use JSON's escapes for the characters a path can hold.
    serde_json::to_string(&path.display().to_string()).unwrap_or_else(|_| "\"\"".into())
}

fn app_section(app: &BenchApp) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\nrequire_signature = true\n\
         [apps.limits]\nrequests_per_second = {MAX_RATE}\nburst = {MAX_BURST}\n\
         [apps.services.get_balance]\nproviders = [\"{PROVIDER}\"]\notp_override = {otp}\n",
        id = app.id,
        key = app.api_key,
        secret = app.secret,
        otp = app.otp_override,
    )
}

/// The configuration text for a switch keeping its store in `store` and
/// writing OTPs of an in-process provider to `outbox`.
pub fn switch_config_text(store: &Path, outbox: &Path, provider: &ProviderMode) -> String {
    switch_config_on(store, outbox, provider, None)
}

/// [`switch_config_text`] with the store in the PostgreSQL database at
/// `postgres` when given (the in-process provider's own state stays in
/// `store`).
pub fn switch_config_on(
    store: &Path,
    outbox: &Path,
    provider: &ProviderMode,
    postgres: Option<&str>,
) -> String {
    let endpoint = match provider {
        ProviderMode::InProcess => "mode = \"in_process\"\nimplementation = \"demo\"".to_owned(),
        ProviderMode::Remote(url) => {
            format!("mode = \"remote\"\nurl = \"{url}\"\nsecret = \"{HOP_SECRET}\"")
        }
    };
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"{BENCH_DATA_KEY}\"\n[storage]\npath = {store}\ncache_capacity_mb = {STORE_CACHE_MB}\ncommit_window_us = {COMMIT_WINDOW_US}\n{backend}[notifications]\noutbox = {outbox}\n\
         [[providers]]\nname = \"{PROVIDER}\"\n{endpoint}\nservices = [\"get_balance\"]\nread_only = [\"get_balance\"]\n\
         timeout_ms = {PROVIDER_TIMEOUT_MS}\nmax_concurrent_calls = {MAX_CALLS}\n{settings}",
        settings = match provider {
            ProviderMode::InProcess => format!("[providers.settings]\n{UNLIMITED_SENDS}"),
            ProviderMode::Remote(_) => String::new(),
        },
        backend = match postgres {
            Some(url) => format!(
                "backend = \"postgres\"\n[storage.postgres]\nurl = {}\npool_size = {POSTGRES_POOL}\n",
                quoted(Path::new(url))
            ),
            None => String::new(),
        },
        store = quoted(store),
        outbox = quoted(outbox),
    );
    for app in [QUICK_APP, OTP_APP] {
        text.push_str(&app_section(&app));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_config::{ProviderEndpoint, SwitchConfig};

    fn parse(text: &str) -> SwitchConfig {
        SwitchConfig::from_toml(text, Path::new("bench.toml")).expect("valid configuration")
    }

    #[test]
    fn both_provider_modes_parse_into_the_intended_configuration() {
        let dir = Path::new("/tmp/bench dir/\"quoted\"");
        let config = parse(&switch_config_text(
            &dir.join("switch"),
            &dir.join("outbox.jsonl"),
            &ProviderMode::InProcess,
        ));
        assert_eq!(config.storage.path, dir.join("switch"));
        assert_eq!(config.storage.cache_capacity_bytes, STORE_CACHE_MB << 20);
        assert_eq!(
            config.storage.commit_window,
            std::time::Duration::from_micros(COMMIT_WINDOW_US)
        );
        assert!(matches!(
            &config.providers[0].endpoint,
            ProviderEndpoint::InProcess { implementation, .. } if implementation == "demo"
        ));
        let quick = config.app_by_id(QUICK_APP.id).unwrap();
        assert!(quick.services["get_balance"].otp_override);
        let otp = config.app_by_id(OTP_APP.id).unwrap();
        assert!(!otp.services["get_balance"].otp_override);

        let config = parse(&switch_config_text(
            &dir.join("switch"),
            &dir.join("outbox.jsonl"),
            &ProviderMode::Remote("http://127.0.0.1:9".into()),
        ));
        assert!(matches!(
            &config.providers[0].endpoint,
            ProviderEndpoint::Remote(remote) if remote.url.starts_with("http://127.0.0.1:9")
        ));
    }
}
