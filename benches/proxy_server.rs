//! The book's forward proxy beside tinyproxy and squid, same box, same
//! load tool, same run.
//!
//! An nginx origin serves a 1 KiB file on a loopback port
//! (`benches/proxy_server/origin_nginx.conf.in`). Each proxy in turn
//! (tinyproxy and squid from the configs beside it, no cache, no access
//! log; our `proxy_server` as a release build allowed to reach loopback)
//! is loaded with `hey -x PROXY` fetching that file at 1, 10 and 50
//! concurrent clients with keep-alive, and at 10 with
//! `-disable-keepalive`: requests per second, p50 and p99 from hey's
//! summary, failed requests (hey's errors and non-200 answers) and the
//! proxy's CPU seconds. Then 1,000 CONNECT tunnels to the origin are
//! opened through it and left idle, and its resident memory is read
//! (VmRSS summed over the proxy's process and its children, since a
//! proxy may fork); each tunnel then fetches the file once, to show it
//! was still open.
//!
//! `cargo bench --bench proxy_server` (about a minute after the release
//! build) rewrites `book/proxy_server/bench_proxies.md` and
//! `bench_tunnels.md`. It needs nginx, tinyproxy, squid and hey (Debian's
//! packages) and panics with a sentence when one is missing, or when the
//! example does not build, before writing any table.

#[path = "proxy_server/load.rs"]
mod load;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "proxy_server/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::time::Duration;

use load::{Hey, Tunnels};
use procs::Proc;

/// hey's runs: (concurrent clients, requests, keep-alive).
const RUNS: [(usize, usize, bool); 4] = [
    (1, 5_000, true),
    (10, 20_000, true),
    (50, 20_000, true),
    (10, 5_000, false),
];
/// Idle tunnels held open while the memory is read.
const TUNNELS: usize = 1_000;

struct Measured {
    name: &'static str,
    runs: Vec<(usize, bool, Hey, Duration)>,
    processes: usize,
    rss_base: u64,
    rss_tunnels: u64,
    opened: usize,
    answered: usize,
}

fn main() {
    let origin = procs::origin();
    let url = format!("http://{}/1k", origin.addr);
    let mut results = Vec::new();
    for start in [procs::tinyproxy, procs::squid] {
        results.push(measure(start(origin.port()), &url, origin.port()));
    }
    // Ours last: a bench run before the example exists still shows the
    // peers' numbers on stderr before this panics.
    results.push(measure(
        procs::proxy_server(origin.port()),
        &url,
        origin.port(),
    ));
    write_tables(&results);
}

fn measure(proxy: Proc, url: &str, origin_port: u16) -> Measured {
    eprintln!("{}: on {}", proxy.name, proxy.addr);
    // One short run first, so no proxy's first connections are measured.
    load::hey(proxy.addr, url, 10, 1_000, true);
    let mut runs = Vec::new();
    for (clients, requests, keep_alive) in RUNS {
        let cpu = proxy.cpu();
        let hey = load::hey(proxy.addr, url, clients, requests, keep_alive);
        let cpu = proxy.cpu() - cpu;
        eprintln!(
            "{}: c={clients} keep-alive {keep_alive}: {:.0} req/s, p50 {:?}, p99 {:?}, {} failed, cpu {cpu:?}",
            proxy.name, hey.per_sec, hey.p50, hey.p99, hey.failed
        );
        runs.push((clients, keep_alive, hey, cpu));
    }
    let rss_base = proxy.rss();
    let mut tunnels = Tunnels::open(proxy.addr, origin_port, TUNNELS);
    // Let the proxy finish its side of the last tunnels.
    std::thread::sleep(Duration::from_millis(500));
    let rss_tunnels = proxy.rss();
    let processes = proxy.tree().len();
    let opened = tunnels.len();
    let answered = tunnels.fetch_once();
    eprintln!(
        "{}: {opened} tunnels: rss {} -> {} MiB over {processes} processes, {answered} answered after",
        proxy.name,
        rss_base >> 20,
        rss_tunnels >> 20
    );
    Measured {
        name: proxy.name,
        runs,
        processes,
        rss_base,
        rss_tunnels,
        opened,
        answered,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn write_tables(results: &[Measured]) {
    let heading = |what: &str| {
        format!(
            "Measured on {} with `cargo bench --bench proxy_server` (release build; {what}; \
             the origin is nginx serving 1 KiB on loopback, and the load tool runs on the \
             same CPUs), {}.\n\n",
            may_patterns::machine::describe(),
            may_patterns::machine::today()
        )
    };
    let mut load = heading("`hey -x PROXY -n N -c C http://ORIGIN/1k`");
    load.push_str(
        "| proxy | clients | keep-alive | requests | req/s | p50 | p99 | failed | proxy CPU s |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        for (clients, keep_alive, hey, cpu) in &m.runs {
            writeln!(
                load,
                "| {} | {clients} | {} | {} | {:.0} | {} | {} | {} | {:.2} |",
                m.name,
                if *keep_alive { "yes" } else { "no" },
                hey.requests,
                hey.per_sec,
                ms(hey.p50),
                ms(hey.p99),
                hey.failed,
                cpu.as_secs_f64()
            )
            .unwrap();
        }
    }
    let mut tunnels = heading(&format!(
        "{TUNNELS} `CONNECT` tunnels to the origin opened and left idle; VmRSS summed over \
         the proxy's process and its children, pages they share counted in each"
    ));
    tunnels.push_str(
        "| proxy | processes | VmRSS, no client | VmRSS, tunnels idle | per tunnel | tunnels opened | tunnels that fetched 1 KiB after |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        let per = m.rss_tunnels.saturating_sub(m.rss_base) as f64 / m.opened.max(1) as f64;
        writeln!(
            tunnels,
            "| {} | {} | {} | {} | {:.1} KiB | {} | {} |",
            m.name,
            m.processes,
            mib(m.rss_base),
            mib(m.rss_tunnels),
            per / 1024.0,
            m.opened,
            m.answered
        )
        .unwrap();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("book/proxy_server");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bench_proxies.md"), load).unwrap();
    std::fs::write(dir.join("bench_tunnels.md"), tunnels).unwrap();
    eprintln!("wrote book/proxy_server/bench_proxies.md and bench_tunnels.md");
}
