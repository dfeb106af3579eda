//! Long bodies made and checked as streams, never held whole: word `k` of
//! a pattern stream is `splitmix64(k)`, so any byte lost, doubled or moved
//! is a wrong word at a known offset. Words, not bytes, because this test
//! binary is a debug build: a per-byte loop over a GiB would take longer
//! than the transfer.

use std::io::{self, Read};

/// SplitMix64's output function: a cheap, well-mixed word per index.
fn splitmix64(k: u64) -> u64 {
    let mut z = k.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A `Read` of `len` pattern bytes.
pub struct Pattern {
    next_word: u64,
    left: u64,
}

impl Pattern {
    /// `len` must be a whole number of words.
    pub fn new(len: u64) -> Pattern {
        assert_eq!(len % 8, 0, "a pattern is whole words");
        Pattern {
            next_word: 0,
            left: len,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64 & !7).min(self.left) as usize;
        assert!(
            n > 0 || self.left == 0,
            "read a pattern with 8 bytes or more"
        );
        for word in buf[..n].chunks_exact_mut(8) {
            word.copy_from_slice(&splitmix64(self.next_word).to_le_bytes());
            self.next_word += 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Checks bytes against the pattern as they arrive, in pieces of any size.
#[derive(Default)]
pub struct Checker {
    seen: u64,
    /// The start of a word whose end has not come yet.
    partial: Vec<u8>,
    first_wrong: Option<u64>,
}

impl Checker {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        if !self.partial.is_empty() {
            let take = (8 - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < 8 {
                return;
            }
            let word = std::mem::take(&mut self.partial);
            self.check_words(&word, self.seen - bytes.len() as u64 - 8);
        }
        let whole = bytes.len() & !7;
        self.check_words(&bytes[..whole], self.seen - bytes.len() as u64);
        self.partial.extend_from_slice(&bytes[whole..]);
    }

    /// Words of `bytes`, the first at byte offset `at`.
    fn check_words(&mut self, bytes: &[u8], at: u64) {
        if self.first_wrong.is_some() {
            return;
        }
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let offset = at + 8 * i as u64;
            if word != splitmix64(offset / 8).to_le_bytes() {
                self.first_wrong = Some(offset);
                return;
            }
        }
    }

    /// `None` when exactly `len` pattern bytes came; else what was wrong.
    pub fn verdict(&self, len: u64) -> Option<String> {
        if let Some(offset) = self.first_wrong {
            return Some(format!("a wrong byte in the word at offset {offset}"));
        }
        (self.seen != len).then(|| format!("{} bytes, want {len}", self.seen))
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// A checker fed in odd-sized pieces accepts the pattern and catches one
/// changed byte: the test of the test.
#[test]
fn the_checker_accepts_the_pattern_and_finds_a_changed_byte() {
    let mut bytes = Vec::new();
    Pattern::new(4096).read_to_end(&mut bytes).unwrap();
    let mut good = Checker::default();
    for piece in bytes.chunks(13) {
        good.update(piece);
    }
    assert_eq!(good.verdict(4096), None);
    assert!(good.verdict(4104).is_some(), "a short stream is caught");
    bytes[1001] ^= 1;
    let mut bad = Checker::default();
    for piece in bytes.chunks(7) {
        bad.update(piece);
    }
    assert_eq!(
        bad.verdict(4096).as_deref(),
        Some("a wrong byte in the word at offset 1000")
    );
}
