//! The demos' plainest client, written once: GETs one after the other,
//! and who answered each. Steps 1, 2, 4, 5 and 6 include this file with
//! `#[path = "steps_answers.rs"] mod steps_answers;` (step 3 times each
//! request instead).

use std::io;
use std::net::SocketAddr;

use crate::steps_common::{answered_by, fetch};

// ANCHOR: answers
/// Who answered each of `n` GETs sent one after the other.
pub fn answers(addr: SocketAddr, n: usize) -> io::Result<Vec<String>> {
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(answered_by(&fetch(addr, "GET", "/search?q=lamp", b"")?));
    }
    Ok(answers)
}
// ANCHOR_END: answers
