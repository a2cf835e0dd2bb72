//! `grant` of a rule: the repositories (literal owner, name or name glob) and the permissions.

use serde_json::Value;

use super::walk::{join, kind, Walker};
use super::{valid_owner, valid_repo_name, RepoPattern, RuleDocument};
use crate::policy::matcher::has_glob;
use crate::policy::permissions::{self, PermissionSet};

impl Walker {
    /// `grant`: `repositories` (required, non-empty) and `permissions` (default
    /// `{contents: read}`).
    pub(super) fn grant(&mut self, path: &str, value: Option<&Value>, rule: &mut RuleDocument) {
        let Some(obj) = self.map(
            path,
            value,
            Some("a map with repositories and optional permissions"),
            "a map with repositories and permissions",
        ) else {
            return;
        };
        self.unknown_keys(path, obj, &["repositories", "permissions"]);

        let p = join(path, "repositories");
        match obj.get("repositories") {
            None => self.err(&p, "required: a non-empty list of owner/name"),
            Some(Value::Array(items)) if items.is_empty() => {
                self.err(
                    &p,
                    "must not be empty: a grant of no repository grants nothing",
                );
            }
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    let ip = format!("{p}[{j}]");
                    let Value::String(s) = item else {
                        self.err(
                            &ip,
                            format!("must be an owner/name string, not {}", kind(item)),
                        );
                        continue;
                    };
                    match parse_repo_pattern(s) {
                        Ok(r) => rule.repositories.push(r),
                        Err(e) => self.err(&ip, e),
                    }
                }
            }
            Some(other) => self.err(
                &p,
                format!("must be a list of owner/name, not {}", kind(other)),
            ),
        }

        let p = join(path, "permissions");
        rule.permissions = match obj.get("permissions") {
            None => PermissionSet::default_grant(),
            Some(Value::Object(perms)) if perms.is_empty() => {
                self.err(
                    &p,
                    "must not be empty: GitHub reads an empty permission set as every permission \
                     of the installation; leave permissions out for {contents: read}",
                );
                PermissionSet::default()
            }
            Some(Value::Object(perms)) => {
                let mut set = PermissionSet::default();
                for (key, level) in perms {
                    let kp = join(&p, key);
                    let Value::String(level) = level else {
                        self.err(
                            &kp,
                            format!(
                                "must be a level string (read, write or admin), not {}",
                                kind(level)
                            ),
                        );
                        continue;
                    };
                    match permissions::check(key, level) {
                        Ok((lvl, _)) => {
                            set.0.insert(key.clone(), lvl);
                        }
                        Err(e) => self.err(&kp, e),
                    }
                }
                set
            }
            Some(other) => {
                self.err(
                    &p,
                    format!("must be a map of permission to level, not {}", kind(other)),
                );
                PermissionSet::default()
            }
        };
    }
}

fn parse_repo_pattern(s: &str) -> Result<RepoPattern, String> {
    let Some((owner, name)) = s.split_once('/') else {
        return Err(format!("{s:?} is not owner/name"));
    };
    if name.contains('/') {
        return Err(format!("{s:?} is not owner/name: more than one /"));
    }
    if has_glob(owner) {
        return Err(format!(
            "owner {owner:?} must be literal: a grant names the installation it reaches, so \
             only the repository name may be a glob"
        ));
    }
    if !valid_owner(owner) {
        return Err(format!("owner {owner:?} is not a GitHub login"));
    }
    // Check the name with its wildcards replaced by a valid character.
    let plain = name.replace(['*', '?'], "x");
    if !valid_repo_name(&plain) || name == "." || name == ".." {
        return Err(format!(
            "name {name:?} is not a GitHub repository name or name glob"
        ));
    }
    Ok(RepoPattern {
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}
