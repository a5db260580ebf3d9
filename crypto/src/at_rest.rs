//! Customer data at rest: values sealed under the host's data key.
//!
//! The switch's records and a provider's pending and final state hold what a
//! copy of the data directory must not reveal: account and phone numbers,
//! balances, the upstream's answers. Each such value is sealed before it is
//! written (to sled or to a journal) and opened when it is read, under a
//! [`DataKey`] the host keeps outside the data directory.
//!
//! **Cipher.** XAES-256-GCM (C2SP, <https://c2sp.org/XAES-256-GCM>):
//! AES-256-GCM under a key derived per message from the data key and a
//! random 192-bit nonce (NIST SP 800-108r1 counter-mode KDF with CMAC-AES-256,
//! two blocks). Plain AES-256-GCM with random 96-bit nonces allows about 2³²
//! messages per key before a repeated nonce becomes a real risk, which a busy
//! switch rewriting records would reach within the life of one key; XAES
//! lifts that bound without a counter to keep across restarts. The derivation
//! is RustCrypto's `cmac` and the encryption `aes-gcm`; the tests check both
//! together against C2SP's own vectors.
//!
//! **Layout** of a sealed value:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | `0xE5`, which no clear value of ours starts with (JSON starts with `{`, the switch's records with their version byte, `0x01` or `0x02`) |
//! | 1 | layout version, `0x01` |
//! | 1 | length *n* of the key id (1–64) |
//! | *n* | the key id, ASCII |
//! | 24 | the nonce |
//! | rest | ciphertext and 16-byte tag |
//!
//! The associated data is the header (the first 3 + *n* bytes) followed by
//! the caller's *context*, which names where the value lives (its tree and
//! key): a value copied onto another record's key, or relabelled with another
//! key id, does not open.
//!
//! **Rotation.** [`DataKeys`] holds the current key, which seals, and any
//! previous keys, which only open. A value written again is sealed under the
//! current key (lazy re-encryption); [`DataKeys::needs_reseal`] tells a
//! command that rewrites everything which values are still under an old key.

use std::fmt;

use aes::Aes256;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cmac::{Cmac, Mac};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::SecretString;

/// The first byte of every sealed value.
pub const SEALED_MAGIC: u8 = 0xE5;
const LAYOUT_VERSION: u8 = 0x01;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a data key or a sealed value was refused. Messages name key ids (which
/// are not secret) and never bytes of a key or of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the messages say it
pub enum AtRestError {
    #[error(
        "a data key must be 64 hexadecimal digits (32 bytes), as `openssl rand -hex 32` prints"
    )]
    MalformedKey,
    #[error("a data key id must be 1 to 64 of the characters A-Z a-z 0-9 . _ -")]
    MalformedKeyId,
    #[error("the data key id `{0}` is given twice")]
    DuplicateKeyId(String),
    #[error("the value is sealed under the data key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the sealed value is truncated or not in a layout this build reads")]
    Malformed,
    #[error("the sealed value does not open: it was damaged, moved to another record, or sealed under another key with the same id")]
    Rejected,
}

/// One data key: 32 bytes and the id sealed values name it by.
pub struct DataKey {
    id: String,
    /// CMAC keyed with the data key, cloned per seal (its subkeys are
    /// computed once); the key itself is not kept. AES zeroizes its round
    /// keys on drop, and CMAC (feature `zeroize`) its state.
    kdf: Cmac<Aes256>,
}

impl DataKey {
    /// A key from its hexadecimal text (surrounding white space ignored).
    pub fn from_hex(id: &str, text: &SecretString) -> Result<DataKey, AtRestError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.expose().trim(), &mut key[..])
            .map_err(|_| AtRestError::MalformedKey)?;
        DataKey::from_bytes(id, key)
    }

    /// A fresh key from the operating system's CSPRNG, with its hexadecimal
    /// text for the host to store.
    pub fn generate(id: &str) -> Result<(DataKey, SecretString), AtRestError> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let text = SecretString::new(hex::encode(&key[..]));
        Ok((DataKey::from_bytes(id, key)?, text))
    }

    fn from_bytes(id: &str, key: Zeroizing<[u8; 32]>) -> Result<DataKey, AtRestError> {
        check_key_id(id)?;
        let kdf = <Cmac<Aes256> as KeyInit>::new_from_slice(&key[..])
            .map_err(|_| AtRestError::MalformedKey)?;
        Ok(DataKey {
            id: id.to_owned(),
            kdf,
        })
    }

    /// The id sealed values name this key by.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// XAES-256-GCM's per-message key: CMAC-AES-256 of two counter blocks
    /// `[0, i, 'X', 0] || nonce[..12]`.
    fn message_cipher(&self, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
        let mut derived = Zeroizing::new([0u8; 32]);
        for (i, half) in derived.chunks_exact_mut(16).enumerate() {
            let mut block = [0u8; 16];
            block[..4].copy_from_slice(&[0, i as u8 + 1, b'X', 0]);
            block[4..].copy_from_slice(&nonce[..12]);
            let mut mac = self.kdf.clone();
            mac.update(&block);
            half.copy_from_slice(&mac.finalize().into_bytes());
        }
        Aes256Gcm::new_from_slice(&derived[..]).expect("32 bytes is an AES-256 key")
    }

    fn encrypt(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.message_cipher(nonce)
            .encrypt(
                Nonce::from_slice(&nonce[12..]),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // aes-gcm fails only past 64 GiB of plaintext.
            .expect("a record is far below AES-GCM's length limit")
    }

    fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, AtRestError> {
        self.message_cipher(nonce)
            .decrypt(
                Nonce::from_slice(&nonce[12..]),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| AtRestError::Rejected)
    }
}

