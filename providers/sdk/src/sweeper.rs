//! The background sweep that ends conversations nobody finished.
//!
//! Seed 003 wants pending data erased once a transaction is over; a customer
//! who never types the code must not leave it behind. [`Sweeper`] owns a task
//! that calls [`ProviderService::sweep_expired`] every
//! `ServiceSettings::sweep_interval`; dropping the guard stops it.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::connector::Connector;
use crate::service::ProviderService;

/// Stops the sweep when dropped.
#[derive(Debug)]
pub struct Sweeper {
    task: JoinHandle<()>,
}

impl Sweeper {
    /// Starts sweeping `service` on the current tokio runtime.
    pub fn start<C: Connector>(service: Arc<ProviderService<C>>) -> Sweeper {
        let every = service.settings().sweep_interval;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match service.sweep_expired().await {
                    Ok(0) => {}
                    Ok(swept) => tracing::info!(swept, "expired confirmations moved to Failed"),
                    Err(error) => tracing::error!(%error, "sweeping expired confirmations failed"),
                }
            }
        });
        Sweeper { task }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
