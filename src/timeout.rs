//! Timeouts that may 0.3.51 keeps, on a coroutine.
//!
//! may stores a parked coroutine's timeout, and a socket's read and write
//! timeouts, as whole milliseconds (`Duration::as_millis()`, truncated), and
//! 0 there means "no timeout". So on a coroutine a 500 µs `recv_timeout`
//! waits until a message comes, and a 1.9 ms socket timeout fires after
//! 1 ms (the book's Pitfalls reference, "Known may 0.3.51 bugs", shows both
//! with `listings/pitfalls/pitfall_sub_ms_timeout.rs`). Pass every coroutine
//! timeout through [`for_may`].

use std::time::Duration;

/// `timeout` rounded up to whole milliseconds: what may can keep. Never
/// shorter than asked, at most 1 ms longer, and never 0 for a timeout that
/// was not 0 (which may would read as "none").
pub fn for_may(timeout: Duration) -> Duration {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_whole_milliseconds() {
        let us = Duration::from_micros;
        assert_eq!(for_may(Duration::ZERO), Duration::ZERO);
        assert_eq!(for_may(Duration::from_nanos(1)), us(1_000));
        assert_eq!(for_may(us(500)), us(1_000));
        assert_eq!(for_may(us(1_000)), us(1_000));
        assert_eq!(for_may(us(1_001)), us(2_000));
        assert_eq!(for_may(Duration::MAX), Duration::from_millis(u64::MAX));
    }
}