/// Prints the id, never the key.
impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

fn check_key_id(id: &str) -> Result<(), AtRestError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN || !id.chars().all(allowed) {
        return Err(AtRestError::MalformedKeyId);
    }
    Ok(())
}

/// The host's data keys: the current one seals, every one opens.
#[derive(Debug)]
pub struct DataKeys {
    current: DataKey,
    previous: Vec<DataKey>,
}

impl DataKeys {
    /// `current` seals from now on; `previous` keys open what they sealed.
    pub fn new(current: DataKey, previous: Vec<DataKey>) -> Result<DataKeys, AtRestError> {
        let mut ids = vec![current.id.as_str()];
        for key in &previous {
            if ids.contains(&key.id.as_str()) {
                return Err(AtRestError::DuplicateKeyId(key.id.clone()));
            }
            ids.push(&key.id);
        }
        Ok(DataKeys { current, previous })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// The ids of every key that opens, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|key| key.id.as_str())
    }

    fn key(&self, id: &str) -> Option<&DataKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
    }

    /// `plaintext` sealed under the current key, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // rand's thread-local CSPRNG (ChaCha, seeded and reseeded from the
        // OS): every stored record is sealed on the request path, and asking
        // the kernel each time was a system call per record. Keys still come
        // from the OS directly.
        rand::thread_rng().fill_bytes(&mut nonce);
        self.seal_with_nonce(context, plaintext, &nonce)
    }

    fn seal_with_nonce(
        &self,
        context: &[u8],
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Vec<u8> {
        let key = &self.current;
        let header = header(&key.id);
        let mut aad = Vec::with_capacity(header.len() + context.len());
        aad.extend_from_slice(&header);
        aad.extend_from_slice(context);
        let ciphertext = key.encrypt(nonce, &aad, plaintext);
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value [`DataKeys::seal`] made for the same `context`, under
    /// whichever configured key its header names.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let parsed = Sealed::parse(sealed)?;
        let key = self
            .key(parsed.key_id)
            .ok_or_else(|| AtRestError::UnknownKey(parsed.key_id.to_owned()))?;
        let mut aad = Vec::with_capacity(parsed.header.len() + context.len());
        aad.extend_from_slice(parsed.header);
        aad.extend_from_slice(context);
        key.decrypt(parsed.nonce, &aad, parsed.ciphertext)
    }

    /// Whether `value` is sealed under a key other than the current one (a
    /// value in clear counts too): what a re-sealing pass rewrites.
    pub fn needs_reseal(&self, value: &[u8]) -> bool {
        sealed_key_id(value) != Some(self.current_id())
    }
}

/// Whether `value` is in the sealed layout (it may still fail to open).
pub fn is_sealed(value: &[u8]) -> bool {
    value.first() == Some(&SEALED_MAGIC)
}

/// The id of the key `value` is sealed under, if it is sealed and well formed.
pub fn sealed_key_id(value: &[u8]) -> Option<&str> {
    Sealed::parse(value).ok().map(|sealed| sealed.key_id)
}

/// The ids of the data keys a store's values may be sealed under, as the
/// store keeps them (in clear: an id is not secret), so that opening it
/// without one of them is refused at once, naming it, rather than value by
/// value. The switch's store and every provider's state keep one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedKeyIds(Vec<String>);

/// Why a store's recorded key ids refuse the keys it was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIdsRefusal {
    /// Values are sealed, and no key was given at all.
    NoKeyGiven {
        /// The ids the store records.
        recorded: Vec<String>,
    },
    /// Values are sealed under keys that were not given.
    Missing {
        /// The recorded ids not given.
        missing: Vec<String>,
        /// The ids given.
        given: Vec<String>,
    },
}

