//! When a failed request may go to another backend, and what the client
//! is told when it may not.

use may_patterns::balance::Outcome;

/// Why one attempt got no answer from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connect was refused or timed out: nothing was sent.
    Connect { timed_out: bool },
    /// The request went out (maybe in part) and the connection broke
    /// before a byte of the answer.
    Reset,
    /// The request went out and no answer came in time.
    Timeout,
    /// An answer began but was not HTTP we can relay.
    BadAnswer,
}

impl Failure {
    /// What the backend's lease is told (its passive health check).
    pub fn outcome(self) -> Outcome {
        match self {
            Failure::Connect { timed_out: true } | Failure::Timeout => Outcome::Timeout,
            _ => Outcome::Error,
        }
    }

    /// What the client is answered when no retry is left.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Failure::Connect { timed_out: true } | Failure::Timeout => (504, "Gateway Timeout"),
            _ => (502, "Bad Gateway"),
        }
    }

    /// A sentence for the client's error body.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::Connect { timed_out: true } => {
                "the backend did not accept the connection in time"
            }
            Failure::Connect { timed_out: false } => "the backend refused the connection",
            Failure::Reset => "the backend closed the connection before answering",
            Failure::Timeout => "the backend did not answer in time",
            Failure::BadAnswer => "the backend's answer was malformed",
        }
    }
}

// ANCHOR: may_retry
/// Whether a request that failed this way may be sent to another backend.
///
/// A failed connect sent nothing, so any request may go elsewhere (nginx's
/// `proxy_next_upstream` does the same: its `non_idempotent` rule is about
/// requests already sent). Once sent, only an idempotent method without a
/// body is sent again: the first backend may have acted on it, and a body
/// read from the client cannot be read twice. A malformed answer is an
/// answer: not retried.
pub fn may_retry(failure: Failure, idempotent: bool, has_body: bool) -> bool {
    match failure {
        Failure::Connect { .. } => true,
        Failure::Reset | Failure::Timeout => idempotent && !has_body,
        Failure::BadAnswer => false,
    }
}
// ANCHOR_END: may_retry

/// RFC 9110 9.2.2's idempotent methods.
pub fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_requests_are_retried_after_sending() {
        let (connect, reset, timeout, bad) = (
            Failure::Connect { timed_out: false },
            Failure::Reset,
            Failure::Timeout,
            Failure::BadAnswer,
        );
        // Nothing was sent: any request may go elsewhere.
        assert!(may_retry(connect, false, true));
        assert!(may_retry(Failure::Connect { timed_out: true }, true, false));
        // Sent: only idempotent and bodiless.
        assert!(may_retry(reset, true, false));
        assert!(may_retry(timeout, true, false));
        assert!(
            !may_retry(reset, false, false),
            "a POST may have been acted on"
        );
        assert!(
            !may_retry(timeout, true, true),
            "a body cannot be read twice"
        );
        assert!(!may_retry(bad, true, false), "an answer is an answer");
        assert!(idempotent("get") && idempotent("DELETE"));
        assert!(!idempotent("POST") && !idempotent("PATCH"));
    }

    #[test]
    fn failures_map_to_outcomes_and_statuses() {
        assert_eq!(Failure::Timeout.status().0, 504);
        assert_eq!(Failure::Connect { timed_out: true }.status().0, 504);
        assert_eq!(Failure::Reset.status().0, 502);
        assert_eq!(Failure::BadAnswer.outcome(), Outcome::Error);
        assert_eq!(Failure::Timeout.outcome(), Outcome::Timeout);
    }
}
