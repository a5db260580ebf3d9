//! Transaction records sealed under the host's data key.
//!
//! A transaction record carries the providers' replies: account and phone
//! numbers, balances, names. Each one is sealed
//! ([`manifold_crypto::at_rest`], XAES-256-GCM) after it is encoded and
//! before it reaches the journal or sled, and opened after it is read, so
//! neither the journal's segments nor sled's log (which keeps old versions
//! of a value until it compacts) ever hold one in clear. The context binds a
//! sealed record to its key: moved onto another transaction's key, it does
//! not open. Pointers and metering batches hold no customer data (references
//! the app chose, statuses, request types) and stay in clear, so that
//! billing reads them without the key.
//!
//! A record written before the store had a key is read as it is and sealed
//! when it is next written, or by [`super::SledStore::reseal`].
//!
//! The tree keeps, in clear under [`KEY_IDS`], the ids of every key records
//! may be sealed under: the current key's id is added (durably) when the
//! store is opened with it, before it seals anything, and a reseal leaves
//! only the current one. Opening with a configuration that lacks one of
//! them is refused at once, naming the missing ids, rather than failing
//! call by call on the records they sealed.

use std::borrow::Cow;
use std::sync::Arc;

use manifold_crypto::at_rest::{self, quoted_ids, AtRestError, KeyIdsRefusal, RecordedKeyIds};
use manifold_crypto::DataKeys;

use crate::store::StoreError;

/// The name (sled: the key in the store's tree) of the ids of the data keys
/// records may be sealed under; no record key starts with 0.
pub(super) const KEY_IDS: &[u8] = b"\0data-key-ids";

/// What seals and opens records; without keys, records are kept in clear
/// (tests and embedders only: the configuration requires a key).
#[derive(Debug, Clone, Default)]
pub(super) struct Sealing {
    keys: Option<Arc<DataKeys>>,
}

fn context(key: &[u8]) -> Vec<u8> {
    let mut context = Vec::with_capacity(16 + key.len());
    context.extend_from_slice(b"manifold-switch\0");
    context.extend_from_slice(key);
    context
}

impl Sealing {
    pub(super) fn new(keys: Option<Arc<DataKeys>>) -> Sealing {
        Sealing { keys }
    }

    /// `encoded` (a record under `key`) as it is written.
    pub(super) fn seal(&self, key: &[u8], encoded: Vec<u8>) -> Vec<u8> {
        match &self.keys {
            Some(keys) => keys.seal(&context(key), &encoded),
            None => encoded,
        }
    }

    /// A stored value under `key` as the codec reads it.
    pub(super) fn open<'a>(
        &self,
        key: &[u8],
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        if !at_rest::is_sealed(stored) {
            return Ok(Cow::Borrowed(stored));
        }
        let Some(keys) = &self.keys else {
            return Err(StoreError::Sealed(
                "a record is sealed, and this store was opened without a data key".into(),
            ));
        };
        keys.open(&context(key), stored)
            .map(Cow::Owned)
            .map_err(|error| match error {
                AtRestError::UnknownKey(_) => StoreError::Sealed(format!(
                    "{error}: add it under [[data_at_rest.previous_keys]] (configured: {})",
                    keys.ids().collect::<Vec<_>>().join(", ")
                )),
                other => StoreError::Corrupt(format!("a sealed record: {other}")),
            })
    }

    /// Whether a stored value is not sealed under the current key.
    pub(super) fn needs_reseal(&self, stored: &[u8]) -> bool {
        match &self.keys {
            Some(keys) => keys.needs_reseal(stored),
            None => false,
        }
    }

    /// Refuses a store that holds records sealed under a key the
    /// configuration does not give, and records the current key's id before
    /// anything is sealed under it.
    /// `recorded` is what the store holds under [`KEY_IDS`]; the answer is
    /// what it must hold (written durably before anything is sealed), if
    /// that changed.
    pub(super) fn check_key_ids(
        &self,
        recorded: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let recorded = RecordedKeyIds::parse(recorded);
        match recorded.check(self.keys.as_deref()) {
            Ok(None) => Ok(None),
            Ok(Some(ids)) => Ok(Some(ids.encode())),
            Err(KeyIdsRefusal::NoKeyGiven { recorded }) => Err(StoreError::Sealed(format!(
                "the store holds records sealed under the data key(s) {}, and no data key was given",
                quoted_ids(&recorded)
            ))),
            Err(KeyIdsRefusal::Missing { missing, given }) => Err(StoreError::Sealed(format!(
                "the store holds records sealed under the data key(s) {}, which the configuration \
                 does not give (it gives {}): list them under [[data_at_rest.previous_keys]]; once \
                 `manifold --reseal` has run with them, they can be removed",
                quoted_ids(&missing),
                quoted_ids(&given)
            ))),
        }
    }

    /// After a reseal: what [`KEY_IDS`] holds once only the current key
    /// seals anything (`None` without a key).
    pub(super) fn current_key_id_only(&self) -> Option<Vec<u8>> {
        self.keys
            .as_deref()
            .map(|keys| RecordedKeyIds::current_only(keys).encode())
    }

    /// The id of the key that seals, if any.
    pub(super) fn current_key_id(&self) -> Option<&str> {
        self.keys.as_deref().map(DataKeys::current_id)
    }
}
