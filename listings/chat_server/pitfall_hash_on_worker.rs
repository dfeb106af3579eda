//! Pitfall: a password hash on a may worker. Checking an argon2id hash takes
//! tens of milliseconds of CPU by design, and a coroutine that does it holds
//! its worker thread all that time: every other coroutine queued there (and
//! every socket that worker polls) waits. Four logins at once on two workers
//! stall the whole server. The same check on `may_patterns::blocking`'s OS
//! threads parks only the coroutine that asked.
//!
//! It measures a ticker coroutine that wants to run every 5 ms, while four
//! coroutines check a password each, first on the workers, then on the
//! blocking pool.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use may::coroutine::Builder;
use may::go;
use may_patterns::blocking;
use may_patterns::runtime::{configure_once, Settings};

// The ticker of step 7: `with_ticker` runs a closure while a coroutine wants
// to run every `TICK`, and reports how late it was.
#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{with_ticker, TICK};

/// 256 KiB, in words.
const LOGIN_STACK_WORDS: usize = 0x8000;

/// A PHC string ("$argon2id$v=19$m=19456,t=2,p=1$...") for `password`, with
/// argon2's defaults (argon2id, 19 MiB, 2 passes: OWASP's minimum).
fn hash(password: &str) -> String {
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").expect("a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes")
        .to_string()
}

fn verify(phc: &str, password: &str) -> bool {
    let parsed = PasswordHash::new(phc).expect("a PHC string we made");
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

// ANCHOR: places
/// Where the logins check their password.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Right in the connection's coroutine: the wrong place.
    Worker,
    /// On `may_patterns::blocking`'s threads: the coroutine parks meanwhile.
    BlockingPool,
}

fn check(place: Place, phc: &str, password: &str) -> bool {
    match place {
        Place::Worker => verify(phc, password),
        Place::BlockingPool => {
            let (phc, password) = (phc.to_owned(), password.to_owned());
            blocking::run(move || verify(&phc, &password)).expect("the check does not panic")
        }
    }
}
// ANCHOR_END: places

/// Four coroutines check a password each at `place` while a ticker runs;
/// how long the logins took and the ticker's worst lateness.
fn measure(place: Place, phc: &str) -> (Duration, Duration) {
    let ((), took, late) = with_ticker(|| {
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let phc = phc.to_owned();
                // argon2 on may's default 32 KiB stack overflowed it (debug
                // build): the checks on a worker get 256 KiB.
                let builder = Builder::new().stack_size(LOGIN_STACK_WORDS);
                go!(builder, move || check(place, &phc, "correct horse")).expect("a coroutine")
            })
            .collect();
        for login in logins {
            assert!(login.join().expect("a login"), "the right password");
        }
    });
    (took, late)
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let phc = hash("correct horse");
    println!("4 logins at once on 2 workers, a ticker that wants to run every {TICK:?}:");
    for place in [Place::Worker, Place::BlockingPool] {
        let (took, late) = measure(place, &phc);
        println!(
            "  hash on {place:?}: logins took {took:.1?}, the ticker was up to {late:.1?} late"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_ticker_waits_for_hashes_on_the_workers_only() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let phc = hash("correct horse");
        let started = Instant::now();
        assert!(verify(&phc, "correct horse") && !verify(&phc, "wrong"));
        let one_check = started.elapsed() / 2;
        let (_, on_worker) = measure(Place::Worker, &phc);
        let (_, on_pool) = measure(Place::BlockingPool, &phc);
        // Two workers, four checks: the ticker waits about a whole check.
        assert!(
            on_worker > one_check / 2,
            "{on_worker:?} vs a check of {one_check:?}"
        );
        assert!(on_pool < on_worker / 2, "{on_pool:?} vs {on_worker:?}");
    }
}
