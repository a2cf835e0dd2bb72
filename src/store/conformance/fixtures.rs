//! Fixtures and helpers the cases share.

pub(super) use crate::audit::AuditEvent;
use crate::audit::{Actor, AuditKind, AuditToken, Exclusion, Outcome};
pub(super) use crate::policy::PolicyFormat;
pub(super) use crate::store::{
    AuditPage, ChainedEvent, InstallationLink, IssuedToken, JtiRecord, NewPolicy, PurgeStats,
    Retention, SessionRecord, SigningKeyRecord, Store, StoreError, StoredPolicy, TokenFilter,
    TokenState, Workspace,
};
use std::collections::BTreeMap;
pub(super) use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fixed, millisecond-aligned clock: the schema stores epoch milliseconds, and fixed times
/// make every expected value exact.
pub(super) const T0: OffsetDateTime = datetime!(2026-05-01 12:00:00 UTC);

/// The default retention (30 days of sessions, 90 of tokens): in the purge cases that are not
/// about retention, nothing is old enough for it.
pub(super) fn retention() -> Retention {
    Retention::days(30, 90)
}

/// `T0` plus `minutes`.
pub(super) fn at(minutes: i64) -> OffsetDateTime {
    T0 + Duration::minutes(minutes)
}

pub(super) fn workspace(id: &str) -> Workspace {
    Workspace {
        id: id.to_owned(),
        name: format!("Workspace {id}"),
        sts_enabled: false,
        created_at: T0,
        updated_at: T0,
    }
}

pub(super) async fn with_workspaces(store: &dyn Store, ids: &[&str]) {
    for id in ids {
        store
            .create_workspace(&workspace(id))
            .await
            .expect("create workspace");
    }
}

pub(super) fn link(workspace_id: &str, owner: &str, installation_id: i64) -> InstallationLink {
    InstallationLink {
        workspace_id: workspace_id.to_owned(),
        owner: owner.to_owned(),
        account_id: installation_id * 10,
        installation_id,
        repository_selection: "all".to_owned(),
        created_at: T0,
    }
}

pub(super) fn policy(workspace_id: &str, name: &str, source: &str) -> NewPolicy {
    NewPolicy {
        workspace_id: workspace_id.to_owned(),
        name: name.to_owned(),
        source: source.to_owned(),
        format: PolicyFormat::Yaml,
        created_at: T0,
    }
}

pub(super) fn replay_key(jti: &str, expires_at: OffsetDateTime) -> JtiRecord {
    JtiRecord {
        issuer: "https://token.actions.githubusercontent.com".to_owned(),
        jti: jti.to_owned(),
        expires_at,
    }
}

pub(super) fn session(id: &str, workspace_id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        workspace_id: workspace_id.to_owned(),
        issuer: "https://token.actions.githubusercontent.com".to_owned(),
        subject: "repo:acme/infra:ref:refs/heads/main".to_owned(),
        claims: serde_json::json!({
            "repository": "acme/infra",
            "repository_owner_id": "1001",
            "ref_protected": "true",
            "aud": ["atmos-pro.com"],
            "nested": {"n": 1, "f": 1.5, "null": null},
        }),
        created_at: T0,
        expires_at: at(60),
        revoked_at: None,
    }
}

pub(super) fn audit(workspace_id: Option<&str>, action: &str) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Admin, action);
    event.workspace_id = workspace_id.map(str::to_owned);
    event.outcome = Outcome::Success;
    event
}

/// A rich event, so the JSON round trip covers every field shape.
pub(super) fn mint_audit(workspace_id: &str, token_ids: &[&str]) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Mint, "mint");
    event.workspace_id = Some(workspace_id.to_owned());
    event.outcome = Outcome::Success;
    event.request_id = Some("req-1".to_owned());
    event.actor = Actor {
        kind: crate::audit::ActorKind::Oidc,
        session_id: Some("ses-1".to_owned()),
        claims: BTreeMap::from([("repository".to_owned(), "acme/infra".to_owned())]),
    };
    event.policy_name = Some("default".to_owned());
    event.policy_version = Some(3);
    event.installation_ids = vec![42];
    event.tokens = token_ids
        .iter()
        .map(|id| AuditToken {
            id: (*id).to_owned(),
            fingerprint: format!("sha256:{id}"),
            installation_id: 42,
            owner: "Acme".to_owned(),
            repositories: Some(vec!["Acme/infra".to_owned()]),
            permissions: BTreeMap::from([("contents".to_owned(), "read".to_owned())]),
            expires_at: Some(at(60)),
            policy_version: Some(3),
            rules: vec!["infra-main".to_owned()],
            revoked: None,
            attempts: Some(2),
        })
        .collect();
    event.exclusions = vec![Exclusion {
        repo: "acme/secret".to_owned(),
        reason: crate::audit::ExclusionReason::NoTrustPolicy,
    }];
    event.details = serde_json::json!({"sources": ["acme/infra", "acme/secret"]});
    event
}

