//! The `insteadOf` rewrites that route each URL git fetches to a token that reaches it.
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

use super::safety::{name_is_safe, GIT_TOKEN_USER};
use crate::model::ClientToken;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// One `[url "<base>"]` section: the authenticated base and the prefixes it replaces.
pub(super) struct Rewrite {
    base: String,
    instead_of: Vec<String>,
}

/// `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` carrying every rewrite inline
/// (`--git-config-mode env`); nothing at all when there is none.
pub(super) fn insert_inline(rewrites: &[Rewrite], env: &mut BTreeMap<String, String>) {
    let mut n = 0usize;
    for rewrite in rewrites {
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

/// The one `include.path` entry that pulls in the config file (`--git-config-mode file`).
pub(super) fn insert_include(path: String, env: &mut BTreeMap<String, String>) {
    // Atmos emits the include even for an empty file, so an empty mint still yields it.
    env.insert("GIT_CONFIG_COUNT".to_owned(), "1".to_owned());
    env.insert("GIT_CONFIG_KEY_0".to_owned(), "include.path".to_owned());
    env.insert("GIT_CONFIG_VALUE_0".to_owned(), path);
}

/// The file-mode config, in Atmos's layout (Go's `%q` equals git's quoting for the characters a
/// safe base can hold).
pub(super) fn config_file_contents(rewrites: &[Rewrite]) -> String {
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
pub(super) fn plan(tokens: &[&ClientToken], warnings: &mut Vec<String>) -> Vec<Rewrite> {
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
