//! How a provider microservice's failures cross the wire: a provider that
//! did nothing must be seen by the switch as having done nothing, and one
//! that failed part-way as one that may have acted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::server::{serve_provider, ProviderServer};
use manifold_provider::{
    HopSigner, HopVerifier, Provider, ProviderError, ProviderReply, QueryRequest, RemoteProvider,
    ReverseRequest, TransactRequest, ValidateRequest,
};

const SECRET: &str = "faults-hop-secret-for-tests-0123456789";
const KEY_ID: &str = "faulty";
const LIMIT: Duration = Duration::from_secs(5);

/// Answers every query with the error named by its `transaction_ref`.
struct Faulty;

#[async_trait]
impl Provider for Faulty {
    async fn transact(&self, _: TransactRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn validate(&self, _: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        Err(match request.transaction_ref.as_str() {
            "did-nothing" => ProviderError::Unreachable("its store is full".into()),
            _ => ProviderError::Internal("failed part-way".into()),
        })
    }
    async fn reverse(&self, _: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
}

#[tokio::test]
async fn a_provider_that_did_nothing_says_so_and_one_that_failed_part_way_does_not() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_provider(
        listener,
        Arc::new(Faulty) as Arc<dyn Provider>,
        ProviderServer::new(HopVerifier::new(&SecretString::from(SECRET), KEY_ID, LIMIT)),
        async {
            let _ = stopped.await;
        },
    ));
    let remote = RemoteProvider::new(
        &format!("http://{address}"),
        HopSigner::new(&SecretString::from(SECRET), KEY_ID),
        LIMIT,
    )
    .unwrap();
    let query = |transaction_ref: &str| QueryRequest {
        app_id: "app".into(),
        request_type: "transfer_funds".into(),
        transaction_ref: transaction_ref.into(),
    };

    let nothing = remote.query(query("did-nothing")).await.unwrap_err();
    assert!(
        matches!(&nothing, ProviderError::Unreachable(m) if m.contains("store is full")),
        "{nothing:?}"
    );
    assert!(!nothing.may_have_executed());

    let part_way = remote.query(query("part-way")).await.unwrap_err();
    assert!(part_way.may_have_executed(), "{part_way:?}");

    stop.send(()).unwrap();
    server.await.unwrap();
}
