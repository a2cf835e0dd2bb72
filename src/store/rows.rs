//! Row structs read by both backends, and their conversion into the backend-neutral model.
//!
//! The derive is generic over the database, and both schemas use the same column names and
//! Rust-side types (TEXT, BIGINT, BOOLEAN), so one set of rows serves SQLite and PostgreSQL.

use super::codec::{enum_str, from_json, from_ms, from_ms_opt, to_json, to_ms};
use super::{
    AuditPage, ChainedEvent, InstallationLink, IssuedToken, SessionRecord, SigningKeyRecord,
    StoreError, StoreResult, StoredPolicy, Workspace,
};
use crate::audit::chain::{chain_key, AuditColumns, ChainLink, ChainRow};
use crate::audit::AuditEvent;
use crate::policy::PolicyFormat;

/// `workspaces` row.
#[derive(sqlx::FromRow)]
pub(super) struct WorkspaceRow {
    id: String,
    name: String,
    sts_enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl WorkspaceRow {
    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<Workspace> {
        Ok(Workspace {
            id: self.id,
            name: self.name,
            sts_enabled: self.sts_enabled,
            created_at: from_ms(self.created_at, "workspaces.created_at")?,
            updated_at: from_ms(self.updated_at, "workspaces.updated_at")?,
        })
    }
}

/// `installation_links` row.
#[derive(sqlx::FromRow)]
pub(super) struct InstallationLinkRow {
    pub(super) workspace_id: String,
    owner: String,
    account_id: i64,
    pub(super) installation_id: i64,
    repository_selection: String,
    created_at: i64,
}

impl InstallationLinkRow {
    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<InstallationLink> {
        Ok(InstallationLink {
            workspace_id: self.workspace_id,
            owner: self.owner,
            account_id: self.account_id,
            installation_id: self.installation_id,
            repository_selection: self.repository_selection,
            created_at: from_ms(self.created_at, "installation_links.created_at")?,
        })
    }
}

/// The linking rule both backends enforce inside their write transaction: an installation
/// belongs to one workspace, and a workspace links one installation per owner. `by_id` is the
/// stored row of the installation being linked, `by_owner` the workspace's row for the same owner
/// (case-insensitive); re-linking the same installation to the same workspace is allowed.
pub(super) fn check_link(
    link: &InstallationLink,
    by_id: Option<&InstallationLinkRow>,
    by_owner: Option<&InstallationLinkRow>,
) -> StoreResult<()> {
    if let Some(row) = by_id {
        if row.workspace_id != link.workspace_id {
            return Err(StoreError::Conflict(format!(
                "installation linked to workspace {}",
                row.workspace_id
            )));
        }
    }
    if by_owner.is_some_and(|row| row.installation_id != link.installation_id) {
        return Err(StoreError::Conflict("owner already linked".to_owned()));
    }
    Ok(())
}

/// `policy_versions` row (the tombstone column is only used in SQL).
#[derive(sqlx::FromRow)]
pub(super) struct PolicyRow {
    workspace_id: String,
    name: String,
    version: i64,
    source: String,
    format: String,
    created_at: i64,
}

impl PolicyRow {
    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<StoredPolicy> {
        Ok(StoredPolicy {
            workspace_id: self.workspace_id,
            name: self.name,
            version: self.version,
            source: self.source,
            // A format this build does not know must not be parsed as something else.
            format: PolicyFormat::from_stored(&self.format).ok_or_else(|| {
                StoreError::Corrupt(format!("policy_versions.format {:?}", self.format))
            })?,
            created_at: from_ms(self.created_at, "policy_versions.created_at")?,
        })
    }
}

/// `sessions` row, as read and as written.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    pub(super) id: String,
    pub(super) workspace_id: String,
    pub(super) issuer: String,
    pub(super) subject: String,
    pub(super) claims: String,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
    pub(super) revoked_at: Option<i64>,
}

impl SessionRow {
    /// The row of `session`. SQLite's writer thread has its callers do this on their own task, so
    /// that neither the claims' copy nor their encoding costs the thread time its batch waits on.
    pub(super) fn encode(session: &SessionRecord) -> StoreResult<Self> {
        Ok(Self {
            id: session.id.clone(),
            workspace_id: session.workspace_id.clone(),
            issuer: session.issuer.clone(),
            subject: session.subject.clone(),
            claims: to_json(&session.claims, "session claims")?,
            created_at: to_ms(session.created_at),
            expires_at: to_ms(session.expires_at),
            revoked_at: session.revoked_at.map(to_ms),
        })
    }

    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            claims: from_json(&self.claims, "sessions.claims")?,
            created_at: from_ms(self.created_at, "sessions.created_at")?,
            expires_at: from_ms(self.expires_at, "sessions.expires_at")?,
            revoked_at: from_ms_opt(self.revoked_at, "sessions.revoked_at")?,
            id: self.id,
            workspace_id: self.workspace_id,
            issuer: self.issuer,
            subject: self.subject,
        })
    }
}

