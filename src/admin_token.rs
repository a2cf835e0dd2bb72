//! The operator (admin) token, replaceable without a restart: when it comes from
//! `[admin] token_file`, the file is looked at on every admin request and re-read when it changed
//! (a Kubernetes Secret update swaps the file), so the new token works at once and the old one
//! stops working.

use crate::config::MIN_ADMIN_TOKEN_LEN;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// The accepted operator token.
pub struct AdminToken {
    /// The file to watch; `None` for an inline or environment token, which never changes.
    file: Option<PathBuf>,
    current: Mutex<Current>,
}

debug_showing!(AdminToken { file });

/// The token in force, as a digest, and the file state it was read from.
struct Current {
    /// SHA-256 of the token; `None` while the file holds no valid token (every call refused).
    digest: Option<[u8; 32]>,
    /// Modification time and length of the file when read.
    seen: Option<(SystemTime, u64)>,
}

impl AdminToken {
    /// `token` (already read and checked by the configuration), from `file` if it came from one.
    pub fn new(token: &SecretString, file: Option<PathBuf>) -> Self {
        let seen = file.as_deref().and_then(file_state);
        Self {
            file,
            current: Mutex::new(Current {
                digest: Some(digest(token)),
                seen,
            }),
        }
    }

    /// Whether `presented` is the operator token in force now.
    pub fn matches(&self, presented: &SecretString) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = &self.file {
            let state = file_state(file);
            if state != current.seen {
                current.seen = state;
                current.digest = read_token(file);
            }
        }
        // Digests of equal length: the comparison's timing says nothing about the token's bytes.
        current.digest == Some(digest(presented))
    }
}

fn digest(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

fn file_state(file: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The token now in `file`, or `None` (logged) when it cannot be read or is too short: a broken
/// replacement locks the admin API rather than keep accepting a token the operator replaced.
fn read_token(file: &std::path::Path) -> Option<[u8; 32]> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "admin token file {} unreadable: admin API refuses every call", file.display());
            return None;
        }
    };
    let token = SecretString::from(text.trim().to_owned());
    if token.expose_secret().len() < MIN_ADMIN_TOKEN_LEN {
        tracing::error!(
            "admin token file {} holds fewer than {MIN_ADMIN_TOKEN_LEN} characters: admin API refuses every call",
            file.display()
        );
        return None;
    }
    tracing::info!("admin token replaced from {}", file.display());
    Some(digest(&token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_replaced_token_file_takes_effect_at_once_and_the_old_token_stops_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let old = "o".repeat(40);
        std::fs::write(&path, &old).unwrap();
        let token = AdminToken::new(&secret(&old), Some(path.clone()));
        assert!(token.matches(&secret(&old)));

        let new = "n".repeat(41);
        std::fs::write(&path, format!("{new}\n")).unwrap();
        assert!(token.matches(&secret(&new)));
        assert!(!token.matches(&secret(&old)));

        // A broken replacement refuses everyone rather than keep a replaced token.
        std::fs::write(&path, "short").unwrap();
        assert!(!token.matches(&secret(&new)));
        assert!(!token.matches(&secret("short")));
    }

    #[test]
    fn an_inline_token_is_fixed_and_debug_shows_no_token() {
        let token = AdminToken::new(&secret(&"i".repeat(40)), None);
        assert!(token.matches(&secret(&"i".repeat(40))));
        assert!(!token.matches(&secret(&"j".repeat(40))));
        assert_eq!(format!("{token:?}"), "AdminToken { file: None, .. }");
    }
}
