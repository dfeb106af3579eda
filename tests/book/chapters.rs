//! The book's chapters, as written and as mdBook expands them.

use std::fs;
use std::path::{Path, PathBuf};

use mdbook_driver::book::BookItem;
use mdbook_driver::builtin_renderers::MarkdownRenderer;
use mdbook_driver::MDBook;

/// A Markdown file: its path relative to `book/`, and its text.
pub struct Chapter {
    pub path: PathBuf,
    pub text: String,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the repository root, for messages.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if keep(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every Markdown file under `book/`, as written.
pub fn sources() -> Vec<Chapter> {
    let book = root().join("book");
    files_under(&book, &|p| p.extension().is_some_and(|e| e == "md"))
        .into_iter()
        .map(|path| Chapter {
            text: fs::read_to_string(&path).unwrap(),
            path: path.strip_prefix(&book).unwrap().to_path_buf(),
        })
        .collect()
}

/// Every file under `listings/`.
pub fn listing_files() -> Vec<PathBuf> {
    files_under(&root().join("listings"), &|_| true)
}

/// Every chapter in SUMMARY.md, expanded by mdBook's link preprocessor.
pub fn expanded() -> Vec<Chapter> {
    let book = MDBook::load(root()).expect("book.toml and SUMMARY.md load");
    let (expanded, _) = book
        .preprocess_book(&MarkdownRenderer::new())
        .expect("the book expands");
    expanded
        .iter()
        .filter_map(|item| match item {
            BookItem::Chapter(ch) => ch.path.as_ref().map(|path| Chapter {
                path: path.clone(),
                text: ch.content.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Render the whole book to HTML in `out`, as `mdbook build` would.
pub fn build_html(out: &Path) {
    let mut book = MDBook::load(root()).expect("book.toml and SUMMARY.md load");
    book.config.build.build_dir = out.to_path_buf();
    book.build().expect("the book renders to HTML");
}
