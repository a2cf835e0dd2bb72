//! What the simulator knows and keeps: the App, its installations, the tokens it issued (and
//! revoked), the failures to inject next, and the request log. One lock guards all of it.

use super::wire::{
    gh_error, not_found, AccessTokenBody, GhError, MSG_PERMISSIONS_NOT_GRANTED,
    MSG_REPOSITORY_NOT_ACCESSIBLE, MSG_SUSPENDED,
};
use super::{SimInstallation, SimRepo, SimRequest};
use axum::http::StatusCode;
use jsonwebtoken::DecodingKey;
use rand::RngExt as _;
use rsa::traits::PublicKeyParts as _;
use rsa::PublicKey as RsaPublicKey;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::{Duration, OffsetDateTime};

/// Lifetime of installation tokens: GitHub's is one hour
/// (<https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>).
pub const TOKEN_LIFETIME: Duration = Duration::hours(1);
/// GitHub's cap on `repositories` + `repository_ids` in one token request (same page).
pub const MAX_TOKEN_REPOSITORIES: usize = 500;
/// Length of the random part of simulated `ghs_` tokens (GitHub's classic format).
pub const TOKEN_RANDOM_CHARS: usize = 36;

/// What the simulator saw about one token it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTokenInfo {
    /// Installation id.
    pub installation_id: i64,
    /// `owner/name` it reaches.
    pub repositories: Vec<String>,
    /// Permissions it carries.
    pub permissions: BTreeMap<String, String>,
    /// Revoked through `DELETE /installation/token`.
    pub revoked: bool,
}

/// What an installation token may do to one repository (see [`GitHubSimulator::token_access`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAccess {
    /// Not a token the simulator issued, or revoked, or expired: GitHub's "Bad credentials".
    Invalid,
    /// A live token that does not reach the repository (or the repository does not exist).
    NoAccess,
    /// A live token that reaches the repository with these permissions.
    Reaches {
        /// The token's permissions (`contents: read|write`, …).
        permissions: BTreeMap<String, String>,
    },
}

/// One token as the simulator keeps it.
#[derive(Debug, Clone)]
pub(super) struct TokenRecord {
    pub(super) installation_id: i64,
    /// Repository ids it reaches; `None` = every repository of the installation.
    pub(super) repository_ids: Option<Vec<i64>>,
    permissions: BTreeMap<String, String>,
    expires_at: OffsetDateTime,
    revoked: bool,
}

impl TokenRecord {
    fn is_live(&self, now: OffsetDateTime) -> bool {
        !self.revoked && self.expires_at > now
    }

    /// Whether the token's scope includes `repo` (of its own installation).
    fn reaches(&self, repo: &SimRepo) -> bool {
        self.repository_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&repo.id))
    }
}

/// A token just issued, with what the answer reports about it.
#[derive(Debug)]
pub(super) struct IssuedToken {
    pub(super) token: String,
    pub(super) expires_at: OffsetDateTime,
    pub(super) permissions: BTreeMap<String, String>,
    /// The repositories asked for; `None` when the request named none (the whole installation).
    pub(super) repositories: Option<Vec<SimRepo>>,
}

/// An injected failure, served instead of the next request's real answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct InjectedFailure {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<u64>,
}

/// Shared mutable state.
pub(super) struct SimState {
    pub(super) app_id: String,
    /// Every private key the App has on GitHub verifies its JWTs, until it is deleted.
    pub(super) app_keys: Vec<DecodingKey>,
    pub(super) installations: BTreeMap<i64, SimInstallation>,
    tokens: HashMap<String, TokenRecord>,
    minted: u64,
    revoked: u64,
    failures: VecDeque<InjectedFailure>,
    /// Every request received, in order.
    requests: Vec<SimRequest>,
    /// Shortest and longest wait before a token POST's answer (see `set_mint_delay`).
    mint_delay: (std::time::Duration, std::time::Duration),
    /// Wait before a token DELETE's answer (see `set_revoke_delay`).
    revoke_delay: std::time::Duration,
}

/// Rank of a permission level; `None` for anything GitHub does not know (`writ`).
pub(crate) fn level_rank(level: &str) -> Option<u8> {
    match level {
        "read" => Some(1),
        "write" => Some(2),
        "admin" => Some(3),
        _ => None,
    }
}

