//! The book's chat server beside ngircd, same box, same bot load, same run.
//!
//! Each server in turn: started on a loopback port (ngircd from the config
//! in `benches/chat_server/ngircd.conf.in`, our `chat_server` as a release
//! build with a flood quota far above the load and an on-disk history
//! database), its resident memory read with no client, then with 1,000
//! bots registered and joined (100 in each of 10 rooms) and idle; then the
//! bots send at a fixed rate per bot for a fixed time, each line carrying
//! its send time, and every bot records how late each room line reached
//! it. Delivered lines per second, p50/p99 delivery latency, the server's
//! CPU seconds (utime + stime) over the load and its memory (VmRSS after,
//! VmHWM) come from that; the rate is then raised to find which server
//! saturates first. The bots are may coroutines in this process, so they
//! share the machine's CPUs with the server under test, the same for both.
//!
//! `cargo bench --bench chat_server` (about two minutes after the release
//! build) rewrites `book/chat_server/bench_ngircd.md` and
//! `book/chat_server/bench_idle.md`. It needs ngircd (Debian's `ngircd`,
//! at /usr/sbin/ngircd) and stops with a sentence when it is missing.

mod support;

#[path = "chat_server/bots.rs"]
mod bots;
#[path = "chat_server/servers.rs"]
mod servers;

use std::fmt::Write as _;
use std::time::Duration;

use bots::{Bots, Phase};
use servers::Server;

/// The load: 1,000 clients in 10 rooms of 100.
const BOTS: usize = 1_000;
const ROOMS: usize = 10;
/// Lines per second per bot: the fixed rate first, then higher
/// until a server saturates.
const RATES: [f64; 4] = [1.0, 2.0, 4.0, 8.0];
/// How long each rate is held.
const LENGTH: Duration = Duration::from_secs(10);
/// A server is saturated at a rate when it delivers less than this share
/// of what the rooms should have received, or its p99 passes `SLOW`.
const DELIVERED_SHARE: f64 = 0.99;
const SLOW: Duration = Duration::from_secs(1);

/// One server's results.
struct Measured {
    name: &'static str,
    idle_base: u64,
    idle_loaded: u64,
    rows: Vec<(f64, Phase, Duration, u64, u64)>,
}

fn main() {
    support::configure_may();
    let ngircd = measure(servers::ngircd());
    let ours = measure(servers::chat_server());
    write_tables(&[ngircd, ours]);
}

fn measure(server: Server) -> Measured {
    eprintln!("{}: on {}", server.name, server.addr);
    let idle_base = server.status_bytes("VmRSS");
    let mut bots = Bots::connect(server.addr, BOTS, ROOMS);
    // Let the last JOINs' replies leave the server before reading memory.
    std::thread::sleep(Duration::from_millis(500));
    let idle_loaded = server.status_bytes("VmRSS");
    let mut rows = Vec::new();
    for (phase, rate) in RATES.into_iter().enumerate() {
        let cpu = server.cpu();
        let result = bots.load(phase as u64, rate, LENGTH);
        let cpu = server.cpu() - cpu;
        let (rss, hwm) = (server.status_bytes("VmRSS"), server.status_bytes("VmHWM"));
        eprintln!(
            "{}: {rate}/s per bot: sent {}, delivered {} of {} ({:.0}/s), p50 {:?}, p99 {:?}, cpu {:?}, rss {} MiB, {} bots cut",
            server.name,
            result.sent,
            result.delivered,
            result.expected,
            result.delivered_per_sec(),
            result.latency(0.5),
            result.latency(0.99),
            cpu,
            rss >> 20,
            result.gone
        );
        let saturated = saturated(&result);
        rows.push((rate, result, cpu, rss, hwm));
        if saturated {
            break;
        }
    }
    bots.quit();
    Measured {
        name: server.name,
        idle_base,
        idle_loaded,
        rows,
    }
}

fn saturated(p: &Phase) -> bool {
    (p.delivered as f64) < p.expected as f64 * DELIVERED_SHARE || p.latency(0.99) > SLOW
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn write_tables(results: &[Measured]) {
    let heading = format!(
        "Measured on {} with `cargo bench --bench chat_server` (release build; \
         {BOTS} bots in {ROOMS} rooms, each rate held {} s; the bots run in the bench \
         process on the same CPUs), {}.\n\n",
        may_patterns::machine::describe(),
        LENGTH.as_secs(),
        may_patterns::machine::today()
    );
    let mut load = heading.clone();
    load.push_str(
        "| server | lines/s per bot | lines delivered / expected | delivered lines/s | p50 latency | p99 latency | CPU s | VmRSS after | VmHWM |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        for (rate, p, cpu, rss, hwm) in &m.rows {
            let mark = if saturated(p) { " (saturated)" } else { "" };
            writeln!(
                load,
                "| {}{mark} | {rate} | {} / {} | {:.0} | {} | {} | {:.1} | {} | {} |",
                m.name,
                p.delivered,
                p.expected,
                p.delivered_per_sec(),
                ms(p.latency(0.5)),
                ms(p.latency(0.99)),
                cpu.as_secs_f64(),
                mib(*rss),
                mib(*hwm)
            )
            .unwrap();
        }
    }
    let mut idle = heading;
    idle.push_str(
        "| server | VmRSS, no client | VmRSS, 1,000 idle clients | per idle client |\n\
         |---|---:|---:|---:|\n",
    );
    for m in results {
        let per = m.idle_loaded.saturating_sub(m.idle_base) as f64 / BOTS as f64 / 1024.0;
        writeln!(
            idle,
            "| {} | {} | {} | {per:.1} KiB |",
            m.name,
            mib(m.idle_base),
            mib(m.idle_loaded)
        )
        .unwrap();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("book/chat_server");
    std::fs::write(dir.join("bench_ngircd.md"), load).unwrap();
    std::fs::write(dir.join("bench_idle.md"), idle).unwrap();
    eprintln!("wrote book/chat_server/bench_ngircd.md and bench_idle.md");
}
