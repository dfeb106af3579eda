//! What every step of the forward proxy does with a request before it
//! forwards it: read its head, and learn from its target where it goes. A
//! step includes this file with `#[path = "steps_request.rs"] mod
//! steps_request;`.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::time::Duration;

use may_patterns::http::{read_request_head, write_error, Limits, RequestHead};
use may_patterns::server::{Conn, ReadHalf, WriteHalf};

/// How long the proxy waits for a byte from either side, and for a connect.
pub const IDLE: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ANCHOR: next_head
/// A client connection's two halves, buffered, with `IDLE` on every read
/// and write.
pub fn client_halves(conn: Conn) -> io::Result<(BufReader<ReadHalf>, BufWriter<WriteHalf>)> {
    conn.set_idle_timeout(Some(IDLE))?;
    let (client_in, client_out) = conn.split()?;
    Ok((BufReader::new(client_in), BufWriter::new(client_out)))
}

/// The client's next request head. `None` once the client has closed, or
/// once a head that cannot be read has been answered `400`: the proxy no
/// longer knows where the next request would start, so the connection ends.
pub fn next_head(
    client_in: &mut impl BufRead,
    client_out: &mut impl Write,
) -> io::Result<Option<RequestHead>> {
    match read_request_head(client_in, &Limits::default()) {
        Ok(head) => Ok(head),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            let why = e.to_string();
            write_error(client_out, 400, "Bad Request", &[], &why, true)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
// ANCHOR_END: next_head

// ANCHOR: target
/// Where an absolute-form target points: `http://host[:port]/path?query`.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The origin form: path and query, `/` at least.
    pub path: String,
}

impl Target {
    /// Only `http://` URLs: an `https://` one comes as `CONNECT` (step 4).
    pub fn parse(target: &str) -> Option<Target> {
        let url = url::Url::parse(target)
            .ok()
            .filter(|u| u.scheme() == "http")?;
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path = format!("{path}?{query}");
        }
        Some(Target {
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
            path,
        })
    }

    /// The `Host` header: the port only when it is not 80.
    pub fn authority(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }
}
// ANCHOR_END: target
