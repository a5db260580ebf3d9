//! The background sweep that ends conversations nobody finished.
//!
//! Seed 003 wants pending data erased once a transaction is over; a customer
//! who never types the code must not leave it behind. [`Sweeper`] owns a task
//! that calls [`ProviderService::sweep_expired`] every
//! `ServiceSettings::sweep_interval`, and, with a retention period,
//! [`ProviderService::sweep_retention`] on its first round and then every
//! hour; dropping the guard stops it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::connector::Connector;
use crate::service::ProviderService;

/// How often the retention pass runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

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
            let mut retention_due = tokio::time::Instant::now();
            loop {
                ticks.tick().await;
                if tokio::time::Instant::now() >= retention_due {
                    retention_due += RETENTION_EVERY;
                    let now_ms = service.now_ms_for_sweeps();
                    match service.sweep_retention(now_ms).await {
                        Ok(0) => {}
                        Ok(dropped) => tracing::info!(
                            dropped,
                            "dropped the customer data of outcomes past the retention period"
                        ),
                        Err(error) => tracing::error!(%error, "the retention pass failed"),
                    }
                }
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
