//! The Reactive Streams rules, checked against `may_patterns::reactive`: one
//! module per part of the library, each test named after the rule it checks
//! (`rule_1_1_...`). The chapter's coverage table lists every rule and its
//! tests; `the_coverage_table_matches_the_tests` keeps the two in step.

mod combine;
mod core;
mod higher;
mod hot;
mod time;

use std::time::Duration;

/// The longest any test waits for a signal that should come. Generous: it
/// bounds a hang, it does not measure speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a test watches for a signal that must not come.
pub const QUIET: Duration = Duration::from_millis(100);

/// The first line of every test: one may configuration for the binary.
pub fn init() {
    may_patterns::runtime::configure_for_tests();
}

/// Fail, naming `what`, if the probe saw its publisher break a rule.
pub fn assert_no_violations<T: Send + 'static>(
    probe: &may_patterns::reactive::Probe<T>,
    what: &str,
) {
    let violations = probe.violations();
    assert!(violations.is_empty(), "{what}: {violations:?}");
}

mod coverage {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::Path;

    const CHAPTER: &str = "book/reactive_pipeline/index.md";
    const HEADING: &str = "Checked against the Reactive Streams specification";

    /// The names in backticks in the last column of the coverage table.
    fn table_names(chapter: &str) -> BTreeSet<String> {
        let start = chapter
            .lines()
            .position(|line| line.starts_with('#') && line.contains(HEADING))
            .unwrap_or_else(|| panic!("{CHAPTER} has no heading \"{HEADING}\""));
        let rows = chapter
            .lines()
            .skip(start + 1)
            .take_while(|line| !line.starts_with('#'))
            .filter(|line| line.starts_with('|') && !line.starts_with("|-"));
        let mut names = BTreeSet::new();
        for row in rows.skip(1) {
            let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
            let last = cells.last().expect("a row has cells");
            names.extend(last.split('`').skip(1).step_by(2).map(str::to_owned));
        }
        names
    }

    /// Every `fn NAME` in the binary's source files.
    fn test_fns(dir: &Path) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for entry in fs::read_dir(dir).expect("the test directory") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let source = fs::read_to_string(&path).expect("a source file");
                for rest in source.split("fn ").skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
        names
    }

    #[test]
    fn the_coverage_table_matches_the_tests() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let chapter = fs::read_to_string(root.join(CHAPTER)).expect("the chapter");
        let listed = table_names(&chapter);
        let fns = test_fns(&root.join("tests/reactive_spec"));
        let missing: Vec<_> = listed.iter().filter(|n| !fns.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "in the table but no such fn: {missing:?}"
        );
        let unlisted: Vec<_> = fns
            .iter()
            .filter(|n| n.starts_with("rule_") && !listed.contains(*n))
            .collect();
        assert!(
            unlisted.is_empty(),
            "rule tests missing from the table: {unlisted:?}"
        );
    }
}
