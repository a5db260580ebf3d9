//! Which provider serves a call, and whether the app may use it.

use std::collections::HashMap;
use std::sync::Arc;

use manifold_config::{ProviderConfig, ServiceGrant};
use manifold_provider::Provider;

use crate::apps::App;
use crate::error::SwitchError;
use crate::limits::{ProviderGate, QueryPacer};

/// One configured provider, ready to call.
pub struct Route {
    pub config: ProviderConfig,
    pub provider: Arc<dyn Provider>,
    /// Its calls in flight and the pacing of its queries, kept across
    /// storage generations.
    pub limits: Arc<ProviderLimits>,
}

/// How much of one provider the switch may use at once, and how often a
/// query may ask it about one transaction.
pub struct ProviderLimits {
    pub gate: ProviderGate,
    pub pacer: QueryPacer,
}

impl ProviderLimits {
    pub fn new(config: &ProviderConfig) -> Arc<ProviderLimits> {
        Arc::new(ProviderLimits {
            gate: ProviderGate::new(&config.name, config.max_concurrent_calls),
            pacer: QueryPacer::new(config.query_interval),
        })
    }
}

impl Route {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Checks the host's `read_only` list against what the provider says of
    /// its services, where it can say (an in-process provider): the switch
    /// writes nothing before calling a `read_only` service, so listing one
    /// that may move money is refused. A remote provider checks each call
    /// instead (`TransactRequest::read_only`).
    pub fn check_read_only(&self) -> Result<(), String> {
        for service in &self.config.services {
            let listed = self.config.read_only.contains(service);
            match self.provider.read_only(service) {
                Some(false) if listed => {
                    return Err(format!(
                        "read_only lists `{service}`, but the provider may move money for it: remove it from read_only"
                    ))
                }
                // Harmless (one flush more per call), but said.
                Some(true) if !listed => tracing::warn!(
                    provider = self.name(),
                    service = %service,
                    "the provider only reads for this service; list it under read_only to save a write and a flush per call"
                ),
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct Router {
    routes: HashMap<String, Arc<Route>>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| (route.config.name.clone(), Arc::new(route)))
            .collect();
        Router { routes }
    }

    /// The provider by name, for calls on an existing transaction: the name
    /// is the one recorded with the app's own transaction, granted when it
    /// began, so its absence (a host that took the provider out since) tells
    /// the app nothing about anybody else's configuration.
    pub fn route(&self, provider: &str) -> Result<Arc<Route>, SwitchError> {
        self.routes
            .get(provider)
            .cloned()
            .ok_or_else(|| SwitchError::UnknownProvider(provider.to_owned()))
    }

    /// Checks a new call against the app's grants first, then the
    /// configuration. An app learns only about its own grants: a
    /// `request_type` or provider outside them is refused the same way
    /// whether or not the host configured it for another app, so no app can
    /// probe what exists beyond what it may use.
    pub fn resolve<'a>(
        &self,
        app: &'a App,
        request_type: &str,
        provider: &str,
    ) -> Result<(Arc<Route>, &'a ServiceGrant), SwitchError> {
        let grant = app
            .config
            .services
            .get(request_type)
            .ok_or_else(|| SwitchError::ServiceNotAllowed(request_type.to_owned()))?;
        if !grant.providers.iter().any(|name| name == provider) {
            return Err(SwitchError::ProviderNotAllowed {
                provider: provider.to_owned(),
                request_type: request_type.to_owned(),
            });
        }
        // The configuration loader refuses a grant naming a provider that is
        // not configured or does not serve the request_type
        // (`config/src/raw.rs`, the apps' `validate`), so neither error below
        // is reached with a configuration it loaded; they remain for a
        // router built from another list of routes, and name only what the
        // app's own grant names.
        let route = self.route(provider)?;
        if !route.config.services.contains(request_type) {
            return Err(SwitchError::ProviderDoesNotServe {
                provider: provider.to_owned(),
                request_type: request_type.to_owned(),
            });
        }
        Ok((route, grant))
    }
}
