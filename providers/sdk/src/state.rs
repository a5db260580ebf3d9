//! What the SDK keeps between calls, in sled (in-process: through the
//! switch's write-ahead log, into the same database).
//!
//! Two trees per provider, named `<namespace>/pending` and
//! `<namespace>/outcomes`, both keyed by `(app_id, transaction_ref)`:
//! - a [`PendingEntry`] while a transaction waits for the customer or the
//!   upstream — seed 003's stored upstream answer, with the OTP's keyed hash,
//!   attempts and expiry. It is erased the moment the transaction is final
//!   (one left by a crash at that moment is inert and swept);
//! - a [`FinalRecord`] once it is final, so repeats, queries and reversals are
//!   answered from it without calling the upstream again.
//!
//! The service changes a transaction's entries only while holding that
//! transaction's lock, so two concurrent validates cannot both spend the same
//! attempt or both complete a transfer.
//!
//! **Sealed at rest.** Both hold customer data — the upstream's answers,
//! account numbers, where codes go — so with `ServiceSettings::data_keys`
//! every value is sealed ([`manifold_crypto::at_rest`], XAES-256-GCM) before
//! it is written, bound to its tree and key, and opened when read; sled's
//! files (which keep old versions of values until they compact) never hold
//! one in clear. A value in clear, written before a key was given, is still
//! read, and sealed when written again or by
//! [`crate::ProviderService::reseal`].
//!
//! **Retention.** A final record keeps when it became final
//! (`finished_at_ms`); once older than `ServiceSettings::retention`, its
//! customer data is dropped ([`FinalRecord::drop_customer_data`]): status
//! and code stay, so a repeat still gets the same status, never a
//! different body.

use std::sync::Arc;

use manifold_crypto::at_rest::{self, quoted_ids, AtRestError, KeyIdsRefusal, RecordedKeyIds};
use manifold_crypto::DataKeys;
use manifold_provider::notify::Channel;
use manifold_provider::ProviderReply;
use manifold_provider::SharedLog;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::connector::Outcome;
use crate::shared::{self, SharedState};
use crate::ServiceError;

/// The sled key of one transaction.
pub fn transaction_key(app_id: &str, transaction_ref: &str) -> Vec<u8> {
    // The unit separator cannot appear in identifiers, so keys never collide.
    format!("{app_id}\u{1f}{transaction_ref}").into_bytes()
}

/// What a waiting transaction waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Awaiting {
    /// The SDK is calling the upstream's `start`; if this is found after a
    /// restart, the call's outcome is unknown and the upstream must be polled.
    Starting,
    /// An OTP the SDK sent. Only its keyed hash is kept.
    Otp {
        otp_hash: String,
        attempts_left: u8,
        sends: u8,
        last_sent_ms: u64,
    },
    /// A code the upstream sent; the upstream checks it.
    UpstreamOtp { prompt: String, attempts_left: u8 },
    /// Information the upstream asked for.
    Answer { prompt: String, attempts_left: u8 },
    /// The upstream decides later; polled on query.
    Processing,
}

/// A transaction that is not final yet.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub app_id: String,
    pub transaction_ref: String,
    pub request_type: String,
    pub awaiting: Awaiting,
    /// What the connector stored for its next call (seed 003: the upstream's answer).
    pub deferred: Value,
    /// When the customer's time to confirm runs out; `None` while the
    /// upstream, not the customer, is the one to act.
    pub expires_at_ms: Option<u64>,
    /// The app's `otp_override`, needed when a later step asks for an OTP.
    pub otp_override: bool,
    /// Where an OTP for this transaction goes, if anywhere.
    pub contact: Option<Contact>,
}

/// `deferred` is the connector's own data, which may hold a customer's
/// credential (Skopa keeps the customer's refresh token there) or account
/// details: never printed.
impl std::fmt::Debug for PendingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingEntry")
            .field("app_id", &self.app_id)
            .field("transaction_ref", &self.transaction_ref)
            .field("request_type", &self.request_type)
            .field("awaiting", &self.awaiting)
            .field("deferred", &"[withheld]")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("otp_override", &self.otp_override)
            .field("contact", &self.contact)
            .finish()
    }
}

