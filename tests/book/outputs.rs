//! Shown program output must be what the listing really prints.
//!
//! A listing's output lives beside it as `<listing>.out`: the first line is
//! the command the reader types (`$ cargo run --example NAME [-- ARGS]`), the
//! rest is the output, which the chapter includes. Durations, percentages and
//! ports change from run to run, so both sides are normalised before they are
//! compared. After an intended change, re-bless every `.out` file with
//! `BLESS=1 cargo test --test book`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

/// How long one listing may run before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(120);

pub struct Expected {
    pub file: PathBuf,
    pub command: String,
    pub example: String,
    pub args: Vec<String>,
    pub output: String,
}

/// Every `.out` file under `listings/`.
pub fn expected_outputs() -> Vec<Expected> {
    super::chapters::listing_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "out"))
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            let (command, output) = text.split_once('\n').unwrap_or((&text, ""));
            let (example, args) = parse_command(command).unwrap_or_else(|| {
                panic!(
                    "{}: the first line must be `$ cargo run --example NAME [-- ARGS]`, not `{command}`",
                    super::chapters::relative(&file)
                )
            });
            Expected {
                command: command.to_owned(),
                output: output.to_owned(),
                file,
                example,
                args,
            }
        })
        .collect()
}

fn parse_command(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.strip_prefix("$ cargo run --example ")?;
    let mut words = rest.split_whitespace();
    let example = words.next()?.to_owned();
    let args: Vec<String> = match words.next() {
        None => Vec::new(),
        Some("--") => words.map(str::to_owned).collect(),
        Some(_) => return None,
    };
    Some((example, args))
}

/// Replace what legitimately varies between runs with placeholders.
pub fn normalise(text: &str) -> String {
    let rules = [
        (r"\b\d+(\.\d+)?(ns|µs|us|ms|s)\b", "<duration>"),
        (r"\b\d+(\.\d+)?%", "<percent>"),
        // A measured count or rate is printed with a leading tilde: ~48213.
        (r"~\d+(\.\d+)?", "~<n>"),
        (r"(127\.0\.0\.1|localhost|\[::1\]):\d+", "$1:<port>"),
        (r"ThreadId\(\d+\)", "ThreadId(<id>)"),
    ];
    let mut text = text.to_owned();
    for (pattern, replacement) in rules {
        text = Regex::new(pattern)
            .unwrap()
            .replace_all(&text, replacement)
            .into_owned();
    }
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

/// How many listings run at once. Most of a listing's time is spent waiting
/// (sleeps, timers, loopback round trips), so a few at a time on two cores
/// cut the wall time without changing what they print beyond the parts the
/// comparison already treats loosely.
const PARALLEL_RUNS: usize = 3;

/// Build the examples (cargo test builds them only in test mode) and run each.
pub fn check_all(expected: &[Expected]) -> Vec<String> {
    let started = Instant::now();
    let examples_dir = super::support::build_examples(expected.iter().map(|e| e.example.as_str()));
    println!("built the examples in {:.1?}", started.elapsed());

    let bless = std::env::var_os("BLESS").is_some();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::new());
    let took = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_RUNS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(e) = expected.get(i) else { break };
                let one = Instant::now();
                if let Some(problem) = check_one(&examples_dir, e, bless) {
                    problems.lock().unwrap().push(problem);
                }
                took.lock()
                    .unwrap()
                    .push((one.elapsed(), e.command.clone()));
            });
        }
    });
    // Where the time goes (shown with `-- --nocapture`): the listings that
    // run longest set how long this test takes.
    let mut took = took.into_inner().unwrap();
    took.sort_by_key(|t| std::cmp::Reverse(t.0));
    let total: Duration = took.iter().map(|t| t.0).sum();
    println!(
        "ran {} listings in {:.1?} ({PARALLEL_RUNS} at a time, {total:.1?} in all); the slowest:",
        took.len(),
        started.elapsed()
    );
    for (time, command) in took.iter().take(8) {
        println!("  {time:>8.1?}  {command}");
    }
    let mut problems = problems.into_inner().unwrap();
    problems.sort(); // each starts with the file's name: a stable report
    problems
}

