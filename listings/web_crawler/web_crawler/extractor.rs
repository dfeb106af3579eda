//! Links and a title pulled out of a page's HTML while its bytes arrive.
//!
//! lol_html is a streaming rewriter: it tokenizes the bytes it is fed and
//! runs a handler for each element a CSS selector matches, keeping no
//! tree. No input can drive it into recursion (100,000 nested elements go
//! through a fetcher's stack, the tests show), and its buffers are capped
//! by the `max_memory` a fetch gives it. What it extracts:
//!
//! - `a[href]` and `area[href]`: the out-links, in document order, at most
//!   `max_links` kept (the rest counted in `links_dropped`);
//! - `base[href]`: the first one, which the frontier resolves links against;
//! - the first `title`'s text, whitespace collapsed, at most 512 chars;
//! - `<meta name="robots" content="...nofollow...">`: the page asks not to
//!   be followed; its links are dropped and `nofollow` is set (what wget
//!   does with robots on).
//!
//! `link rel=canonical` is not followed: it names the page itself under its
//! preferred URL, and a crawler that reached the page has it already.
//!
//! Attribute values come from lol_html as written, so `&amp;` in an href
//! (the usual way to write `&` in a query) is decoded here, with the other
//! four XML entities, `&nbsp;` and numeric references; any other named
//! reference is left as written. Links are returned raw otherwise: a
//! `javascript:` or `mailto:` href comes back as it is, for the frontier to
//! refuse.
//!
//! Charset: the bytes are read as UTF-8 unless a `<meta charset>` says
//! otherwise (lol_html switches then); a charset named only in the
//! `Content-Type` header is not applied. Tags and attribute names are ASCII
//! in every ASCII-compatible charset, so links in ASCII (nearly all of them;
//! non-ASCII URLs are mostly written percent-encoded) come out right either
//! way; a title in another charset may not. UTF-16 pages yield nothing.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use lol_html::errors::RewritingError;
use lol_html::html_content::{Element, TextChunk};
use lol_html::{element, text, HtmlRewriter, MemorySettings, OutputSink, Settings};

/// A title is a label for a person reading the crawl, not content: a page
/// whose `<title>` runs on (broken HTML that never closes it) keeps 512.
const MAX_TITLE_CHARS: usize = 512;

// ANCHOR: stack
/// Stack an extraction needs on top of the fetch that feeds it (the body
/// reaches `feed` from inside the client's read loop). Measured with may's
/// odd-stack report over the worst pages the tests feed (100,000 nested
/// elements, a page fed one byte at a time, a tag past the memory cap), in
/// debug and release builds, plus a margin; the test
/// `the_worst_pages_fit_in_the_stack_it_asks_for` runs them on this stack.
pub const STACK_BYTES: usize = 48 * 1024;
// ANCHOR_END: stack

/// Bytes of a title's text kept as written, before references and spaces
/// are tidied: room for 512 characters of four bytes each.
const MAX_TITLE_WRITTEN: usize = 4 * MAX_TITLE_CHARS;

// ANCHOR: extracted
/// What one page gave the crawler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The first `<title>`'s text, whitespace collapsed; `None` without one.
    pub title: Option<String>,
    /// `href`s of `a` and `area`, references decoded, otherwise as written.
    pub links: Vec<String>,
    /// The first `<base href>`, which relative links resolve against.
    pub base: Option<String>,
    /// HTML bytes fed.
    pub bytes: u64,
    /// Links past `max_links` (or all of them under `nofollow`): counted,
    /// not kept.
    pub links_dropped: u64,
    /// The page's `<meta name="robots">` said `nofollow` (or `none`).
    pub nofollow: bool,
}
// ANCHOR_END: extracted

/// Why a page could not be read to the end; the crawler records it as the
/// page's error and keeps what it had (nothing of this page is followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractError {
    pub reason: String,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "html: {}", self.reason)
    }
}

impl std::error::Error for ExtractError {}

