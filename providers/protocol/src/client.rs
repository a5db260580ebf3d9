//! [`RemoteProvider`]: a provider microservice reached over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::hop::HopSigner;
use crate::outbound::{self, read_capped, OutboundOptions, ReadError, DEFAULT_MAX_RESPONSE_BYTES};
use crate::provider::{Provider, ProviderError};
use crate::wire::{
    fault, ProviderFault, ProviderReply, QueryRequest, ReverseRequest, TransactRequest,
    ValidateRequest,
};

/// Talks the switch→provider protocol to a microservice at `base_url`,
/// signing every call ([`HopSigner`]).
#[derive(Debug, Clone)]
pub struct RemoteProvider {
    base_url: reqwest::Url,
    timeout: Duration,
    client: reqwest::Client,
    signer: HopSigner,
}

impl RemoteProvider {
    /// `timeout` bounds each whole call; a call that exceeds it is reported as
    /// [`ProviderError::TimedOut`] because the provider may still act on it.
    pub fn new(
        base_url: &str,
        signer: HopSigner,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        RemoteProvider::with_options(base_url, signer, OutboundOptions::with_timeout(timeout))
    }

    /// As [`RemoteProvider::new`], with the client's options spelt out (a CA
    /// file for a private PKI, for instance).
    pub fn with_options(
        base_url: &str,
        signer: HopSigner,
        mut options: OutboundOptions,
    ) -> Result<Self, ProviderError> {
        let base_url = reqwest::Url::parse(base_url.trim_end_matches('/'))
            .map_err(|error| ProviderError::Internal(format!("provider URL: {error}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(ProviderError::Internal(
                "provider URL: must be an http:// or https:// base URL".into(),
            ));
        }
        // Decrypted source details cross this hop.
        outbound::check_transport(&base_url, options.insecure_http)
            .map_err(|error| ProviderError::Internal(format!("provider URL: {error}")))?;
        options.pool_max_idle_per_host = options.pool_max_idle_per_host.max(256);
        let client = outbound::client(&options)
            .map_err(|error| ProviderError::Internal(error.to_string()))?;
        Ok(RemoteProvider {
            base_url,
            timeout: options.timeout,
            client,
            signer,
        })
    }

    async fn post<Req: Serialize, Reply: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Reply, ProviderError> {
        let mut url = self.base_url.clone();
        // The signature covers the path the provider sees: a base URL's own
        // path prefix included.
        let full_path = format!("{}{path}", self.base_url.path().trim_end_matches('/'));
        url.set_path(&full_path);
        let body = serde_json::to_vec(body)
            .map_err(|error| ProviderError::Internal(format!("{path}: {error}")))?;
        let signed = self
            .signer
            .sign("POST", url.path(), &body)
            .map_err(|error| ProviderError::Internal(format!("signing {path}: {error}")))?;
        let mut request = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .build()
            .map_err(|error| ProviderError::Internal(format!("{path}: {error}")))?;
        signed.apply(request.headers_mut());
        if let Some(id) = crate::request_id::current() {
            if let Ok(value) = http::HeaderValue::from_str(&id) {
                request
                    .headers_mut()
                    .insert(crate::request_id::REQUEST_ID_HEADER, value);
            }
        }
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|error| self.classify(error))?;
        let status = response.status();
        let bytes = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                ReadError::Http(error) => self.classify(error),
                too_large => ProviderError::BadReply(format!("{path}: {too_large}")),
            })?;
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
            // The provider refused our signature before doing anything: the
            // hop's keys or clocks disagree, which only the host can fix.
            (401, fault) => Err(ProviderError::Unauthenticated(
                fault.map(|fault| fault.message).unwrap_or_default(),
            )),
            (429, Some(fault)) if fault.error == fault::TOO_MANY_AUTH_FAILURES => {
                Err(ProviderError::Unauthenticated(fault.message))
            }
            // Refused before anything was looked at: as good as unreachable.
            (503, Some(fault)) if fault.error == fault::BUSY => {
                Err(ProviderError::Unreachable(fault.message))
            }
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
