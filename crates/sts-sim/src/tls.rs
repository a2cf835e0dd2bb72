//! TLS for the simulators on loopback: a throwaway CA and one server certificate for
//! `127.0.0.1`, `localhost` and `::1`, and [`serve_tls`], which serves any axum [`Router`] over
//! TLS.
//!
//! NOT FOR PRODUCTION: the CA exists so that clients that only speak https (git following Atmos
//! `insteadOf` rewrites, the GitHub Actions OIDC request URL) can reach the simulators. Trust it
//! only per process: git via `GIT_SSL_CAINFO=<ca.pem>`, Rust clients via
//! [`TestCa::root_certificate`]. The CA's private key is dropped as soon as the server
//! certificate is signed, so a trusted `ca.pem` can vouch for nothing else.

use crate::serving::{bind_loopback, Serving};
use axum::Router;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Names the server certificate is valid for: every spelling of loopback a test or a user may
/// put in a URL (or in the broker's `github.host`).
pub const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];
/// How far back certificates are valid from: tolerates a client clock slightly behind ours.
pub const CERT_BACKDATE: Duration = Duration::hours(1);
/// How long certificates stay valid: long enough for a `serve --dev` left running for weeks,
/// short enough that a forgotten trusted `ca.pem` soon vouches for nothing.
pub const CERT_LIFETIME: Duration = Duration::days(30);
/// Longest a TLS handshake may take: a client that connects and never speaks must not hold a
/// task (and a connection slot) forever.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Handshaken connections waiting for the server to pick them up.
const ACCEPT_QUEUE: usize = 64;

/// A throwaway CA and the loopback server certificate it signed.
pub struct TestCa {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

debug_showing!(TestCa {});

impl Clone for TestCa {
    fn clone(&self) -> Self {
        Self {
            ca_pem: self.ca_pem.clone(),
            server_cert: self.server_cert.clone(),
            server_key: self.server_key.clone_key(),
        }
    }
}

impl TestCa {
    /// A new CA (ECDSA P-256) and a server certificate for [`LOOPBACK_NAMES`].
    pub fn generate() -> Self {
        #[expect(
            clippy::expect_used,
            reason = "generating and signing with fixed, valid parameters and a working OS rng cannot fail"
        )]
        let generated = Self::try_generate().expect("loopback certificate generation");
        generated
    }

    fn try_generate() -> Result<Self, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let not_before = now - CERT_BACKDATE;
        let not_after = now + CERT_LIFETIME;

        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "sts-broker simulator throwaway CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = LOOPBACK_NAMES.iter().map(|&name| name.to_owned()).collect();
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "sts-broker simulator");
        server.use_authority_key_identifier_extension = true;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.not_before = not_before;
        server.not_after = not_after;
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &issuer)?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// The CA certificate, PEM: what clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Write the CA certificate (PEM) to `path`, e.g. for `GIT_SSL_CAINFO`.
    pub fn write_ca(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// The CA as a root certificate for reqwest clients.
    pub fn root_certificate(&self) -> reqwest::Certificate {
        #[expect(
            clippy::expect_used,
            reason = "the PEM was produced by rcgen a moment ago"
        )]
        let certificate =
            reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("ca certificate pem");
        certificate
    }

    /// A rustls server configuration presenting the loopback certificate, HTTP/1.1 only (git's
    /// smart HTTP and axum's default build speak it).
    pub fn server_config(&self) -> std::io::Result<Arc<ServerConfig>> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder.with_no_client_auth().with_single_cert(
                    vec![self.server_cert.clone()],
                    PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
                )
            })
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS server on loopback. Dropping it stops the server.
pub struct RunningTls {
    /// Bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`, as a host of URLs (and the broker's `github.host`).
    pub host: String,
    _server: Serving,
}

debug_showing!(RunningTls { url });

/// Serve `router` over TLS with `ca`'s server certificate on a new `127.0.0.1:0` listener.
pub async fn serve_tls(router: Router, ca: &TestCa) -> std::io::Result<RunningTls> {
    serve_tls_on(bind_loopback().await?, router, ca)
}

