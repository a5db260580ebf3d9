//! The demo bank's accounts, and postings that move money atomically and once.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

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
    pub destination: String,
    pub destination_masked: String,
    pub amount: u64,
}

impl Posting {
    /// The posting that undoes this one.
    pub fn reversed(&self) -> Posting {
        Posting {
            source: self.destination.clone(),
            destination: self.source.clone(),
            destination_masked: String::new(),
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
    #[error("a ledger record could not be read: {0}")]
    Corrupt(String),
}

pub struct Ledger {
    db: sled::Db,
    accounts: sled::Tree,
    /// Keys of postings already applied: posting twice under one key is a no-op.
    applied: sled::Tree,
    opening_balance: u64,
}

fn decode(bytes: &[u8]) -> Result<Account, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

fn encode(account: &Account) -> Vec<u8> {
    serde_json::to_vec(account).expect("an account always serializes")
}

impl Ledger {
    pub fn open(db: &sled::Db, opening_balance: u64) -> Result<Self, sled::Error> {
        Ok(Ledger {
            db: db.clone(),
            accounts: db.open_tree("demo/accounts")?,
            applied: db.open_tree("demo/postings")?,
            opening_balance,
        })
    }

    fn new_account(&self, number: &str, masked: &str) -> Result<Account, LedgerError> {
        let kind = if number.starts_with("wallet:") {
            "Wallet"
        } else {
            "Current"
        };
        Ok(Account {
            id: 50_000_000_000_000 + self.db.generate_id()?,
            number: number.to_owned(),
            number_masked: masked.to_owned(),
            kind: kind.to_owned(),
            balance: self.opening_balance,
        })
    }

    /// The account, opened with the opening balance on first sight.
    pub fn open_account(&self, number: &str, masked: &str) -> Result<Account, LedgerError> {
        if let Some(bytes) = self.accounts.get(number)? {
            return decode(&bytes);
        }
        let account = self.new_account(number, masked)?;
        // Two first requests may race to open the account; the first one wins.
        match self.accounts.compare_and_swap(
            number,
            None as Option<&[u8]>,
            Some(encode(&account)),
        )? {
            Ok(()) => Ok(account),
            Err(conflict) => decode(&conflict.current.unwrap_or_default()),
        }
    }

    /// Applies `posting` once under `key`: a second call with the same key
    /// changes nothing and succeeds.
    pub fn post(&self, posting: &Posting, key: &[u8]) -> Result<(), LedgerError> {
        // Ids cannot be generated inside a transaction, so a new destination's
        // is reserved up front. Accounts are never removed, so one that exists
        // now still exists inside the transaction.
        let fresh_destination = if self.accounts.contains_key(posting.destination.as_bytes())? {
            None
        } else {
            Some(self.new_account(&posting.destination, &posting.destination_masked)?)
        };
        let outcome = (&self.accounts, &self.applied).transaction(|(accounts, applied)| {
            if applied.get(key)?.is_some() {
                return Ok(());
            }
            let abort = |error: LedgerError| ConflictableTransactionError::Abort(error);
            let mut source = match accounts.get(posting.source.as_bytes())? {
                Some(bytes) => decode(&bytes).map_err(abort)?,
                None => return Err(abort(LedgerError::InsufficientFunds)),
            };
            if source.balance < posting.amount {
                return Err(abort(LedgerError::InsufficientFunds));
            }
            let mut destination = match accounts.get(posting.destination.as_bytes())? {
                Some(bytes) => decode(&bytes).map_err(abort)?,
                None => fresh_destination.clone().ok_or_else(|| {
                    abort(LedgerError::Corrupt(
                        "an existing account disappeared".into(),
                    ))
                })?,
            };
            source.balance -= posting.amount;
            destination.balance = destination.balance.saturating_add(posting.amount);
            accounts.insert(posting.source.as_bytes(), encode(&source))?;
            accounts.insert(posting.destination.as_bytes(), encode(&destination))?;
            applied.insert(key, &[][..])?;
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(error)) => Err(error),
            Err(TransactionError::Storage(error)) => Err(LedgerError::Store(error)),
        }
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

    fn posting(amount: u64) -> Posting {
        Posting {
            source: "bank:058:0123456789".into(),
            destination: "bank:044:9876543210".into(),
            destination_masked: "******3210".into(),
            amount,
        }
    }

    #[test]
    fn a_posting_moves_money_once_per_key_and_reverses() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let ledger = Ledger::open(&db, 1_000).unwrap();
        ledger
            .open_account("bank:058:0123456789", "******6789")
            .unwrap();
        ledger.post(&posting(300), b"t1").unwrap();
        ledger.post(&posting(300), b"t1").unwrap();
        assert_eq!(ledger.balance("bank:058:0123456789").unwrap(), Some(700));
        assert_eq!(ledger.balance("bank:044:9876543210").unwrap(), Some(1_300));
        ledger.post(&posting(300).reversed(), b"t1-rev").unwrap();
        assert_eq!(ledger.balance("bank:058:0123456789").unwrap(), Some(1_000));
        assert_eq!(ledger.balance("bank:044:9876543210").unwrap(), Some(1_000));
    }

    #[test]
    fn an_overdraft_is_refused_and_changes_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let ledger = Ledger::open(&db, 100).unwrap();
        ledger
            .open_account("bank:058:0123456789", "******6789")
            .unwrap();
        assert!(matches!(
            ledger.post(&posting(101), b"t"),
            Err(LedgerError::InsufficientFunds)
        ));
        assert_eq!(ledger.balance("bank:058:0123456789").unwrap(), Some(100));
        assert_eq!(ledger.balance("bank:044:9876543210").unwrap(), None);
    }
}
