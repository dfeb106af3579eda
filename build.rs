//! Turns every Rust block of the book into a test.
//!
//! The chapters are expanded exactly as the reader will see them, by mdBook's
//! own link preprocessor (`{{#include}}`, `{{#rustdoc_include}}`), written to
//! `OUT_DIR/book/`, and handed to skeptic, which generates one test per Rust
//! block: compiled and run, or only compiled for `no_run`.
//!
//! skeptic does not know `compile_fail` and would try to build such a block,
//! so those blocks are hidden from it here; `tests/book/compile_fail.rs`
//! checks that each one fails with the error code it names.
//!
//! Every anchor of a listing shown with `{{#rustdoc_include}}` expands to the
//! whole listing, its other lines hidden: the same program, compiled again
//! for each anchor. A block whose program an earlier block already builds
//! (and runs, if that one runs) is marked `ignore` here, so each program is
//! compiled once; that halves the time skeptic's tests take.
//!
//! A listing with shown output beside it (`<step>.out` whose command is
//! `cargo run --example <step>`, no arguments) is run by `tests/book`, which
//! also checks every line it prints. Its blocks are marked `no_run` here, so
//! skeptic does not run that program a second time.
//!
//! A block that skeptic would only compile, and whose program is a whole
//! listing registered as an `[[example]]` (with `test = true`, which
//! `tests/book` checks for every listing), is marked `ignore`: `cargo test`
//! already compiles that example, and skeptic's check of the same file cost
//! one `rustc` per block on every run, cached or not. Blocks skeptic runs
//! are still compiled and run by skeptic.

use std::collections::HashSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mdbook_driver::book::BookItem;
use mdbook_driver::builtin_renderers::MarkdownRenderer;
use mdbook_driver::MDBook;

fn main() {
    for watched in ["book", "listings", "book.toml"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap()).join("book");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).unwrap();

    let book = MDBook::load(&root).unwrap_or_else(|e| panic!("cannot load the book: {e:#}"));
    let (expanded, _) = book
        .preprocess_book(&MarkdownRenderer::new())
        .unwrap_or_else(|e| panic!("cannot expand the book: {e:#}"));

    let mut chapters = Vec::new();
    let mut programs = Programs {
        shown: shown_programs(&root.join("listings")),
        examples: example_programs(&root),
        ..Programs::default()
    };
    for item in expanded.iter() {
        let BookItem::Chapter(chapter) = item else {
            continue;
        };
        let Some(path) = &chapter.path else { continue }; // a draft: no page yet
        let file = out_dir.join(test_file_name(path));
        let content = programs.ignore_repeats(&hide_compile_fail_blocks(&chapter.content));
        fs::write(&file, content).unwrap();
        // skeptic tells cargo to rerun this script when these files change.
        // Written now, they would look newer than this run to cargo, and
        // every build would run it (and rebuild the crate) again. They change
        // only when book/ or listings/ do, which cargo already watches.
        fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH))
            .unwrap();
        chapters.push(file);
    }
    skeptic::generate_doc_tests(&chapters);
}

/// `may_primer/index.md` -> `may_primer_index.md`: skeptic names each test
/// after its file, so the chapter's folder stays in the test name.
fn test_file_name(chapter: &Path) -> String {
    chapter
        .with_extension("")
        .to_string_lossy()
        .replace(['/', '\\', '-'], "_")
        + ".md"
}