pub(super) fn token(id: &str, workspace_id: &str, session_id: Option<&str>) -> IssuedToken {
    IssuedToken {
        id: id.to_owned(),
        workspace_id: workspace_id.to_owned(),
        session_id: session_id.map(str::to_owned),
        installation_id: 42,
        owner: "Acme".to_owned(),
        host: "github.com".to_owned(),
        repositories: Some(vec!["Acme/infra".to_owned(), "Acme/modules".to_owned()]),
        permissions: BTreeMap::from([
            ("contents".to_owned(), "read".to_owned()),
            ("pull_requests".to_owned(), "write".to_owned()),
        ]),
        fingerprint: format!("sha256:{id}"),
        sealed_token: Some(format!("sealed-{id}")),
        policy_name: "default".to_owned(),
        policy_version: 1,
        created_at: T0,
        expires_at: at(60),
        revoked_at: None,
    }
}

/// A workspace with one live session `ses-1` (for token rows that name it).
pub(super) async fn with_session(store: &dyn Store, workspace_id: &str, session_id: &str) {
    store
        .record_exchange(
            &replay_key(&format!("jti-{session_id}"), at(10)),
            &session(session_id, workspace_id),
            &audit(Some(workspace_id), "exchange"),
        )
        .await
        .expect("record exchange");
}

pub(super) fn ids(tokens: &[IssuedToken]) -> Vec<&str> {
    tokens.iter().map(|t| t.id.as_str()).collect()
}

pub(super) fn actions(events: &[ChainedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.action.as_str()).collect()
}

/// The events of a page, without their chain links.
pub(super) fn events(page: AuditPage) -> Vec<AuditEvent> {
    page.events.into_iter().map(|e| e.event).collect()
}

pub(super) fn signing_key(kid: &str) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        private_key_sealed: format!("sealed-{kid}"),
        public_jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "AA"}),
        created_at: T0,
    }
}

/// Exchange the token `key` for session `session_id` of `workspace_id`, audited as `action`.
pub(super) async fn exchange(
    store: &dyn Store,
    key: &JtiRecord,
    session_id: &str,
    workspace_id: &str,
    action: &str,
) -> Result<(), StoreError> {
    store
        .record_exchange(
            key,
            &session(session_id, workspace_id),
            &audit(Some(workspace_id), action),
        )
        .await
}

/// Exchange number `i` of a race: token `jti` for session `ses-{i}` of `workspace_id`, audited
/// as `e{i}`.
pub(super) async fn raced_exchange(
    store: &dyn Store,
    jti: &str,
    i: usize,
    workspace_id: &str,
) -> Result<(), StoreError> {
    let key = replay_key(jti, at(10));
    exchange(
        store,
        &key,
        &format!("ses-{i}"),
        workspace_id,
        &format!("e{i}"),
    )
    .await
}

/// Start `count` jobs at once, `job(i)` each, and return their results in job order once all
/// have finished: concurrent callers, whose writes the store's writer batches together.
pub(super) async fn race<T, F, Fut>(count: usize, job: F) -> Vec<Result<T, StoreError>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..count).map(|i| tokio::spawn(job(i))).collect();
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(task.await.expect("raced job"));
    }
    results
}

/// Issue `tokens` of `workspace_id` in one batch, audited as `mint`.
pub(super) async fn issue(
    store: &dyn Store,
    workspace_id: &str,
    tokens: &[IssuedToken],
) -> Result<(), StoreError> {
    store
        .record_issuance(tokens, &audit(Some(workspace_id), "mint"))
        .await
}

/// Every token row of the workspace, newest first.
pub(super) async fn all_tokens(store: &dyn Store, workspace_id: &str) -> Vec<IssuedToken> {
    store
        .list_tokens(workspace_id, &TokenFilter::default())
        .await
        .expect("list tokens")
}

/// The actions of the workspace's newest 10 audit events, newest first.
pub(super) async fn audit_actions(store: &dyn Store, workspace_id: &str) -> Vec<String> {
    let page = store
        .list_audit(workspace_id, 10, None)
        .await
        .expect("list audit");
    page.events.into_iter().map(|e| e.event.action).collect()
}

/// Put a version of a YAML policy; the workspace exists.
pub(super) async fn put(
    store: &dyn Store,
    workspace_id: &str,
    name: &str,
    source: &str,
) -> StoredPolicy {
    store
        .put_policy(&policy(workspace_id, name, source))
        .await
        .expect("put policy")
}

/// Link installation `installation_id` of `owner` into the workspace, which exists.
pub(super) async fn linked(
    store: &dyn Store,
    workspace_id: &str,
    owner: &str,
    installation_id: i64,
) -> InstallationLink {
    store
        .link_installation(&link(workspace_id, owner, installation_id))
        .await
        .expect("link installation")
}
