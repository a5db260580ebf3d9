//! What the customer's consent leaves behind: consent sessions in flight and
//! each linked customer's tokens, per app and `customer_ref`, sealed at rest.
//!
//! A session begins when an app asks to link a customer (`link_account`)
//! and ends when Joompay's callback brings a code that the token endpoint
//! trades for the customer's tokens, or when the customer refuses, or when
//! its time runs out. The tokens it leaves act for that one customer and
//! only for the app that asked: they are stored under `(app_id,
//! customer_ref)`, so another app naming the same `customer_ref` finds
//! nothing.
//!
//! Every value is sealed under the host's data keys and bound to its own
//! key (a sealed record moved under another customer's key does not open),
//! and flushed to disk before it is relied on: a refresh token lost in a
//! crash would unlink the customer.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use manifold_crypto::{DataKeys, SecretString};
use serde::{Deserialize, Serialize};

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the Joompay link store failed: {0}")]
    Store(#[from] sled::Error),
    /// Never the value: it is a customer's token.
    #[error("a Joompay link record does not open under the configured data keys")]
    Unreadable,
}

/// Where a consent session stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConsentState {
    /// Waiting for the customer at Joompay's consent page.
    Started,
    /// Joompay's callback came; its code is being traded for tokens. A
    /// second callback for the same session is refused from here on.
    Exchanging,
    Linked,
    Failed {
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSession {
    pub app_id: String,
    pub customer_ref: String,
    pub transaction_ref: String,
    pub expires_unix_ms: u64,
    pub state: ConsentState,
}

impl ConsentSession {
    pub fn expired(&self) -> bool {
        now_ms() >= self.expires_unix_ms
    }
}

/// One linked customer's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerTokens {
    pub access_token: SecretString,
    pub access_expires_unix_ms: u64,
    pub refresh_token: SecretString,
}

/// The store: one sled tree, every value sealed.
#[derive(Clone)]
pub struct Links {
    tree: sled::Tree,
    keys: Arc<DataKeys>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("records", &self.tree.len())
            .finish_non_exhaustive()
    }
}

const SESSION: &[u8] = b"consent\0";
const TOKENS: &[u8] = b"tokens\0";

fn session_key(id: &str) -> Vec<u8> {
    [SESSION, id.as_bytes()].concat()
}

/// `app_id` cannot hold a NUL (the switch's ids are visible ASCII), so the
/// pair cannot be read two ways.
fn tokens_key(app_id: &str, customer_ref: &str) -> Vec<u8> {
    [TOKENS, app_id.as_bytes(), b"\0", customer_ref.as_bytes()].concat()
}

impl Links {
    pub fn new(tree: sled::Tree, keys: Arc<DataKeys>) -> Links {
        Links { tree, keys }
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, LinkError> {
        let Some(sealed) = self.tree.get(key)? else {
            return Ok(None);
        };
        let mut plain = self
            .keys
            .open(key, &sealed)
            .map_err(|_| LinkError::Unreadable)?;
        let value = serde_json::from_slice(&plain).map_err(|_| LinkError::Unreadable);
        zeroize::Zeroize::zeroize(&mut plain);
        value.map(Some)
    }

    fn seal<T: Serialize>(&self, key: &[u8], value: &T) -> Vec<u8> {
        let mut plain = serde_json::to_vec(value).unwrap_or_default();
        let sealed = self.keys.seal(key, &plain);
        zeroize::Zeroize::zeroize(&mut plain);
        sealed
    }

    async fn put<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), LinkError> {
        self.tree.insert(key, self.seal(key, value))?;
        self.tree.flush_async().await?;
        Ok(())
    }

    pub async fn start_session(&self, id: &str, session: &ConsentSession) -> Result<(), LinkError> {
        self.put(&session_key(id), session).await
    }

    pub fn session(&self, id: &str) -> Result<Option<ConsentSession>, LinkError> {
        self.get(&session_key(id))
    }

    /// Moves a session from `from` to `to` only if it still stands at
    /// `from`: the single use of a callback.
    pub async fn move_session(
        &self,
        id: &str,
        from: &ConsentSession,
        to: ConsentState,
    ) -> Result<bool, LinkError> {
        let key = session_key(id);
        let Some(current) = self.tree.get(&key)? else {
            return Ok(false);
        };
        let opened: ConsentSession = match self.keys.open(&key, &current) {
            Ok(plain) => serde_json::from_slice(&plain).map_err(|_| LinkError::Unreadable)?,
            Err(_) => return Err(LinkError::Unreadable),
        };
        if &opened != from {
            return Ok(false);
        }
        let next = ConsentSession {
            state: to,
            ..opened
        };
        let swapped = self
            .tree
            .compare_and_swap(&key, Some(current), Some(self.seal(&key, &next)))?
            .is_ok();
        self.tree.flush_async().await?;
        Ok(swapped)
    }

    pub async fn forget_session(&self, id: &str) -> Result<(), LinkError> {
        self.tree.remove(session_key(id))?;
        self.tree.flush_async().await?;
        Ok(())
    }

    pub async fn save_tokens(
        &self,
        app_id: &str,
        customer_ref: &str,
        tokens: &CustomerTokens,
    ) -> Result<(), LinkError> {
        self.put(&tokens_key(app_id, customer_ref), tokens).await
    }

