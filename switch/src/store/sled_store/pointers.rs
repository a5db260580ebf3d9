//! Request pointers in buckets: which transaction a `request_ref` acted on.
//!
//! **Why buckets.** sled 0.34 splits a leaf past 16 entries whatever their
//! size and keeps every page's table entry in memory, so a store's size on
//! disk and its resident memory follow its *key count* more than its bytes
//! (`tests/bench/PROFILING.md`, seventh round: a key per pointer beside a
//! key per record cost 1,449 bytes on disk and 82 MiB resident per million
//! transactions; pointers a dozen to a value, 855 bytes and 44 MiB). So the
//! pointers of one app share 65,536 values, each found by a keyed hash
//! of the `request_ref`.
//!
//! **Layout.** Key `P app 0x1f bucket` (the bucket's number as two
//! big-endian bytes); value: the version byte [`BUCKET_VERSION`], then
//! entries of `tag: u32 LE`, `len: u16 LE` and the `transaction_ref`'s
//! bytes. The tag is more of the same hash, so a look-up opens only the
//! transactions whose tag matches, and the record it opens still has the
//! last word: a pointer counts only if its transaction lists the request
//! (two `request_ref`s with one bucket and tag, one chance in 2^48, cost a
//! second record read, never a wrong answer). A bucket is read, changed and
//! written whole under its lock stripe, through the journal.
//!
//! **Why a keyed hash.** An app chooses its `request_ref`s. With a hash
//! anyone can compute, an app could pour all its requests into one bucket
//! and make every write of it rewrite megabytes. The key ([`POINTER_KEY`],
//! 16 random bytes made with the store) keeps the spread even whatever the
//! refs; SipHash-2-4 is the keyed hash made for this.

use siphasher::sip::SipHasher24;

use super::codec;
use crate::store::StoreError;

/// 2^16 = 65,536 buckets per app: a million requests of one app are about
/// fifteen to a bucket (a value of about 700 bytes); ten million, a hundred
/// and fifty. The bucket is the hash's top bits, as two bytes of its key.
const BUCKET_BITS: u32 = 16;
pub const BUCKETS: u32 = 1 << BUCKET_BITS;
/// The key of the hash key, in the switch's tree.
pub const POINTER_KEY: &[u8] = b"\0pointer-key";
/// The kind byte of a bucket's key.
pub const BUCKET: u8 = b'P';
const BUCKET_VERSION: u8 = 1;
/// A pointer's bytes in its bucket besides its `transaction_ref`.
pub const ENTRY_HEAD: usize = 4 + 2;

/// Where the pointer of one `request_ref` lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub bucket_key: Vec<u8>,
    tag: u32,
}

impl Slot {
    /// The bucket's number, below [`BUCKETS`].
    pub fn bucket(&self) -> u32 {
        let end = self.bucket_key.len();
        u32::from(u16::from_be_bytes([
            self.bucket_key[end - 2],
            self.bucket_key[end - 1],
        ]))
    }
}

/// The store's keyed hash of `request_ref`s.
#[derive(Clone)]
pub struct Pointers {
    hasher: SipHasher24,
}

impl std::fmt::Debug for Pointers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key spreads refs; it is not a secret of the data, but there is
        // no reason to print it either.
        f.write_str("Pointers { .. }")
    }
}

impl Pointers {
    /// The pointers under the hash key `key` (16 bytes, [`POINTER_KEY`]).
    pub fn new(key: &[u8]) -> Result<Self, StoreError> {
        let key: &[u8; 16] = key.try_into().map_err(|_| {
            StoreError::Corrupt(format!("the pointer key has {} bytes, not 16", key.len()))
        })?;
        Ok(Pointers {
            hasher: SipHasher24::new_with_key(key),
        })
    }

    /// A fresh hash key for a new store.
    pub fn new_key() -> [u8; 16] {
        rand::random()
    }

    pub fn slot(&self, app_id: &str, request_ref: &str) -> Slot {
        let hash = self.hasher.hash(request_ref.as_bytes());
        let bucket = (hash >> (64 - BUCKET_BITS)) as u16;
        let mut bucket_key = codec::key(BUCKET, app_id, "");
        bucket_key.extend_from_slice(&bucket.to_be_bytes());
        Slot {
            bucket_key,
            // The hash's low bits: none of them chose the bucket.
            tag: hash as u32,
        }
    }
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("a request pointer bucket {why}"))
}

/// The `transaction_ref`s under `slot`'s tag in `bucket`, usually one.
pub fn candidates(bucket: &[u8], slot: &Slot) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for entry in entries(bucket)? {
        let (tag, transaction_ref) = entry?;
        if tag == slot.tag {
            found.push(transaction_ref.to_owned());
        }
    }
    Ok(found)
}

/// `bucket` (or a new one) with `transaction_ref` added under `slot`'s tag.
pub fn with_added(
    bucket: Option<&[u8]>,
    slot: &Slot,
    transaction_ref: &str,
) -> Result<Vec<u8>, StoreError> {
    merged(bucket, [(slot, transaction_ref)])
}

/// `bucket` without one entry of `transaction_ref` under `slot`'s tag;
/// `None` when nothing is left in it. A bucket without such an entry comes
/// back unchanged.
pub fn without(
    bucket: &[u8],
    slot: &Slot,
    transaction_ref: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut out = vec![BUCKET_VERSION];
    let mut removed = false;
    let mut kept = 0;
    for entry in entries(bucket)? {
        let (tag, kept_ref) = entry?;
        if !removed && tag == slot.tag && kept_ref == transaction_ref {
            removed = true;
            continue;
        }
        push(&mut out, tag, kept_ref);
        kept += 1;
    }
    Ok((kept > 0).then_some(out))
}

