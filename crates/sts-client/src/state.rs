//! Minted tokens cached on disk between invocations, so that one job's steps share one mint.
//!
//! One directory per (broker URL, workspace, policy, sources) under the state root, mode 0700,
//! holding `state.json` (0600) and, in file mode, `git.config` (0600). A damaged state file is
//! ignored (and re-minted over), never fatal: the cache must not be able to break a job.

use crate::model::{ClientToken, Exclusion};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Tokens are reused until this long before `expiresAt` (Atmos's `tokenExpirySkew`), so that a
/// command never starts with a token about to die.
pub(crate) const TOKEN_EXPIRY_SKEW: Duration = Duration::seconds(60);
/// A session is re-authenticated this long before its `exp` (what Atmos does), so that a mint
/// never races the session's expiry.
pub(crate) const SESSION_EXPIRY_SKEW: Duration = Duration::minutes(5);
/// Largest state file read; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// Bumped when the layout changes; other versions are ignored (re-minted), never misread.
const STATE_VERSION: u32 = 1;
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const GIT_CONFIG_FILE: &str = "git.config";

/// What identifies one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StateKey {
    pub(crate) broker_url: String,
    pub(crate) workspace: String,
    pub(crate) policy: String,
    /// Sorted and de-duplicated, so `--repo a --repo b` and `--repo b --repo a` share state.
    pub(crate) sources: Vec<String>,
    /// `--permission` downscoping; a different set is a different cache entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) permissions: BTreeMap<String, String>,
}

impl StateKey {
    pub(crate) fn new(broker_url: &str, workspace: &str, policy: &str, sources: &[String]) -> Self {
        Self {
            broker_url: broker_url.trim_end_matches('/').to_owned(),
            workspace: workspace.to_owned(),
            policy: policy.to_owned(),
            sources: normalised_sources(sources),
            permissions: BTreeMap::new(),
        }
    }

    /// Directory name: a digest, so that no part of the key needs escaping.
    fn dir_name(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.broker_url, &self.workspace, &self.policy] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        for source in &self.sources {
            hasher.update(source.as_bytes());
            hasher.update([0]);
        }
        // Only when set, so the entries of clients that never downscope keep their names.
        for (name, level) in &self.permissions {
            hasher.update(format!("permission:{name}={level}").as_bytes());
            hasher.update([0]);
        }
        hex::encode(&hasher.finalize()[..16])
    }
}

/// Sources as a key holds them: sorted and de-duplicated.
pub(crate) fn normalised_sources(sources: &[String]) -> Vec<String> {
    let mut sources = sources.to_vec();
    sources.sort();
    sources.dedup();
    sources
}

/// The session, kept so that `logout` can revoke through the broker in a later step.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedSession {
    pub(crate) token: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(crate) expires_at: Option<OffsetDateTime>,
}

debug_redacting!(SavedSession {
    expires_at;
    redacted: token
});

impl SavedSession {
    /// Usable for another call now (Atmos: expired when `now > exp − 5 min`; no `exp` = never).
    pub(crate) fn is_fresh(&self, now: OffsetDateTime) -> bool {
        self.expires_at
            .is_none_or(|exp| now < exp - SESSION_EXPIRY_SKEW)
    }
}

/// The state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct State {
    pub(crate) version: u32,
    pub(crate) key: StateKey,
    #[serde(default)]
    pub(crate) session: Option<SavedSession>,
    #[serde(default)]
    pub(crate) tokens: Vec<ClientToken>,
    #[serde(default)]
    pub(crate) excluded: Vec<Exclusion>,
    /// Tokens replaced by a later mint while still live: no longer handed out, still revoked by
    /// `logout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) retired: Vec<ClientToken>,
    /// git reported a token rejected (`erase`): mint again at the next chance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) remint: bool,
}

