//! The book's load balancer beside HAProxy and nginx, same box, same
//! backends, same load tool, same run.
//!
//! Four nginx backends on loopback serve a 1 KiB file. In front of them,
//! each balancer in turn (HAProxy and nginx from the configs in
//! `benches/load_balancer/`, our `load_balancer` as a release build), all
//! with round-robin, HTTP checks every 500 ms with `rise 2` / `fall 3`
//! where the balancer has active checks (nginx has only passive ones:
//! `max_fails=3`), and 3 retries of a failed connect.
//!
//! First table: `wrk -t2 -c50 -d10s --latency` through each, after a 2 s
//! warm-up run: requests per second, p50 and p99, failed requests (wrk's
//! socket errors plus non-2xx answers), the balancer's CPU (user + system
//! over the run's wall time, summed over its processes, so two busy cores
//! show as 200%) and its resident memory after the run.
//!
//! Second table, failover: each backend is its own nginx process; 3 s into
//! the same wrk run one of them is killed with `kill -9`. The table gives
//! the failed requests, and how long after the kill the balancer counted
//! the backend down (ours: `GET /_lb/stats`; HAProxy: `show stat` on its
//! stats socket; both read every 100 ms, so that is the resolution; nginx
//! exposes no such state).
//!
//! `cargo bench --bench load_balancer` (about two minutes after the
//! release build) rewrites `book/load_balancer/bench_balancers.md` and
//! `bench_failover.md`. It needs nginx, HAProxy and wrk (Debian's
//! `nginx-light` or `nginx`, `haproxy`, `wrk`) and panics with a sentence
//! when one is missing, or when the example does not build, before writing
//! any table.

#[path = "support/procfs.rs"]
mod procfs;
#[path = "load_balancer/procs.rs"]
mod procs;
#[path = "load_balancer/watch.rs"]
mod watch;
#[path = "load_balancer/wrk.rs"]
mod wrk;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use procs::{Kind, Proc};
use wrk::Wrk;

/// Seconds of each measured wrk run, and of the warm-up before it.
const RUN_SECS: u32 = 10;
const WARM_UP_SECS: u32 = 2;
/// When the failover run kills a backend, from wrk's start.
const KILL_AT: Duration = Duration::from_secs(3);
/// How often the failover run reads the balancer's backend states.
const POLL: Duration = Duration::from_millis(100);

struct Load {
    name: String,
    wrk: Wrk,
    cpu_share: f64,
    rss: u64,
}

struct Failover {
    name: String,
    wrk: Wrk,
    /// `None` for a balancer that does not say.
    detected: Option<Detection>,
}

/// What the reads of a balancer's backend states showed after the kill.
struct Detection {
    /// `None` if no read showed the backend down during the run.
    after: Option<Duration>,
    reads: usize,
    /// Reads that got no state back: no answer within 2 s, or none that
    /// parsed.
    unanswered: usize,
}

fn main() {
    procs::require_peers();
    wrk::require();
    let load_average = load_average();
    // Ours last: a run before the example builds still shows the peers'
    // numbers on stderr before it panics.
    let order = [Kind::Haproxy, Kind::Nginx, Kind::Ours];
    let backends = procs::backends_together();
    let loads: Vec<Load> = order.iter().map(|&k| measure(k, &backends)).collect();
    drop(backends);
    let failovers: Vec<Failover> = order.iter().map(|&k| failover(k)).collect();
    write_tables(&loads, &failovers, &load_average);
}

fn url(balancer: &Proc) -> String {
    format!("http://{}{}", balancer.addr(), procs::PATH)
}

fn measure(kind: Kind, backends: &Proc) -> Load {
    let balancer = procs::balancer(kind, &backends.addrs);
    eprintln!("{}: on {}", balancer.name, balancer.addr());
    watch::until_all_up(kind, &balancer, &backends.addrs);
    wrk::run(&url(&balancer), WARM_UP_SECS);
    let (cpu, started) = (balancer.cpu(), Instant::now());
    let wrk = wrk::run(&url(&balancer), RUN_SECS);
    let cpu_share = (balancer.cpu() - cpu).as_secs_f64() / started.elapsed().as_secs_f64();
    let rss = balancer.rss();
    eprintln!(
        "{}: {:.0} req/s, p50 {:?}, p99 {:?}, {} failed, cpu {:.0}%, rss {} MiB",
        balancer.name,
        wrk.per_sec,
        wrk.p50,
        wrk.p99,
        wrk.failed(),
        cpu_share * 100.0,
        rss >> 20
    );
    Load {
        name: balancer.name.clone(),
        wrk,
        cpu_share,
        rss,
    }
}