impl PendingEntry {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Where a customer receives codes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub channel: Channel,
    pub to: String,
    /// Masked, for messages to the app (`2348022****08`).
    pub shown: String,
}

/// A phone number or address is customer data: printed masked.
impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("channel", &self.channel)
            .field("to", &self.shown)
            .finish()
    }
}

impl Contact {
    /// A phone number, for codes by SMS.
    pub fn sms(phone: impl Into<String>) -> Contact {
        Contact::new(Channel::Sms, phone.into())
    }

    /// An e-mail address, for codes by e-mail.
    pub fn email(address: impl Into<String>) -> Contact {
        Contact::new(Channel::Email, address.into())
    }

    pub fn new(channel: Channel, to: String) -> Contact {
        Contact {
            channel,
            shown: manifold_provider::notify::mask_destination(channel, &to),
            to,
        }
    }
}

/// The reversal of a final, successful transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReversalRecord {
    pub request_ref: String,
    pub reply: ProviderReply,
}

/// A transaction that is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    pub request_type: String,
    pub outcome: Outcome,
    pub reversal: Option<ReversalRecord>,
    /// When it became final; records written before this was kept have none
    /// until the retention pass stamps them.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// When its customer data was dropped after the retention period.
    #[serde(default)]
    pub dropped_at_ms: Option<u64>,
}

/// The message of an outcome whose details were dropped.
pub const DROPPED_MESSAGE: &str =
    "The details of this transaction were dropped after the provider's retention period";

impl FinalRecord {
    /// Drops the customer data: the outcome's message and response, what a
    /// reversal would need, and the reversal's reply beyond its status and
    /// code. Status and codes stay.
    pub fn drop_customer_data(&mut self, at_ms: u64) {
        self.outcome.message = DROPPED_MESSAGE.to_owned();
        self.outcome.response = None;
        self.outcome.reversal = None;
        if let Some(reversal) = &mut self.reversal {
            reversal.reply.message = DROPPED_MESSAGE.to_owned();
            reversal.reply.provider_response = None;
        }
        self.dropped_at_ms = Some(at_ms);
    }
}

/// Seals and opens the values of one tree.
#[derive(Clone)]
struct Sealer {
    keys: Option<Arc<DataKeys>>,
    /// The tree's name and a 0: the context's prefix.
    tree: Vec<u8>,
}

impl Sealer {
    fn new(keys: Option<Arc<DataKeys>>, tree: &str) -> Sealer {
        let mut prefix = tree.as_bytes().to_vec();
        prefix.push(0);
        Sealer { keys, tree: prefix }
    }

    fn context(&self, key: &[u8]) -> Vec<u8> {
        [&self.tree[..], key].concat()
    }

    fn encode<T: Serialize>(&self, key: &[u8], value: &T) -> Result<Vec<u8>, ServiceError> {
        let json =
            serde_json::to_vec(value).map_err(|error| ServiceError::Corrupt(error.to_string()))?;
        Ok(match &self.keys {
            Some(keys) => keys.seal(&self.context(key), &json),
            None => json,
        })
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], stored: &[u8]) -> Result<T, ServiceError> {
        let opened;
        let json = if at_rest::is_sealed(stored) {
            let keys = self.keys.as_ref().ok_or_else(|| {
                ServiceError::Sealed("a value is sealed, and no data key was given".into())
            })?;
            opened = keys
                .open(&self.context(key), stored)
                .map_err(|error| match error {
                    AtRestError::UnknownKey(_) => ServiceError::Sealed(format!(
                        "{error}; the data keys given are {}",
                        keys.ids().collect::<Vec<_>>().join(", ")
                    )),
                    other => ServiceError::Corrupt(format!("a sealed value: {other}")),
                })?;
            &opened[..]
        } else {
            stored
        };
        serde_json::from_slice(json).map_err(|error| ServiceError::Corrupt(error.to_string()))
    }

    fn needs_reseal(&self, stored: &[u8]) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|keys| keys.needs_reseal(stored))
    }
}

/// What [`StateStore::keys_to_reseal`] found, by tree.
pub struct ToReseal {
    pub pending: Vec<Vec<u8>>,
    pub finals: Vec<Vec<u8>>,
}