/// Run one listing and compare (or bless) its output; the problem, if any.
fn check_one(examples_dir: &Path, e: &Expected, bless: bool) -> Option<String> {
    let name = super::chapters::relative(&e.file);
    match run(&examples_dir.join(&e.example), &e.args) {
        Err(problem) => Some(format!("{name}: `{}` {problem}", e.command)),
        Ok(actual) if normalise(&actual) == normalise(&e.output) => None,
        Ok(actual) if bless => {
            fs::write(&e.file, format!("{}\n{actual}", e.command)).unwrap();
            println!("blessed {name}");
            None
        }
        Ok(actual) => Some(format!(
            "{name}: the listing's output changed (re-bless with `BLESS=1 cargo test --test book` if intended)\n{}",
            first_difference(&normalise(&e.output), &normalise(&actual))
        )),
    }
}

/// Run a listing with a time limit; its stdout, or why it failed.
fn run(binary: &Path, args: &[String]) -> Result<String, String> {
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().unwrap();
    let (output_tx, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || output_tx.send(std::io::read_to_string(stdout)));
    // Read stderr too (a full pipe would stall the listing), to say why it failed.
    let stderr = child.stderr.take().unwrap();
    let (errors_tx, errors) = std::sync::mpsc::channel();
    std::thread::spawn(move || errors_tx.send(std::io::read_to_string(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed before it stalled says where it stalled.
            return Err(format!(
                "ran longer than {RUN_LIMIT:?} and was killed; the end of its stdout:\n{}\nthe end of its stderr:\n{}",
                tail(&received(&output)),
                tail(&received(&errors))
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = output
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        let stderr = tail(&received(&errors));
        return Err(format!(
            "failed ({status}); the end of its stderr:\n{stderr}"
        ));
    }
    Ok(stdout)
}

/// A pipe's whole text once the listing has ended, or nothing. Bounded: a
/// process the listing started may still hold the pipe open.
fn received(pipe: &std::sync::mpsc::Receiver<std::io::Result<String>>) -> String {
    match pipe.recv_timeout(Duration::from_secs(2)) {
        Ok(Ok(text)) => text,
        _ => String::new(),
    }
}

/// The last 20 lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let line = (0..e.len().max(a.len()))
        .find(|&i| e.get(i) != a.get(i))
        .unwrap_or(0);
    format!(
        "    first difference at output line {}:\n    expected: {}\n    actual:   {}",
        line + 1,
        e.get(line).unwrap_or(&"<nothing>"),
        a.get(line).unwrap_or(&"<nothing>")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_are_normalised_and_the_rest_is_not() {
        assert_eq!(
            normalise("took 196.8ms, 11.7% lost, on 127.0.0.1:40211  \n\n"),
            "took <duration>, <percent> lost, on 127.0.0.1:<port>"
        );
        assert_eq!(normalise("1.2s and 35µs"), normalise("9s and 4ns"));
        assert_ne!(normalise("sum = 4950"), normalise("sum = 4951"));
        assert_ne!(normalise("10000 coroutines"), normalise("1000 coroutines"));
        assert_eq!(normalise("~48213 queued"), normalise("~7.5 queued"));
        assert_ne!(normalise("~48213 queued"), normalise("48213 queued"));
    }

    #[test]
    fn the_command_line_is_parsed() {
        assert_eq!(
            parse_command("$ cargo run --example a"),
            Some(("a".into(), vec![]))
        );
        assert_eq!(
            parse_command("$ cargo run --example a -- --items 5"),
            Some(("a".into(), vec!["--items".into(), "5".into()]))
        );
        assert_eq!(parse_command("cargo run --example a"), None);
    }
}
