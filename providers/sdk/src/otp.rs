//! One-time codes: generation, keyed hashing and constant-time checking.
//!
//! A code comes from the operating system's CSPRNG and is stored only as an
//! HMAC-SHA256 under a key kept in the provider's own store (so codes issued
//! before a restart still verify, and a copy of the pending tree alone cannot
//! be brute-forced offline). The hash binds the transaction key, so a code
//! for one transaction never matches another's.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use hmac::{Hmac, Mac};
use manifold_crypto::SecretString;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

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
}

impl OtpKeeper {
    /// Loads the hash key from `<namespace>/meta`, creating it on first use.
    pub fn open(db: &sled::Db, namespace: &str, digits: u32) -> Result<Self, ServiceError> {
        let meta = db.open_tree(format!("{namespace}/meta"))?;
        let mut fresh = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(fresh.as_mut());
        let stored =
            match meta.compare_and_swap(HASH_KEY_NAME, None as Option<&[u8]>, Some(&fresh[..]))? {
                Ok(()) => fresh.to_vec(),
                Err(conflict) => conflict.current.map(|v| v.to_vec()).unwrap_or_default(),
            };
        let mut hash_key = Zeroizing::new([0u8; 32]);
        if stored.len() != 32 {
            return Err(ServiceError::Corrupt(
                "the OTP hash key has the wrong length".into(),
            ));
        }
        hash_key.copy_from_slice(&stored);
        Ok(OtpKeeper {
            hash_key,
            digits: digits.clamp(4, 10),
        })
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

/// How many codes one destination and one app may still be sent.
pub struct SendLimits {
    per_destination: DefaultKeyedRateLimiter<String>,
    per_destination_hourly: u32,
    per_app: DefaultKeyedRateLimiter<String>,
    per_app_hourly: u32,
}

/// The limiters forget keys that have been quiet this long once they hold
/// this many.
const FORGET_AT: usize = 10_000;

impl SendLimits {
    pub fn new(policy: &OtpPolicy) -> SendLimits {
        let hourly = |n: u32| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            Quota::per_hour(n).allow_burst(n)
        };
        SendLimits {
            per_destination: RateLimiter::keyed(hourly(policy.max_sends_per_destination_per_hour)),
            per_destination_hourly: policy.max_sends_per_destination_per_hour.max(1),
            per_app: RateLimiter::keyed(hourly(policy.max_sends_per_app_per_hour)),
            per_app_hourly: policy.max_sends_per_app_per_hour.max(1),
        }
    }

    /// Takes one send to `to` for `app_id`, or says which limit is reached,
    /// in words for the app (the destination already masked as `shown`).
    pub fn take(&self, app_id: &str, to: &str, shown: &str) -> Result<(), String> {
        for limiter in [&self.per_destination, &self.per_app] {
            if limiter.len() >= FORGET_AT {
                limiter.retain_recent();
            }
        }
        if self.per_destination.check_key(&to.to_owned()).is_err() {
            return Err(format!(
                "{} codes were already sent to {shown} in the last hour, its limit",
                self.per_destination_hourly
            ));
        }
        if self.per_app.check_key(&app_id.to_owned()).is_err() {
            return Err(format!(
                "this app was already sent {} codes in the last hour, its limit",
                self.per_app_hourly
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
        let keeper = OtpKeeper::open(&db, "t", 6).unwrap();
        let (code, hash) = keeper.issue(b"app\x1ftx-1");
        assert_eq!(code.expose().len(), 6);
        assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        assert!(keeper.matches(b"app\x1ftx-1", &code, &hash));
        assert!(!keeper.matches(b"app\x1ftx-2", &code, &hash));
        let reopened = OtpKeeper::open(&db, "t", 6).unwrap();
        assert!(reopened.matches(b"app\x1ftx-1", &code, &hash));
        assert!(!hash.contains(code.expose()));
    }

    #[test]
    fn codes_are_not_constant() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let keeper = OtpKeeper::open(&db, "t", 6).unwrap();
        let codes: std::collections::HashSet<String> = (0..50)
            .map(|_| keeper.issue(b"k").0.expose().to_owned())
            .collect();
        // 50 draws from a million values: a repeat-heavy set means a broken generator.
        assert!(codes.len() > 45, "{} distinct codes of 50", codes.len());
    }
}
