//! Direct revocation at GitHub (`DELETE /installation/token`), for tokens the broker cannot
//! revoke for us (broker unreachable, session gone, or a broker without a revoke route).

use crate::error::describe_reqwest;
use crate::model::ClientToken;

/// The REST API for a token's host: api.github.com for github.com, `/api/v3` on GHES.
pub(crate) fn api_url_for(host: &str) -> String {
    if host.eq_ignore_ascii_case("github.com") {
        "https://api.github.com".to_owned()
    } else {
        format!("https://{host}/api/v3")
    }
}

/// Revoke `token` with itself as the credential. 204 is done; 401/404 mean it was already
/// invalid, which is what we wanted.
pub(crate) async fn revoke(
    http: &reqwest::Client,
    api_url: Option<&str>,
    token: &ClientToken,
) -> Result<(), String> {
    let base = api_url.map_or_else(|| api_url_for(&token.host), str::to_owned);
    let url = format!("{}/installation/token", base.trim_end_matches('/'));
    let response = http
        .delete(&url)
        .bearer_auth(&token.token)
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .send()
        .await
        .map_err(|e| describe_reqwest(&e))?;
    match response.status().as_u16() {
        204 | 401 | 404 => Ok(()),
        status => Err(format!("GitHub answered HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert_eq!(api_url_for("github.com"), "https://api.github.com");
        assert_eq!(api_url_for("GitHub.com"), "https://api.github.com");
        assert_eq!(
            api_url_for("ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
    }
}