impl From<RewritingError> for ExtractError {
    fn from(error: RewritingError) -> Self {
        let reason = match error {
            RewritingError::MemoryLimitExceeded(_) => {
                "the parser needed more memory than the page's limit allows".to_owned()
            }
            other => other.to_string(),
        };
        ExtractError { reason }
    }
}

/// What the handlers found so far. The handlers and the `Extractor` share
/// it through an `Rc`: all of it lives and dies inside one fetch on one
/// coroutine (an `Extractor` is not `Send`, so the compiler keeps it there).
#[derive(Default)]
struct Found {
    max_links: usize,
    links: Vec<String>,
    links_dropped: u64,
    base: Option<String>,
    title: String,
    title_done: bool,
    nofollow: bool,
}

impl Found {
    fn link(&mut self, href: String) {
        if self.links.len() < self.max_links {
            self.links.push(href);
        } else {
            self.links_dropped += 1;
        }
    }

    /// Text arrives in pieces that may split a word or a reference, so it
    /// is kept as written and tidied once, at the end.
    fn title_text(&mut self, chunk: &TextChunk<'_>) {
        if self.title_done {
            return;
        }
        if self.title.len() < MAX_TITLE_WRITTEN {
            self.title.push_str(chunk.as_str());
        }
        self.title_done = chunk.last_in_text_node();
    }

    fn meta_robots(&mut self, element: &Element<'_, '_>) {
        let content = element.get_attribute("content").unwrap_or_default();
        let says = |word: &str| {
            content
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(word))
        };
        if says("nofollow") || says("none") {
            self.nofollow = true;
        }
    }
}

/// The rewriter's output is the input again; the crawler needs none of it.
struct Discard;

impl OutputSink for Discard {
    fn handle_chunk(&mut self, _chunk: &[u8]) {}
}

// ANCHOR: extractor
/// One page's extraction: `feed` it the body as it arrives, then `finish`.
pub struct Extractor {
    rewriter: HtmlRewriter<'static, Discard>,
    found: Rc<RefCell<Found>>,
    bytes: u64,
    /// lol_html panics when a rewriter is used after it failed, so the
    /// first error is kept and returned again instead.
    failed: Option<ExtractError>,
}

impl Extractor {
    /// An extractor that keeps at most `max_links` links and lets the parser
    /// buffer at most `max_memory` bytes (an unclosed tag or comment is
    /// buffered whole: past the cap, `feed` fails instead of growing).
    pub fn new(max_links: usize, max_memory: usize) -> Extractor {
        let found = Rc::new(RefCell::new(Found {
            max_links,
            ..Found::default()
        }));
        let (on_a, on_area, on_base, on_title, on_meta) = (
            Rc::clone(&found),
            Rc::clone(&found),
            Rc::clone(&found),
            Rc::clone(&found),
            Rc::clone(&found),
        );
        let settings = Settings::new()
            .append_element_content_handler(element!("a[href]", move |el| {
                on_a.borrow_mut().link(href(el));
                Ok(())
            }))
            .append_element_content_handler(element!("area[href]", move |el| {
                on_area.borrow_mut().link(href(el));
                Ok(())
            }))
            .append_element_content_handler(element!("base[href]", move |el| {
                on_base.borrow_mut().base.get_or_insert_with(|| href(el));
                Ok(())
            }))
            .append_element_content_handler(text!("title", move |chunk| {
                on_title.borrow_mut().title_text(chunk);
                Ok(())
            }))
            .append_element_content_handler(element!("meta[name]", move |el| {
                let name = el.get_attribute("name").unwrap_or_default();
                if name.trim().eq_ignore_ascii_case("robots") {
                    on_meta.borrow_mut().meta_robots(el);
                }
                Ok(())
            }))
            .with_memory_settings(
                MemorySettings::new()
                    .with_preallocated_parsing_buffer_size(max_memory.min(1024))
                    .with_max_allowed_memory_usage(max_memory),
            )
            // Strict mode stops at markup whose parsing context only a tree
            // could settle; a crawler reads on and takes the links it sees.
            .with_strict(false)
            .with_adjust_charset_on_meta_tag(true);
        Extractor {
            rewriter: HtmlRewriter::new(settings, Discard),
            found,
            bytes: 0,
            failed: None,
        }
    }

