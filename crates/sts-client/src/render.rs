//! Materialisation: turn minted tokens into the environment git, Terraform and `gh` read, in the
//! exact shape Atmos CLI's `github/sts` integration writes (`pkg/auth/integrations/github/sts.go`),
//! and print that environment as bash, dotenv, JSON or a GitHub Actions env file.
//!
//! Everything here is pure: the caller writes files and prints.
//!
//! # Git routing
//!
//! Each usable token (host, owner and token all present) gets, in response order, the base
//! `https://x-access-token:TOKEN@HOST/OWNER/` rewriting `https://HOST/OWNER/` and
//! `ssh://git@HOST/OWNER/`, either inline (`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, `--git-config-mode
//! env`) or in a file pulled in by `include.path` (`file`). With one token per (host, owner) the
//! output is byte for byte what Atmos writes.
//!
//! Where Atmos falls short: git rewrites by longest matching `insteadOf` prefix, and among equally
//! long prefixes takes the first one configured, so two tokens of one owner (different permission
//! sets) would leave every URL of that owner on the first token. When a (host, owner) has several
//! tokens we therefore
//! - keep one owner-level rewrite: the first token without a repository list (it reaches the whole
//!   installation), else the first token;
//! - add per-repository rewrites for every token of that owner that lists repositories, so
//!   `https://HOST/OWNER/REPO…` goes to a token known to reach `REPO`. When two tokens list the same
//!   repository the first one keeps it;
//! - warn about tokens git can never pick (a second whole-installation token of the same owner).
//!
//! The per-repository prefix depends on what else could serve the owner. Prefixes have no end
//! anchor, so `https://HOST/OWNER/modules` also matches `https://HOST/OWNER/modules-extra`:
//! - when no token of that owner covers the whole installation, nothing reaches an unlisted
//!   repository anyway, so the bare prefix `https://HOST/OWNER/REPO` (and its `ssh://git@` twin) is
//!   used: it covers `REPO`, `REPO.git` and `REPO/…`, and listed siblings such as `modules-extra`
//!   still win by being longer;
//! - when a whole-installation token exists, an unlisted sibling must fall through to it, so the
//!   prefixes are `…/REPO.git` and `…/REPO/` only. A bare `https://HOST/OWNER/REPO` URL then uses
//!   the whole-installation token, which reaches `REPO` too (perhaps with fewer permissions). The
//!   one collision left is a sibling whose name starts with `REPO.git` (`REPO.github.io`): git has
//!   no end anchor, so it goes to `REPO`'s token.
//!
//! These rules were checked against git 2.47 itself (`ls-remote` to a local server logging the
//! credentials each URL was rewritten to); the tests replay git's matching rule.
//!
//! # Raw token export (`--token-env`)
//!
//! As in Atmos: the default name `ATMOS_PRO_GITHUB_TOKEN`, or a literal name, is exported only when
//! exactly one token has a token and an owner; a template (`{owner}`/`{host}`, or Atmos's
//! `{{ .owner }}`/`{{ .host }}`) is rendered per token, uppercased, and every character outside
//! `[A-Z0-9_]` becomes `_`. When several tokens render the same name (one owner, several permission
//! sets) the name holds the token without a repository list if there is one, else the last one in
//! response order (Atmos's last-write-wins), and a warning says so.

use crate::model::ClientToken;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

/// Atmos's default `token_env`: Atmos's own GitHub consumers (go-getter, REST, CI statuses) read
/// it, so exporting it lets a single-owner mint work there without configuration.
pub(crate) const DEFAULT_TOKEN_ENV: &str = "ATMOS_PRO_GITHUB_TOKEN";

/// The user name GitHub expects in front of an installation token.
pub(crate) const GIT_TOKEN_USER: &str = "x-access-token";

/// Token env names may not start with this: they would clobber the `GIT_CONFIG_*` variables that
/// carry the rewrites (and `GIT_CONFIG` itself names a config file to git).
const RESERVED_ENV_PREFIX: &str = "GIT_CONFIG";

/// Characters allowed in a token, besides ASCII letters and digits. Tokens end up inside URLs, git
/// config keys, a git config file, shell lines and GitHub workflow commands; a broker that sent a
/// quote, a newline or a slash could otherwise rewrite git configuration (e.g. add
/// `core.sshCommand`) or smuggle a workflow command. GitHub tokens are `ghs_` + base62.
const TOKEN_FORBIDDEN_CHARS: &str = "@";

/// Characters allowed in an owner or repository name besides ASCII letters and digits (GitHub
/// logins and repository names use a subset of these); same reason as [`TOKEN_EXTRA_CHARS`].
const NAME_EXTRA_CHARS: &str = "-._";

/// Characters allowed in a host besides ASCII letters and digits: a port, an IPv6 literal.
const HOST_EXTRA_CHARS: &str = "-._:[]";

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
            .field(
                "git_config_file",
                &self.git_config_file.as_ref().map(|_| "[redacted]"),
            )
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

/// One `[url "<base>"]` section: the authenticated base and the prefixes it replaces.
struct Rewrite {
    base: String,
    instead_of: Vec<String>,
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
    let safe = safe_tokens(tokens, &mut warnings);
    let rewrites = plan_rewrites(&safe, &mut warnings);

