//! Calling apps: who is asking, and what they may do.
//!
//! An app is recognised by its bearer API key. Keys are looked up by their
//! SHA-256 digest, so the table never holds them in a form a timing
//! difference could leak (the host may configure only the digest,
//! `api_key_sha256`), and each app's `auth.secure` key is derived once at
//! start-up rather than per request. An app may have two keys at once while
//! one replaces the other.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use manifold_config::{ApiKeyDigest, AppConfig};
use manifold_crypto::message_signature::SigningKey;
use manifold_crypto::AppKey;

use crate::limits::AppLimits;

/// An app as the switch uses it: its configuration and its derived key.
#[derive(Debug)]
pub struct App {
    pub config: AppConfig,
    pub key: AppKey,
    /// The key its requests are signed with (RFC 9421), from the same secret.
    pub signing_key: SigningKey,
    /// Its request rate and daily quotas.
    pub limits: AppLimits,
}

impl App {
    pub fn id(&self) -> &str {
        &self.config.id
    }
}

impl App {
    fn new(config: &AppConfig) -> App {
        let key = AppKey::derive(&config.secret);
        App {
            limits: AppLimits::new(&config.limits),
            signing_key: SigningKey::for_app(&key),
            key,
            config: config.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct AppRegistry {
    by_key_digest: HashMap<ApiKeyDigest, Arc<App>>,
}

/// What a reload changed, by app id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

impl AppRegistry {
    pub fn new(apps: &[AppConfig]) -> Self {
        AppRegistry::reusing(apps, &AppRegistry::default()).0
    }

    /// The registry of `apps`, where an app configured exactly as in
    /// `previous` keeps its `App`, and so its rate and quota counts.
    fn reusing(apps: &[AppConfig], previous: &AppRegistry) -> (Self, AppChanges) {
        let before: HashMap<&str, &Arc<App>> = previous
            .by_key_digest
            .values()
            .map(|app| (app.id(), app))
            .collect();
        let mut changes = AppChanges::default();
        let mut by_key_digest = HashMap::new();
        for config in apps {
            let app = match before.get(config.id.as_str()) {
                Some(app) if app.config == *config => {
                    changes.unchanged += 1;
                    Arc::clone(app)
                }
                Some(_) => {
                    changes.changed.push(config.id.clone());
                    Arc::new(App::new(config))
                }
                None => {
                    changes.added.push(config.id.clone());
                    Arc::new(App::new(config))
                }
            };
            for digest in &config.api_keys {
                by_key_digest.insert(*digest, app.clone());
            }
        }
        let now: std::collections::HashSet<&str> = apps.iter().map(|c| c.id.as_str()).collect();
        changes.removed = before
            .keys()
            .filter(|id| !now.contains(**id))
            .map(|id| (*id).to_owned())
            .collect();
        changes.removed.sort();
        (AppRegistry { by_key_digest }, changes)
    }

    /// The app whose key is in an `Authorization: Bearer <key>` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<Arc<App>> {
        let value = authorization?.trim();
        let (scheme, key) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.by_key_digest
            .get(&ApiKeyDigest::of(key.trim()))
            .cloned()
    }
}

/// The apps the switch serves now: replaced whole when the host reloads
/// its configuration, read once per request.
#[derive(Debug)]
pub struct Apps {
    current: RwLock<Arc<AppRegistry>>,
}

impl Apps {
    pub fn new(apps: &[AppConfig]) -> Self {
        Apps {
            current: RwLock::new(Arc::new(AppRegistry::new(apps))),
        }
    }

    fn now(&self) -> Arc<AppRegistry> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`AppRegistry::authenticate`] on the apps of now.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<Arc<App>> {
        self.now().authenticate(authorization)
    }

    /// Serves `apps` from now on. A call already authenticated finishes as
    /// the app it was; an app whose configuration did not change keeps its
    /// rate and quota counts.
    pub fn replace(&self, apps: &[AppConfig]) -> AppChanges {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let (registry, changes) = AppRegistry::reusing(apps, &current);
        *current = Arc::new(registry);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(text: &str) -> Vec<AppConfig> {
        let head = "listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"unused\"\n\
            [[providers]]\nname = \"demo\"\nmode = \"in_process\"\nimplementation = \"demo\"\nservices = [\"get_balance\"]\ntimeout_ms = 5000\n";
        manifold_config::SwitchConfig::from_toml(
            &format!("{head}{text}"),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .apps
    }

    const A: &str = "[[apps]]\nid = \"a\"\napi_key = \"key-of-app-a-0123456789abcdef\"\nsecret = \"secret-of-app-a-0123456789abcdef0123\"\n[apps.services.get_balance]\nproviders = [\"demo\"]\notp_override = true\n";
    const B: &str = "[[apps]]\nid = \"b\"\napi_key = \"key-of-app-b-0123456789abcdef\"\nsecret = \"secret-of-app-b-0123456789abcdef0123\"\n[apps.services.get_balance]\nproviders = [\"demo\"]\notp_override = true\n";

    #[test]
    fn a_reload_keeps_unchanged_apps_and_replaces_the_rest() {
        let registry = Apps::new(&apps(&format!("{A}{B}")));
        let a_before = registry
            .authenticate(Some("Bearer key-of-app-a-0123456789abcdef"))
            .unwrap();
        let b_before = registry
            .authenticate(Some("Bearer key-of-app-b-0123456789abcdef"))
            .unwrap();

        let c = B.replace("\"b\"", "\"c\"").replace("app-b", "app-c");
        let b_changed = B.replace("key-of-app-b", "new-key-of-app-b");
        let changes = registry.replace(&apps(&format!("{A}{b_changed}{c}")));
        assert_eq!(
            changes,
            AppChanges {
                added: vec!["c".into()],
                changed: vec!["b".into()],
                removed: vec![],
                unchanged: 1,
            }
        );
        let a_after = registry
            .authenticate(Some("Bearer key-of-app-a-0123456789abcdef"))
            .unwrap();
        assert!(Arc::ptr_eq(&a_before, &a_after), "a keeps its counts");
        assert!(registry
            .authenticate(Some("Bearer key-of-app-b-0123456789abcdef"))
            .is_none());
        let b_after = registry
            .authenticate(Some("Bearer new-key-of-app-b-0123456789abcdef"))
            .unwrap();
        assert!(!Arc::ptr_eq(&b_before, &b_after));

        let changes = registry.replace(&apps(A));
        assert_eq!(changes.removed, ["b", "c"]);
        assert!(registry
            .authenticate(Some("Bearer key-of-app-c-0123456789abcdef"))
            .is_none());
    }
}
