//! The command line: clap flags, each refused with one sentence when it
//! cannot work (clap then exits with 2), and the checks clap cannot make
//! (`Config::from_args`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;
use regex::Regex;
use url::Url;

// ANCHOR: cli
/// Crawl the web from SEED URLs, politely: at most --per-host requests at
/// once and one per --delay to each host, robots.txt obeyed, transient
/// errors retried with backoff. Pages go to --out as JSON Lines (and to
/// --warc as WARC 1.1); Ctrl-C saves a checkpoint that --resume continues.
#[derive(Parser, Debug)]
#[command(name = "web_crawler")]
pub struct Args {
    /// Where to start: http or https URLs.
    #[arg(value_name = "SEED")]
    pub seeds: Vec<String>,
    /// Fetches in flight at once, all hosts together (the fetcher coroutines).
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<usize>)]
    pub max_concurrent: usize,
    /// Fetches in flight at once to one host.
    #[arg(long, default_value_t = 2, value_parser = at_least_one::<usize>)]
    pub per_host: usize,
    /// Least time between the starts of two requests to one host (a
    /// robots.txt Crawl-delay can make it longer, never shorter).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Links followed from a seed at most (a seed is depth 0).
    #[arg(long, default_value_t = 5)]
    pub depth: u32,
    /// Pages fetched at most (robots.txt files not counted).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one::<u64>)]
    pub max_pages: u64,
    /// Stay on the seeds' hosts (scheme, host and port).
    #[arg(long)]
    pub same_host: bool,
    /// Only URLs matching this regular expression are queued.
    #[arg(long, value_name = "REGEX", value_parser = Regex::new)]
    pub include: Option<Regex>,
    /// URLs matching this regular expression are not queued.
    #[arg(long, value_name = "REGEX", value_parser = Regex::new)]
    pub exclude: Option<Regex>,
    /// Sent as User-Agent; its product token (up to the first '/') is the
    /// name robots.txt groups are matched against.
    #[arg(long, default_value = "may-crawler/0.1")]
    pub user_agent: String,
    /// Also write every exchange to this WARC 1.1 file.
    #[arg(long, value_name = "FILE")]
    pub warc: Option<PathBuf>,
    /// The pages, one JSON object per line.
    #[arg(long, value_name = "FILE", default_value = "crawl.jsonl")]
    pub out: PathBuf,
    /// Continue the crawl saved in --checkpoint (appending to --out and
    /// --warc); seeds given too are added to it.
    #[arg(long)]
    pub resume: bool,
    /// Where the frontier and the seen-set are saved when the crawl ends
    /// (done, at --max-pages or on Ctrl-C), for --resume.
    #[arg(long, value_name = "FILE", default_value = "crawl.checkpoint")]
    pub checkpoint: PathBuf,
    /// Body bytes (decoded) kept per page; a longer page is an error.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = at_least_one::<u64>)]
    pub max_bytes: u64,
    /// Longer URLs are not queued (a link trap's URLs grow without end).
    #[arg(long, default_value_t = 2048, value_parser = at_least_one::<usize>)]
    pub max_url_len: usize,
    /// Redirects followed in one chain (each hop is queued like a link).
    #[arg(long, default_value_t = 5)]
    pub max_redirects: u32,
    /// Retries of a URL after a transient error, a 429 or a 503.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Longest whole fetch of one URL (connect, head and body).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Also trust the CA certificates in this PEM file (a test CA).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}
// ANCHOR_END: cli

/// A duration flag that must not be zero (may reads a zero timeout as none).
fn positive_duration(arg: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(arg).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// The flags, checked, with the seeds parsed and the TLS roots loaded.
#[derive(Debug)]
pub struct Config {
    pub args: Args,
    pub seeds: Vec<Url>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

// ANCHOR: config
impl Config {
    /// The checks clap cannot make, each failing with one sentence.
    pub fn from_args(args: Args) -> Result<Config, String> {
        if args.seeds.is_empty() && !args.resume {
            return Err("give at least one seed URL (or --resume a saved crawl)".to_owned());
        }
        let seeds = args
            .seeds
            .iter()
            .map(|s| match Url::parse(s) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
                _ => Err(format!("the seed {s:?} is not an http or https URL")),
            })
            .collect::<Result<Vec<Url>, String>>()?;
        let tls = args.ca_file.as_deref().map(trusting).transpose()?;
        Ok(Config { args, seeds, tls })
    }
}
// ANCHOR_END: config

/// A TLS client config trusting the Mozilla roots and the CAs in `pem`.
fn trusting(pem: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let cant = |e: &dyn std::fmt::Display| format!("cannot read --ca-file {}: {e}", pem.display());
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(pem)
        .map_err(|e| cant(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cant(&e))?;
    if certs.is_empty() {
        return Err(cant(&"no certificate in it"));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| cant(&e))?;
    }
    Ok(may_patterns::tls::client_config(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("web_crawler").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_args(args)
    }

    fn refused(args: &[&str], sentence: &str) {
        let error = parse(args).expect_err("must be refused");
        assert!(error.contains(sentence), "{args:?}: {error}");
    }

    #[test]
    fn the_issues_example_parses() {
        let config = parse(&[
            "--max-concurrent",
            "10",
            "--delay",
            "100ms",
            "http://a.test/",
        ])
        .unwrap();
        assert_eq!(config.args.delay, Duration::from_millis(100));
        assert_eq!(config.seeds[0].as_str(), "http://a.test/");
        assert!(config.tls.is_none());
    }

    #[test]
    fn bad_flags_get_one_sentence() {
        refused(&[], "give at least one seed URL");
        refused(
            &["ftp://a/"],
            "the seed \"ftp://a/\" is not an http or https URL",
        );
        refused(&["not a url"], "is not an http or https URL");
        refused(&["--per-host", "0", "http://a/"], "must be at least 1");
        refused(
            &["--max-concurrent", "0", "http://a/"],
            "must be at least 1",
        );
        refused(
            &["--delay", "soon", "http://a/"],
            "invalid value 'soon' for '--delay",
        );
        refused(
            &["--timeout", "0s", "http://a/"],
            "must be longer than zero",
        );
        refused(&["--include", "(", "http://a/"], "regex parse error");
        refused(
            &["--ca-file", "/nonexistent.pem", "http://a/"],
            "cannot read --ca-file /nonexistent.pem",
        );
        assert!(
            parse(&["--resume"]).is_ok(),
            "a resumed crawl needs no seed"
        );
    }

    #[test]
    fn a_ca_file_is_trusted() {
        let ca = may_patterns::tls::TestCa::new("crawler test CA");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.cert_pem()).unwrap();
        let config = parse(&["--ca-file", pem.to_str().unwrap(), "https://127.0.0.1/"]).unwrap();
        assert!(config.tls.is_some());
        std::fs::write(&pem, "not a certificate").unwrap();
        refused(
            &["--ca-file", pem.to_str().unwrap(), "https://a/"],
            "no certificate in it",
        );
    }
}