/// One of the provider's trees: in sled directly (a microservice's own
/// database), behind the switch's write-ahead log (in-process: see
/// [`crate::StateDurability`]), or rows of the shared PostgreSQL table
/// ([`crate::shared`]).
#[derive(Clone)]
pub(crate) enum Tree {
    Sled(sled::Tree),
    Logged {
        log: Arc<dyn SharedLog>,
        name: String,
    },
    Postgres {
        pool: deadpool_postgres::Pool,
        name: String,
    },
}

/// Rows [`Tree::for_each`] reads from PostgreSQL at a time.
const PAGE: i64 = 500;

impl Tree {
    fn open(
        db: &sled::Db,
        name: String,
        log: Option<&Arc<dyn SharedLog>>,
    ) -> Result<Tree, ServiceError> {
        Ok(match log {
            Some(log) => Tree::Logged {
                log: log.clone(),
                name,
            },
            None => Tree::Sled(db.open_tree(name)?),
        })
    }

    /// The tree's name: part of every sealed value's context.
    pub(crate) fn name(&self) -> Vec<u8> {
        match self {
            Tree::Sled(tree) => tree.name().to_vec(),
            Tree::Logged { name, .. } | Tree::Postgres { name, .. } => name.as_bytes().to_vec(),
        }
    }

    async fn client(
        pool: &deadpool_postgres::Pool,
    ) -> Result<deadpool_postgres::Client, ServiceError> {
        pool.get().await.map_err(crate::shared::pool_error)
    }

    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ServiceError> {
        Ok(match self {
            Tree::Sled(tree) => tree.get(key)?.map(|value| value.to_vec()),
            Tree::Logged { log, name } => log.get(name, key)?,
            Tree::Postgres { pool, name } => Self::client(pool)
                .await?
                .query_opt(
                    "SELECT value FROM manifold_provider_state WHERE tree = $1 AND key = $2",
                    &[name, &key],
                )
                .await
                .map_err(shared::database)?
                .map(|row| row.get(0)),
        })
    }

