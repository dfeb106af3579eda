//! The job kinds: an I/O job waits (a call to a slow service, stood in for
//! by a timed wait on the process's alarm thread), a CPU job computes (hash
//! rounds). `--mix IO:CPU` sets their ratio, `--seed` their order.

use std::fmt;
use std::time::Duration;

use may_patterns::alarm;
use may_patterns::pool::fork_join::Worker;

/// The most hash rounds a CPU job may ask for: a run's length stays
/// predictable, and the fork-join recursion shallow (see `CHUNK`).
pub const MAX_CPU_WORK: u64 = 1_000_000;

/// Hash rounds a fork-join task does itself instead of splitting: thousands
/// of rounds, so a split costs little next to the work it hands out. It
/// also bounds the recursion: `MAX_CPU_WORK / CHUNK` is under 2^8, so at
/// most 8 levels.
const CHUNK: u64 = 4096;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Io,
    Cpu,
}

// ANCHOR: mix
/// The ratio of I/O jobs to CPU jobs, `--mix IO:CPU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub io: u32,
    pub cpu: u32,
}

impl Mix {
    /// `3:1` into a mix; the first mistake in one sentence.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let Some((io, cpu)) = text.split_once(':') else {
            return Err(format!("`{text}` is not IO:CPU (write it as 3:1)"));
        };
        let number = |part: &str| {
            part.trim().parse::<u32>().map_err(|_| {
                format!("`{part}` in `{text}` is not a whole number (write IO:CPU as 3:1)")
            })
        };
        let mix = Mix {
            io: number(io)?,
            cpu: number(cpu)?,
        };
        if mix.io == 0 && mix.cpu == 0 {
            return Err("`0:0` has no jobs of either kind; one side must be above 0".into());
        }
        Ok(mix)
    }

    /// The kind of each of `jobs` jobs: every group of `io + cpu` jobs holds
    /// exactly `io` I/O jobs and `cpu` CPU jobs, in an order drawn from
    /// `seed` (the last group is cut short).
    pub fn kinds(self, jobs: usize, seed: u64) -> Vec<Kind> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut group: Vec<Kind> = std::iter::repeat_n(Kind::Io, self.io as usize)
            .chain(std::iter::repeat_n(Kind::Cpu, self.cpu as usize))
            .collect();
        let mut kinds = Vec::with_capacity(jobs);
        while kinds.len() < jobs {
            rng.shuffle(&mut group);
            let take = group.len().min(jobs - kinds.len());
            kinds.extend_from_slice(&group[..take]);
        }
        kinds
    }
}
// ANCHOR_END: mix

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.io, self.cpu)
    }
}

// ANCHOR: jobs
/// An I/O job: park for `wait` on the shared alarm. A may sleep would arm
/// one of may 0.3.51's timers, which race its timer thread at this rate.
pub fn io_job(wait: Duration) -> u64 {
    alarm::shared().sleep(wait);
    0
}

/// A CPU job on the worker that took it: `rounds` hash rounds from `seed`,
/// chunk by chunk, folded into one checksum.
pub fn cpu_job(seed: u64, rounds: u64) -> u64 {
    (0..rounds.div_ceil(CHUNK))
        .map(|chunk| chunk_hash(seed, chunk * CHUNK, rounds.min((chunk + 1) * CHUNK)))
        .fold(0, |sum, hash| sum ^ hash)
}

/// The same job as a fork-join: split the rounds in two until a half is
/// one chunk, each split handing its second half to whichever worker of
/// the fork-join pool is free. The chunks, and so the checksum, are the
/// same as [`cpu_job`]'s.
pub fn cpu_fork(worker: &Worker, seed: u64, from: u64, to: u64) -> u64 {
    let chunks = (to - from).div_ceil(CHUNK);
    if chunks <= 1 {
        return chunk_hash(seed, from, to);
    }
    let middle = from + chunks / 2 * CHUNK;
    let (left, right) = worker.join(
        |w| cpu_fork(w, seed, from, middle),
        |w| cpu_fork(w, seed, middle, to),
    );
    left ^ right
}
// ANCHOR_END: jobs

/// Hash rounds `from..to` from `seed` (splitmix64, one round per step).
fn chunk_hash(seed: u64, from: u64, to: u64) -> u64 {
    (from..to).fold(seed ^ from, |h, i| splitmix(h ^ i))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_is_two_whole_numbers_and_not_both_zero() {
        assert_eq!(Mix::parse("3:1"), Ok(Mix { io: 3, cpu: 1 }));
        assert_eq!(Mix::parse("0:1"), Ok(Mix { io: 0, cpu: 1 }));
        assert!(Mix::parse("io:x").unwrap_err().contains("`io`"));
        assert!(Mix::parse("3").unwrap_err().contains("IO:CPU"));
        assert!(Mix::parse("0:0").unwrap_err().contains("one side"));
    }

    #[test]
    fn every_group_holds_the_ratio_exactly() {
        let kinds = Mix { io: 3, cpu: 1 }.kinds(402, 7);
        assert_eq!(kinds.len(), 402);
        for group in kinds.chunks(4).filter(|g| g.len() == 4) {
            assert_eq!(group.iter().filter(|&&k| k == Kind::Cpu).count(), 1);
        }
        assert_eq!(
            kinds,
            Mix { io: 3, cpu: 1 }.kinds(402, 7),
            "the seed decides"
        );
    }

    #[test]
    fn the_chunked_hash_does_not_depend_on_the_chunk_borders() {
        // cpu_job folds chunk hashes; a chunk's hash depends on its range
        // only, so two calls agree and a different seed differs.
        assert_eq!(cpu_job(1, 10_000), cpu_job(1, 10_000));
        assert_ne!(cpu_job(1, 10_000), cpu_job(2, 10_000));
        assert_eq!(cpu_job(5, 100), chunk_hash(5, 0, 100));
    }
}
