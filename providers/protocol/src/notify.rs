//! How providers reach customers: the [`Notifier`] trait.
//!
//! A provider that needs an OTP hands a [`Notification`] to its notifier and
//! never deals with gateways itself. [`OutboxNotifier`] is the development
//! channel: it appends each message to a JSON-lines file that a developer (or a
//! test) reads instead of a phone. The real SMS and e-mail channels (and the
//! client of the switch's notification services) live in `manifold-notify` and
//! implement the same trait.
//!
//! A [`NotifyError`] never quotes the message body, which usually holds an
//! OTP, and names the destination only masked ([`mask_destination`]).

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use manifold_crypto::SecretString;
use serde::{Deserialize, Serialize};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Sms => "SMS",
            Channel::Email => "e-mail",
        })
    }
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
    /// The transaction the message is about, when it is about one. The
    /// outbox keeps it, so a developer (or a test) finds the code of one
    /// transaction among many sent to the same phone; gateways do not send
    /// it to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_ref: Option<String>,
    /// The code the text carries, apart from it: a channel that says it in
    /// its own words takes this instead of `body` (the switch's `/notify/*`
    /// sends no provider's text). Not kept in the outbox.
    #[serde(skip)]
    pub one_time_code: Option<OneTimeCode>,
}

/// A one-time code and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeCode {
    pub code: SecretString,
    pub expires_in_secs: u64,
}

/// Why a message was not sent. Whatever the variant, the provider cannot
/// count on the customer having the message, so it must not leave the
/// transaction waiting for a code (the demo provider answers `Failed`, code
/// `91`). `to` is kept for callers; the message prints it masked.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The channel could not be reached or did not answer in time: a network
    /// failure, a timeout, a broken connection, a file that cannot be written.
    #[error("the {channel} message to {masked} could not be delivered: {reason}", masked = mask_destination(*.channel, .to))]
    Undeliverable {
        channel: Channel,
        to: String,
        reason: String,
    },
    /// The gateway or mail server answered and said no (an HTTP status other
    /// than 2xx, an SMTP rejection, refused credentials).
    #[error("the {channel} gateway refused the message to {masked}: {reason}", masked = mask_destination(*.channel, .to))]
    Refused {
        channel: Channel,
        to: String,
        reason: String,
    },
    /// The destination is not a phone number or e-mail address this channel
    /// can send to; retrying will not help.
    #[error("cannot send an {channel} message to {masked}: {reason}", masked = mask_destination(*.channel, .to))]
    InvalidDestination {
        channel: Channel,
        to: String,
        reason: String,
    },
    /// The switch's notification service refused it for now: the
    /// destination (or this provider) had its hour's messages.
    #[error("the {channel} message to {masked} was refused for now: {limit}", masked = mask_destination(*.channel, .to))]
    RateLimited {
        channel: Channel,
        to: String,
        /// The limit, in the switch's words (destinations masked).
        limit: String,
    },
    /// The channel's own settings are unusable (a bad sender address, a URL
    /// that cannot be used): the host must fix the configuration.
    #[error("the {channel} channel is misconfigured: {reason}")]
    Misconfigured { channel: Channel, reason: String },
}

impl NotifyError {
    pub fn channel(&self) -> Channel {
        match self {
            NotifyError::Undeliverable { channel, .. }
            | NotifyError::Refused { channel, .. }
            | NotifyError::InvalidDestination { channel, .. }
            | NotifyError::RateLimited { channel, .. }
            | NotifyError::Misconfigured { channel, .. } => *channel,
        }
    }
}

