//! mdBook's `{{#include}}`-style directives, and checks that each resolves.

use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

/// One `{{#kind path[:selector]}}` in a chapter.
#[derive(Debug)]
pub struct Directive {
    pub line: usize,
    pub kind: String,
    /// The file it names, resolved against the chapter's folder.
    pub target: PathBuf,
    /// An anchor name, or a line range such as `3:10`.
    pub selector: Option<String>,
}

fn directive_pattern() -> Regex {
    Regex::new(r"(\\)?\{\{\s*#([a-z_]+)\s+([^}]*?)\s*\}\}").unwrap()
}

/// The directives in `text` (a chapter at `chapter`, relative to `book/`).
/// Escaped ones (`\{{#...}}`) are shown literally by mdBook, so skipped.
pub fn parse(chapter: &Path, text: &str) -> Vec<Directive> {
    let base = super::chapters::root()
        .join("book")
        .join(chapter.parent().unwrap_or(Path::new("")));
    let pattern = directive_pattern();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for cap in pattern.captures_iter(line) {
            if cap.get(1).is_some() || &cap[2] == "title" {
                continue;
            }
            let argument = cap[3].to_owned();
            let (file, selector) = match argument.split_once(':') {
                Some((file, selector)) => (file.to_owned(), Some(selector.to_owned())),
                None => (argument, None),
            };
            found.push(Directive {
                line: index + 1,
                kind: cap[2].to_owned(),
                target: base.join(file),
                selector,
            });
        }
    }
    found
}

/// The literal text of every escaped directive, which mdBook prints as-is.
pub fn escaped(text: &str) -> Vec<String> {
    directive_pattern()
        .captures_iter(text)
        .filter(|cap| cap.get(1).is_some())
        .map(|cap| cap[0][1..].to_owned())
        .collect()
}

/// Directive-like text left in an expanded chapter, with its line number.
pub fn leftovers(expanded: &str, escaped: &[String]) -> Vec<(usize, String)> {
    let pattern = Regex::new(r"\{\{\s*#[^}]*\}\}").unwrap();
    expanded
        .lines()
        .enumerate()
        .flat_map(|(i, line)| {
            pattern
                .find_iter(line)
                .map(move |m| (i + 1, m.as_str().to_owned()))
        })
        .filter(|(_, text)| !escaped.contains(text))
        .collect()
}

/// Whether the directive names a known kind, an existing file and, if it
/// names an anchor, an anchor that exists there and encloses some code.
pub fn check(d: &Directive) -> Result<(), String> {
    if !matches!(
        d.kind.as_str(),
        "include" | "rustdoc_include" | "playground"
    ) {
        return Err(format!("unknown directive {{{{#{}}}}}", d.kind));
    }
    let source = fs::read_to_string(&d.target).map_err(|e| {
        format!(
            "missing include file {}: {e}",
            super::chapters::relative(&d.target)
        )
    })?;
    match &d.selector {
        Some(sel) if !sel.starts_with(|c: char| c.is_ascii_digit() || c == ':') => {
            check_anchor(&source, sel)
                .map_err(|e| format!("{}: {e}", super::chapters::relative(&d.target)))
        }
        Some(range) => check_line_range(&source, range)
            .map_err(|e| format!("{}: {e}", super::chapters::relative(&d.target))),
        None => Ok(()),
    }
}

/// An anchor is `ANCHOR: name` ... `ANCHOR_END: name`, in that order, with at
/// least one non-blank line between that is not itself an anchor marker.
pub fn check_anchor(source: &str, name: &str) -> Result<(), String> {
    let marker = Regex::new(r"ANCHOR(_END)?:\s*([\w_-]+)").unwrap();
    let mut start = None;
    let mut content = 0;
    for (i, line) in source.lines().enumerate() {
        if let Some(cap) = marker.captures(line) {
            if &cap[2] == name {
                match (cap.get(1).is_some(), start) {
                    (false, None) => start = Some(i),
                    (false, Some(_)) => return Err(format!("anchor `{name}` starts twice")),
                    (true, None) => return Err(format!("anchor `{name}` ends before it starts")),
                    (true, Some(_)) if content == 0 => {
                        return Err(format!("anchor `{name}` is empty"))
                    }
                    (true, Some(_)) => return Ok(()),
                }
            }
        } else if start.is_some() && !line.trim().is_empty() {
            content += 1;
        }
    }
    match start {
        None => Err(format!("no anchor `{name}`")),
        Some(_) => Err(format!("anchor `{name}` has no ANCHOR_END")),
    }
}

/// A range `a:b`, `a:`, `:b` or `a` (1-based, inclusive) must fall inside the file.
fn check_line_range(source: &str, range: &str) -> Result<(), String> {
    let lines = source.lines().count();
    let numbers: Vec<usize> = range.split(':').filter_map(|n| n.parse().ok()).collect();
    match numbers.iter().max() {
        Some(&n) if n > lines => Err(format!(
            "line range {range} is past the end ({lines} lines)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_found_and_drift_is_reported() {
        let src = "a\n// ANCHOR: run\nfn run() {}\n// ANCHOR_END: run\n// ANCHOR: empty\n\n// ANCHOR_END: empty\n";
        assert_eq!(check_anchor(src, "run"), Ok(()));
        assert_eq!(check_anchor(src, "walk"), Err("no anchor `walk`".into()));
        assert_eq!(
            check_anchor(src, "empty"),
            Err("anchor `empty` is empty".into())
        );
        let unclosed = "// ANCHOR: run\nfn run() {}\n";
        assert!(check_anchor(unclosed, "run")
            .unwrap_err()
            .contains("no ANCHOR_END"));
        // `run` must not match `run_fast`.
        let other = "// ANCHOR: run_fast\nx\n// ANCHOR_END: run_fast\n";
        assert_eq!(check_anchor(other, "run"), Err("no anchor `run`".into()));
    }

    #[test]
    fn directives_are_parsed_with_their_line_and_selector() {
        let text = "intro\n```rust\n{{#rustdoc_include ../../listings/x/a.rs:main}}\n```\n\\{{#include not_me.rs}}\n{{#include b.out}}\n";
        let found = parse(Path::new("x/index.md"), text);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].line, found[0].kind.as_str()),
            (3, "rustdoc_include")
        );
        assert_eq!(found[0].selector.as_deref(), Some("main"));
        assert!(found[0].target.ends_with("book/x/../../listings/x/a.rs"));
        assert_eq!((found[1].line, found[1].selector.as_deref()), (6, None));
        assert_eq!(escaped(text), vec!["{{#include not_me.rs}}".to_owned()]);
    }

    #[test]
    fn leftovers_ignore_escaped_directives() {
        let expanded = "ok\n{{#include gone.rs}}\n{{#include shown.rs}}\n";
        let left = leftovers(expanded, &["{{#include shown.rs}}".to_owned()]);
        assert_eq!(left, vec![(2, "{{#include gone.rs}}".to_owned())]);
    }

    #[test]
    fn missing_files_and_bad_ranges_are_reported() {
        let d = Directive {
            line: 1,
            kind: "include".into(),
            target: PathBuf::from("/nonexistent/file.rs"),
            selector: None,
        };
        assert!(check(&d).unwrap_err().contains("missing include file"));
        assert!(check_line_range("a\nb\n", "1:5").is_err());
        assert!(check_line_range("a\nb\n", "1:2").is_ok());
    }
}
