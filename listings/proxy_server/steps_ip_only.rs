//! Steps 1 to 4 connect to IP addresses only; names are resolved from
//! step 5 on. A step includes this file with `#[path = "steps_ip_only.rs"]
//! mod steps_ip_only;`.

use std::net::{IpAddr, SocketAddr};

use crate::steps_request::Target;

// ANCHOR: ip_target
/// Where an `http://` URL with an IP-literal host (`127.0.0.1`, `[::1]`)
/// points: the target and its address. A refusal is a status, a reason
/// and a sentence, for the step to answer with.
pub fn ip_target(target: &str) -> Result<(Target, SocketAddr), (u16, &'static str, String)> {
    let target =
        Target::parse(target).ok_or((400, "Bad Request", "not an http:// URL".to_owned()))?;
    let ip: IpAddr = target.host.trim_matches(['[', ']']).parse().map_err(|_| {
        let why = format!("{}: this step connects to IP addresses only", target.host);
        (502, "Bad Gateway", why)
    })?;
    let addr = SocketAddr::new(ip, target.port);
    Ok((target, addr))
}
// ANCHOR_END: ip_target