/// One bucket holding every `(tag, transaction_ref)` of `added`, appended
/// to `bucket` if there is one.
pub fn merged<'a>(
    bucket: Option<&[u8]>,
    added: impl IntoIterator<Item = (&'a Slot, &'a str)>,
) -> Result<Vec<u8>, StoreError> {
    let mut out = match bucket {
        Some(bytes) => {
            // Checked whole before it grows: a damaged bucket is refused
            // rather than carried on.
            entries(bytes)?.try_for_each(|entry| entry.map(drop))?;
            bytes.to_vec()
        }
        None => vec![BUCKET_VERSION],
    };
    for (slot, transaction_ref) in added {
        if u16::try_from(transaction_ref.len()).is_err() {
            return Err(StoreError::Database(
                "a transaction_ref longer than 65,535 bytes has no pointer".into(),
            ));
        }
        push(&mut out, slot.tag, transaction_ref);
    }
    Ok(out)
}

fn push(out: &mut Vec<u8>, tag: u32, transaction_ref: &str) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(transaction_ref.len() as u16).to_le_bytes());
    out.extend_from_slice(transaction_ref.as_bytes());
}

/// The entries of `bucket`, each checked as it is read.
fn entries(
    bucket: &[u8],
) -> Result<impl Iterator<Item = Result<(u32, &str), StoreError>> + '_, StoreError> {
    let mut rest = match bucket.split_first() {
        Some((&BUCKET_VERSION, rest)) => rest,
        Some((version, _)) => {
            return Err(StoreError::Corrupt(format!(
                "a request pointer bucket has version {version}; this build reads {BUCKET_VERSION}"
            )))
        }
        None => return Err(corrupt("is empty")),
    };
    Ok(std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some((head, tail)) = rest.split_at_checked(ENTRY_HEAD) else {
            rest = &[];
            return Some(Err(corrupt("ends inside an entry")));
        };
        let tag = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let Some((text, tail)) = tail.split_at_checked(len) else {
            rest = &[];
            return Some(Err(corrupt("ends inside a transaction_ref")));
        };
        rest = tail;
        Some(
            std::str::from_utf8(text)
                .map(|transaction_ref| (tag, transaction_ref))
                .map_err(|_| corrupt("holds a transaction_ref that is not UTF-8")),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_siphash_2_4_as_its_paper_defines_it() {
        // Appendix A of Aumasson and Bernstein's "SipHash: a fast
        // short-input PRF": key 00..0f, message 00..0e.
        let key: Vec<u8> = (0u8..16).collect();
        let message: Vec<u8> = (0u8..15).collect();
        let hasher = SipHasher24::new_with_key(key.as_slice().try_into().unwrap());
        assert_eq!(hasher.hash(&message), 0xa129_ca61_49be_45e5);
    }

    fn pointers() -> Pointers {
        Pointers::new(&[7; 16]).unwrap()
    }

    #[test]
    fn a_bucket_finds_what_was_added_and_forgets_what_was_removed() {
        let pointers = pointers();
        let one = pointers.slot("app", "r-1");
        let two = pointers.slot("app", "r-2");
        let bucket = with_added(None, &one, "t-1").unwrap();
        let bucket = with_added(Some(&bucket), &two, "t-2").unwrap();
        assert_eq!(candidates(&bucket, &one).unwrap(), ["t-1"]);
        assert_eq!(candidates(&bucket, &two).unwrap(), ["t-2"]);
        let bucket = without(&bucket, &one, "t-1").unwrap().unwrap();
        assert!(candidates(&bucket, &one).unwrap().is_empty());
        assert_eq!(candidates(&bucket, &two).unwrap(), ["t-2"]);
        assert_eq!(
            without(&bucket, &two, "t-9").unwrap().as_deref(),
            Some(bucket.as_slice()),
            "removing what is not there changes nothing"
        );
        assert_eq!(without(&bucket, &two, "t-2").unwrap(), None);
        assert_eq!(
            merged(None, [(&one, "t-1"), (&two, "t-2")]).unwrap(),
            with_added(Some(&with_added(None, &one, "t-1").unwrap()), &two, "t-2").unwrap()
        );
    }

    #[test]
    fn slots_depend_on_the_key_the_app_and_the_ref() {
        let pointers = pointers();
        let other = Pointers::new(&[8; 16]).unwrap();
        assert_eq!(pointers.slot("app", "r-1"), pointers.slot("app", "r-1"));
        assert_ne!(pointers.slot("app", "r-1"), other.slot("app", "r-1"));
        assert_ne!(
            pointers.slot("app", "r-1").bucket_key,
            pointers.slot("other", "r-1").bucket_key
        );
        // 100,000 refs over 65,536 buckets: no bucket far above the mean.
        let mut counts = std::collections::HashMap::new();
        for n in 0..100_000 {
            *counts
                .entry(pointers.slot("app", &format!("r-{n}")).bucket_key)
                .or_insert(0u32) += 1;
        }
        assert!(
            counts.values().all(|&c| c <= 12),
            "{:?}",
            counts.values().max()
        );
        assert!(Pointers::new(&[0; 15]).is_err());
    }

    #[test]
    fn damaged_buckets_are_refused_in_words() {
        let pointers = pointers();
        let slot = pointers.slot("app", "r-1");
        let good = with_added(None, &slot, "t-1").unwrap();
        for damaged in [&good[..good.len() - 1], &good[..3], &[][..], &[9, 0][..]] {
            let error = candidates(damaged, &slot).unwrap_err().to_string();
            assert!(error.contains("bucket"), "{error}");
            assert!(with_added(Some(damaged), &slot, "t-2").is_err());
        }
    }
}
