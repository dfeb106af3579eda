//! Step 3: `Builder` names a coroutine and sizes its stack; what its
//! `io::Result` really means in may 0.3.51.
//!
//! Run it: `cargo run --example step3_builder`

use std::any::Any;
use std::panic;

use may::coroutine::{self, Builder};
use may::go;

fn main() {
    may::config().set_workers(2);

    // ANCHOR: builder
    let named = go!(
        Builder::new().name("resizer".to_owned()).stack_size(0x2000),
        || coroutine::current().name().map(str::to_owned)
    )
    // may 0.3.51's spawn_impl returns Ok on every path: this cannot fire.
    .expect("Builder::spawn returned Err");
    println!(
        "a named coroutine says its name is {:?}",
        named.join().unwrap()
    );
    // ANCHOR_END: builder

    // ANCHOR: no_stack
    // 2^45 words = 256 TiB: more than a 64-bit Linux process can map.
    let spawned = panic::catch_unwind(|| go!(Builder::new().stack_size(1 << 45), || ()));
    match spawned {
        Ok(Ok(_)) => println!("a 256 TiB stack was allocated"),
        Ok(Err(e)) => println!("Builder::spawn returned Err({e})"),
        Err(panic) => println!(
            "no Err for an impossible stack: the spawn panicked with {:?}",
            reason(&*panic)
        ),
    }
    // ANCHOR_END: no_stack
}

/// The part of generator's panic message before its first `:` (the rest is
/// the OS error, which differs between machines).
fn reason(panic: &(dyn Any + Send)) -> &str {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic payload>");
    message.split(':').next().unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_builder_names_the_coroutine() {
        configure_for_tests();
        let h = go!(Builder::new().name("n1".to_owned()), || {
            coroutine::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(h.join().unwrap().as_deref(), Some("n1"));
    }

    #[test]
    fn a_stack_that_cannot_be_allocated_panics_instead_of_returning_err() {
        configure_for_tests();
        let spawned = panic::catch_unwind(|| go!(Builder::new().stack_size(1 << 45), || ()));
        let panic = spawned.expect_err("spawning must panic, not return");
        assert_eq!(reason(&*panic), "failed to alloc sys stack");
    }
}
