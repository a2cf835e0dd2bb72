//! The git credential-helper protocol (`gitcredentials(7)`, `git-credential(1)`), so git can ask
//! `sts-client git-credential get` for a token instead of (or besides) URL rewrites.
//!
//! Operations:
//! - `get`: answer with the token that reaches the requested repository, or print nothing, so git
//!   falls back to its next helper or fails. Choosing by repository needs
//!   `credential.useHttpPath=true`; without a path only a host with exactly one token is answered.
//! - `store`: a no-op. Tokens come from the broker; git has nothing to teach us.
//! - `erase`: git saw the password rejected. [`erase_matches`] finds the held tokens it names, so
//!   the caller can drop them from state and re-mint next time.
//!
//! Only `https` is served: a token sent over plain `http` is readable on the wire.

use crate::model::ClientToken;
use crate::render::{fields_are_safe, token_value_is_safe, GIT_TOKEN_USER};
use std::fmt::Write as _;
use time::OffsetDateTime;

/// The only protocol a token is handed out for; anything else would send it in clear text.
const SERVED_PROTOCOL: &str = "https";

/// The port `https` implies, so `host:443` and `host` name the same server.
const DEFAULT_HTTPS_PORT_SUFFIX: &str = ":443";

/// A helper operation, from `sts-client git-credential <operation>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Get,
    Store,
    Erase,
}

impl Operation {
    /// `None` for operations git may add later: helpers must ignore those silently.
    pub(crate) fn from_arg(arg: &str) -> Option<Self> {
        match arg {
            "get" => Some(Self::Get),
            "store" => Some(Self::Store),
            "erase" => Some(Self::Erase),
            _ => None,
        }
    }
}

/// What git sent; fields git did not send are `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct CredentialRequest {
    pub(crate) protocol: Option<String>,
    /// Host, with `:port` when the URL had one.
    pub(crate) host: Option<String>,
    /// URL path without the leading slash (sent only with `credential.useHttpPath`).
    pub(crate) path: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

// Hand-written so that the password git sends with `erase`/`store` never reaches a log line.
impl std::fmt::Debug for CredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRequest")
            .field("protocol", &self.protocol)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Read `key=value` lines up to a blank line or the end. Values may hold `=`; a trailing `\r` is
/// dropped as git's own reader does; unknown keys (`capability[]`, `wwwauth[]`, …) are ignored;
/// `url=` is split into its parts and replaces them, as in git. A NUL byte or a line without `=`
/// is an error.
pub(crate) fn parse_request(input: &str) -> Result<CredentialRequest, String> {
    if input.contains('\0') {
        return Err("credential input contains a NUL byte".to_owned());
    }
    let mut request = CredentialRequest::default();
    for line in input.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("invalid credential line without '=': {line:?}"));
        };
        let value = value.to_owned();
        match key {
            "protocol" => request.protocol = Some(value),
            "host" => request.host = Some(value),
            "path" => request.path = Some(value),
            "username" => request.username = Some(value),
            "password" => request.password = Some(value),
            "url" => request = from_url(&value)?,
            _ => {}
        }
    }
    Ok(request)
}

/// Split `proto://[user[:pass]@]host[:port][/path]` like git's `credential_from_url`: parts are
/// percent-decoded and trailing slashes leave the path.
fn from_url(url: &str) -> Result<CredentialRequest, String> {
    let Some((protocol, rest)) = url.split_once("://") else {
        return Err(format!("credential url has no scheme: {url:?}"));
    };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (rest, None),
    };
    let (userinfo, host) = match authority.split_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').ok_or(u)) {
        None => (None, None),
        Some(Ok((user, pass))) => (Some(user), Some(pass)),
        Some(Err(user)) => (Some(user), None),
    };
    let path = path
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty());
    Ok(CredentialRequest {
        protocol: Some(protocol.to_owned()),
        host: Some(percent_decode(host)?),
        path: path.map(percent_decode).transpose()?,
        username: username.map(percent_decode).transpose()?,
        password: password.map(percent_decode).transpose()?,
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8(out)
        .map_err(|_| "credential url is not UTF-8 once decoded".to_owned())?;
    if decoded.contains('\0') {
        return Err("credential url contains an encoded NUL byte".to_owned());
    }
    Ok(decoded)
}

/// Hosts compare case-insensitively; an explicit `:443` is the https default.
fn same_host(a: &str, b: &str) -> bool {
    let strip = |h: &str| {
        h.strip_suffix(DEFAULT_HTTPS_PORT_SUFFIX)
            .unwrap_or(h)
            .to_ascii_lowercase()
    };
    strip(a) == strip(b)
}

fn is_https(request: &CredentialRequest) -> bool {
    request
        .protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(SERVED_PROTOCOL))
}

