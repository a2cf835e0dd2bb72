//! The client's flow: reuse cached tokens or exchange → mint → cache; and logout.

use crate::broker::{Broker, CallError, Session};
use crate::error::ClientError;
use crate::model::ClientToken;
use crate::oidc::OidcSource;
use crate::state::{self, SavedSession, State, StateKey};
use crate::ui;
use std::collections::BTreeMap;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Everything the commands share, resolved from flags and environment.
pub(crate) struct Context {
    pub(crate) http: reqwest::Client,
    pub(crate) broker_url: Option<String>,
    pub(crate) endpoint: String,
    pub(crate) workspace: Option<String>,
    /// `None` = not given (the default policy applies when minting; logout matches any).
    pub(crate) policy: Option<String>,
    pub(crate) sources: Vec<String>,
    /// `--permission`: downscoping; empty = everything granted.
    pub(crate) permissions: BTreeMap<String, String>,
    pub(crate) audience: String,
    pub(crate) oidc: OidcSource,
    pub(crate) state_root: Option<PathBuf>,
    pub(crate) github_api_url: Option<String>,
}

/// The policy used when none is named (Atmos's default).
pub(crate) const DEFAULT_POLICY: &str = "default";

/// Tokens ready to use, and where their state lives.
pub(crate) struct Obtained {
    pub(crate) dir: PathBuf,
    pub(crate) state: State,
}

impl Context {
    pub(crate) fn state_root(&self) -> Result<PathBuf, ClientError> {
        self.state_root.clone().ok_or_else(|| {
            ClientError::Usage(
                "no place for state: set --state-dir, XDG_DATA_HOME or HOME".to_owned(),
            )
        })
    }

    /// The cache key; needs the broker and the workspace.
    pub(crate) fn key(&self) -> Result<StateKey, ClientError> {
        let broker_url = self.broker_url.as_deref().ok_or_else(|| {
            ClientError::Usage(
                "no broker: pass --url or set STS_BROKER_URL (or ATMOS_PRO_BASE_URL)".to_owned(),
            )
        })?;
        let workspace = self.workspace.as_deref().ok_or_else(|| {
            ClientError::Usage(
                "no workspace: pass --workspace or set STS_WORKSPACE (or ATMOS_PRO_WORKSPACE_ID)"
                    .to_owned(),
            )
        })?;
        let policy = self.policy.as_deref().unwrap_or(DEFAULT_POLICY);
        let mut key = StateKey::new(broker_url, workspace, policy, &self.sources);
        key.permissions = self.permissions.clone();
        Ok(key)
    }

    fn broker_at(&self, url: &str) -> Broker {
        Broker::new(self.http.clone(), url, &self.endpoint)
    }