/// A destination as it may appear in messages and logs: `2348022****08`,
/// `u***@example.com`.
pub fn mask_destination(channel: Channel, to: &str) -> String {
    match channel {
        Channel::Sms => manifold_crypto::plaintext::mask_msisdn(to),
        Channel::Email => match to.rsplit_once('@') {
            Some((local, domain)) => {
                let first = local.chars().next().unwrap_or('*');
                format!("{first}***@{domain}")
            }
            None => "*".repeat(to.chars().count()),
        },
    }
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Appends each notification as one JSON line to a file. For development and
/// tests only: the file holds OTPs in clear, as a phone's inbox would.
///
/// The file stays open between sends (opening it per send cost an OTP flow
/// three hops to tokio's blocking pool); a send reopens it when the path no
/// longer names the file held, so an outbox a developer deletes or rotates
/// is created again.
#[derive(Debug)]
pub struct OutboxNotifier {
    path: PathBuf,
    // Lines from concurrent sends must not interleave, and the file is
    // written with one `write` of a short line to the page cache: brief
    // enough to hold a plain mutex on a runtime worker.
    open: std::sync::Mutex<Option<OpenOutbox>>,
}

#[derive(Debug)]
struct OpenOutbox {
    file: std::fs::File,
    identity: Option<FileIdentity>,
}

/// What tells one file from another that later takes its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(metadata: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        Some(FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    // Without inode numbers every send opens the file again.
    #[cfg(not(unix))]
    fn of(_metadata: &std::fs::Metadata) -> Option<Self> {
        None
    }
}

impl OutboxNotifier {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxNotifier {
            path: path.into(),
            open: std::sync::Mutex::new(None),
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

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let on_disk = match std::fs::metadata(&self.path) {
            Ok(metadata) => FileIdentity::of(&metadata),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let mut held = match open.take() {
            Some(held) if on_disk.is_some() && held.identity == on_disk => held,
            _ => {
                // The outbox holds codes in clear: readable by this user only.
                let file = manifold_edge::private_files::open_private_append(&self.path)?;
                let identity = FileIdentity::of(&file.metadata()?);
                OpenOutbox { file, identity }
            }
        };
        // A failed write drops the file, so the next send opens it afresh.
        held.file.write_all(line)?;
        if held.identity.is_some() {
            *open = Some(held);
        }
        Ok(())
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
        self.append(&line).map_err(|e| undeliverable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms(to: &str, body: &str) -> Notification {
        Notification {
            channel: Channel::Sms,
            to: to.into(),
            subject: None,
            body: SecretString::from(body.to_owned()),
            transaction_ref: None,
            one_time_code: None,
        }
    }

    #[tokio::test]
    async fn the_outbox_follows_its_path_when_the_file_is_deleted_or_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox").join("messages.jsonl");
        let outbox = OutboxNotifier::new(&path);
        outbox.send(&sms("2348022000001", "first")).await.unwrap();
        outbox.send(&sms("2348022000002", "second")).await.unwrap();
        let bodies = |path: &Path| -> Vec<String> {
            OutboxNotifier::read_all(path)
                .unwrap()
                .into_iter()
                .map(|n| n.body.expose().to_owned())
                .collect()
        };
        assert_eq!(bodies(&path), ["first", "second"]);

        std::fs::remove_file(&path).unwrap();
        outbox.send(&sms("2348022000003", "third")).await.unwrap();
        assert_eq!(bodies(&path), ["third"]);

        let rotated = dir.path().join("outbox").join("messages.old");
        std::fs::rename(&path, &rotated).unwrap();
        outbox.send(&sms("2348022000004", "fourth")).await.unwrap();
        assert_eq!(bodies(&rotated), ["third"]);
        assert_eq!(bodies(&path), ["fourth"]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn destinations_are_masked() {
        assert_eq!(
            mask_destination(Channel::Sms, "2348022000008"),
            "2348022****08"
        );
        assert_eq!(
            mask_destination(Channel::Email, "uju@example.com"),
            "u***@example.com"
        );
        assert_eq!(mask_destination(Channel::Email, "nodomain"), "********");
    }

    #[test]
    fn errors_name_the_channel_and_mask_the_destination() {
        let error = NotifyError::Refused {
            channel: Channel::Sms,
            to: "2348022000008".into(),
            reason: "the gateway answered HTTP 500".into(),
        };
        let text = error.to_string();
        assert_eq!(
            text,
            "the SMS gateway refused the message to 2348022****08: the gateway answered HTTP 500"
        );
        assert_eq!(error.channel(), Channel::Sms);
        let error = NotifyError::Undeliverable {
            channel: Channel::Email,
            to: "uju@example.com".into(),
            reason: "timed out".into(),
        };
        assert!(!error.to_string().contains("uju@"));
    }
}
