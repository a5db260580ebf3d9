//! The demo bank's accounts, and postings that move money atomically and once.
//!
//! The ledger stands for the upstream bank's own books, so it lives in a sled
//! database of its own, apart from the SDK's state (which is in the switch's
//! database when the bank runs in-process, in the provider's `--data` as a
//! microservice): like a real bank's, its books hold account numbers, and
//! nothing the switch or the SDK stores needs to. And like a real bank, it
//! makes a posting durable before it answers ([`Ledger::post`]), with a
//! [`GroupCommit`] of its own.

use std::path::Path;

use manifold_edge::private_files::{secure_data_dir, secure_data_dir_or_warn};
use manifold_provider::durable::DurabilityError;
use manifold_provider::GroupCommit;
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::Transactional;

/// sled's page cache for the ledger: it holds one small record per account
/// and per posting, and an in-process bank shares the switch's memory
/// budget (sled's own default is 1 GiB).
pub const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;

/// Account ids are this plus a counter, as the bank has always shown them.
const ACCOUNT_ID_BASE: u64 = 50_000_000_000_000;
/// The key, in the `meta` tree, of the next account's counter.
const NEXT_ACCOUNT: &[u8] = b"next_account";
/// The trees a database kept the ledger in before it had one of its own.
const FORMER_ACCOUNTS: &str = "demo/accounts";
const FORMER_POSTINGS: &str = "demo/postings";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: u64,
    /// `bank:<bank_code>:<account_number>` or `wallet:<wallet_id>`.
    pub number: String,
    pub number_masked: String,
    pub kind: String,
    /// Minor units.
    pub balance: u64,
}

/// Money moving from one account to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub source: String,
    /// Postings stored before this field was kept read as "".
    #[serde(default)]
    pub source_masked: String,
    pub destination: String,
    pub destination_masked: String,
    pub amount: u64,
}

