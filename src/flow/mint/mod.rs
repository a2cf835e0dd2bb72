//! The mint: evaluate the chosen policy, group what is allowed by (installation, permission set),
//! mint one token per group in parallel, report exclusions, and record everything. No token
//! leaves the broker unaudited, and no token is left live that nobody recorded.
//!
//! A pipeline of small steps: [`validate`] (may this session mint, is the request well formed) →
//! [`plan`] (policy decisions, installation lookups, grouping, splitting) → an [`intent`] (written
//! before GitHub is asked) → [`issue`] (GitHub calls) → [`record`] (token rows, the intent's
//! resolution and the audit event, in one transaction) → the answer.
//!
//! **A mint survives its caller.** Everything after the session's signature check runs in a task
//! of its own ([`tokio::spawn`]) that answers over a oneshot channel. The request future may be
//! dropped at any await (the client disconnects, the server's request timeout fires); the task
//! still finishes: it records what GitHub minted, or revokes it, and audits either. If the
//! caller is gone when the tokens are ready, they are revoked, not recorded as handed out; if it
//! goes in the instant between the record and the answer, they are revoked and that revocation
//! is audited too ([`record::undelivered`]). A crash between GitHub's answer and the record
//! leaves the intent unresolved, which [`report_orphaned_intents`] turns into an
//! `outcome_unknown` audit event.

pub mod explain;
mod intent;
mod issue;
mod plan;
mod record;
mod validate;

pub use intent::{report_orphaned_intents, ORPHANED_INTENT_AGE, OUTCOME_UNKNOWN};

use super::{Audited, Counted, FlowError, FlowResult, Internal};
use crate::app::App;
use crate::audit::{AuditKind, ExclusionReason};
use crate::github::Installation;
use crate::metrics::ReasonLabels;
use crate::policy::PermissionSet;
use crate::session::{Purpose, SessionClaims};
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tracing::Instrument as _;

/// Most sources one request may name: bounds the work (and GitHub calls) one caller can cause.
pub const MAX_SOURCES: usize = 100;
/// GitHub accepts at most 500 repositories per installation token; larger groups are split.
/// <https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>
pub const MAX_REPOS_PER_TOKEN: usize = 500;
/// How much sooner than the server's request timeout the mint answers on its own when GitHub is
/// slow. The server's timeout drops the request with a bare 408 and no word from the flow; the
/// mint instead stops waiting a little before it, answers `mint_abandoned` (504), and lets its
/// task revoke and audit whatever GitHub still mints. A second covers the answer's way out.
///
/// The GitHub calls themselves are never cut short by this deadline: a token POST dropped in
/// flight may have minted a token whose value never reaches us, and GitHub revokes a token only
/// when shown the token itself. GitHub's own timeouts bound them.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// How long the caller waits for a mint's answer under a server request timeout of
/// `request_timeout`: [`ANSWER_MARGIN`] less, but at least half of it.
pub fn answer_deadline(request_timeout: Duration) -> Duration {
    request_timeout
        .saturating_sub(ANSWER_MARGIN)
        .max(request_timeout / 2)
}

/// What the caller asked for, unchecked.
#[derive(Debug, Clone, Default)]
pub struct MintInput {
    /// `owner/repo` targets; absent = everything the caller's rules grant.
    pub sources: Option<Vec<String>>,
    /// Policy to evaluate; absent = `default`.
    pub policy_name: Option<String>,
    /// Downscoping: permissions to ask for (each token gets the intersection with its grant);
    /// absent = everything granted.
    pub permissions: Option<BTreeMap<String, String>>,
}

/// A repository left out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// `owner/repo` as the caller sent it (`owner/*` for a whole owner).
    pub repo: String,
    /// Why.
    pub reason: ExclusionReason,
}

impl Excluded {
    fn new(repo: impl Into<String>, reason: ExclusionReason) -> Self {
        Self {
            repo: repo.into(),
            reason,
        }
    }
}

/// One minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// Broker token id (for revoke).
    pub id: String,
    /// GitHub host.
    pub host: String,
    /// Installation account login, exactly as GitHub spells it.
    pub owner: String,
    /// The installation token.
    pub token: SecretString,
    /// GitHub's expiry.
    pub expires_at: OffsetDateTime,
    /// `owner/repo` the token reaches; `None` for a whole-installation token.
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    pub permissions: BTreeMap<String, String>,
    /// GitHub installation id.
    pub installation_id: i64,
}

/// What a mint handed out and left out.
#[derive(Debug, Clone)]
pub struct Minted {
    /// One token per (installation, permission set), split at [`MAX_REPOS_PER_TOKEN`].
    pub tokens: Vec<MintedToken>,
    /// Requested sources that got nothing, with why.
    pub excluded: Vec<Excluded>,
}

