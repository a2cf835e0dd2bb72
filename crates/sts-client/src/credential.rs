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

// The password git sends with `erase`/`store` must never reach a log line.
debug_redacting!(CredentialRequest {
    protocol, host, path, username;
    redacted: password
});

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
mod tests;
