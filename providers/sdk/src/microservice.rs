//! Running a connector as its own provider microservice.
//!
//! [`run`] is what a provider's `main.rs` calls after parsing its arguments:
//! it serves the switch→provider protocol on the listener (with `/health`
//! and `/stats`), sweeps expired confirmations in the background, and on
//! shutdown lets in-flight calls finish and flushes the store.
//! [`run_with_options`] is the same with the edge's limits, timeouts and TLS
//! chosen by the caller.

use std::future::Future;
use std::sync::Arc;

use manifold_edge::EdgeOptions;
use manifold_provider::server::{provider_edge_options, serve_provider};
use manifold_provider::{GroupCommit, Provider};
use tokio::net::TcpListener;

use crate::connector::Connector;
use crate::service::ProviderService;
use crate::sweeper::Sweeper;

/// Serves `service` on `listener` until `shutdown` completes, with the
/// edge options for a provider ([`provider_edge_options`]: plain HTTP).
pub async fn run<C: Connector>(
    listener: TcpListener,
    service: Arc<ProviderService<C>>,
    commit: GroupCommit,
    shutdown: impl Future<Output = ()>,
) {
    run_with_options(listener, service, commit, provider_edge_options(), shutdown).await
}

/// As [`run`], with the edge's limits, timeouts and TLS in `options`.
pub async fn run_with_options<C: Connector>(
    listener: TcpListener,
    service: Arc<ProviderService<C>>,
    commit: GroupCommit,
    options: EdgeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let sweeper = Sweeper::start(service.clone());
    serve_provider(listener, service as Arc<dyn Provider>, options, shutdown).await;
    drop(sweeper);
    if let Err(error) = commit.durable().await {
        tracing::error!(%error, "final flush failed");
    }
}
