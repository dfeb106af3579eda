//! How much coroutine stack does the stack-hungry work in this book use?
//! may measures it for you: spawn a coroutine with an *odd* stack size (in
//! words) and may fills its whole stack with a marker word, then prints how
//! many words were overwritten when the coroutine ends (may 0.3.51
//! `coroutine_impl.rs:71-74`, generator 0.8.12 `stack/mod.rs:580-640`).
//!
//! may prints that report on standard output, from inside the runtime, so
//! each case runs in a child process (this program again, with `--case`);
//! the parent reads the children's reports and prints one table.
//!
//! Run it: `cargo run --example stack_usage` (a debug build, as `cargo run`
//! makes), `cargo run --release --example stack_usage -- --write-table
//! book/may_primer/stack.md` for release figures written as a markdown table,
//! or `cargo run --example stack_usage -- --case json-16` to see may's own line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use may::coroutine::{Builder, JoinHandle};
use may::go;
use may_patterns::machine;
use may_patterns::runtime::{configure_once, Settings};
use regex::Regex;

/// Measure on 1 MiB (plus the one word that makes the size odd), far more
/// than any case needs, so the measurement itself never overflows.
const MEASURING_STACK_WORDS: usize = (1 << 17) + 1;

/// A child that has not ended by then is stuck (every case takes well under a second).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Measure the coroutine stack the book's stack-hungry work uses")]
struct Cli {
    /// Run only this case, in this process, and let may print its own report
    #[arg(long, value_enum)]
    case: Option<Case>,
    /// Also write the table as markdown to this file, headed by the machine and date
    #[arg(long)]
    write_table: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Case {
    Empty,
    #[value(name = "json-1")]
    Json1,
    #[value(name = "json-16")]
    Json16,
    #[value(name = "json-64")]
    Json64,
    #[value(name = "json-128")]
    Json128,
    Regex,
    Sqlite,
    Tls,
}

fn main() {
    let cli = Cli::parse();
    if let Some(case) = cli.case {
        measure_in_this_process(case);
        return;
    }
    let rows: Vec<Row> = Case::value_variants()
        .iter()
        .flat_map(|&case| measure_in_child(case))
        .collect();
    print_table(&rows);
    if let Some(path) = cli.write_table {
        write_markdown_table(&path, &rows);
        println!("wrote {}", path.display());
    }
}

/// The work one coroutine of a case does; it says how it went.
type Work = Box<dyn FnOnce() -> String + Send>;

/// The coroutines a case runs, each as (label, work), all spawned together.
fn coroutines(case: Case) -> Vec<(String, Work)> {
    fn one(label: String, work: impl FnOnce() -> String + Send + 'static) -> Vec<(String, Work)> {
        vec![(label, Box::new(work))]
    }
    match case {
        Case::Empty => one("a coroutine that returns at once".into(), || "done".into()),
        Case::Json1 => json(1),
        Case::Json16 => json(16),
        Case::Json64 => json(64),
        Case::Json128 => json(128),
        Case::Regex => one("regex: compile a pattern, find matches".into(), regex_work),
        Case::Sqlite => one(
            "SQLite in memory: open, create, insert, query".into(),
            sqlite_work,
        ),
        Case::Tls => tls_handshake(),
    }
}

// ANCHOR: measure
/// Spawn `work` on a stack of an odd number of words: may then records the
/// stack's use and prints it when the coroutine ends.
fn spawn_measured(label: &str, work: Work) -> JoinHandle<String> {
    let builder = Builder::new()
        .name(label.to_owned())
        .stack_size(MEASURING_STACK_WORDS);
    go!(builder, work).expect("may's Builder::spawn never returns an error")
}

/// Pair each outcome line of a child with may's report for that coroutine,
/// `coroutine name = Some("<label>"), stack size = <words>,  used size = <words>`.
fn rows_from(child_stdout: &str) -> Vec<Row> {
    let report =
        Regex::new(r#"^coroutine name = Some\("(.*)"\), stack size = \d+, +used size = (\d+)$"#)
            .unwrap();
    let used_words = |label: &str| {
        child_stdout.lines().find_map(|line| {
            let found = report.captures(line)?;
            (&found[1] == label).then(|| found[2].parse::<usize>().unwrap())
        })
    };
    child_stdout
        .lines()
        .filter_map(|line| line.strip_prefix("outcome\t"))
        .filter_map(|line| line.split_once('\t'))
        .map(|(label, outcome)| Row {
            label: label.to_owned(),
            outcome: outcome.to_owned(),
            used_bytes: used_words(label).map(|words| words * size_of::<usize>()),
        })
        .collect()
}
// ANCHOR_END: measure

/// The child: run one case's coroutines, wait until may has printed their
/// reports, then print each coroutine's outcome.
fn measure_in_this_process(case: Case) {
    // One worker: it finishes ending a coroutine (and prints may's report)
    // before it runs any coroutine spawned after that one was joined.
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIMIT);
        eprintln!("the case ran longer than {CHILD_LIMIT:?}");
        std::process::exit(2);
    });
    let handles: Vec<_> = coroutines(case)
        .into_iter()
        .map(|(label, work)| (spawn_measured(&label, work), label))
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|(handle, label)| {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| "join returned an error".into());
            (label, outcome)
        })
        .collect();
    go!(|| ()).join().unwrap(); // may's reports are printed by now
    for (label, outcome) in outcomes {
        println!("outcome\t{label}\t{outcome}"); // labels and outcomes hold no tabs
    }
}