    pub(crate) async fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), ServiceError> {
        match self {
            Tree::Sled(tree) => drop(tree.insert(key, value)?),
            Tree::Logged { log, name } => log.insert(name, key, value)?,
            Tree::Postgres { pool, name } => drop(
                Self::client(pool)
                    .await?
                    .execute(
                        "INSERT INTO manifold_provider_state (tree, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                        &[name, &key, &value],
                    )
                    .await
                    .map_err(shared::database)?,
            ),
        }
        Ok(())
    }

    /// Writes `value` unless the key holds one; returns what it holds
    /// afterwards and whether that is `value`. Durable when it returns.
    pub(crate) async fn insert_if_absent(
        &self,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(Vec<u8>, bool), ServiceError> {
        match self {
            Tree::Sled(tree) => {
                match tree.compare_and_swap(key, None as Option<&[u8]>, Some(value.clone()))? {
                    Ok(()) => {
                        tree.flush()?;
                        Ok((value, true))
                    }
                    Err(conflict) => Ok((
                        conflict.current.map(|v| v.to_vec()).unwrap_or_default(),
                        false,
                    )),
                }
            }
            Tree::Logged { .. } => Err(ServiceError::Corrupt(
                "the provider's meta tree is written directly, never through the switch's log"
                    .into(),
            )),
            Tree::Postgres { pool, name } => {
                let client = Self::client(pool).await?;
                let inserted = client
                    .execute(
                        "INSERT INTO manifold_provider_state (tree, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (tree, key) DO NOTHING",
                        &[name, &key, &value],
                    )
                    .await
                    .map_err(shared::database)?;
                if inserted == 1 {
                    return Ok((value, true));
                }
                let current: Vec<u8> = client
                    .query_one(
                        "SELECT value FROM manifold_provider_state WHERE tree = $1 AND key = $2",
                        &[name, &key],
                    )
                    .await
                    .map_err(shared::database)?
                    .get(0);
                Ok((current, false))
            }
        }
    }

    pub(crate) async fn remove(&self, key: &[u8]) -> Result<(), ServiceError> {
        match self {
            Tree::Sled(tree) => drop(tree.remove(key)?),
            Tree::Logged { log, name } => log.remove(name, key)?,
            Tree::Postgres { pool, name } => drop(
                Self::client(pool)
                    .await?
                    .execute(
                        "DELETE FROM manifold_provider_state WHERE tree = $1 AND key = $2",
                        &[name, &key],
                    )
                    .await
                    .map_err(shared::database)?,
            ),
        }
        Ok(())
    }

    /// Makes what was written to this tree durable, for the few values
    /// written outside the service's commits (the meta tree's).
    pub(crate) fn flush(&self) -> Result<(), ServiceError> {
        if let Tree::Sled(tree) = self {
            tree.flush()?;
        }
        // The log's entries are durable at its commits, PostgreSQL's at
        // each statement's.
        Ok(())
    }

    /// Visits every entry once, in no particular order, without copying
    /// the tree; for the sweeps (expiry, retention, reseal).
    async fn for_each(
        &self,
        visit: &mut (dyn FnMut(&[u8], &[u8]) + Send),
    ) -> Result<(), ServiceError> {
        match self {
            Tree::Sled(tree) => {
                for item in tree.iter() {
                    let (key, value) = item?;
                    visit(&key, &value);
                }
            }
            Tree::Logged { log, name } => log.for_each(name, visit)?,
            Tree::Postgres { pool, name } => {
                let client = Self::client(pool).await?;
                let mut after: Vec<u8> = Vec::new();
                let mut first = true;
                loop {
                    let rows = client
                        .query(
                            "SELECT key, value FROM manifold_provider_state
                             WHERE tree = $1 AND ($2 OR key > $3) ORDER BY key LIMIT $4",
                            &[name, &first, &after, &PAGE],
                        )
                        .await
                        .map_err(shared::database)?;
                    for row in &rows {
                        visit(row.get(0), row.get(1));
                    }
                    match rows.last() {
                        Some(last) if rows.len() as i64 == PAGE => {
                            after = last.get(0);
                            first = false;
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// The keys of the entries `keep` accepts.
    async fn keys_where(
        &self,
        keep: impl Fn(&[u8]) -> bool + Send + Sync,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let mut keys = Vec::new();
        self.for_each(&mut |key, value| {
            if keep(value) {
                keys.push(key.to_vec());
            }
        })
        .await?;
        Ok(keys)
    }

    /// How many entries; for tests and diagnostics (it visits them all).
    async fn len(&self) -> Result<usize, ServiceError> {
        match self {
            Tree::Sled(tree) => Ok(tree.len()),
            Tree::Postgres { pool, name } => {
                let count: i64 = Self::client(pool)
                    .await?
                    .query_one(
                        "SELECT count(*) FROM manifold_provider_state WHERE tree = $1",
                        &[name],
                    )
                    .await
                    .map_err(shared::database)?
                    .get(0);
                Ok(usize::try_from(count).unwrap_or(usize::MAX))
            }
            Tree::Logged { .. } => {
                let mut entries = 0;
                self.for_each(&mut |_, _| entries += 1).await?;
                Ok(entries)
            }
        }
    }
}

/// Where, in `<namespace>/meta`, the ids of the data keys the state may be
/// sealed under are kept (in clear: ids are not secret).
const KEY_IDS: &[u8] = b"data-key-ids";

/// The two trees, with typed access. Callers hold the transaction's lock
/// (see [`crate::service`]) around every read-modify-write.
#[derive(Clone)]
pub struct StateStore {
    pending: Tree,
    outcomes: Tree,
    pending_sealer: Sealer,
    outcomes_sealer: Sealer,
    /// `<namespace>/meta`, written directly and flushed (it changes only
    /// at start and after a reseal).
    meta: Tree,
    keys: Option<Arc<DataKeys>>,
}

impl StateStore {
    /// The trees of `namespace` in `db`, their values sealed under `keys`
    /// (in clear without); written through `log` when the provider runs
    /// in-process on the switch's database.
    pub fn open(
        db: &sled::Db,
        namespace: &str,
        keys: Option<Arc<DataKeys>>,
        log: Option<&Arc<dyn SharedLog>>,
    ) -> Result<Self, ServiceError> {
        let pending = format!("{namespace}/pending");
        let outcomes = format!("{namespace}/outcomes");
        let store = StateStore {
            pending_sealer: Sealer::new(keys.clone(), &pending),
            outcomes_sealer: Sealer::new(keys.clone(), &outcomes),
            pending: Tree::open(db, pending, log)?,
            outcomes: Tree::open(db, outcomes, log)?,
            meta: Tree::Sled(db.open_tree(format!("{namespace}/meta"))?),
            keys,
        };
        let meta = db.open_tree(format!("{namespace}/meta"))?;
        if let Some(ids) = store.check_key_ids(meta.get(KEY_IDS)?.as_deref())? {
            meta.insert(KEY_IDS, ids)?;
            meta.flush()?;
        }
        Ok(store)
    }

    /// The trees of `namespace` in the shared PostgreSQL state, sealed as
    /// in sled.
    pub async fn open_shared(
        state: &SharedState,
        namespace: &str,
        keys: Option<Arc<DataKeys>>,
    ) -> Result<Self, ServiceError> {
        let tree = |name: String| Tree::Postgres {
            pool: state.data.clone(),
            name,
        };
        let pending = format!("{namespace}/pending");
        let outcomes = format!("{namespace}/outcomes");
        let store = StateStore {
            pending_sealer: Sealer::new(keys.clone(), &pending),
            outcomes_sealer: Sealer::new(keys.clone(), &outcomes),
            pending: tree(pending),
            outcomes: tree(outcomes),
            meta: tree(format!("{namespace}/meta")),
            keys,
        };
        // Instances starting together may both record ids: the last write
        // holds the ids of the keys either seals under, which they share.
        if let Some(ids) = store.check_key_ids(store.meta.get(KEY_IDS).await?.as_deref())? {
            store.meta.insert(KEY_IDS, ids).await?;
        }
        Ok(store)
    }

    /// The meta tree, where the OTP hash key lives too.
    pub(crate) fn meta(&self) -> &Tree {
        &self.meta
    }

    /// Refuses a state that holds values sealed under a data key not
    /// given — at start, naming it, rather than call by call. `recorded` is
    /// what the meta tree holds; the answer is what it must hold before
    /// anything is sealed under the current key, if that changed.
    fn check_key_ids(&self, recorded: Option<&[u8]>) -> Result<Option<Vec<u8>>, ServiceError> {
        let recorded = RecordedKeyIds::parse(recorded);
        match recorded.check(self.keys.as_deref()) {
            Ok(None) => Ok(None),
            Ok(Some(ids)) => Ok(Some(ids.encode())),
            Err(KeyIdsRefusal::NoKeyGiven { recorded }) => Err(ServiceError::Sealed(format!(
                "the provider's state holds values sealed under the data key(s) {}, and no data \
                 key was given",
                quoted_ids(&recorded)
            ))),
            Err(KeyIdsRefusal::Missing { missing, given }) => Err(ServiceError::Sealed(format!(
                "the provider's state holds values sealed under the data key(s) {}, which were not \
                 given (given: {}): give them as previous keys (`--previous-data-key ID=FILE`, or \
                 the switch's `[[data_at_rest.previous_keys]]` for a provider compiled into it); \
                 once a reseal has run with them, they can go",
                quoted_ids(&missing),
                quoted_ids(&given)
            ))),
        }
    }

    /// After a reseal, only the current key seals anything: the others'
    /// ids are dropped, so a start without them is no longer refused.
    pub async fn forget_previous_key_ids(&self) -> Result<(), ServiceError> {
        if let Some(keys) = &self.keys {
            self.meta
                .insert(KEY_IDS, RecordedKeyIds::current_only(keys).encode())
                .await?;
            self.meta.flush()?;
        }
        Ok(())
    }

    pub async fn pending(&self, key: &[u8]) -> Result<Option<PendingEntry>, ServiceError> {
        match self.pending.get(key).await? {
            Some(raw) => Ok(Some(self.pending_sealer.decode(key, &raw)?)),
            None => Ok(None),
        }
    }

    pub async fn final_record(&self, key: &[u8]) -> Result<Option<FinalRecord>, ServiceError> {
        match self.outcomes.get(key).await? {
            Some(raw) => Ok(Some(self.outcomes_sealer.decode(key, &raw)?)),
            None => Ok(None),
        }
    }

    pub async fn put_pending(&self, key: &[u8], entry: &PendingEntry) -> Result<(), ServiceError> {
        self.pending
            .insert(key, self.pending_sealer.encode(key, entry)?)
            .await
    }

    /// The keys of final records the retention pass must write: those
    /// whose customer data is still there and that became final at or
    /// before `cutoff_ms` or do not say when (so they age from now). Only
    /// those are copied, not every key of the tree; an unreadable record is
    /// logged and passed over.
    pub async fn finals_to_age(&self, cutoff_ms: u64) -> Result<Vec<Vec<u8>>, ServiceError> {
        let mut keys = Vec::new();
        self.outcomes
            .for_each(
                &mut |key, raw| match self.outcomes_sealer.decode::<FinalRecord>(key, raw) {
                    Ok(record) if record.dropped_at_ms.is_some() => {}
                    Ok(record) if record.finished_at_ms.is_none_or(|at| at <= cutoff_ms) => {
                        keys.push(key.to_vec())
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "skipping an unreadable final record"),
                },
            )
            .await?;
        Ok(keys)
    }

    /// The keys of pending entries and final records not sealed under the
    /// current data key.
    pub async fn keys_to_reseal(&self) -> Result<ToReseal, ServiceError> {
        Ok(ToReseal {
            pending: self
                .pending
                .keys_where(|raw| self.pending_sealer.needs_reseal(raw))
                .await?,
            finals: self
                .outcomes
                .keys_where(|raw| self.outcomes_sealer.needs_reseal(raw))
                .await?,
        })
    }

    pub async fn remove_pending(&self, key: &[u8]) -> Result<(), ServiceError> {
        self.pending.remove(key).await
    }

    /// Writes the final record, then erases the pending entry. Two single-key
    /// writes, not a sled transaction (each of those costs two synchronous
    /// log writes): a crash between them leaves both, and every read looks
    /// at the final record first, so the leftover pending entry is inert
    /// until [`StateStore::expired`] hands it to the sweep to erase.
    pub async fn finish(&self, key: &[u8], record: &FinalRecord) -> Result<(), ServiceError> {
        self.store_final(key, record).await?;
        self.pending.remove(key).await
    }

    pub async fn store_final(&self, key: &[u8], record: &FinalRecord) -> Result<(), ServiceError> {
        self.outcomes
            .insert(key, self.outcomes_sealer.encode(key, record)?)
            .await
    }

    /// The keys of pending entries whose customer deadline is at or before
    /// `now_ms`, and of entries a crash left beside a final record.
    pub async fn expired(&self, now_ms: u64) -> Result<Vec<Vec<u8>>, ServiceError> {
        // Pending entries are few (conversations in progress): copied, so
        // that the final records can be read for each.
        let mut entries = Vec::new();
        self.pending
            .for_each(&mut |key, raw| entries.push((key.to_vec(), raw.to_vec())))
            .await?;
        let mut expired = Vec::new();
        for (key, raw) in entries {
            // One unreadable entry must not stop the others from expiring.
            match self.pending_sealer.decode::<PendingEntry>(&key, &raw) {
                Ok(entry) if entry.is_expired(now_ms) => expired.push(key),
                Ok(_) if self.outcomes.get(&key).await?.is_some() => expired.push(key),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "skipping an unreadable pending entry"),
            }
        }
        Ok(expired)
    }

    pub async fn pending_len(&self) -> Result<usize, ServiceError> {
        self.pending.len().await
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn a_pending_entry_never_prints_what_the_connector_keeps() {
        let entry = PendingEntry {
            app_id: "app".into(),
            transaction_ref: "t-1".into(),
            request_type: "transfer_funds".into(),
            awaiting: Awaiting::Processing,
            deferred: serde_json::json!({"credential": "customer-refresh-token-0001"}),
            expires_at_ms: None,
            otp_override: false,
            contact: None,
        };
        let printed = format!("{entry:?}");
        assert!(printed.contains("t-1"), "{printed}");
        assert!(!printed.contains("customer-refresh-token"), "{printed}");
    }
}
