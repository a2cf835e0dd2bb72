//! Lint: findings about a policy that is valid but risky. They never block a policy (errors
//! do); they are answered to the administrator with a path into the document and a stable code.

use super::model::RuleDocument;
use super::permissions::Level;

/// A stable name for a kind of finding, for tools that filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningCode {
    /// The owner is bound by login only; logins can be renamed and re-registered, ids cannot.
    OwnerBoundByName,
    /// A `write`/`admin` level is granted without constraining `ref`, `environment` or
    /// `job_workflow_ref`: any branch of the caller's repository (a pull request's too) gets it.
    WriteWithoutRef,
    /// `owner/*` with a `write`/`admin` level: write access to every repository, present and future.
    WholeInstallationWrite,
    /// `owner/*` read-only: every repository of the installation, including later ones.
    WholeInstallation,
    /// A claim GitHub Actions never sends: the rule can never match an Actions caller.
    UnknownClaim,
    /// An organization permission: it reaches the whole organization.
    OrganizationPermission,
    /// A user permission: it acts on the installation owner's account.
    UserPermission,
}

impl WarningCode {
    /// Every code, for documentation checks.
    pub const ALL: [Self; 7] = [
        Self::OwnerBoundByName,
        Self::WriteWithoutRef,
        Self::WholeInstallationWrite,
        Self::WholeInstallation,
        Self::UnknownClaim,
        Self::OrganizationPermission,
        Self::UserPermission,
    ];

    /// The wire spelling (`owner_bound_by_name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OwnerBoundByName => "owner_bound_by_name",
            Self::WriteWithoutRef => "write_without_ref",
            Self::WholeInstallationWrite => "whole_installation_write",
            Self::WholeInstallation => "whole_installation",
            Self::UnknownClaim => "unknown_claim",
            Self::OrganizationPermission => "organization_permission",
            Self::UserPermission => "user_permission",
        }
    }
}

/// One finding: where (`rules[0].grant.permissions`), what kind, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Path into the document, in the same notation as validation errors.
    pub path: String,
    /// Stable code.
    pub code: WarningCode,
    /// For a person.
    pub message: String,
}

impl Warning {
    pub(super) fn new(path: String, code: WarningCode, message: String) -> Self {
        Self {
            path,
            code,
            message,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} [{}]",
            self.path,
            self.message,
            self.code.as_str()
        )
    }
}

/// Claims that pin which code runs: the branch or tag, the deployment environment (whose
/// protection rules GitHub enforces), or the exact reusable workflow. A write grant without one
/// of them goes to any workflow on any branch of the caller's repository, a pull request's too
/// (GitHub's documentation, "Security hardening for GitHub Actions").
pub(super) const CODE_PINNING_CLAIMS: &[&str] = &["ref", "environment", "job_workflow_ref"];

/// `write_without_ref` for `rule` (at `path`, e.g. `rules[2]`).
pub(super) fn write_without_ref(rule: &RuleDocument, path: &str) -> Option<Warning> {
    let writes: Vec<&str> = rule
        .permissions
        .0
        .iter()
        .filter(|(_, level)| **level >= Level::Write)
        .map(|(key, _)| key.as_str())
        .collect();
    let pinned = CODE_PINNING_CLAIMS.iter().any(|claim| {
        rule.match_claims.contains_key(*claim) || rule.match_patterns.contains_key(*claim)
    });
    if writes.is_empty() || pinned {
        return None;
    }
    Some(Warning::new(
        format!("{path}.grant.permissions"),
        WarningCode::WriteWithoutRef,
        format!(
            "rule {} grants write access ({}) without constraining ref, environment or \
             job_workflow_ref: any workflow on any branch of the caller's repository gets it",
            rule.name,
            writes.join(", ")
        ),
    ))
}
