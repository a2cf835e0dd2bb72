//! A GitHub Actions-like OIDC issuer on loopback: discovery, JWKS and RS256 tokens with the
//! claims GitHub puts in them (all strings). Also the Actions token-request endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL`) so the client can be tested end to end.
//!
//! NOT FOR PRODUCTION: its keys live for one process and it signs whatever it is asked to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::keys::RsaKeyPair;
use crate::serving::{bind_loopback, Serving};

/// A token's claims as a JSON object: the shape the broker's verifier (`sts_broker::oidc::Claims`)
/// uses too, so what the simulator signs is what a verifier hands back.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Lifetime of simulated tokens, in seconds. GitHub has been seen issuing 5 min and 6 h tokens;
/// the short one keeps tests honest about expiry.
pub const TOKEN_LIFETIME_SECS: i64 = 300;

/// How far `nbf` lies before `iat`, in seconds, as in GitHub's tokens.
pub const NBF_BACKDATE_SECS: i64 = 300;

/// Keys published at once: the current one and the previous one, like GitHub during a rotation.
const PUBLISHED_KEYS: usize = 2;

/// Claims of a GitHub Actions job, with sensible defaults; `to_claims` fills `iss`, `aud`, `iat`,
/// `nbf` (= iat - 300, as GitHub does), `exp`, `jti` and `sub` (`repo:O/R:ref:REF`).
#[derive(Debug, Clone)]
pub struct ActionsJob {
    /// `repository_owner`.
    pub owner: String,
    /// `repository_owner_id`.
    pub owner_id: String,
    /// Repository name (without owner).
    pub repo: String,
    /// `repository_id`.
    pub repo_id: String,
    /// `ref`.
    pub git_ref: String,
    /// `workflow` file path inside the repo (`.github/workflows/ci.yml`).
    pub workflow_path: String,
    /// `actor`.
    pub actor: String,
    /// `run_id`.
    pub run_id: String,
    /// `event_name`.
    pub event_name: String,
}

impl Default for ActionsJob {
    fn default() -> Self {
        Self {
            owner: "acme".into(),
            owner_id: "1001".into(),
            repo: "infra".into(),
            repo_id: "2001".into(),
            git_ref: "refs/heads/main".into(),
            workflow_path: ".github/workflows/ci.yml".into(),
            actor: "octocat".into(),
            run_id: "42".into(),
            event_name: "push".into(),
        }
    }
}

/// A JWKS body the simulator serves instead of its real keys (test knob).
#[derive(Debug, Clone, PartialEq)]
pub enum JwksBody {
    /// Served as JSON.
    Json(Value),
    /// Served verbatim, e.g. something that is not JSON at all or is too large.
    Raw(String),
}

impl From<Value> for JwksBody {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

impl From<String> for JwksBody {
    fn from(value: String) -> Self {
        Self::Raw(value)
    }
}

/// Requests to `/.well-known/jwks` wait while this is held; from
/// [`OidcIssuerSimulator::hold_jwks`].
#[derive(Debug)]
pub struct JwksHold {
    sim: OidcIssuerSimulator,
    gate: Arc<JwksGate>,
}

#[derive(Debug)]
struct JwksGate {
    /// Never given a permit: closed on release, which lets every waiting request go on.
    open: Semaphore,
    /// One permit per request that reached the gate.
    arrivals: Semaphore,
}

impl JwksHold {
    /// Wait until one more JWKS request has reached the hold (each call consumes one arrival):
    /// proof that a fetch is in flight and held.
    pub async fn arrived(&self) {
        if let Ok(arrival) = self.gate.arrivals.acquire().await {
            arrival.forget();
        }
    }

    /// Let the held requests, and every later one, through.
    pub fn release(&self) {
        self.gate.open.close();
        let mut current = self
            .sim
            .inner
            .jwks_gate
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|gate| Arc::ptr_eq(gate, &self.gate))
        {
            *current = None;
        }
    }
}