    pub fn tokens(
        &self,
        app_id: &str,
        customer_ref: &str,
    ) -> Result<Option<CustomerTokens>, LinkError> {
        self.get(&tokens_key(app_id, customer_ref))
    }

    /// The customer's link is gone (Joompay refused its refresh token).
    pub async fn unlink(&self, app_id: &str, customer_ref: &str) -> Result<(), LinkError> {
        self.tree.remove(tokens_key(app_id, customer_ref))?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Sessions whose time ran out more than `grace_ms` ago, removed so the
    /// tree does not grow with customers who never came back.
    pub async fn sweep_sessions(&self, grace_ms: u64) -> Result<usize, LinkError> {
        let cutoff = now_ms().saturating_sub(grace_ms);
        let mut removed = 0;
        for entry in self.tree.scan_prefix(SESSION) {
            let (key, sealed) = entry?;
            let stale = match self.keys.open(&key, &sealed) {
                Ok(plain) => serde_json::from_slice::<ConsentSession>(&plain)
                    .map(|session| session.expires_unix_ms < cutoff)
                    .unwrap_or(true),
                // Sealed under a key no longer configured: nobody can use it.
                Err(_) => true,
            };
            if stale {
                self.tree.remove(&key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.tree.flush_async().await?;
        }
        Ok(removed)
    }

    /// Seals every value not sealed under the current data key; how many.
    pub async fn reseal(&self) -> Result<usize, LinkError> {
        let mut resealed = 0;
        for entry in self.tree.iter() {
            let (key, sealed) = entry?;
            if !self.keys.needs_reseal(&sealed) {
                continue;
            }
            let mut plain = self
                .keys
                .open(&key, &sealed)
                .map_err(|_| LinkError::Unreadable)?;
            self.tree.insert(&key, self.keys.seal(&key, &plain))?;
            zeroize::Zeroize::zeroize(&mut plain);
            resealed += 1;
        }
        self.tree.flush_async().await?;
        Ok(resealed)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_crypto::DataKey;

    fn keys() -> Arc<DataKeys> {
        let (key, _) = DataKey::generate("k1").unwrap();
        Arc::new(DataKeys::new(key, vec![]).unwrap())
    }

    #[tokio::test]
    async fn sessions_long_expired_are_swept_and_live_ones_kept() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let links = Links::new(db.open_tree("links").unwrap(), keys());
        let session = |expires_unix_ms| ConsentSession {
            app_id: "app".into(),
            customer_ref: "c".into(),
            transaction_ref: "t".into(),
            expires_unix_ms,
            state: ConsentState::Started,
        };
        links.start_session("old", &session(1)).await.unwrap();
        links
            .start_session("recent", &session(now_ms() - 1_000))
            .await
            .unwrap();
        links
            .start_session("live", &session(now_ms() + 60_000))
            .await
            .unwrap();
        assert_eq!(links.sweep_sessions(60_000).await.unwrap(), 1);
        assert!(links.session("old").unwrap().is_none());
        assert!(
            links.session("recent").unwrap().is_some(),
            "within the grace"
        );
        assert!(links.session("live").unwrap().is_some());
    }

    #[tokio::test]
    async fn tokens_are_sealed_per_app_and_customer_and_a_session_is_used_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let links = Links::new(db.open_tree("links").unwrap(), keys());
        let tokens = CustomerTokens {
            access_token: "access-token-value-1".into(),
            access_expires_unix_ms: 1,
            refresh_token: "refresh-token-value-1".into(),
        };
        links.save_tokens("app-a", "cust-1", &tokens).await.unwrap();
        assert!(links.tokens("app-b", "cust-1").unwrap().is_none());
        let back = links.tokens("app-a", "cust-1").unwrap().unwrap();
        assert_eq!(back.refresh_token.expose(), "refresh-token-value-1");
        for (_, value) in db.open_tree("links").unwrap().iter().flatten() {
            let text = String::from_utf8_lossy(&value);
            assert!(!text.contains("token-value"), "stored in clear");
        }
        // Moved under another customer's key, the record does not open.
        let tree = db.open_tree("links").unwrap();
        let sealed = tree.get(tokens_key("app-a", "cust-1")).unwrap().unwrap();
        tree.insert(tokens_key("app-a", "cust-2"), sealed).unwrap();
        assert!(matches!(
            links.tokens("app-a", "cust-2"),
            Err(LinkError::Unreadable)
        ));

        let session = ConsentSession {
            app_id: "app-a".into(),
            customer_ref: "cust-1".into(),
            transaction_ref: "t-1".into(),
            expires_unix_ms: now_ms() + 60_000,
            state: ConsentState::Started,
        };
        links.start_session("s1", &session).await.unwrap();
        assert!(links
            .move_session("s1", &session, ConsentState::Exchanging)
            .await
            .unwrap());
        assert!(!links
            .move_session("s1", &session, ConsentState::Exchanging)
            .await
            .unwrap());
        assert_eq!(
            links.session("s1").unwrap().unwrap().state,
            ConsentState::Exchanging
        );
    }
}
