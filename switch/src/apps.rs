//! Calling apps: who is asking, and what they may do.
//!
//! An app is recognised by its bearer API key. Keys are looked up by their
//! SHA-256 digest, so the table never holds them in a form a timing
//! difference could leak (the host may configure only the digest,
//! `api_key_sha256`), and each app's `auth.secure` key is derived once at
//! start-up rather than per request. An app may have two keys at once while
//! one replaces the other.

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Debug, Default)]
pub struct AppRegistry {
    by_key_digest: HashMap<ApiKeyDigest, Arc<App>>,
}

impl AppRegistry {
    pub fn new(apps: &[AppConfig]) -> Self {
        let by_key_digest = apps
            .iter()
            .flat_map(|config| {
                let key = AppKey::derive(&config.secret);
                let app = Arc::new(App {
                    limits: AppLimits::new(&config.limits),
                    signing_key: SigningKey::for_app(&key),
                    key,
                    config: config.clone(),
                });
                config
                    .api_keys
                    .iter()
                    .map(move |digest| (*digest, app.clone()))
            })
            .collect();
        AppRegistry { by_key_digest }
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
