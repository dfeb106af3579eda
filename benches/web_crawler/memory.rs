//! The final program's frontier with 100,000 URLs, weighed by a counting
//! allocator: every byte it holds on the heap, per URL, queued and after
//! the queue is drained (the seen-set alone, what a long crawl keeps for
//! every URL it ever met), beside a set of the URL strings themselves.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use url::Url;

use crate::frontier::{Entry, Frontier, Offered};
use crate::support::{self, Cell};

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only watches.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const URLS: usize = 100_000;
// The note below says "100,000" in words.
const _: () = assert!(URLS == 100_000);
const HOSTS: usize = 16;

/// URLs shaped like a site's: 16 hosts, a section, a numbered page, a
/// query on some.
fn urls() -> Vec<Url> {
    (0..URLS)
        .map(|i| {
            let host = i % HOSTS;
            let query = if i % 3 == 0 {
                format!("?page={}", i % 50)
            } else {
                String::new()
            };
            Url::parse(&format!(
                "http://host{host}.example.test/section{}/article-{i}.html{query}",
                i % 20
            ))
            .unwrap()
        })
        .collect()
}

pub fn per_100k_urls() {
    let urls = urls();
    let text_bytes: usize = urls.iter().map(|u| u.as_str().len()).sum();

    // Queued: every URL waiting in its host's queue, its fingerprint seen.
    let before = live();
    let mut frontier = Frontier::new();
    for url in &urls {
        assert_eq!(frontier.offer(Entry::new(url.clone(), 1)), Offered::Queued);
    }
    let queued = live() - before;
    // Fetched: the queue drained, only the seen-set left.
    while frontier.next_ready(|_| true).is_some() {}
    assert_eq!(frontier.seen_len(), URLS);
    let seen = live() - before;
    drop(frontier);

    // For comparison: a seen-set of the URL strings themselves.
    let before = live();
    let strings: HashSet<String> = urls.iter().map(|u| u.as_str().to_owned()).collect();
    let as_strings = live() - before;
    assert_eq!(strings.len(), URLS);
    drop(strings);

    let per = |bytes: usize| {
        vec![
            Cell::Bytes(bytes as f64 * 100_000.0 / URLS as f64),
            Cell::Count(bytes as f64 / URLS as f64),
        ]
    };
    let rows = vec![
        (
            "queued in the frontier (URL and fingerprint)".to_owned(),
            per(queued),
        ),
        (
            "seen only, queue drained (fingerprint)".to_owned(),
            per(seen),
        ),
        (
            "for comparison: HashSet<String> of the URLs".to_owned(),
            per(as_strings),
        ),
    ];
    let note = format!(
        "Heap bytes held by `listings/web_crawler/web_crawler/frontier.rs`'s `Frontier` \
         (included by the bench), counted by a global allocator that adds every allocation \
         and subtracts every free: 100,000 distinct URLs on {HOSTS} hosts, {:.0} characters \
         long on average.",
        text_bytes as f64 / URLS as f64
    );
    support::write_cells_table(
        "web_crawler",
        "memory.md",
        &note,
        &["per 100,000 URLs", "bytes per URL"],
        &rows,
    );
}