impl State {
    pub(crate) fn new(key: StateKey) -> Self {
        Self {
            version: STATE_VERSION,
            key,
            session: None,
            tokens: Vec::new(),
            excluded: Vec::new(),
            retired: Vec::new(),
            remint: false,
        }
    }

    /// Before the tokens are replaced: keep the ones still live for `logout`, forget dead ones.
    pub(crate) fn retire_live(&mut self, now: OffsetDateTime) {
        let tokens = std::mem::take(&mut self.tokens);
        self.retired.extend(tokens);
        self.retired
            .retain(|t| !t.token.is_empty() && t.expires_at().is_none_or(|exp| exp > now));
    }

    /// Reuse without a network call? At least one token, every token present and more than
    /// [`TOKEN_EXPIRY_SKEW`] from expiry (Atmos's `hasFreshState`).
    pub(crate) fn tokens_are_fresh(&self, now: OffsetDateTime) -> bool {
        !self.remint
            && !self.tokens.is_empty()
            && self.tokens.iter().all(|token| {
                !token.token.is_empty()
                    && token
                        .expires_at()
                        .is_some_and(|exp| exp - TOKEN_EXPIRY_SKEW > now)
            })
    }
}

/// The state root: `--state-dir`, else `$XDG_DATA_HOME/sts-client`, else
/// `~/.local/share/sts-client`. Data, not cache: CI cache actions must not carry tokens across jobs.
pub(crate) fn default_root() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return Some(xdg.join("sts-client"));
        }
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/sts-client"))
}

/// One entry's directory.
pub(crate) fn dir_for(root: &Path, key: &StateKey) -> PathBuf {
    root.join(key.dir_name())
}

/// Load the state in `dir`. Missing, unreadable, damaged, foreign-version or key-mismatched
/// state is `None` (with a note on stderr for damage), never an error.
pub(crate) fn load(dir: &Path, key: Option<&StateKey>) -> Option<State> {
    let path = dir.join(STATE_FILE);
    let file = std::fs::File::open(&path).ok()?;
    let mut text = String::new();
    use std::io::Read as _;
    if file
        .take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .is_err()
        || text.len() as u64 > MAX_STATE_BYTES
    {
        crate::ui::note(&format!(
            "ignoring unreadable state {} (will mint again)",
            path.display()
        ));
        return None;
    }
    match serde_json::from_str::<State>(&text) {
        Ok(state) if state.version == STATE_VERSION && key.is_none_or(|k| *k == state.key) => {
            Some(state)
        }
        Ok(_) => None,
        Err(_) => {
            crate::ui::note(&format!(
                "ignoring damaged state {} (will mint again)",
                path.display()
            ));
            None
        }
    }
}

/// Every state under `root` (for `logout --all` and the credential helper's fallback).
pub(crate) fn load_all(root: &Path) -> Vec<(PathBuf, State)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut states: Vec<(PathBuf, State)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .filter_map(|dir| load(&dir, None).map(|state| (dir, state)))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    states
}

/// Write the state atomically (temp file + rename) with 0600 in a 0700 directory.
pub(crate) fn save(dir: &Path, state: &State) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    write_private(&dir.join(STATE_FILE), &json)
}

/// Exclusive lock on one entry, held while it is read, minted over and written, so that parallel
/// steps or git credential calls on one runner share one mint instead of racing (the loser's
/// session and tokens would vanish from the state unrevoked). Released when dropped.
pub(crate) fn lock_entry(dir: &Path) -> std::io::Result<std::fs::File> {
    let parent = dir.parent().unwrap_or_else(|| Path::new("."));
    create_private_dir(parent)?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(dir.with_extension("lock"))?;
    file.lock()?;
    Ok(file)
}

/// Remove an entry (idempotent).
pub(crate) fn remove(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Create `dir` and its missing parents as 0700, and tighten `dir` itself if it existed.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Write `bytes` to `path` through a 0600 temp file renamed into place, so a reader never sees
/// half a file and the secret is never world-readable, not even for a moment.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
