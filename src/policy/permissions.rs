//! GitHub App permissions, checked against `data/app-permissions.json`.

use std::collections::BTreeMap;

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
}