/// One line of the table: a coroutine, how its work went, the bytes it used.
#[derive(Debug)]
struct Row {
    label: String,
    outcome: String,
    used_bytes: Option<usize>,
}

/// Run `case` in a child process and read its reports.
fn measure_in_child(case: Case) -> Vec<Row> {
    let name = case.to_possible_value().unwrap().get_name().to_owned();
    // The child ends itself within CHILD_LIMIT, so this returns.
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--case", &name])
        .output()
        .expect("the child process starts");
    let rows = rows_from(&String::from_utf8_lossy(&child.stdout));
    assert!(
        !rows.is_empty(),
        "case {name}: the child printed no outcome ({}): {}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    rows
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn kib(bytes: Option<usize>) -> String {
    bytes.map_or("no report".into(), |b| {
        format!("{:.1} KiB", b as f64 / 1024.0)
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "Stack used by each coroutine ({} build), as may reports it:",
        profile()
    );
    println!("{:<46} {:<56} used", "what runs on the coroutine", "result");
    for row in rows {
        // The measured figure is last and marked with ~: it changes with the
        // compiler and crate versions, the rest of the line does not.
        println!(
            "{:<46} {:<56} ~{}",
            row.label,
            row.outcome,
            kib(row.used_bytes)
        );
    }
    let default_words = may::config().get_stack_size();
    println!(
        "may's default stack: {:.1} KiB ({default_words:#x} words)",
        (default_words * size_of::<usize>()) as f64 / 1024.0
    );
}

fn write_markdown_table(path: &Path, rows: &[Row]) {
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    };
    let mut text = format!(
        "Measured on {} with `cargo run {release}--example stack_usage -- --write-table {}` \
         ({} build, may's report of each coroutine's stack use), {}.\n\n\
         | what runs on the coroutine | result | stack used |\n|---|---|---|\n",
        machine::describe(),
        path.display(),
        profile(),
        machine::today()
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {} | {} |\n",
            row.label,
            row.outcome,
            kib(row.used_bytes)
        ));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ANCHOR: json
/// Parse a JSON value nested `depth` arrays deep, as a connection coroutine
/// parsing an untrusted line would. serde_json stops at depth 128 by itself.
fn json(depth: usize) -> Vec<(String, Work)> {
    let line = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    let work = move || match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(_) => "parsed".to_owned(),
        Err(e) => format!("rejected: {e}"),
    };
    vec![(
        format!("serde_json::Value, nested {depth} deep"),
        Box::new(work),
    )]
}
// ANCHOR_END: json

fn regex_work() -> String {
    let email = Regex::new(r"(?i)\b[a-z0-9._%+-]+@([a-z0-9-]+\.)+[a-z]{2,}\b").unwrap();
    let text = "ann@example.com wrote to bob@mail.example.org, cc: eve@test.net";
    format!("{} matches", email.find_iter(text).count())
}

/// In memory, so no call blocks the worker on file I/O.
fn sqlite_work() -> String {
    let mut db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
        .unwrap();
    let tx = db.transaction().unwrap();
    for amount in 0..100 {
        tx.execute("INSERT INTO orders (amount) VALUES (?1)", [amount])
            .unwrap();
    }
    tx.commit().unwrap();
    let (rows, sum): (i64, i64) = db
        .query_row("SELECT count(*), sum(amount) FROM orders", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    format!("{rows} rows, sum {sum}")
}

/// A rustls server and client coroutine on loopback: handshake, then the
/// client sends one message and the server echoes it. The certificate and
/// both configurations are made before, as a server does at start-up.
fn tls_handshake() -> Vec<(String, Work)> {
    let (server_config, client_config) = tls_configs();
    let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = move || {
        let (socket, _) = listener.accept().unwrap();
        let tls = rustls::ServerConnection::new(server_config).unwrap();
        let mut stream = rustls::StreamOwned::new(tls, socket);
        let mut message = [0u8; 5];
        stream.read_exact(&mut message).unwrap(); // the handshake runs first
        stream.write_all(&message).unwrap();
        stream.flush().unwrap();
        format!("handshake done, echoed {} bytes", message.len())
    };
    let client = move || {
        let socket = may_patterns::net::connect(addr).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut stream = rustls::StreamOwned::new(tls, socket);
        stream.write_all(b"hello").unwrap(); // the handshake runs first
        let mut echo = [0u8; 5];
        stream.read_exact(&mut echo).unwrap();
        format!(
            "handshake done, echo {}",
            if &echo == b"hello" {
                "matched"
            } else {
                "differed"
            }
        )
    };
    vec![
        (
            "rustls handshake and one echo, server".into(),
            Box::new(server),
        ),
        (
            "rustls handshake and one echo, client".into(),
            Box::new(client),
        ),
    ]
}

/// A self-signed certificate for "localhost", a server configuration that
/// presents it, and a client configuration that trusts only it.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE_VAR: &str = "STACK_USAGE_CASE";

    #[test]
    fn a_report_is_paired_with_its_outcome_and_read_in_bytes() {
        let stdout = "coroutine name = Some(\"regex: x\"), stack size = 131585,  used size = 100\n\
                      outcome\tregex: x\t3 matches\n";
        let rows = rows_from(stdout);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].label, "regex: x");
        assert_eq!(rows[0].outcome, "3 matches");
        assert_eq!(rows[0].used_bytes, Some(100 * size_of::<usize>()));
        let without_report = rows_from("outcome\tregex: x\t3 matches\n");
        assert_eq!(without_report[0].used_bytes, None);
    }

    #[test]
    fn every_case_does_its_work() {
        may_patterns::runtime::configure_for_tests();
        let mut outcomes = Vec::new();
        for &case in Case::value_variants() {
            let handles: Vec<_> = coroutines(case)
                .into_iter()
                .map(|(_, work)| go!(Builder::new().stack_size(0x4_0000), work).unwrap())
                .collect();
            outcomes.extend(handles.into_iter().map(|h| h.join().unwrap()));
        }
        let expected = [
            "done",
            "parsed",
            "parsed",
            "parsed",
            "rejected: recursion limit exceeded at line 1 column 128",
            "3 matches",
            "100 rows, sum 4950",
            "handshake done, echoed 5 bytes",
            "handshake done, echo matched",
        ];
        assert_eq!(outcomes, expected);
    }

    /// The child side under `cargo test`: this test binary, started again by
    /// the test below, runs only this test with the case in `CASE_VAR`.
    #[test]
    #[ignore = "started in a child process by the other tests"]
    fn child() {
        let case = std::env::var(CASE_VAR).expect("started by a test that names a case");
        measure_in_this_process(Case::from_str(&case, false).unwrap());
    }

    #[test]
    fn may_reports_the_stack_a_child_used() {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["tests::child", "--exact", "--ignored", "--nocapture"])
            .env(CASE_VAR, "json-16")
            .output()
            .unwrap();
        let rows = rows_from(&String::from_utf8_lossy(&child.stdout));
        assert_eq!(rows.len(), 1, "{}", String::from_utf8_lossy(&child.stderr));
        let used = rows[0].used_bytes.expect("may printed a report");
        assert!(
            used > 1024,
            "16 levels of serde_json use more than 1 KiB: {used}"
        );
        assert!(used < MEASURING_STACK_WORDS * size_of::<usize>());
    }
}
