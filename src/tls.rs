//! TLS over may sockets with rustls, and a throwaway certificate authority
//! so HTTPS runs on loopback in tests and demos.
//!
//! rustls does no I/O of its own: a [`rustls::StreamOwned`] drives it over
//! any `Read + Write`, here a may `TcpStream`, whose reads and writes park
//! the coroutine instead of blocking the worker thread. The handshake is
//! pure CPU plus socket I/O, so it is safe on a coroutine, but it is deep:
//! a coroutine that runs one needs the stack `book/may_primer/stack.md`
//! measured for rustls. [`connect`] and [`accept`] set no timeouts: the
//! caller bounds the handshake like any other read (for example with
//! `may_patterns::alarm`'s `shutdown_read_at`).
//!
//! The ring crypto provider is named explicitly, so nothing depends on
//! which provider another crate in the build happens to enable.

use std::io::{self, ErrorKind};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{CertificateError, ClientConnection, RootCertStore, ServerConnection, StreamOwned};

/// A client-side TLS stream over a may socket.
pub type ClientStream = StreamOwned<ClientConnection, may::net::TcpStream>;
/// A server-side TLS stream over a may socket.
pub type ServerStream = StreamOwned<ServerConnection, may::net::TcpStream>;

/// A certificate authority made by rcgen, in memory, for tests and demos:
/// trust it in a client ([`TestCa::roots`], `curl --cacert`) and let it
/// [`issue`](TestCa::issue) server certificates for loopback names.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A server certificate issued by a [`TestCa`], with its private key, in
/// PEM (for nginx's `ssl_certificate`) and DER (for rustls).
pub struct Issued {
    /// The leaf certificate followed by the CA's, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf certificate followed by the CA's, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, DER.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Issued {
    fn clone(&self) -> Self {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

// ANCHOR: test_ca
impl TestCa {
    /// A new CA whose certificate's common name is `name`; fresh keys (ECDSA
    /// P-256) every time.
    ///
    /// # Panics
    ///
    /// Only if rcgen cannot make a key or sign, which fixed parameters like
    /// these never cause.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("rcgen makes a key pair");
        let cert = params.self_signed(&key).expect("rcgen signs a CA");
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate in PEM, to write to a file for `--ca-file` or curl.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// A root store that trusts this CA only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("rcgen's CA certificate parses");
        roots
    }

    /// A server certificate for `names`: each one that parses as an IP
    /// address becomes an IP subject-alternative name ("127.0.0.1"), the
    /// others DNS names ("localhost", "h0.test").
    ///
    /// # Panics
    ///
    /// If `names` is empty or a name is neither an IP nor a valid DNS name:
    /// names come from the test that calls this, not from input.
    pub fn issue(&self, names: &[&str]) -> Issued {
        assert!(!names.is_empty(), "a certificate needs at least one name");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params =
            CertificateParams::new(sans).unwrap_or_else(|e| panic!("names {names:?}: {e}"));
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("rcgen makes a key pair");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("rcgen signs a leaf");
        Issued {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}
// ANCHOR_END: test_ca

// ANCHOR: configs
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts `roots` and offers HTTP/1.1 by ALPN.
pub fn client_config(roots: RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client configuration for the public web: Mozilla's root set, as
/// shipped in the `webpki-roots` crate (no system store is read).
pub fn web_client_config() -> Arc<rustls::ClientConfig> {
    let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    client_config(roots)
}

/// A server configuration presenting `issued`'s chain, HTTP/1.1 by ALPN.
pub fn server_config(issued: &Issued) -> io::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(issued.chain.clone(), issued.key.clone_key())
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
// ANCHOR_END: configs

/// A rustls error as an `io::Error` whose message says what failed.
fn tls_error(e: rustls::Error) -> io::Error {
    let why = match &e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown issuer: the certificate is not signed by a trusted CA".to_owned()
        }
        // rustls says "certificate not valid for name ...; certificate is
        // only valid for ...", which is already clear.
        rustls::Error::InvalidCertificate(cert) => cert.to_string(),
        other => other.to_string(),
    };
    io::Error::new(ErrorKind::InvalidData, why)
}

/// Drive `conn` over `sock` until the handshake is over; a rustls failure
/// comes back with [`tls_error`]'s reason, `prefix`ed.
fn handshake<C, S>(conn: &mut C, sock: &mut may::net::TcpStream, prefix: &str) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(sock) {
            let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => tls_error(tls.clone()),
                None => e,
            };
            return Err(io::Error::new(why.kind(), format!("{prefix}: {why}")));
        }
    }
    Ok(())
}