impl Drop for JwksHold {
    /// A test that forgets to release, or panics while holding, must not leave requests hanging.
    fn drop(&mut self) {
        self.release();
    }
}

/// The issuer. Cheap to clone.
#[derive(Clone)]
pub struct OidcIssuerSimulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OidcIssuerSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuerSimulator")
            .field("issuer", &self.issuer())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Published keys, oldest first; the last one signs.
    keys: RwLock<Vec<RsaKeyPair>>,
    issuer: RwLock<String>,
    request_token: String,
    job: RwLock<ActionsJob>,
    jwks_override: RwLock<Option<JwksBody>>,
    discovery_jwks_uri: RwLock<Option<String>>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    /// While set, JWKS requests wait at this gate (see [`OidcIssuerSimulator::hold_jwks`]).
    jwks_gate: RwLock<Option<Arc<JwksGate>>>,
}

// The simulator's locks guard plain data that no panic can leave half-written, so a poisoned
// lock is still safe to use.
fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

impl Default for OidcIssuerSimulator {
    fn default() -> Self {
        Self::new()
    }
}

impl OidcIssuerSimulator {
    /// A new issuer with a fresh RSA key.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(vec![RsaKeyPair::generate()]),
                issuer: RwLock::new(String::new()),
                request_token: format!("sim-actions-{}", uuid::Uuid::new_v4().simple()),
                job: RwLock::new(ActionsJob::default()),
                jwks_override: RwLock::new(None),
                discovery_jwks_uri: RwLock::new(None),
                jwks_fetches: AtomicUsize::new(0),
                discovery_fetches: AtomicUsize::new(0),
                jwks_gate: RwLock::new(None),
            }),
        }
    }

    /// Serve discovery, JWKS and the Actions token-request endpoint on `127.0.0.1:0`.
    pub async fn start(&self) -> std::io::Result<RunningIssuer> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        write(&self.inner.issuer, issuer.clone());
        Ok(RunningIssuer {
            addr,
            issuer,
            server: Serving::spawn(listener, self.router(), "oidc issuer simulator"),
        })
    }

    /// Discovery, JWKS and the Actions token-request endpoint, with this simulator's state;
    /// [`Self::start`] serves exactly this. Public so that the Actions endpoint can also be served
    /// over TLS ([`crate::tls::serve_tls`]), since clients require `https` for it.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .route("/actions/token", get(actions_token))
            .with_state(self.clone())
    }

    /// The `iss` of tokens (`http://127.0.0.1:PORT`); only valid after `start` (empty before).
    pub fn issuer(&self) -> String {
        read(&self.inner.issuer)
    }

    /// The full claims of a token for `job` and `audience`, valid for 5 minutes from now.
    pub fn claims_for(&self, job: &ActionsJob, audience: &str) -> Claims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let repository = format!("{}/{}", job.owner, job.repo);
        let workflow_ref = format!("{repository}/{}@{}", job.workflow_path, job.git_ref);
        let sha = fake_sha(&format!("{repository}@{}", job.git_ref));
        let workflow_sha = fake_sha(&workflow_ref);
        let ref_type = if job.git_ref.starts_with("refs/tags/") {
            "tag"
        } else {
            "branch"
        };
        let workflow = job
            .workflow_path
            .rsplit('/')
            .next()
            .and_then(|file| file.split('.').next())
            .unwrap_or("ci");
        let value = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("repo:{repository}:ref:{}", job.git_ref),
            "aud": audience,
            "ref": job.git_ref,
            "sha": sha,
            "repository": repository,
            "repository_owner": job.owner,
            "repository_owner_id": job.owner_id,
            "run_id": job.run_id,
            "run_number": "1",
            "run_attempt": "1",
            "repository_visibility": "private",
            "repository_id": job.repo_id,
            "actor_id": fake_id(&job.actor),
            "actor": job.actor,
            "workflow": workflow,
            "head_ref": "",
            "base_ref": "",
            "event_name": job.event_name,
            "ref_protected": "false",
            "ref_type": ref_type,
            "workflow_ref": workflow_ref,
            "workflow_sha": workflow_sha,
            "job_workflow_ref": workflow_ref,
            "job_workflow_sha": workflow_sha,
            "runner_environment": "github-hosted",
            "iss": self.issuer(),
            "nbf": now - NBF_BACKDATE_SECS,
            "exp": now + TOKEN_LIFETIME_SECS,
            "iat": now,
        });
        match value {
            Value::Object(claims) => claims,
            _ => Claims::new(),
        }
    }

    /// Sign arbitrary claims with the issuer key (RS256, the published `kid`).
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.current_kid());
        #[expect(
            clippy::expect_used,
            reason = "an RS256 header with our RSA key always signs"
        )]
        self.sign_with_header(header, claims)
            .expect("rs256 signing")
    }

    /// `sign(claims_for(job, audience))`.
    pub fn token_for(&self, job: &ActionsJob, audience: &str) -> String {
        self.sign(&self.claims_for(job, audience))
    }

    /// Test knob: sign `claims` with the current key under an arbitrary `header` (e.g. RS512, no
    /// `kid`, another `kid`). Fails when the header's `alg` does not fit an RSA key.
    pub fn sign_with_header(
        &self,
        header: Header,
        claims: &Claims,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let key = self.current_key().encoding_key();
        self.sign_with_key(header, &key, claims)
    }

    /// Test knob: sign `claims` with any `key` (another RSA key, an HMAC secret, an EC key).
    pub fn sign_with_key(
        &self,
        header: Header,
        key: &EncodingKey,
        claims: &Claims,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&header, claims, key)
    }

    /// Test knob: a token assembled from a raw header, claims and signature bytes, for what no
    /// library will sign (`alg: none`, odd header fields).
    pub fn craft_token(header: &Value, claims: &Claims, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Test knob: a new key becomes current; the previous one stays published, older ones go.
    pub fn rotate_key(&self) {
        let mut keys = self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        keys.push(RsaKeyPair::generate());
        let excess = keys.len().saturating_sub(PUBLISHED_KEYS);
        keys.drain(..excess);
    }

    /// Test knob: the key that signs now (its private half too: this is a simulator).
    pub fn current_key(&self) -> RsaKeyPair {
        let keys = self.published_keys();
        #[expect(
            clippy::expect_used,
            reason = "the key list is created non-empty and only grows before trimming"
        )]
        keys.last().cloned().expect("at least one key")
    }

    /// The published keys, oldest first.
    fn published_keys(&self) -> RwLockReadGuard<'_, Vec<RsaKeyPair>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `kid` of the signing key.
    pub fn current_kid(&self) -> String {
        self.current_key().kid
    }

    /// The JWKS the issuer publishes (ignoring any override).
    pub fn jwks(&self) -> Value {
        let keys = self.published_keys();
        json!({ "keys": keys.iter().rev().map(RsaKeyPair::public_jwk).collect::<Vec<_>>() })
    }

    /// Test knob: how many times `/.well-known/jwks` was requested.
    pub fn jwks_fetch_count(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Test knob: how many times the discovery document was requested.
    pub fn discovery_fetch_count(&self) -> usize {
        self.inner.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Test knob: serve `body` from `/.well-known/jwks` instead of the real keys (`None` restores).
    pub fn set_jwks_override(&self, body: Option<JwksBody>) {
        write(&self.inner.jwks_override, body);
    }

    /// Test knob: the `jwks_uri` the discovery document names (`None` = this issuer's own).
    pub fn set_discovery_jwks_uri(&self, uri: Option<String>) {
        write(&self.inner.discovery_jwks_uri, uri);
    }

    /// Test knob: a slow issuer. From now until the returned hold is released (or dropped), every
    /// request to `/.well-known/jwks` is counted, then waits; it is answered after the release,
    /// with the keys published then. A test controls how long a fetch stays in flight by what it
    /// does before releasing, never by a clock.
    pub fn hold_jwks(&self) -> JwksHold {
        let gate = Arc::new(JwksGate {
            open: Semaphore::new(0),
            arrivals: Semaphore::new(0),
        });
        write(&self.inner.jwks_gate, Some(Arc::clone(&gate)));
        JwksHold {
            sim: self.clone(),
            gate,
        }
    }

    /// Test/dev knob: the job whose tokens `/actions/token` hands out.
    pub fn set_actions_job(&self, job: ActionsJob) {
        write(&self.inner.job, job);
    }

    /// The job whose tokens `/actions/token` hands out.
    pub fn actions_job(&self) -> ActionsJob {
        read(&self.inner.job)
    }

    /// The bearer token a runner would have in `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn actions_request_token(&self) -> String {
        self.inner.request_token.clone()
    }

    /// What a runner would have in `ACTIONS_ID_TOKEN_REQUEST_URL`; the client appends
    /// `&audience=...`. Only valid after `start`.
    pub fn actions_token_url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.issuer())
    }
}