fn failover(kind: Kind) -> Failover {
    let mut backends: Vec<Proc> = (0..4).map(|_| procs::backend_alone()).collect();
    let addrs: Vec<_> = backends.iter().map(Proc::addr).collect();
    let balancer = procs::balancer(kind, &addrs);
    watch::until_all_up(kind, &balancer, &addrs);
    wrk::run(&url(&balancer), WARM_UP_SECS);
    let load = wrk::start(&url(&balancer), RUN_SECS);
    let started = Instant::now();
    std::thread::sleep(KILL_AT);
    let victim = addrs[0];
    backends[0].kill9();
    let killed = Instant::now();
    let detected = (kind != Kind::Nginx).then(|| {
        let mut seen = Detection {
            after: None,
            reads: 0,
            unanswered: 0,
        };
        // Until the run ends, with a second to spare.
        let until = started + Duration::from_secs(RUN_SECS.into()) - Duration::from_secs(1);
        while Instant::now() < until && seen.after.is_none() {
            seen.reads += 1;
            match watch::is_up(kind, &balancer, victim) {
                Some(false) => seen.after = Some(killed.elapsed()),
                Some(true) => std::thread::sleep(POLL),
                None => seen.unanswered += 1,
            }
        }
        seen
    });
    let wrk = wrk::finish(load);
    eprintln!(
        "{} failover: {} failed of {}, {}",
        balancer.name,
        wrk.failed(),
        wrk.requests,
        detection_text(&detected)
    );
    Failover {
        name: balancer.name.clone(),
        wrk,
        detected,
    }
}

/// The 1-minute load average before the bench started (other work on the
/// box shows in every number).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The failover table's last cell.
fn detection_text(detected: &Option<Detection>) -> String {
    let Some(seen) = detected else {
        return "not exposed".to_owned();
    };
    let mut text = match seen.after {
        Some(after) => ms(after),
        None => "not during the run".to_owned(),
    };
    if seen.unanswered > 0 {
        write!(
            text,
            " ({} of {} reads got no answer)",
            seen.unanswered, seen.reads
        )
        .unwrap();
    }
    text
}

fn write_tables(loads: &[Load], failovers: &[Failover], load_average: &str) {
    let heading = |what: &str| {
        format!(
            "Measured on {} with `cargo bench --bench load_balancer` (release build; \
             `{}`{what}; four nginx backends serving 1 KiB on loopback; round-robin, \
             checks every {} ms with rise {} and fall {}, {} retries; wrk runs on the \
             same CPUs; 1-minute load average {load_average} before the run), {}.\n\n",
            may_patterns::machine::describe(),
            wrk::COMMAND,
            procs::CHECK_INTERVAL_MS,
            procs::RISE,
            procs::FALL,
            procs::RETRIES,
            may_patterns::machine::today()
        )
    };
    let mut load = heading(" after a 2 s warm-up");
    load.push_str(
        "Failed: wrk's socket errors plus non-2xx answers. Balancer CPU: user + system \
         time over the run's wall time, summed over the balancer's processes (200% is \
         both cores). VmRSS: after the run, summed over its processes. nginx has no \
         active checks: it leaves a backend out after `max_fails=3` failed requests.\n\n",
    );
    load.push_str(
        "| balancer | requests | req/s | p50 | p99 | failed | balancer CPU | balancer VmRSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in loads {
        writeln!(
            load,
            "| {} | {} | {:.0} | {} | {} | {} | {:.0}% | {:.1} MiB |",
            l.name,
            l.wrk.requests,
            l.wrk.per_sec,
            ms(l.wrk.p50),
            ms(l.wrk.p99),
            l.wrk.failed(),
            l.cpu_share * 100.0,
            l.rss as f64 / (1 << 20) as f64
        )
        .unwrap();
    }
    let mut fail = heading(&format!(
        "; one nginx process per backend, one killed with `kill -9` {} s into the run; \
         the balancer's view of it read every {} ms",
        KILL_AT.as_secs(),
        POLL.as_millis()
    ));
    fail.push_str(
        "Counted down: the first read that showed the killed backend out of rotation \
         (ours: `GET /_lb/stats`, where failed requests also count against a backend; \
         HAProxy: `show stat` on its stats socket). nginx shows no backend states.\n\n",
    );
    fail.push_str(
        "| balancer | requests | req/s | socket errors | non-2xx | failed | counted down after the kill |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in failovers {
        let detected = detection_text(&f.detected);
        writeln!(
            fail,
            "| {} | {} | {:.0} | {} | {} | {} | {detected} |",
            f.name,
            f.wrk.requests,
            f.wrk.per_sec,
            f.wrk.socket_errors,
            f.wrk.non_2xx,
            f.wrk.failed()
        )
        .unwrap();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("book/load_balancer");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bench_balancers.md"), load).unwrap();
    std::fs::write(dir.join("bench_failover.md"), fail).unwrap();
    eprintln!("wrote book/load_balancer/bench_balancers.md and bench_failover.md");
}
