//! JWKS fetching and caching per issuer.
//!
//! Only issuers from the configuration have an entry here, so a token can never make the broker
//! fetch a URL of its choosing (the SSRF class of Octo-STS/sts-cat advisories).
//!
//! Fetches never run under a lock. Each issuer's state sits behind a plain mutex held only to
//! read or update it, and a fetch runs in a task of its own, at most one per issuer at a time:
//! - a caller whose `kid` is in the cache gets the key at once, even when the keys are stale; it
//!   starts the refetch in the background (or finds it started) and does not wait for it, so a
//!   slow issuer delays no verification that the cached keys can serve;
//! - a caller without a usable key (nothing cached yet, or an unknown `kid` past the cooldown)
//!   waits for the fetch in flight, or starts the one fetch everybody else then waits for;
//! - the fetch runs to its end even when every caller waiting for it has gone, so a verification
//!   cancelled mid-fetch neither loses the keys nor leaves the others hanging.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt as _;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tracing::Instrument as _;
use url::Url;

use super::{IssuerSettings, VerifyError};

/// How long fetched keys are used before they are fetched again. Issuers rotate keys with
/// overlap (GitHub publishes the previous key alongside the current one), and an unknown `kid`
/// triggers an early refetch anyway, so an hour only bounds how long a withdrawn key lingers.
pub const JWKS_CACHE_TTL: Duration = Duration::from_secs(60 * 60);

/// Least time between two refetches caused by an unknown `kid`, per issuer. Anyone can send a
/// token with a made-up `kid`; without this every such token would cost a fetch from the issuer.
/// A real rotation publishes the new key before signing with it, so one refetch a minute finds it.
pub const JWKS_REFRESH_COOLDOWN: Duration = Duration::from_secs(60);

/// Least time before retrying after a failed fetch, per issuer. While the issuer is down,
/// verifications that need a fetch fail fast instead of each waiting for a fetch of its own to
/// time out, and those that stale keys can serve are served from them.
pub const JWKS_FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Cap on every fetched body (discovery document and JWKS). Real documents are a few KiB; the cap
/// keeps a hostile or broken endpoint from making the broker buffer unbounded data.
pub const MAX_FETCH_BYTES: usize = 100 * 1024;

/// Smallest RSA modulus accepted, in bits. GitHub signs with 2048-bit keys; anything shorter is
/// factorable with modest resources and is refused rather than trusted.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Path of the OIDC discovery document, relative to the issuer (OpenID Connect Discovery 1.0 §4).
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Cached JWKS of the configured issuers.
pub struct JwksCache {
    client: reqwest::Client,
    issuers: HashMap<String, Arc<IssuerEntry>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut issuers: Vec<&String> = self.issuers.keys().collect();
        issuers.sort();
        f.debug_struct("JwksCache")
            .field("issuers", &issuers)
            .finish_non_exhaustive()
    }
}

/// Where one issuer's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    /// A configured `jwks_url`.
    Jwks(Url),
    /// OIDC discovery; the document's `jwks_uri` must be on the issuer's origin.
    Discovery {
        document: Url,
        issuer_origin: url::Origin,
    },
}

struct IssuerEntry {
    issuer: String,
    source: KeySource,
    allow_http: bool,
    /// Never held across an await.
    state: Mutex<IssuerKeys>,
}