/// The token for the request, or `None` when no held token is known to reach it.
///
/// Only `https`; the host must match; a username other than `x-access-token` means the URL named
/// another identity, which is left to other helpers. With a path, the owner is its first segment
/// and the repository its second (`.git` dropped), compared case-insensitively as GitHub does: a
/// token listing `owner/repo` is preferred, then a token of that owner without a repository list;
/// a token whose list leaves the repository out is never offered. Without a path, the host's only
/// token, if it has exactly one. Tokens past `expiresAt` are skipped; an unparseable `expiresAt` is
/// not known to be past, so the token is offered and git's `erase` reports it if it fails.
pub(crate) fn select_token<'a>(
    tokens: &'a [ClientToken],
    request: &CredentialRequest,
    now: OffsetDateTime,
) -> Option<&'a ClientToken> {
    if !is_https(request) {
        return None;
    }
    let host = request.host.as_deref()?;
    if request
        .username
        .as_deref()
        .is_some_and(|u| !u.is_empty() && u != GIT_TOKEN_USER)
    {
        return None;
    }
    let candidates: Vec<&ClientToken> = tokens
        .iter()
        .filter(|t| t.is_usable() && fields_are_safe(t))
        .filter(|t| same_host(&t.host, host))
        .filter(|t| t.expires_at().is_none_or(|at| at > now))
        .collect();

    let mut segments = request
        .path
        .as_deref()
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty());
    let Some(owner) = segments.next() else {
        return match candidates.as_slice() {
            [only] => Some(only),
            _ => None,
        };
    };
    let repo = segments.next().map(|r| {
        let n = r.len().saturating_sub(".git".len());
        match r.get(n..) {
            Some(suffix) if suffix.eq_ignore_ascii_case(".git") => &r[..n],
            _ => r,
        }
    });

    let of_owner = || {
        candidates
            .iter()
            .copied()
            .filter(move |t| t.owner.eq_ignore_ascii_case(owner))
    };
    let listed = repo.and_then(|repo| {
        let wanted = format!("{owner}/{repo}");
        of_owner().find(|t| {
            t.repositories
                .as_ref()
                .is_some_and(|list| list.iter().any(|r| r.eq_ignore_ascii_case(&wanted)))
        })
    });
    listed.or_else(|| of_owner().find(|t| t.repositories.is_none()))
}

/// The `get` answer for `token`: user name, password and, when `expiresAt` parses,
/// `password_expiry_utc` (git ≥ 2.41 then stops using it on time; older git ignores the line).
/// Empty for a token that cannot be written safely; with no token the caller prints nothing.
pub(crate) fn format_get_response(token: &ClientToken) -> String {
    // A newline in the token would let it add lines of its own to git's input.
    if !token_value_is_safe(&token.token) {
        return String::new();
    }
    let mut out = format!("username={GIT_TOKEN_USER}\npassword={}\n", token.token);
    if let Some(at) = token.expires_at() {
        let _ = writeln!(out, "password_expiry_utc={}", at.unix_timestamp());
    }
    out
}

