//! Materialisation: turn minted tokens into the environment git, Terraform and `gh` read, in the
//! exact shape Atmos CLI's `github/sts` integration writes (`pkg/auth/integrations/github/sts.go`),
//! and print that environment as bash, dotenv, JSON or a GitHub Actions env file.
//!
//! Everything here is pure: the caller writes files and prints.
//!
//! Inside: `safety` decides which broker values may be written into git configuration at all;
//! `rewrites` plans the `insteadOf` rewrites that route each URL to a token; `token_env` names
//! the variables that carry raw tokens; `format` prints the environment.

mod format;
mod rewrites;
mod safety;
#[cfg(test)]
mod tests;
mod token_env;

pub(crate) use format::{add_mask_lines, format_env, EnvFormat};
pub(crate) use safety::{fields_are_safe, token_value_is_safe, GIT_TOKEN_USER};
pub(crate) use token_env::TokenEnv;

use crate::model::{ClientToken, Redact as _};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use token_env::TokenEnvSpec;

/// How git receives the rewrites (`--git-config-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GitConfigMode {
    /// Inline `GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (Atmos default).
    Env,
    /// A 0600 file, written by the caller, pulled in by `include.path`; tokens stay out of the env.
    File,
}

impl FromStr for GitConfigMode {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "env" => Ok(Self::Env),
            "file" => Ok(Self::File),
            other => Err(RenderError::GitConfigMode(other.to_owned())),
        }
    }
}

/// What to render and where the file-mode config lives.
#[derive(Debug, Clone)]
pub(crate) struct RenderOptions {
    pub(crate) mode: GitConfigMode,
    pub(crate) token_env: TokenEnv,
    /// Absolute path `include.path` points at in file mode.
    pub(crate) git_config_path: Option<PathBuf>,
}

/// The rendered environment and, in file mode, the config file the caller writes (0600).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) git_config_file: Option<String>,
    /// Human-readable notes for stderr; they never contain a token.
    pub(crate) warnings: Vec<String>,
}

// Hand-written: values and the config file hold tokens, so `{:?}` shows only the keys.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("git_config_file", &self.git_config_file.redacted())
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Why the options cannot be rendered; every message names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("--git-config-mode must be env or file, not {0:?}")]
    GitConfigMode(String),
    #[error("--git-config-mode file needs a path for the git config file")]
    MissingGitConfigPath,
    #[error("--git-config-mode file needs an absolute git config path, not {0:?}")]
    RelativeGitConfigPath(PathBuf),
    #[error("--git-config-mode file needs a UTF-8 git config path, not {0:?}")]
    NonUtf8GitConfigPath(PathBuf),
    #[error("--token-env {template:?} has an unknown placeholder {placeholder:?}; use {{owner}} or {{host}}")]
    UnknownPlaceholder {
        template: String,
        placeholder: String,
    },
    #[error("--token-env {0:?} has an unmatched brace")]
    UnmatchedBrace(String),
    #[error("--token-env {flag:?} gives {name:?}, which is not a valid environment variable name")]
    InvalidName { flag: String, name: String },
    #[error("--token-env {flag:?} gives {name:?}, which would clobber git's GIT_CONFIG variables")]
    ReservedName { flag: String, name: String },
}

/// Render the environment (and file-mode config) for `tokens`, in response order.
pub(crate) fn environment(
    tokens: &[ClientToken],
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    // Validate the flags before looking at tokens so a bad flag fails even on an empty mint.
    let token_env = TokenEnvSpec::parse(&opts.token_env)?;
    let include_path = match opts.mode {
        GitConfigMode::Env => None,
        GitConfigMode::File => Some(include_path(opts.git_config_path.as_ref())?),
    };

    let mut warnings = Vec::new();
    let safe = safety::safe_tokens(tokens, &mut warnings);
    let rewrites = rewrites::plan(&safe, &mut warnings);

    let mut env = BTreeMap::new();
    let git_config_file = match include_path {
        None => {
            rewrites::insert_inline(&rewrites, &mut env);
            None
        }
        Some(path) => {
            rewrites::insert_include(path, &mut env);
            Some(rewrites::config_file_contents(&rewrites))
        }
    };

    token_env.apply(&safe, &mut env, &mut warnings)?;

    Ok(Rendered {
        env,
        git_config_file,
        warnings,
    })
}

fn include_path(path: Option<&PathBuf>) -> Result<String, RenderError> {
    let Some(path) = path else {
        return Err(RenderError::MissingGitConfigPath);
    };
    // git refuses relative includes from the command line/environment: there is no file to be
    // relative to.
    if !path.is_absolute() {
        return Err(RenderError::RelativeGitConfigPath(path.clone()));
    }
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| RenderError::NonUtf8GitConfigPath(path.clone()))
}