/// `issued_tokens` row, as read and as written.
#[derive(sqlx::FromRow)]
pub(super) struct IssuedTokenRow {
    pub(super) id: String,
    pub(super) workspace_id: String,
    pub(super) session_id: Option<String>,
    pub(super) installation_id: i64,
    pub(super) owner: String,
    pub(super) host: String,
    pub(super) repositories: Option<String>,
    pub(super) permissions: String,
    pub(super) fingerprint: String,
    pub(super) sealed_token: Option<String>,
    pub(super) policy_name: String,
    pub(super) policy_version: i64,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
    pub(super) revoked_at: Option<i64>,
}

impl IssuedTokenRow {
    /// The row of `token`.
    pub(super) fn encode(token: &IssuedToken) -> StoreResult<Self> {
        Ok(Self {
            id: token.id.clone(),
            workspace_id: token.workspace_id.clone(),
            session_id: token.session_id.clone(),
            installation_id: token.installation_id,
            owner: token.owner.clone(),
            host: token.host.clone(),
            repositories: token
                .repositories
                .as_ref()
                .map(|r| to_json(r, "token repositories"))
                .transpose()?,
            permissions: to_json(&token.permissions, "token permissions")?,
            fingerprint: token.fingerprint.clone(),
            sealed_token: token.sealed_token.clone(),
            policy_name: token.policy_name.clone(),
            policy_version: token.policy_version,
            created_at: to_ms(token.created_at),
            expires_at: to_ms(token.expires_at),
            revoked_at: token.revoked_at.map(to_ms),
        })
    }

    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<IssuedToken> {
        Ok(IssuedToken {
            repositories: self
                .repositories
                .as_deref()
                .map(|r| from_json(r, "issued_tokens.repositories"))
                .transpose()?,
            permissions: from_json(&self.permissions, "issued_tokens.permissions")?,
            created_at: from_ms(self.created_at, "issued_tokens.created_at")?,
            expires_at: from_ms(self.expires_at, "issued_tokens.expires_at")?,
            revoked_at: from_ms_opt(self.revoked_at, "issued_tokens.revoked_at")?,
            id: self.id,
            workspace_id: self.workspace_id,
            session_id: self.session_id,
            installation_id: self.installation_id,
            owner: self.owner,
            host: self.host,
            fingerprint: self.fingerprint,
            sealed_token: self.sealed_token,
            policy_name: self.policy_name,
            policy_version: self.policy_version,
        })
    }
}

/// An audit event to append: its chain and the columns of its row, all but `seq` (0 here), which
/// only the append knows. Encoded by both stores' appends, and by the callers of SQLite's writer
/// thread on their own task (see [`SessionRow::encode`]).
pub(super) struct AuditAppend {
    pub(super) chain: String,
    pub(super) columns: AuditColumns,
}

impl AuditAppend {
    pub(super) fn encode(event: &AuditEvent) -> StoreResult<Self> {
        Ok(Self {
            chain: chain_key(event.workspace_id.as_deref()).to_owned(),
            columns: AuditColumns {
                seq: 0,
                id: event.id.clone(),
                time: to_ms(event.time),
                workspace_id: event.workspace_id.clone(),
                kind: enum_str(&event.kind, "audit kind")?,
                outcome: enum_str(&event.outcome, "audit outcome")?,
                body: to_json(event, "audit event")?,
            },
        })
    }
}

/// `audit_events` row as the audit API lists it: the sequence number (the paging cursor), the
/// serde JSON body and the chain columns.
#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    pub(super) seq: i64,
    body: String,
    chain_seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl AuditRow {
    /// The stored event with its place in its chain (none while the row is not linked).
    pub(super) fn into_event(self) -> StoreResult<ChainedEvent> {
        let link = match (self.chain_seq, self.prev_hash, self.hash) {
            (Some(sequence), Some(prev_hash), Some(hash)) => Some(ChainLink {
                sequence,
                prev_hash,
                hash,
            }),
            _ => None,
        };
        Ok(ChainedEvent {
            event: from_json(&self.body, "audit_events.body")?,
            link,
        })
    }
}

