//! The id of the app request a provider call serves, carried to the
//! provider in [`REQUEST_ID_HEADER`] so that the switch's log line and the
//! provider's can be matched.
//!
//! The switch runs each call's work inside [`scope`]; [`RemoteProvider`](crate::RemoteProvider)
//! reads [`current`] and sends it; the provider's
//! server puts a valid one in its log span. The header is not signed: it is
//! a label for logs, so a receiver accepts only a short run of letters,
//! digits, `-` and `_` ([`is_valid`]) and ignores anything else.

use std::future::Future;

/// The header both ends use.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` with `id` as the current request id.
///
/// A plain function, not an `async fn`: an `async fn` would keep `work` in
/// its own state beside the task-local future that holds it too, doubling
/// the size of every call's future and copying it once more per call.
pub fn scope<F: Future>(id: String, work: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, work)
}

/// The request id of the work running now, if it runs inside [`scope`].
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether a received id may go into a log: 1 to 64 letters, digits, `-`
/// or `_`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let seen = scope("ab12".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("ab12"));
        assert_eq!(current(), None);
    }

    #[test]
    fn only_short_plain_ids_are_valid() {
        assert!(is_valid("3f9c0d6e1a2b4c5d"));
        assert!(is_valid("req_1-a"));
        assert!(!is_valid(""));
        assert!(!is_valid(&"a".repeat(65)));
        assert!(!is_valid("a\nb"));
        assert!(!is_valid("a b"));
        assert!(!is_valid("a\"b"));
    }
}