impl IssuerEntry {
    fn state(&self) -> MutexGuard<'_, IssuerKeys> {
        // Every update below leaves the state whole, so a panic elsewhere cannot poison it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The outcome of one fetch, awaited by every caller that needs it; `Err` holds the reason.
type Fetch = Shared<BoxFuture<'static, Result<(), String>>>;

#[derive(Default)]
struct IssuerKeys {
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
    last_refresh: Option<Instant>,
    failed_at: Option<Instant>,
    /// The fetch in flight; its task clears this when it ends.
    in_flight: Option<Fetch>,
}

/// What a caller does after one look at the state.
enum Plan {
    /// Verify with this key now.
    Key(Jwk),
    /// Wait for this fetch, then look again.
    Wait(Fetch),
    /// Refuse without a fetch.
    Refuse(VerifyError),
}

/// One published key, as far as selection needs it. Fields of the wrong JSON type make the key
/// unusable rather than the whole set: issuers publish keys we do not understand.
#[derive(Debug, Clone, Default, Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl JwksCache {
    /// One entry per issuer; the settings must already have passed [`crate::config::check_fetch_url`].
    pub(crate) fn new(client: reqwest::Client, issuers: &[IssuerSettings]) -> Result<Self, String> {
        let mut entries = HashMap::new();
        for settings in issuers {
            let source = match &settings.jwks_url {
                Some(url) => KeySource::Jwks(url.clone()),
                None => {
                    let issuer_url = Url::parse(&settings.issuer)
                        .map_err(|e| format!("issuer `{}`: invalid url: {e}", settings.issuer))?;
                    let document =
                        format!("{}{DISCOVERY_PATH}", settings.issuer.trim_end_matches('/'));
                    let document = Url::parse(&document).map_err(|e| {
                        format!("issuer `{}`: invalid discovery url: {e}", settings.issuer)
                    })?;
                    KeySource::Discovery {
                        document,
                        issuer_origin: issuer_url.origin(),
                    }
                }
            };
            let entry = IssuerEntry {
                issuer: settings.issuer.clone(),
                source,
                allow_http: settings.allow_http,
                state: Mutex::new(IssuerKeys::default()),
            };
            if entries
                .insert(settings.issuer.clone(), Arc::new(entry))
                .is_some()
            {
                return Err(format!("issuer `{}` is configured twice", settings.issuer));
            }
        }
        Ok(Self {
            client,
            issuers: entries,
        })
    }

    /// The verification key for `kid` (or the only RSA key when `kid` is `None`).
    ///
    /// A cached key is returned at once; stale keys are refetched in the background meanwhile.
    /// Without a cached key this waits for a fetch: when the cache is empty or stale, or on an
    /// unknown `kid` unless the issuer was refetched within [`JWKS_REFRESH_COOLDOWN`].
    pub(crate) async fn decoding_key(
        &self,
        issuer: &str,
        kid: Option<&str>,
    ) -> Result<DecodingKey, VerifyError> {
        let Some(entry) = self.issuers.get(issuer) else {
            return Err(VerifyError::UnknownIssuer);
        };
        let fetch = match self.plan(entry, kid) {
            Plan::Key(jwk) => return to_decoding_key(&jwk),
            Plan::Refuse(err) => return Err(err),
            Plan::Wait(fetch) => fetch,
        };
        let outcome = fetch.await;
        let found = select(&entry.state().keys, kid).cloned();
        match (found, outcome) {
            (Some(jwk), _) => to_decoding_key(&jwk),
            (None, Err(reason)) => Err(VerifyError::JwksUnavailable(reason)),
            // Just fetched: a refetch could not know more.
            (None, Ok(())) => Err(VerifyError::UnknownKey),
        }
    }

    /// One look at `entry`'s state, under its lock: the key, the fetch to wait for, or a refusal.
    fn plan(&self, entry: &Arc<IssuerEntry>, kid: Option<&str>) -> Plan {
        let issuer = entry.issuer.as_str();
        let mut state = entry.state();
        let stale = state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= JWKS_CACHE_TTL);

