//! Pitfall: a proxy that reads each request body into a `Vec` before it
//! forwards it. It looks harmless with small bodies, but the proxy's heap
//! then grows with the largest upload in flight: a few clients uploading
//! large files at once can take the process down, and each upload is held
//! back until its last byte has arrived. The fix is to stream the body
//! through the connection's fixed buffer with `copy_body`, which costs the
//! same memory for any size.
//!
//! The listing counts every heap allocation (a counting global allocator)
//! and uploads a 1 MiB and a 32 MiB body through each proxy, to an origin
//! on loopback that reads and counts the bytes. The growth of the heap's
//! peak during each upload is what the proxy held.
//!
//! Run it: `cargo run --example pitfall_whole_body`

#[path = "loopback_server.rs"]
mod loopback_server;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use may_patterns::http::{
    copy_body, read_request_head, read_response, read_response_head, remove_hop_by_hop,
    response_framing, set_framing, write_head, write_response, BodyReader, Framing, Limits,
};
use may_patterns::server::Conn;

use loopback_server::start;

// ANCHOR: counting
/// The system allocator, counting the bytes live now and the most ever
/// live since [`start_peak`]. A `realloc` counts only its growth, so the
/// peak is a lower bound (a moving `realloc` briefly holds both blocks).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; the counters are
// only arithmetic on the sizes it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = System.alloc(layout);
        if !block.is_null() {
            grew(layout.size());
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = System.alloc_zeroed(layout);
        if !block.is_null() {
            grew(layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        System.dealloc(block, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(block, layout, new_size);
        if !moved.is_null() {
            match new_size.checked_sub(layout.size()) {
                Some(more) => grew(more),
                None => {
                    LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
                }
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Start measuring a peak from what is live now; returns that baseline.
fn start_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}
// ANCHOR_END: counting

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The bodies uploaded through each proxy.
const SMALL: usize = MIB;
const LARGE: usize = 32 * MIB;
/// The largest body either proxy forwards (both must accept `LARGE`).
const BODY_CAP: u64 = 64 * MIB as u64;
/// The connection's buffer for streaming: one per connection, on the heap.
const COPY_BUFFER: usize = 16 * KIB;
/// A peer that sends nothing for this long is cut off.
const IDLE: Duration = Duration::from_secs(10);

/// How the proxy forwards a request body.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Buffered,
    Streamed,
}

// ANCHOR: forward
/// Forward one request from `client` to `origin`, its body as `mode` says,
/// and stream the answer back.
fn forward(mode: Mode, client: Conn, origin: SocketAddr) -> io::Result<()> {
    client.set_idle_timeout(Some(IDLE))?;
    client.set_write_timeout(Some(IDLE))?;
    let (client_in, mut client_out) = client.split()?;
    let mut client_in = BufReader::new(client_in);
    let limits = Limits::default();
    let Some(mut head) = read_request_head(&mut client_in, &limits)? else {
        return Ok(());
    };
    let framing = head.framing()?;
    let upstream = may_patterns::net::connect_timeout(&origin, IDLE)?;
    upstream.set_read_timeout(Some(IDLE))?;
    upstream.set_write_timeout(Some(IDLE))?;
    let mut upstream_in = BufReader::new(upstream.try_clone()?);
    let mut upstream_out = BufWriter::with_capacity(COPY_BUFFER, upstream);
    remove_hop_by_hop(&mut head.headers);
    let start_line = format!("{} {} HTTP/1.1", head.method, head.target);
    let mut buf = vec![0; COPY_BUFFER];
    match mode {
        // The mistake: the whole body in memory before a byte goes on.
        Mode::Buffered => {
            let mut body = Vec::new();
            BodyReader::new(&mut client_in, framing, BODY_CAP, &limits).read_to_end(&mut body)?;
            set_framing(&mut head.headers, Framing::Length(body.len() as u64));
            write_head(&mut upstream_out, &start_line, &head.headers)?;
            upstream_out.write_all(&body)?;
            upstream_out.flush()?;
        }
        // The fix: through the connection's fixed buffer, as it arrives.
        Mode::Streamed => {
            set_framing(&mut head.headers, framing);
            write_head(&mut upstream_out, &start_line, &head.headers)?;
            copy_body(
                &mut client_in,
                framing,
                &mut upstream_out,
                framing,
                BODY_CAP,
                &limits,
                &mut buf,
            )?;
        }
    }
    // The answer is streamed back in both modes.
    let mut answer = read_response_head(&mut upstream_in, &limits)?;
    let framing = response_framing(&head.method, answer.status, &answer.headers)?;
    remove_hop_by_hop(&mut answer.headers);
    set_framing(&mut answer.headers, framing);
    answer
        .headers
        .push(("Connection".to_owned(), "close".to_owned()));
    let status_line = format!("HTTP/1.1 {} {}", answer.status, answer.reason);
    let mut client_out = BufWriter::with_capacity(COPY_BUFFER, &mut client_out);
    write_head(&mut client_out, &status_line, &answer.headers)?;
    copy_body(
        &mut upstream_in,
        framing,
        &mut client_out,
        framing,
        BODY_CAP,
        &limits,
        &mut buf,
    )?;
    client_out.flush()
}
// ANCHOR_END: forward

/// The origin: reads each body through a fixed buffer and answers with
/// how many bytes it got.
fn count_body(conn: Conn) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let mut input = BufReader::new(input);
    let limits = Limits::default();
    let Some(head) = read_request_head(&mut input, &limits)? else {
        return Ok(());
    };
    let mut body = BodyReader::new(&mut input, head.framing()?, BODY_CAP, &limits);
    let (mut buf, mut total) = (vec![0; COPY_BUFFER], 0);
    loop {
        match body.read(&mut buf)? {
            0 => break,
            n => total += n,
        }
    }
    let text = format!("received {total} bytes");
    write_response(&mut output, 200, "OK", "text/plain", &[], text.as_bytes())
}

/// Upload `size` bytes through the proxy at `proxy`, written from one
/// small buffer so the client itself holds no more than that; how much the
/// heap's peak grew meanwhile.
fn upload(proxy: SocketAddr, size: usize) -> io::Result<usize> {
    let base = start_peak();
    let mut stream = may_patterns::net::connect(proxy)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let head = format!(
        "POST http://upload.example/files HTTP/1.1\r\nHost: upload.example\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let piece = vec![b'x'; 64 * KIB];
    for _ in 0..size / piece.len() {
        stream.write_all(&piece)?;
    }
    stream.write_all(&piece[..size % piece.len()])?;
    let answer = read_response(&mut BufReader::new(&mut stream), &Limits::default())?;
    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let expected = format!("received {size} bytes");
    if answer.status != 200 || answer.body != expected.as_bytes() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("the origin answered {} {:?}", answer.status, answer.body),
        ));
    }
    Ok(growth)
}

/// Peak growth for the small and the large body, per mode.
#[derive(Debug)]
struct Growth {
    buffered: [usize; 2],
    streamed: [usize; 2],
}

fn measure() -> io::Result<Growth> {
    let origin = start("pitfall_whole_body: an origin", &[], count_body)?;
    let to = origin.addr;
    let buffered_proxy = start("pitfall_whole_body: a proxy", &[], move |conn| {
        forward(Mode::Buffered, conn, to)
    })?;
    let streamed_proxy = start("pitfall_whole_body: a proxy", &[], move |conn| {
        forward(Mode::Streamed, conn, to)
    })?;
    let growth = Growth {
        buffered: [
            upload(buffered_proxy.addr, SMALL)?,
            upload(buffered_proxy.addr, LARGE)?,
        ],
        streamed: [
            upload(streamed_proxy.addr, SMALL)?,
            upload(streamed_proxy.addr, LARGE)?,
        ],
    };
    for server in [buffered_proxy, streamed_proxy, origin] {
        server.stop()?;
    }
    Ok(growth)
}

// ANCHOR: claim
/// What the measurement must show, or why it does not.
fn check(growth: &Growth) -> Result<(), String> {
    let [_, buffered_large] = growth.buffered;
    if buffered_large < 30 * MIB {
        return Err(format!(
            "buffered: the 32 MiB body grew the peak by only {buffered_large} bytes"
        ));
    }
    if let Some(too_much) = growth.streamed.iter().find(|&&g| g >= MIB) {
        return Err(format!(
            "streamed: a body grew the peak by {too_much} bytes"
        ));
    }
    Ok(())
}
// ANCHOR_END: claim

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("a 1 MiB and a 32 MiB upload through each proxy; how much the heap's peak grew:");
    let growth = match measure() {
        Ok(growth) => growth,
        Err(e) => {
            eprintln!("pitfall_whole_body: cannot measure: {e}");
            std::process::exit(1);
        }
    };
    if let Err(why) = check(&growth) {
        eprintln!("pitfall_whole_body: the pitfall did not show: {why}");
        std::process::exit(1);
    }
    for (name, [small, large]) in [("buffered", growth.buffered), ("streamed", growth.streamed)] {
        println!(
            "  {name}: 1 MiB body ~{} KiB, 32 MiB body ~{} KiB",
            small / KIB,
            large / KIB
        );
    }
    println!(
        "buffered: the peak grew by at least 30 MiB for the 32 MiB body; \
         streamed: by less than 1 MiB for either"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test in this file: the allocator counts the whole process,
    // so a second test running beside it would blur the numbers.
    #[test]
    fn a_buffered_body_costs_its_size_and_a_streamed_one_does_not() {
        may_patterns::runtime::configure_for_tests();
        let growth = measure().unwrap();
        check(&growth).unwrap();
        // It grows with the body: a body 32 times larger raised it at
        // least 16 times as much.
        let [small, large] = growth.buffered;
        assert!(small >= SMALL, "{growth:?}");
        assert!(large >= 16 * small, "{growth:?}");
    }
}