    let mut env = BTreeMap::new();
    let mut git_config_file = None;
    match include_path {
        None => {
            let mut n = 0usize;
            for rewrite in &rewrites {
                let key = format!("url.{}.insteadOf", rewrite.base);
                for value in &rewrite.instead_of {
                    env.insert(format!("GIT_CONFIG_KEY_{n}"), key.clone());
                    env.insert(format!("GIT_CONFIG_VALUE_{n}"), value.clone());
                    n += 1;
                }
            }
            if n > 0 {
                env.insert("GIT_CONFIG_COUNT".to_owned(), n.to_string());
            }
        }
        Some(path) => {
            // Atmos emits the include even for an empty file, so an empty mint still yields it.
            env.insert("GIT_CONFIG_COUNT".to_owned(), "1".to_owned());
            env.insert("GIT_CONFIG_KEY_0".to_owned(), "include.path".to_owned());
            env.insert("GIT_CONFIG_VALUE_0".to_owned(), path);
            git_config_file = Some(config_file_contents(&rewrites));
        }
    }

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

/// The file-mode config, in Atmos's layout (Go's `%q` equals git's quoting for the characters a
/// safe base can hold).
fn config_file_contents(rewrites: &[Rewrite]) -> String {
    let mut out = String::new();
    for rewrite in rewrites {
        // A subsection is a quoted string: `"` and `\` are escaped, as Go's %q does in Atmos.
        let quoted = rewrite.base.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "[url \"{quoted}\"]");
        for value in &rewrite.instead_of {
            let _ = writeln!(out, "\tinsteadOf = {value}");
        }
    }
    out
}

fn all_chars(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// The token value can go into a URL's userinfo, a config line, a shell line or a workflow
/// command: no control characters or whitespace (which would end a line or a word) and no `@`
/// (which would end the userinfo early and point git at a host the token names). Anything else a
/// broker sends is written as Atmos writes it (file mode escapes `"` and `\`).
pub(crate) fn token_value_is_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !TOKEN_FORBIDDEN_CHARS.contains(c))
}

fn host_is_safe(host: &str) -> bool {
    all_chars(host, HOST_EXTRA_CHARS)
}

fn name_is_safe(name: &str) -> bool {
    all_chars(name, NAME_EXTRA_CHARS) && name != "." && name != ".."
}

/// Every field can be written into git configuration (empty fields are judged elsewhere).
pub(crate) fn fields_are_safe(t: &ClientToken) -> bool {
    (t.token.is_empty() || token_value_is_safe(&t.token))
        && host_is_safe(&t.host)
        && name_is_safe(&t.owner)
}

/// Tokens whose fields can be written anywhere; the others are dropped with a warning that names
/// the position only (a hostile field must not reach the terminal either).
fn safe_tokens<'a>(tokens: &'a [ClientToken], warnings: &mut Vec<String>) -> Vec<&'a ClientToken> {
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if fields_are_safe(t) {
            out.push(t);
        } else {
            warnings.push(format!(
                "skipping token #{} from the broker: its host, owner or token holds characters \
                 that are unsafe in git configuration",
                i + 1
            ));
        }
    }
    out
}

fn base(host: &str, owner: &str, token: &str, rest: &str) -> String {
    format!("https://{GIT_TOKEN_USER}:{token}@{host}/{owner}/{rest}")
}

/// The repository names a token lists under its own owner, in order; malformed entries are skipped.
fn listed_repos(t: &ClientToken) -> Vec<&str> {
    let Some(repos) = &t.repositories else {
        return Vec::new();
    };
    repos
        .iter()
        .filter_map(|full| {
            let (owner, name) = full.split_once('/')?;
            (owner.eq_ignore_ascii_case(&t.owner) && !name.is_empty() && name_is_safe(name))
                .then_some(name)
        })
        .collect()
}

/// The rewrites for the usable tokens, in response order (see the module docs for the rules).
fn plan_rewrites(tokens: &[&ClientToken], warnings: &mut Vec<String>) -> Vec<Rewrite> {
    let usable: Vec<&ClientToken> = tokens.iter().copied().filter(|t| t.is_usable()).collect();

    // Per (host, owner): how many tokens, and which one keeps the owner-level prefix. Exact
    // strings, because git's prefix match is case-sensitive.
    let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, t) in usable.iter().enumerate() {
        groups
            .entry((t.host.as_str(), t.owner.as_str()))
            .or_default()
            .push(i);
    }
    let owner_level = |members: &[usize]| -> usize {
        members
            .iter()
            .copied()
            .find(|&i| usable[i].repositories.is_none())
            .or_else(|| members.first().copied())
            .unwrap_or_default()
    };

    let mut rewrites = Vec::new();
    let mut taken_prefixes: HashSet<String> = HashSet::new();
    for (i, t) in usable.iter().enumerate() {
        let (host, owner) = (t.host.as_str(), t.owner.as_str());
        let members = groups
            .get(&(host, owner))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let chosen = owner_level(members);
        let owner_prefixes = vec![
            format!("https://{host}/{owner}/"),
            format!("ssh://git@{host}/{owner}/"),
        ];
        if members.len() <= 1 {
            rewrites.push(Rewrite {
                base: base(host, owner, &t.token, ""),
                instead_of: owner_prefixes,
            });
            continue;
        }
        if i == chosen {
            rewrites.push(Rewrite {
                base: base(host, owner, &t.token, ""),
                instead_of: owner_prefixes,
            });
        } else if t.repositories.is_none() {
            warnings.push(format!(
                "git cannot use one of the {} tokens for {host}/{owner}: it covers the whole \
                 installation, like an earlier token that already takes the owner prefix",
                members.len()
            ));
            continue;
        }
        let whole_installation_exists = usable[chosen].repositories.is_none();
        let suffixes: &[&str] = if whole_installation_exists {
            &[".git", "/"]
        } else {
            &[""]
        };
        for repo in listed_repos(t) {
            for suffix in suffixes {
                let https = format!("https://{host}/{owner}/{repo}{suffix}");
                // The first token listing a repository keeps it: git would take the first of two
                // equal prefixes anyway, so a second rewrite would only be noise.
                if !taken_prefixes.insert(https.clone()) {
                    continue;
                }
                rewrites.push(Rewrite {
                    base: base(host, owner, &t.token, &format!("{repo}{suffix}")),
                    instead_of: vec![https, format!("ssh://git@{host}/{owner}/{repo}{suffix}")],
                });
            }
        }
    }
    rewrites
}