impl SimState {
    pub(super) fn find_by_login(&self, login: &str) -> Option<&SimInstallation> {
        self.installations
            .values()
            .find(|installation| installation.account_login.eq_ignore_ascii_case(login))
    }

    /// The record of `token` if GitHub would accept it now.
    pub(super) fn live_token(&self, token: &str) -> Option<&TokenRecord> {
        self.tokens
            .get(token)
            .filter(|record| record.is_live(OffsetDateTime::now_utc()))
    }

    /// `(full_name, repo)` of every repository a token reaches.
    pub(super) fn reachable(&self, record: &TokenRecord) -> Vec<(String, SimRepo)> {
        let Some(installation) = self.installations.get(&record.installation_id) else {
            return Vec::new();
        };
        installation
            .repositories
            .iter()
            .filter(|repo| record.reaches(repo))
            .map(|repo| {
                (
                    format!("{}/{}", installation.account_login, repo.name),
                    repo.clone(),
                )
            })
            .collect()
    }

    /// Log `request`, and take the failure to answer it with, if one is queued.
    pub(super) fn record(&mut self, request: SimRequest) -> Option<InjectedFailure> {
        self.requests.push(request);
        self.failures.pop_front()
    }

    /// The installation `id` if it may have a token now: 404 when unknown, 403 when suspended.
    pub(super) fn minting_installation(&self, id: i64) -> Result<SimInstallation, GhError> {
        let installation = self.installations.get(&id).ok_or_else(not_found)?;
        if installation.suspended {
            return Err(gh_error(StatusCode::FORBIDDEN, MSG_SUSPENDED));
        }
        Ok(installation.clone())
    }

    /// Check `request` against `installation` as GitHub does (422 for too many repositories,
    /// one it does not reach, or a permission above its own) and issue the token.
    pub(super) fn issue_token(
        &mut self,
        installation: &SimInstallation,
        request: AccessTokenBody,
    ) -> Result<IssuedToken, GhError> {
        let names = request.repositories.unwrap_or_default();
        let ids = request.repository_ids.unwrap_or_default();
        if names.len() + ids.len() > MAX_TOKEN_REPOSITORIES {
            return Err(gh_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Too many repositories were requested. The maximum is 500.",
            ));
        }
        let subset = !names.is_empty() || !ids.is_empty();
        let mut selected: Vec<SimRepo> = Vec::new();
        let not_accessible = || {
            gh_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                MSG_REPOSITORY_NOT_ACCESSIBLE,
            )
        };
        let by_name = names
            .iter()
            .map(|name| installation.repository(name).ok_or_else(not_accessible));
        let by_id = ids.iter().map(|wanted| {
            installation
                .repositories
                .iter()
                .find(|repo| repo.id == *wanted)
                .ok_or_else(not_accessible)
        });
        for repo in by_name.chain(by_id) {
            let repo = repo?;
            if !selected.contains(repo) {
                selected.push(repo.clone());
            }
        }
        let permissions = granted_permissions(installation, request.permissions)?;

        let random: String = rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(TOKEN_RANDOM_CHARS)
            .map(char::from)
            .collect();
        let token = format!("ghs_{random}");
        let expires_at = OffsetDateTime::now_utc() + TOKEN_LIFETIME;
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                installation_id: installation.id,
                repository_ids: subset.then(|| selected.iter().map(|repo| repo.id).collect()),
                permissions: permissions.clone(),
                expires_at,
                revoked: false,
            },
        );
        self.minted += 1;
        Ok(IssuedToken {
            token,
            expires_at,
            permissions,
            repositories: subset.then_some(selected),
        })
    }

    /// Revoke `token` (`DELETE /installation/token`, made with the token itself).
    pub(super) fn revoke(&mut self, token: &str) {
        if let Some(record) = self.tokens.get_mut(token) {
            record.revoked = true;
        }
        self.revoked += 1;
    }
}

