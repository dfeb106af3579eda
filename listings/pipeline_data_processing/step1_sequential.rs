//! Step 1: the sequential baseline. Read the sample orders, parse each line,
//! normalise it, check it against the data quality rules, and write the good
//! ones to a CSV file, one record at a time in one loop. Every later step does
//! exactly this work, and its tests compare their output with this one's.
//!
//! Run it: `cargo run --example step1_sequential`

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The sample data set, found wherever the listing is compiled from.
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/listings/pipeline_data_processing/data/orders.csv"
);

// ANCHOR: records
/// The columns of an input CSV file, in order; its first line must be this.
pub const HEADER: &str = "order_id,customer,country,amount,currency,ordered_at";

/// One line of input, numbered from 1 as an editor shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub number: u64,
    pub text: String,
}

/// A parsed record: the fields as the source wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOrder {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    pub ordered_at: String,
}

/// A normalised record; the validator decides whether it is good.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    /// `None` when the currency has no rate (the validator rejects it).
    pub amount_eur_cents: Option<i64>,
    pub ordered_at: String,
}

/// A record that passed every rule: what the writer writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CleanOrder {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    pub amount_eur_cents: i64,
    pub ordered_at: String,
}

/// A record that did not make it, and why; `line` says where to look.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}
// ANCHOR_END: records

// ANCHOR: parse
/// Parse one CSV line. Only the shape is checked here: six columns and a
/// numeric amount. Whether the values make sense is the validator's job.
pub fn parse_csv(line: &Line) -> Result<RawOrder, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.text.as_bytes());
    let record = match reader.records().next() {
        Some(Ok(record)) => record,
        Some(Err(err)) => return Err(format!("malformed CSV: {err}")),
        None => return Err("empty line".to_string()),
    };
    if record.len() != 6 {
        return Err(format!("expected 6 columns, found {}", record.len()));
    }
    Ok(RawOrder {
        line: line.number,
        order_id: record[0].to_string(),
        customer: record[1].to_string(),
        country: record[2].to_string(),
        amount: parse_amount(&record[3])?,
        currency: record[4].to_string(),
        ordered_at: record[5].to_string(),
    })
}

/// The JSON Lines form of a record; `amount` may be a number or a string.
#[derive(Deserialize)]
struct JsonOrder {
    order_id: String,
    customer: String,
    country: String,
    amount: serde_json::Value,
    currency: String,
    ordered_at: String,
}

/// Parse one JSON Lines record (one JSON object per line).
pub fn parse_json(line: &Line) -> Result<RawOrder, String> {
    let json: JsonOrder =
        serde_json::from_str(&line.text).map_err(|err| format!("invalid JSON: {err}"))?;
    let amount = match &json.amount {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        serde_json::Value::String(s) => parse_amount(s)?,
        other => return Err(format!("amount is not a number: {other}")),
    };
    Ok(RawOrder {
        line: line.number,
        order_id: json.order_id,
        customer: json.customer,
        country: json.country,
        amount,
        currency: json.currency,
        ordered_at: json.ordered_at,
    })
}

fn parse_amount(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("amount is not a number: {text:?}"))
}
// ANCHOR_END: parse

// ANCHOR: transform
/// Euro value of one unit of each currency we accept. A fixed table, not
/// today's rates: a real pipeline would load it per run.
const RATES_TO_EUR: [(&str, f64); 7] = [
    ("EUR", 1.0),
    ("USD", 0.92),
    ("GBP", 1.17),
    ("CHF", 1.05),
    ("SEK", 0.088),
    ("DKK", 0.134),
    ("PLN", 0.23),
];

/// Normalise: trim every field, upper-case the codes, convert the amount to
/// euro cents, and write the timestamp as `YYYY-MM-DDTHH:MM:SSZ`. It never
/// rejects; what it cannot normalise it leaves for the validator to refuse.
pub fn transform(raw: RawOrder) -> Order {
    let currency = raw.currency.trim().to_uppercase();
    let rate = RATES_TO_EUR.iter().find(|(code, _)| *code == currency);
    Order {
        line: raw.line,
        order_id: raw.order_id.trim().to_string(),
        customer: raw.customer.trim().to_string(),
        country: raw.country.trim().to_uppercase(),
        amount_eur_cents: rate.map(|(_, rate)| (raw.amount * rate * 100.0).round() as i64),
        amount: raw.amount,
        currency,
        ordered_at: normalise_timestamp(raw.ordered_at.trim()),
    }
}