/// One piece of a `--token-env` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Owner,
    Host,
}

/// `--token-env`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenEnvSpec {
    Off,
    Literal { name: String, user_set: bool },
    Template { flag: String, parts: Vec<Part> },
}

impl TokenEnvSpec {
    fn parse(token_env: &TokenEnv) -> Result<Self, RenderError> {
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

    fn apply(
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

/// `env --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EnvFormat {
    /// `export KEY='value'` lines for `eval`.
    Bash,
    /// One pretty-printed JSON object, keys sorted.
    Json,
    /// `KEY='value'` lines, as Atmos writes them.
    Dotenv,
    /// Bare `KEY=value` lines (Atmos's `env` format), for tools that read them verbatim.
    Env,
    /// `$GITHUB_ENV` lines; multi-line values as heredocs.
    Github,
}

/// Print `env` in `format`, keys sorted.
///
/// - bash: every value single-quoted, `'` written as `'\''`, so `eval` never expands anything.
/// - dotenv: `KEY='value'` with `'` written as `'\''`, byte for byte what Atmos CLI writes, so
///   files from either tool compare equal; python-dotenv, Docker Compose and `source` read the
///   values back unchanged (everything we emit is free of quotes and newlines).
/// - env: `KEY=value`, unquoted (Atmos's `env` format).
/// - github: `KEY=value`, or `KEY<<STS_EOF_<random hex>` … heredoc when the value spans lines, the
///   delimiter checked to be absent from the value.
pub(crate) fn format_env(env: &BTreeMap<String, String>, format: EnvFormat) -> String {
    let mut out = String::new();
    match format {
        EnvFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = env
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let _ = writeln!(out, "{:#}", serde_json::Value::Object(map));
        }
        EnvFormat::Bash => {
            for (k, v) in env {
                let _ = writeln!(out, "export {k}='{}'", v.replace('\'', r"'\''"));
            }
        }
        EnvFormat::Dotenv => {
            for (k, v) in env {
                let _ = writeln!(out, "{k}='{}'", v.replace('\'', r"'\''"));
            }
        }
        EnvFormat::Env => {
            for (k, v) in env {
                let _ = writeln!(out, "{k}={v}");
            }
        }
        EnvFormat::Github => {
            for (k, v) in env {
                if v.contains(['\n', '\r']) {
                    let delimiter = heredoc_delimiter(v);
                    let _ = writeln!(out, "{k}<<{delimiter}\n{v}\n{delimiter}");
                } else {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
        }
    }
    out
}

/// A heredoc delimiter that does not occur in `value`; random so a value cannot be crafted to
/// close the heredoc early and inject further variables.
fn heredoc_delimiter(value: &str) -> String {
    let mut rng = rand::thread_rng();
    loop {
        let delimiter = format!("STS_EOF_{}", hex::encode(rng.gen::<[u8; 16]>()));
        if !value.contains(&delimiter) {
            return delimiter;
        }
    }
}

/// `::add-mask::TOKEN` lines (GitHub Actions workflow command) for every distinct token that
/// [`environment`] can print; the caller writes them to stdout when `GITHUB_ACTIONS=true`.
pub(crate) fn add_mask_lines(tokens: &[ClientToken]) -> String {
    let mut seen = HashSet::new();
    let mut out = String::new();
    for t in tokens {
        // An unsafe token is never printed, and a newline in it would end the command early.
        if token_value_is_safe(&t.token) && seen.insert(t.token.as_str()) {
            // The runner unescapes workflow-command data, so a `%` in the token must be escaped.
            let _ = writeln!(
                out,
                "::add-mask::{}",
                crate::ui::escape_command_data(&t.token)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tok;
    use std::path::Path;

    fn env_opts(token_env: TokenEnv) -> RenderOptions {
        RenderOptions {
            mode: GitConfigMode::Env,
            token_env,
            git_config_path: None,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// git's `alias_url` (remote.c): the longest matching `insteadOf` wins, and among equally long
    /// ones the first `url.<base>` section configured; sections are ordered by first appearance.
    fn git_rewrite(env: &BTreeMap<String, String>, url: &str) -> Option<String> {
        let count: usize = env.get("GIT_CONFIG_COUNT")?.parse().ok()?;
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for n in 0..count {
            let key = &env[&format!("GIT_CONFIG_KEY_{n}")];
            let value = env[&format!("GIT_CONFIG_VALUE_{n}")].clone();
            let base = key
                .strip_prefix("url.")
                .and_then(|k| k.strip_suffix(".insteadOf"))
                .unwrap()
                .to_owned();
            match sections.iter_mut().find(|(b, _)| *b == base) {
                Some((_, values)) => values.push(value),
                None => sections.push((base, vec![value])),
            }
        }
        let mut best: Option<(&str, &str)> = None;
        for (base, values) in &sections {
            for value in values {
                if url.starts_with(value.as_str())
                    && best.is_none_or(|(_, v)| v.len() < value.len())
                {
                    best = Some((base, value));
                }
            }
        }
        best.map(|(base, value)| format!("{base}{}", &url[value.len()..]))
    }

    #[test]
    fn one_token_renders_exactly_what_atmos_writes() {
        let tokens = [tok("github.com", "acme", "ghs_A", Some(&["acme/modules"]))];
        let got = environment(&tokens, &env_opts(TokenEnv::Default)).unwrap();
        let key = "url.https://x-access-token:ghs_A@github.com/acme/.insteadOf";
        assert_eq!(
            got.env,
            map(&[
                ("GIT_CONFIG_COUNT", "2"),
                ("GIT_CONFIG_KEY_0", key),
                ("GIT_CONFIG_VALUE_0", "https://github.com/acme/"),
                ("GIT_CONFIG_KEY_1", key),
                ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/acme/"),
                ("ATMOS_PRO_GITHUB_TOKEN", "ghs_A"),
            ])
        );
        assert_eq!(got.git_config_file, None);
        assert!(got.warnings.is_empty());
    }

    #[test]
    fn one_token_per_owner_keeps_response_order_and_drops_the_default_export() {
        let tokens = [
            tok("github.com", "beta", "ghs_B", None),
            tok("ghe.example.com:8443", "acme", "ghs_A", Some(&["acme/x"])),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Default)).unwrap();
        let b = "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf";
        let a = "url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf";
        assert_eq!(
            got.env,
            map(&[
                ("GIT_CONFIG_COUNT", "4"),
                ("GIT_CONFIG_KEY_0", b),
                ("GIT_CONFIG_VALUE_0", "https://github.com/beta/"),
                ("GIT_CONFIG_KEY_1", b),
                ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/beta/"),
                ("GIT_CONFIG_KEY_2", a),
                ("GIT_CONFIG_VALUE_2", "https://ghe.example.com:8443/acme/"),
                ("GIT_CONFIG_KEY_3", a),
                ("GIT_CONFIG_VALUE_3", "ssh://git@ghe.example.com:8443/acme/"),
            ])
        );
        // The default name skips quietly, as in Atmos (debug log only).
        assert!(got.warnings.is_empty());
    }

    #[test]
    fn tokens_missing_a_field_are_skipped_like_atmos() {
        let cases: &[(&str, Vec<ClientToken>, BTreeMap<String, String>)] = &[
            ("no tokens", vec![], BTreeMap::new()),
            (
                "no host: no rewrite, but Atmos still exports it (token and owner suffice)",
                vec![tok("", "acme", "ghs_A", None)],
                map(&[("ATMOS_PRO_GITHUB_TOKEN", "ghs_A")]),
            ),
            (
                "no owner, no token",
                vec![
                    tok("github.com", "", "ghs_A", None),
                    tok("github.com", "acme", "", None),
                ],
                BTreeMap::new(),
            ),
            (
                "a host-less token still counts against the single-token export",
                vec![
                    tok("", "acme", "ghs_A", None),
                    tok("github.com", "beta", "ghs_B", None),
                ],
                map(&[
                    ("GIT_CONFIG_COUNT", "2"),
                    (
                        "GIT_CONFIG_KEY_0",
                        "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf",
                    ),
                    ("GIT_CONFIG_VALUE_0", "https://github.com/beta/"),
                    (
                        "GIT_CONFIG_KEY_1",
                        "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf",
                    ),
                    ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/beta/"),
                ]),
            ),
        ];
        for (name, tokens, want) in cases {
            let got = environment(tokens, &env_opts(TokenEnv::Default)).unwrap();
            assert_eq!(&got.env, want, "{name}");
        }
    }

    #[test]
    fn file_mode_writes_atmos_layout_and_points_include_path_at_it() {
        let tokens = [
            tok("github.com", "acme", "ghs_A", None),
            tok("github.com", "beta", "ghs_B", None),
        ];
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Name("GH_TOKEN_{{ .owner }}".to_owned()),
            git_config_path: Some(PathBuf::from("/state/git.config")),
        };
        let got = environment(&tokens, &opts).unwrap();
        assert_eq!(
            got.git_config_file.as_deref(),
            Some(
                "[url \"https://x-access-token:ghs_A@github.com/acme/\"]\n\
                 \tinsteadOf = https://github.com/acme/\n\
                 \tinsteadOf = ssh://git@github.com/acme/\n\
                 [url \"https://x-access-token:ghs_B@github.com/beta/\"]\n\
                 \tinsteadOf = https://github.com/beta/\n\
                 \tinsteadOf = ssh://git@github.com/beta/\n"
            )
        );
        assert_eq!(
            got.env,
            map(&[
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "include.path"),
                ("GIT_CONFIG_VALUE_0", "/state/git.config"),
                ("GH_TOKEN_ACME", "ghs_A"),
                ("GH_TOKEN_BETA", "ghs_B"),
            ])
        );
    }

    #[test]
    fn file_mode_with_no_tokens_still_includes_the_empty_file_like_atmos() {
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Default,
            git_config_path: Some(PathBuf::from("/state/git.config")),
        };
        let got = environment(&[], &opts).unwrap();
        assert_eq!(got.git_config_file.as_deref(), Some(""));
        assert_eq!(
            got.env,
            map(&[
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "include.path"),
                ("GIT_CONFIG_VALUE_0", "/state/git.config"),
            ])
        );
    }

    #[test]
    fn file_mode_needs_an_absolute_path() {
        for (path, want) in [
            (None, "--git-config-mode file needs a path"),
            (Some("git.config"), "needs an absolute git config path"),
        ] {
            let opts = RenderOptions {
                mode: GitConfigMode::File,
                token_env: TokenEnv::Default,
                git_config_path: path.map(PathBuf::from),
            };
            let err = environment(&[], &opts).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn git_config_mode_parses_env_and_file_only() {
        assert_eq!("env".parse::<GitConfigMode>().unwrap(), GitConfigMode::Env);
        assert_eq!(
            "file".parse::<GitConfigMode>().unwrap(),
            GitConfigMode::File
        );
        for bad in ["", "ENV", "files", "inline"] {
            let err = bad.parse::<GitConfigMode>().unwrap_err().to_string();
            assert!(
                err.contains("--git-config-mode must be env or file"),
                "{err}"
            );
        }
    }

    #[test]
    fn token_env_flag_maps_absent_empty_and_named() {
        assert_eq!(TokenEnv::from_flag(None), TokenEnv::Default);
        assert_eq!(TokenEnv::from_flag(Some("")), TokenEnv::Disabled);
        assert_eq!(
            TokenEnv::from_flag(Some("GH_TOKEN")),
            TokenEnv::Name("GH_TOKEN".to_owned())
        );
    }

    #[test]
    fn disabled_token_env_exports_no_raw_token() {
        let tokens = [tok("github.com", "acme", "ghs_A", None)];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        assert_eq!(got.env.len(), 5);
        assert!(!got.env.values().any(|v| v == "ghs_A"));
    }

    #[test]
    fn literal_token_env_exports_one_token_and_warns_when_there_are_several() {
        let one = [tok("github.com", "acme", "ghs_A", None)];
        let got = environment(&one, &env_opts(TokenEnv::from_flag(Some("GH_TOKEN")))).unwrap();
        assert_eq!(got.env.get("GH_TOKEN").map(String::as_str), Some("ghs_A"));
        assert!(!got.env.contains_key(DEFAULT_TOKEN_ENV));

        let two = [
            tok("github.com", "acme", "ghs_A", None),
            tok("github.com", "beta", "ghs_B", None),
        ];
        let got = environment(&two, &env_opts(TokenEnv::from_flag(Some("GH_TOKEN")))).unwrap();
        assert!(!got.env.contains_key("GH_TOKEN"));
        assert_eq!(got.warnings.len(), 1);
        assert!(got.warnings[0].contains("2 tokens"), "{:?}", got.warnings);
        assert!(!got.warnings[0].contains("ghs_"));
    }

    #[test]
    fn templates_render_per_token_and_sanitise_like_atmos() {
        let cases = [
            (
                "GH_TOKEN_{owner}",
                "github.com",
                "acme-labs",
                "GH_TOKEN_ACME_LABS",
            ),
            (
                "GH_TOKEN_{{ .owner }}",
                "github.com",
                "acme",
                "GH_TOKEN_ACME",
            ),
            ("GH_TOKEN_{{.owner}}", "github.com", "Acme", "GH_TOKEN_ACME"),
            (
                "TOKEN_{{ .host }}_{{ .owner }}",
                "github.com",
                "acme",
                "TOKEN_GITHUB_COM_ACME",
            ),
            (
                "TOKEN_{host}",
                "127.0.0.1:8443",
                "acme",
                "TOKEN_127_0_0_1_8443",
            ),
            (
                "gh-token-{owner}",
                "github.com",
                "acme.io",
                "GH_TOKEN_ACME_IO",
            ),
            ("{owner}", "github.com", "acme", "ACME"),
        ];
        for (flag, host, owner, want) in cases {
            let tokens = [tok(host, owner, "ghs_A", None)];
            let got = environment(&tokens, &env_opts(TokenEnv::from_flag(Some(flag)))).unwrap();
            assert_eq!(
                got.env.get(want).map(String::as_str),
                Some("ghs_A"),
                "{flag}"
            );
        }
    }

    #[test]
    fn bad_token_env_names_are_errors_naming_the_flag() {
        let tokens = [tok("github.com", "42corp", "ghs_A", None)];
        let cases = [
            ("GH_{repo}", "unknown placeholder \"{repo}\""),
            ("GH_{{ .repo }}", "unknown placeholder \"{{ .repo }}\""),
            ("GH_{{ owner }}", "unknown placeholder"),
            ("GH_{{- .owner }}", "unknown placeholder"),
            ("GH_{ owner }", "unknown placeholder"),
            ("GH_{owner", "unmatched brace"),
            ("GH_owner}", "unmatched brace"),
            ("GH_{{ .owner }", "unmatched brace"),
            ("MY-TOKEN", "not a valid environment variable name"),
            ("GIT_CONFIG_COUNT", "clobber git's GIT_CONFIG"),
        ];
        for (flag, want) in cases {
            let err = environment(&tokens, &env_opts(TokenEnv::from_flag(Some(flag))))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--token-env"), "{flag}: {err}");
            assert!(err.contains(want), "{flag}: {err}");
        }
    }

    #[test]
    fn a_template_name_that_cannot_be_used_skips_that_token_only() {
        let tokens = [
            tok("github.com", "42corp", "ghs_A", None),
            tok("github.com", "acme", "ghs_B", None),
        ];
        // A leading digit is fine (Atmos exports it too).
        let got = environment(
            &tokens,
            &env_opts(TokenEnv::from_flag(Some("{owner}_TOKEN"))),
        )
        .unwrap();
        assert_eq!(got.env["42CORP_TOKEN"], "ghs_A");
        assert_eq!(got.env["ACME_TOKEN"], "ghs_B");
        // A name that would clobber git's variables is skipped with a warning; the rest stays.
        let got = environment(
            &tokens,
            &env_opts(TokenEnv::from_flag(Some("GIT_CONFIG_{owner}"))),
        )
        .unwrap();
        assert!(!got.env.contains_key("GIT_CONFIG_ACME"));
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
        assert!(
            got.warnings
                .iter()
                .any(|w| w.contains("clobber git's GIT_CONFIG")),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn odd_but_harmless_token_characters_are_written_as_atmos_writes_them() {
        let tokens = [tok("github.com", "acme", "ab/c+d=\"e\\f", None)];
        let got = environment(&tokens, &env_opts(TokenEnv::Default)).unwrap();
        assert_eq!(
            got.env["GIT_CONFIG_KEY_0"],
            "url.https://x-access-token:ab/c+d=\"e\\f@github.com/acme/.insteadOf"
        );
        assert_eq!(got.env["ATMOS_PRO_GITHUB_TOKEN"], "ab/c+d=\"e\\f");
        let file_opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Default,
            git_config_path: Some(std::path::PathBuf::from("/tmp/state/git.config")),
        };
        let file = environment(&tokens, &file_opts)
            .unwrap()
            .git_config_file
            .unwrap();
        assert!(
            file.starts_with(
                "[url \"https://x-access-token:ab/c+d=\\\"e\\\\f@github.com/acme/\"]\n"
            ),
            "{file}"
        );
        // `@` would move the host: refused.
        let got = environment(
            &[tok("github.com", "acme", "x@evil.example/", None)],
            &env_opts(TokenEnv::Default),
        )
        .unwrap();
        assert!(got.env.is_empty());
    }

    #[test]
    fn template_errors_surface_even_without_tokens() {
        let err = environment(&[], &env_opts(TokenEnv::from_flag(Some("X_{nope}"))));
        assert!(matches!(err, Err(RenderError::UnknownPlaceholder { .. })));
    }

    #[test]
    fn two_tokens_rendering_one_name_pick_deterministically_and_warn() {
        let flag = TokenEnv::from_flag(Some("GH_TOKEN_{owner}"));
        let cases = [
            (
                "the later token wins, as Atmos's last-write-wins",
                vec![
                    tok("github.com", "acme", "ghs_W", None),
                    tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
                ],
                "ghs_S",
            ),
            (
                "scoped first",
                vec![
                    tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
                    tok("github.com", "acme", "ghs_W", None),
                ],
                "ghs_W",
            ),
            (
                "two scoped tokens: the last, as Atmos",
                vec![
                    tok("github.com", "acme", "ghs_1", Some(&["acme/a"])),
                    tok("github.com", "acme", "ghs_2", Some(&["acme/b"])),
                ],
                "ghs_2",
            ),
            (
                "owners differing only in case collide after uppercasing",
                vec![
                    tok("github.com", "Acme", "ghs_1", None),
                    tok("github.com", "acme", "ghs_2", None),
                ],
                "ghs_2",
            ),
        ];
        for (name, tokens, want) in cases {
            let got = environment(&tokens, &env_opts(flag.clone())).unwrap();
            assert_eq!(got.env["GH_TOKEN_ACME"], want, "{name}");
            let warning = got
                .warnings
                .iter()
                .find(|w| w.contains("render GH_TOKEN_ACME"))
                .unwrap();
            assert!(warning.contains("2 tokens"), "{name}: {warning}");
        }
    }

    #[test]
    fn several_tokens_of_one_owner_with_a_whole_installation_token_route_by_repository() {
        let tokens = [
            tok(
                "github.com",
                "acme",
                "ghs_S",
                Some(&["acme/modules", "beta/ignored"]),
            ),
            tok("github.com", "acme", "ghs_W", None),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        let w = "url.https://x-access-token:ghs_W@github.com/acme/.insteadOf";
        let s_git = "url.https://x-access-token:ghs_S@github.com/acme/modules.git.insteadOf";
        let s_dir = "url.https://x-access-token:ghs_S@github.com/acme/modules/.insteadOf";
        assert_eq!(
            got.env,
            map(&[
                ("GIT_CONFIG_COUNT", "6"),
                ("GIT_CONFIG_KEY_0", s_git),
                ("GIT_CONFIG_VALUE_0", "https://github.com/acme/modules.git"),
                ("GIT_CONFIG_KEY_1", s_git),
                (
                    "GIT_CONFIG_VALUE_1",
                    "ssh://git@github.com/acme/modules.git"
                ),
                ("GIT_CONFIG_KEY_2", s_dir),
                ("GIT_CONFIG_VALUE_2", "https://github.com/acme/modules/"),
                ("GIT_CONFIG_KEY_3", s_dir),
                ("GIT_CONFIG_VALUE_3", "ssh://git@github.com/acme/modules/"),
                ("GIT_CONFIG_KEY_4", w),
                ("GIT_CONFIG_VALUE_4", "https://github.com/acme/"),
                ("GIT_CONFIG_KEY_5", w),
                ("GIT_CONFIG_VALUE_5", "ssh://git@github.com/acme/"),
            ])
        );
        let routes = [
            (
                "https://github.com/acme/modules.git",
                Some("ghs_S@github.com/acme/modules.git"),
            ),
            (
                "https://github.com/acme/modules/sub",
                Some("ghs_S@github.com/acme/modules/sub"),
            ),
            (
                "ssh://git@github.com/acme/modules.git",
                Some("ghs_S@github.com/acme/modules.git"),
            ),
            // Bare URL and unlisted siblings fall through to the token that reaches them.
            (
                "https://github.com/acme/modules",
                Some("ghs_W@github.com/acme/modules"),
            ),
            (
                "https://github.com/acme/modules-extra.git",
                Some("ghs_W@github.com/acme/modules-extra.git"),
            ),
            // The documented residual collision: git prefixes cannot end at `.git`.
            (
                "https://github.com/acme/modules.github.io",
                Some("ghs_S@github.com/acme/modules.github.io"),
            ),
            (
                "https://github.com/acme/other",
                Some("ghs_W@github.com/acme/other"),
            ),
            ("https://github.com/beta/modules.git", None),
        ];
        for (url, want) in routes {
            let got = git_rewrite(&got.env, url);
            let want = want.map(|w| format!("https://x-access-token:{w}"));
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn several_scoped_tokens_of_one_owner_route_by_longest_repository_prefix() {
        let tokens = [
            tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
            tok(
                "github.com",
                "acme",
                "ghs_2",
                Some(&["ACME/modules-extra", "acme/infra"]),
            ),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "8");
        assert_eq!(
            got.env["GIT_CONFIG_KEY_2"],
            "url.https://x-access-token:ghs_1@github.com/acme/modules.insteadOf"
        );
        assert_eq!(
            got.env["GIT_CONFIG_VALUE_2"],
            "https://github.com/acme/modules"
        );
        let routes = [
            (
                "https://github.com/acme/modules",
                "ghs_1@github.com/acme/modules",
            ),
            (
                "https://github.com/acme/modules.git",
                "ghs_1@github.com/acme/modules.git",
            ),
            (
                "https://github.com/acme/modules-extra",
                "ghs_2@github.com/acme/modules-extra",
            ),
            (
                "ssh://git@github.com/acme/modules-extra.git",
                "ghs_2@github.com/acme/modules-extra.git",
            ),
            (
                "https://github.com/acme/infra.git",
                "ghs_2@github.com/acme/infra.git",
            ),
            (
                "https://github.com/acme/unlisted",
                "ghs_1@github.com/acme/unlisted",
            ),
        ];
        for (url, want) in routes {
            assert_eq!(
                git_rewrite(&got.env, url),
                Some(format!("https://x-access-token:{want}")),
                "{url}"
            );
        }
    }

    #[test]
    fn a_second_whole_installation_token_of_one_owner_is_reported_not_routed() {
        let tokens = [
            tok("github.com", "acme", "ghs_R", None),
            tok("github.com", "acme", "ghs_W", None),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "2");
        assert!(!got.env.values().any(|v| v.contains("ghs_W")));
        assert_eq!(got.warnings.len(), 1);
        assert!(
            got.warnings[0].contains("github.com/acme"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn a_repository_listed_twice_keeps_the_first_token() {
        let tokens = [
            tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
            tok("github.com", "acme", "ghs_2", Some(&["acme/modules"])),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        // Owner prefix and modules for ghs_1; nothing left for ghs_2.
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
        assert!(!got.env.values().any(|v| v.contains("ghs_2")));
    }

    #[test]
    fn owners_differing_in_case_are_separate_prefixes_for_git() {
        let tokens = [
            tok("github.com", "Acme", "ghs_1", Some(&["Acme/a"])),
            tok("github.com", "acme", "ghs_2", Some(&["acme/b"])),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
        assert_eq!(
            git_rewrite(&got.env, "https://github.com/Acme/a"),
            Some("https://x-access-token:ghs_1@github.com/Acme/a".to_owned())
        );
    }

    #[test]
    fn file_mode_carries_the_per_repository_sections_too() {
        let tokens = [
            tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
            tok("github.com", "acme", "ghs_2", Some(&["acme/infra"])),
        ];
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Disabled,
            git_config_path: Some(PathBuf::from("/s/git.config")),
        };
        let got = environment(&tokens, &opts).unwrap();
        assert_eq!(
            got.git_config_file.unwrap(),
            "[url \"https://x-access-token:ghs_1@github.com/acme/\"]\n\
             \tinsteadOf = https://github.com/acme/\n\
             \tinsteadOf = ssh://git@github.com/acme/\n\
             [url \"https://x-access-token:ghs_1@github.com/acme/modules\"]\n\
             \tinsteadOf = https://github.com/acme/modules\n\
             \tinsteadOf = ssh://git@github.com/acme/modules\n\
             [url \"https://x-access-token:ghs_2@github.com/acme/infra\"]\n\
             \tinsteadOf = https://github.com/acme/infra\n\
             \tinsteadOf = ssh://git@github.com/acme/infra\n"
        );
    }

    #[test]
    fn tokens_that_could_inject_git_configuration_are_dropped_with_a_warning() {
        let hostile = [
            tok(
                "github.com",
                "acme",
                "ghs_A\n[core]\n\tsshCommand = evil",
                None,
            ),
            tok("github.com", "acme\"]\n[core", "ghs_B", None),
            tok("github.com/evil", "acme", "ghs_C", None),
            tok("github.com", "acme", "ghs_D@evil", None),
            tok("gith ub.com", "acme", "ghs_E", None),
            tok("github.com", "ac/me", "ghs_F", None),
        ];
        for t in hostile {
            let got = environment(std::slice::from_ref(&t), &env_opts(TokenEnv::Default)).unwrap();
            assert!(got.env.is_empty(), "{:?}", got.env);
            assert_eq!(got.warnings.len(), 1);
            assert!(!got.warnings[0].contains("ghs_"));
            assert!(got.warnings[0].contains("#1"));
        }
    }

    #[test]
    fn malformed_repository_entries_get_no_rewrite() {
        let tokens = [
            tok("github.com", "acme", "ghs_1", None),
            tok(
                "github.com",
                "acme",
                "ghs_2",
                Some(&["acme/", "modules", "acme/a b", "acme/..", "acme/ok"]),
            ),
        ];
        let got = environment(&tokens, &env_opts(TokenEnv::Disabled)).unwrap();
        // Owner prefix (2) + ok.git and ok/ (2 each).
        assert_eq!(got.env["GIT_CONFIG_COUNT"], "6");
    }

    fn sample_env() -> BTreeMap<String, String> {
        map(&[
            (
                "B_PLAIN",
                "url.https://x-access-token:ghs_A@github.com/acme/.insteadOf",
            ),
            ("A_QUOTE", "it's a \"test\""),
            ("C_MULTI", "line one\nline two $HOME `id` # \\"),
            ("D_EMPTY", ""),
        ])
    }

    #[test]
    fn bash_format_single_quotes_everything_and_round_trips_through_sh() {
        let out = format_env(&sample_env(), EnvFormat::Bash);
        assert_eq!(
            out.lines().next().unwrap(),
            r#"export A_QUOTE='it'\''s a "test"'"#
        );
        assert!(out.contains("export D_EMPTY=''\n"));
        let keys: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split('=').next())
            .collect();
        assert_eq!(keys, ["A_QUOTE", "B_PLAIN", "C_MULTI", "D_EMPTY"]);

        // The real test of the quoting: a shell reads every value back unchanged.
        for (key, value) in sample_env() {
            let script = format!("{out}printf '%s' \"${key}\"");
            let got = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(got.status.success());
            assert_eq!(String::from_utf8(got.stdout).unwrap(), value, "{key}");
        }
    }

    #[test]
    fn dotenv_and_env_formats_are_atmos_byte_for_byte() {
        let cases = [
            ("ghs_abc123", "K='ghs_abc123'", "K=ghs_abc123"),
            (
                "url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf",
                "K='url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf'",
                "K=url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf",
            ),
            ("", "K=''", "K="),
            ("$HOME", "K='$HOME'", "K=$HOME"),
            ("it's", "K='it'\\''s'", "K=it's"),
        ];
        for (value, dotenv, env) in cases {
            let out = format_env(&map(&[("K", value)]), EnvFormat::Dotenv);
            assert_eq!(out, format!("{dotenv}\n"), "{value:?}");
            let out = format_env(&map(&[("K", value)]), EnvFormat::Env);
            assert_eq!(out, format!("{env}\n"), "{value:?}");
        }
    }

    #[test]
    fn json_format_is_a_sorted_object_that_parses_back() {
        let out = format_env(&sample_env(), EnvFormat::Json);
        let parsed: BTreeMap<String, String> = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, sample_env());
        let a = out.find("A_QUOTE").unwrap();
        let d = out.find("D_EMPTY").unwrap();
        assert!(a < d);
        assert!(out.ends_with("}\n"));
    }

    /// Parse a `$GITHUB_ENV` file the way the Actions runner does.
    fn parse_github_env(text: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut lines = text.split('\n');
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            if let Some((key, delimiter)) = line.split_once("<<") {
                let mut value = Vec::new();
                for l in lines.by_ref() {
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                out.insert(key.to_owned(), value.join("\n"));
            } else {
                let (key, value) = line.split_once('=').unwrap();
                out.insert(key.to_owned(), value.to_owned());
            }
        }
        out
    }

    #[test]
    fn github_format_uses_heredocs_with_an_absent_delimiter_for_multiline_values() {
        let mut env = sample_env();
        env.insert(
            "E_TRICKY".to_owned(),
            "STS_EOF_\nSTS_EOF_00\nend".to_owned(),
        );
        let out = format_env(&env, EnvFormat::Github);
        assert!(out.starts_with("A_QUOTE=it's a \"test\"\nB_PLAIN="));
        assert!(out.contains("\nD_EMPTY=\n"));
        let heredoc = out.lines().find(|l| l.starts_with("C_MULTI<<")).unwrap();
        let delimiter = heredoc.strip_prefix("C_MULTI<<").unwrap();
        assert!(delimiter.starts_with("STS_EOF_") && delimiter.len() == 8 + 32);
        assert!(!env["C_MULTI"].contains(delimiter));
        assert_eq!(parse_github_env(&out), env);
    }

    #[test]
    fn mask_lines_cover_each_printable_token_once() {
        let tokens = [
            tok("github.com", "acme", "ghs_A", None),
            tok("github.com", "beta", "ghs_A", None),
            tok("", "", "ghs_B", None),
            tok("github.com", "acme", "", None),
            tok("github.com", "acme", "bad\n::set-env", None),
        ];
        assert_eq!(
            add_mask_lines(&tokens),
            "::add-mask::ghs_A\n::add-mask::ghs_B\n"
        );
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let tokens = [tok("github.com", "acme", "ghs_SECRET", None)];
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Default,
            git_config_path: Some(PathBuf::from("/s/git.config")),
        };
        let shown = format!("{:?}", environment(&tokens, &opts).unwrap());
        assert!(!shown.contains("ghs_SECRET"), "{shown}");
        assert!(shown.contains("ATMOS_PRO_GITHUB_TOKEN"), "{shown}");
    }

    #[test]
    fn include_path_is_passed_through_verbatim() {
        let path = Path::new("/home/runner/.local/share/sts client/git.config");
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Disabled,
            git_config_path: Some(path.to_path_buf()),
        };
        let got = environment(&[], &opts).unwrap();
        assert_eq!(got.env["GIT_CONFIG_VALUE_0"], path.to_str().unwrap());
    }
}
