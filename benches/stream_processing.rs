//! What the stream processor sustains, and how soon a window comes out.
//!
//! 1. Throughput, with criterion: the same lines of JSON parsed and put in
//!    windows, (a) in one sequential loop on one thread, (b) as the finished
//!    program does it: a source coroutine parses and offers each event to the
//!    bounded ingest channel, the window coroutine (the program's own
//!    `window_stage`) windows them and sends closed windows to a consumer.
//! 2. Emission latency, measured here: the finished program's `start` with
//!    its generator; for each window closed by an event, the time from that
//!    event's arrival to the moment the consumer holds the window.
//!
//! `cargo bench --bench stream_processing` runs both and rewrites
//! `book/stream_processing/benchmarks.md` and `book/stream_processing/latency.md`.

mod support;

// The program's `main`, CLI, printing and tests (their imports) are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/stream_processing/stream_processing.rs"]
mod stream;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use may::go;
use may_patterns::bounded;
use may_patterns::shutdown::Shutdown;
use stream::{
    parse_event, start, window_stage, Config, Fields, Ingest, Msg, Output, Policy, Source,
    SourceCounters, WindowSpec, Windower,
};
use support::{PercentileRow, Ratio, Row, Table};

/// Lines per criterion iteration: 5 s of event time at 10,000 events/s.
const LINES: u64 = 50_000;
/// Slots in the ingest channel, as the program's default `--buffer`.
const BUFFER: usize = 1024;
const LATENESS_MS: u64 = 500;

fn fields() -> Fields {
    Fields {
        key: "sensor".into(),
        value: "value".into(),
    }
}