    /// Cached tokens if still fresh, else a new exchange (if needed) and mint.
    pub(crate) async fn obtain(&self) -> Result<Obtained, ClientError> {
        let key = self.key()?;
        let dir = state::dir_for(&self.state_root()?, &key);
        // Held until the state is saved; a second process waits, then reuses what this one minted.
        let _lock = state::lock_entry(&dir)
            .map_err(|e| ClientError::State(format!("could not lock {}: {e}", dir.display())))?;
        let now = OffsetDateTime::now_utc();
        let mut state = state::load(&dir, Some(&key)).unwrap_or_else(|| State::new(key.clone()));
        if state.tokens_are_fresh(now) {
            crate::mask_in_actions(&state.tokens);
            ui::note(&format!(
                "reusing {} minted earlier",
                count(state.tokens.len(), "token")
            ));
            return Ok(Obtained { dir, state });
        }
        let broker = self.broker_at(&key.broker_url);
        let policy = key.policy.clone();

        let mut fresh_session = false;
        let mut session = match state.session.as_ref().filter(|s| s.is_fresh(now)) {
            Some(saved) => Session {
                token: saved.token.clone().into(),
                expires_at: saved.expires_at,
            },
            None => {
                fresh_session = true;
                self.authenticate(&broker, &dir, &mut state).await?
            }
        };
        let minted = match broker.mint(&session, &key, &policy).await {
            Ok(minted) => minted,
            Err(CallError::SessionRefused(message)) if !fresh_session => {
                // A saved session can have been revoked or outlived: authenticate once more.
                ui::note(&format!(
                    "session refused ({message}); authenticating again"
                ));
                session = self
                    .authenticate(&broker, &dir, &mut state)
                    .await
                    .map_err(|error| {
                        if self.oidc.is_renewable() {
                            error
                        } else {
                            ClientError::SessionRejected(format!(
                                "{error}; the session expired and the OIDC token given \
                                 (--oidc-token, STS_OIDC_TOKEN or ACTIONS_ID_TOKEN) is single \
                                 use: pass a fresh one"
                            ))
                        }
                    })?;
                match broker.mint(&session, &key, &policy).await {
                    Ok(minted) => minted,
                    Err(CallError::SessionRefused(message)) => {
                        return Err(ClientError::SessionRejected(message))
                    }
                    Err(CallError::Other(error)) => return Err(error),
                }
            }
            Err(CallError::SessionRefused(message)) => {
                return Err(ClientError::SessionRejected(message))
            }
            Err(CallError::Other(error)) => return Err(error),
        };

        // Before anything else is printed, so that no later line can show a token unmasked.
        crate::mask_in_actions(&minted.tokens);
        for exclusion in &minted.excluded {
            ui::warn(&format!(
                "GitHub STS excluded {}: {}",
                exclusion.repo, exclusion.reason
            ));
        }
        let unusable = minted.tokens.iter().filter(|t| !t.is_usable()).count();
        if unusable > 0 {
            ui::warn(&format!(
                "{} lacked host, owner or token and will not be used",
                count(unusable, "token")
            ));
        }
        state.retire_live(OffsetDateTime::now_utc());
        state.tokens = minted.tokens;
        state.excluded = minted.excluded;
        state.remint = false;
        state::save(&dir, &state)
            .map_err(|e| ClientError::State(format!("could not save {}: {e}", dir.display())))?;
        ui::note(&summary(&state.tokens, state.excluded.len()));
        Ok(Obtained { dir, state })
    }

    /// Exchange a new OIDC token for a session, and save the session at once so that a later
    /// `logout` can end it even if the mint fails.
    async fn authenticate(
        &self,
        broker: &Broker,
        dir: &std::path::Path,
        state: &mut State,
    ) -> Result<Session, ClientError> {
        let oidc_token = self.oidc.token(&self.http, &self.audience).await?;
        let session = broker.exchange(&oidc_token, &state.key.workspace).await?;
        use secrecy::ExposeSecret as _;
        state.session = Some(SavedSession {
            token: session.token.expose_secret().to_owned(),
            expires_at: session.expires_at,
        });
        state::save(dir, state)
            .map_err(|e| ClientError::State(format!("could not save {}: {e}", dir.display())))?;
        Ok(session)
    }

    /// Every cached entry this invocation's flags select: all of them when no broker, workspace,
    /// policy or sources are given.
    pub(crate) fn matching_states(&self) -> Result<Vec<(PathBuf, State)>, ClientError> {
        let wanted_broker = self
            .broker_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        let wanted_sources =
            (!self.sources.is_empty()).then(|| state::normalised_sources(&self.sources));
        Ok(state::load_all(&self.state_root()?)
            .into_iter()
            .filter(|(_, state)| {
                wanted_broker
                    .as_ref()
                    .is_none_or(|b| *b == state.key.broker_url)
                    && self
                        .workspace
                        .as_ref()
                        .is_none_or(|w| *w == state.key.workspace)
                    && self.policy.as_ref().is_none_or(|p| *p == state.key.policy)
                    && wanted_sources
                        .as_ref()
                        .is_none_or(|s| *s == state.key.sources)
            })
            .collect())
    }

