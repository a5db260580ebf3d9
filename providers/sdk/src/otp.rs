//! One-time codes: generation, keyed hashing and constant-time checking.
//!
//! A code comes from the operating system's CSPRNG and is stored only as an
//! HMAC-SHA256 under a key kept in the provider's own store (so codes issued
//! before a restart still verify, and a copy of the pending tree alone cannot
//! be brute-forced offline). The hash binds the transaction key, so a code
//! for one transaction never matches another's. With a data key the hash key
//! itself is stored sealed.

use std::sync::Arc;
use std::time::Duration;

use manifold_provider::hourly::{destination_key, HourlyLimit};
use manifold_provider::notify::{mask_destination, Channel};

use hmac::{Hmac, Mac};
use manifold_crypto::{DataKeys, SecretString};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::state::Tree;
use crate::ServiceError;

const HASH_KEY_NAME: &str = "otp-hash-key";

/// How OTPs behave. The defaults are what a bank would accept.
#[derive(Debug, Clone)]
pub struct OtpPolicy {
    /// 4 to 10.
    pub digits: u32,
    /// How long a code (or a prompt) can be answered.
    pub ttl: Duration,
    /// Wrong codes allowed before the transaction fails.
    pub attempts: u8,
    /// The shortest time between two sends of a code to one transaction.
    pub resend_interval: Duration,
    /// Sends per transaction, the first included.
    pub max_sends: u8,
    /// Codes sent to one phone number or e-mail address in an hour, for
    /// every transaction and app together: what stops a flood of SMS to one
    /// number (GCRA: the full number at once, then one per hour / n).
    pub max_sends_per_destination_per_hour: u32,
    /// Codes sent for one app in an hour, to every destination together:
    /// what stops an app from using the provider to text anybody.
    pub max_sends_per_app_per_hour: u32,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        OtpPolicy {
            digits: 6,
            ttl: Duration::from_secs(300),
            attempts: 3,
            resend_interval: Duration::from_secs(30),
            max_sends: 3,
            max_sends_per_destination_per_hour: 10,
            max_sends_per_app_per_hour: 10_000,
        }
    }
}

/// Issues and checks codes under one provider's hash key.
pub struct OtpKeeper {
    hash_key: Zeroizing<[u8; 32]>,
    digits: u32,
    /// Where the key is kept, to seal it again under a new data key.
    meta: Tree,
    keys: Option<Arc<DataKeys>>,
}

/// The context the hash key is sealed for: its tree and name.
fn hash_key_context(meta: &Tree) -> Vec<u8> {
    [&meta.name()[..], b"\0", HASH_KEY_NAME.as_bytes()].concat()
}

/// A fresh hash key, and how it is stored (sealed with `keys`).
fn fresh_hash_key(context: &[u8], keys: Option<&Arc<DataKeys>>) -> (Zeroizing<[u8; 32]>, Vec<u8>) {
    let mut fresh = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(fresh.as_mut());
    let stored = match keys {
        Some(keys) => keys.seal(context, &fresh[..]),
        None => fresh.to_vec(),
    };
    (fresh, stored)
}

/// The hash key a store holds (`stored`), opened.
fn stored_hash_key(
    stored: &[u8],
    context: &[u8],
    keys: Option<&Arc<DataKeys>>,
) -> Result<Zeroizing<[u8; 32]>, ServiceError> {
    let opened = match (stored.len(), keys) {
        // In clear: written before the key (a sealed one is longer).
        (32, _) => Zeroizing::new(stored.to_vec()),
        (_, Some(keys)) => Zeroizing::new(
            keys.open(context, stored)
                .map_err(|error| ServiceError::Sealed(format!("the OTP hash key: {error}")))?,
        ),
        (_, None) => {
            return Err(ServiceError::Sealed(
                "the OTP hash key is sealed, and no data key was given".into(),
            ))
        }
    };
    let mut hash_key = Zeroizing::new([0u8; 32]);
    if opened.len() != 32 {
        return Err(ServiceError::Corrupt(
            "the OTP hash key has the wrong length".into(),
        ));
    }
    hash_key.copy_from_slice(&opened);
    Ok(hash_key)
}

impl OtpKeeper {
    /// Loads the hash key from `<namespace>/meta` in sled, creating it on
    /// first use. With `keys`, the hash key is a secret at rest like the
    /// codes' data: it is stored sealed (a key stored before in clear,
    /// exactly 32 bytes, is read and sealed in place).
    pub fn open(
        db: &sled::Db,
        namespace: &str,
        digits: u32,
        keys: Option<&Arc<DataKeys>>,
    ) -> Result<Self, ServiceError> {
        let meta = db.open_tree(format!("{namespace}/meta"))?;
        let tree = Tree::Sled(meta.clone());
        let context = hash_key_context(&tree);
        let (fresh, stored_fresh) = fresh_hash_key(&context, keys);
        let hash_key = match meta.compare_and_swap(
            HASH_KEY_NAME,
            None as Option<&[u8]>,
            Some(stored_fresh),
        )? {
            Ok(()) => {
                // On disk before any code is hashed under it: written
                // directly, not through a log a later commit would flush.
                meta.flush()?;
                fresh
            }
            Err(conflict) => stored_hash_key(
                conflict.current.as_deref().unwrap_or_default(),
                &context,
                keys,
            )?,
        };
        let keeper = OtpKeeper {
            hash_key,
            digits: digits.clamp(4, 10),
            meta: tree,
            keys: keys.cloned(),
        };
        let current = meta.get(HASH_KEY_NAME)?.unwrap_or_default();
        if let Some(sealed) = keeper.resealed(&current) {
            meta.insert(HASH_KEY_NAME, sealed)?;
            meta.flush()?;
        }
        Ok(keeper)
    }

