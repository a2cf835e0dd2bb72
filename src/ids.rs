//! Identifiers that are checked once, where they enter, and then carried as types that can only
//! hold well-formed values. The store still takes `&str`: pass [`WorkspaceId::as_str`].

use serde::Serialize;

/// Why a string is not a well-formed id. The message names the rule, not the field: the caller
/// knows which field it read (`workspaceId: must match …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must match {pattern}")]
pub struct InvalidId {
    /// The rule, as a regular expression.
    pub pattern: &'static str,
}

/// Is `s` one lowercase letter or digit followed by at most 62 lowercase letters, digits or
/// `extra` characters?
fn is_slug(s: &str, extra: &[u8]) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= 63
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(b))
}

/// The rule, `parse`, `as_str` and `Display` of a slug id type `$type(String)`: the id types
/// differ only in which characters may follow the first one.
macro_rules! slug_id {
    ($type:ident, $what:literal, pattern = $pattern:literal, extra = $extra:literal) => {
        impl $type {
            #[doc = concat!("The rule every ", $what, " follows.")]
            pub const PATTERN: &'static str = $pattern;

            /// Check `s` against [`PATTERN`](Self::PATTERN).
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if is_slug(s, $extra) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId {
                        pattern: Self::PATTERN,
                    })
                }
            }

            #[doc = concat!("The ", $what, ", for the store and the audit log.")]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A workspace id: `[a-z0-9][a-z0-9_-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WorkspaceId(String);

slug_id!(
    WorkspaceId,
    "workspace id",
    pattern = "[a-z0-9][a-z0-9_-]{0,62}",
    extra = b"-_"
);

/// A trust policy name: `[a-z0-9][a-z0-9._-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PolicyName(String);

slug_id!(
    PolicyName,
    "policy name",
    pattern = "[a-z0-9][a-z0-9._-]{0,62}",
    extra = b"-_."
);

impl PolicyName {
    /// The policy evaluated when a mint names none (what Atmos sends by default).
    pub fn default_policy() -> Self {
        Self("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_are_lowercase_slugs() {
        for ok in ["acme", "a", "acme-prod_1", "0x"] {
            assert!(WorkspaceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme/x",
            "acme prod",
            &"a".repeat(64),
            "ümlaut",
            "a.b",
        ] {
            assert!(WorkspaceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_names_are_lowercase_slugs() {
        for ok in ["default", "infra.v2", "a_b-c"] {
            assert!(PolicyName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Default", "../x", "a/b", ".hidden", &"a".repeat(64)] {
            assert!(PolicyName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PolicyName::default_policy(),
            PolicyName::parse("default").unwrap()
        );
    }

    #[test]
    fn the_error_names_the_rule() {
        assert_eq!(
            WorkspaceId::parse("X").unwrap_err().to_string(),
            "must match [a-z0-9][a-z0-9_-]{0,62}"
        );
        assert_eq!(
            PolicyName::parse("X").unwrap_err().to_string(),
            "must match [a-z0-9][a-z0-9._-]{0,62}"
        );
    }
}