    /// The next bytes of the body, as the client's sink hands them over.
    /// After an error every call returns that error again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ExtractError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.bytes += chunk.len() as u64;
        self.rewriter.write(chunk).map_err(|error| {
            let error = ExtractError::from(error);
            self.failed = Some(error.clone());
            error
        })
    }

    /// The end of the body: what the page gave.
    pub fn finish(self) -> Result<Extracted, ExtractError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        self.rewriter.end()?;
        let found = self.found.take();
        let (links, links_dropped) = if found.nofollow {
            (Vec::new(), found.links_dropped + found.links.len() as u64)
        } else {
            (found.links, found.links_dropped)
        };
        Ok(Extracted {
            title: tidy_title(&found.title),
            links,
            base: found.base,
            bytes: self.bytes,
            links_dropped,
            nofollow: found.nofollow,
        })
    }
}
// ANCHOR_END: extractor

/// Whether a `Content-Type` is HTML, the only type whose links are read
/// (`text/html` and `application/xhtml+xml`, any parameters). A missing one
/// is not sniffed: the crawler stores such a body but does not parse it.
pub fn is_html(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/html")
        || essence.eq_ignore_ascii_case("application/xhtml+xml")
}

/// A title as a person reads it: references decoded, runs of white space
/// made one space, at most `MAX_TITLE_CHARS`; `None` when nothing is left.
fn tidy_title(written: &str) -> Option<String> {
    let decoded = decode_references(written);
    let words: Vec<&str> = decoded.split_whitespace().collect();
    let title: String = words.join(" ").chars().take(MAX_TITLE_CHARS).collect();
    (!title.is_empty()).then_some(title)
}

fn href(element: &Element<'_, '_>) -> String {
    decode_references(&element.get_attribute("href").unwrap_or_default())
}