    /// Revoke one entry's tokens (through the broker; directly at GitHub for what the broker
    /// cannot reach), end its session and remove it. Returns how many tokens were revoked
    /// directly at GitHub. Idempotent.
    pub(crate) async fn logout(
        &self,
        dir: &std::path::Path,
        state: &State,
    ) -> Result<(), ClientError> {
        let _lock = state::lock_entry(dir)
            .map_err(|e| ClientError::State(format!("could not lock {}: {e}", dir.display())))?;
        // Another process may have minted over the entry since the caller read it.
        let current = state::load(dir, None);
        let state = current.as_ref().unwrap_or(state);
        let broker = self.broker_at(&state.key.broker_url);
        let mut broker_revoked = false;
        if let Some(saved) = &state.session {
            let session = Session {
                token: saved.token.clone().into(),
                expires_at: saved.expires_at,
            };
            if !state.tokens.is_empty() || !state.retired.is_empty() {
                let ids: Option<Vec<String>> = state
                    .tokens
                    .iter()
                    .chain(&state.retired)
                    .map(|t| t.id.clone())
                    .collect();
                match broker.revoke(&session, ids.as_deref()).await {
                    Ok(_) => broker_revoked = true,
                    Err(CallError::SessionRefused(message)) => ui::note(&format!(
                        "the broker refused the saved session ({message}); revoking at GitHub"
                    )),
                    Err(CallError::Other(error)) => {
                        ui::warn(&format!("{error}; revoking at GitHub instead"));
                    }
                }
            }
            match broker.end_session(&session).await {
                Ok(()) | Err(CallError::SessionRefused(_)) => {}
                Err(CallError::Other(error)) => ui::warn(&format!("{error}")),
            }
        }
        let mut failed = 0;
        if !broker_revoked {
            for token in state.tokens.iter().filter(|t| !t.token.is_empty()) {
                if let Err(message) =
                    crate::github::revoke(&self.http, self.github_api_url.as_deref(), token).await
                {
                    failed += 1;
                    ui::warn(&format!(
                        "could not revoke the {} token at GitHub: {message}",
                        token.owner
                    ));
                }
            }
        }
        // Retired tokens may come from an earlier session, which the broker only revokes for
        // that session's holder; the token itself can always revoke itself at GitHub.
        for token in state.retired.iter().filter(|t| !t.token.is_empty()) {
            if let Err(message) =
                crate::github::revoke(&self.http, self.github_api_url.as_deref(), token).await
            {
                ui::note(&format!(
                    "an earlier {} token could not be revoked at GitHub ({message}); it expires \
                     within the hour",
                    token.owner
                ));
            }
        }
        state::remove(dir)
            .map_err(|e| ClientError::State(format!("could not remove {}: {e}", dir.display())))?;
        if failed > 0 {
            return Err(ClientError::Broker(format!(
                "{} could not be revoked; they expire on their own within the hour",
                count(failed, "token")
            )));
        }
        ui::note(&format!(
            "revoked {} and removed the state",
            count(state.tokens.len(), "token")
        ));
        Ok(())
    }
}

/// `minted 2 tokens for acme, acme-labs; 1 excluded` / `no tokens granted (3 excluded)`.
pub(crate) fn summary(tokens: &[ClientToken], excluded: usize) -> String {
    if tokens.is_empty() {
        return format!("no tokens granted ({excluded} excluded)");
    }
    let mut owners: Vec<&str> = Vec::new();
    for token in tokens {
        if !owners.contains(&token.owner.as_str()) {
            owners.push(&token.owner);
        }
    }
    let mut line = format!(
        "minted {} for {}",
        count(tokens.len(), "token"),
        owners.join(", ")
    );
    if excluded > 0 {
        line.push_str(&format!("; {excluded} excluded"));
    }
    line
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tok;

    fn token(owner: &str) -> ClientToken {
        tok("github.com", owner, "t", None)
    }

    #[test]
    fn summaries_read_well() {
        assert_eq!(
            summary(&[token("acme"), token("acme-modules")], 1),
            "minted 2 tokens for acme, acme-modules; 1 excluded"
        );
        assert_eq!(
            summary(&[token("acme"), token("acme")], 0),
            "minted 2 tokens for acme"
        );
        assert_eq!(summary(&[token("acme")], 0), "minted 1 token for acme");
        assert_eq!(summary(&[], 3), "no tokens granted (3 excluded)");
    }
}
