//! [`RemoteProvider`]: a provider microservice reached over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::provider::{Provider, ProviderError};
use crate::wire::{
    fault, ProviderFault, ProviderReply, QueryRequest, ReverseRequest, TransactRequest,
    ValidateRequest,
};

/// Talks the switch→provider protocol to a microservice at `base_url`.
#[derive(Debug, Clone)]
pub struct RemoteProvider {
    base_url: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl RemoteProvider {
    /// `timeout` bounds each whole call; a call that exceeds it is reported as
    /// [`ProviderError::TimedOut`] because the provider may still act on it.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ProviderError::Internal(format!("HTTP client: {error}")))?;
        Ok(RemoteProvider {
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
            client,
        })
    }

    async fn post<Req: Serialize, Reply: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Reply, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.classify(error))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|error| ProviderError::BadReply(format!("{path}: {error}")));
        }
        let fault: Option<ProviderFault> = serde_json::from_slice(&bytes).ok();
        match (status.as_u16(), fault) {
            (404, Some(fault)) if fault.error == fault::UNKNOWN_TRANSACTION => {
                Err(ProviderError::UnknownTransaction)
            }
            (400, Some(fault)) => Err(ProviderError::Rejected(fault.message)),
            (_, Some(fault)) => Err(ProviderError::BadReply(format!(
                "{path}: HTTP {status}: {}",
                fault.message
            ))),
            (_, None) => Err(ProviderError::BadReply(format!("{path}: HTTP {status}"))),
        }
    }

    fn classify(&self, error: reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            ProviderError::TimedOut(self.timeout)
        } else if error.is_connect() {
            // The connection was never established, so the request was never sent.
            ProviderError::Unreachable(error.to_string())
        } else {
            // Anything else may have failed after the provider read the request.
            ProviderError::BadReply(error.to_string())
        }
    }
}

#[async_trait]
impl Provider for RemoteProvider {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        self.post("/transact", &request).await
    }

    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        self.post("/transact/validate", &request).await
    }

    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        self.post("/transact/query", &request).await
    }

    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        self.post("/transact/reverse", &request).await
    }
}
