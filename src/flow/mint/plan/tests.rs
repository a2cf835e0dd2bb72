//! Tests of the plan's pure parts: splitting and refusals.

use super::*;

fn installation(id: i64, login: &str) -> Installation {
    Installation {
        id,
        account_login: login.to_owned(),
        account_id: id,
        account_type: "Organization".to_owned(),
        repository_selection: "all".to_owned(),
        permissions: BTreeMap::new(),
        suspended: false,
    }
}

fn group(id: i64, repos: Option<usize>, sources: &[&str]) -> Group {
    Group {
        installation: installation(id, "Acme"),
        permissions: PermissionSet::default(),
        repos: repos.map(|n| (0..n).map(|i| format!("repo-{i:04}")).collect()),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        rules: BTreeSet::from(["r".to_owned()]),
    }
}

#[test]
fn groups_over_the_github_limit_are_split_in_name_order() {
    let mut groups = Groups::new();
    groups.insert((1, PermissionSet::default()), group(1, Some(1201), &[]));
    groups.insert((2, PermissionSet::default()), group(2, None, &[]));
    let split = split(groups);
    let sizes: Vec<Option<usize>> = split
        .iter()
        .map(|g| g.repos.as_ref().map(BTreeSet::len))
        .collect();
    assert_eq!(sizes, [Some(500), Some(500), Some(201), None]);
    let first = split[0].repos.as_ref().and_then(|r| r.first().cloned());
    let second = split[1].repos.as_ref().and_then(|r| r.first().cloned());
    assert_eq!(first.as_deref(), Some("repo-0000"));
    assert_eq!(second.as_deref(), Some("repo-0500"));
    assert!(split.iter().all(|g| g.rules.contains("r")));
}

#[test]
fn refusals_exclude_the_sources_or_the_whole_owner() {
    let mut plan = Plan::default();
    plan.exclude_refused(
        vec![(
            group(1, Some(2), &["acme/a", "acme/b"]),
            ExclusionReason::InstallationSuspended,
        )],
        true,
    );
    plan.exclude_refused(
        vec![(
            group(1, None, &[]),
            ExclusionReason::NotInstalledInWorkspace,
        )],
        false,
    );
    assert_eq!(
        plan.exclusions,
        [
            Excluded::new("acme/a", ExclusionReason::InstallationSuspended),
            Excluded::new("acme/b", ExclusionReason::InstallationSuspended),
        ]
    );
    assert_eq!(
        plan.skipped,
        [Excluded::new(
            "Acme/*",
            ExclusionReason::NotInstalledInWorkspace
        )]
    );
}
