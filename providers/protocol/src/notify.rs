//! How providers reach customers: the [`Notifier`] trait.
//!
//! A provider that needs an OTP hands a [`Notification`] to its notifier and
//! never deals with gateways itself. [`OutboxNotifier`] is the development
//! channel: it appends each message to a JSON-lines file that a developer (or a
//! test) reads instead of a phone. Real SMS and e-mail channels implement the
//! same trait.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use manifold_crypto::SecretString;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

/// One message to one customer. The body usually carries an OTP, so it is a
/// secret: it never prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub channel: Channel,
    /// An MSISDN for SMS, an address for e-mail.
    pub to: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the {channel:?} message to {to} could not be delivered: {reason}")]
    Undeliverable {
        channel: Channel,
        to: String,
        reason: String,
    },
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Appends each notification as one JSON line to a file. For development and
/// tests only: the file holds OTPs in clear, as a phone's inbox would.
#[derive(Debug)]
pub struct OutboxNotifier {
    path: PathBuf,
    // Lines from concurrent sends must not interleave.
    write_lock: Mutex<()>,
}

impl OutboxNotifier {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxNotifier {
            path: path.into(),
            write_lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every notification delivered to the outbox at `path`, oldest first.
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Notification>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
            })
            .collect()
    }
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let undeliverable = |reason: String| NotifyError::Undeliverable {
            channel: notification.channel,
            to: notification.to.clone(),
            reason,
        };
        let mut line =
            serde_json::to_vec(notification).map_err(|e| undeliverable(e.to_string()))?;
        line.push(b'\n');
        let _guard = self.write_lock.lock().await;
        if let Some(parent) = self.path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| undeliverable(e.to_string()))?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| undeliverable(e.to_string()))?;
        file.write_all(&line)
            .await
            .map_err(|e| undeliverable(e.to_string()))?;
        file.flush()
            .await
            .map_err(|e| undeliverable(e.to_string()))?;
        Ok(())
    }
}