impl Posting {
    /// The posting that undoes this one.
    pub fn reversed(&self) -> Posting {
        Posting {
            source: self.destination.clone(),
            source_masked: self.destination_masked.clone(),
            destination: self.source.clone(),
            destination_masked: self.source_masked.clone(),
            amount: self.amount,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("the ledger store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("the ledger could not make a posting durable: {0}")]
    NotDurable(#[from] DurabilityError),
    #[error("a ledger record could not be read: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for LedgerError {
    fn from(error: std::io::Error) -> Self {
        LedgerError::Store(sled::Error::Io(error))
    }
}

pub struct Ledger {
    accounts: sled::Tree,
    /// Keys of postings already applied: posting twice under one key is a no-op.
    applied: sled::Tree,
    /// The account counter.
    meta: sled::Tree,
    commit: GroupCommit,
    opening_balance: u64,
}

fn decode(bytes: &[u8]) -> Result<Account, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

fn encode(account: &Account) -> Vec<u8> {
    serde_json::to_vec(account).expect("an account always serializes")
}

fn decode_counter(bytes: &[u8]) -> Result<u64, LedgerError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| LedgerError::Corrupt("the account counter".into()))
}

fn abort<T>(error: LedgerError) -> ConflictableTransactionResult<T, LedgerError> {
    Err(ConflictableTransactionError::Abort(error))
}

fn finish<T>(outcome: Result<T, TransactionError<LedgerError>>) -> Result<T, LedgerError> {
    match outcome {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(error)) => Err(error),
        Err(TransactionError::Storage(error)) => Err(LedgerError::Store(error)),
    }
}

impl Ledger {
    /// Opens (or creates) the ledger's database in `dir`, private to this
    /// user like the rest of the bank's data (the directory 0700, its files
    /// 0600), with its own group commit.
    pub fn open(dir: &Path, opening_balance: u64) -> Result<Self, LedgerError> {
        secure_data_dir_or_warn(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()?;
        secure_data_dir(dir)?;
        Ok(Ledger {
            accounts: db.open_tree("accounts")?,
            applied: db.open_tree("postings")?,
            meta: db.open_tree("meta")?,
            commit: GroupCommit::start(db)?,
            opening_balance,
        })
    }

    /// Moves in the ledger that `db` kept before the ledger had a database
    /// of its own (trees `demo/accounts` and `demo/postings` beside the
    /// SDK's state), then drops those trees, so that the account numbers
    /// leave `db` (sled reclaims their pages as it compacts). Returns how
    /// many accounts were moved. Safe to repeat after a crash: what the
    /// ledger already has is kept, and the trees are dropped only once the
    /// ledger is on disk.
    pub fn take_over(&self, db: &sled::Db) -> Result<usize, LedgerError> {
        let former = db.tree_names();
        let kept = |name: &str| former.iter().any(|tree| tree.as_ref() == name.as_bytes());
        if !kept(FORMER_ACCOUNTS) && !kept(FORMER_POSTINGS) {
            return Ok(0);
        }
        let mut moved = 0;
        let mut next = match self.meta.get(NEXT_ACCOUNT)? {
            Some(bytes) => decode_counter(&bytes)?,
            None => 0,
        };
        for entry in db.open_tree(FORMER_ACCOUNTS)?.iter() {
            let (number, bytes) = entry?;
            let account = decode(&bytes)?;
            next = next.max(account.id.saturating_sub(ACCOUNT_ID_BASE) + 1);
            let absent =
                self.accounts
                    .compare_and_swap(number, None as Option<&[u8]>, Some(bytes))?;
            moved += usize::from(absent.is_ok());
        }
        for entry in db.open_tree(FORMER_POSTINGS)?.iter() {
            let (key, value) = entry?;
            let _ = self
                .applied
                .compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
        }
        self.meta.insert(NEXT_ACCOUNT, &next.to_be_bytes()[..])?;
        self.meta.flush()?;
        db.drop_tree(FORMER_ACCOUNTS)?;
        db.drop_tree(FORMER_POSTINGS)?;
        db.flush()?;
        Ok(moved)
    }

    /// A new account's record, its id taken from the counter in `meta`.
    fn new_account(
        &self,
        meta: &TransactionalTree,
        number: &str,
        masked: &str,
    ) -> ConflictableTransactionResult<Account, LedgerError> {
        let next = match meta.get(NEXT_ACCOUNT)? {
            Some(bytes) => match decode_counter(&bytes) {
                Ok(next) => next,
                Err(error) => return abort(error),
            },
            None => 0,
        };
        meta.insert(NEXT_ACCOUNT, &(next + 1).to_be_bytes()[..])?;
        let kind = if number.starts_with("wallet:") {
            "Wallet"
        } else {
            "Current"
        };
        Ok(Account {
            id: ACCOUNT_ID_BASE + next,
            number: number.to_owned(),
            number_masked: masked.to_owned(),
            kind: kind.to_owned(),
            balance: self.opening_balance,
        })
    }

    /// The account, opened with the opening balance on first sight.
    ///
    /// Opening one is not waited for: it moves no money, and a crash that
    /// loses it only means it is opened again, with the same opening
    /// balance, on its next sight — a posting drawing on it included (a
    /// transfer is checked against an account its `start` opened, and
    /// posted after a crash may have lost that account), which then makes
    /// it durable along with itself.
    pub fn open_account(&self, number: &str, masked: &str) -> Result<Account, LedgerError> {
        if let Some(bytes) = self.accounts.get(number)? {
            return decode(&bytes);
        }
        // Two first requests may race to open the account; the first one wins.
        finish(
            (&self.accounts, &self.meta).transaction(|(accounts, meta)| {
                if let Some(bytes) = accounts.get(number)? {
                    return decode(&bytes).or_else(abort);
                }
                let account = self.new_account(meta, number, masked)?;
                accounts.insert(number, encode(&account))?;
                Ok(account)
            }),
        )
    }

    /// Applies `posting` once under `key`, and answers once it is on disk:
    /// a second call with the same key changes nothing and succeeds (after
    /// waiting for the first to be durable too). An error other than
    /// [`LedgerError::InsufficientFunds`] leaves it unknown whether the
    /// posting was applied; posting again under the same key settles it.
    pub async fn post(&self, posting: &Posting, key: &[u8]) -> Result<(), LedgerError> {
        self.apply(posting, key)?;
        self.commit.durable().await?;
        Ok(())
    }

    fn apply(&self, posting: &Posting, key: &[u8]) -> Result<(), LedgerError> {
        finish((&self.accounts, &self.applied, &self.meta).transaction(
            |(accounts, applied, meta)| {
                if applied.get(key)?.is_some() {
                    return Ok(());
                }
                let mut source = match accounts.get(posting.source.as_bytes())? {
                    Some(bytes) => decode(&bytes).or_else(abort)?,
                    None => self.new_account(meta, &posting.source, &posting.source_masked)?,
                };
                if source.balance < posting.amount {
                    return abort(LedgerError::InsufficientFunds);
                }
                let mut destination = match accounts.get(posting.destination.as_bytes())? {
                    Some(bytes) => decode(&bytes).or_else(abort)?,
                    None => {
                        self.new_account(meta, &posting.destination, &posting.destination_masked)?
                    }
                };
                source.balance -= posting.amount;
                destination.balance = destination.balance.saturating_add(posting.amount);
                accounts.insert(posting.source.as_bytes(), encode(&source))?;
                accounts.insert(posting.destination.as_bytes(), encode(&destination))?;
                applied.insert(key, &[][..])?;
                Ok(())
            },
        ))
    }

    pub fn balance(&self, number: &str) -> Result<Option<u64>, LedgerError> {
        Ok(match self.accounts.get(number)? {
            Some(bytes) => Some(decode(&bytes)?.balance),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "bank:058:0123456789";
    const DESTINATION: &str = "bank:044:9876543210";

    fn posting(amount: u64) -> Posting {
        Posting {
            source: SOURCE.into(),
            source_masked: "******6789".into(),
            destination: DESTINATION.into(),
            destination_masked: "******3210".into(),
            amount,
        }
    }

    #[tokio::test]
    async fn a_posting_moves_money_once_per_key_and_reverses() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), 1_000).unwrap();
        ledger.open_account(SOURCE, "******6789").unwrap();
        ledger.post(&posting(300), b"t1").await.unwrap();
        ledger.post(&posting(300), b"t1").await.unwrap();
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(700));
        assert_eq!(ledger.balance(DESTINATION).unwrap(), Some(1_300));
        ledger
            .post(&posting(300).reversed(), b"t1-rev")
            .await
            .unwrap();
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(1_000));
        assert_eq!(ledger.balance(DESTINATION).unwrap(), Some(1_000));
    }

