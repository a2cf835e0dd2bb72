//! The URL rules several sections share: https, or http only where traffic cannot leave the
//! machine, and never credentials in a URL.

use url::Url;

/// Is the URL's host loopback (127.0.0.0/8, ::1, localhost)? The one check behind every
/// "http only on loopback" rule (GitHub API URL, OIDC issuer and JWKS URLs, policy issuers): plain
/// http is tolerated only where the traffic cannot leave the machine. `localhost` is matched
/// exactly, never as a prefix, so `localhost.evil.com` is not loopback.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The rule for every URL the broker fetches from an OIDC issuer (issuer, discovered or
/// configured JWKS URL): `https://`, or `http://` on a loopback host when `allow_http` is set
/// (tests and dev mode). Credentials in the URL are refused: they would end up in logs.
pub fn check_fetch_url(url: &Url, allow_http: bool) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http && is_loopback_url(url) => {}
        "http" if allow_http => return Err("http is allowed only on a loopback host".into()),
        "http" => return Err("must be https (http needs allow_http and a loopback host)".into()),
        other => return Err(format!("unsupported scheme `{other}`")),
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    Ok(())
}

/// An OTLP/HTTP endpoint: an absolute http(s) URL with a host, without credentials (a secret in
/// it would reach logs; collectors take them as `OTEL_EXPORTER_OTLP_HEADERS`).
pub fn check_otlp_endpoint(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an http(s) URL with a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use OTEL_EXPORTER_OTLP_HEADERS".to_owned());
    }
    Ok(url)
}

/// [`check_fetch_url`] on a configured string.
pub(super) fn check_raw_fetch_url(raw: &str, allow_http: bool) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|_| "not a URL".to_owned())?;
    check_fetch_url(&url, allow_http)
}
