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
    let mut programs = Programs::default();
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

/// The programs the Rust blocks seen so far compile: (runs it, its code).
#[derive(Default)]
struct Programs(HashSet<(bool, String)>);

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
            let runs = !tags.contains(&"no_run");
            let repeat = self.0.contains(&(true, code.clone()))
                || !runs && self.0.contains(&(false, code.clone()));
            if repeat {
                out.push_str(&format!(
                    "{}```{info},ignore\n",
                    &line[..line.len() - trimmed.len()]
                ));
            } else {
                self.0.insert((runs, code));
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
