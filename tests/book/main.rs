//! The book cannot drift from working code.
//!
//! mdBook only logs a missing include file and silently renders a missing
//! anchor as nothing, so these tests fail, naming chapter and line, where the
//! book and the listings disagree. Re-bless shown output after an intended
//! change with `BLESS=1 cargo test --test book` (see README.md).

mod chapters;
mod compile_fail;
mod directives;
mod fences;
mod outputs;
mod registry;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Fail with every problem found, one per line, not just the first.
fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_include_names_an_existing_file_and_a_non_empty_anchor() {
    let mut problems = Vec::new();
    for chapter in chapters::sources() {
        for d in directives::parse(&chapter.path, &chapter.text) {
            if let Err(problem) = directives::check(&d) {
                problems.push(format!("{}:{}: {problem}", chapter.path.display(), d.line));
            }
        }
    }
    assert_no_problems("broken includes", problems);
}

#[test]
fn expanded_chapters_have_no_leftover_directives() {
    let sources = chapters::sources();
    let mut problems = Vec::new();
    for chapter in chapters::expanded() {
        let escaped = sources
            .iter()
            .find(|s| s.path == chapter.path)
            .map(|s| directives::escaped(&s.text))
            .unwrap_or_default();
        for (line, text) in directives::leftovers(&chapter.text, &escaped) {
            problems.push(format!(
                "{} (expanded line {line}): `{text}` was not expanded",
                chapter.path.display()
            ));
        }
    }
    assert_no_problems("unexpanded directives", problems);
}

#[test]
fn every_listing_file_is_shown_by_some_chapter() {
    let used: BTreeSet<PathBuf> = chapters::sources()
        .iter()
        .flat_map(|c| directives::parse(&c.path, &c.text))
        .filter_map(|d| d.target.canonicalize().ok())
        .collect();
    let problems = chapters::listing_files()
        .into_iter()
        .filter(|f| !used.contains(&f.canonicalize().unwrap()))
        .map(|f| format!("{} is not included by any chapter", chapters::relative(&f)))
        .collect();
    assert_no_problems("unused listings", problems);
}

#[test]
fn every_rust_listing_is_a_tested_example_named_after_its_file() {
    let examples = registry::examples();
    let problems = chapters::listing_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .filter_map(|f| registry::check(&examples, &chapters::relative(&f)).err())
        .collect();
    assert_no_problems("listings cargo does not test", problems);
}

#[test]
fn every_code_block_names_its_language() {
    let mut problems = Vec::new();
    for chapter in chapters::sources() {
        for block in fences::blocks(&chapter.text) {
            if block.info.is_empty() {
                problems.push(format!(
                    "{}:{}: a code block without a language: mdBook shows it as Rust \
                     but skeptic skips it; write ```rust, ```text or ```console",
                    chapter.path.display(),
                    block.line
                ));
            }
        }
    }
    assert_no_problems("untagged code blocks", problems);
}

/// The `.stderr` file included by the ```text block right after each
/// `compile_fail` block of `source` (a chapter at `path`), or why there is none.
fn shown_messages(path: &std::path::Path, source: &str) -> Vec<Result<PathBuf, String>> {
    let blocks = fences::blocks(source);
    blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_compile_fail())
        .map(|(i, _)| {
            let next = blocks.get(i + 1).filter(|b| b.info == "text");
            let includes: Vec<_> = next
                .map(|b| directives::parse(path, &b.body))
                .unwrap_or_default();
            match includes.as_slice() {
                [d] if d.kind == "include"
                    && d.target.extension().is_some_and(|e| e == "stderr") =>
                {
                    Ok(d.target.clone())
                }
                _ => Err(
                    "a compile_fail block must be followed by a ```text block that \
                          includes the compiler's message, e.g. \
                          {{#include ../../listings/<chapter>/<name>.stderr}}"
                        .to_owned(),
                ),
            }
        })
        .collect()
}

#[test]
fn compile_fail_blocks_fail_with_the_error_code_and_message_they_show() {
    let sources = chapters::sources();
    let mut checked = 0;
    let mut problems = Vec::new();
    for chapter in chapters::expanded() {
        let source = sources.iter().find(|s| s.path == chapter.path).unwrap();
        let lines: Vec<usize> = fences::blocks(&source.text)
            .into_iter()
            .filter(|b| b.is_compile_fail())
            .map(|b| b.line)
            .collect();
        let shown = shown_messages(&source.path, &source.text);
        let blocks: Vec<_> = fences::blocks(&chapter.text)
            .into_iter()
            .filter(|b| b.is_compile_fail())
            .collect();
        for ((block, line), shown) in blocks.iter().zip(lines).zip(shown) {
            checked += 1;
            let checked_block = shown.and_then(|file| compile_fail::check(block, &file));
            if let Err(problem) = checked_block {
                problems.push(format!("{}:{line}: {problem}", chapter.path.display()));
            }
        }
    }
    assert_no_problems("compile_fail blocks", problems);
    assert!(
        checked > 0,
        "no compile_fail block was found: is the scanner broken?"
    );
    println!("checked {checked} compile_fail blocks");
}

#[test]
fn shown_output_matches_what_each_listing_prints() {
    let mut expected = outputs::expected_outputs();
    assert!(!expected.is_empty(), "no .out files found under listings/");
    // `OUTPUTS=<part of a path>` checks (or, with BLESS=1, blesses) only the
    // listings whose .out path contains it: quick while working on one chapter.
    if let Some(only) = std::env::var_os("OUTPUTS") {
        let only = only.to_string_lossy().into_owned();
        expected.retain(|e| chapters::relative(&e.file).contains(&only));
    }
    let problems = outputs::check_all(&expected);
    assert_no_problems("shown output has drifted", problems);
    println!("checked the output of {} listings", expected.len());
}

#[test]
fn the_whole_book_builds_with_search() {
    let out = tempfile::tempdir().unwrap();
    chapters::build_html(out.path());
    for page in ["index.html", "may_primer/index.html"] {
        assert!(
            out.path().join(page).exists(),
            "the built book has no {page}"
        );
    }
    let has_search_index = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("searchindex"));
    assert!(has_search_index, "the built book has no search index");
}