/// A stand-in for a commit sha: 40 hex digits derived from `seed`, stable across runs.
fn fake_sha(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))[..40].to_owned()
}

/// A stable numeric id for a login, as a string like GitHub's id claims.
fn fake_id(login: &str) -> String {
    let digest = Sha256::digest(login.as_bytes());
    let mut bytes = [0_u8; 4];
    bytes.copy_from_slice(&digest[..4]);
    (u32::from_be_bytes(bytes) % 100_000_000).to_string()
}

async fn discovery(State(sim): State<OidcIssuerSimulator>) -> Json<Value> {
    sim.inner.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = sim.issuer();
    let jwks_uri =
        read(&sim.inner.discovery_jwks_uri).unwrap_or_else(|| format!("{issuer}/.well-known/jwks"));
    Json(json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "subject_types_supported": ["public", "pairwise"],
        "response_types_supported": ["id_token"],
        "claims_supported": [
            "sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha", "repository",
            "repository_id", "repository_owner", "repository_owner_id", "run_id", "run_number",
            "run_attempt", "actor", "actor_id", "workflow", "workflow_ref", "workflow_sha",
            "head_ref", "base_ref", "event_name", "ref_type", "ref_protected", "environment",
            "job_workflow_ref", "job_workflow_sha", "repository_visibility", "runner_environment"
        ],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
    }))
}

