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
//! share the machine's CPUs with the server under test, the same for both;
//! the bench process's own CPU time is reported beside the server's.
//! Then the delayed-ACK experiment: the first rate again, and 100 bots at
//! a higher rate, each with the kernel's delayed ACKs and then with the
//! bots setting `TCP_QUICKACK` (ngircd does not set `TCP_NODELAY`, so its
//! kernel's Nagle algorithm waits for the bots' ACKs; chat_server does). Memory per idle client is
//! also split by mapping size (/proc/PID/smaps), where coroutine stacks
//! show up as one mapping each.
//!
//! `cargo bench --bench chat_server` (about four minutes after the release
//! build) rewrites `book/chat_server/bench_ngircd.md`, `bench_acks.md` and
//! `bench_idle.md`. It needs ngircd (Debian's `ngircd`, at
//! /usr/sbin/ngircd) and panics with a sentence, before measuring anything
//! or writing any table, when it is missing.

mod support;

#[path = "chat_server/bots.rs"]
mod bots;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "chat_server/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bots::{Bots, Phase};
use servers::Server;

/// CPU time this process, the bots' side of the load, has used so far.
fn own_cpu() -> Duration {
    procfs::cpu_of(std::process::id()).expect("a process can read its own /proc/PID/stat")
}

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

/// The delayed-ACK experiment: few enough bots that neither CPU is busy,
/// each receiving lines faster than the kernel's delayed-ACK timer.
const FEW_BOTS: usize = 100;
const FEW_RATE: f64 = 10.0;
const FEW_LENGTH: Duration = Duration::from_secs(5);

/// One load phase of one server: the rate, what the bots saw, the
/// server's CPU time, the bots' CPU time, VmRSS and VmHWM after it.
struct Row {
    rate: f64,
    phase: Phase,
    cpu: Duration,
    bots_cpu: Duration,
    rss: u64,
    hwm: u64,
}

/// One server's results.
struct Measured {
    name: &'static str,
    idle_base: u64,
    idle_loaded: u64,
    /// Same-size mappings (size KiB -> count, resident KiB) with no
    /// client and with the bots connected and idle.
    maps_base: BTreeMap<u64, (u64, u64)>,
    maps_loaded: BTreeMap<u64, (u64, u64)>,
    rows: Vec<Row>,
    /// The delayed-ACK experiment: the bots' ACKs as the kernel does them,
    /// then with `TCP_QUICKACK`, at the first rate with every bot and with
    /// a few bots at a higher rate.
    acks: Vec<AckRow>,
}