    /// As [`OtpKeeper::open`], in a meta tree of the shared state: every
    /// instance of the provider takes the key the first one stored.
    pub(crate) async fn open_shared(
        meta: &Tree,
        digits: u32,
        keys: Option<&Arc<DataKeys>>,
    ) -> Result<Self, ServiceError> {
        let context = hash_key_context(meta);
        let (fresh, stored_fresh) = fresh_hash_key(&context, keys);
        let (stored, ours) = meta
            .insert_if_absent(HASH_KEY_NAME.as_bytes(), stored_fresh)
            .await?;
        let hash_key = match ours {
            true => fresh,
            false => stored_hash_key(&stored, &context, keys)?,
        };
        let keeper = OtpKeeper {
            hash_key,
            digits: digits.clamp(4, 10),
            meta: meta.clone(),
            keys: keys.cloned(),
        };
        keeper.reseal().await?;
        Ok(keeper)
    }

    /// The hash key sealed under the current data key, if `current` (what
    /// the store holds) is not.
    fn resealed(&self, current: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        keys.needs_reseal(current)
            .then(|| keys.seal(&hash_key_context(&self.meta), &self.hash_key[..]))
    }

    /// Stores the hash key sealed under the current data key if it is not
    /// already, durably; returns 1 if it wrote it.
    pub async fn reseal(&self) -> Result<usize, ServiceError> {
        let current = self
            .meta
            .get(HASH_KEY_NAME.as_bytes())
            .await?
            .unwrap_or_default();
        let Some(sealed) = self.resealed(&current) else {
            return Ok(0);
        };
        self.meta.insert(HASH_KEY_NAME.as_bytes(), sealed).await?;
        self.meta.flush()?;
        Ok(1)
    }

    /// A fresh code and the hash to store for `key`.
    pub fn issue(&self, key: &[u8]) -> (SecretString, String) {
        let code = SecretString::new(format!(
            "{:0width$}",
            OsRng.gen_range(0..10u64.pow(self.digits)),
            width = self.digits as usize
        ));
        let hash = self.hash(key, code.expose());
        (code, hash)
    }

    /// Whether `code` is the one whose hash is `stored_hash`, in constant time.
    pub fn matches(&self, key: &[u8], code: &SecretString, stored_hash: &str) -> bool {
        let presented = self.hash(key, code.expose());
        bool::from(presented.as_bytes().ct_eq(stored_hash.as_bytes()))
    }

    fn hash(&self, key: &[u8], code: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.hash_key.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(key);
        mac.update(b"\x1f");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// How many codes one destination and one app may still be sent, in this
/// provider process (GCRA: the hour's number at once, then one every
/// hour / n).
pub struct SendLimits {
    per_destination: HourlyLimit,
    per_app: HourlyLimit,
}

impl SendLimits {
    pub fn new(policy: &OtpPolicy) -> SendLimits {
        SendLimits {
            per_destination: HourlyLimit::new(policy.max_sends_per_destination_per_hour),
            per_app: HourlyLimit::new(policy.max_sends_per_app_per_hour),
        }
    }

    /// Takes one send to `to` for `app_id`, or says which limit is reached,
    /// in words for the app (the destination masked). The app's own limit
    /// comes first, so an app over it spends nobody's allowance.
    pub fn take(&self, app_id: &str, channel: Channel, to: &str) -> Result<(), String> {
        if self.per_app.take(app_id).is_err() {
            return Err(format!(
                "this app's limit of {} codes an hour is reached",
                self.per_app.per_hour()
            ));
        }
        if self
            .per_destination
            .take(&destination_key(channel, to))
            .is_err()
        {
            return Err(format!(
                "the limit of {} codes an hour to {} is reached",
                self.per_destination.per_hour(),
                mask_destination(channel, to)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_verify_only_for_their_transaction_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let keeper = OtpKeeper::open(&db, "t", 6, None).unwrap();
        let (code, hash) = keeper.issue(b"app\x1ftx-1");
        assert_eq!(code.expose().len(), 6);
        assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        assert!(keeper.matches(b"app\x1ftx-1", &code, &hash));
        assert!(!keeper.matches(b"app\x1ftx-2", &code, &hash));
        let reopened = OtpKeeper::open(&db, "t", 6, None).unwrap();
        assert!(reopened.matches(b"app\x1ftx-1", &code, &hash));
        assert!(!hash.contains(code.expose()));
    }

    #[test]
    fn codes_are_not_constant() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let keeper = OtpKeeper::open(&db, "t", 6, None).unwrap();
        let codes: std::collections::HashSet<String> = (0..50)
            .map(|_| keeper.issue(b"k").0.expose().to_owned())
            .collect();
        // 50 draws from a million values: a repeat-heavy set means a broken generator.
        assert!(codes.len() > 45, "{} distinct codes of 50", codes.len());
    }
}
