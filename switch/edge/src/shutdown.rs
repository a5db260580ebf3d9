//! [`shutdown_signal`]: what a binary passes to [`serve`](crate::serve()) as
//! its shutdown trigger.
//!
//! `serve` takes the trigger as a future so that tests pass their own; the
//! binaries (the switch, every provider) all stop on the same signals, so
//! the one definition lives here.

/// Completes on SIGINT or SIGTERM (on SIGINT, Ctrl-C, elsewhere).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(error) => {
                tracing::warn!(%error, "SIGTERM cannot be handled; stopping on SIGINT only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
