//! First step of the mint: may this session mint at all, and is the request well formed.

use super::{MintInput, MAX_SOURCES};
use crate::app::App;
use crate::flow::{FlowError, FlowResult, Forbidden};
use crate::ids::PolicyName;
use crate::policy::{PermissionSet, RepoRef};
use crate::session::{Authenticated, SessionType};
use std::collections::BTreeSet;

/// A requested repository.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// As the caller wrote it.
    pub(super) raw: String,
    /// Parsed.
    pub(super) repo: RepoRef,
}

/// A well-formed mint request.
#[derive(Debug, Clone)]
pub(super) struct MintRequest {
    /// The policy to evaluate.
    pub(super) policy: PolicyName,
    /// The sources as sent (duplicates included), for the audit event; `None` = everything the
    /// caller's rules grant.
    pub(super) requested: Option<Vec<String>>,
    /// The distinct sources (case-insensitively), in the order sent.
    pub(super) sources: Vec<Source>,
    /// Downscoping: the permissions the caller asked for; `None` = whatever is granted.
    pub(super) wanted: Option<PermissionSet>,
}

impl MintRequest {
    /// Did the caller name its sources (so exclusions are reported to it)?
    pub(super) fn explicit(&self) -> bool {
        self.requested.is_some()
    }
}

/// The session may mint: it was made from a GitHub Actions token, for a workspace entitled to
/// GitHub STS. Checked before the body, so an unentitled caller learns nothing more.
pub(super) async fn admit(app: &App, auth: &Authenticated) -> FlowResult<()> {
    if auth.claims.typ != SessionType::GitHubActions {
        return Err(FlowError::NotGitHubActionsSession);
    }
    let workspace = app.store.get_workspace(&auth.session.workspace_id).await?;
    if !workspace.is_some_and(|w| w.sts_enabled) {
        return Err(FlowError::Forbidden(Forbidden::StsNotEntitled));
    }
    Ok(())
}

/// Parse the policy name and the sources; every problem is reported at once.
pub(super) fn validate(input: MintInput) -> FlowResult<MintRequest> {
    let mut errors = Vec::new();
    let policy = match input.policy_name.as_deref() {
        None => Some(PolicyName::default_policy()),
        Some(name) => PolicyName::parse(name)
            .map_err(|e| errors.push(format!("policyName: {e}")))
            .ok(),
    };
    let mut sources = Vec::new();
    if let Some(list) = &input.sources {
        if list.len() > MAX_SOURCES {
            errors.push(format!(
                "sources: at most {MAX_SOURCES} repositories per request"
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, raw) in list.iter().enumerate() {
            let Some(repo) = RepoRef::parse(raw) else {
                errors.push(format!("sources[{i}]: `{raw}` is not an owner/repo name"));
                continue;
            };
            if seen.insert(raw.to_ascii_lowercase()) {
                sources.push(Source {
                    raw: raw.clone(),
                    repo,
                });
            }
        }
    }
    let wanted = input.permissions.as_ref().and_then(|asked| {
        PermissionSet::from_request("permissions", asked)
            .map_err(|e| errors.extend(e))
            .ok()
    });
    match policy {
        Some(policy) if errors.is_empty() => Ok(MintRequest {
            policy,
            requested: input.sources,
            sources,
            wanted,
        }),
        _ => Err(FlowError::InvalidRequest(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(sources: Option<&[&str]>, policy: Option<&str>) -> MintInput {
        MintInput {
            sources: sources.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
            policy_name: policy.map(str::to_owned),
            permissions: None,
        }
    }

    #[test]
    fn the_default_policy_is_used_when_none_is_named() {
        let request = validate(input(None, None)).unwrap();
        assert_eq!(request.policy.as_str(), "default");
        assert!(!request.explicit());
    }

    #[test]
    fn duplicate_sources_are_merged_case_insensitively_in_the_order_sent() {
        let request = validate(input(Some(&["acme/b", "Acme/B", "acme/a"]), None)).unwrap();
        let raw: Vec<&str> = request.sources.iter().map(|s| s.raw.as_str()).collect();
        assert_eq!(raw, ["acme/b", "acme/a"]);
        assert_eq!(request.requested.map(|r| r.len()), Some(3));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let Err(FlowError::InvalidRequest(errors)) =
            validate(input(Some(&["acme/ok", "nope"]), Some("Bad")))
        else {
            panic!("expected a validation error");
        };
        assert_eq!(
            errors,
            [
                "policyName: must match [a-z0-9][a-z0-9._-]{0,62}",
                "sources[1]: `nope` is not an owner/repo name"
            ]
        );
    }
}
