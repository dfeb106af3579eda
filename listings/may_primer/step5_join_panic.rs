//! Step 5: a panic stays inside its coroutine; `join` reports it.
//!
//! Run it: `cargo run --example step5_join_panic`

use std::any::Any;

use may::go;

fn main() {
    may::config().set_workers(2);

    // ANCHOR: panic
    let healthy = go!(|| 21 * 2);
    let failing = go!(|| -> u32 { panic!("bad input: {}", "-1") });

    println!("healthy coroutine returned {:?}", healthy.join());
    match failing.join() {
        Ok(v) => println!("failing coroutine returned {v}"),
        Err(payload) => println!("failing coroutine panicked: {}", panic_message(&*payload)),
    }
    println!("main is still running");
    // ANCHOR_END: panic
}

// ANCHOR: panic_message
/// The text of a panic payload: `panic!` with a literal carries a `&str`, with
/// format arguments a `String`.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}
// ANCHOR_END: panic_message

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn join_returns_the_panic_payload() {
        configure_for_tests();
        let h = go!(|| -> () { panic!("boom {}", 7) });
        let payload = h.join().expect_err("the coroutine panicked");
        assert_eq!(panic_message(&*payload), "boom 7");
    }

    #[test]
    fn a_panic_does_not_disturb_other_coroutines() {
        configure_for_tests();
        let failing: Vec<_> = (0..10).map(|_| go!(|| -> () { panic!("x") })).collect();
        let healthy: Vec<_> = (0..10u32).map(|n| go!(move || n)).collect();
        assert!(failing.into_iter().all(|h| h.join().is_err()));
        let sum: u32 = healthy.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 45);
    }
}