// ANCHOR: connect
/// Connect TLS over `tcp`, verifying the server's certificate for
/// `server_name` (a DNS name or an IP address), and run the handshake to
/// completion. A failure is an `io::Error` naming it ("certificate not
/// valid for name ...", "unknown issuer").
pub fn connect(
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
    mut tcp: may::net::TcpStream,
) -> io::Result<ClientStream> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("bad TLS server name {server_name:?}: {e}"),
        )
    })?;
    let mut conn = ClientConnection::new(config.clone(), name).map_err(tls_error)?;
    let prefix = format!("TLS handshake with {server_name}");
    handshake(&mut conn, &mut tcp, &prefix)?;
    Ok(StreamOwned::new(conn, tcp))
}

/// Accept TLS over `tcp` and run the handshake to completion.
pub fn accept(
    config: &Arc<rustls::ServerConfig>,
    mut tcp: may::net::TcpStream,
) -> io::Result<ServerStream> {
    let mut conn = ServerConnection::new(config.clone()).map_err(tls_error)?;
    handshake(&mut conn, &mut tcp, "TLS handshake with a client")?;
    Ok(StreamOwned::new(conn, tcp))
}
// ANCHOR_END: connect

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use may::go;
    use std::io::{Read, Write};

    /// Stack, in words, for the coroutines below, which run a handshake
    /// and an echo. may's odd-stack report (set this to `0x4001`, run
    /// `cargo test [--release] --lib tls::tests::a_loopback -- --nocapture`)
    /// gave 7279 words used in a debug build and 2385 in a release build
    /// (client side, the deeper one; rustc 1.95, x86_64, 2026-12-02):
    /// 0x4000 holds the debug figure twice.
    const HANDSHAKE_STACK: usize = 0x4000;

    /// Serve one TLS connection on loopback: read a line, echo it back.
    /// Returns the port and a handle with the server side's outcome.
    fn echo_once(issued: &Issued) -> (u16, may::coroutine::JoinHandle<io::Result<()>>) {
        let config = server_config(issued).unwrap();
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let builder = may::coroutine::Builder::new().stack_size(HANDSHAKE_STACK);
        let server = go!(builder, move || -> io::Result<()> {
            let (tcp, _) = listener.accept()?;
            let mut tls = accept(&config, tcp)?;
            let mut line = [0; 5];
            tls.read_exact(&mut line)?;
            tls.write_all(&line)?;
            tls.conn.send_close_notify();
            tls.flush()
        })
        .unwrap();
        (port, server)
    }

    /// Connect to `port` as `name` with `config` and exchange "hello".
    fn hello(
        config: Arc<rustls::ClientConfig>,
        name: &'static str,
        port: u16,
    ) -> io::Result<String> {
        let builder = may::coroutine::Builder::new().stack_size(HANDSHAKE_STACK);
        go!(builder, move || -> io::Result<String> {
            let tcp = crate::net::connect(("127.0.0.1", port))?;
            let mut tls = connect(&config, name, tcp)?;
            assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
            tls.write_all(b"hello")?;
            let mut answer = String::new();
            tls.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .unwrap()
        .join()
        .unwrap()
    }

    #[test]
    fn a_loopback_handshake_verifies_the_test_cas_certificate() {
        configure_for_tests();
        let ca = TestCa::new("may-patterns test CA");
        let issued = ca.issue(&["localhost", "127.0.0.1"]);
        for name in ["localhost", "127.0.0.1"] {
            let (port, server) = echo_once(&issued);
            let answer = hello(client_config(ca.roots()), name, port).unwrap();
            assert_eq!(answer, "hello", "as {name}");
            server.join().unwrap().unwrap();
        }
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        assert_eq!(issued.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn a_wrong_name_or_an_unknown_ca_fails_with_the_reason() {
        configure_for_tests();
        let ca = TestCa::new("may-patterns test CA");
        let issued = ca.issue(&["localhost"]);
        let (port, server) = echo_once(&issued);
        let e = hello(client_config(ca.roots()), "h0.test", port).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        let why = e.to_string();
        assert!(why.contains("TLS handshake with h0.test"), "{why}");
        assert!(
            why.contains("certificate not valid for name \"h0.test\""),
            "{why}"
        );
        assert!(server.join().unwrap().is_err(), "the server saw the alert");

        let (port, server) = echo_once(&issued);
        let stranger = TestCa::new("another CA");
        let e = hello(client_config(stranger.roots()), "localhost", port).unwrap_err();
        assert!(e.to_string().contains("unknown issuer"), "{e}");
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn a_bad_server_name_is_refused_before_any_io() {
        configure_for_tests();
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = crate::net::connect(listener.local_addr().unwrap()).unwrap();
        let config = client_config(RootCertStore::empty());
        let e = connect(&config, "not a name", tcp).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("bad TLS server name"), "{e}");
    }

    #[test]
    fn the_web_configuration_offers_http_1_1() {
        let config = web_client_config();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
