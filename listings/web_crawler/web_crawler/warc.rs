//! WARC 1.1 records (ISO 28500:2017), the format web archives keep crawls
//! in: a `warcinfo` record that says who wrote the file, then for each
//! fetch a `request` record and a `response` record that point at each
//! other. A record is a version line, named fields, a blank line, a block of
//! `Content-Length` bytes and two CRLFs:
//!
//! ```text
//! WARC/1.1
//! WARC-Type: response
//! WARC-Record-ID: <urn:uuid:8f0e...>
//! WARC-Date: 2026-12-02T05:09:17Z
//! WARC-Target-URI: http://127.0.0.1:8080/p/3.html
//! WARC-Concurrent-To: <urn:uuid:(the request's id)>
//! WARC-IP-Address: 127.0.0.1
//! WARC-Warcinfo-ID: <urn:uuid:(the warcinfo's id)>
//! Content-Type: application/http;msgtype=response
//! Content-Length: 1234
//!
//! HTTP/1.1 200 OK ... (the head, a blank line, the body)
//! ```
//!
//! Record ids are random (version 4) UUIDs; dates are UTC to the second.
//! No `WARC-Payload-Digest`: it needs SHA-1, and the program's one hash
//! library (ring, under rustls) is not a dependency it can name.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Header fields that describe how the body travelled, not the body the
/// client hands over (it removed chunked framing and gzip as it read).
const FRAMING_FIELDS: [&str; 3] = ["content-length", "transfer-encoding", "content-encoding"];

/// One fetch as it goes into the archive.
pub struct Exchange<'a> {
    /// The request as sent: request line, fields, the blank line.
    pub request_head: &'a [u8],
    /// The response's status line and fields, ending with the blank line.
    pub response_head: &'a [u8],
    /// The body as the client decoded it.
    pub body: &'a [u8],
    /// The address the response came from.
    pub ip: Option<IpAddr>,
}

/// Makes a file's records: its ids come from one seedable generator.
pub struct Warc {
    rng: fastrand::Rng,
    info_id: String,
}

impl Warc {
    /// Records for a file; `seed` makes the ids (a random one in the
    /// program, a fixed one in tests).
    pub fn new(seed: u64) -> Warc {
        let mut rng = fastrand::Rng::with_seed(seed);
        let info_id = record_id(&mut rng);
        Warc { rng, info_id }
    }

    // ANCHOR: warcinfo
    /// The file's (or an appended run's) first record: what wrote it.
    pub fn warcinfo(&self, filename: &str, at_ms: u64) -> Vec<u8> {
        let block = format!(
            "software: may-patterns web_crawler {}\r\n\
             format: WARC File Format 1.1\r\n\
             conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n\
             description: bodies are stored decoded (no chunked framing, no gzip); \
             the response head's Content-Length says their size\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let fields = [
            ("WARC-Type", "warcinfo".to_owned()),
            ("WARC-Record-ID", self.info_id.clone()),
            ("WARC-Date", iso_date(at_ms)),
            ("WARC-Filename", filename.to_owned()),
            ("Content-Type", "application/warc-fields".to_owned()),
        ];
        record(&fields, &[block.as_bytes()])
    }
    // ANCHOR_END: warcinfo

    // ANCHOR: exchange
    /// A fetch's `request` and `response` records, one after the other.
    pub fn exchange(&mut self, url: &str, at_ms: u64, exchange: &Exchange<'_>) -> Vec<u8> {
        let request_id = record_id(&mut self.rng);
        let response_id = record_id(&mut self.rng);
        let common = |kind: &str, id: &str, other: &str, msgtype: &str| {
            let mut fields = vec![
                ("WARC-Type", kind.to_owned()),
                ("WARC-Record-ID", id.to_owned()),
                ("WARC-Date", iso_date(at_ms)),
                ("WARC-Target-URI", url.to_owned()),
                ("WARC-Concurrent-To", other.to_owned()),
            ];
            if let Some(ip) = exchange.ip {
                fields.push(("WARC-IP-Address", ip.to_string()));
            }
            fields.push(("WARC-Warcinfo-ID", self.info_id.clone()));
            fields.push((
                "Content-Type",
                format!("application/http;msgtype={msgtype}"),
            ));
            fields
        };
        let head = decoded_head(exchange.response_head, exchange.body.len());
        let mut out = record(
            &common("request", &request_id, &response_id, "request"),
            &[exchange.request_head],
        );
        out.extend(record(
            &common("response", &response_id, &request_id, "response"),
            &[&head, exchange.body],
        ));
        out
    }
    // ANCHOR_END: exchange
}