    #[tokio::test]
    async fn an_overdraft_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), 100).unwrap();
        ledger.open_account(SOURCE, "******6789").unwrap();
        assert!(matches!(
            ledger.post(&posting(101), b"t").await,
            Err(LedgerError::InsufficientFunds)
        ));
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(100));
        assert_eq!(ledger.balance(DESTINATION).unwrap(), None);
    }

    /// An account opened on first sight is not waited for, so a crash may
    /// lose it after a transfer was checked against it: posting from it
    /// opens it again, with the same opening balance.
    #[tokio::test]
    async fn a_posting_from_an_account_not_yet_kept_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), 1_000).unwrap();
        ledger.post(&posting(300), b"t1").await.unwrap();
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(700));
        assert_eq!(ledger.balance(DESTINATION).unwrap(), Some(1_300));
        assert!(matches!(
            ledger.post(&posting(701), b"t2").await,
            Err(LedgerError::InsufficientFunds)
        ));
    }

    /// The ledger is its directory: reopened, it has what was posted, and
    /// its group commit lets go of the database once the ledger is dropped.
    #[tokio::test]
    async fn a_reopened_ledger_has_its_postings() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path(), 1_000).unwrap();
            ledger.open_account(SOURCE, "******6789").unwrap();
            ledger.post(&posting(250), b"t1").await.unwrap();
        }
        // The group commit's thread lets go of the database shortly after.
        let ledger = (0..100)
            .find_map(|_| {
                Ledger::open(dir.path(), 1_000)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the ledger reopens");
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(750));
        assert_eq!(ledger.balance(DESTINATION).unwrap(), Some(1_250));
    }

    #[test]
    fn accounts_get_ids_in_the_order_they_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), 1_000).unwrap();
        let first = ledger.open_account(SOURCE, "******6789").unwrap();
        let again = ledger.open_account(SOURCE, "******6789").unwrap();
        let second = ledger.open_account("wallet:w-1", "w-1").unwrap();
        assert_eq!(first.id, ACCOUNT_ID_BASE);
        assert_eq!(again.id, first.id);
        assert_eq!(
            (second.id, second.kind.as_str()),
            (ACCOUNT_ID_BASE + 1, "Wallet")
        );
    }

    /// The ledger a database kept inside it before is moved out, and the
    /// account numbers leave that database.
    #[tokio::test]
    async fn a_former_ledger_is_taken_over_and_dropped() {
        let shared = sled::Config::new().temporary(true).open().unwrap();
        let former = Account {
            id: ACCOUNT_ID_BASE + 7,
            number: SOURCE.into(),
            number_masked: "******6789".into(),
            kind: "Current".into(),
            balance: 400,
        };
        shared
            .open_tree(FORMER_ACCOUNTS)
            .unwrap()
            .insert(SOURCE, encode(&former))
            .unwrap();
        shared
            .open_tree(FORMER_POSTINGS)
            .unwrap()
            .insert(b"old-key", &[][..])
            .unwrap();
        shared.insert("sdk-state", &b"kept"[..]).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), 1_000).unwrap();
        assert_eq!(ledger.take_over(&shared).unwrap(), 1);
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(400));
        // The key already applied stays applied: posting under it is a no-op.
        ledger.post(&posting(100), b"old-key").await.unwrap();
        assert_eq!(ledger.balance(SOURCE).unwrap(), Some(400));
        // New accounts are numbered after the moved ones.
        let new = ledger.open_account("wallet:w-1", "w-1").unwrap();
        assert_eq!(new.id, ACCOUNT_ID_BASE + 8);

        let names: Vec<_> = shared.tree_names();
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == FORMER_ACCOUNTS.as_bytes()
                    || n.as_ref() == FORMER_POSTINGS.as_bytes()),
            "the former trees are dropped"
        );
        assert_eq!(
            shared.get("sdk-state").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        // Nothing to do a second time.
        assert_eq!(ledger.take_over(&shared).unwrap(), 0);
    }
}
