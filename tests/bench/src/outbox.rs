//! Reading one-time codes from a development outbox without rereading it.
//!
//! The demo provider delivers each OTP as one JSON line appended to an outbox
//! file ([`OutboxNotifier`](manifold_provider::notify::OutboxNotifier)). The
//! e2e harness rereads the whole file per lookup, which is quadratic over a
//! benchmark run. [`OutboxTail`] instead remembers how far it has read, parses
//! only the lines appended since, and files each code under its recipient
//! (`to`). The benchmark gives every OTP flow its own `mobile_no`, so a code is
//! looked up once, by that number, and then forgotten.
//!
//! The provider appends (and flushes) the line before it answers
//! `WaitingForOTP`, so by the time a client holds that answer the line is in
//! the file: one read after the answer always finds it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use manifold_crypto::SecretString;
use manifold_provider::Notification;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox {path} could not be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("a line of the outbox {path} is not a notification: {reason}")]
    BadLine { path: String, reason: String },
    #[error("no one-time code was delivered for {to}")]
    NoCode { to: String },
}

/// What a tail has cost so far, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailCost {
    pub lookups: u64,
    /// Reads of the file: at most one per lookup, fewer when one read brought
    /// in the lines of several flows.
    pub reads: u64,
    pub bytes_read: u64,
    /// Wall time spent inside [`OutboxTail::code_for`], lock waits included.
    pub busy: Duration,
}

#[derive(Default)]
struct TailState {
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    codes: HashMap<String, SecretString>,
    cost: TailCost,
}

/// Incremental reader of one outbox file.
pub struct OutboxTail {
    path: PathBuf,
    state: Mutex<TailState>,
}

/// The six-digit code in a message body, if there is exactly such a word.
pub fn code_in(body: &str) -> Option<&str> {
    body.split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
}

impl OutboxTail {
    /// Starts at the current end of the file: codes delivered before are ignored.
    pub fn from_end(path: &Path) -> Result<Self, OutboxError> {
        let offset = match std::fs::metadata(path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(unreadable(path, error)),
        };
        Ok(OutboxTail {
            path: path.to_owned(),
            state: Mutex::new(TailState {
                offset,
                ..TailState::default()
            }),
        })
    }

    /// The code most recently delivered for the transaction `key` (or, for
    /// a message that names none, to the destination `key`), removed from
    /// the tail.
    ///
    /// This blocks briefly on a file read; the read is of bytes the provider
    /// just wrote, from the page cache, and is shared by every lookup that
    /// waits on the lock meanwhile.
    pub fn code_for(&self, key: &str) -> Result<SecretString, OutboxError> {
        let started = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.cost.lookups += 1;
        let result = match state.codes.remove(key) {
            Some(code) => Ok(code),
            None => self.read_new(&mut state).and_then(|()| {
                state
                    .codes
                    .remove(key)
                    .ok_or_else(|| OutboxError::NoCode { to: key.to_owned() })
            }),
        };
        state.cost.busy += started.elapsed();
        result
    }

    pub fn cost(&self) -> TailCost {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .cost
    }

    fn read_new(&self, state: &mut TailState) -> Result<(), OutboxError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(unreadable(&self.path, error)),
        };
        file.seek(SeekFrom::Start(state.offset))
            .map_err(|error| unreadable(&self.path, error))?;
        let mut fresh = std::mem::take(&mut state.partial);
        let already = fresh.len();
        let read = file
            .read_to_end(&mut fresh)
            .map_err(|error| unreadable(&self.path, error))?;
        state.offset += read as u64;
        state.cost.reads += 1;
        state.cost.bytes_read += read as u64;
        debug_assert!(fresh.len() == already + read);

        let complete = match fresh.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None => {
                state.partial = fresh;
                return Ok(());
            }
        };
        state.partial = fresh[complete..].to_vec();
        for line in fresh[..complete].split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // The parse error names a position, never the line's content,
            // which holds a code in clear.
            let notification: Notification =
                serde_json::from_slice(line).map_err(|error| OutboxError::BadLine {
                    path: self.path.display().to_string(),
                    reason: format!("line {} column {}", error.line(), error.column()),
                })?;
            // Keyed by the transaction the message names (the demo bank
            // sends every code to its holder on record, one phone for many
            // flows), else by its destination.
            if let Some(code) = code_in(notification.body.expose()) {
                let key = notification
                    .transaction_ref
                    .clone()
                    .unwrap_or_else(|| notification.to.clone());
                state.codes.insert(key, SecretString::new(code));
            }
        }
        Ok(())
    }
}

fn unreadable(path: &Path, error: std::io::Error) -> OutboxError {
    OutboxError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_provider::notify::{Channel, OutboxNotifier};
    use manifold_provider::Notifier;
    use std::io::Write;

    fn message(to: &str, code: &str) -> Notification {
        Notification {
            channel: Channel::Sms,
            to: to.to_owned(),
            subject: Some("Your one-time code".into()),
            body: SecretString::new(format!(
                "Your Manifold demo bank code is {code}. It expires in 5 minutes."
            )),
            transaction_ref: None,
            one_time_code: None,
        }
    }

    #[tokio::test]
    async fn finds_each_code_by_recipient_reading_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let notifier = OutboxNotifier::new(&path);
        // Delivered before the tail starts: must be ignored.
        notifier
            .send(&message("2340000000001", "111111"))
            .await
            .unwrap();
        let tail = OutboxTail::from_end(&path).unwrap();
        assert!(matches!(
            tail.code_for("2340000000001"),
            Err(OutboxError::NoCode { .. })
        ));

        notifier
            .send(&message("2340000000002", "222222"))
            .await
            .unwrap();
        notifier
            .send(&message("2340000000003", "333333"))
            .await
            .unwrap();
        assert_eq!(tail.code_for("2340000000003").unwrap().expose(), "333333");
        // Already read with the previous lookup: no new read.
        let reads_before = tail.cost().reads;
        assert_eq!(tail.code_for("2340000000002").unwrap().expose(), "222222");
        assert_eq!(tail.cost().reads, reads_before);
        // A code is handed out once.
        assert!(tail.code_for("2340000000002").is_err());
        assert_eq!(tail.cost().lookups, 4);
    }

    #[test]
    fn a_line_cut_mid_write_is_completed_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        std::fs::write(&path, b"").unwrap();
        let tail = OutboxTail::from_end(&path).unwrap();
        let line = serde_json::to_string(&message("2340000000009", "987654")).unwrap();
        let (head, rest) = line.split_at(line.len() / 2);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(head.as_bytes()).unwrap();
        assert!(tail.code_for("2340000000009").is_err());
        file.write_all(rest.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
        assert_eq!(tail.code_for("2340000000009").unwrap().expose(), "987654");
    }

    #[test]
    fn a_broken_line_is_reported_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let tail = OutboxTail::from_end(&path).unwrap();
        std::fs::write(&path, b"{\"to\": \"x\", \"body\": 123456}\n").unwrap();
        let error = tail.code_for("x").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(!error.contains("123456"), "{error}");
    }

    #[test]
    fn code_in_takes_the_six_digit_word() {
        assert_eq!(
            code_in("Your code is 004211. It expires in 5 minutes."),
            Some("004211")
        );
        assert_eq!(code_in("no code 12345 here 1234567"), None);
    }
}