        if let Some(jwk) = select(&state.keys, kid) {
            let jwk = jwk.clone();
            if stale {
                // Stale keys are better than waiting: they were valid an hour ago and the previous
                // key stays published through rotations anyway. Refresh for the next caller; a
                // refusal (failure backoff) just means the stale keys serve a little longer.
                let _refresh = self.start_fetch(entry, &mut state);
            }
            return Plan::Key(jwk);
        }
        if let Some(fetch) = &state.in_flight {
            return Plan::Wait(fetch.clone());
        }
        if !stale {
            let cooling_down = state
                .last_refresh
                .is_some_and(|at| at.elapsed() < JWKS_REFRESH_COOLDOWN);
            if cooling_down {
                tracing::debug!(
                    oidc.issuer = issuer,
                    "unknown kid for {issuer}, refresh cooling down"
                );
                return Plan::Refuse(VerifyError::UnknownKey);
            }
            state.last_refresh = Some(Instant::now());
            tracing::info!(
                oidc.issuer = issuer,
                "unknown kid for {issuer}, refetching its keys"
            );
        }
        match self.start_fetch(entry, &mut state) {
            Some(fetch) => Plan::Wait(fetch),
            None => Plan::Refuse(VerifyError::JwksUnavailable(
                "previous fetch failed moments ago".into(),
            )),
        }
    }

    /// The fetch of `entry`'s keys in flight, or a new one; `None` within
    /// [`JWKS_FAILURE_BACKOFF`] of a failed fetch. `state` is `entry`'s, locked by the caller, so
    /// that two callers cannot both start one.
    fn start_fetch(&self, entry: &Arc<IssuerEntry>, state: &mut IssuerKeys) -> Option<Fetch> {
        if let Some(fetch) = &state.in_flight {
            return Some(fetch.clone());
        }
        if state
            .failed_at
            .is_some_and(|at| at.elapsed() < JWKS_FAILURE_BACKOFF)
        {
            return None;
        }
        let client = self.client.clone();
        let entry = Arc::clone(entry);
        // Its own task, so that it outlives any caller and nobody's cancellation stops it. It
        // cannot clear `in_flight` before this caller has set it: that needs the lock we hold.
        let task = tokio::spawn(
            async move {
                // A panic must still clear `in_flight`, or the issuer would never be fetched again.
                let fetched = AssertUnwindSafe(fetch_keys(&client, &entry))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err("the fetch panicked".into()));
                store(&entry, fetched)
            }
            .in_current_span(),
        );
        let fetch = task
            .map(|joined| joined.unwrap_or_else(|error| Err(format!("fetch task ended: {error}"))))
            .boxed()
            .shared();
        state.in_flight = Some(fetch.clone());
        Some(fetch)
    }

    /// Test knob: make `issuer`'s cached keys stale, as if fetched longer than the TTL ago.
    #[cfg(test)]
    pub(super) fn expire(&self, issuer: &str) {
        if let Some(entry) = self.issuers.get(issuer) {
            entry.state().fetched_at = None;
        }
    }

    /// Test knob: whether a fetch of `issuer`'s keys is in flight.
    #[cfg(test)]
    pub(super) fn fetching(&self, issuer: &str) -> bool {
        self.issuers
            .get(issuer)
            .is_some_and(|entry| entry.state().in_flight.is_some())
    }
}

/// Record a fetch's outcome in `entry` and end its flight.
fn store(entry: &IssuerEntry, fetched: Result<Vec<Jwk>, String>) -> Result<(), String> {
    let issuer = entry.issuer.as_str();
    let mut state = entry.state();
    state.in_flight = None;
    match fetched {
        Ok(keys) => {
            tracing::debug!(
                oidc.issuer = issuer,
                oidc.key_count = keys.len(),
                "fetched keys of {issuer}"
            );
            state.keys = keys;
            state.fetched_at = Some(Instant::now());
            state.failed_at = None;
            Ok(())
        }
        Err(reason) => {
            tracing::warn!(
                oidc.issuer = issuer,
                error = %reason,
                "could not fetch keys of {issuer}: {reason}"
            );
            state.failed_at = Some(Instant::now());
            Err(reason)
        }
    }
}

async fn fetch_keys(client: &reqwest::Client, entry: &IssuerEntry) -> Result<Vec<Jwk>, String> {
    let jwks_url = match &entry.source {
        KeySource::Jwks(url) => url.clone(),
        KeySource::Discovery {
            document,
            issuer_origin,
        } => {
            let body = fetch(client, document).await?;
            let doc: DiscoveryDocument = serde_json::from_slice(&body)
                .map_err(|e| format!("invalid discovery document: {e}"))?;
            // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was
            // fetched for, or its keys are somebody else's.
            if doc.issuer.trim_end_matches('/') != entry.issuer.trim_end_matches('/') {
                return Err("discovery document names another issuer".into());
            }
            let jwks_uri = Url::parse(&doc.jwks_uri)
                .map_err(|e| format!("invalid jwks_uri in discovery document: {e}"))?;
            crate::config::check_fetch_url(&jwks_uri, entry.allow_http)
                .map_err(|e| format!("jwks_uri refused: {e}"))?;
            if jwks_uri.origin() != *issuer_origin {
                return Err("jwks_uri refused: not on the issuer's host".into());
            }
            jwks_uri
        }
    };
    let body = fetch(client, &jwks_url).await?;
    parse_jwks(&body)
}

/// [`fetch_body`] in a CLIENT span (a discovery document or a JWKS: the URL is configured or
/// the issuer's own, never the caller's).
async fn fetch(client: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    use tracing::Instrument as _;
    let host = url.host_str().unwrap_or_default();
    let span = crate::telemetry::client_span("GET", url.path(), host);
    let fetched = fetch_body(client, url).instrument(span.clone()).await;
    if fetched.is_err() {
        crate::telemetry::record_client_error(&span, "fetch_failed");
    }
    fetched
}

