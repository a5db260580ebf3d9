//! [`ErrorId`]: what an answer says of a failure whose detail stays in the log.
//!
//! A failure inside a server (a store that cannot read its records, a task
//! that panicked) is described by text about the server's insides: file
//! names, record keys, library messages. None of that belongs in an answer to
//! the caller. The answer carries an opaque id instead, and the one log line
//! with the whole detail carries the same id, so the host can find what the
//! caller reports. The switch's 5xx answers use it; it lives here, beside
//! [`describe_json_error`](crate::server::describe_json_error), with the
//! other rules for what a Manifold server's answers may say.

use std::fmt;

use rand::RngCore;

/// 64 random bits, shown as 16 lowercase hex digits. Random rather than
/// counted, so it says nothing about how many failures came before or when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorId(u64);

impl ErrorId {
    pub fn new() -> ErrorId {
        ErrorId(rand::thread_rng().next_u64())
    }
}

impl Default for ErrorId {
    fn default() -> Self {
        ErrorId::new()
    }
}

impl fmt::Display for ErrorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_sixteen_hex_digits_and_ids_differ() {
        let (a, b) = (ErrorId::new(), ErrorId::new());
        for id in [a, b] {
            let text = id.to_string();
            assert_eq!(text.len(), 16, "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        }
        assert_ne!(a, b);
    }
}