/// A record: the version line, `fields`, `Content-Length`, the blank line,
/// the block (its parts in order) and the two CRLFs that end a record.
fn record(fields: &[(&str, String)], block: &[&[u8]]) -> Vec<u8> {
    let length: usize = block.iter().map(|part| part.len()).sum();
    let mut head = String::from("WARC/1.1\r\n");
    for (name, value) in fields {
        // Values are ours or a URL the url crate serialised: no CR or LF.
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {length}\r\n\r\n");
    let mut out = Vec::with_capacity(head.len() + length + 4);
    out.extend_from_slice(head.as_bytes());
    for part in block {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The response head as it would have been had the body come as stored:
/// the framing fields dropped, a `Content-Length` of the stored body added.
/// A reader then finds a plain message of that many bytes (warcio would
/// otherwise try to gunzip or de-chunk a body that is neither).
fn decoded_head(head: &[u8], body_len: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(head.len() + 24);
    for line in text.lines().filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !FRAMING_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    let _ = write!(out, "Content-Length: {body_len}\r\n\r\n");
    out.into_bytes()
}

// ANCHOR: record_id
/// `<urn:uuid:...>` of a version 4 UUID: 122 random bits, the version
/// nibble 4 and the variant bits `10` (RFC 9562 section 5.4).
fn record_id(rng: &mut fastrand::Rng) -> String {
    let mut bytes = rng.u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "<urn:uuid:{}-{}-{}-{}-{}>",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
// ANCHOR_END: record_id

// ANCHOR: iso_date
/// `YYYY-MM-DDThh:mm:ssZ` (UTC) of a time in milliseconds since the Unix
/// epoch, without a date library: days become a civil date by Howard
/// Hinnant's `civil_from_days`, exact for every date after 1970.
pub fn iso_date(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Shift the epoch to 0000-03-01, so a leap day ends its 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}
// ANCHOR_END: iso_date

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_ones() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (951_868_799_999, "2000-02-29T23:59:59Z"),
            (1_700_000_000_000, "2023-11-14T22:13:20Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00Z"),
            (1_735_689_599_000, "2024-12-31T23:59:59Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00Z"),
            (4_107_456_000_000, "2100-02-28T00:00:00Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
        ];
        for (ms, date) in cases {
            assert_eq!(iso_date(ms), date, "{ms}");
        }
    }

    #[test]
    fn every_day_for_four_centuries_follows_the_one_before() {
        let days_in = |year: u64, month: u64| match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..146_097u64 {
            let expected = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
            assert_eq!(iso_date(days * 86_400_000), expected);
            day += 1;
            if day > days_in(year, month) {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn record_ids_are_version_4_uuids() {
        let mut rng = fastrand::Rng::with_seed(7);
        let pattern = regex::Regex::new(
            r"^<urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}>$",
        )
        .unwrap();
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| record_id(&mut rng)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| pattern.is_match(id)));
    }

    #[test]
    fn the_response_head_is_made_to_match_the_decoded_body() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\
                     content-encoding: gzip\r\nX-Kept: yes\r\n\r\n";
        assert_eq!(
            String::from_utf8(decoded_head(head, 42)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Kept: yes\r\nContent-Length: 42\r\n\r\n"
        );
    }

    #[test]
    fn a_record_is_its_fields_a_block_of_content_length_bytes_and_two_crlfs() {
        let mut warc = Warc::new(1);
        let bytes = warc.exchange(
            "http://127.0.0.1:1/",
            0,
            &Exchange {
                request_head: b"GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
                response_head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                body: b"hi",
                ip: None,
            },
        );
        let text = String::from_utf8(bytes).unwrap();
        let records: Vec<&str> = text.split_inclusive("\r\n\r\n\r\n\r\n").collect();
        assert_eq!(records.len(), 2, "{text}");
        for record in records {
            let (head, rest) = record.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(rest.len(), length + 4, "{record}");
            assert!(!head.contains("WARC-IP-Address"));
        }
    }
}
