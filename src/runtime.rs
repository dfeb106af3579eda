//! Configure may's scheduler once, before anything starts it.
//!
//! May reads its worker count and worker pinning once, when it starts (the
//! first `go!`, socket or blocking call): a later `set_workers` is silently
//! ignored, although `get_workers()` will report the ignored value. The stack
//! size is read at every spawn, but a spawn at the default size first reuses
//! a pooled coroutine whose stack was made with the size in force before, so
//! a late change mixes old and new stacks (primer step 9 shows both). A test
//! binary runs many tests in one process, so every test in it must agree on
//! one configuration: [`configure_once`] applies the first request and
//! reports what really applies to every later caller.

use std::sync::OnceLock;

/// What the scheduler of this process was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Number of worker threads that run coroutines.
    pub workers: usize,
    /// Default coroutine stack size, in machine words (not bytes).
    pub stack_words: usize,
}

static APPLIED: OnceLock<Settings> = OnceLock::new();

/// Configure may with `settings` if this is the first call in the process, and
/// return the settings that are in force either way.
///
/// Worker pinning is switched off: with pinning on, may pins worker `i` to
/// core `i` (may 0.3.51 `scheduler.rs:63-69`), so parallel test binaries and
/// benchmarks would all crowd onto the same first cores.
///
/// Call it before the first `go!`, socket or may blocking call: after may has
/// started, the worker count and pinning can no longer change.
pub fn configure_once(settings: Settings) -> Settings {
    *APPLIED.get_or_init(|| {
        may::config()
            .set_workers(settings.workers)
            .set_stack_size(settings.stack_words);
        may::config().set_worker_pin(false);
        settings
    })
}

/// The settings every listing's tests share: two workers (this book's reference
/// machine has two cores) and may's default 32 KiB stack (0x1000 words).
pub const TEST_SETTINGS: Settings = Settings {
    workers: 2,
    stack_words: 0x1000,
};

/// [`configure_once`] with [`TEST_SETTINGS`]; the first line of most tests.
pub fn configure_for_tests() -> Settings {
    configure_once(TEST_SETTINGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_configuration_wins() {
        let first = configure_for_tests();
        let second = configure_once(Settings {
            workers: 7,
            stack_words: 0x8000,
        });
        assert_eq!(first, second, "a later call must report what is in force");
        assert_eq!(second, TEST_SETTINGS);
    }
}
