//! A GiB each way through the proxy with curl, made and checked as a
//! stream on both ends (`pattern.rs`), while the proxy's resident memory
//! is sampled: it streams through fixed buffers, so its memory stays flat
//! whatever the body's size.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clients::require;
use crate::origins;
use crate::pattern::{Checker, Pattern};
use crate::proxy::{self, Proxy};
use crate::support;

const GIB: u64 = 1 << 30;
/// What one transfer may take: debug builds of the proxy and of this
/// test's origin, on a 2-core machine shared with other builds.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);
/// How much the proxy's resident memory may grow over its start during
/// the transfers. It copies through a 16 KiB buffer per direction;
/// measured (debug build, 2026-12-03, two runs): VmRSS 13.7 MiB at start,
/// 18.2 MiB at its peak, so 4.5 MiB of growth (may's worker and timer
/// threads, the pool, the allocator's arenas). 16 MiB leaves room for
/// allocator noise; a body held whole (1 GiB), or any 16 MiB of it,
/// breaks it.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// The highest VmRSS of `pid` seen until `stop`, sampled every 50 ms.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            peak = peak.max(proxy::status_kib(pid, "VmRSS"));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// Run `curl ARGS` with `input` on its stdin (if any), feed its stdout to
/// `output`, and wait for it (bounded); its stderr if it failed.
fn curl_streaming(
    args: &[&str],
    input: Option<Pattern>,
    mut output: impl FnMut(&[u8]),
) -> Result<(), String> {
    require("curl", "curl");
    let mut child = Command::new("curl")
        .arg("-q")
        .args(args)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl starts");
    let feeder = input.map(|mut pattern| {
        let mut stdin = child.stdin.take().unwrap();
        // A test thread, not a coroutine: a plain blocking copy is right.
        std::thread::spawn(move || io::copy(&mut pattern, &mut stdin).map(|_| ()))
    });
    let stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || io::read_to_string(stderr).unwrap_or_default());
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdout.read(&mut buf).expect("reading curl's output");
        if n == 0 {
            break;
        }
        output(&buf[..n]);
    }
    let status = support::wait_bounded(&mut child, TRANSFER_LIMIT);
    if let Some(feeder) = feeder {
        feeder
            .join()
            .unwrap()
            .map_err(|e| format!("feeding curl: {e}"))?;
    }
    let said = said.join().unwrap();
    match status.success() {
        true => Ok(()),
        false => Err(format!("curl {args:?}: {status:?}\n{said}")),
    }
}

#[test]
fn a_gib_downloaded_and_a_gib_uploaded_keep_the_proxy_small() {
    let origin = origins::http();
    let proxy = Proxy::start(&["--allow-dest", "127.0.0.1/32"]);
    let at_start = proxy.status_kib("VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(proxy.pid(), stop.clone());
    let base = format!("http://127.0.0.1:{}", origin.port());

    let started = Instant::now();
    let mut down = Checker::default();
    let url = format!("{base}/pattern/{GIB}");
    curl_streaming(&["-sS", "-x", &proxy.url(), &url], None, |bytes| {
        down.update(bytes)
    })
    .unwrap();
    assert_eq!(down.verdict(GIB), None, "the GiB downloaded");
    let download = started.elapsed();

    // `-T -`: a PUT of stdin, chunked (curl cannot know its length).
    let started = Instant::now();
    let mut answer = Vec::new();
    let url = format!("{base}/upload");
    curl_streaming(
        &["-sS", "-x", &proxy.url(), "-T", "-", &url],
        Some(Pattern::new(GIB)),
        |bytes| answer.extend_from_slice(bytes),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{GIB} Chunked ok\n")
    );
    let upload = started.elapsed();

    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    eprintln!(
        "a GiB down in {download:?}, up in {upload:?}; proxy VmRSS {at_start} KiB at start, {peak} KiB at its peak"
    );
    assert!(
        peak < at_start + RSS_GROWTH_BOUND_KIB,
        "the proxy's VmRSS grew from {at_start} KiB to {peak} KiB, more than {RSS_GROWTH_BOUND_KIB} KiB"
    );
    let summary = proxy.stop();
    assert_eq!(summary["bytes_up"], GIB, "{summary}");
    assert_eq!(
        summary["bytes_down"],
        GIB + answer.len() as u64,
        "{summary}"
    );
}