/// Drop the `rust` tag from fences marked `compile_fail`, so skeptic skips them.
fn hide_compile_fail_blocks(markdown: &str) -> String {
    markdown
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let is_fence = trimmed.starts_with("```") || trimmed.starts_with("~~~");
            if is_fence && trimmed.contains("compile_fail") {
                let indent = &line[..line.len() - trimmed.len()];
                let fence: String = trimmed
                    .chars()
                    .take_while(|c| *c == '`' || *c == '~')
                    .collect();
                let info: Vec<&str> = trimmed[fence.len()..]
                    .split(',')
                    .map(str::trim)
                    .filter(|tag| *tag != "rust")
                    .collect();
                format!("{indent}{fence}{}\n", info.join(","))
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// The code of every listing whose shown output `tests/book` checks by
/// running it with no arguments, as a Rust block shows it (see [`normalise`]).
fn shown_programs(listings: &Path) -> HashSet<String> {
    let mut shown = HashSet::new();
    let Ok(chapters) = fs::read_dir(listings) else {
        return shown;
    };
    for chapter in chapters.flatten() {
        let Ok(files) = fs::read_dir(chapter.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let (Some(stem), Some("out")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) else {
                continue;
            };
            let command = format!("$ cargo run --example {stem}");
            let runs_bare = fs::read_to_string(&path)
                .is_ok_and(|out| out.lines().next() == Some(command.as_str()));
            if let (true, Ok(code)) = (runs_bare, fs::read_to_string(path.with_extension("rs"))) {
                shown.insert(normalise(&code));
            }
        }
    }
    shown
}

/// The code of every listing registered as an `[[example]]` in Cargo.toml
/// (its `path = "listings/..."` lines): `cargo test` compiles each of them
/// (tests/book checks that every listing is one, with `test = true`), so
/// skeptic need not compile a block that is one of them again.
fn example_programs(root: &Path) -> HashSet<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("path = \"listings/"))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter_map(|path| fs::read_to_string(root.join("listings").join(path)).ok())
        .map(|code| normalise(&code))
        .collect()
}

/// A program's code without what mdBook leaves out when it includes it
/// (the `ANCHOR` lines) and without trailing blanks, so a listing file and
/// the block that includes it compare equal.
fn normalise(code: &str) -> String {
    let lines: Vec<&str> = code
        .lines()
        .filter(|l| !l.contains("ANCHOR:") && !l.contains("ANCHOR_END:"))
        .map(str::trim_end)
        .collect();
    lines.join("\n").trim_end().to_owned()
}

/// The programs the Rust blocks seen so far compile: (runs it, its code);
/// and the programs `tests/book` runs already.
#[derive(Default)]
struct Programs {
    seen: HashSet<(bool, String)>,
    shown: HashSet<String>,
    examples: HashSet<String>,
}

impl Programs {
    /// Mark `ignore` each Rust block whose program an earlier block already
    /// compiles, and runs when this one would run it.
    fn ignore_repeats(&mut self, markdown: &str) -> String {
        let mut out = String::with_capacity(markdown.len());
        let mut lines = markdown.lines();
        while let Some(line) = lines.next() {
            let trimmed = line.trim_start();
            let info = trimmed.strip_prefix("```").unwrap_or("");
            let tags: Vec<&str> = info.split(',').map(str::trim).collect();
            let is_rust = trimmed.starts_with("```") && tags.first() == Some(&"rust");
            if !is_rust || tags.contains(&"ignore") {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim_start().starts_with("```"))
                .collect();
            // What rustc sees: hidden lines (`# `) are compiled too.
            let code: Vec<&str> = body
                .iter()
                .map(|l| match l.strip_prefix("# ") {
                    Some(hidden) => hidden,
                    None if *l == "#" => "",
                    None => l,
                })
                .collect();
            let code = code.join("\n");
            let indent = &line[..line.len() - trimmed.len()];
            let shown = self.shown.contains(&normalise(&code));
            let runs = !tags.contains(&"no_run") && !shown;
            // A block that is a whole registered listing, not run here, only
            // repeats the compile `cargo test` does of that example.
            let built = !runs && self.examples.contains(&normalise(&code));
            let repeat = built
                || self.seen.contains(&(true, code.clone()))
                || !runs && self.seen.contains(&(false, code.clone()));
            if repeat {
                out.push_str(&format!("{indent}```{info},ignore\n"));
            } else if shown && !tags.contains(&"no_run") {
                self.seen.insert((runs, code));
                out.push_str(&format!("{indent}```{info},no_run\n"));
            } else {
                self.seen.insert((runs, code));
                out.push_str(line);
                out.push('\n');
            }
            for l in &body {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str("```\n");
        }
        out
    }
}
