//! The environment variables that carry raw tokens (`--token-env`), for the tools that read a
//! token rather than follow git's rewrites.
//!
//! # Raw token export
//!
//! As in Atmos: the default name `ATMOS_PRO_GITHUB_TOKEN`, or a literal name, is exported only when
//! exactly one token has a token and an owner; a template (`{owner}`/`{host}`, or Atmos's
//! `{{ .owner }}`/`{{ .host }}`) is rendered per token, uppercased, and every character outside
//! `[A-Z0-9_]` becomes `_`. When several tokens render the same name (one owner, several permission
//! sets) the name holds the token without a repository list if there is one, else the last one in
//! response order (Atmos's last-write-wins), and a warning says so.

use super::RenderError;
use crate::model::ClientToken;
use std::collections::BTreeMap;

/// Atmos's default `token_env`: Atmos's own GitHub consumers (go-getter, REST, CI statuses) read
/// it, so exporting it lets a single-owner mint work there without configuration.
pub(crate) const DEFAULT_TOKEN_ENV: &str = "ATMOS_PRO_GITHUB_TOKEN";

/// Token env names may not start with this: they would clobber the `GIT_CONFIG_*` variables that
/// carry the rewrites (and `GIT_CONFIG` itself names a config file to git).
const RESERVED_ENV_PREFIX: &str = "GIT_CONFIG";

/// Which env var(s) carry the raw token (`--token-env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenEnv {
    /// Flag absent: [`DEFAULT_TOKEN_ENV`], as Atmos does.
    Default,
    /// `--token-env ''`: no raw token in the environment.
    Disabled,
    /// A literal name, or a template with `{owner}`/`{host}` placeholders.
    Name(String),
}

impl TokenEnv {
    /// `None` → default, `Some("")` → disabled, anything else → a name or template.
    pub(crate) fn from_flag(flag: Option<&str>) -> Self {
        match flag {
            None => Self::Default,
            Some("") => Self::Disabled,
            Some(name) => Self::Name(name.to_owned()),
        }
    }
}

/// One piece of a `--token-env` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    Owner,
    Host,
}

/// `--token-env`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenEnvSpec {
    Off,
    Literal { name: String, user_set: bool },
    Template { flag: String, parts: Vec<Part> },
}

impl TokenEnvSpec {
    pub(super) fn parse(token_env: &TokenEnv) -> Result<Self, RenderError> {
        let flag = match token_env {
            TokenEnv::Disabled => return Ok(Self::Off),
            TokenEnv::Default => DEFAULT_TOKEN_ENV,
            TokenEnv::Name(name) => name.as_str(),
        };
        if !flag.contains(['{', '}']) {
            check_name(flag, flag)?;
            return Ok(Self::Literal {
                name: flag.to_owned(),
                // Atmos warns only when the user picked the name; the default skips quietly.
                user_set: flag != DEFAULT_TOKEN_ENV,
            });
        }
        Ok(Self::Template {
            flag: flag.to_owned(),
            parts: parse_template(flag)?,
        })
    }

    pub(super) fn apply(
        &self,
        tokens: &[&ClientToken],
        env: &mut BTreeMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> Result<(), RenderError> {
        // Atmos's test for the raw export: a token and an owner (no host needed).
        let valid: Vec<&ClientToken> = tokens
            .iter()
            .copied()
            .filter(|t| !t.token.is_empty() && !t.owner.is_empty())
            .collect();
        match self {
            Self::Off => Ok(()),
            Self::Literal { .. } if valid.is_empty() => Ok(()),
            Self::Literal { name, user_set } => {
                if let [only] = valid.as_slice() {
                    env.insert(name.clone(), only.token.clone());
                } else if *user_set {
                    warnings.push(format!(
                        "--token-env {name} is a single name but {} tokens were minted; not \
                         exporting it (use a template such as {name}_{{owner}}; git still gets \
                         every token)",
                        valid.len()
                    ));
                }
                Ok(())
            }
            Self::Template { flag, parts } => {
                // name → (chosen token, how many tokens rendered it)
                let mut chosen: BTreeMap<String, (&ClientToken, usize)> = BTreeMap::new();
                for t in valid {
                    let name = render_name(parts, t);
                    if let Err(error) = check_name(flag, &name) {
                        // One odd owner must not cost the job its other variables (or the mint
                        // already made): skip this one, as Atmos skips what it cannot render.
                        warnings.push(format!("{error}; not exporting it"));
                        continue;
                    }
                    match chosen.get_mut(&name) {
                        None => {
                            chosen.insert(name, (t, 1));
                        }
                        Some((held, count)) => {
                            *count += 1;
                            // Atmos composes the environment last-write-wins: the later token.
                            *held = t;
                        }
                    }
                }
                for (name, (t, count)) in chosen {
                    if count > 1 {
                        warnings.push(format!(
                            "--token-env: {count} tokens render {name}; it holds the last one \
                             the broker returned (as Atmos does); git still gets every token"
                        ));
                    }
                    env.insert(name, t.token.clone());
                }
                Ok(())
            }
        }
    }
}

/// Split a template into text and placeholders: `{owner}`, `{host}` (contract) and
/// `{{ .owner }}`, `{{ .host }}` (Atmos, any inner spacing). Anything else in braces is an error.
fn parse_template(flag: &str) -> Result<Vec<Part>, RenderError> {
    let unknown = |placeholder: &str| RenderError::UnknownPlaceholder {
        template: flag.to_owned(),
        placeholder: placeholder.to_owned(),
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = flag;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let (open, close, dotted) = if rest.starts_with("{{") {
                    ("{{", "}}", true)
                } else {
                    ("{", "}", false)
                };
                let body = &rest[open.len()..];
                let Some(end) = body.find(close) else {
                    return Err(RenderError::UnmatchedBrace(flag.to_owned()));
                };
                let inner = &body[..end];
                let whole = &rest[..open.len() + end + close.len()];
                let field = if dotted {
                    inner.trim().strip_prefix('.')
                } else {
                    Some(inner)
                };
                let part = match field {
                    Some("owner") => Part::Owner,
                    Some("host") => Part::Host,
                    _ => return Err(unknown(whole)),
                };
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(part);
                rest = &rest[whole.len()..];
            }
            '}' => return Err(RenderError::UnmatchedBrace(flag.to_owned())),
            other => {
                text.push(other);
                rest = &rest[other.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Render then sanitise as Atmos does: uppercase, anything outside `[A-Z0-9_]` becomes `_`.
fn render_name(parts: &[Part], t: &ClientToken) -> String {
    let mut raw = String::new();
    for part in parts {
        raw.push_str(match part {
            Part::Text(s) => s,
            Part::Owner => &t.owner,
            Part::Host => &t.host,
        });
    }
    raw.to_uppercase()
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A portable env var name (`[A-Za-z_][A-Za-z0-9_]*`) that does not collide with our git keys.
fn check_name(flag: &str, name: &str) -> Result<(), RenderError> {
    // Sanitising leaves only [A-Z0-9_]; a leading digit is accepted by `env` and exported by
    // Atmos (`1PASSWORD_TOKEN`), so only the empty name is refused here.
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(RenderError::InvalidName {
            flag: flag.to_owned(),
            name: name.to_owned(),
        });
    }
    if name.to_ascii_uppercase().starts_with(RESERVED_ENV_PREFIX) {
        return Err(RenderError::ReservedName {
            flag: flag.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}