/// GET `url` with the body capped at [`MAX_FETCH_BYTES`], read as a stream so an oversized
/// body is cut off rather than buffered.
async fn fetch_body(client: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading {url} failed: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_FETCH_BYTES {
            return Err(format!("{url} body exceeds {MAX_FETCH_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("invalid jwks: {e}"))?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .collect())
}

/// The key for `kid`; without a `kid`, the issuer's only RSA key, if it has exactly one.
fn select<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut rsa = keys.iter().filter(|k| k.kty.as_deref() == Some("RSA"));
            match (rsa.next(), rsa.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
}

/// The key must be an RSA signing key usable with RS256: a key published for another algorithm
/// or for encryption is never used to verify, whatever the token's header says.
fn to_decoding_key(jwk: &Jwk) -> Result<DecodingKey, VerifyError> {
    let fits = jwk.kty.as_deref() == Some("RSA")
        && jwk.alg.as_deref().is_none_or(|alg| alg == "RS256")
        && jwk.usage.as_deref().is_none_or(|usage| usage == "sig");
    let (true, Some(n), Some(e)) = (fits, jwk.n.as_deref(), jwk.e.as_deref()) else {
        return Err(VerifyError::KeyTypeMismatch);
    };
    let modulus = URL_SAFE_NO_PAD
        .decode(n)
        .map_err(|_| VerifyError::KeyTypeMismatch)?;
    let leading_zeros = modulus.iter().take_while(|b| **b == 0).count();
    if (modulus.len() - leading_zeros) * 8 < MIN_RSA_MODULUS_BITS {
        return Err(VerifyError::KeyTypeMismatch);
    }
    DecodingKey::from_rsa_components(n, e).map_err(|_| VerifyError::KeyTypeMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk() -> Jwk {
        let key = sts_sim::keys::RsaKeyPair::generate();
        serde_json::from_value(key.public_jwk()).unwrap()
    }

    #[test]
    fn only_rsa_signing_keys_for_rs256_become_decoding_keys() {
        let good = rsa_jwk();
        assert!(to_decoding_key(&good).is_ok());
        let bad: Vec<(&str, Jwk)> = vec![
            (
                "ec key",
                Jwk {
                    kty: Some("EC".into()),
                    ..good.clone()
                },
            ),
            (
                "no kty",
                Jwk {
                    kty: None,
                    ..good.clone()
                },
            ),
            (
                "hs256 alg",
                Jwk {
                    alg: Some("HS256".into()),
                    ..good.clone()
                },
            ),
            (
                "rs512 alg",
                Jwk {
                    alg: Some("RS512".into()),
                    ..good.clone()
                },
            ),
            (
                "encryption key",
                Jwk {
                    usage: Some("enc".into()),
                    ..good.clone()
                },
            ),
            (
                "no modulus",
                Jwk {
                    n: None,
                    ..good.clone()
                },
            ),
            (
                "short modulus",
                Jwk {
                    n: Some(URL_SAFE_NO_PAD.encode([0xff_u8; 128])),
                    ..good
                },
            ),
        ];
        for (name, jwk) in bad {
            assert!(
                matches!(to_decoding_key(&jwk), Err(VerifyError::KeyTypeMismatch)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_token_without_kid_uses_the_only_rsa_key_and_nothing_else() {
        let rsa = Jwk {
            kid: Some("a".into()),
            ..rsa_jwk()
        };
        let ec = Jwk {
            kty: Some("EC".into()),
            kid: Some("b".into()),
            ..Jwk::default()
        };
        let one = [rsa.clone(), ec];
        assert_eq!(select(&one, None).and_then(|k| k.kid.as_deref()), Some("a"));
        let two = [
            rsa.clone(),
            Jwk {
                kid: Some("c".into()),
                ..rsa
            },
        ];
        assert!(select(&two, None).is_none());
        assert!(select(&[], None).is_none());
        assert_eq!(
            select(&two, Some("c")).and_then(|k| k.kid.as_deref()),
            Some("c")
        );
        assert!(select(&two, Some("z")).is_none());
    }

    #[test]
    fn jwks_parsing_skips_keys_it_cannot_read_and_refuses_non_sets() {
        let keys =
            parse_jwks(br#"{"keys":[{"kty":"RSA","kid":7},{"kty":"RSA","kid":"ok"}]}"#).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ok"));
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
