//! A generator of order data sets of any size, for trying the pipeline on
//! more than the sample: `--rows N` records, every `--bad-every K`-th one
//! broken in a different way (cycling through the validator's rules and the
//! parser's), as CSV or JSON Lines. The same seed gives the same file.
//!
//! Run it: `cargo run --example generate_orders -- --rows 100000 --bad-every 50 --format csv --out /tmp/orders.csv`
//! (without `--out` it writes to stdout).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Write a deterministic data set of orders, some deliberately bad.
#[derive(Parser, Debug)]
#[command(name = "generate_orders")]
struct Args {
    /// Records to write (not counting the CSV header).
    #[arg(long, default_value_t = 10)]
    rows: u64,
    /// Make every K-th record bad (0: none).
    #[arg(long, default_value_t = 4)]
    bad_every: u64,
    #[arg(long, value_enum, default_value_t = Kind::Csv)]
    format: Kind,
    /// Seed for the random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write [default: stdout].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Csv,
    Jsonl,
}

// ANCHOR: generate
const COUNTRIES: [&str; 8] = ["DE", "fr", "NL", "GB", "ES", "it", "SE", "US"];
const CURRENCIES: [&str; 4] = ["EUR", "EUR", "USD", "gbp"];
const NAMES: [&str; 6] = ["Anna", "Jean", "Lotte", "John", "Maria", "Luca"];

/// The fields of one order, as text; bad records break one field.
fn order(rng: &mut fastrand::Rng, n: u64, bad: Option<u64>) -> [String; 6] {
    let mut fields = [
        format!("G-{n:08}"),
        NAMES[rng.usize(..NAMES.len())].to_string(),
        COUNTRIES[rng.usize(..COUNTRIES.len())].to_string(),
        format!("{}.{:02}", rng.u32(1..2_000), rng.u32(..100)),
        CURRENCIES[rng.usize(..CURRENCIES.len())].to_string(),
        format!(
            "2024-{:02}-{:02}T{:02}:{:02}:00Z",
            rng.u32(1..13),
            rng.u32(1..29),
            rng.u32(..24),
            rng.u32(..60)
        ),
    ];
    match bad.map(|k| k % 6) {
        Some(0) => fields[0].clear(),                    // missing order_id
        Some(1) => fields[2] = "XX".to_string(),         // unknown country
        Some(2) => fields[3] = "-5.00".to_string(),      // non-positive amount
        Some(3) => fields[4] = "JPY".to_string(),        // unknown currency
        Some(4) => fields[5] = "2024-02-30".to_string(), // bad date
        Some(_) => fields[3] = "12;50".to_string(),      // not a number
        None => {}
    }
    fields
}

/// Write `rows` orders to `out`; every `bad_every`-th is bad.
pub fn write_orders(
    out: &mut impl Write,
    rows: u64,
    bad_every: u64,
    kind: Kind,
    seed: u64,
) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    if kind == Kind::Csv {
        writeln!(out, "order_id,customer,country,amount,currency,ordered_at")?;
    }
    for n in 1..=rows {
        let bad = (bad_every > 0 && n % bad_every == 0).then_some(n / bad_every);
        let [id, customer, country, amount, currency, at] = order(&mut rng, n, bad);
        match kind {
            Kind::Csv => writeln!(out, "{id},{customer},{country},{amount},{currency},{at}")?,
            Kind::Jsonl => writeln!(
                out,
                r#"{{"order_id":"{id}","customer":"{customer}","country":"{country}","amount":"{amount}","currency":"{currency}","ordered_at":"{at}"}}"#
            )?,
        }
    }
    out.flush()
}
// ANCHOR_END: generate

fn main() -> ExitCode {
    let args = Args::parse();
    let (rows, bad_every, format, seed) = (args.rows, args.bad_every, args.format, args.seed);
    let written = match &args.out {
        Some(path) => File::create(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
            .and_then(|file| {
                write_orders(&mut BufWriter::new(file), rows, bad_every, format, seed)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            }),
        None => write_orders(&mut io::stdout().lock(), rows, bad_every, format, seed)
            .map_err(|e| format!("cannot write to standard output: {e}")),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(sentence) => {
            eprintln!("generate_orders: {sentence}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(rows: u64, bad_every: u64, kind: Kind) -> String {
        let mut out = Vec::new();
        write_orders(&mut out, rows, bad_every, kind, 7).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_data() {
        may_patterns::runtime::configure_for_tests();
        assert_eq!(generate(50, 5, Kind::Csv), generate(50, 5, Kind::Csv));
        assert_eq!(generate(50, 5, Kind::Csv).lines().count(), 51);
        assert_eq!(generate(50, 5, Kind::Jsonl).lines().count(), 50);
    }

    #[test]
    fn every_kth_record_is_broken_a_different_way_in_turn() {
        may_patterns::runtime::configure_for_tests();
        let csv = generate(12, 2, Kind::Csv);
        let records: Vec<Vec<&str>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let bad: Vec<&Vec<&str>> = records.iter().skip(1).step_by(2).collect();
        assert_eq!(bad[0][2], "XX");
        assert_eq!(bad[1][3], "-5.00");
        assert_eq!(bad[2][4], "JPY");
        assert_eq!(bad[3][5], "2024-02-30");
        assert_eq!(bad[4][3], "12;50");
        assert_eq!(bad[5][0], "");
        assert!(records.iter().step_by(2).all(|r| r[0].starts_with("G-")));
    }
}