/// One token to mint.
#[derive(Debug, Clone)]
struct Group {
    installation: Installation,
    permissions: PermissionSet,
    /// Canonical repository names; `None` = the whole installation.
    repos: Option<BTreeSet<String>>,
    /// Sources (as the caller wrote them) that this group serves, for exclusions on failure.
    sources: Vec<String>,
    /// Names of the policy rules whose grants the token carries, for the audit event.
    rules: BTreeSet<String>,
}

/// Where the mint's task sends its answer. Closed once the caller stopped waiting.
type Answer = oneshot::Sender<FlowResult<Minted>>;

/// Evaluate and mint for the holder of the session `token`. `input` is the parsed body, or why
/// it did not parse (refused, and audited, only once the session is known).
#[tracing::instrument(skip_all)]
pub async fn mint(
    app: &Arc<App>,
    token: &SecretString,
    input: FlowResult<MintInput>,
    request_id: &str,
) -> FlowResult<Minted> {
    let claims = super::verify_session(app, token, Purpose::Use).await?;
    let (answer, answered) = oneshot::channel();
    let task = run(
        Arc::clone(app),
        claims,
        input,
        request_id.to_owned(),
        answer,
    );
    // Detached: the task is not cancelled when this request future is dropped.
    drop(tokio::spawn(task.in_current_span()));
    let deadline = answer_deadline(Duration::from_secs(
        app.config.server.request_timeout_seconds,
    ));
    match tokio::time::timeout(deadline, answered).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(FlowError::Internal {
            kind: Internal::MintTask,
            source: anyhow::anyhow!("the mint task ended without answering"),
        }),
        Err(_) => {
            tracing::warn!(
                deadline_ms = deadline.as_millis(),
                "no mint answer within the deadline; the mint goes on and revokes what it gets"
            );
            Err(FlowError::Abandoned)
        }
    }
}

/// The mint's task: run it, write its one event, and answer, or revoke what nobody took.
async fn run(
    app: Arc<App>,
    claims: SessionClaims,
    input: FlowResult<MintInput>,
    request_id: String,
    answer: Answer,
) {
    let mut audited = Audited::new(AuditKind::Mint, "mint", &request_id, Counted::Mints);
    let attempt = attempt(&app, claims, input, &mut audited, &answer).await;
    let event = audited.event.clone();
    let result = audited.finish(&app, attempt).await;
    if let Ok(minted) = &result {
        count_handed_out(&app, minted);
    }
    if let Err(Ok(minted)) = answer.send(result) {
        record::undelivered(&app, &event, minted).await;
    }
}

/// Everything after the session signature: the inner function of [`run`], filling in `audited`.
#[tracing::instrument(skip_all, fields(workspace.id = %claims.ws, session.id = %claims.sid))]
async fn attempt(
    app: &App,
    claims: SessionClaims,
    input: FlowResult<MintInput>,
    audited: &mut Audited,
    answer: &Answer,
) -> FlowResult<Minted> {
    // Quotas before anything else: every attempt with a verified session counts, well-formed or
    // not (and is audited, as every decision after the signature is).
    app.mint_quota.admit(&claims.sid, &claims.ws)?;
    let auth = super::load_session(app, claims, Purpose::Use, &mut audited.event).await?;
    validate::admit(app, &auth).await?;
    let request = validate::validate(input?)?;
    record::describe_request(&mut audited.event, &request);
    let mut plan = plan::plan(app, &auth.session, &request).await?;
    audited.event.policy_version = plan.policy_version;
    record::describe_plan(&mut audited.event, &request, &plan, &[]);
    let groups = std::mem::take(&mut plan.groups);
    if answer.is_closed() {
        // Nobody is waiting: ask GitHub for nothing.
        return Err(FlowError::Abandoned);
    }
    if !groups.is_empty() {
        let id = intent::open(app, &auth.session, &request, &plan, &groups, &audited.event).await?;
        audited.resolves(id);
    }
    let issued = issue::issue(app, groups).await;
    plan.exclude_refused(issued.refused, request.explicit());
    record::describe_plan(&mut audited.event, &request, &plan, &issued.minted);
    let unwanted = match issued.failure {
        Some(failure) => Some(FlowError::from(failure)),
        None if answer.is_closed() => Some(FlowError::Abandoned),
        None => None,
    };
    if let Some(error) = unwanted {
        record::revoke_unrecorded(app, &mut audited.event, &issued.minted).await;
        return Err(error);
    }
    let tokens = record::record(app, &auth.session, &request, issued.minted, audited).await?;
    Ok(Minted {
        tokens,
        excluded: plan.exclusions,
    })
}

/// Count what was handed out and left out.
fn count_handed_out(app: &App, minted: &Minted) {
    app.metrics.tokens_minted.inc_by(minted.tokens.len() as u64);
    for ex in &minted.excluded {
        app.metrics
            .exclusions
            .get_or_create(&ReasonLabels {
                reason: ex.reason.as_str(),
            })
            .inc();
    }
    tracing::info!(
        tokens = minted.tokens.len(),
        excluded = minted.excluded.len(),
        "minted {} tokens",
        minted.tokens.len()
    );
}
