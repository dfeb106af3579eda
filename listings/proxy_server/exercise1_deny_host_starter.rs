//! Exercise 1 (starter): a deny list of hosts. A rule such as
//! `ads.example` must deny that host and every name under it
//! (`x.ads.example`), but not a name that merely ends with the same
//! letters (`badads.example`), whatever the case, with or without a
//! trailing dot (`ads.example.`, the absolute form of the name). The proxy
//! and the `403` that names the rule are written (the rule and the demo in
//! `exercise1_deny_list.rs`, which the solution shares); `deny_host`
//! denies nothing yet, as the demo shows. TODO: write `deny_host`.
//!
//! Run it: `cargo run --example exercise1_deny_host_starter`

#[path = "exercise1_deny_list.rs"]
mod deny_list;
#[path = "exercise_forwarder.rs"]
mod forwarder;

// ANCHOR: deny_host
/// Whether `rule` denies `host`: the same name, or a name under it.
fn deny_host(_rule: &str, _host: &str) -> bool {
    // TODO: compare without case and without a trailing dot, and match
    // whole labels only.
    false
}
// ANCHOR_END: deny_host

fn main() {
    deny_list::main("exercise1_deny_host_starter");
}

#[cfg(test)]
mod tests {
    use super::*;
    use deny_list::demo;

    #[test]
    fn the_starter_forwards_every_host_it_can_reach() {
        may_patterns::runtime::configure_for_tests();
        let answers = demo().unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(_, status, _)| *status).collect();
        // The denied host, and the names under it, are reached too.
        assert_eq!(statuses, [200; 5]);
        assert_eq!(answers[1].2, "hello from ads.example/banner");
    }
}
