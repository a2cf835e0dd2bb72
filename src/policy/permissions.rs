//! GitHub App permissions, checked against `data/app-permissions.json`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// A permission level; ordered read < write < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `admin`.
    Admin,
}

impl Level {
    /// `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// The level spelled exactly `read`, `write` or `admin`. Case matters: GitHub rejects
    /// `Read`, and accepting it here would only move the failure to mint time.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A validated set of permissions (key → level). Ordered, so equal sets compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PermissionSet(pub BTreeMap<String, Level>);

impl PermissionSet {
    /// As GitHub's JSON object (`{"contents": "read"}`).
    pub fn to_strings(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
            .collect()
    }

    /// Union, keeping the highest level per key.
    pub fn merge(&mut self, other: &PermissionSet) {
        for (k, v) in &other.0 {
            let entry = self.0.entry(k.clone()).or_insert(*v);
            if *v > *entry {
                *entry = *v;
            }
        }
    }

    /// What both sets allow: the keys in both, each at the lower of its two levels. A
    /// downscoped token never carries more than was granted nor more than was asked.
    pub fn intersect(&self, wanted: &PermissionSet) -> PermissionSet {
        Self(
            self.0
                .iter()
                .filter_map(|(k, granted)| wanted.0.get(k).map(|w| (k.clone(), *granted.min(w))))
                .collect(),
        )
    }

    /// A set as a client asked for it (`{"contents": "read"}`), each key and level checked
    /// against GitHub's list; every problem is reported, each prefixed with `path`.
    pub fn from_request(path: &str, asked: &BTreeMap<String, String>) -> Result<Self, Vec<String>> {
        let mut set = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, level) in asked {
            match check(key, level) {
                Ok((level, _)) => {
                    set.insert(key.clone(), level);
                }
                Err(e) => errors.push(format!("{path}.{key}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(Self(set))
        } else {
            Err(errors)
        }
    }

    /// `{contents: read}`: what a grant without `permissions` gets, the least that lets a job
    /// clone a repository.
    pub fn default_grant() -> Self {
        Self(BTreeMap::from([("contents".to_owned(), Level::Read)]))
    }
}

/// Which kind of resource a permission acts on, per GitHub's `app-permissions` schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionScope {
    /// Acts on the repositories the token is scoped to.
    Repository,
    /// Acts on the whole organization, whatever repositories the token is scoped to.
    Organization,
    /// Acts on the user account that owns the installation.
    User,
}

impl PermissionScope {
    /// `repository`, `organization` or `user`, as in the permission list.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Organization => "organization",
            Self::User => "user",
        }
    }
}

/// The bundled permission list: one key → allowed levels map per scope.
#[derive(Debug, Default, Deserialize)]
struct Catalog {
    #[serde(default)]
    repository: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    organization: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    user: BTreeMap<String, Vec<String>>,
}

/// Parsed once. If the bundled file ever failed to parse, the catalog is empty and every
/// permission is refused: failing closed beats panicking in a request path.
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../data/app-permissions.json")).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the bundled permission list does not parse; every permission will be refused");
        Catalog::default()
    })
});

/// Look a key up: its scope and allowed levels.
fn lookup(key: &str) -> Option<(PermissionScope, &'static [String])> {
    let catalog: &'static Catalog = &CATALOG;
    [
        (PermissionScope::Repository, &catalog.repository),
        (PermissionScope::Organization, &catalog.organization),
        (PermissionScope::User, &catalog.user),
    ]
    .into_iter()
    .find_map(|(scope, keys)| keys.get(key).map(|levels| (scope, levels.as_slice())))
}

/// The scope of a known permission key.
pub(crate) fn scope(key: &str) -> Option<PermissionScope> {
    lookup(key).map(|(scope, _)| scope)
}

/// Check one `key: level` pair against GitHub's permission list. On success, the level and
/// the scope of the key; on failure, a message without the path (the caller adds it).
pub(crate) fn check(key: &str, level: &str) -> Result<(Level, PermissionScope), String> {
    let Some((scope, allowed)) = lookup(key) else {
        return Err(format!(
            "unknown permission {key:?}: not in GitHub's app permission list"
        ));
    };
    match Level::parse(level) {
        Some(parsed) if allowed.iter().any(|a| a == level) => Ok((parsed, scope)),
        _ => Err(format!(
            "level {level:?} is not one of {}",
            allowed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_permission_list_parses_into_all_three_scopes() {
        assert!(CATALOG.repository.contains_key("contents"));
        assert!(CATALOG.organization.contains_key("members"));
        assert!(CATALOG.user.contains_key("profile"));
    }

    #[test]
    fn checks_keys_and_levels_against_the_list() {
        type Want = Result<(Level, PermissionScope), &'static str>;
        let cases: &[(&str, &str, Want)] = &[
            (
                "contents",
                "read",
                Ok((Level::Read, PermissionScope::Repository)),
            ),
            (
                "contents",
                "write",
                Ok((Level::Write, PermissionScope::Repository)),
            ),
            (
                "metadata",
                "read",
                Ok((Level::Read, PermissionScope::Repository)),
            ),
            (
                "workflows",
                "write",
                Ok((Level::Write, PermissionScope::Repository)),
            ),
            (
                "repository_projects",
                "admin",
                Ok((Level::Admin, PermissionScope::Repository)),
            ),
            (
                "members",
                "read",
                Ok((Level::Read, PermissionScope::Organization)),
            ),
            (
                "organization_events",
                "read",
                Ok((Level::Read, PermissionScope::Organization)),
            ),
            (
                "profile",
                "write",
                Ok((Level::Write, PermissionScope::User)),
            ),
            (
                "contents",
                "writ",
                Err(r#"level "writ" is not one of read, write"#),
            ),
            (
                "contents",
                "Read",
                Err(r#"level "Read" is not one of read, write"#),
            ),
            (
                "contents",
                "all",
                Err(r#"level "all" is not one of read, write"#),
            ),
            (
                "contents",
                "admin",
                Err(r#"level "admin" is not one of read, write"#),
            ),
            (
                "workflows",
                "read",
                Err(r#"level "read" is not one of write"#),
            ),
            (
                "organization_events",
                "write",
                Err(r#"level "write" is not one of read"#),
            ),
            (
                "profile",
                "read",
                Err(r#"level "read" is not one of write"#),
            ),
            (
                "content",
                "read",
                Err(r#"unknown permission "content": not in GitHub's app permission list"#),
            ),
            (
                "Contents",
                "read",
                Err(r#"unknown permission "Contents": not in GitHub's app permission list"#),
            ),
        ];
        for (key, level, want) in cases {
            let got = check(key, level);
            assert_eq!(got, want.map_err(str::to_owned), "{key}: {level}");
        }
    }

    #[test]
    fn merging_keeps_the_highest_level_per_key() {
        let mut a = PermissionSet(BTreeMap::from([
            ("contents".to_owned(), Level::Write),
            ("issues".to_owned(), Level::Read),
        ]));
        let b = PermissionSet(BTreeMap::from([
            ("contents".to_owned(), Level::Read),
            ("issues".to_owned(), Level::Write),
            ("checks".to_owned(), Level::Read),
        ]));
        a.merge(&b);
        assert_eq!(
            a.to_strings(),
            BTreeMap::from([
                ("checks".to_owned(), "read".to_owned()),
                ("contents".to_owned(), "write".to_owned()),
                ("issues".to_owned(), "write".to_owned()),
            ])
        );
    }
}