/// `2024-03-01`, `2024-03-01 10:02:11` and `2024-03-01T10:02:11Z` all become
/// `2024-03-01T10:02:11Z` (with `00:00:00` for a bare date). Anything else is
/// returned as it is.
fn normalise_timestamp(text: &str) -> String {
    match text.len() {
        10 => format!("{text}T00:00:00Z"),
        19 if text.as_bytes()[10] == b' ' => format!("{}T{}Z", &text[..10], &text[11..]),
        _ => text.to_string(),
    }
}
// ANCHOR_END: transform

// ANCHOR: validate
/// Countries we ship to (ISO 3166-1 alpha-2).
const COUNTRIES: [&str; 16] = [
    "AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "NL", "PL", "PT", "SE", "US",
];

/// No single order is worth more than this; a bigger one is a data error.
const MAX_EUR_CENTS: i64 = 100_000 * 100;

/// The data quality rules. Each failure names its rule, so a reject file
/// says what to fix.
pub fn validate(order: Order) -> Result<CleanOrder, String> {
    if order.order_id.is_empty() {
        return Err("missing order_id".to_string());
    }
    if !COUNTRIES.contains(&order.country.as_str()) {
        return Err(format!("unknown country code {:?}", order.country));
    }
    let Some(eur_cents) = order.amount_eur_cents else {
        return Err(format!("unknown currency {:?}", order.currency));
    };
    // NaN is not above zero either, and `parse` accepts "NaN".
    if order.amount.is_nan() || order.amount <= 0.0 {
        return Err(format!("amount must be positive, got {}", order.amount));
    }
    if eur_cents > MAX_EUR_CENTS {
        return Err(format!("amount over 100000 EUR: {}", order.amount));
    }
    if !is_valid_timestamp(&order.ordered_at) {
        return Err(format!("bad date {:?}", order.ordered_at));
    }
    Ok(CleanOrder {
        line: order.line,
        order_id: order.order_id,
        customer: order.customer,
        country: order.country,
        amount: order.amount,
        currency: order.currency,
        amount_eur_cents: eur_cents,
        ordered_at: order.ordered_at,
    })
}
// ANCHOR_END: validate

/// `YYYY-MM-DDTHH:MM:SSZ` naming a real day (leap years included) and time.
fn is_valid_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    let number = |from: usize, to: usize| text.get(from..to)?.parse::<u32>().ok();
    let fields = (
        number(0, 4),
        number(5, 7),
        number(8, 10),
        number(11, 13),
        number(14, 16),
        number(17, 19),
    );
    let (Some(y), Some(m), Some(d), Some(hh), Some(mm), Some(ss)) = fields else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => 0,
    };
    shape && (1..=days_in_month).contains(&d) && hh < 24 && mm < 60 && ss < 60
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub rejects: Vec<Reject>,
}

// ANCHOR: sequential
/// Read `input` (a CSV file with a header line), write the good records to
/// `output` as CSV, and return what happened. One loop, one record at a
/// time: each line is read, parsed, transformed, validated and written
/// before the next is read.
pub fn run(input: &Path, output: &Path) -> std::io::Result<Summary> {
    let mut lines = BufReader::new(File::open(input)?).lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    if header.trim() != HEADER {
        return Err(std::io::Error::other(format!(
            "unexpected header {header:?}"
        )));
    }
    let mut writer = csv::Writer::from_path(output)?;
    let mut summary = Summary::default();
    for (index, text) in lines.enumerate() {
        let line = Line {
            number: index as u64 + 2, // the header is line 1
            text: text?,
        };
        summary.read += 1;
        let checked = parse_csv(&line).map(transform).and_then(validate);
        match checked {
            Ok(order) => {
                writer.serialize(&order)?;
                summary.written += 1;
            }
            Err(reason) => summary.rejects.push(Reject {
                line: line.number,
                reason,
            }),
        }
    }
    writer.flush()?;
    Ok(summary)
}
// ANCHOR_END: sequential

fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = dir.path().join("clean.csv");
    let summary = run(Path::new(SAMPLE), &output)?;
    println!(
        "read {} records: {} written, {} rejected",
        summary.read,
        summary.written,
        summary.rejects.len()
    );
    for reject in &summary.rejects {
        println!("  line {}: {}", reject.line, reject.reason);
    }
    let written = std::fs::read_to_string(&output)?;
    println!("first lines of the output:");
    for line in written.lines().take(4) {
        println!("  {line}");
    }
    std::io::stdout().flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            number: 7,
            text: text.to_string(),
        }
    }

    fn check_csv(text: &str) -> Result<CleanOrder, String> {
        parse_csv(&line(text)).map(transform).and_then(validate)
    }

    #[test]
    fn a_good_line_is_normalised() {
        may_patterns::runtime::configure_for_tests();
        let order = check_csv("A-1, Jean ,fr,10.00,usd,2024-02-29 10:02:11").unwrap();
        assert_eq!(order.line, 7);
        assert_eq!(order.customer, "Jean");
        assert_eq!(order.country, "FR");
        assert_eq!(order.currency, "USD");
        assert_eq!(order.amount_eur_cents, 920);
        assert_eq!(order.ordered_at, "2024-02-29T10:02:11Z");
    }

    #[test]
    fn every_rule_names_its_reason() {
        may_patterns::runtime::configure_for_tests();
        let cases = [
            ("A-1,x,FR,1", "expected 6 columns, found 4"),
            (
                "A-1,x,FR,1;5,EUR,2024-03-01",
                "amount is not a number: \"1;5\"",
            ),
            (",x,FR,1,EUR,2024-03-01", "missing order_id"),
            ("A-1,x,ZZ,1,EUR,2024-03-01", "unknown country code \"ZZ\""),
            ("A-1,x,FR,1,JPY,2024-03-01", "unknown currency \"JPY\""),
            (
                "A-1,x,FR,0,EUR,2024-03-01",
                "amount must be positive, got 0",
            ),
            (
                "A-1,x,FR,NaN,EUR,2024-03-01",
                "amount must be positive, got NaN",
            ),
            (
                "A-1,x,FR,100001,EUR,2024-03-01",
                "amount over 100000 EUR: 100001",
            ),
            (
                "A-1,x,FR,1,EUR,2023-02-29",
                "bad date \"2023-02-29T00:00:00Z\"",
            ),
            ("A-1,x,FR,1,EUR,soon", "bad date \"soon\""),
        ];
        for (text, reason) in cases {
            assert_eq!(check_csv(text).unwrap_err(), reason, "{text}");
        }
    }

    #[test]
    fn json_lines_parse_to_the_same_record_as_csv() {
        may_patterns::runtime::configure_for_tests();
        let from_csv = parse_csv(&line("A-1,Jo,FR,12.5,EUR,2024-03-01")).unwrap();
        let json = r#"{"order_id":"A-1","customer":"Jo","country":"FR","amount":12.5,"currency":"EUR","ordered_at":"2024-03-01"}"#;
        assert_eq!(parse_json(&line(json)).unwrap(), from_csv);
        let quoted = json.replace("12.5", "\"12.5\"");
        assert_eq!(parse_json(&line(&quoted)).unwrap(), from_csv);
        let err = parse_json(&line(r#"{"order_id":"A-1""#)).unwrap_err();
        assert!(err.starts_with("invalid JSON: EOF while parsing"), "{err}");
    }

    #[test]
    fn the_sample_has_one_reject_per_rule() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let summary = run(Path::new(SAMPLE), &output).unwrap();
        assert_eq!((summary.read, summary.written), (41, 33));
        let lines: Vec<u64> = summary.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, [12, 14, 16, 18, 20, 22, 24, 26]);
        let written = std::fs::read_to_string(&output).unwrap();
        assert_eq!(written.lines().count(), 34, "a header and 33 records");
    }
}