/// The permissions a token gets: those requested, if each is within the installation's, else
/// the installation's own; `metadata: read` always, as GitHub grants it to every token.
fn granted_permissions(
    installation: &SimInstallation,
    requested: Option<BTreeMap<String, serde_json::Value>>,
) -> Result<BTreeMap<String, String>, GhError> {
    let mut permissions = BTreeMap::new();
    match requested.filter(|requested| !requested.is_empty()) {
        Some(requested) => {
            let not_granted = || {
                gh_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    MSG_PERMISSIONS_NOT_GRANTED,
                )
            };
            for (permission, level) in requested {
                let level = level.as_str().ok_or_else(not_granted)?.to_owned();
                let wanted = level_rank(&level).ok_or_else(not_granted)?;
                // GitHub grants metadata read to every installation token.
                let implied = permission == "metadata" && level == "read";
                let ceiling = installation
                    .permissions
                    .get(&permission)
                    .and_then(|ceiling| level_rank(ceiling));
                if !implied && ceiling.is_none_or(|ceiling| wanted > ceiling) {
                    return Err(not_granted());
                }
                permissions.insert(permission, level);
            }
        }
        None => permissions.clone_from(&installation.permissions),
    }
    permissions
        .entry("metadata".to_owned())
        .or_insert_with(|| "read".to_owned());
    Ok(permissions)
}

/// The simulator's configuration and state. Cheap to clone (shared state).
#[derive(Clone)]
pub struct GitHubSimulator {
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for GitHubSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("GitHubSimulator")
            .field("app_id", &state.app_id)
            .field("installations", &state.installations.len())
            .finish_non_exhaustive()
    }
}

impl GitHubSimulator {
    /// A simulator for the App `app_id` (App JWT `iss`; the numeric id or the client id) whose
    /// JWTs are verified with `app_public_key`.
    pub fn new(app_id: &str, app_public_key: RsaPublicKey) -> Self {
        Self {
            state: Arc::new(Mutex::new(SimState {
                app_id: app_id.to_owned(),
                app_keys: vec![decoding_key(&app_public_key)],
                installations: BTreeMap::new(),
                tokens: HashMap::new(),
                minted: 0,
                revoked: 0,
                failures: VecDeque::new(),
                requests: Vec::new(),
                mint_delay: Default::default(),
                revoke_delay: Default::default(),
            })),
        }
    }

    /// The App's keys are now `public_keys`: as on GitHub, where an App may hold several private
    /// keys at once (to rotate one) and each verifies until it is deleted.
    pub fn set_app_keys(&self, public_keys: &[RsaPublicKey]) {
        self.lock().app_keys = public_keys.iter().map(decoding_key).collect();
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock must not cascade into every other request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add or replace an installation.
    pub fn add_installation(&self, installation: SimInstallation) {
        self.lock()
            .installations
            .insert(installation.id, installation);
    }

    /// A copy of an installation as it stands now.
    pub fn installation(&self, installation_id: i64) -> Option<SimInstallation> {
        self.lock().installations.get(&installation_id).cloned()
    }

    /// Suspend or unsuspend an installation.
    pub fn set_suspended(&self, installation_id: i64, suspended: bool) {
        if let Some(installation) = self.lock().installations.get_mut(&installation_id) {
            installation.suspended = suspended;
        }
    }

    /// Is `token` an installation token that GitHub would accept now?
    pub fn token_is_live(&self, token: &str) -> bool {
        self.lock().live_token(token).is_some()
    }

    /// What the simulator knows about `token` (also after revocation).
    pub fn token_info(&self, token: &str) -> Option<SimTokenInfo> {
        let state = self.lock();
        let record = state.tokens.get(token)?;
        let repositories = state
            .reachable(record)
            .into_iter()
            .map(|(full_name, _)| full_name)
            .collect();
        Some(SimTokenInfo {
            installation_id: record.installation_id,
            repositories,
            permissions: record.permissions.clone(),
            revoked: record.revoked,
        })
    }

    /// Make `token` expired now (as if its hour had passed). Returns whether it was known.
    pub fn expire_token(&self, token: &str) -> bool {
        match self.lock().tokens.get_mut(token) {
            Some(record) => {
                record.expires_at = OffsetDateTime::now_utc() - Duration::seconds(1);
                true
            }
            None => false,
        }
    }

    /// How many tokens were minted and revoked so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.minted, state.revoked)
    }

