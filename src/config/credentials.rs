//! `[session]`, `[admin]` and `[tokens]`: the credentials the broker issues, accepts and seals
//! with, and the bounds that keep them safe.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

/// Shortest session lifetime we accept: the client re-authenticates 5 minutes before `exp`, so a
/// session must outlive that margin with room to spare.
pub const MIN_SESSION_TTL_SECONDS: u64 = 600;
/// Longest session lifetime: a session is a bearer credential; a day bounds the damage of a leak.
pub const MAX_SESSION_TTL_SECONDS: u64 = 86_400;
/// Shortest operator token: shorter is guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// `[session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Lifetime of session JWTs.
    pub ttl_seconds: u64,
}

impl SessionConfig {
    /// The session lifetime. A `std` duration, so adding it to a time needs no fallible
    /// conversion; validation keeps it between the minimum and a day.
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ttl_seconds)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { ttl_seconds: 3600 }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the operator bearer token.
    pub token_file: Option<PathBuf>,
    /// The token inline (prefer the file or the env var).
    pub token: Option<SecretString>,
}

/// `[tokens]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// File holding 32 random bytes, base64: the AEAD key that seals tokens for later revoke.
    pub encryption_key_file: Option<PathBuf>,
    /// The key inline (base64).
    pub encryption_key: Option<SecretString>,
    /// Files of keys replaced by a rotation: they still open the tokens (and the session signing
    /// key) they sealed; nothing new is sealed with them. Drop one once everything it sealed has
    /// expired (a token lives at most an hour).
    pub previous_encryption_key_files: Vec<PathBuf>,
}