async fn jwks(State(sim): State<OidcIssuerSimulator>) -> Response {
    sim.inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(gate) = read(&sim.inner.jwks_gate) {
        gate.arrivals.add_permits(1);
        // Err once the hold is released and the semaphore closed: then go on.
        let _released = gate.open.acquire().await;
    }
    match read(&sim.inner.jwks_override) {
        Some(JwksBody::Json(value)) => Json(value).into_response(),
        // Streamed in chunks without a Content-Length, so readers cannot size-check up front.
        Some(JwksBody::Raw(body)) => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                .into_bytes()
                .chunks(8 * 1024)
                .map(|chunk| Ok(chunk.to_vec()))
                .collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        None => Json(sim.jwks()).into_response(),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    audience: Option<String>,
}

async fn actions_token(
    State(sim): State<OidcIssuerSimulator>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented != Some(sim.inner.request_token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "bad request token"})),
        )
            .into_response();
    }
    let job = sim.actions_job();
    // GitHub's default audience is the URL of the repository owner.
    let audience = query
        .audience
        .filter(|aud| !aud.is_empty())
        .unwrap_or_else(|| format!("https://github.com/{}", job.owner));
    let token = sim.token_for(&job, &audience);
    Json(json!({ "value": token })).into_response()
}

/// An issuer bound to a port. Dropping it stops the server.
pub struct RunningIssuer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    server: Serving,
}

debug_showing!(RunningIssuer { addr, issuer });

impl Drop for RunningIssuer {
    fn drop(&mut self) {
        // Graceful shutdown waits for open keep-alive connections (a verifier's pooled JWKS
        // client keeps one); aborting closes the listener now.
        self.server.abort();
    }
}

#[cfg(test)]
mod tests;
