//! Where the GitHub Actions OIDC token comes from: a token given outright, else the runner's
//! token request endpoint (what `actions/core`'s `getIDToken` does).

use crate::error::ClientError;
use serde::Deserialize;
use url::Url;

/// The runner's endpoint that hands out OIDC tokens to jobs with `id-token: write`.
pub(crate) const ENV_REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// The bearer the runner gives the job for [`ENV_REQUEST_URL`].
pub(crate) const ENV_REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
/// An OIDC token already fetched by an earlier step; Atmos CLI uses it verbatim, so we do too
/// (its local test recipe sets it).
pub(crate) const ENV_ID_TOKEN: &str = "ACTIONS_ID_TOKEN";
/// Largest OIDC response read; a real one is ~1-2 KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where to get the OIDC token from.
#[derive(Clone)]
pub(crate) enum OidcSource {
    /// Given outright (`--oidc-token` / `STS_OIDC_TOKEN`). Single use at the broker.
    Static(secrecy::SecretString),
    /// The GitHub Actions runner's request endpoint; each call yields a fresh token. `preset`
    /// (`ACTIONS_ID_TOKEN`, as Atmos reads it) is handed out first, once; renewals ask the runner.
    Actions {
        request_url: Url,
        request_token: secrecy::SecretString,
        preset: std::sync::Arc<std::sync::Mutex<Option<secrecy::SecretString>>>,
    },
    /// Neither is available: say what is missing when a token is needed.
    Missing,
}

impl std::fmt::Debug for OidcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("OidcSource::Static"),
            Self::Actions { request_url, .. } => f
                .debug_struct("OidcSource::Actions")
                .field("request_url", &request_url.as_str())
                .finish_non_exhaustive(),
            Self::Missing => f.write_str("OidcSource::Missing"),
        }
    }
}

impl OidcSource {
    /// Pick the source: a given token, else `ACTIONS_ID_TOKEN`, else the runner's endpoint.
    pub(crate) fn resolve(
        given: Option<String>,
        actions_id_token: Option<String>,
        request_url: Option<String>,
        request_token: Option<String>,
    ) -> Result<Self, ClientError> {
        if let Some(token) = given.filter(|t| !t.trim().is_empty()) {
            return Ok(Self::Static(token.trim().to_owned().into()));
        }
        let preset = actions_id_token
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_owned());
        let request_url = request_url.filter(|v| !v.is_empty());
        let request_token = request_token.filter(|v| !v.is_empty());
        if let Some(token) = preset {
            return Ok(
                match (request_url.as_deref().map(check_request_url), request_token) {
                    (Some(Ok(request_url)), Some(request_token)) => Self::Actions {
                        request_url,
                        request_token: request_token.into(),
                        preset: std::sync::Arc::new(std::sync::Mutex::new(Some(token.into()))),
                    },
                    // Without a usable runner endpoint the preset token is all there is.
                    _ => Self::Static(token.into()),
                },
            );
        }
        match (request_url, request_token) {
            (None, None) => Ok(Self::Missing),
            (Some(_), None) | (None, Some(_)) => Err(ClientError::Oidc(format!(
                "{ENV_REQUEST_URL} and {ENV_REQUEST_TOKEN} must both be set; \
                 does the job have `permissions: id-token: write`?"
            ))),
            (Some(url), Some(token)) => {
                let request_url = check_request_url(&url)?;
                Ok(Self::Actions {
                    request_url,
                    request_token: token.into(),
                    preset: std::sync::Arc::default(),
                })
            }
        }
    }

    /// Can a second token be had (to re-authenticate after a session expired)?
    pub(crate) fn is_renewable(&self) -> bool {
        matches!(self, Self::Actions { .. })
    }

    /// Get an OIDC token for `audience`. A static token is handed out as is (its audience is the
    /// broker's business).
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        audience: &str,
    ) -> Result<secrecy::SecretString, ClientError> {
        use secrecy::ExposeSecret as _;
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::Missing => Err(ClientError::Oidc(format!(
                "no OIDC token: pass --oidc-token (or STS_OIDC_TOKEN), or run in a GitHub Actions \
                 job with `permissions: id-token: write` (which sets {ENV_REQUEST_URL} and \
                 {ENV_REQUEST_TOKEN})"
            ))),
            Self::Actions {
                request_url,
                request_token,
                preset,
            } => {
                let preset = preset
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(token) = preset {
                    return Ok(token);
                }
                let mut url = request_url.clone();
                url.query_pairs_mut().append_pair("audience", audience);
                let response = http
                    .get(url)
                    .bearer_auth(request_token.expose_secret())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| {
                        ClientError::Oidc(format!(
                            "could not reach the GitHub Actions OIDC endpoint: {}",
                            crate::error::describe_reqwest(&e)
                        ))
                    })?;
                let status = response.status();
                let body = crate::broker::read_capped(response, MAX_RESPONSE_BYTES)
                    .await
                    .map_err(|e| ClientError::Oidc(format!("reading the OIDC response: {e}")))?;
                if !status.is_success() {
                    return Err(ClientError::Oidc(format!(
                        "the GitHub Actions OIDC endpoint answered {status}; does the job have \
                         `permissions: id-token: write`?"
                    )));
                }
                #[derive(Deserialize)]
                struct Reply {
                    #[serde(default)]
                    value: String,
                }
                let reply: Reply = serde_json::from_slice(&body).map_err(|_| {
                    ClientError::Oidc(
                        "the GitHub Actions OIDC endpoint did not answer with {\"value\": ...}"
                            .to_owned(),
                    )
                })?;
                if reply.value.is_empty() {
                    return Err(ClientError::Oidc(
                        "the GitHub Actions OIDC endpoint returned an empty token".to_owned(),
                    ));
                }
                Ok(reply.value.into())
            }
        }
    }
}

