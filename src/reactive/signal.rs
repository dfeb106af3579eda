//! The signals a subscriber receives after `on_subscribe`, as values a test
//! or a channel can hold.

use super::Error;

/// One `on_next`, `on_error` or `on_complete`, recorded. A stream is any
/// number of `Next` followed by at most one `Error` or `Complete` (rule 1.7).
#[derive(Debug, Clone, PartialEq)]
pub enum Signal<T> {
    /// An item (`on_next`).
    Next(T),
    /// The stream failed (`on_error`); nothing follows.
    Error(Error),
    /// The stream ended normally (`on_complete`); nothing follows.
    Complete,
}

impl<T> Signal<T> {
    /// Whether this signal ends the stream.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Signal::Next(_))
    }
}
