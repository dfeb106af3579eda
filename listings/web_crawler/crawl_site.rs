//! crawl_site: the chapter's test site, served by nginx, for crawling by
//! hand with the chapter's crawler, wget or anything else.
//!
//! It generates the site (`may_patterns::testsite`), starts nginx on one
//! loopback port per host from the config kept in `src/testsite/`, prints
//! the seed URL, the commands that crawl it and where nginx's access log
//! is, and serves until Ctrl-C. With `--check` it fetches every host's `/`
//! once with the book's HTTP client, prints what came back and exits.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use may::coroutine::Builder;
use may::go;
use may_patterns::cli::at_least_one;
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use may_patterns::testsite::{Features, Nginx, NginxOptions, Site, SiteSpec};
use may_patterns::tls::{self, TestCa};
use url::Url;

#[derive(Parser, Debug)]
#[command(about = "Serve the web-crawler chapter's test site with nginx")]
struct Args {
    /// Hosts, each on its own port of 127.0.0.1.
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    hosts: usize,
    /// Plain pages per host.
    #[arg(long, default_value_t = 12, value_parser = at_least_one::<usize>)]
    pages: usize,
    /// Plain pages only: no robots.txt, redirects, trap or broken pages.
    #[arg(long)]
    plain: bool,
    /// Every page answered this late (nginx passes them all to the backend).
    #[arg(long, value_parser = humantime::parse_duration)]
    latency: Option<Duration>,
    /// Serve HTTPS with a certificate from a fresh test CA, written to ca.pem
    /// in nginx's directory for the client's --ca-file.
    #[arg(long)]
    tls: bool,
    /// Fetch every host's `/` once, print what came back, and exit.
    #[arg(long)]
    check: bool,
}

// ANCHOR: start
fn start(args: &Args) -> std::io::Result<(Nginx, Site, Option<TestCa>)> {
    let spec = SiteSpec {
        hosts: args.hosts,
        pages_per_host: args.pages,
        features: if args.plain {
            Features::none()
        } else {
            Features::all()
        },
        ..SiteSpec::small()
    };
    let ca = args.tls.then(|| TestCa::new("crawl_site test CA"));
    let options = NginxOptions {
        tls: ca.as_ref().map(|ca| ca.issue(&["127.0.0.1"])),
        per_page_latency: args.latency,
    };
    let (nginx, site) = Nginx::start(&spec, options)?;
    if let Some(ca) = &ca {
        std::fs::write(ca_file(&nginx), ca.cert_pem())?;
    }
    Ok((nginx, site, ca))
}
// ANCHOR_END: start

fn ca_file(nginx: &Nginx) -> PathBuf {
    nginx.dir().join("ca.pem")
}

// ANCHOR: check
/// Fetch each host's `/` on one coroutine (the client's measured stack)
/// and describe it: status, type, links, and what robots.txt says.
fn check(nginx: &Nginx, site: &Site, ca: Option<&TestCa>) -> Vec<String> {
    let config = ClientConfig {
        user_agent: "crawl_site-check/0.1".into(),
        tls: ca.map_or_else(tls::web_client_config, |ca| tls::client_config(ca.roots())),
        ..ClientConfig::default()
    };
    let client = Client::new(config);
    let origins = nginx.origins.clone();
    let robots: Vec<String> = (0..origins.len())
        .map(|host| robots_case(site, host))
        .collect();
    let builder = Builder::new().stack_size(client::STACK_SIZE);
    let fetching = go!(builder, move || {
        let mut lines = Vec::new();
        for (host, origin) in origins.iter().enumerate() {
            let url = Url::parse(&format!("{origin}/")).expect("an origin is a URL");
            let line = match client.get(&url) {
                Ok(page) => format!(
                    "h{host} {url} -> {} {}, {} links; robots.txt: {}",
                    page.status,
                    page.header("content-type").unwrap_or("?"),
                    String::from_utf8_lossy(&page.body).matches("href=").count(),
                    robots[host]
                ),
                Err(e) => format!("h{host} {url} -> {e}"),
            };
            lines.push(line);
        }
        lines
    });
    fetching
        .expect("a coroutine is spawned")
        .join()
        .unwrap_or_else(|_| vec!["the fetching coroutine panicked".to_owned()])
}
// ANCHOR_END: check