/// Indices of the held tokens an `erase` names: the rejected password on that host (over https).
pub(crate) fn erase_matches(tokens: &[ClientToken], request: &CredentialRequest) -> Vec<usize> {
    let (Some(password), Some(host)) = (request.password.as_deref(), request.host.as_deref())
    else {
        return Vec::new();
    };
    if password.is_empty() || !is_https(request) {
        return Vec::new();
    }
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.token == password && same_host(&t.host, host))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tok;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

    fn req(protocol: &str, host: &str, path: Option<&str>) -> CredentialRequest {
        CredentialRequest {
            protocol: Some(protocol.to_owned()),
            host: Some(host.to_owned()),
            path: path.map(str::to_owned),
            ..CredentialRequest::default()
        }
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn parses_what_git_really_sends() {
        // Lines as git 2.47 sends them to a helper (`credential fill`, `ls-remote`, useHttpPath).
        let got = parse_request(
            "protocol=https\nhost=GitHub.com:8443\npath=Acme/Modules.git\n\
             capability[]=authtype\ncapability[]=state\nwwwauth[]=Basic realm=\"x\"\n",
        )
        .unwrap();
        assert_eq!(
            got,
            req("https", "GitHub.com:8443", Some("Acme/Modules.git"))
        );
    }

    #[test]
    fn parse_handles_the_nasty_cases() {
        let cases: &[(&str, &str, CredentialRequest)] = &[
            (
                "values may contain '='",
                "protocol=https\nhost=h\npassword=a=b==\n",
                CredentialRequest {
                    protocol: some("https"),
                    host: some("h"),
                    password: some("a=b=="),
                    ..CredentialRequest::default()
                },
            ),
            (
                "CRLF line ends",
                "protocol=https\r\nhost=h\r\npath=o/r\r\n\r\nhost=ignored\n",
                req("https", "h", Some("o/r")),
            ),
            (
                "a blank line ends the request",
                "protocol=https\nhost=h\n\npath=ignored\n",
                req("https", "h", None),
            ),
            (
                "no trailing newline",
                "protocol=https\nhost=h",
                req("https", "h", None),
            ),
            ("empty input", "", CredentialRequest::default()),
            (
                "later lines win",
                "host=a\nhost=b\nprotocol=https\n",
                req("https", "b", None),
            ),
            (
                "unknown keys are ignored",
                "protocol=https\nhost=h\npassword_expiry_utc=1\nstate[]=x\nfoo=bar\n",
                req("https", "h", None),
            ),
            (
                "url= is split into parts",
                "url=https://x-access-token:p%40ss=@GitHub.com:8443/Acme/Mod%20ules.git/\n",
                CredentialRequest {
                    protocol: some("https"),
                    host: some("GitHub.com:8443"),
                    path: some("Acme/Mod ules.git"),
                    username: some("x-access-token"),
                    password: some("p@ss="),
                },
            ),
            (
                "url= without a path or user",
                "url=https://github.com\n",
                req("https", "github.com", None),
            ),
            (
                "url= resets earlier fields, later ones override it",
                "path=old\nusername=u\nurl=https://h/o/r\nhost=other\n",
                req("https", "other", Some("o/r")),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(&parse_request(input).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn parse_rejects_nul_lines_without_equals_and_schemeless_urls() {
        for (input, want) in [
            ("protocol=https\nhost=h\0\n", "NUL"),
            ("protocol=https\nbogus\n", "without '='"),
            ("url=github.com/o/r\n", "no scheme"),
            ("url=https://h/o%00r\n", "NUL"),
            ("url=https://h/%ff\n", "UTF-8"),
        ] {
            let err = parse_request(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let r = parse_request("protocol=https\nhost=h\npassword=ghs_secret\n").unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("ghs_secret"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn select_picks_the_token_known_to_reach_the_repository() {
        let tokens = [
            tok("github.com", "acme", "ghs_W", None),
            tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
            tok("github.com", "beta", "ghs_B", Some(&["beta/infra"])),
            tok("ghe.example.com:8443", "acme", "ghs_E", None),
        ];
        let cases = [
            (
                "listed repository",
                req("https", "github.com", Some("acme/modules")),
                Some("ghs_S"),
            ),
            (
                ".git suffix",
                req("https", "github.com", Some("acme/modules.git")),
                Some("ghs_S"),
            ),
            (
                "case-insensitive",
                req("https", "GitHub.com", Some("ACME/Modules.GIT")),
                Some("ghs_S"),
            ),
            (
                "leading slash",
                req("https", "github.com", Some("/acme/modules")),
                Some("ghs_S"),
            ),
            (
                "unlisted: whole installation",
                req("https", "github.com", Some("acme/other")),
                Some("ghs_W"),
            ),
            (
                "prefix is not a match",
                req("https", "github.com", Some("acme/modules-extra")),
                Some("ghs_W"),
            ),
            (
                "owner only",
                req("https", "github.com", Some("acme")),
                Some("ghs_W"),
            ),
            (
                "never a repository its list leaves out",
                req("https", "github.com", Some("beta/other")),
                None,
            ),
            (
                "scoped repository",
                req("https", "github.com", Some("beta/infra.git")),
                Some("ghs_B"),
            ),
            (
                "unknown owner",
                req("https", "github.com", Some("gamma/x")),
                None,
            ),
            (
                "port must match",
                req("https", "ghe.example.com", Some("acme/x")),
                None,
            ),
            (
                "with its port",
                req("https", "ghe.example.com:8443", Some("acme/x")),
                Some("ghs_E"),
            ),
            (
                "443 is the https default",
                req("https", "github.com:443", Some("acme/x")),
                Some("ghs_W"),
            ),
            (
                "http is refused",
                req("http", "github.com", Some("acme/modules")),
                None,
            ),
            (
                "ssh is refused",
                req("ssh", "github.com", Some("acme/modules")),
                None,
            ),
            (
                "several tokens and no path",
                req("https", "github.com", None),
                None,
            ),
            (
                "one token for the host and no path",
                req("https", "ghe.example.com:8443", None),
                Some("ghs_E"),
            ),
            (
                "empty path counts as none",
                req("https", "ghe.example.com:8443", Some("")),
                Some("ghs_E"),
            ),
            (
                "other host",
                req("https", "gitlab.com", Some("acme/modules")),
                None,
            ),
        ];
        for (name, request, want) in cases {
            let got = select_token(&tokens, &request, NOW).map(|t| t.token.as_str());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn select_needs_protocol_and_host_and_respects_a_named_user() {
        let tokens = [tok("github.com", "acme", "ghs_W", None)];
        let mut no_protocol = req("https", "github.com", Some("acme/x"));
        no_protocol.protocol = None;
        let mut no_host = req("https", "github.com", Some("acme/x"));
        no_host.host = None;
        let mut other_user = req("https", "github.com", Some("acme/x"));
        other_user.username = some("alice");
        let mut our_user = req("https", "github.com", Some("acme/x"));
        our_user.username = some(GIT_TOKEN_USER);
        assert!(select_token(&tokens, &no_protocol, NOW).is_none());
        assert!(select_token(&tokens, &no_host, NOW).is_none());
        assert!(select_token(&tokens, &other_user, NOW).is_none());
        assert_eq!(
            select_token(&tokens, &our_user, NOW).unwrap().token,
            "ghs_W"
        );
    }

    #[test]
    fn select_skips_expired_unusable_and_unsafe_tokens() {
        let mut expired = tok("github.com", "acme", "ghs_OLD", Some(&["acme/modules"]));
        expired.expires_at = "2030-01-01T00:00:00Z".to_owned(); // == NOW: already unusable
        let mut unknown_expiry = tok("github.com", "acme", "ghs_W", None);
        unknown_expiry.expires_at = "soon".to_owned();
        let tokens = [
            expired,
            tok("github.com", "acme", "", Some(&["acme/modules"])),
            tok(
                "github.com",
                "acme",
                "ghs_X\npassword=evil",
                Some(&["acme/modules"]),
            ),
            unknown_expiry,
        ];
        let got = select_token(
            &tokens,
            &req("https", "github.com", Some("acme/modules")),
            NOW,
        );
        assert_eq!(got.unwrap().token, "ghs_W");

        let only_expired = [tokens[0].clone()];
        assert!(select_token(&only_expired, &req("https", "github.com", None), NOW).is_none());
    }

    #[test]
    fn get_response_carries_user_password_and_expiry() {
        let t = tok("github.com", "acme", "ghs_A", None);
        assert_eq!(
            format_get_response(&t),
            "username=x-access-token\npassword=ghs_A\npassword_expiry_utc=1893459600\n"
        );
        let mut no_expiry = t.clone();
        no_expiry.expires_at = String::new();
        assert_eq!(
            format_get_response(&no_expiry),
            "username=x-access-token\npassword=ghs_A\n"
        );
        let mut hostile = t;
        hostile.token = "ghs_A\nusername=evil".to_owned();
        assert_eq!(format_get_response(&hostile), "");
    }

    #[test]
    fn get_response_round_trips_through_the_parser() {
        let t = tok("github.com", "acme", "ghs_A", None);
        let parsed = parse_request(&format_get_response(&t)).unwrap();
        assert_eq!(parsed.username.as_deref(), Some(GIT_TOKEN_USER));
        assert_eq!(parsed.password.as_deref(), Some("ghs_A"));
    }

    #[test]
    fn erase_names_held_tokens_with_that_password_on_that_host() {
        let tokens = [
            tok("github.com", "acme", "ghs_A", None),
            tok("ghe.example.com", "acme", "ghs_A", None),
            tok("github.com", "beta", "ghs_B", None),
            tok("GitHub.com", "gamma", "ghs_A", None),
        ];
        let with = |protocol: &str, host: &str, password: Option<&str>| CredentialRequest {
            password: password.map(str::to_owned),
            ..req(protocol, host, Some("acme/x"))
        };
        assert_eq!(
            erase_matches(&tokens, &with("https", "github.com", Some("ghs_A"))),
            [0, 3]
        );
        assert_eq!(
            erase_matches(&tokens, &with("https", "github.com", Some("ghs_B"))),
            [2]
        );
        assert!(erase_matches(&tokens, &with("https", "github.com", Some("ghs_C"))).is_empty());
        assert!(erase_matches(&tokens, &with("https", "github.com", None)).is_empty());
        assert!(erase_matches(&tokens, &with("https", "github.com", Some(""))).is_empty());
        assert!(erase_matches(&tokens, &with("http", "github.com", Some("ghs_A"))).is_empty());
        assert!(erase_matches(&tokens, &with("https", "gitlab.com", Some("ghs_A"))).is_empty());
    }

    #[test]
    fn operations_parse_and_unknown_ones_are_ignored() {
        assert_eq!(Operation::from_arg("get"), Some(Operation::Get));
        assert_eq!(Operation::from_arg("store"), Some(Operation::Store));
        assert_eq!(Operation::from_arg("erase"), Some(Operation::Erase));
        assert_eq!(Operation::from_arg("capability"), None);
        assert_eq!(Operation::from_arg("GET"), None);
    }
}
