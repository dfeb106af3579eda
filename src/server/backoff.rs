//! How long an accept loop pauses after running out of descriptors.

use std::time::Duration;

/// The longest pause: a server out of descriptors retries at least once a
/// second, so it serves again within a second of one being freed.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(1);

// ANCHOR: backoff
/// Doubling pauses, `first` to [`MAX_PAUSE`], back to `first` after a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration) -> Backoff {
        Backoff { first, next: first }
    }

    /// The pause to take now; the one after it is twice as long.
    pub(crate) fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(MAX_PAUSE);
        now
    }

    /// An accept succeeded: the next failure pauses `first` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}
// ANCHOR_END: backoff

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_a_second_and_a_success_resets_them() {
        let mut b = Backoff::new(Duration::from_millis(10));
        let ms: Vec<u128> = (0..9).map(|_| b.pause().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(10));
    }
}