/// What host `host`'s robots.txt is, in words.
fn robots_case(site: &Site, host: usize) -> String {
    let disallowed = site.disallowed_paths(host);
    match (
        site.resources(host).get("/robots.txt"),
        site.crawl_delay(host),
    ) {
        (None, _) => "none (404: all allowed)".into(),
        (_, Some(delay)) => format!("Disallow {}, Crawl-delay {delay}s", disallowed.join(" ")),
        _ if disallowed == ["/"] => "503 (all disallowed)".into(),
        _ if disallowed.is_empty() => "garbage (all allowed)".into(),
        _ => format!("Disallow {}", disallowed.join(" ")),
    }
}

/// The commands a reader runs against the site, with its seed filled in.
fn commands(nginx: &Nginx, site: &Site, tls: bool) -> Vec<String> {
    let seed = site.seed_url();
    let ca = match tls {
        true => format!(" --ca-file {}", ca_file(nginx).display()),
        false => String::new(),
    };
    vec![
        format!("cargo run --release --example web_crawler -- --max-concurrent 10 --per-host 2 --delay 100ms --depth 3{ca} {seed}"),
        format!("wget --recursive --level 3 --wait 0.1 --no-verbose --directory-prefix /tmp/wget-site {seed}"),
        format!("tail -f {}", nginx.access_log_path().display()),
    ]
}

fn main() {
    let args = Args::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (nginx, site, ca) = match start(&args) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("crawl_site: {e}");
            std::process::exit(1);
        }
    };
    let hosts = nginx.origins.len();
    println!(
        "nginx serves {hosts} hosts of {} pages, seed {}",
        args.pages,
        site.seed_url()
    );
    if args.check {
        for line in check(&nginx, &site, ca.as_ref()) {
            println!("  {line}");
        }
        let depth3 = site.expected_urls(3).len();
        println!("a correct crawler with robots.txt honoured and --depth 3 fetches {depth3} URLs");
        match nginx.access_log() {
            Ok(log) => println!("nginx logged {} requests", log.len()),
            Err(e) => println!("nginx's access log: {e}"),
        }
        return;
    }
    println!("crawl it with:");
    for command in commands(&nginx, &site, ca.is_some()) {
        println!("  {command}");
    }
    println!("Ctrl-C stops nginx and removes {}", nginx.dir().display());
    let stop = Shutdown::new();
    let trigger = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || trigger.trigger()) {
        eprintln!("crawl_site: cannot catch Ctrl-C: {e}");
        std::process::exit(1);
    }
    stop.wait();
    println!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["crawl_site"].iter().chain(extra))
    }

    #[test]
    fn the_check_fetches_every_home_page_through_nginx() {
        may_patterns::runtime::configure_for_tests();
        let args = args(&["--check", "--hosts", "4"]);
        let (nginx, site, ca) = start(&args).unwrap();
        let lines = check(&nginx, &site, ca.as_ref());
        assert_eq!(lines.len(), 4);
        assert!(
            lines.iter().all(|l| l.contains("-> 200 text/html")),
            "{lines:#?}"
        );
        assert!(
            lines[3].ends_with("robots.txt: 503 (all disallowed)"),
            "{}",
            lines[3]
        );
        let log = nginx.access_log().unwrap();
        let paths: Vec<(usize, &str)> = log.iter().map(|l| (l.host, l.path.as_str())).collect();
        assert_eq!(paths, [(0, "/"), (1, "/"), (2, "/"), (3, "/")]);
        assert!(log.iter().all(|l| l.user_agent == "crawl_site-check/0.1"));
    }

    #[test]
    fn https_works_with_the_written_ca_file() {
        may_patterns::runtime::configure_for_tests();
        let (nginx, site, ca) = start(&args(&["--tls", "--plain", "--hosts", "2"])).unwrap();
        let pem = std::fs::read_to_string(ca_file(&nginx)).unwrap();
        assert_eq!(pem, ca.as_ref().unwrap().cert_pem());
        let lines = check(&nginx, &site, ca.as_ref());
        assert!(lines[1].starts_with("h1 https://127.0.0.1:"), "{lines:#?}");
        assert!(
            lines[1].contains("-> 200 text/html") && lines[1].ends_with("none (404: all allowed)")
        );
        let printed = commands(&nginx, &site, true).join("\n");
        assert!(printed.contains(&format!("--ca-file {}", ca_file(&nginx).display())));
    }

    #[test]
    fn zero_hosts_is_refused_with_a_sentence() {
        let error = Args::try_parse_from(["crawl_site", "--hosts", "0"]).unwrap_err();
        assert!(error.to_string().contains("must be at least 1"), "{error}");
    }
}
