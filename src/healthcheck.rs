//! `sts-broker healthcheck`: asks a running broker whether it is live and ready, for container
//! `HEALTHCHECK`s. The runtime image is distroless (no shell, no curl), so the broker binary
//! itself is the probe.

use crate::config::USER_AGENT;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long one probe may take in all. Docker and Kubernetes kill a probe after their own timeout
/// (Docker's default is 30 s); a broker that takes longer than this to answer `/healthz`, which
/// touches nothing, is not healthy.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The paths probed, in order: liveness (the process serves HTTP), then readiness (it reaches its
/// database). Both must answer 2xx.
pub const PROBED_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Where to reach a broker listening on `listen` (`server.listen`) from inside its own container:
/// that address, with a wildcard address (`0.0.0.0`, `[::]`) replaced by the loopback address of the
/// same family, which is where a local probe can connect.
pub fn probe_base_url(listen: &str) -> anyhow::Result<String> {
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| anyhow::anyhow!("server.listen: `{listen}` is not an ip:port address"))?;
    anyhow::ensure!(
        listen.port() != 0,
        "server.listen has port 0 (any free port): there is no fixed port to probe"
    );
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

/// Probe every path of [`PROBED_PATHS`] under `base`; `Ok` with one line per path when all answer
/// 2xx, else the first failure (connection refused, timeout, or the status and body the broker
/// gave, which for `/readyz` names what is not ready).
pub async fn probe(base: &str) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(PROBE_TIMEOUT)
        // A probe of our own loopback port must never be sent through a proxy from the
        // environment (HTTP_PROXY in a corporate image would make every probe fail).
        .no_proxy()
        .build()?;
    let mut report = Vec::with_capacity(PROBED_PATHS.len());
    for path in PROBED_PATHS {
        let url = format!("{base}{path}");
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {}", describe(&e)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "{url}: {status} {}", body.trim());
        report.push(format!("{url}: {status}"));
    }
    Ok(report)
}

/// A reqwest error in a few words: its `Display` alone hides the cause ("error sending request").
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", PROBE_TIMEOUT.as_secs());
    }
    if error.is_connect() {
        return "cannot connect (is the broker running?)".to_owned();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback_of_its_family() {
        let cases = [
            ("0.0.0.0:8080", "http://127.0.0.1:8080"),
            ("[::]:8080", "http://[::1]:8080"),
            ("10.1.2.3:9000", "http://10.1.2.3:9000"),
        ];
        for (listen, expected) in cases {
            assert_eq!(probe_base_url(listen).unwrap(), expected);
        }
        let err = probe_base_url("127.0.0.1:0").unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
    }
}