// ANCHOR: references
/// `text` with `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and
/// numeric references (`&#38;`, `&#x26;`) replaced by their characters;
/// anything else that starts with `&` is kept as written.
fn decode_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // A reference is short: `&#x10FFFF;` is the longest one decoded.
        let end = rest.char_indices().take(10).find(|&(_, c)| c == ';');
        let decoded = end.and_then(|(end, _)| reference(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character a reference's name (between `&` and `;`) stands for.
fn reference(name: &str) -> Option<char> {
    let number = |digits: &str, radix| u32::from_str_radix(digits, radix).ok();
    let code = match name {
        "amp" => return Some('&'),
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "quot" => return Some('"'),
        "apos" => return Some('\''),
        "nbsp" => return Some('\u{a0}'),
        _ => match name.strip_prefix('#')? {
            hex if hex.starts_with(['x', 'X']) => number(&hex[1..], 16)?,
            decimal => number(decimal, 10)?,
        },
    };
    // What the HTML standard does with a reference to NUL or a surrogate.
    Some(
        char::from_u32(code)
            .filter(|&c| c != '\0')
            .unwrap_or('\u{fffd}'),
    )
}
// ANCHOR_END: references

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: usize = 1000;
    const MEMORY: usize = 256 * 1024;

    fn extract(html: &[u8]) -> Extracted {
        let mut extractor = Extractor::new(LINKS, MEMORY);
        extractor.feed(html).unwrap();
        extractor.finish().unwrap()
    }

    #[test]
    fn links_base_and_title_come_out_in_order() {
        let page = extract(
            b"<html><head><base href='/docs/'><title> A\n  page &amp; more </title></head>\
              <body><a href=one.html>1</a><map><area href='/two'></map>\
              <a name=anchor>no href</a><a href=\"three?a=1&amp;b=2\">3</a></body></html>",
        );
        assert_eq!(page.title.as_deref(), Some("A page & more"));
        assert_eq!(page.base.as_deref(), Some("/docs/"));
        assert_eq!(page.links, ["one.html", "/two", "three?a=1&b=2"]);
        assert_eq!(page.links_dropped, 0);
        assert!(!page.nofollow);
    }

    #[test]
    fn broken_html_still_gives_its_links() {
        let page = extract(
            b"<title>unclosed<div><a href=/a>a<table><a href='/b'<p></td></tr><a href=/c>\
              <!-- a comment that never ends <a href=/hidden>",
        );
        // The first title never closes, so its text runs on; it stops at the cap.
        assert!(page.title.unwrap().starts_with("unclosed"));
        // Inside an unclosed <title> everything is text (the HTML standard
        // says so): a browser would find no links either.
        assert!(page.links.is_empty(), "{:?}", page.links);

        let page = extract(b"<div><a href=/a>a<table><a href='/b'<p></td></tr><a href=/c>");
        assert_eq!(page.links, ["/a", "/b", "/c"]);
    }

    #[test]
    fn a_page_fed_one_byte_at_a_time_gives_the_same_result() {
        let html = "<title>t\u{e9}l\u{e9} &amp;\n co</title><a href='/x?q=\u{e9}&amp;r'>x</a>\
                    <a href=\"/y\">y</a><meta name=robots content=index>"
            .as_bytes();
        let mut extractor = Extractor::new(LINKS, MEMORY);
        for byte in html {
            extractor.feed(std::slice::from_ref(byte)).unwrap();
        }
        let page = extractor.finish().unwrap();
        assert_eq!(page, extract(html));
        assert_eq!(page.links, ["/x?q=\u{e9}&r", "/y"]);
        assert_eq!(page.title.as_deref(), Some("t\u{e9}l\u{e9} & co"));
        assert_eq!(page.bytes, html.len() as u64);
    }

    #[test]
    fn links_past_the_cap_are_counted_not_kept() {
        let html: String = (0..25).map(|i| format!("<a href=/p{i}>")).collect();
        let mut extractor = Extractor::new(10, MEMORY);
        extractor.feed(html.as_bytes()).unwrap();
        let page = extractor.finish().unwrap();
        assert_eq!(page.links.len(), 10);
        assert_eq!(page.links[9], "/p9");
        assert_eq!(page.links_dropped, 15);
    }

    #[test]
    fn meta_robots_nofollow_drops_every_link() {
        for content in ["nofollow", "noindex, NoFollow", " none "] {
            let html =
                format!("<a href=/before><meta name=ROBOTS content='{content}'><a href=/after>");
            let page = extract(html.as_bytes());
            assert!(page.nofollow, "{content}");
            assert!(page.links.is_empty());
            assert_eq!(page.links_dropped, 2);
        }
        let page = extract(b"<meta name=googlebot content=nofollow><a href=/kept>");
        assert!(!page.nofollow);
        assert_eq!(page.links, ["/kept"]);
    }

    #[test]
    fn other_schemes_come_back_raw_for_the_frontier_to_refuse() {
        let page = extract(
            b"<a href='javascript:void(0)'>j</a><a href='mailto:a@b.example'>m</a>\
              <a href='  /spaced \n'>s</a><a href=''>empty</a><a href='&bogus; &#xZZ; &'>e</a>",
        );
        assert_eq!(
            page.links,
            [
                "javascript:void(0)",
                "mailto:a@b.example",
                "  /spaced \n",
                "",
                "&bogus; &#xZZ; &"
            ]
        );
    }

    #[test]
    fn numeric_references_are_decoded_and_bad_ones_replaced() {
        assert_eq!(
            decode_references("&#65;&#x42;&#X43;&lt;&gt;&quot;&apos;"),
            "ABC<>\"'"
        );
        assert_eq!(
            decode_references("&#0;&#xD800;&#x110000;"),
            "\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(decode_references("a&b&amp"), "a&b&amp");
    }

    #[test]
    fn a_title_that_never_ends_stops_at_the_cap() {
        let html = format!("<title>{}", "word ".repeat(1000));
        let title = extract(html.as_bytes()).title.unwrap();
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
    }

    #[test]
    fn a_tag_bigger_than_the_memory_cap_is_an_error_not_growth() {
        let mut extractor = Extractor::new(LINKS, 4096);
        let huge_tag = format!("<a href='{}'", "x".repeat(64 * 1024));
        // Fed in small pieces, the parser must buffer the unfinished tag.
        let result = huge_tag
            .as_bytes()
            .chunks(512)
            .try_for_each(|chunk| extractor.feed(chunk));
        let error = result.unwrap_err();
        assert!(error.reason.contains("more memory"), "{error}");
        // lol_html would panic if used again; the extractor answers instead.
        assert_eq!(extractor.feed(b">").unwrap_err(), error);
        assert_eq!(extractor.finish().unwrap_err(), error);
    }

    /// `levels` unclosed `<div>`s around one link.
    fn nested(levels: usize) -> Vec<u8> {
        format!("{}<a href=/deep>deep</a>", "<div>".repeat(levels)).into_bytes()
    }

    #[test]
    fn deep_nesting_costs_memory_not_stack() {
        // lol_html keeps no tree, but it does keep the elements still open:
        // past the cap a deep page is an error, as a huge tag is.
        let mut extractor = Extractor::new(LINKS, 1024 * 1024);
        let result = nested(100_000)
            .chunks(16 * 1024)
            .try_for_each(|chunk| extractor.feed(chunk));
        assert!(result.unwrap_err().reason.contains("more memory"));
        // With room for them, 100,000 open elements cost no more stack than
        // one: the worst-pages test below runs this on STACK_BYTES.
        let mut extractor = Extractor::new(LINKS, 32 * 1024 * 1024);
        extractor.feed(&nested(100_000)).unwrap();
        assert_eq!(extractor.finish().unwrap().links, ["/deep"]);
    }

    /// The pages that work the parser hardest, each as the fetcher would
    /// feed it; returns what each gave, as text.
    fn worst_pages() -> Vec<String> {
        let deep = nested(100_000);
        let busy: String = (0..2_000)
            .map(|i| {
                format!(
                    "<title>t &amp; &#x41; {i}</title><meta name=robots content='index'>\
                     <table><tr><td><a href='/p{i}?a=1&amp;b=2'>t</a><area href=/x></td></tr>\
                     </table><!-- c --><script>var a = '<a href=/no>';</script>"
                )
            })
            .collect();
        let huge_tag = format!("<a href='{}'", "x".repeat(1024 * 1024));
        let cases: [(&[u8], usize, usize); 5] = [
            (&deep, 16 * 1024, 32 * 1024 * 1024),
            (&deep, 1, 32 * 1024 * 1024),
            (busy.as_bytes(), 1, MEMORY),
            (busy.as_bytes(), 16 * 1024, MEMORY),
            (huge_tag.as_bytes(), 512, 64 * 1024),
        ];
        cases
            .iter()
            .map(|&(html, chunk, memory)| {
                let mut extractor = Extractor::new(LINKS, memory);
                let fed = html.chunks(chunk).try_for_each(|c| extractor.feed(c));
                let page = fed.and_then(|()| extractor.finish());
                format!(
                    "{:?}",
                    page.map(|p| (p.links.len(), p.links_dropped, p.title))
                )
            })
            .collect()
    }

    #[test]
    fn the_worst_pages_fit_in_the_stack_it_asks_for() {
        let words = STACK_BYTES / std::mem::size_of::<usize>();
        let builder = may::coroutine::Builder::new().stack_size(words);
        // SAFETY: the coroutine touches no thread-local storage, and its
        // stack is the one this test exists to check (an overflow fails it).
        let handle = unsafe { builder.spawn(worst_pages) }.unwrap();
        let results = handle.join().expect("the extraction coroutine ended");
        assert_eq!(
            results,
            worst_pages(),
            "the same on a coroutine as on a thread"
        );
        assert!(results[0].starts_with("Ok((1, 0"), "{results:?}");
        assert!(results[4].contains("more memory"), "{results:?}");
    }

    #[test]
    fn content_types() {
        assert!(is_html(Some("text/html")));
        assert!(is_html(Some("Text/HTML; charset=ISO-8859-1")));
        assert!(is_html(Some("application/xhtml+xml")));
        assert!(!is_html(Some("text/plain")));
        assert!(!is_html(Some("image/png")));
        assert!(!is_html(None));
    }
}
