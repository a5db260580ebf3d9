//! A `/transact/query` racing the abandonment of the call it reports.
//!
//! A first `/transact` whose provider call provably had no effect removes its
//! record, then its claim (two single-key writes, see the store's docs). A
//! query that read the record before that and looks for the claim after it
//! must not report the transaction `Pending`: it is gone. The crash test
//! found this interleaving under load; here a store wrapper makes it happen
//! every time, by abandoning the call just before the query reads the claim.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use manifold_config::SwitchConfig;
use manifold_edge::signature::SignatureCheck;
use manifold_provider::{
    GroupCommit, Provider, ProviderError, ProviderReply, QueryRequest, ReverseRequest, Status,
    TransactRequest, ValidateRequest,
};
use manifold_switch::apps::AppRegistry;
use manifold_switch::engine::{now_ms, Engine};
use manifold_switch::routing::{ProviderLimits, Route, Router};
use manifold_switch::signed::{SpentSignatures, VerifiedCall};
use manifold_switch::store::{
    Begin, Change, Claim, ClaimsLiveIn, Durable, HistoryEntry, KnownRequest, MeteredCall,
    Operation, RequestEntry, RequestState, SledStore, Store, StoreError, StoreOptions,
    StoredAnswer, TransactionRecord,
};
use manifold_switch::SwitchError;

const API_KEY: &str = "race-app-key-0123456789abcdef";

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
[data_at_rest]
key_id = "test"
key = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87"
[storage]
path = "unused"
[[providers]]
name = "bank"
mode = "remote"
url = "http://127.0.0.1:9"
services = ["transfer_funds"]
timeout_ms = 5000
secret = "race-provider-hop-secret-0123456789abcdef"
[[apps]]
id = "race"
api_key = "race-app-key-0123456789abcdef"
secret = "race-app-secret-0123456789abcdef0123456789"
require_signature = false
[apps.services.transfer_funds]
providers = ["bank"]
otp_override = true
"#;

/// A provider that has never heard of any transaction (the abandoned call
/// never reached it).
struct NeverReached;

#[async_trait]
impl Provider for NeverReached {
    async fn transact(&self, _: TransactRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::Unreachable("connection refused".into()))
    }
    async fn validate(&self, _: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn query(&self, _: QueryRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn reverse(&self, _: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
}

/// The sled store, abandoning one armed call just before the next claim
/// look-up, as a concurrent `/transact` would.
struct AbandonBeforeClaimRead {
    inner: SledStore,
    armed: Mutex<Option<(String, String, String)>>,
}

#[async_trait]
impl Store for AbandonBeforeClaimRead {
    fn claims_live_in(&self) -> ClaimsLiveIn {
        self.inner.claims_live_in()
    }
    async fn begin_transaction(
        &self,
        transaction: &TransactionRecord,
    ) -> Result<Begin, StoreError> {
        self.inner.begin_transaction(transaction).await
    }
    async fn begin_enquiry(&self, transaction: &TransactionRecord) -> Result<Begin, StoreError> {
        self.inner.begin_enquiry(transaction).await
    }
    async fn claim_request(
        &self,
        app_id: &str,
        transaction_ref: &str,
        request: &RequestEntry,
    ) -> Result<Claim, StoreError> {
        self.inner
            .claim_request(app_id, transaction_ref, request)
            .await
    }
    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<KnownRequest>, StoreError> {
        let armed = self.armed.lock().unwrap().take();
        if let Some((app, abandoned_request, abandoned_transaction)) = armed {
            self.inner
                .abandon(&app, &abandoned_request, &abandoned_transaction, true)
                .await?;
        }
        self.inner.request(app_id, request_ref).await
    }
    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: &str,
        began_transaction: bool,
    ) -> Result<(), StoreError> {
        self.inner
            .abandon(app_id, request_ref, transaction_ref, began_transaction)
            .await
    }
    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        self.inner.transaction(app_id, transaction_ref).await
    }
    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, StoredAnswer)>,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        self.inner
            .update_transaction(app_id, transaction_ref, change, answer)
            .await
    }
    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError> {
        self.inner.meter(call).await
    }
    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError> {
        self.inner.metered_calls(app_id, from_ms, until_ms).await
    }
    async fn drop_customer_data(&self, before_ms: u64, now_ms: u64) -> Result<usize, StoreError> {
        self.inner.drop_customer_data(before_ms, now_ms).await
    }
    async fn transaction_count(&self) -> Result<usize, StoreError> {
        self.inner.transaction_count().await
    }
    async fn durable(&self) -> Result<Durable, StoreError> {
        self.inner.durable().await
    }
}

