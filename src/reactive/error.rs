//! How a stream can end badly: the payload of `on_error`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a stream ended with `on_error`. Cheap to clone: every subscriber of a
/// shared failure gets its own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The subscriber called `request(0)`; Reactive Streams rule 3.9 makes
    /// that an error, signalled to the subscriber that made it.
    NonPositiveRequest,
    /// No signal arrived within this gap (the `timeout` operator).
    Timeout(Duration),
    /// A bounded buffer of this capacity was full and the chosen strategy
    /// was to fail rather than wait or drop.
    Overflow {
        /// The buffer's capacity, in items.
        capacity: usize,
    },
    /// The source or an operator failed; the message says how.
    Failed(Arc<str>),
}

impl Error {
    /// A [`Error::Failed`] with `message`.
    pub fn failed(message: impl Into<Arc<str>>) -> Error {
        Error::Failed(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NonPositiveRequest => {
                write!(f, "request(0): demand must be at least 1 (rule 3.9)")
            }
            Error::Timeout(gap) => write!(f, "no signal within {gap:?}"),
            Error::Overflow { capacity } => {
                write!(f, "the buffer of {capacity} items overflowed")
            }
            Error::Failed(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            Error::Overflow { capacity: 8 }.to_string(),
            "the buffer of 8 items overflowed"
        );
        assert_eq!(Error::failed("backend down").to_string(), "backend down");
        assert!(Error::NonPositiveRequest.to_string().contains("3.9"));
    }
}