/// Every column of an `audit_events` row, as the chain hashes and verifies them.
#[derive(sqlx::FromRow)]
pub(super) struct AuditChainRow {
    seq: i64,
    id: String,
    time: i64,
    workspace_id: Option<String>,
    kind: String,
    outcome: String,
    body: String,
    chain_seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl AuditChainRow {
    /// The model value.
    pub(super) fn into_model(self) -> ChainRow {
        ChainRow {
            columns: AuditColumns {
                seq: self.seq,
                id: self.id,
                time: self.time,
                workspace_id: self.workspace_id,
                kind: self.kind,
                outcome: self.outcome,
                body: self.body,
            },
            sequence: self.chain_seq,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The row number the database gave a new `audit_events` row.
#[derive(sqlx::FromRow)]
pub(super) struct SeqRow {
    pub(super) seq: i64,
}

/// The last linked event of a chain: where the next one goes.
#[derive(sqlx::FromRow)]
pub(super) struct ChainHeadRow {
    pub(super) chain_seq: i64,
    pub(super) hash: Option<String>,
}

/// One chain key (`coalesce(workspace_id, '')`).
#[derive(sqlx::FromRow)]
pub(super) struct ChainKeyRow {
    pub(super) chain: String,
}

/// `signing_keys` row.
#[derive(sqlx::FromRow)]
pub(super) struct SigningKeyRow {
    kid: String,
    algorithm: String,
    private_key_sealed: String,
    public_jwk: String,
    created_at: i64,
}

impl SigningKeyRow {
    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<SigningKeyRecord> {
        Ok(SigningKeyRecord {
            public_jwk: from_json(&self.public_jwk, "signing_keys.public_jwk")?,
            created_at: from_ms(self.created_at, "signing_keys.created_at")?,
            kid: self.kid,
            algorithm: self.algorithm,
            private_key_sealed: self.private_key_sealed,
        })
    }
}

/// Convert every row of a query result.
pub(super) fn all<R, T>(rows: Vec<R>, f: impl Fn(R) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.into_iter().map(f).collect()
}

/// Chain keys, sorted bytewise in Rust: the database's collation must not decide the order in
/// which `audit verify` reports chains.
pub(super) fn chain_keys(rows: Vec<ChainKeyRow>) -> Vec<String> {
    let mut keys: Vec<String> = rows.into_iter().map(|r| r.chain).collect();
    keys.sort_unstable();
    keys
}

/// How many rows to fetch for a page of `limit` events: one more than asked tells whether
/// another page follows.
pub(super) fn page_rows(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// A page of `limit` events from `rows` (fetched with [`page_rows`] so that the extra row tells
/// whether an older page follows); the cursor is the seq of the last event returned.
pub(super) fn audit_page(mut rows: Vec<AuditRow>, limit: u32) -> StoreResult<AuditPage> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(AuditPage {
        events: all(rows, AuditRow::into_event)?,
        next_cursor,
    })
}

/// `mint_intents` row (unresolved ones are the only ones read).
#[derive(sqlx::FromRow)]
pub(super) struct MintIntentRow {
    id: String,
    workspace_id: String,
    session_id: String,
    request_id: Option<String>,
    policy_name: String,
    policy_version: Option<i64>,
    actor: String,
    planned: String,
    created_at: i64,
}

impl MintIntentRow {
    /// The model value.
    pub(super) fn into_model(self) -> StoreResult<super::MintIntent> {
        Ok(super::MintIntent {
            actor: from_json(&self.actor, "mint_intents.actor")?,
            planned: from_json(&self.planned, "mint_intents.planned")?,
            created_at: from_ms(self.created_at, "mint_intents.created_at")?,
            id: self.id,
            workspace_id: self.workspace_id,
            session_id: self.session_id,
            request_id: self.request_id,
            policy_name: self.policy_name,
            policy_version: self.policy_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_row(format: &str) -> PolicyRow {
        PolicyRow {
            workspace_id: "acme".to_owned(),
            name: "default".to_owned(),
            version: 1,
            source: "rules: []".to_owned(),
            format: format.to_owned(),
            created_at: 0,
        }
    }

    #[test]
    fn stored_policy_formats_decode_to_their_enum() {
        for format in [PolicyFormat::Json, PolicyFormat::Yaml] {
            let stored = policy_row(format.as_str()).into_model().unwrap();
            assert_eq!(stored.format, format);
        }
    }

    #[test]
    fn an_unknown_stored_policy_format_is_corrupt_not_json() {
        for format in ["toml", "JSON", ""] {
            let err = policy_row(format).into_model().unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt(m) if m.starts_with("policy_versions.format")),
                "{format:?}: {err:?}"
            );
        }
    }
}
