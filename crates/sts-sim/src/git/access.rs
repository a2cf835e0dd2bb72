//! Who may do what to a repository over git, decided as github.com decides it (see the table in
//! the module docs of [`crate::git`]).

use super::{Service, GIT_REALM, GIT_USERNAME};
use crate::github::{level_rank, GitHubSimulator, TokenAccess};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// Credentials a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Credentials {
    /// No `Authorization` header.
    Anonymous,
    /// `Basic x-access-token:<token>`.
    Token(String),
    /// Anything else: another scheme, another username, an empty password, bad base64.
    Unusable,
}

pub(super) fn basic_credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::Anonymous;
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    let decoded = encoded
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
        Some((GIT_USERNAME, token)) if !token.is_empty() => Credentials::Token(token.to_owned()),
        _ => Credentials::Unusable,
    }
}

/// A repository a request may use, with GitHub's spelling of its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) owner: String,
    pub(super) name: String,
    /// `REMOTE_USER` for the backend: set for authenticated callers (`git http-backend` enables
    /// `receive-pack` only then).
    pub(super) authenticated: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 401 with a Basic challenge.
    Challenge,
    /// 404 "Repository not found."
    NotFound,
    /// 403 on a push without `contents: write`.
    PushDenied { owner: String, name: String },
    /// 403 for dumb HTTP.
    DumbHttp,
    /// 413.
    TooLarge,
    /// 500/502: the backend could not run or answered nonsense (logged).
    Backend(StatusCode),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let text = |status: StatusCode, message: String| {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        };
        match self {
            Self::Challenge => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "Invalid username or token. Password authentication is not supported for Git operations.\n"
                        .to_owned(),
                );
                // The realm is a constant of printable ASCII, so the value always parses.
                if let Ok(challenge) = HeaderValue::try_from(format!("Basic realm=\"{GIT_REALM}\""))
                {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, challenge);
                }
                response
            }
            Self::NotFound => text(StatusCode::NOT_FOUND, "Repository not found.\n".to_owned()),
            Self::PushDenied { owner, name } => text(
                StatusCode::FORBIDDEN,
                format!("Permission to {owner}/{name}.git denied to {GIT_USERNAME}.\n"),
            ),
            Self::DumbHttp => text(
                StatusCode::FORBIDDEN,
                "Dumb HTTP is not supported: use a git client that speaks smart HTTP.\n".to_owned(),
            ),
            Self::TooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or unreadable.\n".to_owned(),
            ),
            Self::Backend(status) => text(status, "git backend failure\n".to_owned()),
        }
    }
}

/// Decide whether `credentials` may use `service` on `owner/name` (see the module docs).
pub(super) fn authorize(
    sim: &GitHubSimulator,
    owner: &str,
    name: &str,
    service: Service,
    credentials: &Credentials,
) -> Result<Target, Refusal> {
    let found = sim.find_repository(owner, name);
    let token = match credentials {
        Credentials::Anonymous => {
            return match found {
                Some((owner, repo)) if !repo.private && service == Service::UploadPack => {
                    Ok(Target {
                        owner,
                        name: repo.name,
                        authenticated: false,
                    })
                }
                // Also for repositories that do not exist: an anonymous caller must not learn
                // which private repositories do.
                _ => Err(Refusal::Challenge),
            };
        }
        Credentials::Unusable => return Err(Refusal::Challenge),
        Credentials::Token(token) => token,
    };
    let permissions = match sim.token_access(token, owner, name) {
        TokenAccess::Invalid => return Err(Refusal::Challenge),
        TokenAccess::NoAccess => None,
        TokenAccess::Reaches { permissions } => Some(permissions),
    };
    let Some((owner, repo)) = found else {
        return Err(Refusal::NotFound);
    };
    if permissions.is_none() && repo.private {
        return Err(Refusal::NotFound);
    }
    let can_push = permissions.as_ref().is_some_and(|permissions| {
        permissions
            .get("contents")
            .and_then(|level| level_rank(level))
            .is_some_and(|rank| rank >= 2)
    });
    if service == Service::ReceivePack && !can_push {
        return Err(Refusal::PushDenied {
            owner,
            name: repo.name,
        });
    }
    Ok(Target {
        owner,
        name: repo.name,
        authenticated: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::SimInstallation;
    use crate::testing::shared_app_key;

    fn simulator() -> GitHubSimulator {
        let sim = GitHubSimulator::new("1", shared_app_key().public_key());
        sim.add_installation(
            SimInstallation::organization(1, "Acme", 1001)
                .with_repo(2001, "infra", true)
                .with_repo(2003, "website", false),
        );
        sim
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    #[test]
    fn only_x_access_token_basic_credentials_carry_a_token() {
        assert_eq!(basic_credentials(&HeaderMap::new()), Credentials::Anonymous);
        assert_eq!(
            basic_credentials(&basic("x-access-token", "ghs_abc")),
            Credentials::Token("ghs_abc".to_owned())
        );
        assert_eq!(
            basic_credentials(&basic("someone", "ghs_abc")),
            Credentials::Unusable
        );
        assert_eq!(
            basic_credentials(&basic("x-access-token", "")),
            Credentials::Unusable
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ghs_abc"),
        );
        assert_eq!(basic_credentials(&bearer), Credentials::Unusable);
    }

    #[test]
    fn anonymous_callers_read_public_repositories_and_are_challenged_elsewhere() {
        let sim = simulator();
        let anonymous = Credentials::Anonymous;
        let read = authorize(&sim, "acme", "WEBSITE", Service::UploadPack, &anonymous).unwrap();
        assert_eq!(
            read,
            Target {
                owner: "Acme".to_owned(),
                name: "website".to_owned(),
                authenticated: false
            }
        );
        let cases = [
            ("infra", Service::UploadPack),
            ("website", Service::ReceivePack),
            ("nothing", Service::UploadPack),
        ];
        for (name, service) in cases {
            assert_eq!(
                authorize(&sim, "acme", name, service, &anonymous),
                Err(Refusal::Challenge),
                "{name} {service:?}"
            );
        }
        let unknown_token = Credentials::Token("ghs_unknown".to_owned());
        assert_eq!(
            authorize(&sim, "acme", "website", Service::UploadPack, &unknown_token),
            Err(Refusal::Challenge)
        );
    }
}