/// `LINES` readings over four keys, 10 per ms of event time, up to 100 ms
/// out of order.
fn lines() -> Arc<Vec<String>> {
    let mut rng = fastrand::Rng::with_seed(7);
    let keys = ["boiler", "intake", "pump", "vent"];
    let lines = (0..LINES)
        .map(|n| {
            let ts = (n / 10).saturating_sub(rng.u64(0..100));
            let key = keys[rng.usize(..keys.len())];
            let value = f64::from(rng.u32(0..1000)) / 10.0;
            format!(r#"{{"ts":{ts},"sensor":"{key}","value":{value}}}"#)
        })
        .collect();
    Arc::new(lines)
}

/// Parse and window every line in one loop; the number of windows emitted.
fn sequential(lines: &[String], spec: WindowSpec) -> usize {
    let fields = fields();
    let mut windower = Windower::new(spec, LATENESS_MS);
    let mut windows = 0;
    for line in lines {
        if let Some(event) = parse_event(line.as_bytes(), &fields) {
            windows += windower.push(&event).len();
        }
    }
    windows + windower.flush().len()
}

/// The program's shape: source coroutine -> bounded ingest -> window
/// coroutine -> consumer (this thread). The number of windows emitted.
fn pipelined(lines: &Arc<Vec<String>>, spec: WindowSpec) -> usize {
    let (tx, rx) = bounded::channel(BUFFER);
    let (out_tx, out_rx) = bounded::channel(256);
    let counters = Arc::new(SourceCounters::default());
    let ingest = Ingest {
        tx: tx.clone(),
        policy: Policy::Block,
        counters: counters.clone(),
    };
    let windower = Windower::new(spec, LATENESS_MS);
    go!(move || window_stage(rx, windower, Duration::from_secs(3600), counters, out_tx));
    let lines = lines.clone();
    go!(move || {
        let fields = fields();
        for line in lines.iter() {
            ingest.offer(parse_event(line.as_bytes(), &fields), Instant::now());
        }
        tx.send(Msg::Stop).unwrap();
    });
    let mut windows = 0;
    for out in out_rx.iter() {
        match out {
            Output::Window { .. } => windows += 1,
            Output::Log(_) => {}
            Output::Done(_) => break,
        }
    }
    windows
}

fn throughput(c: &mut Criterion, group: &str, spec: WindowSpec) {
    let lines = lines();
    let expected = sequential(&lines, spec);
    let mut group = c.benchmark_group(group);
    group
        .sample_size(10)
        .throughput(Throughput::Elements(LINES));
    group.bench_function("sequential", |b| {
        b.iter(|| assert_eq!(black_box(sequential(&lines, spec)), expected))
    });
    group.bench_function("coroutines", |b| {
        b.iter(|| assert_eq!(black_box(pipelined(&lines, spec)), expected))
    });
    group.finish();
}

/// Run the program's generator for `events` at `rate`; the emission latency
/// of every window an event closed.
fn emission_latencies(spec: WindowSpec, rate: u64, events: u64) -> Vec<Duration> {
    let config = Config {
        source: Source::Generator,
        generator_rate: rate,
        generator_events: events,
        generator_late_every: 0,
        spec,
        lateness: 5,
        idle: Duration::from_secs(3600),
        policy: Policy::Block,
        buffer: BUFFER,
        conn_timeout: Duration::from_secs(30),
        max_connections: 16,
        fields: fields(),
    };
    let running = start(config, Shutdown::new()).expect("the generator starts");
    let mut latencies = Vec::new();
    for out in running.output.iter() {
        match out {
            Output::Window { trigger, .. } => latencies.extend(trigger.map(|t| t.elapsed())),
            Output::Log(_) => {}
            Output::Done(_) => break,
        }
    }
    latencies
}

fn percentiles(what: String, mut latencies: Vec<Duration>) -> PercentileRow {
    latencies.sort();
    let n = latencies.len();
    let rank = |p: usize| latencies[(p * n).div_ceil(100).max(1) - 1];
    PercentileRow {
        what,
        samples: n,
        median: rank(50),
        p99: rank(99),
        max: latencies[n - 1],
    }
}

fn main() {
    support::configure_may();
    let tumbling = WindowSpec {
        size: 1000,
        slide: 1000,
    };
    let sliding = WindowSpec {
        size: 1000,
        slide: 200,
    };
    let mut c = support::criterion();
    throughput(&mut c, "stream_tumbling", tumbling);
    throughput(&mut c, "stream_sliding", sliding);
    c.final_summary();
    support::write_table_columns(
        &Table {
            chapter: "stream_processing",
            note: &format!(
                "Time per event (criterion median of a run of {LINES} lines ÷ {LINES}): parse \
                 one line of JSON and put it in its windows (four keys, exact percentiles, \
                 lateness {LATENESS_MS} ms). `sequential`: one loop on one thread. \
                 `coroutines`: a source coroutine parses and offers each event to a bounded \
                 channel of {BUFFER}; the program's window coroutine windows it and sends \
                 closed windows to a consumer; 2 may workers. A ratio above 1 is the \
                 coroutines' speed-up; events per second are 1 s ÷ the time per event."
            ),
            columns: &[("sequential", "sequential"), ("coroutines", "coroutines")],
            ratio: Ratio::FirstOverColumn,
            items_per_iteration: LINES,
        },
        &[
            Row {
                what: "tumbling windows of 1 s",
                group: "stream_tumbling",
            },
            Row {
                what: "sliding windows of 1 s every 200 ms (5 per event)",
                group: "stream_sliding",
            },
        ],
    );

    let (rate, events) = (20_000, 40_000);
    let rows = [
        (
            "tumbling windows of 10 ms",
            WindowSpec {
                size: 10,
                slide: 10,
            },
        ),
        (
            "sliding windows of 50 ms every 10 ms",
            WindowSpec {
                size: 50,
                slide: 10,
            },
        ),
    ]
    .map(|(what, spec)| {
        let latencies = emission_latencies(spec, rate, events);
        percentiles(what.to_owned(), latencies)
    });
    support::write_percentile_table(
        "stream_processing",
        "latency.md",
        &format!(
            "Emission latency: for every window closed by an event, from the moment that \
             event's line arrived (the generator stamps it) to the moment the consumer \
             holds the closed window; it covers the ingest channel, the window coroutine's \
             work (sorting the window's values) and the output channel. The finished \
             program's generator at {rate} events/s for {events} events, four keys, \
             lateness 5 ms, `--policy block`, 2 may workers."
        ),
        &rows,
    );
}