    /// Answer the next `n` requests (any route) with `status` instead of the real answer.
    /// `retry_after` adds a `Retry-After` header (seconds). A 403 is a primary rate limit
    /// (`X-RateLimit-Remaining: 0`, reset after `retry_after` or 60 s), a 429 a secondary one;
    /// anything else is a bare GitHub error body.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut state = self.lock();
        state.failures.extend(std::iter::repeat_n(
            InjectedFailure {
                status,
                retry_after,
            },
            n,
        ));
    }

    /// How many requests so far had a path starting with `path_prefix` (e.g.
    /// `/users/acme/installation`, or `/` for all). Injected failures count too.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|request| request.path.starts_with(path_prefix))
            .count()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.lock().requests.clone()
    }

    /// Append a request served by another surface of the simulator (git smart HTTP) to the log.
    pub(crate) fn record_request(&self, request: SimRequest) {
        self.lock().requests.push(request);
    }

    /// Every repository of every installation, as `(owner login, repo)` with GitHub's spelling.
    pub fn repositories(&self) -> Vec<(String, SimRepo)> {
        self.lock()
            .installations
            .values()
            .flat_map(|installation| {
                installation
                    .repositories
                    .iter()
                    .map(|repo| (installation.account_login.clone(), repo.clone()))
            })
            .collect()
    }

    /// The repository `owner/name` (both case-insensitive, as GitHub matches them), as
    /// `(owner login, repo)` with GitHub's spelling.
    pub fn find_repository(&self, owner: &str, name: &str) -> Option<(String, SimRepo)> {
        let state = self.lock();
        let installation = state.find_by_login(owner)?;
        let repo = installation.repository(name)?;
        Some((installation.account_login.clone(), repo.clone()))
    }

    /// What `token` may do to `owner/name` now: the check every git request goes through.
    pub fn token_access(&self, token: &str, owner: &str, name: &str) -> TokenAccess {
        let state = self.lock();
        let Some(record) = state.live_token(token) else {
            return TokenAccess::Invalid;
        };
        let reaches = state
            .find_by_login(owner)
            .filter(|installation| installation.id == record.installation_id)
            .and_then(|installation| installation.repository(name))
            .is_some_and(|repo| record.reaches(repo));
        if reaches {
            TokenAccess::Reaches {
                permissions: record.permissions.clone(),
            }
        } else {
            TokenAccess::NoAccess
        }
    }
}

/// A slow GitHub, and what it minted: for tests of callers that give up.
impl GitHubSimulator {
    /// Answer every token POST (`/app/installations/{id}/access_tokens`) `delay` late. The token
    /// is minted first, as GitHub does while its answer is on the way.
    pub fn set_mint_delay(&self, delay: std::time::Duration) {
        self.set_mint_delay_between(delay, delay);
    }

    /// Like [`Self::set_mint_delay`], each answer late by a random time in `min..=max`.
    pub fn set_mint_delay_between(&self, min: std::time::Duration, max: std::time::Duration) {
        self.lock().mint_delay = (min, max.max(min));
    }

    /// Answer every token DELETE (`/installation/token`) `delay` late, after revoking.
    pub fn set_revoke_delay(&self, delay: std::time::Duration) {
        self.lock().revoke_delay = delay;
    }

    /// How late a request is answered: token POSTs and DELETEs as set, the rest at once.
    pub(super) fn delay_for(&self, method: &axum::http::Method, path: &str) -> std::time::Duration {
        let state = self.lock();
        if method == axum::http::Method::POST && path.ends_with("/access_tokens") {
            let (min, max) = state.mint_delay;
            if max <= min {
                return min;
            }
            return rand::rng().random_range(min..=max);
        }
        if method == axum::http::Method::DELETE && path == "/installation/token" {
            return state.revoke_delay;
        }
        std::time::Duration::ZERO
    }

    /// Every token minted so far (installation tokens, revoked or not), with what it reaches.
    pub fn issued_tokens(&self) -> Vec<(String, SimTokenInfo)> {
        let tokens: Vec<String> = self.lock().tokens.keys().cloned().collect();
        tokens
            .into_iter()
            .filter_map(|token| self.token_info(&token).map(|info| (token, info)))
            .collect()
    }
}

/// The verifying key of an App's RSA public key.
fn decoding_key(public_key: &RsaPublicKey) -> DecodingKey {
    DecodingKey::from_rsa_raw_components(
        &public_key.n().to_be_bytes_trimmed_vartime(),
        &public_key.e().to_be_bytes_trimmed_vartime(),
    )
}
