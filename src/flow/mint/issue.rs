//! Third step of the mint: ask GitHub for one token per group, in parallel, and sort the answers
//! into minted, refused (an exclusion) and failed (the whole request fails).

use super::record::Fresh;
use super::Group;
use crate::app::App;
use crate::audit::ExclusionReason;
use crate::github::{GitHubError, TokenRequest};
use futures::future::join_all;

/// GitHub's answers.
pub(super) struct Issued {
    /// Tokens GitHub minted, each with its group and the broker id it is known by from now on.
    pub(super) minted: Vec<Fresh>,
    /// Groups GitHub refused for a reason the contract names: they become exclusions.
    pub(super) refused: Vec<(Group, ExclusionReason)>,
    /// The first failure that no exclusion describes: the request fails and `minted` must be
    /// revoked.
    pub(super) failure: Option<GitHubError>,
}

/// The exclusion a refusal of GitHub's stands for, if any.
fn exclusion_for(error: &GitHubError) -> Option<ExclusionReason> {
    match error {
        GitHubError::Suspended => Some(ExclusionReason::InstallationSuspended),
        GitHubError::NotFound | GitHubError::RepositoryNotAccessible => {
            Some(ExclusionReason::NotInstalledInWorkspace)
        }
        GitHubError::PermissionNotGranted(_) => Some(ExclusionReason::TrustPolicyInvalid),
        _ => None,
    }
}

/// Mint a token for each group.
pub(super) async fn issue(app: &App, groups: Vec<Group>) -> Issued {
    let results = join_all(groups.iter().map(|g| {
        let request = TokenRequest {
            repositories: g.repos.as_ref().map(|r| r.iter().cloned().collect()),
            permissions: g.permissions.to_strings(),
        };
        let github = &app.github;
        async move {
            github
                .create_installation_token(g.installation.id, &request)
                .await
        }
    }))
    .await;
    let mut issued = Issued {
        minted: Vec::new(),
        refused: Vec::new(),
        failure: None,
    };
    for (group, result) in groups.into_iter().zip(results) {
        match result {
            Ok(token) => issued.minted.push(Fresh::new(group, token)),
            Err(e) => match exclusion_for(&e) {
                Some(why) => issued.refused.push((group, why)),
                None => {
                    tracing::warn!(github.installation_id = group.installation.id, error = %e, "mint failed at github");
                    issued.failure.get_or_insert(e);
                }
            },
        }
    }
    issued
}

/// Revoke freshly minted tokens that will not be handed out; answers, per token in order,
/// whether GitHub confirmed it revoked.
pub(super) async fn revoke_minted(app: &App, minted: &[Fresh]) -> Vec<bool> {
    join_all(minted.iter().map(|fresh| {
        let github = &app.github;
        async move {
            match github.revoke_installation_token(&fresh.token.token).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(
                        token.id = %fresh.id,
                        github.installation_id = fresh.group.installation.id,
                        error = %e,
                        "could not revoke token {} minted for a request that does not hand it out; \
                         it stays live until it expires",
                        fresh.id
                    );
                    false
                }
            }
        }
    }))
    .await
}
