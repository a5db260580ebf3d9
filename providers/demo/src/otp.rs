//! One-time codes for confirming a transaction.
//!
//! A code comes from the operating system's CSPRNG, is stored only as an
//! HMAC-SHA256 under a key the provider keeps in its store, and is compared in
//! constant time. Each pending code allows a bounded number of attempts and
//! expires; whatever happens, the caller erases the pending entry once the
//! transaction is final.

use hmac::{Hmac, Mac};
use manifold_crypto::SecretString;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Deferred, DemoError};

const OTP_DIGITS: u32 = 6;
const HASH_KEY_NAME: &str = "otp-hash-key";

/// A transaction waiting for its OTP, with the work it will complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOtp {
    pub request_type: String,
    /// Where the code went, masked: shown back to the customer.
    pub destination: String,
    pub deferred: Deferred,
    pub attempts_left: u8,
    pub expires_at_ms: u64,
    otp_hash: String,
}

impl PendingOtp {
    pub fn new(
        request_type: String,
        destination: String,
        deferred: Deferred,
        attempts: u8,
        expires_at_ms: u64,
    ) -> Self {
        PendingOtp {
            request_type,
            destination,
            deferred,
            attempts_left: attempts.max(1),
            expires_at_ms,
            otp_hash: String::new(),
        }
    }
}

pub enum OtpCheck {
    /// Nothing is pending under this key.
    Unknown,
    Valid(PendingOtp),
    Wrong {
        attempts_left: u8,
        pending: PendingOtp,
    },
    /// That was the last attempt; the pending entry is gone.
    Exhausted(PendingOtp),
    /// The code expired; the pending entry is gone.
    Expired(PendingOtp),
}

pub struct OtpVault {
    pending: sled::Tree,
    hash_key: [u8; 32],
}

fn corrupt(error: impl std::fmt::Display) -> DemoError {
    DemoError::Corrupt(error.to_string())
}

impl OtpVault {
    pub fn open(db: &sled::Db) -> Result<Self, DemoError> {
        let meta = db.open_tree("demo/meta")?;
        let mut fresh = [0u8; 32];
        OsRng.fill_bytes(&mut fresh);
        // Created once and kept, so codes issued before a restart still verify.
        let stored =
            match meta.compare_and_swap(HASH_KEY_NAME, None as Option<&[u8]>, Some(&fresh[..]))? {
                Ok(()) => fresh.to_vec(),
                Err(conflict) => conflict.current.map(|v| v.to_vec()).unwrap_or_default(),
            };
        let hash_key: [u8; 32] = stored
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("OTP hash key has the wrong length"))?;
        Ok(OtpVault {
            pending: db.open_tree("demo/pending")?,
            hash_key,
        })
    }

    fn hash(&self, key: &[u8], code: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        // Binding the transaction key stops a code for one transaction from
        // matching another's hash.
        mac.update(key);
        mac.update(b"\x1f");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Generates a fresh code for `key`, stores `pending` with its hash and
    /// returns the code, which only the notifier may see.
    pub fn issue(
        &self,
        key: &[u8],
        mut pending: PendingOtp,
    ) -> Result<(SecretString, PendingOtp), DemoError> {
        let code = format!(
            "{:0width$}",
            OsRng.gen_range(0..10u32.pow(OTP_DIGITS)),
            width = OTP_DIGITS as usize
        );
        pending.otp_hash = self.hash(key, &code);
        self.pending
            .insert(key, serde_json::to_vec(&pending).map_err(corrupt)?)?;
        Ok((SecretString::new(code), pending))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<PendingOtp>, DemoError> {
        match self.pending.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    pub fn erase(&self, key: &[u8]) -> Result<(), DemoError> {
        self.pending.remove(key)?;
        Ok(())
    }

    /// Checks `code`, spending one attempt when it is wrong. Concurrent checks
    /// cannot both spend the same attempt: every change is a compare-and-swap.
    pub fn check(
        &self,
        key: &[u8],
        code: &SecretString,
        now_ms: u64,
    ) -> Result<OtpCheck, DemoError> {
        loop {
            let Some(current) = self.pending.get(key)? else {
                return Ok(OtpCheck::Unknown);
            };
            let mut pending: PendingOtp = serde_json::from_slice(&current).map_err(corrupt)?;
            if now_ms >= pending.expires_at_ms {
                if self
                    .pending
                    .compare_and_swap(key, Some(&current), None as Option<&[u8]>)?
                    .is_ok()
                {
                    return Ok(OtpCheck::Expired(pending));
                }
                continue;
            }
            let presented = self.hash(key, code.expose());
            if bool::from(presented.as_bytes().ct_eq(pending.otp_hash.as_bytes())) {
                return Ok(OtpCheck::Valid(pending));
            }
            pending.attempts_left = pending.attempts_left.saturating_sub(1);
            let (replacement, result) = if pending.attempts_left == 0 {
                (None, OtpCheck::Exhausted(pending))
            } else {
                let bytes = serde_json::to_vec(&pending).map_err(corrupt)?;
                let attempts_left = pending.attempts_left;
                (
                    Some(bytes),
                    OtpCheck::Wrong {
                        attempts_left,
                        pending,
                    },
                )
            };
            if self
                .pending
                .compare_and_swap(key, Some(&current), replacement)?
                .is_ok()
            {
                return Ok(result);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}
