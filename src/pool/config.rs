//! What a [`Pool`](super::Pool) is made of: its worker bounds, its queue, the
//! scaler's timings and the workers' stacks, checked before anything starts.

use std::fmt;
use std::time::Duration;

/// The stack a worker gets unless told otherwise: may's own default (0x1000
/// words, 32 KiB on a 64-bit machine), so workers reuse may's pooled stacks.
pub const DEFAULT_STACK_SIZE: usize = 32 * 1024;

/// The smallest worker stack [`Config::check`] accepts. A panicking job must
/// still fit: the worker catches the panic only if the panic hook, which
/// prints a backtrace when `RUST_BACKTRACE` is set, runs to its end on the
/// worker's stack. Measured with an odd stack size (may then prints a
/// coroutine's use when it ends), in words, debug build / release build:
/// the worker loop with trivial jobs 580 / 199, a panic 789 / 613, a panic
/// with `RUST_BACKTRACE=1` 2821 / 2641 (22 KiB / 21 KiB). In a debug build
/// that panic overflowed a 20 KiB stack: the worker ended without running
/// its destructors, and the job's handle never got its result. The test
/// `a_panic_fits_the_smallest_stack` runs a panic at this size.
pub const MIN_STACK_SIZE: usize = DEFAULT_STACK_SIZE;

// ANCHOR: config
/// How a pool is sized and how its scaler behaves.
///
/// A pool with `min == max` is *fixed*: it starts `max` workers and runs no
/// scaler, so `idle`, `grow_after` and `tick` are unused.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers kept even when idle (at least 1).
    pub min: usize,
    /// Workers never exceeded (at least `min`).
    pub max: usize,
    /// Capacity of the bounded submission queue (at least 1): jobs accepted
    /// and not yet taken by a worker. `submit` parks while it is full.
    pub queue: usize,
    /// Spare workers retire once the pool has had them spare for this long
    /// (the scaler's shrink rule, in [`scale`](super::scale)).
    pub idle: Duration,
    /// The pool grows when its oldest waiting job has waited this long.
    pub grow_after: Duration,
    /// How often the scaler looks. It runs on its own OS thread, so it can
    /// wait without a may timer.
    pub tick: Duration,
    /// Bytes of stack per worker coroutine, at least [`MIN_STACK_SIZE`].
    /// Jobs run on their worker's stack: size it for the deepest job the
    /// pool admits, and its panic.
    pub stack_size: usize,
}
// ANCHOR_END: config

/// Why a [`Config`] was refused. Each prints as one sentence naming the
/// command-line flag a program built on the pool would take for the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `min` (or, for a fork-join pool, the worker count) is 0.
    NoWorkers,
    /// `min` is above `max`.
    MinAboveMax { min: usize, max: usize },
    /// `queue` is 0.
    ZeroQueue,
    /// `tick` is zero: the scaler would spin.
    ZeroTick,
    /// `idle` is zero: every spare worker would retire at every tick.
    ZeroIdle,
    /// `stack_size` is below [`MIN_STACK_SIZE`].
    StackTooSmall { bytes: usize },
}

impl Config {
    /// A pool of exactly `workers` workers and a queue of `queue` jobs.
    pub fn fixed(workers: usize, queue: usize) -> Config {
        Config::dynamic(workers, workers, queue)
    }

    /// A pool that scales between `min` and `max` workers, with the default
    /// timings: a 10 ms tick, growth after a 20 ms wait, retirement after
    /// 500 ms spare.
    pub fn dynamic(min: usize, max: usize, queue: usize) -> Config {
        Config {
            min,
            max,
            queue,
            idle: Duration::from_millis(500),
            grow_after: Duration::from_millis(20),
            tick: Duration::from_millis(10),
            stack_size: DEFAULT_STACK_SIZE,
        }
    }

    /// Whether the pool never changes size.
    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }

    /// Refuse a configuration no pool can run with.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::NoWorkers);
        }
        if self.min > self.max {
            return Err(ConfigError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.queue == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        if self.tick.is_zero() {
            return Err(ConfigError::ZeroTick);
        }
        if self.idle.is_zero() {
            return Err(ConfigError::ZeroIdle);
        }
        if self.stack_size < MIN_STACK_SIZE {
            return Err(ConfigError::StackTooSmall {
                bytes: self.stack_size,
            });
        }
        Ok(())
    }

    /// The stack size in machine words, as may's `Builder::stack_size`
    /// takes it (rounded up).
    pub(crate) fn stack_words(&self) -> usize {
        self.stack_size.div_ceil(std::mem::size_of::<usize>())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoWorkers => f.write_str("--min 0: a pool needs at least one worker"),
            ConfigError::MinAboveMax { min, max } => write!(f, "--min {min} is above --max {max}"),
            ConfigError::ZeroQueue => {
                f.write_str("--queue 0: the submission queue needs room for at least one job")
            }
            ConfigError::ZeroTick => f.write_str("--tick 0: the scaler needs a tick above zero"),
            ConfigError::ZeroIdle => {
                f.write_str("--idle 0: give spare workers a time above zero before they retire")
            }
            ConfigError::StackTooSmall { bytes } => write!(
                f,
                "--stack {bytes} is below {MIN_STACK_SIZE} bytes, the smallest worker stack"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
