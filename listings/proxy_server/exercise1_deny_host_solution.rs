//! Exercise 1 (solution): a deny list of hosts. A rule such as
//! `ads.example` denies that host and every name under it
//! (`x.ads.example`), but not a name that merely ends with the same
//! letters (`badads.example`). Names are compared without regard to case,
//! and a trailing dot (`ads.example.`, the absolute form of the name) does
//! not get past the rule. The `403` says which rule denied the request.
//! The rule and the demo are in `exercise1_deny_list.rs`, which the
//! starter shares.
//!
//! Run it: `cargo run --example exercise1_deny_host_solution`

#[path = "exercise1_deny_list.rs"]
mod deny_list;
#[path = "exercise_forwarder.rs"]
mod forwarder;

// ANCHOR: deny_host
/// Whether `rule` denies `host`: the same name, or a name under it.
fn deny_host(rule: &str, host: &str) -> bool {
    let canonical = |name: &str| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let (rule, host) = (canonical(rule), canonical(host));
    // A label boundary: `x.ads.example` is under `ads.example`,
    // `badads.example` is not.
    host == rule || host.ends_with(&format!(".{rule}"))
}
// ANCHOR_END: deny_host

fn main() {
    deny_list::main("exercise1_deny_host_solution");
}

#[cfg(test)]
mod tests {
    use super::*;
    use deny_list::demo;

    // ANCHOR: tests
    #[test]
    fn a_rule_denies_its_host_and_the_names_under_it_only() {
        assert!(deny_host("ads.example", "ads.example"));
        assert!(deny_host("ads.example", "x.ads.example"));
        assert!(deny_host("ads.example", "a.b.ads.example"));
        assert!(!deny_host("ads.example", "badads.example"));
        assert!(!deny_host("ads.example", "ads.example.com"));
        assert!(!deny_host("ads.example", "example"));
    }

    #[test]
    fn case_and_a_trailing_dot_do_not_get_past_a_rule() {
        assert!(deny_host("ads.example", "ADS.Example"));
        assert!(deny_host("ads.example", "ads.example."));
        assert!(deny_host("Ads.Example.", "x.ads.example"));
        assert!(!deny_host("ads.example", "badads.example."));
    }

    #[test]
    fn the_proxy_refuses_a_denied_host_with_403_naming_the_rule() {
        may_patterns::runtime::configure_for_tests();
        let answers = demo().unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(_, status, _)| *status).collect();
        assert_eq!(statuses, [200, 403, 403, 200, 403]);
        assert_eq!(
            answers[2].2,
            "x.ads.example is denied by the rule \"ads.example\""
        );
        // The allowed ones reached the origin, in origin form.
        assert_eq!(answers[3].2, "hello from badads.example/");
    }
    // ANCHOR_END: tests
}