/// Serve `router` over TLS with `ca`'s server certificate on `listener`, until the returned
/// handle is dropped. A failed or stalled handshake costs only its own connection.
pub fn serve_tls_on(
    listener: TcpListener,
    router: Router,
    ca: &TestCa,
) -> std::io::Result<RunningTls> {
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(ca.server_config()?);
    let (connections, incoming) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(accept_loop(listener, acceptor, connections));
    let tls_listener = TlsListener { addr, incoming };
    Ok(RunningTls {
        addr,
        url: format!("https://{addr}"),
        host: addr.to_string(),
        _server: Serving::spawn(tls_listener, router, "tls server"),
    })
}

/// Accept TCP connections and handshake each in its own task, so that one slow or hostile
/// client cannot stall the others; stops when the server drops its end of the queue.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            () = connections.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "tls server could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // The server is gone when this fails; the connection just closes.
                    let _ = connections.send((tls, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(error = %error, peer = %peer, "tls handshake failed");
                }
                Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
            }
        });
    }
}

/// Handshaken connections, as an [`axum::serve::Listener`].
struct TlsListener {
    addr: SocketAddr,
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept loop only ends once this listener is dropped, so this never resolves
            // while the server runs; park instead of busy-looping if it somehow does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client_trusting as trusting, stops_on_drop};
    use axum::routing::get;
    use tokio::io::AsyncWriteExt as _;

    fn hello() -> Router {
        Router::new().route("/hello", get(|| async { "hello over tls" }))
    }

    #[tokio::test]
    async fn serves_https_that_clients_trusting_the_ca_accept_on_every_loopback_name() {
        let ca = TestCa::generate();
        let running = serve_tls(hello(), &ca).await.unwrap();
        assert_eq!(running.url, format!("https://{}", running.host));
        let port = running.addr.port();
        let client = trusting(&ca);
        for host in ["127.0.0.1", "localhost"] {
            let response = client
                .get(format!("https://{host}:{port}/hello"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{host}");
            assert_eq!(response.text().await.unwrap(), "hello over tls");
        }
    }

    #[tokio::test]
    async fn clients_that_do_not_trust_the_ca_are_refused() {
        let ca = TestCa::generate();
        let running = serve_tls(hello(), &ca).await.unwrap();
        let default_roots = reqwest::Client::new()
            .get(format!("{}/hello", running.url))
            .send()
            .await;
        assert!(default_roots.is_err());
        let another_ca = trusting(&TestCa::generate())
            .get(format!("{}/hello", running.url))
            .send()
            .await;
        assert!(another_ca.is_err());
    }

    #[tokio::test]
    async fn garbage_and_plain_http_do_not_stop_the_server() {
        let ca = TestCa::generate();
        let running = serve_tls(hello(), &ca).await.unwrap();
        let mut garbage = TcpStream::connect(running.addr).await.unwrap();
        garbage
            .write_all(b"\x16\x03\x01\xff\xffnot tls")
            .await
            .unwrap();
        drop(garbage);
        let plain = reqwest::Client::new()
            .get(format!("http://{}/hello", running.host))
            .send()
            .await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());
        // A client that connects and stays silent must not block the next one.
        let _silent = TcpStream::connect(running.addr).await.unwrap();
        let response = trusting(&ca)
            .get(format!("{}/hello", running.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn writes_the_ca_as_pem() {
        let ca = TestCa::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        ca.write_ca(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, ca.ca_pem());
        assert!(written.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{ca:?}").contains("BEGIN"));
    }

    #[tokio::test]
    async fn dropping_the_running_server_stops_it() {
        let ca = TestCa::generate();
        let running = serve_tls(hello(), &ca).await.unwrap();
        let addr = running.addr;
        assert!(
            stops_on_drop(running, addr, std::time::Duration::from_secs(2)).await,
            "the tls server still accepts connections"
        );
    }
}