impl RecordedKeyIds {
    /// The ids as stored (comma-separated), or none.
    pub fn parse(stored: Option<&[u8]>) -> RecordedKeyIds {
        RecordedKeyIds(
            stored
                .map(|ids| {
                    String::from_utf8_lossy(ids)
                        .split(',')
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Only the current key's id: what to store after a reseal.
    pub fn current_only(keys: &DataKeys) -> RecordedKeyIds {
        RecordedKeyIds(vec![keys.current_id().to_owned()])
    }

    /// The ids as the store keeps them.
    pub fn encode(&self) -> Vec<u8> {
        self.0.join(",").into_bytes()
    }

    /// Checks the ids against `keys` (the keys a store was opened with):
    /// refused if a recorded one is not given; otherwise the ids to store
    /// when the current key is new to them (store them before sealing
    /// anything under it), or `None` when nothing changes. A store that
    /// records none yet (written before it kept them) records every key
    /// given: values may be sealed under any of them.
    pub fn check(&self, keys: Option<&DataKeys>) -> Result<Option<RecordedKeyIds>, KeyIdsRefusal> {
        let Some(keys) = keys else {
            return match self.0.is_empty() {
                true => Ok(None),
                false => Err(KeyIdsRefusal::NoKeyGiven {
                    recorded: self.0.clone(),
                }),
            };
        };
        let missing: Vec<String> = self
            .0
            .iter()
            .filter(|id| !keys.ids().any(|given| given == id.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(KeyIdsRefusal::Missing {
                missing,
                given: keys.ids().map(str::to_owned).collect(),
            });
        }
        if self.0.is_empty() {
            return Ok(Some(RecordedKeyIds(
                keys.ids().map(str::to_owned).collect(),
            )));
        }
        if self.0.iter().any(|id| id == keys.current_id()) {
            return Ok(None);
        }
        let mut ids = self.0.clone();
        ids.push(keys.current_id().to_owned());
        Ok(Some(RecordedKeyIds(ids)))
    }
}

/// Key ids for a message: `` `a`, `b` ``.
pub fn quoted_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn header(key_id: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(3 + key_id.len());
    header.extend_from_slice(&[SEALED_MAGIC, LAYOUT_VERSION, key_id.len() as u8]);
    header.extend_from_slice(key_id.as_bytes());
    header
}

/// A sealed value taken apart.
struct Sealed<'a> {
    header: &'a [u8],
    key_id: &'a str,
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

impl<'a> Sealed<'a> {
    fn parse(value: &'a [u8]) -> Result<Sealed<'a>, AtRestError> {
        let [magic, version, id_len, ..] = value else {
            return Err(AtRestError::Malformed);
        };
        if *magic != SEALED_MAGIC || *version != LAYOUT_VERSION {
            return Err(AtRestError::Malformed);
        }
        let header_len = 3 + *id_len as usize;
        if value.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(AtRestError::Malformed);
        }
        let key_id =
            std::str::from_utf8(&value[3..header_len]).map_err(|_| AtRestError::Malformed)?;
        check_key_id(key_id).map_err(|_| AtRestError::Malformed)?;
        let (nonce, ciphertext) = value[header_len..].split_at(NONCE_LEN);
        Ok(Sealed {
            header: &value[..header_len],
            key_id,
            nonce: nonce.try_into().map_err(|_| AtRestError::Malformed)?,
            ciphertext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> DataKey {
        DataKey::from_hex(id, &SecretString::new(hex::encode([byte; 32]))).unwrap()
    }

    /// C2SP XAES-256-GCM's test vectors (<https://c2sp.org/XAES-256-GCM>),
    /// through the same derivation and cipher that [`DataKeys::seal`] uses.
    #[test]
    fn xaes_256_gcm_matches_the_c2sp_vectors() {
        let cases: [(u8, &[u8], &str); 2] = [
            (
                0x01,
                b"",
                "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
            ),
            (
                0x03,
                b"c2sp.org/XAES-256-GCM",
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ];
        for (byte, aad, expected) in cases {
            let key = key("vector", byte);
            let nonce: &[u8; 24] = b"ABCDEFGHIJKLMNOPQRSTUVWX";
            let sealed = key.encrypt(nonce, aad, b"XAES-256-GCM");
            assert_eq!(hex::encode(&sealed), expected);
            assert_eq!(key.decrypt(nonce, aad, &sealed).unwrap(), b"XAES-256-GCM");
        }
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_context_and_hides_its_content() {
        let keys = DataKeys::new(key("2026-12", 7), vec![]).unwrap();
        let plaintext = b"account 0123456789, phone 2348022000008";
        let sealed = keys.seal(b"T app\x1ftx-1", plaintext);
        assert!(is_sealed(&sealed));
        assert_eq!(sealed_key_id(&sealed), Some("2026-12"));
        assert!(!sealed.windows(10).any(|w| w == b"0123456789"));
        assert_eq!(keys.open(b"T app\x1ftx-1", &sealed).unwrap(), plaintext);
        assert_eq!(
            keys.open(b"T app\x1ftx-2", &sealed),
            Err(AtRestError::Rejected)
        );
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, keys.seal(b"T app\x1ftx-1", plaintext));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let keys = DataKeys::new(key("k", 9), vec![]).unwrap();
        let sealed = keys.seal(b"ctx", b"balance 2077099");
        for at in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x01;
            assert!(keys.open(b"ctx", &damaged).is_err(), "byte {at}");
        }
        for len in 0..sealed.len() {
            assert!(keys.open(b"ctx", &sealed[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn rotation_opens_old_values_and_reseals_under_the_new_key() {
        let old = DataKeys::new(key("old", 1), vec![]).unwrap();
        let sealed_old = old.seal(b"ctx", b"value");
        let rotated = DataKeys::new(key("new", 2), vec![key("old", 1)]).unwrap();
        assert_eq!(rotated.open(b"ctx", &sealed_old).unwrap(), b"value");
        assert!(rotated.needs_reseal(&sealed_old));
        assert!(rotated.needs_reseal(b"{\"clear\": true}"));
        let resealed = rotated.seal(b"ctx", b"value");
        assert!(!rotated.needs_reseal(&resealed));
        let without_old = DataKeys::new(key("new", 2), vec![]).unwrap();
        assert_eq!(
            without_old.open(b"ctx", &sealed_old),
            Err(AtRestError::UnknownKey("old".into()))
        );
        assert_eq!(without_old.open(b"ctx", &resealed).unwrap(), b"value");
        // A key id relabelled onto another key's value does not open.
        let impostor = DataKeys::new(key("old", 3), vec![]).unwrap();
        assert_eq!(
            impostor.open(b"ctx", &sealed_old),
            Err(AtRestError::Rejected)
        );
    }

    #[test]
    fn recorded_key_ids_refuse_a_missing_key_and_learn_a_new_current_one() {
        let key = |id: &str, byte: u8| {
            DataKey::from_hex(id, &SecretString::new(hex::encode([byte; 32]))).unwrap()
        };
        let old_and_new = DataKeys::new(key("new", 2), vec![key("old", 1)]).unwrap();
        let new_only = DataKeys::new(key("new", 2), vec![]).unwrap();
        let none = RecordedKeyIds::parse(None);
        assert_eq!(none.check(None), Ok(None));
        let first = none.check(Some(&new_only)).unwrap().unwrap();
        assert_eq!(first.encode(), b"new");
        // Nothing recorded yet, opened while rotating: any key given may
        // have sealed something.
        let legacy = none.check(Some(&old_and_new)).unwrap().unwrap();
        assert_eq!(legacy.encode(), b"new,old");
        assert!(legacy.check(Some(&new_only)).is_err());

        let recorded = RecordedKeyIds::parse(Some(b"old"));
        assert_eq!(
            recorded.check(None),
            Err(KeyIdsRefusal::NoKeyGiven {
                recorded: vec!["old".into()]
            })
        );
        assert_eq!(
            recorded.check(Some(&new_only)),
            Err(KeyIdsRefusal::Missing {
                missing: vec!["old".into()],
                given: vec!["new".into()]
            })
        );
        let rotated = recorded.check(Some(&old_and_new)).unwrap().unwrap();
        assert_eq!(rotated.encode(), b"old,new");
        assert_eq!(rotated.check(Some(&old_and_new)), Ok(None));
        assert_eq!(RecordedKeyIds::current_only(&old_and_new).encode(), b"new");
        assert_eq!(quoted_ids(&["a".into(), "b".into()]), "`a`, `b`");
    }

    #[test]
    fn keys_and_ids_are_checked_and_never_printed() {
        let text = SecretString::new("zz".repeat(32));
        assert_eq!(
            DataKey::from_hex("k", &text).unwrap_err(),
            AtRestError::MalformedKey
        );
        let short = SecretString::new("ab".repeat(31));
        assert_eq!(
            DataKey::from_hex("k", &short).unwrap_err(),
            AtRestError::MalformedKey
        );
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            let key = SecretString::new("ab".repeat(32));
            assert_eq!(
                DataKey::from_hex(bad, &key).unwrap_err(),
                AtRestError::MalformedKeyId
            );
        }
        assert_eq!(
            DataKeys::new(key("a", 1), vec![key("b", 2), key("a", 3)]).unwrap_err(),
            AtRestError::DuplicateKeyId("a".into())
        );
        let (generated, text) = DataKey::generate("fresh").unwrap();
        let mut printed = format!("{generated:?}");
        printed += &format!("{:?}", DataKeys::new(generated, vec![]).unwrap());
        assert!(!printed.contains(text.expose()), "{printed}");
        assert!(printed.contains("fresh"));
    }
}