#[tokio::test]
async fn a_query_never_reports_pending_for_a_call_abandoned_while_it_looked() {
    let config = SwitchConfig::from_toml(CONFIG, Path::new("race.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    let db = SledStore::open_db(dir.path(), &options).unwrap();
    let inner = SledStore::open(
        dir.path(),
        &db,
        GroupCommit::start(db.clone()).unwrap(),
        &options,
    )
    .unwrap();
    let store = Arc::new(AbandonBeforeClaimRead {
        inner,
        armed: Mutex::new(None),
    });
    let now = now_ms();
    let record = TransactionRecord {
        app_id: "race".into(),
        transaction_ref: "t-1".into(),
        request_type: "transfer_funds".into(),
        provider: "bank".into(),
        amount: 5_000,
        status: Status::Pending,
        created_at_ms: now,
        updated_at_ms: now,
        last_reply: None,
        history: vec![HistoryEntry {
            at_ms: now,
            operation: Operation::Transact,
            request_ref: Some("r-1".into()),
            status: Status::Pending,
            provider_response_code: None,
            message: "Received; sent to the provider".into(),
        }],
        reversal: None,
        customer_data_dropped_at_ms: None,
        requests: vec![RequestEntry {
            request_ref: "r-1".into(),
            operation: Operation::Transact,
            fingerprint: [0xf; 32],
            state: RequestState::InFlight { started_at_ms: now },
        }],
    };
    assert_eq!(
        store.begin_transaction(&record).await.unwrap(),
        Begin::Started
    );
    let bank = config.provider("bank").unwrap();
    let route = Route {
        config: bank.clone(),
        provider: Arc::new(NeverReached),
        limits: ProviderLimits::new(bank),
    };
    let engine = Engine::new(store.clone() as Arc<dyn Store>, Router::new(vec![route]));
    let app = AppRegistry::new(&config.apps)
        .authenticate(Some(&format!("Bearer {API_KEY}")))
        .expect("the app authenticates");
    let query = serde_json::json!({
        "request_ref": "q-1",
        "auth": {"auth_provider": "bank"},
        "transaction": {"transaction_ref": "t-1"}
    })
    .to_string();
    // An unsigned call of an app that may send one, as the HTTP edge would
    // hand it over.
    let check = SignatureCheck::new(std::time::Duration::from_secs(300));
    let call = VerifiedCall::verify(
        app,
        "POST",
        "/transact/query",
        &http::HeaderMap::new(),
        bytes::Bytes::from(query),
        &check,
        &std::sync::Arc::new(SpentSignatures::new(&check)),
    )
    .expect("the app may call unsigned");

    // Undisturbed, the first call is still within its timeout: in progress.
    let early = engine.query(&call).await;
    assert!(
        matches!(early, Err(SwitchError::RequestInProgress(_))),
        "{early:?}"
    );

    *store.armed.lock().unwrap() = Some(("race".into(), "r-1".into(), "t-1".into()));
    let raced = engine.query(&call).await;
    assert!(
        matches!(raced, Err(SwitchError::TransactionNotFound(_))),
        "a query racing the abandonment answered {:?}",
        raced.map(|answer| answer.body)
    );
    assert_eq!(store.transaction("race", "t-1").await.unwrap(), None);
}