/// The request URL must be https with a host: the request token is a credential, and this guard
/// keeps a tampered variable from sending it in clear or to a local file.
fn check_request_url(raw: &str) -> Result<Url, ClientError> {
    let url = Url::parse(raw)
        .map_err(|_| ClientError::Oidc(format!("{ENV_REQUEST_URL} is not a valid URL")))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::Oidc(format!(
            "{ENV_REQUEST_URL} must be an https URL with a host"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn a_given_token_wins_over_the_runner() {
        let source = OidcSource::resolve(s("jwt"), None, s("https://x/y"), s("t")).unwrap();
        assert!(matches!(source, OidcSource::Static(_)));
        assert!(!source.is_renewable());
        // Atmos's shortcut: a token already in ACTIONS_ID_TOKEN is used first; with the runner's
        // endpoint at hand, renewals ask it.
        let source = OidcSource::resolve(None, s("jwt"), s("https://x/y"), s("t")).unwrap();
        assert!(matches!(source, OidcSource::Actions { .. }));
        assert!(source.is_renewable());
        let source = OidcSource::resolve(None, s("jwt"), None, None).unwrap();
        assert!(matches!(source, OidcSource::Static(_)));
    }

    #[test]
    fn request_url_rules() {
        let cases: &[(&str, bool)] = &[
            (
                "https://pipelines.actions.githubusercontent.com/abc/idtoken?api-version=2.0",
                true,
            ),
            ("http://pipelines.actions.githubusercontent.com/abc", false),
            ("file:///etc/passwd", false),
            ("https://", false),
            ("not a url", false),
        ];
        for (url, ok) in cases {
            let result = OidcSource::resolve(None, None, s(url), s("t"));
            assert_eq!(result.is_ok(), *ok, "{url}");
        }
    }

    #[test]
    fn half_an_actions_environment_is_an_error_naming_the_permission() {
        let err = OidcSource::resolve(None, None, s("https://x/y"), None).unwrap_err();
        assert!(err.to_string().contains("id-token: write"), "{err}");
        let err = OidcSource::resolve(None, None, None, s("t")).unwrap_err();
        assert!(err.to_string().contains("id-token: write"), "{err}");
    }

    #[test]
    fn nothing_at_all_is_missing_not_an_error_until_needed() {
        let source = OidcSource::resolve(s("  "), s(""), s(""), None).unwrap();
        assert!(matches!(source, OidcSource::Missing));
    }

    #[test]
    fn audience_is_added_to_the_existing_query() {
        let mut url = check_request_url("https://h/p?api-version=2.0").unwrap();
        url.query_pairs_mut()
            .append_pair("audience", "atmos-pro.com");
        assert_eq!(
            url.as_str(),
            "https://h/p?api-version=2.0&audience=atmos-pro.com"
        );
    }
}