struct AckRow {
    bots: usize,
    rate: f64,
    quick: bool,
    phase: Phase,
    bots_cpu: Duration,
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
    let maps_base = server.mappings();
    let started = std::time::Instant::now();
    let mut bots = Bots::connect(server.addr, BOTS, ROOMS, "b");
    eprintln!("{}: {BOTS} bots in, {:?}", server.name, started.elapsed());
    // Let the last JOINs' replies leave the server before reading memory.
    std::thread::sleep(Duration::from_millis(500));
    let idle_loaded = server.status_bytes("VmRSS");
    let maps_loaded = server.mappings();
    let mut rows = Vec::new();
    for (phase, rate) in RATES.into_iter().enumerate() {
        let cpu = server.cpu();
        let bots_cpu = own_cpu();
        let result = bots.load(phase as u64, rate, LENGTH);
        let cpu = server.cpu() - cpu;
        let bots_cpu = own_cpu() - bots_cpu;
        let (rss, hwm) = (server.status_bytes("VmRSS"), server.status_bytes("VmHWM"));
        eprintln!(
            "{}: {rate}/s per bot: sent {}, delivered {} of {} ({:.0}/s), p50 {:?}, p99 {:?}, cpu {:?}, bots cpu {:?}, rss {} MiB, {} bots cut",
            server.name,
            result.sent,
            result.delivered,
            result.expected,
            result.delivered_per_sec(),
            result.latency(0.5),
            result.latency(0.99),
            cpu,
            bots_cpu,
            rss >> 20,
            result.gone
        );
        let saturated = saturated(&result);
        rows.push(Row {
            rate,
            phase: result,
            cpu,
            bots_cpu,
            rss,
            hwm,
        });
        if saturated {
            break;
        }
    }
    // The delayed-ACK experiment, on the same server process: the first
    // rate again with every bot, then a few bots, each time with the
    // kernel's delayed ACKs and then with quick ones.
    let mut acks = Vec::new();
    let mut phase = RATES.len() as u64;
    let mut ack_runs = |bots: &mut Bots, n: usize, rate: f64, length: Duration| {
        for quick in [false, true] {
            bots.quick_acks(quick);
            let bots_cpu = own_cpu();
            let p = bots.load(phase, rate, length);
            let bots_cpu = own_cpu() - bots_cpu;
            phase += 1;
            eprintln!(
                "{}: {n} bots at {rate}/s, quick ACKs {quick}: delivered {} of {}, p50 {:?}, p90 {:?}, p99 {:?}, bots cpu {:?}",
                server.name,
                p.delivered,
                p.expected,
                p.latency(0.5),
                p.latency(0.9),
                p.latency(0.99),
                bots_cpu
            );
            acks.push(AckRow {
                bots: n,
                rate,
                quick,
                phase: p,
                bots_cpu,
            });
        }
    };
    ack_runs(&mut bots, BOTS, RATES[0], LENGTH);
    bots.quit();
    let mut few = Bots::connect(server.addr, FEW_BOTS, ROOMS, "f");
    ack_runs(&mut few, FEW_BOTS, FEW_RATE, FEW_LENGTH);
    few.quit();
    Measured {
        name: server.name,
        idle_base,
        idle_loaded,
        maps_base,
        maps_loaded,
        rows,
        acks,
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
        "| server | lines/s per bot | lines delivered / expected | delivered lines/s | p50 latency | p99 latency | server CPU s | bots' CPU s | VmRSS after | VmHWM |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        for r in &m.rows {
            let p = &r.phase;
            let mark = if saturated(p) { " (saturated)" } else { "" };
            writeln!(
                load,
                "| {}{mark} | {} | {} / {} | {:.0} | {} | {} | {:.1} | {:.1} | {} | {} |",
                m.name,
                r.rate,
                p.delivered,
                p.expected,
                p.delivered_per_sec(),
                ms(p.latency(0.5)),
                ms(p.latency(0.99)),
                r.cpu.as_secs_f64(),
                r.bots_cpu.as_secs_f64(),
                mib(r.rss),
                mib(r.hwm)
            )
            .unwrap();
        }
    }
    let mut acks = format!(
        "Measured on {} with `cargo bench --bench chat_server` (release build; the \
         bots in {ROOMS} rooms; {} s a run with {BOTS} bots, {} s with {FEW_BOTS}; \
         ngircd does not set `TCP_NODELAY`, chat_server does), {}.\n\n\
         | server | bots | lines/s per bot | lines each bot receives per s | bots' ACKs | delivered lines/s | p50 latency | p90 latency | p99 latency | bots' CPU s |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
        may_patterns::machine::describe(),
        LENGTH.as_secs(),
        FEW_LENGTH.as_secs(),
        may_patterns::machine::today()
    );
    for m in results {
        for a in &m.acks {
            let how = if a.quick {
                "`TCP_QUICKACK` before each read"
            } else {
                "delayed (the kernel's default)"
            };
            let p = &a.phase;
            writeln!(
                acks,
                "| {} | {} | {} | {} | {how} | {:.0} | {} | {} | {} | {:.1} |",
                m.name,
                a.bots,
                a.rate,
                a.rate * (a.bots / ROOMS - 1) as f64,
                p.delivered_per_sec(),
                ms(p.latency(0.5)),
                ms(p.latency(0.9)),
                ms(p.latency(0.99)),
                a.bots_cpu.as_secs_f64()
            )
            .unwrap();
        }
    }
    let mut idle = heading.clone();
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
    // Where the memory is: every mapping size of which the process holds
    // at least one mapping per two clients (a coroutine stack is one
    // mapping of the stack's size, and its guard page another), and the
    // rest.
    idle.push_str(
        "\nThe same memory by mapping size (/proc/PID/smaps): every size of which, \
         with the clients connected, there is at least one mapping per two clients; \
         then all other mappings together.\n\n\
         | server | mappings of | count, no client | resident, no client | count, 1,000 idle clients | resident, 1,000 idle clients | resident per idle client |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        let shown = |size: &u64| {
            m.maps_loaded
                .get(size)
                .is_some_and(|&(count, _)| count >= BOTS as u64 / 2)
        };
        let (mut rest_base, mut rest_loaded) = (0, 0);
        for (size, &(count, rss)) in &m.maps_loaded {
            if !shown(size) {
                rest_loaded += rss;
                continue;
            }
            let (count_base, rss_base) = m.maps_base.get(size).copied().unwrap_or_default();
            writeln!(
                idle,
                "| {} | {size} KiB | {count_base} | {} | {count} | {} | {:.1} KiB |",
                m.name,
                mib(rss_base * 1024),
                mib(rss * 1024),
                rss.saturating_sub(rss_base) as f64 / BOTS as f64
            )
            .unwrap();
        }
        for (size, &(_, rss)) in &m.maps_base {
            if !shown(size) {
                rest_base += rss;
            }
        }
        writeln!(
            idle,
            "| {} | any other size | | {} | | {} | {:.1} KiB |",
            m.name,
            mib(rest_base * 1024),
            mib(rest_loaded * 1024),
            rest_loaded.saturating_sub(rest_base) as f64 / BOTS as f64
        )
        .unwrap();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("book/chat_server");
    std::fs::write(dir.join("bench_ngircd.md"), load).unwrap();
    std::fs::write(dir.join("bench_idle.md"), idle).unwrap();
    std::fs::write(dir.join("bench_acks.md"), acks).unwrap();
    eprintln!("wrote book/chat_server/bench_ngircd.md, bench_idle.md and bench_acks.md");
}
